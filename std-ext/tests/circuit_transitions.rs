//! A key's circuit breaker driven open, half-open, closed, open again and
//! closed on tokio's paused clock, through an executor whose observer is a
//! `MultiObserver` of a recording observer, the tracing, metrics and
//! OpenTelemetry observers: each sees every state change exactly once, in
//! order, and refusals are not changes.

#![allow(clippy::unwrap_used)]

use core::time::Duration;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use opentelemetry::metrics::MeterProvider;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use recourse::core_machine::breaker::CircuitState;
use recourse::observer::{CallStart, CircuitTransition, Instant};
use recourse::observers::metrics::MetricsObserver;
use recourse::observers::opentelemetry::OtelMetricsObserver;
use recourse::observers::tracing::TracingObserver;
use recourse::{Executor, MultiObserver, Observer, Policy, PolicyKey, StaticProvider};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const KEY: &str = "svc.Flaky";
const COOLDOWN: Duration = Duration::from_secs(1);

/// What the recording observer hears: call starts and transitions.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Heard {
    Start(Instant),
    Transition(CircuitTransition),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Heard>>>);

impl Observer for Recorder {
    fn on_start(&self, key: PolicyKey<'_>, start: &CallStart) {
        assert_eq!(key.to_string(), KEY);
        self.0.lock().unwrap().push(Heard::Start(start.start));
    }
    fn on_circuit_transition(&self, key: PolicyKey<'_>, t: &CircuitTransition) {
        assert_eq!(key.to_string(), KEY);
        self.0.lock().unwrap().push(Heard::Transition(*t));
    }
}

/// The tracing events named `recourse.circuit.transition`: (from, to).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, String, String)>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn core::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut f = BTreeMap::new();
        event.record(&mut Fields(&mut f));
        if f.get("message")
            .is_some_and(|m| m.starts_with("recourse.circuit.transition"))
        {
            self.0.lock().unwrap().push((
                f["recourse.key"].clone(),
                f["recourse.circuit.from"].clone(),
                f["recourse.circuit.to"].clone(),
            ));
        }
    }
}

fn policy() -> Policy {
    let mut p = Policy::DEFAULT;
    // One attempt per call: each call is one result for the breaker.
    p.retry.max_attempts = 1;
    p.circuit.enabled = true;
    p.circuit.threshold = 2;
    p.circuit.cooldown = COOLDOWN;
    p.circuit.half_open_max_probes = 1;
    p.circuit.half_open_successes = 1;
    p
}

/// Runs one call that succeeds or fails; `Err` also when refused.
async fn call(exec: &Executor, ok: bool) -> Result<u32, String> {
    exec.call(KEY, |_| async move {
        if ok {
            Ok::<u32, &str>(1)
        } else {
            Err("boom")
        }
    })
    .await
    .map_err(|e| e.to_string())
}

#[test]
fn every_observer_sees_each_transition_once_in_order() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let heard = Recorder::default();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _guard = tracing::subscriber::set_default(subscriber);
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let exec = Executor::builder()
                .provider(
                    StaticProvider::builder()
                        .policy(KEY, policy())
                        .unwrap()
                        .build(),
                )
                .observer(
                    MultiObserver::new()
                        .with(heard.clone())
                        .with(TracingObserver::new())
                        .with(MetricsObserver::new())
                        .with(OtelMetricsObserver::new(&provider.meter("recourse"))),
                )
                .build();
            // Two failures open the circuit; two calls are refused.
            assert!(call(&exec, false).await.is_err());
            assert!(call(&exec, false).await.is_err());
            for _ in 0..2 {
                let e = call(&exec, true).await.unwrap_err();
                assert!(e.contains("circuit"), "{e}");
            }
            // After the cooldown: a probe succeeds and closes it.
            tokio::time::advance(COOLDOWN).await;
            assert_eq!(call(&exec, true).await, Ok(1));
            assert_eq!(call(&exec, true).await, Ok(1));
            // Open again; the first probe fails (back to open), the next
            // one after another cooldown closes it.
            assert!(call(&exec, false).await.is_err());
            assert!(call(&exec, false).await.is_err());
            tokio::time::advance(COOLDOWN).await;
            assert!(call(&exec, false).await.is_err());
            assert!(call(&exec, true).await.unwrap_err().contains("circuit"));
            tokio::time::advance(COOLDOWN).await;
            assert_eq!(call(&exec, true).await, Ok(1));
        });
    });

    // The recording observer: each change once, at the start of the call
    // that caused it (every call here takes no time), between that call's
    // start and the next call's.
    let heard = heard.0.lock().unwrap().clone();
    let starts: Vec<Instant> = heard
        .iter()
        .filter_map(|h| match h {
            Heard::Start(t) => Some(*t),
            Heard::Transition(_) => None,
        })
        .collect();
    assert_eq!(starts.len(), 11);
    let t = |i: usize, from: CircuitState, to: CircuitState| {
        Heard::Transition(CircuitTransition::new(from, to, starts[i]))
    };
    let open = |i: usize| CircuitState::Open {
        until: starts[i] + COOLDOWN,
    };
    use CircuitState::{Closed, HalfOpen};
    let want = vec![
        Heard::Start(starts[0]),
        Heard::Start(starts[1]),
        t(1, Closed, open(1)),
        Heard::Start(starts[2]),
        Heard::Start(starts[3]),
        Heard::Start(starts[4]),
        t(4, open(1), HalfOpen),
        t(4, HalfOpen, Closed),
        Heard::Start(starts[5]),
        Heard::Start(starts[6]),
        Heard::Start(starts[7]),
        t(7, Closed, open(7)),
        Heard::Start(starts[8]),
        t(8, open(7), HalfOpen),
        t(8, HalfOpen, open(8)),
        Heard::Start(starts[9]),
        Heard::Start(starts[10]),
        t(10, open(8), HalfOpen),
        t(10, HalfOpen, Closed),
    ];
    assert_eq!(heard, want);
    assert_eq!(starts[4], starts[1] + COOLDOWN);
    assert_eq!(starts[8], starts[7] + COOLDOWN);

    // tracing: one event per change, in order.
    let events = capture.0.lock().unwrap().clone();
    let pairs: Vec<(&str, &str)> = events
        .iter()
        .map(|(k, f, t)| {
            assert_eq!(k, KEY);
            (f.as_str(), t.as_str())
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
        ]
    );

    // metrics: the transitions counter by (from, to); refusals apart.
    let mut transitions = BTreeMap::new();
    let mut rejections = 0;
    for (ck, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = ck.into_parts();
        let labels: BTreeMap<String, String> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        let DebugValue::Counter(n) = value else {
            continue;
        };
        assert_eq!(kind, MetricKind::Counter);
        match key.name() {
            "recourse_circuit_transitions_total" => {
                assert_eq!(labels["key"], KEY);
                transitions.insert((labels["from"].clone(), labels["to"].clone()), n);
            }
            "recourse_circuit_rejections_total" => rejections += n,
            _ => {}
        }
    }
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        transitions,
        BTreeMap::from([
            (s("closed", "open"), 2),
            (s("open", "half_open"), 3),
            (s("half_open", "closed"), 2),
            (s("half_open", "open"), 1),
        ])
    );
    assert_eq!(rejections, 3);

    // OpenTelemetry: the same counts.
    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    let mut otel = BTreeMap::new();
    for m in metrics
        .iter()
        .flat_map(|r| r.scope_metrics())
        .flat_map(|s| s.metrics())
        .filter(|m| m.name() == "recourse.circuit.transitions")
    {
        let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() else {
            panic!("{:?}", m.data());
        };
        for p in sum.data_points() {
            let get = |k: &str| {
                p.attributes()
                    .find(|kv: &&KeyValue| kv.key.as_str() == k)
                    .map(|kv| kv.value.to_string())
                    .unwrap()
            };
            assert_eq!(get("recourse.key"), KEY);
            let e: &mut u64 = otel
                .entry((get("recourse.circuit.from"), get("recourse.circuit.to")))
                .or_default();
            *e += p.value();
        }
    }
    assert_eq!(otel, transitions);
}
