//! The per-call bridge from the core driver's observer events to the
//! executor's [`Observer`] and the call's [`Timeline`].
//!
//! Why a bridge: the core observer is `&mut self` and owned by one call; the
//! executor's observer is shared (`&self`) and speaks in std terms
//! ([`CallStart`], [`CallSummary`]). The bridge holds only borrows and
//! `Copy` facts, so a call with no observer and no timeline allocates
//! nothing here. Panics in the user's observer are contained: the panic hook
//! reports them, the call goes on.

use core::panic::AssertUnwindSafe;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use recourse_core::{AttemptInfo, AttemptRecord, CallEnd, Cause, Instant, PolicyKey, Verdict};

use std::sync::OnceLock;

use crate::classify::PANIC_IN_CLASSIFIER;
use crate::executor::Executor;
use crate::gate::{BUDGET_NOT_FOUND, PANIC_IN_BUDGET_SETTLE};
use crate::missing_policy::MissingPolicyMode;
use crate::observer::{CallStart, CallSummary, Observer};
use crate::provider::PolicySource;
use crate::timeline::Timeline;

/// What panicked during one call, shared by the pieces that contain the
/// panics and the report that tells them (one borrow each, so the call
/// future stays small).
#[derive(Default)]
pub(crate) struct CallPanics {
    /// The contained classifier's first panic's message; told when the
    /// attempt's record arrives.
    /// (A boxed `String`: one word, 16 bytes less than a `String` in
    /// every call's future; a contained classifier panic is rare.)
    pub(crate) classifier: OnceLock<PanicMessage>,
    /// A budget's `settle` panicked (contained), for the timeline at the
    /// call's end. Only a flag, so the call future stays small: the panic
    /// hook has printed the message.
    pub(crate) settle: AtomicBool,
    /// An attempt's future panicked: the end the driver reports on its way
    /// down (`cancelled`) is told as `panic_in_operation`.
    pub(crate) operation: AtomicBool,
    /// The cause of a failed verdict that may leave an `Ok` value (a value
    /// the classifier rejected), as [`failure_code`]; 0 otherwise. A byte,
    /// so the call future does not grow.
    pub(crate) failure: AtomicU8,
    /// The call returns a value the classifier rejected as `Ok` (the
    /// integrations), instead of [`Error::Rejected`](recourse_core::Error).
    pub(crate) keep_rejected: bool,
}

/// A contained panic's message, kept in a call's [`CallPanics`]: one word
/// (a `String` takes three, a boxed `str` two), for a panic that is rare.
#[allow(clippy::box_collection)]
pub(crate) type PanicMessage = Box<String>;

/// The causes whose conclusion keeps a rejected `Ok` value, by code - 1.
const KEEPS_VALUE: [Cause; 5] = [
    Cause::NonRetryable,
    Cause::Abort,
    Cause::RetryAfterBeyondDeadline,
    Cause::Accepted,
    Cause::Exhausted,
];

impl CallPanics {
    /// The failed verdict's cause, when the call's result may be a
    /// rejected `Ok` value.
    #[inline]
    pub(crate) fn failure(&self) -> Option<Cause> {
        let code = self.failure.load(Ordering::Relaxed);
        KEEPS_VALUE.get(usize::from(code).checked_sub(1)?).copied()
    }
}

/// `cause`'s code in [`CallPanics::failure`].
fn failure_code(cause: Cause) -> u8 {
    KEEPS_VALUE
        .iter()
        .position(|c| *c == cause)
        .map_or(0, |i| i as u8 + 1)
}

/// Forwards one call's events.
pub(crate) struct Report<'a, S> {
    /// The executor: its observer, its count of contained observer panics
    /// and its missing-budget mode (one reference, not three: the call's
    /// future holds it).
    pub(crate) exec: &'a Executor<S>,
    pub(crate) timeline: Option<&'a mut Timeline>,
    pub(crate) policy_source: Option<PolicySource>,
    pub(crate) missing_policy_mode: Option<MissingPolicyMode>,
    /// The call's contained panics (none before the machine runs).
    pub(crate) call_panics: Option<&'a CallPanics>,
    /// Whether the classifier's panic was told already (once per call).
    pub(crate) classifier_told: bool,
    /// No observer and no timeline: nobody hears the call's events, so
    /// each hook returns at once (issue 16: a call pays only for what it
    /// has). Decided when the report is made ([`Report::new`]).
    pub(crate) quiet: bool,
}

impl<'a, S> Report<'a, S> {
    /// The report of one call on `exec`, into `timeline` when there is one.
    #[inline]
    pub(crate) fn new(
        exec: &'a Executor<S>,
        timeline: Option<&'a mut Timeline>,
        policy_source: Option<PolicySource>,
        missing_policy_mode: Option<MissingPolicyMode>,
    ) -> Self {
        Self {
            quiet: exec.observer.is_none() && timeline.is_none(),
            exec,
            timeline,
            policy_source,
            missing_policy_mode,
            call_panics: None,
            classifier_told: false,
        }
    }
}

impl<S> Report<'_, S> {
    fn notify(&self, f: impl FnOnce(&dyn Observer)) {
        if let Some(o) = self.exec.observer.as_deref() {
            // A panicking observer must not end the call; the panic hook has
            // already reported it.
            if std::panic::catch_unwind(AssertUnwindSafe(|| f(o))).is_err() {
                self.exec.observer_panics.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn summary(&self, end: &CallEnd) -> CallSummary {
        CallSummary {
            start: end.start,
            end: end.end,
            attempts: end.attempts,
            verdict: Some(end.verdict),
            policy_source: self.policy_source,
            missing_policy_mode: self.missing_policy_mode,
            operation_panicked: self
                .call_panics
                .is_some_and(|p| p.operation.load(Ordering::Relaxed)),
        }
    }

    /// A call denied before the machine ran: start, then failure, at `now`.
    pub(crate) fn denied(&mut self, key: PolicyKey<'_>, now: Instant) {
        self.start(key, now);
        let summary = CallSummary {
            start: now,
            end: now,
            attempts: 0,
            verdict: None,
            policy_source: self.policy_source,
            missing_policy_mode: self.missing_policy_mode,
            operation_panicked: false,
        };
        self.notify(|o| o.on_failure(key, &summary));
    }

    #[inline(never)]
    fn start(&mut self, key: PolicyKey<'_>, start: Instant) {
        if let Some(t) = self.timeline.as_deref_mut() {
            t.start = start;
            t.end = start;
        }
        let start = CallStart {
            start,
            policy_source: self.policy_source,
            missing_policy_mode: self.missing_policy_mode,
        };
        self.notify(|o| o.on_start(key, &start));
    }

    /// The classifier panicked on `record`'s result: the first time, tell
    /// the timeline and the observer the panic's message.
    fn classifier_panicked(&mut self, key: PolicyKey<'_>, record: &AttemptRecord) {
        if self.classifier_told {
            return;
        }
        let Some(message) = self.call_panics.and_then(|p| p.classifier.get()) else {
            return;
        };
        self.classifier_told = true;
        if let Some(t) = self.timeline.as_deref_mut() {
            t.attributes
                .insert(PANIC_IN_CLASSIFIER, message.to_string());
        }
        self.notify(|o| o.on_classifier_panic(key, &record.info, message));
    }

    fn end(&mut self, end: &CallEnd) {
        if let Some(t) = self.timeline.as_deref_mut() {
            if self
                .call_panics
                .is_some_and(|p| p.settle.load(Ordering::Relaxed))
            {
                t.attributes.insert(
                    PANIC_IN_BUDGET_SETTLE,
                    "a budget's settle panicked (contained)".to_owned(),
                );
            }
            t.end = end.end;
            t.verdict = Some(end.verdict);
            if let recourse_core::Verdict::Success(id) = end.verdict {
                t.winner = Some(id);
            }
        }
    }
}

impl<S> recourse_core::Observer for Report<'_, S> {
    // Each hook: one inlined test (`quiet`), its work out of line.
    #[inline]
    fn on_start(&mut self, key: PolicyKey<'_>, start: Instant) {
        if !self.quiet {
            self.start(key, start);
        }
    }

    #[inline]
    fn on_launch(&mut self, key: PolicyKey<'_>, info: &AttemptInfo) {
        if !self.quiet {
            self.launch(key, info);
        }
    }

    #[inline]
    fn on_attempt(&mut self, key: PolicyKey<'_>, record: &AttemptRecord) {
        if !self.quiet {
            self.attempt(key, record);
        }
    }

    #[inline]
    fn hears_attempts(&self) -> bool {
        !self.quiet
    }

    /// A quiet report hands no instant on (its `on_failure` keeps the
    /// cause only): with a gate and a policy that use no time either, the
    /// call reads no clock on its success path (issue 16).
    #[inline]
    fn uses_time(&self) -> bool {
        !self.quiet
    }
    const MAY_IGNORE_TIME: bool = true;

    #[inline]
    fn on_success(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        if !self.quiet {
            self.success(key, end);
        }
    }

    #[inline]
    fn on_failure(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        // Kept with or without listeners: the call's result depends on it
        // (the result contract).
        if let (Some(p), Verdict::Failure { cause, .. }) = (self.call_panics, end.verdict) {
            p.failure.store(failure_code(cause), Ordering::Relaxed);
        }
        if !self.quiet {
            self.failure(key, end);
        }
    }
}

/// The hooks' work, for a call somebody hears.
impl<S> Report<'_, S> {
    #[inline(never)]
    fn launch(&mut self, key: PolicyKey<'_>, info: &AttemptInfo) {
        self.notify(|o| o.on_launch(key, info));
    }

    #[inline(never)]
    fn attempt(&mut self, key: PolicyKey<'_>, record: &AttemptRecord) {
        if record.outcome.reason == PANIC_IN_CLASSIFIER {
            self.classifier_panicked(key, record);
        }
        if let Some(t) = self.timeline.as_deref_mut() {
            if record.budget_reason == BUDGET_NOT_FOUND {
                // A budget the policy names but the registry lacks: say
                // which mode decided, beside the attempt's reason.
                t.attributes
                    .insert("budget_error", BUDGET_NOT_FOUND.to_owned());
                t.attributes.insert(
                    "missing_budget_mode",
                    self.exec.missing_budget.as_str().to_owned(),
                );
            }
            t.attempts.push(*record);
        }
        self.notify(|o| o.on_attempt(key, record));
    }

    #[inline(never)]
    fn success(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        self.end(end);
        // The summary only for an observer.
        if self.exec.observer.is_some() {
            let summary = self.summary(end);
            self.notify(|o| o.on_success(key, &summary));
        }
    }

    #[inline(never)]
    fn failure(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        self.end(end);
        if self.exec.observer.is_some() {
            let summary = self.summary(end);
            self.notify(|o| o.on_failure(key, &summary));
        }
    }
}
