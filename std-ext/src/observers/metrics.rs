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
//! | `recourse_circuit_transitions_total` | counter | `key`, `from`, `to` (`closed` / `open` / `half_open`) | breaker state changes (see [`CircuitTransition`]) |
//! | `recourse_call_duration_seconds` | histogram | `key`, `outcome` | call latency |
//! | `recourse_attempt_duration_seconds` | histogram | `key`, `outcome` | attempt latency |
//! | `recourse_attempts_per_call` | histogram | `key` | attempts launched per call |
//!
//! Handles are cached: the first event of each metric and label set
//! registers it with the recorder installed at the time, later ones reuse
//! the handle (a lookup by key, no allocation). So install the recorder
//! before the first call; the cache grows with keys × reason codes, which
//! are both low-cardinality.
//!
//! The breaker's refusals and its state changes are counted apart: a
//! breaker that opens once and refuses a thousand calls adds one to
//! `recourse_circuit_transitions_total{from="closed",to="open"}` and a
//! thousand to `recourse_circuit_rejections_total`.
//!
//! ```
//! use recourse::observers::metrics::MetricsObserver;
//!
//! let exec = recourse::Executor::builder().observer(MetricsObserver::new()).build();
//! # drop(exec);
//! ```

use core::fmt::Write as _;
use std::collections::HashMap;
use std::sync::RwLock;

use metrics::{Counter, Histogram};
use recourse_core::{AttemptInfo, AttemptRecord, OutcomeKind, PolicyKey};

use crate::observer::{BudgetDecision, CallSummary, CircuitTransition, Observer};

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
/// `recourse_circuit_transitions_total`.
pub const CIRCUIT_TRANSITIONS: &str = "recourse_circuit_transitions_total";
/// `recourse_call_duration_seconds`.
pub const CALL_DURATION: &str = "recourse_call_duration_seconds";
/// `recourse_attempt_duration_seconds`.
pub const ATTEMPT_DURATION: &str = "recourse_attempt_duration_seconds";
/// `recourse_attempts_per_call`.
pub const ATTEMPTS_PER_CALL: &str = "recourse_attempts_per_call";

/// The observer that records calls through the `metrics` facade; see the
/// [module docs](self) for the metrics.
#[derive(Default)]
pub struct MetricsObserver {
    counters: Cache<Counter>,
    histograms: Cache<Histogram>,
}

impl core::fmt::Debug for MetricsObserver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MetricsObserver").finish_non_exhaustive()
    }
}

impl MetricsObserver {
    /// A new observer. It describes its metrics (units and help text) to
    /// the recorder installed at the time.
    pub fn new() -> Self {
        describe();
        Self::default()
    }
}

/// A `'static` label value or metric name, compared and hashed by address:
/// they are constants, so this is exact for the same constant and at worst
/// caches one handle twice for two equal ones.
#[derive(Copy, Clone, Debug)]
struct ById(&'static str);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.0, other.0)
    }
}

impl Eq for ById {}

impl core::hash::Hash for ById {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        (self.0.as_ptr() as usize).hash(state);
    }
}

/// FNV-1a: keys and addresses are short and not attacker-chosen (keys come
/// from the service's own configuration), so no SipHash.
#[derive(Default)]
struct Fnv(u64);

impl core::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, core::hash::BuildHasherDefault<Fnv>>;

/// A metric's static part: its name and the values of its labels other
/// than `key`, in the order [`labels`] names them.
type Static = (ById, [ById; 3]);

/// Registered handles, by static part, then by key.
struct Cache<H>(RwLock<FnvMap<Static, FnvMap<Box<str>, H>>>);

impl<H> Default for Cache<H> {
    fn default() -> Self {
        Self(RwLock::new(FnvMap::default()))
    }
}

/// The label names of a metric besides `key`.
fn labels(metric: &'static str) -> &'static [&'static str] {
    match metric {
        CALLS => &["outcome", "reason"],
        ATTEMPTS => &["kind", "outcome", "reason"],
        BUDGET_DENIALS => &["reason"],
        CIRCUIT_REJECTIONS => &["reason"],
        CIRCUIT_TRANSITIONS => &["from", "to"],
        CALL_DURATION | ATTEMPT_DURATION => &["outcome"],
        _ => &[],
    }
}

/// The key as `namespace.name`, on the stack when it fits (`None` when it
/// does not: then handles are registered per event, uncached).
struct KeyStr<'a> {
    key: PolicyKey<'a>,
    buf: heapless::String<128>,
    fits: bool,
}

impl<'a> KeyStr<'a> {
    fn new(key: PolicyKey<'a>) -> Self {
        let mut buf = heapless::String::new();
        let fits = write!(buf, "{key}").is_ok();
        Self { key, buf, fits }
    }

    fn joined(&self) -> Option<&str> {
        self.fits.then_some(self.buf.as_str())
    }
}

impl<H: Clone> Cache<H> {
    /// The handle for `metric` with these labels, registered by `register`
    /// on first use.
    fn get(
        &self,
        metric: &'static str,
        key: &KeyStr<'_>,
        values: [&'static str; 3],
        register: impl FnOnce(metrics::Key) -> H,
    ) -> H {
        let id = (ById(metric), values.map(ById));
        if let Some(k) = key.joined() {
            let map = self.0.read().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = map.get(&id).and_then(|m| m.get(k)) {
                return h.clone();
            }
        }
        let owned = key.key.to_string();
        let mut all = vec![metrics::Label::new("key", owned.clone())];
        for (name, value) in labels(metric).iter().zip(values) {
            all.push(metrics::Label::from_static_parts(name, value));
        }
        let handle = register(metrics::Key::from_parts(metric, all));
        if key.joined().is_some() {
            let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
            map.entry(id)
                .or_default()
                .insert(owned.into_boxed_str(), handle.clone());
        }
        handle
    }
}

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl MetricsObserver {
    fn counter(
        &self,
        metric: &'static str,
        key: &KeyStr<'_>,
        values: [&'static str; 3],
    ) -> Counter {
        self.counters.get(metric, key, values, |k| {
            metrics::with_recorder(|r| r.register_counter(&k, &METADATA))
        })
    }

    fn histogram(
        &self,
        metric: &'static str,
        key: &KeyStr<'_>,
        values: [&'static str; 3],
    ) -> Histogram {
        self.histograms.get(metric, key, values, |k| {
            metrics::with_recorder(|r| r.register_histogram(&k, &METADATA))
        })
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
    describe_counter!(
        CIRCUIT_TRANSITIONS,
        Unit::Count,
        "circuit breaker state changes, by state left and entered"
    );
    describe_histogram!(CALL_DURATION, Unit::Seconds, "recourse call latency");
    describe_histogram!(ATTEMPT_DURATION, Unit::Seconds, "attempt latency");
    describe_histogram!(ATTEMPTS_PER_CALL, Unit::Count, "attempts launched per call");
}

impl MetricsObserver {
    fn end(&self, key: PolicyKey<'_>, summary: &CallSummary, outcome: &'static str) {
        let key = &KeyStr::new(key);
        let reason = summary.reason().unwrap_or("success");
        self.counter(CALLS, key, [outcome, reason, ""]).increment(1);
        if reason.starts_with("circuit_") {
            self.counter(CIRCUIT_REJECTIONS, key, [reason, "", ""])
                .increment(1);
        }
        self.histogram(CALL_DURATION, key, [outcome, "", ""])
            .record(summary.duration().as_secs_f64());
        self.histogram(ATTEMPTS_PER_CALL, key, ["", "", ""])
            .record(f64::from(summary.attempts));
    }
}

impl Observer for MetricsObserver {
    fn on_launch(&self, key: PolicyKey<'_>, info: &AttemptInfo) {
        if info.is_hedge {
            self.counter(HEDGES_SPAWNED, &KeyStr::new(key), ["", "", ""])
                .increment(1);
        }
    }

    fn on_attempt(&self, key: PolicyKey<'_>, record: &AttemptRecord) {
        let key = &KeyStr::new(key);
        let outcome = record.outcome.kind.as_str();
        let kind = record.info.kind().as_str();
        self.counter(ATTEMPTS, key, [kind, outcome, record.outcome.reason])
            .increment(1);
        if record.info.is_hedge && record.outcome.kind == OutcomeKind::Success {
            self.counter(HEDGES_WON, key, ["", "", ""]).increment(1);
        }
        self.histogram(ATTEMPT_DURATION, key, [outcome, "", ""])
            .record(record.duration().as_secs_f64());
    }

    fn on_success(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        self.end(key, summary, "success");
    }

    fn on_failure(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        self.end(key, summary, "failure");
    }

    fn on_circuit_transition(&self, key: PolicyKey<'_>, t: &CircuitTransition) {
        let key = &KeyStr::new(key);
        self.counter(
            CIRCUIT_TRANSITIONS,
            key,
            [t.from.as_str(), t.to.as_str(), ""],
        )
        .increment(1);
    }

    fn on_budget_decision(&self, key: PolicyKey<'_>, decision: &BudgetDecision<'_>) {
        if !decision.allowed {
            // The budget's name is the policy's, so not `'static`: this
            // rare event registers its counter each time.
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
