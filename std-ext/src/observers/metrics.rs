//! [`MetricsObserver`]: recourse calls as counters and histograms through
//! the [`metrics`] facade, so any exporter works (Prometheus, StatsD, OTLP,
//! ...): install one as the global recorder and add the observer.
//!
//! Every metric carries the label `key` (the policy key; keys are
//! low-cardinality by design, so this is safe to label by).
//!
//! | metric | kind | labels | counts |
//! |---|---|---|---|
//! | `recourse_calls_total` | counter | `key`, `outcome` (`success` / `failure`), `reason` | calls ended (`reason` is `success` or the failure's code: `retries_exhausted`, `budget_denied`, `circuit_open` ...) |
//! | `recourse_attempts_total` | counter | `key`, `kind` (`initial` / `retry` / `hedge`), `outcome`, `reason` | attempts ended, by outcome (`success`, `retryable`, `non_retryable`, `abort`) and the classifier's or recourse's reason code |
//! | `recourse_budget_denials_total` | counter | `key`, `budget`, `reason` | attempts a budget refused |
//! | `recourse_hedges_spawned_total` | counter | `key` | hedges launched |
//! | `recourse_hedges_won_total` | counter | `key` | hedges whose success ended the call |
//! | `recourse_circuit_rejections_total` | counter | `key`, `reason` | calls the breaker refused (`circuit_open`, `circuit_half_open_probe_limit`) |
//! | `recourse_call_duration_seconds` | histogram | `key`, `outcome` | call latency |
//! | `recourse_attempt_duration_seconds` | histogram | `key`, `outcome` | attempt latency |
//! | `recourse_attempts_per_call` | histogram | `key` | attempts launched per call |
//!
//! The breaker's state transitions themselves (closed → open → half-open)
//! are not observer events; its refusals are, and are counted above.
//!
//! ```
//! use recourse::observers::metrics::MetricsObserver;
//!
//! let exec = recourse::Executor::builder().observer(MetricsObserver::new()).build();
//! # drop(exec);
//! ```

use recourse_core::{AttemptInfo, AttemptKind, AttemptRecord, OutcomeKind, PolicyKey};

use crate::observer::{BudgetDecision, CallSummary, Observer};

/// `recourse_calls_total`.
pub const CALLS: &str = "recourse_calls_total";
/// `recourse_attempts_total`.
pub const ATTEMPTS: &str = "recourse_attempts_total";
/// `recourse_budget_denials_total`.
pub const BUDGET_DENIALS: &str = "recourse_budget_denials_total";
/// `recourse_hedges_spawned_total`.
pub const HEDGES_SPAWNED: &str = "recourse_hedges_spawned_total";
/// `recourse_hedges_won_total`.
pub const HEDGES_WON: &str = "recourse_hedges_won_total";
/// `recourse_circuit_rejections_total`.
pub const CIRCUIT_REJECTIONS: &str = "recourse_circuit_rejections_total";
/// `recourse_call_duration_seconds`.
pub const CALL_DURATION: &str = "recourse_call_duration_seconds";
/// `recourse_attempt_duration_seconds`.
pub const ATTEMPT_DURATION: &str = "recourse_attempt_duration_seconds";
/// `recourse_attempts_per_call`.
pub const ATTEMPTS_PER_CALL: &str = "recourse_attempts_per_call";

/// The observer that records calls through the `metrics` facade; see the
/// [module docs](self) for the metrics.
#[derive(Copy, Clone, Debug, Default)]
pub struct MetricsObserver {
    _private: (),
}

impl MetricsObserver {
    /// A new observer. It describes its metrics (units and help text) to
    /// the recorder installed at the time.
    pub fn new() -> Self {
        describe();
        Self { _private: () }
    }
}

/// Describes every metric to the installed recorder (exporters use this
/// for `# HELP` lines and units).
pub fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        CALLS,
        Unit::Count,
        "recourse calls ended, by outcome and reason"
    );
    describe_counter!(
        ATTEMPTS,
        Unit::Count,
        "attempts ended, by kind, outcome and reason"
    );
    describe_counter!(BUDGET_DENIALS, Unit::Count, "attempts a budget refused");
    describe_counter!(HEDGES_SPAWNED, Unit::Count, "hedged attempts launched");
    describe_counter!(
        HEDGES_WON,
        Unit::Count,
        "hedges whose success ended the call"
    );
    describe_counter!(
        CIRCUIT_REJECTIONS,
        Unit::Count,
        "calls the circuit breaker refused"
    );
    describe_histogram!(CALL_DURATION, Unit::Seconds, "recourse call latency");
    describe_histogram!(ATTEMPT_DURATION, Unit::Seconds, "attempt latency");
    describe_histogram!(ATTEMPTS_PER_CALL, Unit::Count, "attempts launched per call");
}

fn kind_str(kind: AttemptKind) -> &'static str {
    match kind {
        AttemptKind::Initial => "initial",
        AttemptKind::Retry => "retry",
        AttemptKind::Hedge => "hedge",
    }
}

fn outcome_str(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Success => "success",
        OutcomeKind::Retryable => "retryable",
        OutcomeKind::NonRetryable => "non_retryable",
        OutcomeKind::Abort => "abort",
    }
}

impl MetricsObserver {
    fn end(key: PolicyKey<'_>, summary: &CallSummary, outcome: &'static str) {
        let key = key.to_string();
        let reason = summary.reason().unwrap_or("success");
        metrics::counter!(CALLS, "key" => key.clone(), "outcome" => outcome, "reason" => reason)
            .increment(1);
        if reason.starts_with("circuit_") {
            metrics::counter!(CIRCUIT_REJECTIONS, "key" => key.clone(), "reason" => reason)
                .increment(1);
        }
        metrics::histogram!(CALL_DURATION, "key" => key.clone(), "outcome" => outcome)
            .record(summary.duration().as_secs_f64());
        metrics::histogram!(ATTEMPTS_PER_CALL, "key" => key).record(f64::from(summary.attempts));
    }
}

impl Observer for MetricsObserver {
    fn on_launch(&self, key: PolicyKey<'_>, info: &AttemptInfo) {
        if info.is_hedge {
            metrics::counter!(HEDGES_SPAWNED, "key" => key.to_string()).increment(1);
        }
    }

    fn on_attempt(&self, key: PolicyKey<'_>, record: &AttemptRecord) {
        let key = key.to_string();
        let outcome = outcome_str(record.outcome.kind);
        metrics::counter!(
            ATTEMPTS,
            "key" => key.clone(),
            "kind" => kind_str(record.info.kind()),
            "outcome" => outcome,
            "reason" => record.outcome.reason,
        )
        .increment(1);
        if record.info.is_hedge && record.outcome.kind == OutcomeKind::Success {
            metrics::counter!(HEDGES_WON, "key" => key.clone()).increment(1);
        }
        metrics::histogram!(ATTEMPT_DURATION, "key" => key, "outcome" => outcome)
            .record(record.duration().as_secs_f64());
    }

    fn on_success(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        Self::end(key, summary, "success");
    }

    fn on_failure(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        Self::end(key, summary, "failure");
    }

    fn on_budget_decision(&self, key: PolicyKey<'_>, decision: &BudgetDecision<'_>) {
        if !decision.allowed {
            metrics::counter!(
                BUDGET_DENIALS,
                "key" => key.to_string(),
                "budget" => decision.budget.to_owned(),
                "reason" => decision.reason,
            )
            .increment(1);
        }
    }
}
