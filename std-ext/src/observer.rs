//! Observers: hooks for logs, metrics and traces, shared by every call of an
//! executor.
//!
//! Order, per call, always: [`Observer::on_start`] once and first (also for
//! a call denied before any attempt), then [`Observer::on_budget_decision`]
//! and [`Observer::on_launch`] as attempts are admitted and launched (hedge
//! spawns included) and one [`Observer::on_attempt`] per attempt in the
//! order attempts ended (hedge losers as cancelled), then exactly one of
//! [`Observer::on_success`] / [`Observer::on_failure`], last — also when the
//! call future is dropped midway (then the failure's reason is `cancelled`).
//!
//! Why `&self` and `Send + Sync`: one observer serves every call of an
//! executor, on whatever threads the calls run. It is told about events as
//! they happen, on the call's task, so it must be quick; anything slow
//! (exporting spans, writing logs) belongs on a queue. A call whose executor
//! has no observer pays nothing for this.

use core::panic::AssertUnwindSafe;

// What an observer hears, one level down from the crate root.
pub use recourse_core::breaker::CircuitState;
pub use recourse_core::machine::Verdict;
pub use recourse_core::{AttemptId, AttemptKind, AttemptRecord, Instant};
use recourse_core::{AttemptInfo, PolicyKey};

use crate::missing_policy::MissingPolicyMode;
use crate::provider::PolicySource;

/// What an observer learns when a call starts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallStart {
    /// When the call started, on the call's timer.
    pub start: Instant,
    /// Where the call's policy came from; `None` when the call is denied for
    /// want of one.
    pub policy_source: Option<PolicySource>,
    /// The missing-policy mode, when the provider gave no policy and the mode
    /// decided the call.
    pub missing_policy_mode: Option<MissingPolicyMode>,
}

/// A key's circuit breaker changed state, told once per change through
/// [`Observer::on_circuit_transition`].
///
/// The changes: `Closed` → `Open` (a failure tripped it), `Open` →
/// `HalfOpen` (the first call admitted after the cooldown, which becomes a
/// probe: a breaker whose cooldown is over but that no call has reached
/// yet is still open), `HalfOpen` → `Closed` (enough probes succeeded) and
/// `HalfOpen` → `Open` (a probe failed). Instants are on the timer of the
/// call that caused the change, like the rest of that call's events.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitTransition {
    /// The state left (`Open { until }` carries the cooldown's end).
    pub from: CircuitState,
    /// The state entered (`Open { until }`: refused until `until`).
    pub to: CircuitState,
    /// When the change happened.
    pub at: Instant,
}

impl CircuitTransition {
    /// A transition (for tests of observers).
    pub const fn new(from: CircuitState, to: CircuitState, at: Instant) -> Self {
        Self { from, to, at }
    }
}

/// What an observer learns when a call ends.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallSummary {
    /// When the call started, on the call's timer.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
    /// Attempts launched.
    pub attempts: u32,
    /// The machine's verdict; `None` when the call was denied before the
    /// machine ran.
    pub verdict: Option<Verdict>,
    /// Where the call's policy came from, as in [`CallStart`].
    pub policy_source: Option<PolicySource>,
    /// The missing-policy mode, as in [`CallStart`].
    pub missing_policy_mode: Option<MissingPolicyMode>,
    /// The operation panicked: the machine saw the call dropped (its verdict
    /// says `cancelled`), but what happened is a panic, and
    /// [`reason`](Self::reason) says `panic_in_operation`.
    pub operation_panicked: bool,
}

impl CallSummary {
    /// Why the call failed, as a low-cardinality code (`retries_exhausted`,
    /// `deadline_exceeded`, `cancelled`, `no_policy`, `panic_in_operation`
    /// ...); `None` on success.
    pub fn reason(&self) -> Option<&'static str> {
        if self.operation_panicked {
            return Some(recourse_core::reason::PANIC_IN_OPERATION);
        }
        match self.verdict {
            Some(Verdict::Success(_)) => None,
            Some(Verdict::Failure { cause, .. }) => Some(cause.as_str()),
            None => Some("no_policy"),
        }
    }

    /// `end - start`.
    pub fn duration(&self) -> core::time::Duration {
        self.end - self.start
    }
}

/// Hears the events of every call of an executor. Every method defaults to
/// doing nothing.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use recourse::observer::AttemptRecord;
/// use recourse::{Executor, Observer, PolicyKey};
///
/// #[derive(Default)]
/// struct CountRetries(AtomicU32);
///
/// impl Observer for CountRetries {
///     fn on_attempt(&self, _key: PolicyKey<'_>, record: &AttemptRecord) {
///         if record.info.retry_index > 0 {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let exec = Executor::builder().observer(CountRetries::default()).build();
/// # drop(exec);
/// ```
pub trait Observer: Send + Sync {
    /// The call started.
    fn on_start(&self, key: PolicyKey<'_>, start: &CallStart) {
        let _ = (key, start);
    }

    /// An attempt is launching: a primary, a retry, or (`info.is_hedge`) a
    /// hedge spawn.
    fn on_launch(&self, key: PolicyKey<'_>, info: &AttemptInfo) {
        let _ = (key, info);
    }

    /// An attempt ended, was cut, or was refused.
    fn on_attempt(&self, key: PolicyKey<'_>, record: &AttemptRecord) {
        let _ = (key, record);
    }

    /// The call succeeded.
    fn on_success(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        let _ = (key, summary);
    }

    /// The call failed, was denied, or was dropped.
    fn on_failure(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        let _ = (key, summary);
    }

    /// A budget decided whether an attempt may run (one event per attempt
    /// whose policy names a budget), before the attempt launched.
    fn on_budget_decision(&self, key: PolicyKey<'_>, decision: &BudgetDecision<'_>) {
        let _ = (key, decision);
    }

    /// A key's circuit breaker changed state (see [`CircuitTransition`]);
    /// told on the task of the call whose admission or result changed it,
    /// between that call's [`Observer::on_start`] and its end, exactly once
    /// per change.
    fn on_circuit_transition(&self, key: PolicyKey<'_>, transition: &CircuitTransition) {
        let _ = (key, transition);
    }

    /// The call's classifier panicked (panic containment on): `message` is
    /// the panic's, and the attempt's record, which follows at once, has the
    /// reason `panic_in_classifier`. Told once per call, for the first
    /// panic.
    fn on_classifier_panic(&self, key: PolicyKey<'_>, attempt: &AttemptInfo, message: &str) {
        let _ = (key, attempt, message);
    }
}

/// One budget decision, for [`Observer::on_budget_decision`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetDecision<'a> {
    /// The attempt.
    pub attempt: recourse_core::AttemptInfo,
    /// Its kind: initial, retry or hedge.
    pub kind: recourse_core::AttemptKind,
    /// The budget's name, as the policy referenced it.
    pub budget: &'a str,
    /// What the attempt costs there.
    pub cost: u32,
    /// How the decision was made: `standard` (the budget decided), `deny` or
    /// `allow_unsafe` (the budget is missing and the executor's mode
    /// decided).
    pub mode: &'static str,
    /// Whether the attempt may run.
    pub allowed: bool,
    /// Why: `allowed`, `budget_denied`, `budget_not_found`,
    /// `panic_in_budget`, or the budget's own code.
    pub reason: &'static str,
}

/// The observer that does nothing.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NoopObserver;

impl Observer for NoopObserver {}

impl<O: Observer + ?Sized> Observer for std::sync::Arc<O> {
    fn on_budget_decision(&self, key: PolicyKey<'_>, decision: &BudgetDecision<'_>) {
        (**self).on_budget_decision(key, decision)
    }
    fn on_classifier_panic(&self, key: PolicyKey<'_>, attempt: &AttemptInfo, message: &str) {
        (**self).on_classifier_panic(key, attempt, message)
    }
    fn on_circuit_transition(&self, key: PolicyKey<'_>, transition: &CircuitTransition) {
        (**self).on_circuit_transition(key, transition)
    }
    fn on_start(&self, key: PolicyKey<'_>, start: &CallStart) {
        (**self).on_start(key, start)
    }
    fn on_launch(&self, key: PolicyKey<'_>, info: &AttemptInfo) {
        (**self).on_launch(key, info)
    }
    fn on_attempt(&self, key: PolicyKey<'_>, record: &AttemptRecord) {
        (**self).on_attempt(key, record)
    }
    fn on_success(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        (**self).on_success(key, summary)
    }
    fn on_failure(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        (**self).on_failure(key, summary)
    }
}

impl<O: Observer + ?Sized> Observer for Box<O> {
    fn on_budget_decision(&self, key: PolicyKey<'_>, decision: &BudgetDecision<'_>) {
        (**self).on_budget_decision(key, decision)
    }
    fn on_classifier_panic(&self, key: PolicyKey<'_>, attempt: &AttemptInfo, message: &str) {
        (**self).on_classifier_panic(key, attempt, message)
    }
    fn on_circuit_transition(&self, key: PolicyKey<'_>, transition: &CircuitTransition) {
        (**self).on_circuit_transition(key, transition)
    }
    fn on_start(&self, key: PolicyKey<'_>, start: &CallStart) {
        (**self).on_start(key, start)
    }
    fn on_launch(&self, key: PolicyKey<'_>, info: &AttemptInfo) {
        (**self).on_launch(key, info)
    }
    fn on_attempt(&self, key: PolicyKey<'_>, record: &AttemptRecord) {
        (**self).on_attempt(key, record)
    }
    fn on_success(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        (**self).on_success(key, summary)
    }
    fn on_failure(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        (**self).on_failure(key, summary)
    }
}

/// Tells several observers every event, in the order they were added. A
/// panic in one observer is contained and does not keep the others from
/// hearing the event.
///
/// [`ExecutorBuilder::observer`](crate::ExecutorBuilder::observer) builds one
/// when it is called more than once.
#[derive(Default)]
pub struct MultiObserver {
    observers: Vec<Box<dyn Observer>>,
    /// Shared with the executor that built it, so that
    /// `Executor::observer_panics` counts every contained panic.
    panics: std::sync::Arc<core::sync::atomic::AtomicU64>,
}

impl MultiObserver {
    /// No observers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `observer` after the ones already there.
    #[must_use]
    pub fn with(mut self, observer: impl Observer + 'static) -> Self {
        self.push(observer);
        self
    }

    /// Adds `observer` after the ones already there.
    pub fn push(&mut self, observer: impl Observer + 'static) {
        self.observers.push(Box::new(observer));
    }

    /// How many observers there are.
    pub fn len(&self) -> usize {
        self.observers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.observers.is_empty()
    }
}

impl From<Vec<Box<dyn Observer>>> for MultiObserver {
    /// The observers, in the order given.
    fn from(observers: Vec<Box<dyn Observer>>) -> Self {
        Self {
            observers,
            panics: std::sync::Arc::default(),
        }
    }
}

impl MultiObserver {
    /// `observers`, counting their contained panics in `panics` (the
    /// executor's own counter).
    pub(crate) fn counting(
        observers: Vec<Box<dyn Observer>>,
        panics: std::sync::Arc<core::sync::atomic::AtomicU64>,
    ) -> Self {
        Self { observers, panics }
    }
}

impl core::fmt::Debug for MultiObserver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MultiObserver")
            .field("observers", &self.observers.len())
            .finish()
    }
}

impl MultiObserver {
    /// Tells every observer, containing each one's panic so that the others
    /// still hear the event (the panic hook has reported it).
    fn each(&self, f: impl Fn(&dyn Observer)) {
        for o in &self.observers {
            if std::panic::catch_unwind(AssertUnwindSafe(|| f(&**o))).is_err() {
                self.panics
                    .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Panics of its observers contained so far.
    pub fn panics(&self) -> u64 {
        self.panics.load(core::sync::atomic::Ordering::Relaxed)
    }
}

impl Observer for MultiObserver {
    fn on_budget_decision(&self, key: PolicyKey<'_>, decision: &BudgetDecision<'_>) {
        self.each(|o| o.on_budget_decision(key, decision));
    }
    fn on_classifier_panic(&self, key: PolicyKey<'_>, attempt: &AttemptInfo, message: &str) {
        self.each(|o| o.on_classifier_panic(key, attempt, message));
    }
    fn on_circuit_transition(&self, key: PolicyKey<'_>, transition: &CircuitTransition) {
        self.each(|o| o.on_circuit_transition(key, transition));
    }
    fn on_start(&self, key: PolicyKey<'_>, start: &CallStart) {
        self.each(|o| o.on_start(key, start));
    }
    fn on_launch(&self, key: PolicyKey<'_>, info: &AttemptInfo) {
        self.each(|o| o.on_launch(key, info));
    }
    fn on_attempt(&self, key: PolicyKey<'_>, record: &AttemptRecord) {
        self.each(|o| o.on_attempt(key, record));
    }
    fn on_success(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        self.each(|o| o.on_success(key, summary));
    }
    fn on_failure(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        self.each(|o| o.on_failure(key, summary));
    }
}
