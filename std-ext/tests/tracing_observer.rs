//! `TracingObserver` under a capturing subscriber: the call span and its
//! fields, one child span per attempt with OpenTelemetry's
//! `http.request.resend_count`, budget decisions as events; and the tower
//! layer opening the call span by itself.

#![allow(clippy::unwrap_used)]

use core::time::Duration;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use recourse::core_machine::budget::TokenBucket;
use recourse::core_machine::policy::name;
use recourse::observers::tracing::{call_span, TracingObserver};
use recourse::{BudgetRegistry, Executor, Policy, StaticProvider};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Instrument, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[derive(Clone, Debug, Default)]
struct SpanRec {
    name: String,
    parent: Option<String>,
    fields: BTreeMap<String, String>,
    closed: bool,
}

#[derive(Clone, Debug)]
struct EventRec {
    parent: Option<String>,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<SpanRec>>>,
    ids: Arc<Mutex<HashMap<u64, usize>>>,
    events: Arc<Mutex<Vec<EventRec>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn core::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut rec = SpanRec {
            name: attrs.metadata().name().to_owned(),
            parent: ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.name().to_owned()),
            ..SpanRec::default()
        };
        attrs.record(&mut Fields(&mut rec.fields));
        let mut spans = self.spans.lock().unwrap();
        self.ids.lock().unwrap().insert(id.into_u64(), spans.len());
        spans.push(rec);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let i = self.ids.lock().unwrap()[&id.into_u64()];
        values.record(&mut Fields(&mut self.spans.lock().unwrap()[i].fields));
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let parent = ctx.event_span(event).map(|s| s.name().to_owned());
        self.events
            .lock()
            .unwrap()
            .push(EventRec { parent, fields });
    }
    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let i = self.ids.lock().unwrap()[&id.into_u64()];
        self.spans.lock().unwrap()[i].closed = true;
    }
}

impl Capture {
    fn spans(&self, name: &str) -> Vec<SpanRec> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }
}

fn field<'a>(s: &'a SpanRec, k: &str) -> Option<&'a str> {
    s.fields.get(k).map(String::as_str)
}

fn policy() -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 4;
    p.retry.initial_backoff = Duration::from_millis(10);
    p.retry.max_backoff = Duration::from_millis(10);
    p.retry.jitter = recourse::Jitter::None;
    p
}

#[tokio::test(start_paused = true)]
async fn a_call_span_with_one_child_span_per_attempt() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy("svc.Get", policy())
                .unwrap()
                .build(),
        )
        .observer(TracingObserver::new())
        .build();
    let mut failures = 2;
    let result = exec
        .call("svc.Get", |_| {
            let fail = failures > 0;
            failures -= 1;
            async move {
                if fail {
                    Err("reset")
                } else {
                    Ok(7)
                }
            }
        })
        .instrument(call_span("svc.Get"))
        .await;
    assert_eq!(result, Ok(7));

    let calls = capture.spans("recourse.call");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(field(call, "recourse.key"), Some("svc.Get"));
    assert_eq!(field(call, "recourse.policy_source"), Some("static"));
    assert_eq!(field(call, "recourse.attempts"), Some("3"));
    assert_eq!(field(call, "recourse.outcome"), Some("success"));
    assert_eq!(field(call, "otel.status_code"), Some("OK"));
    assert_eq!(field(call, "error.type"), None);
    assert!(call.closed);

    let attempts = capture.spans("recourse.attempt");
    assert_eq!(attempts.len(), 3);
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a.parent.as_deref(), Some("recourse.call"));
        assert!(a.closed, "attempt {i} left open");
        assert_eq!(field(a, "recourse.retry_index"), Some(&*i.to_string()));
        assert_eq!(field(a, "recourse.hedge_index"), Some("0"));
        let resend = (i > 0).then(|| i.to_string());
        assert_eq!(field(a, "http.request.resend_count"), resend.as_deref());
        let (outcome, reason, backoff) = match i {
            0 => ("retryable", "retryable_error", "0.0"),
            1 => ("retryable", "retryable_error", "10.0"),
            _ => ("success", "success", "10.0"),
        };
        assert_eq!(field(a, "recourse.outcome"), Some(outcome), "attempt {i}");
        assert_eq!(field(a, "recourse.reason"), Some(reason), "attempt {i}");
        assert_eq!(
            field(a, "recourse.backoff_ms"),
            Some(backoff),
            "attempt {i}"
        );
        assert!(a.fields.contains_key("recourse.duration_ms"));
    }
    assert_eq!(
        field(&attempts[0], "recourse.attempt_kind"),
        Some("initial")
    );
    assert_eq!(field(&attempts[1], "recourse.attempt_kind"), Some("retry"));
}

#[tokio::test(start_paused = true)]
async fn budget_decisions_are_events_and_a_failed_call_says_why() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let mut p = policy();
    p.retry.budget.name = name("retry.budget.name", "retries").unwrap();
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy("svc.Get", p)
                .unwrap()
                .build(),
        )
        .budgets(BudgetRegistry::new().with("retries", TokenBucket::new(1, 0)))
        .observer(TracingObserver::new())
        .build();
    let result = exec
        .call("svc.Get", |_| async { Err::<u32, _>("reset") })
        .instrument(call_span("svc.Get"))
        .await;
    assert!(
        matches!(result, Err(recourse::Error::BudgetDenied { .. })),
        "{result:?}"
    );

    let call = &capture.spans("recourse.call")[0];
    assert_eq!(field(call, "recourse.outcome"), Some("failure"));
    assert_eq!(field(call, "error.type"), Some("budget_denied"));
    assert_eq!(field(call, "otel.status_code"), Some("ERROR"));

    let events = capture.events.lock().unwrap().clone();
    let budget: Vec<_> = events
        .iter()
        .filter(|e| e.fields.contains_key("recourse.budget"))
        .collect();
    assert!(!budget.is_empty());
    let denied = budget.last().unwrap();
    assert_eq!(denied.fields["message"], "recourse.budget: denied");
    assert_eq!(denied.fields["recourse.budget"], "retries");
    assert_eq!(denied.fields["recourse.reason"], "budget_denied");
    assert_eq!(denied.parent.as_deref(), Some("recourse.call"));
    assert!(budget[..budget.len() - 1]
        .iter()
        .all(|e| e.fields["message"] == "recourse.budget: allowed"));
    let failed = events
        .iter()
        .find(|e| e.fields.get("message").map(String::as_str) == Some("recourse call failed"))
        .unwrap();
    assert_eq!(failed.fields["error.type"], "budget_denied");
}

#[tokio::test(start_paused = true)]
async fn without_a_call_span_attempts_are_still_spans() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy("svc.Get", policy())
                .unwrap()
                .build(),
        )
        .observer(TracingObserver::new())
        .build();
    let mut failures = 1;
    let result = exec
        .call("svc.Get", |_| {
            let fail = failures > 0;
            failures -= 1;
            async move {
                if fail {
                    Err("reset")
                } else {
                    Ok(7)
                }
            }
        })
        .await;
    assert_eq!(result, Ok(7));
    let attempts = capture.spans("recourse.attempt");
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a.parent.is_none() && a.closed));
    assert_eq!(field(&attempts[1], "recourse.outcome"), Some("success"));
}

#[cfg(feature = "tower")]
#[tokio::test(start_paused = true)]
async fn the_tower_layer_opens_the_call_span() {
    use tower::{Service, ServiceExt};
    use tower_layer::Layer as _;

    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let exec = Arc::new(
        Executor::builder()
            .provider(
                StaticProvider::builder()
                    .policy("svc.Get", policy())
                    .unwrap()
                    .build(),
            )
            .observer(TracingObserver::new())
            .build(),
    );
    // Shared: the layer clones the service for every attempt.
    let n = Arc::new(core::sync::atomic::AtomicU32::new(0));
    let inner = tower::service_fn(move |s: String| {
        let fail = n.fetch_add(1, core::sync::atomic::Ordering::SeqCst) == 0;
        async move {
            if fail {
                Err("reset")
            } else {
                Ok(s)
            }
        }
    });
    let mut svc = recourse::integrations::tower::RecourseLayer::new(exec, "svc.Get").layer(inner);
    let r = svc.ready().await.unwrap().call("x".into()).await;
    assert_eq!(r, Ok("x".to_owned()));
    let calls = capture.spans("recourse.call");
    assert_eq!(calls.len(), 1);
    assert_eq!(field(&calls[0], "recourse.attempts"), Some("2"));
    let attempts = capture.spans("recourse.attempt");
    assert_eq!(attempts.len(), 2);
    assert!(attempts
        .iter()
        .all(|a| a.parent.as_deref() == Some("recourse.call")));
}
