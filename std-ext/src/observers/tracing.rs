//! [`TracingObserver`]: recourse calls as `tracing` spans and events.
//!
//! What it emits, with field names from OpenTelemetry's semantic
//! conventions where one exists (`http.request.resend_count`,
//! `error.type`, `otel.status_code`) and `recourse.*` otherwise:
//!
//! - **A span per call**, `recourse.call`, made by [`call_span`]: fields
//!   `recourse.key`, `recourse.policy_source`, `recourse.attempts`,
//!   `recourse.outcome` (`success` / `failure`), `error.type` (the failure's
//!   reason code) and `otel.status_code` (`OK` / `ERROR`). The observer
//!   fills them in as the call goes on.
//! - **A span per attempt**, `recourse.attempt`, a child of the call span,
//!   open from the attempt's launch to its end: `recourse.retry_index`,
//!   `recourse.hedge_index`, `recourse.attempt_kind`, `http.request.resend_count`
//!   (the retry index, set on retries only), and at the end
//!   `recourse.outcome` (`success` / `retryable` / `non_retryable` /
//!   `abort`), `recourse.reason`, `recourse.backoff_ms` (the sleep before
//!   it) and `recourse.duration_ms`.
//! - **Events** for budget decisions (`recourse.budget`, at `DEBUG` when
//!   allowed, `WARN` when denied), for breaker refusals
//!   (`recourse.circuit`, `WARN`), for breaker state changes
//!   (`recourse.circuit.transition`, `WARN` when the breaker opens, `INFO`
//!   otherwise; fields `recourse.key`, `recourse.circuit.from`,
//!   `recourse.circuit.to`) and for the call's end (`DEBUG` on success,
//!   `WARN` on failure).
//!
//! Why the call span comes from [`call_span`] rather than from the
//! observer: an observer hears a call's events but cannot wrap the call's
//! future, and a span must be entered around the future to be the parent of
//! what happens inside it (the attempt spans, the HTTP client's own spans).
//! The tower and reqwest integrations wrap each call in [`call_span`] when
//! this feature is on; around your own `exec.call`, add
//! `.instrument(call_span(key))`. Without a call span the observer still
//! emits every attempt span and event, but an attempt span then covers no
//! time (it is made when the attempt ends, with `recourse.duration_ms`
//! saying how long it took), since concurrent calls could not be told apart.
//!
//! To export to OpenTelemetry, put `tracing-opentelemetry`'s layer in the
//! subscriber: the spans become OTel spans with these attributes.

use std::collections::HashMap;
use std::sync::Mutex;

use recourse_core::breaker::CircuitState;
use recourse_core::{AttemptId, AttemptInfo, AttemptRecord, PolicyKey};
use tracing::field::Empty;
use tracing::span::Id;
use tracing::{Level, Span};

use crate::observer::{BudgetDecision, CallStart, CallSummary, CircuitTransition, Observer};

/// The span a call runs in; instrument the call's future with it:
///
/// ```
/// use tracing::Instrument;
/// use recourse::observers::tracing::{call_span, TracingObserver};
///
/// let exec = recourse::Executor::builder().observer(TracingObserver::new()).build();
/// # async_io::block_on(async {
/// let value = exec
///     .call("user-service.GetUser", |_| async { Ok::<_, ()>(42) })
///     .instrument(call_span("user-service.GetUser"))
///     .await;
/// assert_eq!(value, Ok(42));
/// # });
/// ```
pub fn call_span(key: &str) -> Span {
    tracing::info_span!(
        "recourse.call",
        recourse.key = key,
        recourse.policy_source = Empty,
        recourse.attempts = Empty,
        recourse.outcome = Empty,
        error.r#type = Empty,
        otel.status_code = Empty,
    )
}

/// The observer that writes calls as `tracing` spans and events; see the
/// [module docs](self).
#[derive(Default)]
pub struct TracingObserver {
    /// Open attempt spans, by the call span they belong to and the attempt.
    open: Mutex<HashMap<(Id, AttemptId), Span>>,
}

impl core::fmt::Debug for TracingObserver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let open = self.open.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("TracingObserver")
            .field("open_attempt_spans", &open)
            .finish()
    }
}

fn millis(d: core::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl TracingObserver {
    /// A new observer.
    pub fn new() -> Self {
        Self::default()
    }

    fn attempt_span(key: PolicyKey<'_>, info: &AttemptInfo) -> Span {
        let span = tracing::info_span!(
            "recourse.attempt",
            recourse.key = %key,
            recourse.retry_index = info.retry_index,
            recourse.hedge_index = info.hedge_index,
            recourse.attempt_kind = info.kind().as_str(),
            http.request.resend_count = Empty,
            recourse.outcome = Empty,
            recourse.reason = Empty,
            recourse.backoff_ms = Empty,
            recourse.duration_ms = Empty,
        );
        if info.retry_index > 0 {
            span.record("http.request.resend_count", info.retry_index);
        }
        span
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Id, AttemptId), Span>> {
        // A panic while holding the lock cannot corrupt a map of spans.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes attempt spans of the current call that never heard their end.
    fn close_call(&self, call: Option<Id>) {
        if let Some(call) = call {
            self.lock().retain(|(c, _), _| *c != call);
        }
    }

    fn end(&self, summary: &CallSummary, success: bool) {
        let current = Span::current();
        current.record("recourse.attempts", summary.attempts);
        let reason = summary.reason().unwrap_or("success");
        if success {
            current.record("recourse.outcome", "success");
            current.record("otel.status_code", "OK");
        } else {
            current.record("recourse.outcome", "failure");
            current.record("error.type", reason);
            current.record("otel.status_code", "ERROR");
        }
        self.close_call(current.id());
    }
}

impl Observer for TracingObserver {
    fn on_start(&self, _key: PolicyKey<'_>, start: &CallStart) {
        if let Some(source) = start.policy_source {
            Span::current().record("recourse.policy_source", source.as_str());
        }
    }

    fn on_launch(&self, key: PolicyKey<'_>, info: &AttemptInfo) {
        if let Some(call) = Span::current().id() {
            let span = Self::attempt_span(key, info);
            self.lock().insert((call, info.id), span);
        }
    }

    fn on_attempt(&self, key: PolicyKey<'_>, record: &AttemptRecord) {
        let open = Span::current()
            .id()
            .and_then(|call| self.lock().remove(&(call, record.info.id)));
        let span = open.unwrap_or_else(|| Self::attempt_span(key, &record.info));
        span.record("recourse.outcome", record.outcome.kind.as_str());
        span.record("recourse.reason", record.outcome.reason);
        span.record("recourse.backoff_ms", millis(record.backoff));
        span.record("recourse.duration_ms", millis(record.duration()));
        if !record.budget_allowed {
            span.in_scope(|| {
                tracing::event!(
                    Level::WARN,
                    recourse.budget_reason = record.budget_reason,
                    "attempt refused by its budget"
                );
            });
        }
    }

    fn on_success(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        tracing::event!(
            Level::DEBUG,
            recourse.key = %key,
            recourse.attempts = summary.attempts,
            recourse.duration_ms = millis(summary.duration()),
            "recourse call succeeded"
        );
        self.end(summary, true);
    }

    fn on_failure(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        let reason = summary.reason().unwrap_or("unknown");
        if reason.starts_with("circuit") {
            tracing::event!(
                Level::WARN,
                recourse.key = %key,
                recourse.reason = reason,
                "recourse.circuit: the breaker refused the call"
            );
        }
        tracing::event!(
            Level::WARN,
            recourse.key = %key,
            recourse.attempts = summary.attempts,
            error.r#type = reason,
            recourse.duration_ms = millis(summary.duration()),
            "recourse call failed"
        );
        self.end(summary, false);
    }

    fn on_circuit_transition(&self, key: PolicyKey<'_>, t: &CircuitTransition) {
        let (from, to) = (t.from.as_str(), t.to.as_str());
        if matches!(t.to, CircuitState::Open { .. }) {
            tracing::event!(
                Level::WARN,
                recourse.key = %key,
                recourse.circuit.from = from,
                recourse.circuit.to = to,
                "recourse.circuit.transition: the breaker opened"
            );
        } else {
            tracing::event!(
                Level::INFO,
                recourse.key = %key,
                recourse.circuit.from = from,
                recourse.circuit.to = to,
                "recourse.circuit.transition"
            );
        }
    }

    fn on_budget_decision(&self, key: PolicyKey<'_>, d: &BudgetDecision<'_>) {
        if d.allowed {
            tracing::event!(
                Level::DEBUG,
                recourse.key = %key,
                recourse.budget = d.budget,
                recourse.retry_index = d.attempt.retry_index,
                recourse.attempt_kind = d.kind.as_str(),
                recourse.budget_mode = d.mode,
                recourse.reason = d.reason,
                "recourse.budget: allowed"
            );
        } else {
            tracing::event!(
                Level::WARN,
                recourse.key = %key,
                recourse.budget = d.budget,
                recourse.retry_index = d.attempt.retry_index,
                recourse.attempt_kind = d.kind.as_str(),
                recourse.budget_mode = d.mode,
                recourse.reason = d.reason,
                "recourse.budget: denied"
            );
        }
    }
}
