//! [`OtelMetricsObserver`]: the instruments of the `metrics` observer
//! through the OpenTelemetry metrics API, on a [`Meter`] you pass (from
//! your `SdkMeterProvider`, or `opentelemetry::global::meter("recourse")`).
//!
//! | instrument | kind | unit | attributes |
//! |---|---|---|---|
//! | `recourse.calls` | counter | `{call}` | `recourse.key`, `recourse.outcome`, `recourse.reason` |
//! | `recourse.attempts` | counter | `{attempt}` | `recourse.key`, `recourse.attempt_kind`, `recourse.outcome`, `recourse.reason` |
//! | `recourse.budget.denials` | counter | `{attempt}` | `recourse.key`, `recourse.budget`, `recourse.reason` |
//! | `recourse.hedges.spawned` | counter | `{attempt}` | `recourse.key` |
//! | `recourse.hedges.won` | counter | `{attempt}` | `recourse.key` |
//! | `recourse.circuit.rejections` | counter | `{call}` | `recourse.key`, `recourse.reason` |
//! | `recourse.circuit.transitions` | counter | `{transition}` | `recourse.key`, `recourse.circuit.from`, `recourse.circuit.to` (`closed` / `open` / `half_open`) |
//! | `recourse.call.duration` | histogram | `s` | `recourse.key`, `recourse.outcome` |
//! | `recourse.attempt.duration` | histogram | `s` | `recourse.key`, `recourse.outcome` |
//! | `recourse.call.attempts` | histogram | `{attempt}` | `recourse.key` |
//!
//! Which to pick: for metrics, this observer when the service already
//! exports through an OTel `MeterProvider` (OTLP); the `metrics` observer
//! when it uses the `metrics` facade (Prometheus exporter, StatsD). For
//! traces, the `tracing` observer with `tracing-opentelemetry`'s layer in
//! the subscriber: its call and attempt spans become OTel spans, with OTel's
//! semantic field names where they exist.
//!
//! ```
//! use recourse::observers::opentelemetry::OtelMetricsObserver;
//!
//! let meter = opentelemetry::global::meter("recourse");
//! let exec = recourse::Executor::builder().observer(OtelMetricsObserver::new(&meter)).build();
//! # drop(exec);
//! ```

use core::fmt;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::KeyValue;
use recourse_core::{AttemptInfo, AttemptRecord, OutcomeKind, PolicyKey};

use crate::observer::{BudgetDecision, CallSummary, CircuitTransition, Observer};

/// The observer; see the [module docs](self).
pub struct OtelMetricsObserver {
    calls: Counter<u64>,
    attempts: Counter<u64>,
    budget_denials: Counter<u64>,
    hedges_spawned: Counter<u64>,
    hedges_won: Counter<u64>,
    circuit_rejections: Counter<u64>,
    circuit_transitions: Counter<u64>,
    call_duration: Histogram<f64>,
    attempt_duration: Histogram<f64>,
    attempts_per_call: Histogram<u64>,
}

impl fmt::Debug for OtelMetricsObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelMetricsObserver")
            .finish_non_exhaustive()
    }
}

fn key_value(key: PolicyKey<'_>) -> KeyValue {
    KeyValue::new("recourse.key", key.to_string())
}

impl OtelMetricsObserver {
    /// The instruments, made on `meter`.
    pub fn new(meter: &Meter) -> Self {
        let counter = |name: &'static str, unit: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_unit(unit)
                .with_description(description)
                .build()
        };
        Self {
            calls: counter("recourse.calls", "{call}", "recourse calls ended"),
            attempts: counter("recourse.attempts", "{attempt}", "attempts ended"),
            budget_denials: counter(
                "recourse.budget.denials",
                "{attempt}",
                "attempts a budget refused",
            ),
            hedges_spawned: counter(
                "recourse.hedges.spawned",
                "{attempt}",
                "hedged attempts launched",
            ),
            hedges_won: counter(
                "recourse.hedges.won",
                "{attempt}",
                "hedges whose success ended the call",
            ),
            circuit_rejections: counter(
                "recourse.circuit.rejections",
                "{call}",
                "calls the circuit breaker refused",
            ),
            circuit_transitions: counter(
                "recourse.circuit.transitions",
                "{transition}",
                "circuit breaker state changes, by state left and entered",
            ),
            call_duration: meter
                .f64_histogram("recourse.call.duration")
                .with_unit("s")
                .with_description("recourse call latency")
                .build(),
            attempt_duration: meter
                .f64_histogram("recourse.attempt.duration")
                .with_unit("s")
                .with_description("attempt latency")
                .build(),
            attempts_per_call: meter
                .u64_histogram("recourse.call.attempts")
                .with_unit("{attempt}")
                .with_description("attempts launched per call")
                .build(),
        }
    }

    fn end(&self, key: PolicyKey<'_>, summary: &CallSummary, outcome: &'static str) {
        let key = key_value(key);
        let reason = summary.reason().unwrap_or("success");
        let outcome = KeyValue::new("recourse.outcome", outcome);
        self.calls.add(
            1,
            &[
                key.clone(),
                outcome.clone(),
                KeyValue::new("recourse.reason", reason),
            ],
        );
        if reason.starts_with("circuit_") {
            self.circuit_rejections
                .add(1, &[key.clone(), KeyValue::new("recourse.reason", reason)]);
        }
        self.call_duration
            .record(summary.duration().as_secs_f64(), &[key.clone(), outcome]);
        self.attempts_per_call
            .record(u64::from(summary.attempts), &[key]);
    }
}

impl Observer for OtelMetricsObserver {
    fn on_launch(&self, key: PolicyKey<'_>, info: &AttemptInfo) {
        if info.is_hedge {
            self.hedges_spawned.add(1, &[key_value(key)]);
        }
    }

    fn on_attempt(&self, key: PolicyKey<'_>, record: &AttemptRecord) {
        let key = key_value(key);
        let outcome = KeyValue::new("recourse.outcome", record.outcome.kind.as_str());
        self.attempts.add(
            1,
            &[
                key.clone(),
                KeyValue::new("recourse.attempt_kind", record.info.kind().as_str()),
                outcome.clone(),
                KeyValue::new("recourse.reason", record.outcome.reason),
            ],
        );
        if record.info.is_hedge && record.outcome.kind == OutcomeKind::Success {
            self.hedges_won.add(1, core::slice::from_ref(&key));
        }
        self.attempt_duration
            .record(record.duration().as_secs_f64(), &[key, outcome]);
    }

    fn on_success(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        self.end(key, summary, "success");
    }

    fn on_failure(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        self.end(key, summary, "failure");
    }

    fn on_circuit_transition(&self, key: PolicyKey<'_>, t: &CircuitTransition) {
        self.circuit_transitions.add(
            1,
            &[
                key_value(key),
                KeyValue::new("recourse.circuit.from", t.from.as_str()),
                KeyValue::new("recourse.circuit.to", t.to.as_str()),
            ],
        );
    }

    fn on_budget_decision(&self, key: PolicyKey<'_>, decision: &BudgetDecision<'_>) {
        if !decision.allowed {
            self.budget_denials.add(
                1,
                &[
                    key_value(key),
                    KeyValue::new("recourse.budget", decision.budget.to_owned()),
                    KeyValue::new("recourse.reason", decision.reason),
                ],
            );
        }
    }
}
