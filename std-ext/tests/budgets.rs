//! Budgets in the executor: denials, missing budgets, panics, observer
//! events, and release exactly once however an attempt ends.

mod common;

use core::future::Future;
use core::pin::pin;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::{Arc, Mutex};

use common::{attempts, ms, one};
use recourse::budget::MissingBudgetMode;
use recourse::core_machine::budget::{BudgetRequest, Decision, Reservation};
use recourse::core_machine::Budget;
use recourse::observer::{AttemptRecord, BudgetDecision};
use recourse::{
    AttemptInfo, BudgetRegistry, Error, Executor, Observer, Outcome, Policy, PolicyKey,
};

/// Allows `limit` attempts in all; reserves one unit per attempt and counts
/// every settle of every reservation.
#[derive(Default)]
struct Ledger {
    limit: u64,
    decided: AtomicU64,
    next: AtomicU64,
    outstanding: Mutex<Vec<u64>>,
    settled: Mutex<Vec<u64>>,
}

impl Ledger {
    fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            ..Self::default()
        })
    }
    fn outstanding(&self) -> usize {
        self.outstanding.lock().expect("test").len()
    }
    fn settled(&self) -> Vec<u64> {
        self.settled.lock().expect("test").clone()
    }
}

impl Budget for Ledger {
    fn decide(&self, _: &BudgetRequest<'_>) -> Decision {
        if self.decided.fetch_add(1, Ordering::SeqCst) >= self.limit {
            return Decision::DENY;
        }
        let r = self.next.fetch_add(1, Ordering::SeqCst);
        self.outstanding.lock().expect("test").push(r);
        Decision::reserve(Reservation(r))
    }
    fn settle(
        &self,
        _: &AttemptRecord,
        reservation: Option<Reservation>,
        _: recourse::observer::Instant,
    ) {
        let r = reservation.expect("a reservation").0;
        let mut out = self.outstanding.lock().expect("test");
        let i = out
            .iter()
            .position(|x| *x == r)
            .expect("settled twice or never taken");
        out.remove(i);
        self.settled.lock().expect("test").push(r);
    }
}

/// Lets the test keep a handle on a budget the registry owns.
struct Shared(Arc<Ledger>);

impl Budget for Shared {
    fn decide(&self, r: &BudgetRequest<'_>) -> Decision {
        self.0.decide(r)
    }
    fn settle(
        &self,
        rec: &AttemptRecord,
        res: Option<Reservation>,
        now: recourse::observer::Instant,
    ) {
        self.0.settle(rec, res, now)
    }
}

fn with_budget(mut p: Policy, name: &str) -> Policy {
    p.retry.budget.name =
        recourse::core_machine::policy::name("retry.budget.name", name).expect("test");
    p
}

fn executor(policy: Policy, ledger: &Arc<Ledger>) -> Executor {
    Executor::builder()
        .provider(one("svc.Get", with_budget(policy, "ledger")))
        .budgets(BudgetRegistry::new().with("ledger", Shared(ledger.clone())))
        .build()
}

#[tokio::test(start_paused = true)]
async fn released_exactly_once_on_success_failure_and_timeouts() {
    // success
    let l = Ledger::new(100);
    let r = executor(attempts(3), &l)
        .call("svc.Get", |_| async { Ok::<_, ()>(1) })
        .await;
    assert_eq!(r, Ok(1));
    assert_eq!((l.outstanding(), l.settled()), (0, vec![0]));

    // failure: three attempts, three settles
    let l = Ledger::new(100);
    let r = executor(attempts(3), &l)
        .call("svc.Get", |_| async { Err::<(), _>("no") })
        .await;
    assert!(matches!(r, Err(Error::RetriesExhausted { .. })));
    assert_eq!((l.outstanding(), l.settled()), (0, vec![0, 1, 2]));

    // per-attempt timeout: each hung attempt cut and settled
    let l = Ledger::new(100);
    let mut p = attempts(2);
    p.retry.timeout_per_attempt = Some(ms(20));
    let r = executor(p, &l)
        .call("svc.Get", |_| core::future::pending::<Result<(), ()>>())
        .await;
    assert!(matches!(r, Err(Error::AttemptsTimedOut { attempts: 2 })));
    assert_eq!((l.outstanding(), l.settled()), (0, vec![0, 1]));

    // overall timeout cuts the attempt in flight
    let l = Ledger::new(100);
    let mut p = attempts(2);
    p.retry.overall_timeout = Some(ms(50));
    let r = executor(p, &l)
        .call("svc.Get", |_| core::future::pending::<Result<(), ()>>())
        .await;
    assert!(matches!(r, Err(Error::DeadlineExceeded { .. })));
    assert_eq!((l.outstanding(), l.settled()), (0, vec![0]));
}

/// Polls `fut` until virtual time `at`, then drops it.
async fn drop_at<F: Future>(fut: F, at: Duration) {
    let fut = pin!(fut);
    assert!(
        tokio::time::timeout(at, fut).await.is_err(),
        "finished before the drop"
    );
}

#[tokio::test(start_paused = true)]
async fn released_exactly_once_when_dropped_mid_attempt_or_mid_backoff() {
    let l = Ledger::new(100);
    let exec = executor(attempts(3), &l);
    drop_at(
        exec.call("svc.Get", |_| core::future::pending::<Result<(), ()>>()),
        ms(5),
    )
    .await;
    assert_eq!((l.outstanding(), l.settled()), (0, vec![0]));

    let l = Ledger::new(100);
    let mut p = attempts(3);
    p.retry.initial_backoff = Duration::from_secs(10);
    let exec = executor(p, &l);
    drop_at(exec.call("svc.Get", |_| async { Err::<(), ()>(()) }), ms(5)).await;
    assert_eq!((l.outstanding(), l.settled()), (0, vec![0]));
}

/// Without containment the operation's panic unwinds to the task.
#[tokio::test(start_paused = true)]
async fn released_exactly_once_when_the_operation_panics() {
    let l = Ledger::new(100);
    let exec = Arc::new(
        Executor::builder()
            .provider(one("svc.Get", with_budget(attempts(3), "ledger")))
            .budgets(BudgetRegistry::new().with("ledger", Shared(l.clone())))
            .contain_panics(false)
            .build(),
    );
    let task = tokio::spawn({
        let exec = exec.clone();
        async move {
            exec.call("svc.Get", |_| async {
                panic!("operation bug");
                #[allow(unreachable_code)]
                Ok::<(), ()>(())
            })
            .await
        }
    });
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!((l.outstanding(), l.settled()), (0, vec![0]));
}

/// With containment (the default) the panic is the call's typed error, and
/// the budget is released all the same.
#[tokio::test(start_paused = true)]
async fn released_exactly_once_when_the_operation_panics_contained() {
    let l = Ledger::new(100);
    let exec = executor(attempts(3), &l);
    let r = exec
        .call("svc.Get", |_| async {
            panic!("operation bug");
            #[allow(unreachable_code)]
            Ok::<(), ()>(())
        })
        .await;
    assert_eq!(r, Err(recourse::Error::OperationPanicked));
    assert_eq!((l.outstanding(), l.settled()), (0, vec![0]));
}

#[tokio::test(start_paused = true)]
async fn a_denied_attempt_never_runs_and_ends_the_call() {
    let l = Ledger::new(1);
    let calls = AtomicUsize::new(0);
    let (r, timeline) = executor(attempts(3), &l)
        .call_with_timeline("svc.Get", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("boom") }
        })
        .await;
    assert_eq!(
        r,
        Err(Error::BudgetDenied {
            reason: "budget_denied",
            last: Some("boom")
        })
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let a = &timeline.attempts;
    assert_eq!(a.len(), 2);
    assert!(a[0].budget_allowed && !a[1].budget_allowed);
    assert_eq!(a[1].budget_reason, "budget_denied");
    assert_eq!(l.outstanding(), 0);
}

#[derive(Default)]
struct Decisions(Mutex<Vec<String>>);

impl Observer for Decisions {
    fn on_budget_decision(&self, key: PolicyKey<'_>, d: &BudgetDecision<'_>) {
        self.0.lock().expect("test").push(format!(
            "{key} #{} {} {} cost {} {} {} {}",
            d.attempt.id.0,
            d.kind.as_str(),
            d.budget,
            d.cost,
            d.mode,
            d.allowed,
            d.reason
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn missing_budgets_deny_by_default_and_allow_unsafe_opts_out() {
    for (mode, expected_calls, expected_event) in [
        (
            MissingBudgetMode::Deny,
            0,
            "svc.Get #0 initial nope cost 1 deny false budget_not_found",
        ),
        (
            MissingBudgetMode::AllowUnsafe,
            1,
            "svc.Get #0 initial nope cost 1 allow_unsafe true budget_not_found",
        ),
    ] {
        let decisions = Arc::new(Decisions::default());
        let exec = Executor::builder()
            .provider(one("svc.Get", with_budget(attempts(1), "nope")))
            .missing_budget_mode(mode)
            .observer(decisions.clone())
            .build();
        let calls = AtomicUsize::new(0);
        let (r, timeline) = exec
            .call_with_timeline("svc.Get", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, ()>(()) }
            })
            .await;
        assert_eq!(timeline.attribute("budget_error"), Some("budget_not_found"));
        assert_eq!(
            timeline.attribute("missing_budget_mode"),
            Some(mode.as_str())
        );
        assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
        assert_eq!(r.is_ok(), expected_calls == 1);
        assert_eq!(*decisions.0.lock().expect("test"), [expected_event]);
    }
}

struct Panicky;

impl Budget for Panicky {
    fn decide(&self, _: &BudgetRequest<'_>) -> Decision {
        panic!("budget bug")
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_budget_is_a_refusal() {
    let decisions = Arc::new(Decisions::default());
    let exec = Executor::builder()
        .provider(one("svc.Get", with_budget(attempts(3), "p")))
        .budgets(BudgetRegistry::new().with("p", Panicky))
        .observer(decisions.clone())
        .build();
    let r = exec.call("svc.Get", |_| async { Ok::<_, ()>(()) }).await;
    assert_eq!(
        r,
        Err(Error::BudgetDenied {
            reason: "panic_in_budget",
            last: None
        })
    );
    assert_eq!(
        *decisions.0.lock().expect("test"),
        ["svc.Get #0 initial p cost 1 standard false panic_in_budget"]
    );
}

#[tokio::test(start_paused = true)]
async fn retries_are_gated_with_their_kind() {
    let decisions = Arc::new(Decisions::default());
    let l = Ledger::new(100);
    let exec = Executor::builder()
        .provider(one("svc.Get", with_budget(attempts(2), "ledger")))
        .budgets(BudgetRegistry::new().with("ledger", Shared(l.clone())))
        .observer(decisions.clone())
        .build();
    let _ = exec.call("svc.Get", |_| async { Err::<(), ()>(()) }).await;
    assert_eq!(
        *decisions.0.lock().expect("test"),
        [
            "svc.Get #0 initial ledger cost 1 standard true allowed",
            "svc.Get #1 retry ledger cost 1 standard true allowed",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_classifier_aborts_the_call_and_keeps_the_message() {
    let exec = Executor::builder()
        .provider(one("svc.Get", attempts(3)))
        .build();
    let (r, timeline) = exec
        .call_classified_with_timeline(
            "svc.Get",
            |r: &Result<u32, &str>| -> Outcome {
                if r.is_err() {
                    panic!("classifier bug on {r:?}");
                }
                Outcome::SUCCESS
            },
            |_| async { Err::<u32, _>("boom") },
        )
        .await;
    assert!(matches!(
        r,
        Err(Error::Operation {
            error: recourse::Failure::Error("boom"),
            ..
        })
    ));
    assert_eq!(timeline.attempts.len(), 1);
    assert_eq!(timeline.attempts[0].outcome.reason, "panic_in_classifier");
    assert_eq!(
        timeline.attribute("panic_in_classifier"),
        Some("classifier bug on Err(\"boom\")")
    );
}

/// The classifier's panic reaches the executor's observer as it happens,
/// before the attempt's record, once per call.
#[tokio::test(start_paused = true)]
async fn a_classifier_panic_is_told_to_the_observer_before_the_attempt() {
    #[derive(Default)]
    struct Events(Mutex<Vec<String>>);
    impl Observer for Events {
        fn on_classifier_panic(&self, key: PolicyKey<'_>, a: &AttemptInfo, message: &str) {
            let line = format!("{key} #{} panic {message}", a.id.0);
            self.0.lock().expect("test").push(line);
        }
        fn on_attempt(&self, key: PolicyKey<'_>, r: &AttemptRecord) {
            let line = format!("{key} #{} {}", r.info.id.0, r.outcome.reason);
            self.0.lock().expect("test").push(line);
        }
    }
    let events = Arc::new(Events::default());
    let exec = Executor::builder()
        .provider(one("svc.Get", attempts(3)))
        .observer(events.clone())
        .build();
    let r = exec
        .call_classified(
            "svc.Get",
            |r: &Result<u32, &str>| -> Outcome {
                if r.is_err() {
                    panic!("classifier bug");
                }
                Outcome::SUCCESS
            },
            |_| async { Err::<u32, _>("boom") },
        )
        .await;
    assert!(matches!(
        r,
        Err(Error::Operation {
            error: recourse::Failure::Error("boom"),
            ..
        })
    ));
    assert_eq!(
        *events.0.lock().expect("test"),
        [
            "svc.Get #0 panic classifier bug",
            "svc.Get #0 panic_in_classifier"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_circuit_opens_refuses_then_probes_and_closes() {
    let mut p = attempts(1);
    p.circuit.enabled = true;
    p.circuit.threshold = 2;
    p.circuit.cooldown = Duration::from_secs(1);
    let exec = Executor::builder().provider(one("svc.Get", p)).build();
    let calls = AtomicUsize::new(0);
    let failing = |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>("down") }
    };
    for _ in 0..2 {
        assert!(matches!(
            exec.call("svc.Get", failing).await,
            Err(Error::RetriesExhausted { .. })
        ));
    }
    let (r, timeline) = exec.call_with_timeline("svc.Get", failing).await;
    assert_eq!(
        r,
        Err(Error::CircuitOpen {
            reason: "circuit_open"
        })
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "a refused call never runs");
    assert_eq!(timeline.attempts[0].budget_reason, "circuit_open");
    // After the cooldown one probe goes through; its success closes.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        exec.call("svc.Get", |_| async { Ok::<_, ()>(7) }).await,
        Ok(7)
    );
    assert_eq!(
        exec.call("svc.Get", |_| async { Ok::<_, ()>(8) }).await,
        Ok(8)
    );
}

struct PanickyObserver;

impl Observer for PanickyObserver {
    fn on_attempt(&self, _: PolicyKey<'_>, _: &AttemptRecord) {
        panic!("observer bug");
    }
}

#[tokio::test(start_paused = true)]
async fn observer_panics_are_swallowed_and_counted() {
    let exec = Executor::builder()
        .provider(one("svc.Get", attempts(3)))
        .observer(PanickyObserver)
        .build();
    let r = exec.call("svc.Get", |_| async { Err::<(), _>("x") }).await;
    assert!(matches!(
        r,
        Err(Error::RetriesExhausted { attempts: 3, .. })
    ));
    assert_eq!(exec.observer_panics(), 3);
}

fn with_classifier(mut p: Policy, name: &str) -> Policy {
    p.retry.classifier =
        recourse::core_machine::policy::name("retry.classifier", name).expect("test");
    p
}

#[tokio::test(start_paused = true)]
async fn the_policy_chooses_the_classifier_by_name() {
    let classifiers =
        recourse::ClassifierRegistry::new().with("status", |r: &Result<u16, String>| match r {
            Ok(200) => Outcome::SUCCESS,
            Ok(_) => Outcome::non_retryable("bad_status"),
            Err(_) => Outcome::retryable("transport"),
        });
    let provider = recourse::StaticProvider::builder()
        .policy("svc.Named", with_classifier(attempts(3), "status"))
        .and_then(|b| b.policy("svc.Missing", with_classifier(attempts(3), "nope")))
        .expect("test")
        .build();
    let exec = Executor::builder()
        .provider(provider)
        .classifiers(classifiers)
        .build();

    // Found, right type: a 404 is non-retryable by that classifier.
    let (r, t) = exec
        .call_with_timeline("svc.Named", |_| async { Ok::<u16, String>(404) })
        .await;
    // The result contract: the observer hears a failure, so the caller gets
    // an `Err` (`call` has no room for the value; `call_classified` carries
    // it).
    assert_eq!(
        r,
        Err(Error::Rejected {
            cause: recourse::Cause::NonRetryable
        })
    );
    assert_eq!(t.reason, Some("non_retryable"));
    assert_eq!(t.attempts.len(), 1);
    assert_eq!(t.attempts[0].outcome.reason, "bad_status");
    assert_eq!(t.attribute("classifier_name"), Some("status"));
    assert_eq!(t.attribute("classifier_error"), None);

    // Found, wrong result type: a configuration error, never a panic.
    let (r, t) = exec
        .call_with_timeline("svc.Named", |_| async { Err::<u32, &str>("x") })
        .await;
    assert!(matches!(r, Err(Error::Operation { error: "x", .. })));
    assert_eq!(t.attempts.len(), 1);
    assert_eq!(t.attempts[0].outcome.reason, "classifier_type_mismatch");

    // Not found: the default classifier, and the timeline says so.
    let (r, t) = exec
        .call_with_timeline("svc.Missing", |_| async { Err::<u32, &str>("x") })
        .await;
    assert!(matches!(
        r,
        Err(Error::RetriesExhausted { attempts: 3, .. })
    ));
    assert_eq!(t.attribute("classifier_name"), Some("nope"));
    assert_eq!(
        t.attribute("classifier_error"),
        Some("classifier_not_found")
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_classifier_can_fail_closed() {
    let provider = recourse::StaticProvider::builder()
        .policy("svc.Missing", with_classifier(attempts(3), "nope"))
        .expect("test")
        .build();
    let exec = Executor::builder()
        .provider(provider)
        .missing_classifier_mode(recourse::classify::MissingClassifierMode::Deny)
        .build();
    let (r, t) = exec
        .call_with_timeline("svc.Missing", |_| async { Err::<u32, &str>("x") })
        .await;
    assert!(matches!(r, Err(Error::Operation { error: "x", .. })));
    assert_eq!(t.attempts.len(), 1, "not retried on a guess");
    assert_eq!(t.attempts[0].outcome.reason, "classifier_not_found");
    assert_eq!(t.attribute("missing_classifier_mode"), Some("deny"));
    // Successes still succeed.
    let r = exec
        .call("svc.Missing", |_| async { Ok::<u32, &str>(1) })
        .await;
    assert_eq!(r, Ok(1));
}

/// A timer source whose call timers count from each call's start (their
/// instants cannot be compared across calls), on tokio's paused clock, and
/// which counts reads of its shared clock.
struct PerCallEpoch {
    anchor: tokio::time::Instant,
    shared_reads: Arc<AtomicUsize>,
}

#[derive(Clone, Copy)]
struct FromCallStart(tokio::time::Instant);

impl recourse::core_machine::Timer for FromCallStart {
    type Sleep = tokio::time::Sleep;
    fn now(&self) -> recourse::observer::Instant {
        recourse::observer::Instant::from_nanos(
            (tokio::time::Instant::now() - self.0).as_nanos() as u64
        )
    }
    fn sleep_until(&self, deadline: recourse::observer::Instant) -> tokio::time::Sleep {
        tokio::time::sleep_until(self.0 + Duration::from_nanos(deadline.as_nanos()))
    }
}

impl recourse::timer::TimerSource for PerCallEpoch {
    type Timer = FromCallStart;
    fn timer(&self) -> FromCallStart {
        FromCallStart(tokio::time::Instant::now())
    }
    fn shared_now(&self) -> recourse::observer::Instant {
        self.shared_reads.fetch_add(1, Ordering::SeqCst);
        recourse::observer::Instant::from_nanos(
            (tokio::time::Instant::now() - self.anchor).as_nanos() as u64,
        )
    }
}

/// Records the instants a budget is asked and settled at.
#[derive(Default)]
struct Clocked(Mutex<Vec<(char, u64)>>);

impl Budget for &'static Clocked {
    fn decide(&self, request: &BudgetRequest<'_>) -> Decision {
        let ms = request.now.as_nanos() / 1_000_000;
        self.0.lock().expect("test").push(('d', ms));
        Decision::ALLOW
    }
    fn settle(&self, _: &AttemptRecord, _: Option<Reservation>, now: recourse::observer::Instant) {
        self.0
            .lock()
            .expect("test")
            .push(('s', now.as_nanos() / 1_000_000));
    }
}

/// The gate takes the machine's `now` and carries it to the executor's
/// shared clock: budgets see one clock across calls whose timers each count
/// from their own start, and the shared clock is read once per call (not
/// at every budget, breaker and latency step).
#[tokio::test(start_paused = true)]
async fn budgets_see_the_shared_clock_read_once_per_call() {
    static SEEN: Clocked = Clocked(Mutex::new(Vec::new()));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut policy = with_budget(attempts(3), "clocked");
    policy.circuit.enabled = true;
    let exec = Executor::builder()
        .provider(one("svc.Get", policy))
        .budgets(BudgetRegistry::new().with("clocked", &SEEN))
        .timer(PerCallEpoch {
            anchor: tokio::time::Instant::now(),
            shared_reads: reads.clone(),
        })
        .build();
    let fail_twice = || {
        let mut n = 0;
        move |_| {
            n += 1;
            let fail = n < 3;
            async move {
                tokio::time::sleep(ms(5)).await;
                if fail {
                    Err("flaky")
                } else {
                    Ok(n)
                }
            }
        }
    };
    tokio::time::sleep(ms(1_000)).await;
    assert_eq!(exec.call("svc.Get", fail_twice()).await, Ok(3));
    let after_first = reads.load(Ordering::SeqCst);
    tokio::time::sleep(ms(1_000)).await;
    assert_eq!(exec.call("svc.Get", fail_twice()).await, Ok(3));
    // Default backoff: 10 ms, then 20 ms; each attempt takes 5 ms.
    assert_eq!(
        *SEEN.0.lock().expect("test"),
        [
            ('d', 1_000),
            ('s', 1_005),
            ('d', 1_015),
            ('s', 1_020),
            ('d', 1_040),
            ('s', 1_045),
            ('d', 2_045),
            ('s', 2_050),
            ('d', 2_060),
            ('s', 2_065),
            ('d', 2_085),
            ('s', 2_090),
        ]
    );
    assert_eq!((after_first, reads.load(Ordering::SeqCst)), (1, 2));
}
