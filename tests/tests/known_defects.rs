//! Defects found while checking the documented contracts (issue 17), each
//! pinned by a test that failed before its fix; those still open are
//! `#[ignore]`d with the defect named. Fixed (issue 13): `observer_panics()`
//! with several observers, a panic in a budget's `settle` leaving no trace,
//! an operation's panic reported as `cancelled`; found by the `executor`
//! fuzz target: a `settle` panic of a dropped call not counted (fixed), a
//! hedged call's non-retryable error returned as a deadline (open). Run them with `cargo test -p recourse-tests --test
//! known_defects -- --include-ignored`.
//!
//! Beside each, a control that passes today shows the test itself works.

#![allow(clippy::unwrap_used)]

use core::panic::AssertUnwindSafe;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt as _;
use recourse::core_machine::budget::{BudgetRequest, Decision, Reservation};
use recourse::core_machine::hedge::{HedgeDecision, HedgeState};
use recourse::core_machine::{
    Action, Admission, AdmitRequest, AttemptRecord as CoreRecord, Budget, CallMachine, Event, Gate,
    Instant, Limits, WaitReason,
};
use recourse::observer::{AttemptRecord, CallSummary};
use recourse::{BudgetRegistry, Error, Executor, Observer, Policy, PolicyKey, StaticProvider};

fn one(key: &str, policy: Policy) -> StaticProvider {
    StaticProvider::builder()
        .policy(key, policy)
        .unwrap()
        .build()
}

fn attempts(n: u32) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = n;
    p
}

// ---------------------------------------------------------------------------
// observer_panics() with two observers
// ---------------------------------------------------------------------------

struct PanicOnAttempt;

impl Observer for PanicOnAttempt {
    fn on_attempt(&self, _: PolicyKey<'_>, _: &AttemptRecord) {
        panic!("observer bug");
    }
}

/// Counts the attempts it hears.
#[derive(Clone, Default)]
struct CountAttempts(Arc<AtomicU64>);

impl Observer for CountAttempts {
    fn on_attempt(&self, _: PolicyKey<'_>, _: &AttemptRecord) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

async fn three_failing_attempts(exec: &Executor) {
    let r = exec.call("svc.Get", |_| async { Err::<(), _>("x") }).await;
    assert!(matches!(
        r,
        Err(Error::RetriesExhausted { attempts: 3, .. })
    ));
}

/// Control: one panicking observer, three contained panics, counted.
#[tokio::test(start_paused = true)]
async fn observer_panics_counts_with_one_observer() {
    let exec = Executor::builder()
        .provider(one("svc.Get", attempts(3)))
        .observer(PanicOnAttempt)
        .build();
    three_failing_attempts(&exec).await;
    assert_eq!(exec.observer_panics(), 3);
}

/// `Executor::observer_panics` documents "each contained panic is counted
/// here"; with two observers the builder's internal `MultiObserver` counts
/// them where the executor cannot read them.
#[tokio::test(start_paused = true)]
async fn observer_panics_counts_with_two_observers() {
    let counter = CountAttempts::default();
    let exec = Executor::builder()
        .provider(one("svc.Get", attempts(3)))
        .observer(PanicOnAttempt)
        .observer(counter.clone())
        .build();
    three_failing_attempts(&exec).await;
    // The other observer still heard every attempt...
    assert_eq!(counter.0.load(Ordering::SeqCst), 3);
    // ...and the executor counts the three panics it contained.
    assert_eq!(exec.observer_panics(), 3);
}

// ---------------------------------------------------------------------------
// A panic in a budget's settle
// ---------------------------------------------------------------------------

/// Allows everything with a reservation; panics in `settle` when asked to.
struct SettlePanics {
    panic_in_settle: bool,
    settled: AtomicU64,
}

impl Budget for SettlePanics {
    fn decide(&self, _: &BudgetRequest<'_>) -> Decision {
        Decision::reserve(Reservation(1))
    }
    fn settle(&self, _: &CoreRecord, _: Option<Reservation>, _: Instant) {
        self.settled.fetch_add(1, Ordering::SeqCst);
        assert!(!self.panic_in_settle, "budget bug in settle");
    }
}

struct ShareBudget(Arc<SettlePanics>);

impl Budget for ShareBudget {
    fn decide(&self, r: &BudgetRequest<'_>) -> Decision {
        self.0.decide(r)
    }
    fn settle(&self, rec: &CoreRecord, res: Option<Reservation>, now: Instant) {
        self.0.settle(rec, res, now);
    }
}

async fn settle_once(
    panic_in_settle: bool,
) -> (
    Result<u8, Error<&'static str>>,
    recourse::Timeline,
    u64,
    u64,
) {
    let budget = Arc::new(SettlePanics {
        panic_in_settle,
        settled: AtomicU64::new(0),
    });
    let mut p = attempts(1);
    p.retry.budget.name = recourse::core_machine::policy::name("retry.budget.name", "b").unwrap();
    let exec = Executor::builder()
        .provider(one("svc.Get", p))
        .budgets(BudgetRegistry::new().with("b", ShareBudget(budget.clone())))
        .build();
    let (r, t) = exec
        .call_with_timeline("svc.Get", |_| async { Ok::<u8, &'static str>(7) })
        .await;
    (
        r,
        t,
        budget.settled.load(Ordering::SeqCst),
        exec.budget_settle_panics(),
    )
}

/// Whether the timeline says anything about a panic.
fn mentions_panic(t: &recourse::Timeline) -> bool {
    t.attributes
        .iter()
        .any(|(k, v)| k.contains("panic") || v.contains("panic"))
}

/// Control: a budget whose settle works leaves no panic in the timeline.
#[tokio::test(start_paused = true)]
async fn a_settling_budget_leaves_no_panic_trace() {
    let (r, t, settled, counted) = settle_once(false).await;
    assert_eq!(counted, 0);
    assert_eq!(r, Ok(7));
    assert_eq!(settled, 1);
    assert!(!mentions_panic(&t), "{:?}", t.attributes);
}

/// A panic in `decide` is contained as the refusal `panic_in_budget`, seen
/// by the observer and the timeline; a panic in `settle` was contained by
/// `let _ = catch_unwind(..)` and left no trace at all (fixed: the timeline
/// attribute `panic_in_budget_settle`, `Executor::budget_settle_panics`).
#[tokio::test(start_paused = true)]
async fn a_panic_in_settle_leaves_a_trace() {
    let (r, t, settled, counted) = settle_once(true).await;
    assert_eq!(counted, 1, "the executor counts the call");
    assert_eq!(
        t.attributes
            .get("panic_in_budget_settle")
            .map(String::as_str),
        Some("a budget's settle panicked (contained)")
    );
    // Contained: the call's result stands.
    assert_eq!(r, Ok(7));
    assert_eq!(settled, 1);
    assert!(
        mentions_panic(&t),
        "the timeline must say the budget panicked while settling: {:?}",
        t.attributes
    );
}

/// Found by the `executor` fuzz target: a call dropped while an attempt
/// runs settles that attempt as its future drops; a panic in that `settle`
/// was contained but not counted, because the count was taken after the
/// call's `.await`, which a dropped call never reaches (fixed: counted when
/// the call's future drops). The control: the same call run to its end.
#[tokio::test(start_paused = true)]
async fn a_panic_in_settle_of_a_dropped_call_is_counted() {
    for drop_it in [false, true] {
        let budget = Arc::new(SettlePanics {
            panic_in_settle: true,
            settled: AtomicU64::new(0),
        });
        let mut p = attempts(1);
        p.retry.budget.name =
            recourse::core_machine::policy::name("retry.budget.name", "b").unwrap();
        let exec = Executor::builder()
            .provider(one("svc.Get", p))
            .budgets(BudgetRegistry::new().with("b", ShareBudget(budget.clone())))
            .build();
        let call = exec.call("svc.Get", |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<u8, &'static str>(7)
        });
        let limit = Duration::from_millis(if drop_it { 5 } else { 50 });
        let r = tokio::time::timeout(limit, call).await;
        assert_eq!(r.is_err(), drop_it, "dropped: {drop_it}");
        assert_eq!(
            budget.settled.load(Ordering::SeqCst),
            1,
            "dropped: {drop_it}"
        );
        assert_eq!(exec.budget_settle_panics(), 1, "dropped: {drop_it}");
    }
}

// ---------------------------------------------------------------------------
// An operation that panics
// ---------------------------------------------------------------------------

/// Remembers the reason of every call end.
#[derive(Clone, Default)]
struct Ends(Arc<Mutex<Vec<Option<&'static str>>>>);

impl Observer for Ends {
    fn on_success(&self, _: PolicyKey<'_>, _: &CallSummary) {
        self.0.lock().unwrap().push(None);
    }
    fn on_failure(&self, _: PolicyKey<'_>, s: &CallSummary) {
        self.0.lock().unwrap().push(s.reason());
    }
}

/// Control: a call dropped mid-attempt ends once, `cancelled`, as the
/// executor documents.
#[tokio::test(start_paused = true)]
async fn a_dropped_call_ends_cancelled() {
    let ends = Ends::default();
    let exec = Executor::builder()
        .provider(one("svc.Get", attempts(1)))
        .observer(ends.clone())
        .build();
    let call = exec.call("svc.Get", |_| core::future::pending::<Result<(), ()>>());
    let r = tokio::time::timeout(Duration::from_millis(5), call).await;
    assert!(r.is_err());
    assert_eq!(*ends.0.lock().unwrap(), vec![Some("cancelled")]);
}

/// Without containment the operation's panic unwinds through the call (the
/// caller sees it), and the observer is told `panic_in_operation`, not
/// `cancelled` (it was told `cancelled` before the fix).
#[tokio::test(start_paused = true)]
async fn an_operation_panic_is_not_reported_as_cancelled() {
    let ends = Ends::default();
    let exec = Executor::builder()
        .provider(one("svc.Get", attempts(3)))
        .observer(ends.clone())
        .contain_panics(false)
        .build();
    let call = exec.call("svc.Get", |_| async {
        if true {
            panic!("operation bug");
        }
        Ok::<(), ()>(())
    });
    let r = AssertUnwindSafe(call).catch_unwind().await;
    assert!(r.is_err(), "the operation's panic reaches the caller");
    let ends = ends.0.lock().unwrap().clone();
    assert_eq!(ends.len(), 1, "exactly one end event: {ends:?}");
    assert_ne!(ends[0], Some("cancelled"), "a panic is not a cancellation");
    assert_eq!(ends[0], Some("panic_in_operation"));
}

/// Reserves on every decision, counts decisions and settlements.
#[derive(Default)]
struct Ledger {
    decided: AtomicU64,
    settled: AtomicU64,
}

impl Budget for Ledger {
    fn decide(&self, _: &BudgetRequest<'_>) -> Decision {
        self.decided.fetch_add(1, Ordering::SeqCst);
        Decision::reserve(Reservation(1))
    }
    fn settle(&self, _: &CoreRecord, _: Option<Reservation>, _: Instant) {
        self.settled.fetch_add(1, Ordering::SeqCst);
    }
}

struct ShareLedger(Arc<Ledger>);

impl Budget for ShareLedger {
    fn decide(&self, r: &BudgetRequest<'_>) -> Decision {
        self.0.decide(r)
    }
    fn settle(&self, rec: &CoreRecord, res: Option<Reservation>, now: Instant) {
        self.0.settle(rec, res, now);
    }
}

/// With containment on (the default), an operation that panics on its
/// second attempt ends the call with `Error::OperationPanicked`: the panic
/// does not reach the caller, the observer hears `panic_in_operation` once,
/// the timeline says so, every reservation the budget made was settled, and
/// the executor serves the next call.
#[tokio::test(start_paused = true)]
async fn a_contained_operation_panic_is_a_typed_error() {
    let ends = Ends::default();
    let ledger = Arc::new(Ledger::default());
    let mut p = attempts(3);
    p.retry.budget.name = recourse::core_machine::policy::name("retry.budget.name", "b").unwrap();
    let exec = Executor::builder()
        .provider(one("svc.Get", p))
        .budgets(BudgetRegistry::new().with("b", ShareLedger(ledger.clone())))
        .observer(ends.clone())
        .build();
    let (r, t) = exec
        .call_with_timeline("svc.Get", |a| async move {
            if a.retry_index == 1 {
                panic!("operation bug");
            }
            Err::<u8, &'static str>("first attempt fails")
        })
        .await;
    assert_eq!(r, Err(Error::OperationPanicked));
    assert_eq!(r.unwrap_err().reason(), "panic_in_operation");
    assert_eq!(t.reason, Some("panic_in_operation"));
    assert_eq!(*ends.0.lock().unwrap(), vec![Some("panic_in_operation")]);
    let decided = ledger.decided.load(Ordering::SeqCst);
    assert!(decided >= 1, "the retry asked the budget");
    assert_eq!(ledger.settled.load(Ordering::SeqCst), decided);
    // The executor goes on.
    let r = exec
        .call("svc.Get", |_| async { Ok::<u8, &'static str>(1) })
        .await;
    assert_eq!(r, Ok(1));
    assert_eq!(ends.0.lock().unwrap().len(), 2);
}

/// Control for the above: without a panic the same call is retried to
/// exhaustion.
#[tokio::test(start_paused = true)]
async fn without_a_panic_the_same_call_exhausts() {
    let exec = Executor::builder()
        .provider(one("svc.Get", attempts(3)))
        .build();
    let r = exec
        .call("svc.Get", |_| async { Err::<u8, &'static str>("fails") })
        .await;
    assert!(matches!(
        r,
        Err(Error::RetriesExhausted { attempts: 3, .. })
    ));
}

// ---------------------------------------------------------------------------
// The machine: a hedge check at the end of the clock
// ---------------------------------------------------------------------------

/// Admits everything; its hedge trigger always asks to be consulted again
/// `ask_again` from now (a misbehaving but legal answer).
struct LaterTrigger {
    ask_again: Duration,
}

impl Gate for LaterTrigger {
    fn admit(&mut self, _: &AdmitRequest) -> Admission {
        Admission::NO_BUDGET
    }
    fn hedge(&mut self, state: &HedgeState) -> HedgeDecision {
        HedgeDecision {
            spawn: false,
            next_check: Some(state.now + self.ask_again),
        }
    }
}

fn first_rest_after_launch(start: Instant) -> (Action, Instant) {
    let mut policy = Policy::DEFAULT;
    policy.hedge.enabled = true;
    let mut m = CallMachine::<4>::new(&policy, Limits::DEFAULT, fastrand::Rng::with_seed(1));
    let mut gate = LaterTrigger {
        ask_again: Duration::from_millis(5),
    };
    m.handle(Event::Start { now: start });
    assert!(matches!(m.poll(&mut gate), Action::Launch(_)));
    (m.poll(&mut gate), start)
}

/// Control: anywhere short of the clock's end the machine waits until the
/// trigger's instant.
#[test]
fn a_hedge_check_later_is_a_wait_after_now() {
    let start = Instant::MAX - Duration::from_secs(1);
    let (rest, now) = first_rest_after_launch(start);
    assert_eq!(
        rest,
        Action::Wait {
            until: now + Duration::from_millis(5),
            reason: WaitReason::HedgeDelay
        }
    );
}

/// At `Instant::MAX`, `next_check.max(now + 1 ms)` saturated to now: the
/// machine asked the driver to wait until now, which it documents it never
/// does (a driver would busy-loop). Found by the checker once its clock ran
/// to `Instant::MAX`; fixed: at the clock's end there is no later check.
#[test]
fn a_hedge_check_at_the_clock_end_never_waits_until_now() {
    let (rest, now) = first_rest_after_launch(Instant::MAX);
    match rest {
        Action::Wait { until, .. } => assert!(until > now, "Wait until {until:?} at {now:?}"),
        Action::AwaitAttempts => {}
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// A hedged call's non-retryable failure returned as a deadline
// ---------------------------------------------------------------------------

/// Found by the `executor` fuzz target (fixed: the machine now names the
/// group's first terminal attempt, whose result the driver keeps, also when
/// the last attempt to report fails terminally): the three attempts of one hedged call fail
/// with errors the classifier calls final (the second hedge at 532 ms, the
/// primary at 1936 ms, the first hedge at 1937 ms). The verdict is
/// `NonRetryable`, naming attempt 1, and the observer hears
/// `non_retryable`; but the driver holds no result for attempt 1 when it
/// concludes, so the call returns `Error::DeadlineExceeded { last: None }`,
/// for a policy without any deadline, and the error is lost.
#[test]
fn a_hedged_non_retryable_failure_is_not_returned_as_a_deadline() {
    use recourse::classify::MissingClassifierMode;
    use recourse::Policy;
    use recourse_tests::executor_model::{
        run_with, Behaviour, CallInput, Input, KnownDefects, Stats,
    };
    let mut policy = Policy::DEFAULT;
    policy.retry.max_attempts = 1;
    policy.hedge.enabled = true;
    policy.hedge.max_hedges = 2;
    policy.hedge.hedge_delay = Duration::from_millis(1);
    let input = Input {
        policy,
        ledger_limit: u64::MAX,
        decide_panics_every: None,
        settle_panics_every: None,
        observer_panics: false,
        missing_budget: None,
        unknown_key: None,
        // Every error is final (non-retryable `classifier_not_found`).
        missing_classifier: Some(MissingClassifierMode::Deny),
        missing_trigger: None,
        seed: 1,
        calls: vec![CallInput {
            script: vec![
                Behaviour::Fail(1936),
                Behaviour::Fail(1936),
                Behaviour::Fail(530),
            ],
            drop_after: None,
        }],
    };
    let mut stats = Stats::default();
    run_with(&input, &mut stats, KnownDefects::Fail).unwrap();
}
