//! The std executor (`recourse::Executor`, public API only) on tokio's
//! paused clock under arbitrary policies and operations: the one model
//! behind the `executor_model` proptest (`tests/executor_model.rs`) and the
//! `executor` fuzz target (`fuzz/`).
//!
//! Why a shared model: the proptest draws realistic inputs with proptest's
//! strategies, the fuzzer any input from bytes ([`Input`] is
//! [`Arbitrary`]); both run them through [`run`], which checks, for every
//! call:
//!
//! - **observer order**: `on_start` first; every attempt the observer
//!   hears ended was launched before (`on_launch`), ends once, and each
//!   launch is followed by its end; exactly one end event (`on_success` or
//!   `on_failure`), last; a returned `Ok` is an `on_success`, an `Err` an
//!   `on_failure` with the error's reason or the verdict cause behind it
//!   ([`observer_reasons`]); a dropped call ends `cancelled`;
//! - **the timeline equals the records**: the timeline's attempts are the
//!   records the observer heard, in order, and its verdict the end event's;
//! - **containment**: a panicking observer, budget or operation never
//!   takes the call down; a budget's `decide` panic is a refusal
//!   (`panic_in_budget`); an operation's panic ends the call with
//!   `Error::OperationPanicked` (`panic_in_operation`) and only when an
//!   attempt that panics was launched; the executor counts every observer
//!   panic ([`Executor::observer_panics`]) and every call whose budget
//!   `settle` panicked ([`Executor::budget_settle_panics`]);
//! - **missing pieces**: a budget the registry lacks refuses every first
//!   attempt and retry under `MissingBudgetMode::Deny` and lets them run
//!   under `AllowUnsafe`, each record saying `budget_not_found` and the
//!   timeline naming it; a key the provider lacks is refused (`no_policy`,
//!   nothing runs) under `MissingPolicyMode::Deny`, runs once under
//!   `Allow`, and under `Policy::DEFAULT` (at most 3 attempts, no hedge)
//!   under `Fallback`; a classifier the registry lacks makes every error
//!   the operation returns final (non-retryable `classifier_not_found`)
//!   under `MissingClassifierMode::Deny`; a trigger recourse lacks hedges on the fixed delay under
//!   `MissingTriggerMode::Fallback` and not at all under `NoHedges`; each
//!   named in the timeline;
//! - **budgets back where they started**: every reservation of the ledger
//!   budget settled exactly once, and the concurrency budget counts no
//!   attempt, once every call has ended.
//!
//! Injected panics carry [`INJECTED`] in their message; [`quiet_injected_panics`]
//! keeps them out of the output (and out of libFuzzer's abort-on-panic hook)
//! while any other panic still reaches the previous hook.
//!
//! [`Executor::observer_panics`]: recourse::Executor::observer_panics
//! [`Executor::budget_settle_panics`]: recourse::Executor::budget_settle_panics

// Test support: a poisoned lock or an invalid constant name is a bug in
// this model, and its panic is the report.
#![allow(clippy::unwrap_used)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once};

use arbitrary::{Arbitrary, Unstructured};
use recourse::budget::MissingBudgetMode;
use recourse::classify::MissingClassifierMode;
use recourse::core_machine::budget::{BudgetRequest, Concurrency, Decision, Reservation};
use recourse::core_machine::policy::name;
use recourse::core_machine::Budget;
use recourse::hedging::MissingTriggerMode;
use recourse::observer::{AttemptRecord, CallStart, CallSummary};
use recourse::{
    AttemptInfo, BudgetRegistry, Cause, Error, Executor, MissingPolicyMode, Observer, OutcomeKind,
    Policy, PolicyKey, StaticProvider,
};

use crate::invariants::ArbitraryPolicy;

/// Every panic this model provokes has this in its message.
pub const INJECTED: &str = "injected by the executor model";

/// Installs (once) a panic hook that drops the panics this model provokes
/// ([`INJECTED`]) and hands every other panic to the hook it replaced
/// (libFuzzer's abort, the test harness's print).
pub fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            if !msg.contains(INJECTED) {
                previous(info);
            }
        }));
    });
}

/// What one attempt does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Succeeds after this many milliseconds.
    Succeed(u64),
    /// Fails (retryable) after this many milliseconds.
    Fail(u64),
    /// Never completes.
    Hang,
    /// Panics after this many milliseconds.
    Panic(u64),
}

impl<'a> Arbitrary<'a> for Behaviour {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let ms = |u: &mut Unstructured<'a>| -> arbitrary::Result<u64> {
            Ok(match u.int_in_range(0u8..=7)? {
                0 => 0,
                1..=6 => u.int_in_range(1..=100)?,
                _ => u.int_in_range(101..=5_000)?,
            })
        };
        Ok(match u.int_in_range(0u8..=9)? {
            0..=2 => Self::Succeed(ms(u)?),
            3..=6 => Self::Fail(ms(u)?),
            7 => Self::Hang,
            _ => Self::Panic(ms(u)?),
        })
    }
}

/// One call of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInput {
    /// Attempt `k` of the call behaves as `script[k % len]` (never empty).
    pub script: Vec<Behaviour>,
    /// Drop the call after this many milliseconds.
    pub drop_after: Option<u64>,
}

impl<'a> Arbitrary<'a> for CallInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.int_in_range(1usize..=6)?;
        let script = (0..len)
            .map(|_| Behaviour::arbitrary(u))
            .collect::<arbitrary::Result<_>>()?;
        let drop_after = if u.ratio(1u8, 5)? {
            Some(u.int_in_range(0..=400)?)
        } else {
            None
        };
        Ok(Self { script, drop_after })
    }
}

/// One run: an executor and the calls made through it, one after another.
#[derive(Clone, Debug)]
pub struct Input {
    /// The policy of `svc.Get` (normalized by the provider). Its retry
    /// budget is named `ledger`, its hedge budget `hedges`; [`run`] sets
    /// the classifier and trigger names from the missing-piece fields.
    pub policy: Policy,
    /// Attempts the ledger allows (`u64::MAX`: all).
    pub ledger_limit: u64,
    /// The ledger's `decide` panics every so many calls to it.
    pub decide_panics_every: Option<u64>,
    /// The ledger's `settle` panics every so many calls to it.
    pub settle_panics_every: Option<u64>,
    /// A second observer panics on every event of every other call.
    pub observer_panics: bool,
    /// `Some`: the ledger budget the policy names is not registered, and
    /// this mode decides.
    pub missing_budget: Option<MissingBudgetMode>,
    /// Every call whose index is a multiple of this asks for a key the
    /// provider lacks, under this mode.
    pub unknown_key: Option<(usize, MissingPolicyMode)>,
    /// `Some`: the policy names a classifier the registry lacks.
    pub missing_classifier: Option<MissingClassifierMode>,
    /// `Some`: the policy names a hedge trigger recourse lacks.
    pub missing_trigger: Option<MissingTriggerMode>,
    /// The executor's seed (jitter).
    pub seed: u64,
    /// The calls (at least one).
    pub calls: Vec<CallInput>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let policy = ArbitraryPolicy::arbitrary(u)?.0;
        let every = |u: &mut Unstructured<'a>| -> arbitrary::Result<Option<u64>> {
            Ok(if u.ratio(1u8, 6)? {
                Some(u.int_in_range(1..=6)?)
            } else {
                None
            })
        };
        let ledger_limit = if u.arbitrary()? {
            u64::MAX
        } else {
            u.int_in_range(0..=20)?
        };
        let decide_panics_every = every(u)?;
        let settle_panics_every = every(u)?;
        let observer_panics = u.ratio(1u8, 3)?;
        let missing_budget = if u.ratio(1u8, 6)? {
            Some(*u.choose(&[MissingBudgetMode::Deny, MissingBudgetMode::AllowUnsafe])?)
        } else {
            None
        };
        let unknown_key = if u.ratio(1u8, 5)? {
            Some((
                u.int_in_range(1usize..=4)?,
                *u.choose(&[
                    MissingPolicyMode::Deny,
                    MissingPolicyMode::Allow,
                    MissingPolicyMode::Fallback,
                ])?,
            ))
        } else {
            None
        };
        let missing_classifier = if u.ratio(1u8, 6)? {
            Some(*u.choose(&[MissingClassifierMode::Fallback, MissingClassifierMode::Deny])?)
        } else {
            None
        };
        let missing_trigger = if u.ratio(1u8, 6)? {
            Some(*u.choose(&[MissingTriggerMode::Fallback, MissingTriggerMode::NoHedges])?)
        } else {
            None
        };
        let seed = u.arbitrary()?;
        let n = u.int_in_range(1usize..=8)?;
        let calls = (0..n)
            .map(|_| CallInput::arbitrary(u))
            .collect::<arbitrary::Result<_>>()?;
        Ok(Self {
            policy,
            ledger_limit,
            decide_panics_every,
            settle_panics_every,
            observer_panics,
            missing_budget,
            unknown_key,
            missing_classifier,
            missing_trigger,
            seed,
            calls,
        })
    }
}

// ---------------------------------------------------------------------------
// Budgets
// ---------------------------------------------------------------------------

/// Allows `limit` attempts, one reservation each, and keeps the ledger;
/// `decide` or `settle` panic every so often (after their bookkeeping).
#[derive(Default)]
struct Ledger {
    limit: u64,
    decided: AtomicU64,
    settles: AtomicU64,
    settle_panics: AtomicU64,
    decide_panics_every: Option<u64>,
    settle_panics_every: Option<u64>,
    /// Reservation → times settled.
    book: Mutex<HashMap<u64, u32>>,
}

impl Budget for Ledger {
    fn decide(&self, _: &BudgetRequest<'_>) -> Decision {
        let n = self.decided.fetch_add(1, Ordering::SeqCst);
        if self.decide_panics_every.is_some_and(|k| n % k == k - 1) {
            panic!("budget bug in decide ({INJECTED})");
        }
        if n >= self.limit {
            return Decision::DENY;
        }
        self.book.lock().unwrap().insert(n, 0);
        Decision::reserve(Reservation(n))
    }
    fn settle(&self, _: &AttemptRecord, r: Option<Reservation>, _: recourse::observer::Instant) {
        let r = r.expect("the ledger reserves for every allowed attempt").0;
        *self.book.lock().unwrap().entry(r).or_insert(100) += 1;
        let n = self.settles.fetch_add(1, Ordering::SeqCst);
        if self.settle_panics_every.is_some_and(|k| n % k == k - 1) {
            self.settle_panics.fetch_add(1, Ordering::SeqCst);
            panic!("budget bug in settle ({INJECTED})");
        }
    }
}

struct ShareLedger(Arc<Ledger>);

impl Budget for ShareLedger {
    fn decide(&self, r: &BudgetRequest<'_>) -> Decision {
        self.0.decide(r)
    }
    fn settle(
        &self,
        rec: &AttemptRecord,
        res: Option<Reservation>,
        now: recourse::observer::Instant,
    ) {
        self.0.settle(rec, res, now);
    }
}

struct ShareConcurrency(Arc<Concurrency>);

impl Budget for ShareConcurrency {
    fn decide(&self, r: &BudgetRequest<'_>) -> Decision {
        self.0.decide(r)
    }
    fn settle(
        &self,
        rec: &AttemptRecord,
        res: Option<Reservation>,
        now: recourse::observer::Instant,
    ) {
        self.0.settle(rec, res, now);
    }
}

// ---------------------------------------------------------------------------
// Observers
// ---------------------------------------------------------------------------

/// One event an observer heard.
#[derive(Clone, Debug, PartialEq)]
pub enum Heard {
    /// `on_start`.
    Start,
    /// `on_launch`.
    Launch(AttemptInfo),
    /// `on_attempt`.
    Attempt(AttemptRecord),
    /// `on_success`.
    Success(CallSummary),
    /// `on_failure`.
    Failure(CallSummary),
}

/// Records every event of the current call.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Heard>>>);

impl Recorder {
    fn take(&self) -> Vec<Heard> {
        core::mem::take(&mut *self.0.lock().unwrap())
    }
    fn push(&self, h: Heard) {
        self.0.lock().unwrap().push(h);
    }
}

impl Observer for Recorder {
    fn on_start(&self, _: PolicyKey<'_>, _: &CallStart) {
        self.push(Heard::Start);
    }
    fn on_launch(&self, _: PolicyKey<'_>, info: &AttemptInfo) {
        self.push(Heard::Launch(*info));
    }
    fn on_attempt(&self, _: PolicyKey<'_>, record: &AttemptRecord) {
        self.push(Heard::Attempt(*record));
    }
    fn on_success(&self, _: PolicyKey<'_>, s: &CallSummary) {
        self.push(Heard::Success(*s));
    }
    fn on_failure(&self, _: PolicyKey<'_>, s: &CallSummary) {
        self.push(Heard::Failure(*s));
    }
}

/// Panics on every event while `on` is set, and counts its panics.
struct Panicky {
    on: Arc<AtomicBool>,
    panics: Arc<AtomicU64>,
}

impl Panicky {
    fn maybe(&self) {
        if self.on.load(Ordering::SeqCst) {
            self.panics.fetch_add(1, Ordering::SeqCst);
            panic!("observer bug ({INJECTED})");
        }
    }
}

impl Observer for Panicky {
    fn on_start(&self, _: PolicyKey<'_>, _: &CallStart) {
        self.maybe();
    }
    fn on_launch(&self, _: PolicyKey<'_>, _: &AttemptInfo) {
        self.maybe();
    }
    fn on_attempt(&self, _: PolicyKey<'_>, _: &AttemptRecord) {
        self.maybe();
    }
    fn on_success(&self, _: PolicyKey<'_>, _: &CallSummary) {
        self.maybe();
    }
    fn on_failure(&self, _: PolicyKey<'_>, _: &CallSummary) {
        self.maybe();
    }
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

/// How a call ended, as its caller saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Returned {
    /// `Ok`.
    Ok,
    /// `Err`, with the error's reason code and the other reasons the
    /// observer may hear for it (see [`observer_reasons`]).
    Err(&'static str, Vec<&'static str>),
    /// Dropped before it returned.
    Dropped,
}

/// The reasons, besides the error's own, the observer may hear for a call
/// that returned `e`: the observer's reason is the verdict's cause, which is
/// coarser than a refusal's error (`budget_denied` for a budget's own
/// reason such as `budget_not_found` or `panic_in_budget`, `circuit_open`
/// for the breaker's) and finer than `deadline_exceeded` (which of the
/// deadline causes ended the call).
pub fn observer_reasons<E>(e: &Error<E>) -> Vec<&'static str> {
    match e {
        Error::BudgetDenied { .. } => vec![Cause::BudgetDenied.as_str()],
        Error::CircuitOpen { .. } => vec![Cause::CircuitOpen.as_str()],
        Error::DeadlineExceeded { .. } => vec![
            Cause::BackoffBeyondDeadline.as_str(),
            Cause::RetryAfterBeyondDeadline.as_str(),
            Cause::DeadlineUnreachable.as_str(),
        ],
        _ => Vec::new(),
    }
}

/// Checks the events of one call against how it returned.
pub fn check_events(heard: &[Heard], returned: Returned) -> Result<(), String> {
    let Some(Heard::Start) = heard.first() else {
        return Err(format!("the first event is not on_start: {heard:?}"));
    };
    let ends: Vec<usize> = heard
        .iter()
        .enumerate()
        .filter(|(_, h)| matches!(h, Heard::Success(_) | Heard::Failure(_)))
        .map(|(i, _)| i)
        .collect();
    if ends != [heard.len() - 1] {
        return Err(format!("exactly one end event, last: {heard:?}"));
    }
    let mut launched: HashMap<u16, bool> = HashMap::new();
    for h in &heard[1..heard.len() - 1] {
        match h {
            Heard::Launch(info) => {
                if launched.insert(info.id.0, false).is_some() {
                    return Err(format!("attempt {:?} launched twice: {heard:?}", info.id));
                }
            }
            Heard::Attempt(r) => {
                // A refused attempt is recorded without a launch.
                if r.budget_allowed {
                    match launched.get_mut(&r.info.id.0) {
                        Some(ended @ false) => *ended = true,
                        _ => {
                            return Err(format!(
                                "attempt {:?} ended without a launch, or twice: {heard:?}",
                                r.info.id
                            ))
                        }
                    }
                }
            }
            _ => return Err(format!("an event between start and end: {h:?}")),
        }
    }
    if launched.values().any(|ended| !ended) {
        return Err(format!("a launched attempt never ended: {heard:?}"));
    }
    let end = &heard[heard.len() - 1];
    match (&returned, end) {
        (Returned::Ok, Heard::Success(_)) => Ok(()),
        (Returned::Err(reason, also), Heard::Failure(s))
            if s.reason() == Some(reason) || s.reason().is_some_and(|r| also.contains(&r)) =>
        {
            Ok(())
        }
        (Returned::Dropped, Heard::Failure(s)) if s.reason() == Some("cancelled") => Ok(()),
        _ => Err(format!("returned {returned:?}, observer heard {end:?}")),
    }
}

/// What the runs did, so that a suite passing means something.
#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    /// Calls that returned `Ok`.
    pub ok: u64,
    /// Calls that returned `Err`.
    pub err: u64,
    /// Calls dropped before they returned.
    pub dropped: u64,
    /// Hedges launched.
    pub hedges: u64,
    /// Attempts refused.
    pub refused: u64,
    /// Attempts refused because the budget's `decide` panicked.
    pub panic_in_budget: u64,
    /// Calls that ended `panic_in_operation`.
    pub panic_in_operation: u64,
    /// Observer panics contained.
    pub observer_panics: u64,
    /// Calls in which a budget's `settle` panicked.
    pub settle_panics: u64,
    /// Calls that met a missing budget.
    pub missing_budget: u64,
    /// Calls that met a missing policy.
    pub missing_policy: u64,
    /// Calls that met a missing classifier.
    pub missing_classifier: u64,
    /// Calls that met a missing trigger.
    pub missing_trigger: u64,
    /// Calls that returned `DeadlineExceeded { last: None }` for a
    /// non-retryable verdict (a known defect, see [`run_with`]).
    pub lost_last_result: u64,
}

/// What the missing-piece modes promise, for a call that returned.
fn check_modes(
    i: &Input,
    script: &[Behaviour],
    p: &Policy,
    unknown: bool,
    heard: &[Heard],
    timeline: &recourse::Timeline,
) -> Result<(), String> {
    let launches: Vec<&AttemptInfo> = heard
        .iter()
        .filter_map(|h| match h {
            Heard::Launch(info) => Some(info),
            _ => None,
        })
        .collect();
    let records = || {
        heard.iter().filter_map(|h| match h {
            Heard::Attempt(r) => Some(r),
            _ => None,
        })
    };
    let end = match heard.last() {
        Some(Heard::Success(s) | Heard::Failure(s)) => *s,
        _ => return Err("no end event".into()),
    };
    if unknown {
        let mode = i.unknown_key.map(|(_, m)| m).unwrap_or_default();
        return match mode {
            MissingPolicyMode::Deny
                if !launches.is_empty() || end.reason() != Some("no_policy") =>
            {
                Err(format!("a missing policy with mode deny ran: {heard:?}"))
            }
            MissingPolicyMode::Allow if launches.len() > 1 => Err(format!(
                "a missing policy with mode allow runs the operation once: {heard:?}"
            )),
            MissingPolicyMode::Fallback
                if launches.len() > 3 || launches.iter().any(|l| l.is_hedge) =>
            {
                Err(format!(
                    "a missing policy with mode fallback runs Policy::DEFAULT: {heard:?}"
                ))
            }
            _ => Ok(()),
        };
    }
    let attr = |k: &str| timeline.attribute(k);
    if let Some(mode) = i.missing_classifier {
        if attr("classifier_error") != Some("classifier_not_found")
            || attr("missing_classifier_mode") != Some(mode.as_str())
        {
            return Err(format!(
                "{mode:?}: the timeline's attributes {:?} do not name the missing classifier",
                timeline.attributes
            ));
        }
        // Fail closed: every error the operation returned is final
        // (non-retryable `classifier_not_found`). An attempt cut at its
        // deadline is not classified, and may be retried.
        if mode == MissingClassifierMode::Deny {
            let guessed = records().find(|r| {
                r.budget_allowed
                    && !r.cancelled
                    && matches!(
                        script[usize::from(r.info.id.0) % script.len()],
                        Behaviour::Fail(_)
                    )
                    && (r.outcome.kind != OutcomeKind::NonRetryable
                        || r.outcome.reason != "classifier_not_found")
            });
            if let Some(r) = guessed {
                return Err(format!(
                    "a missing classifier with mode deny classified an error: {r:?}"
                ));
            }
        }
    }
    if let Some(mode) = i.missing_trigger.filter(|_| p.hedge.enabled) {
        if attr("hedge_trigger_error") != Some("trigger_not_found")
            || attr("missing_trigger_mode") != Some(mode.as_str())
        {
            return Err(format!(
                "{mode:?}: the timeline's attributes {:?} do not name the missing trigger",
                timeline.attributes
            ));
        }
        if mode == MissingTriggerMode::NoHedges && launches.iter().any(|l| l.is_hedge) {
            return Err(format!(
                "a missing trigger with mode no_hedges hedged: {heard:?}"
            ));
        }
    }
    match i.missing_budget {
        // Fail closed: no first attempt or retry runs.
        Some(MissingBudgetMode::Deny) if launches.iter().any(|l| !l.is_hedge) => Err(format!(
            "a missing budget with mode deny let an attempt run: {heard:?}"
        )),
        Some(mode) => {
            // Every first attempt and retry says the budget was missing,
            // and the timeline names the mode.
            // (An attempt the breaker refused never reached the budget.)
            let wrong = records().find(|r| {
                !r.info.is_hedge
                    && r.budget_reason != "budget_not_found"
                    && !r.budget_reason.starts_with("circuit_")
            });
            if let Some(r) = wrong {
                return Err(format!("{mode:?}: an attempt's budget reason is {r:?}"));
            }
            let consulted =
                records().any(|r| !r.info.is_hedge && !r.budget_reason.starts_with("circuit_"));
            if consulted && attr("budget_error") != Some("budget_not_found") {
                return Err(format!(
                    "{mode:?}: the timeline's attributes {:?} do not name the missing budget",
                    timeline.attributes
                ));
            }
            Ok(())
        }
        None => Ok(()),
    }
}

/// The policy [`run`] registers for `svc.Get`: the input's, with its budget,
/// classifier and trigger names set.
fn named_policy(i: &Input) -> Policy {
    let mut p = i.policy.clone();
    p.retry.budget.name = name("retry.budget.name", "ledger").unwrap();
    p.hedge.budget.name = name("hedge.budget.name", "hedges").unwrap();
    let missing = name("n", "no-such-piece").unwrap();
    p.retry.classifier = if i.missing_classifier.is_some() {
        missing.clone()
    } else {
        Default::default()
    };
    p.hedge.trigger = if i.missing_trigger.is_some() {
        missing.clone()
    } else {
        Default::default()
    };
    p
}

/// Runs the input's calls one after another through one executor on tokio's
/// paused clock and checks every contract listed in the module docs;
/// `Err` names the first one broken. A policy the provider refuses
/// (normalization cannot read it) must be refused with an error naming a
/// field, and then nothing runs.
pub fn run(i: &Input, stats: &mut Stats) -> Result<(), String> {
    run_with(i, stats, KnownDefects::Fail)
}

/// Whether [`run_with`] fails on the known defects listed here, or counts
/// them ([`Stats::lost_last_result`]) and goes on checking everything else.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KnownDefects {
    /// Count them, so that a run goes on finding new ones while one is
    /// open.
    Tolerate,
    /// Fail on them (what [`run`], the fuzz target and the proptest do).
    Fail,
}

/// [`run`], choosing what a known defect does. None is known today; the
/// last one (fixed): a hedged call whose verdict named a non-retryable
/// failure of attempt `k` returned `Error::DeadlineExceeded { last: None }`
/// (with no deadline in the policy) because the driver kept the group's
/// first terminal result and the machine named the last one; the machine
/// now names the first, as it already did when the last attempt to report
/// failed retryably. [`run`] fails on it.
pub fn run_with(i: &Input, stats: &mut Stats, known: KnownDefects) -> Result<(), String> {
    quiet_injected_panics();
    let policy = named_policy(i);
    let provider = match StaticProvider::builder().policy("svc.Get", policy.clone()) {
        Ok(b) => b.build(),
        Err(e) => {
            let msg = e.to_string();
            return if msg.contains("retry.") || msg.contains("hedge.") || msg.contains("circuit.") {
                Ok(())
            } else {
                Err(format!("a policy refused without naming its field: {msg}"))
            };
        }
    };
    // What normalization made of it (the provider holds the normalized one).
    let normalized = recourse::PolicyProvider::policy(&provider, PolicyKey::new("svc", "Get"))
        .map_err(|e| format!("the provider lost its policy: {e}"))?
        .policy
        .policy
        .clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let ledger = Arc::new(Ledger {
            limit: i.ledger_limit,
            decide_panics_every: i.decide_panics_every,
            settle_panics_every: i.settle_panics_every,
            ..Ledger::default()
        });
        let hedges = Arc::new(Concurrency::new(500, 2));
        let recorder = Recorder::default();
        let panicky = Arc::new(AtomicBool::new(false));
        let observer_panics = Arc::new(AtomicU64::new(0));
        let mut builder = Executor::builder()
            .provider(provider)
            .budgets({
                let r = BudgetRegistry::new().with("hedges", ShareConcurrency(hedges.clone()));
                if i.missing_budget.is_some() {
                    r
                } else {
                    r.with("ledger", ShareLedger(ledger.clone()))
                }
            })
            .missing_budget_mode(i.missing_budget.unwrap_or_default())
            .missing_policy_mode(i.unknown_key.map_or_else(Default::default, |(_, m)| m))
            .missing_classifier_mode(i.missing_classifier.unwrap_or_default())
            .missing_trigger_mode(i.missing_trigger.unwrap_or_default())
            .seed(i.seed)
            .observer(recorder.clone());
        if i.observer_panics {
            builder = builder.observer(Panicky {
                on: panicky.clone(),
                panics: observer_panics.clone(),
            });
        }
        let exec = builder.build();
        let mut settle_panic_calls = 0;
        for (n, c) in i.calls.iter().enumerate() {
            panicky.store(n % 2 == 1, Ordering::SeqCst);
            let settle_panics_before = ledger.settle_panics.load(Ordering::SeqCst);
            let script = c.script.clone();
            let op = move |info: AttemptInfo| {
                let b = script[usize::from(info.id.0) % script.len()];
                async move {
                    match b {
                        Behaviour::Succeed(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Ok(info.id.0)
                        }
                        Behaviour::Fail(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Err("failed")
                        }
                        Behaviour::Hang => core::future::pending().await,
                        Behaviour::Panic(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            panic!("operation bug ({INJECTED})")
                        }
                    }
                }
            };
            let unknown = i.unknown_key.is_some_and(|(every, _)| n % every == 0);
            let key = if unknown { "svc.Unknown" } else { "svc.Get" };
            let call = exec.call_with_timeline(key, op);
            // A call whose attempts hang with no timeout is dropped after a
            // virtual hour.
            let drop_after = c.drop_after.unwrap_or(3_600_000);
            let returned = tokio::time::timeout(Duration::from_millis(drop_after), call)
                .await
                .ok();
            settle_panic_calls +=
                u64::from(ledger.settle_panics.load(Ordering::SeqCst) > settle_panics_before);
            let heard = recorder.take();
            for h in &heard {
                match h {
                    Heard::Launch(info) if info.is_hedge => stats.hedges += 1,
                    Heard::Attempt(r) if !r.budget_allowed => {
                        stats.refused += 1;
                        if r.budget_reason == "panic_in_budget" {
                            stats.panic_in_budget += 1;
                        }
                    }
                    _ => {}
                }
            }
            let ctx = |e: String| format!("call {n}: {e}");
            let Some((result, timeline)) = returned else {
                stats.dropped += 1;
                check_events(&heard, Returned::Dropped).map_err(ctx)?;
                continue;
            };
            let how = match &result {
                Ok(_) => Returned::Ok,
                Err(e) => Returned::Err(e.reason(), observer_reasons(e)),
            };
            let lost_last = matches!(result, Err(Error::DeadlineExceeded { last: None }))
                && matches!(
                    heard.last(),
                    Some(Heard::Failure(CallSummary {
                        verdict: Some(recourse::observer::Verdict::Failure {
                            cause: Cause::NonRetryable
                                | Cause::Abort
                                | Cause::RetryAfterBeyondDeadline
                                | Cause::Accepted,
                            ..
                        }),
                        ..
                    }))
                );
            if lost_last && known == KnownDefects::Tolerate {
                stats.lost_last_result += 1;
            } else {
                check_events(&heard, how).map_err(ctx)?;
            }
            check_modes(i, &c.script, &normalized, unknown, &heard, &timeline).map_err(ctx)?;
            // An operation's panic is contained as its own error, and only
            // an attempt that panics can cause it.
            if let Err(Error::OperationPanicked) = result {
                stats.panic_in_operation += 1;
                let panicked = heard.iter().any(|h| match h {
                    Heard::Launch(info) => matches!(
                        c.script[usize::from(info.id.0) % c.script.len()],
                        Behaviour::Panic(_)
                    ),
                    _ => false,
                });
                if !panicked {
                    return Err(ctx(format!(
                        "OperationPanicked, but no attempt that panics was launched: {heard:?}"
                    )));
                }
            }
            if unknown {
                stats.missing_policy += 1;
            } else {
                stats.missing_budget += u64::from(i.missing_budget.is_some());
                stats.missing_classifier += u64::from(i.missing_classifier.is_some());
                stats.missing_trigger +=
                    u64::from(i.missing_trigger.is_some() && normalized.hedge.enabled);
            }
            if result.is_ok() {
                stats.ok += 1;
            } else {
                stats.err += 1;
            }
            let records: Vec<AttemptRecord> = heard
                .iter()
                .filter_map(|h| match h {
                    Heard::Attempt(r) => Some(*r),
                    _ => None,
                })
                .collect();
            if timeline.attempts != records {
                return Err(ctx(format!(
                    "timeline attempts {:?} differ from the records heard {records:?}",
                    timeline.attempts
                )));
            }
            let summary = match heard.last() {
                Some(Heard::Success(s) | Heard::Failure(s)) => s,
                _ => unreachable!("checked above"),
            };
            if timeline.verdict != summary.verdict || summary.attempts as usize > records.len() {
                return Err(ctx(format!(
                    "timeline verdict {:?}, summary {summary:?}, {} records",
                    timeline.verdict,
                    records.len()
                )));
            }
        }
        // Every contained panic is counted.
        let heard_panics = observer_panics.load(Ordering::SeqCst);
        stats.observer_panics += heard_panics;
        if exec.observer_panics() != heard_panics {
            return Err(format!(
                "the observer panicked {heard_panics} times, the executor counted {}",
                exec.observer_panics()
            ));
        }
        stats.settle_panics += settle_panic_calls;
        if exec.budget_settle_panics() != settle_panic_calls {
            return Err(format!(
                "settle panicked in {settle_panic_calls} calls, the executor counted {}",
                exec.budget_settle_panics()
            ));
        }
        // Every call has ended: the budgets are back where they started.
        let book = ledger.book.lock().unwrap();
        if let Some((r, n)) = book.iter().find(|(_, n)| **n != 1) {
            return Err(format!("ledger reservation {r} settled {n} times"));
        }
        if (hedges.active(), hedges.extra_in_flight()) != (0, 0) {
            return Err(format!(
                "the concurrency budget still counts {} active, {} extra",
                hedges.active(),
                hedges.extra_in_flight()
            ));
        }
        Ok(())
    })
}
