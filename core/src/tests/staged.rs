//! The machine's compact stage against the full machine: the same calls,
//! run with a staged machine (as every call is) and with one that is full
//! from the start (a test width, [`Full`]), must give the same result, the
//! same observer events and the same gate calls, in the same order — for
//! seeded random policies, attempt scripts, gate answers and drop points,
//! and when the operation, the classifier or an observer panics.

use core::cell::{Cell, RefCell};
use core::future::IntoFuture;
use core::panic::AssertUnwindSafe;
use core::task::Poll;
use core::time::Duration;
use std::boxed::Box;
use std::format;
use std::panic::catch_unwind;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;

use super::driver::VTimer as Clock;
use crate::driver::MachineOps;
use crate::driver::{InFlight, Width};
use crate::gate::{Admission, AdmitRequest, Gate};
use crate::hedge::{HedgeDecision, HedgeState};
use crate::key::PolicyKey;
use crate::machine::staged::{PolicySettings, SLEEPS};
use crate::machine::Verdict;
use crate::machine::{Action, CallMachine, Event, Next, Sink};
use crate::observer::{CallEnd, Observer};
use crate::outcome::Outcome;
use crate::policy::Policy;
use crate::record::AttemptId;
use crate::record::{AttemptInfo, AttemptRecord};
use crate::time::{Instant, Timer};
use crate::{call, Error};

/// A width whose machine is never compact (`COMPACT` off), so it is made
/// at the start and decides everything, and counts the machines made.
struct Full<const N: usize>;

std::thread_local! {
    /// Full machines made on this thread (by either width).
    static MADE: Cell<u64> = const { Cell::new(0) };
}

/// A full machine `M` that counts how many are made, compact stage or not:
/// the public [`CallMachine`] (its settings copied from the policy) for
/// [`Full`], the call future's own (which reads the policy it holds) for
/// [`Staged`], so that the two ways of reading a policy are compared too.
#[derive(Debug)]
struct Counted<M, const COMPACT: bool>(M);

impl<P, M: MachineOps<P>, const COMPACT: bool> MachineOps<P> for Counted<M, COMPACT> {
    const SLOTS: usize = M::SLOTS;
    const COMPACT: bool = COMPACT;
    fn handle(&mut self, cfg: &PolicySettings<P>, event: Event) {
        self.0.handle(cfg, event);
    }
    fn feed<S: Sink>(
        &mut self,
        cfg: &PolicySettings<P>,
        event: Option<Event>,
        sink: &mut S,
    ) -> Next {
        self.0.feed(cfg, event, sink)
    }
    fn cancelled<S: Sink>(&mut self, cfg: &PolicySettings<P>, sink: &mut S) -> Verdict {
        self.0.cancelled(cfg, sink)
    }
    fn start(&self) -> Instant {
        self.0.start()
    }
    fn now(&self) -> Instant {
        self.0.now()
    }
    fn attempts(&self) -> u32 {
        self.0.attempts()
    }
    fn refusal(&self) -> Option<&'static str> {
        self.0.refusal()
    }
    fn make(cfg: &PolicySettings<P>, rng: fastrand::Rng) -> Self {
        MADE.with(|n| n.set(n.get() + 1));
        Self(M::make(cfg, rng))
    }
    fn primary(
        &mut self,
        cfg: &PolicySettings<P>,
        info: AttemptInfo,
        admission: Admission,
    ) -> Action {
        self.0.primary(cfg, info, admission)
    }
    fn launched(
        &mut self,
        cfg: &PolicySettings<P>,
        group: u16,
        start: Instant,
        at: Instant,
        budget_reason: &'static str,
        backoff: (Duration, u64),
    ) {
        self.0
            .launched(cfg, group, start, at, budget_reason, backoff);
    }
    fn retry_due(
        &mut self,
        cfg: &PolicySettings<P>,
        group: u16,
        start: Instant,
        at: Instant,
        last: Outcome,
        backoff: (Duration, u64),
        wake: Option<Instant>,
    ) {
        self.0.retry_due(cfg, group, start, at, last, backoff, wake);
    }
    fn succeeded(&mut self, cfg: &PolicySettings<P>, id: AttemptId, now: Instant) {
        self.0.succeeded(cfg, id, now);
    }
    fn finish_told(&mut self, cfg: &PolicySettings<P>) {
        self.0.finish_told(cfg);
    }
}

impl<const N: usize> crate::driver::sealed::Sealed for Full<N> {}

impl<const N: usize> Width for Full<N>
where
    [Option<AttemptId>; N]: Default,
    InFlight<N>: crate::driver::sealed::Hedges,
{
    const SLOTS: usize = N;
    type Machine<P: core::borrow::Borrow<Policy>> = Counted<CallMachine<N>, false>;
    type Attempts<F> = <InFlight<N> as Width>::Attempts<F>;
    type Ids = [Option<AttemptId>; N];
}

/// [`InFlight`], counting the full machines it grows.
struct Staged<const N: usize>;

impl<const N: usize> crate::driver::sealed::Sealed for Staged<N> {}

impl<const N: usize> Width for Staged<N>
where
    [Option<AttemptId>; N]: Default,
    InFlight<N>: crate::driver::sealed::Hedges,
{
    const SLOTS: usize = N;
    // The call future's machine, its hedging room as the width's.
    type Machine<P: core::borrow::Borrow<Policy>> = Counted<
        crate::machine::staged::Machine<N, <InFlight<N> as crate::driver::sealed::Hedges>::Room>,
        true,
    >;
    type Attempts<F> = <InFlight<N> as Width>::Attempts<F>;
    type Ids = [Option<AttemptId>; N];
}

const KEY: PolicyKey<'static> = PolicyKey::new("svc", "Get");

/// Everything a call tells the world, in order.
type Events = Rc<RefCell<Vec<String>>>;

/// Logs every observer event, whole.
struct Log(Events);

impl Observer for Log {
    fn on_start(&mut self, key: PolicyKey<'_>, start: Instant) {
        self.0.borrow_mut().push(format!("start {key} {start:?}"));
    }
    fn on_launch(&mut self, _: PolicyKey<'_>, info: &AttemptInfo) {
        self.0.borrow_mut().push(format!("launch {info:?}"));
    }
    fn on_attempt(&mut self, _: PolicyKey<'_>, record: &AttemptRecord) {
        self.0.borrow_mut().push(format!("attempt {record:?}"));
    }
    fn on_success(&mut self, _: PolicyKey<'_>, end: &CallEnd) {
        self.0.borrow_mut().push(format!("success {end:?}"));
    }
    fn on_failure(&mut self, _: PolicyKey<'_>, end: &CallEnd) {
        self.0.borrow_mut().push(format!("failure {end:?}"));
    }
}

/// Answers admissions from a script (allowed, denied by a budget, or by
/// the circuit) and logs every gate call in the same event list.
struct ScriptedGate {
    events: Events,
    answers: Vec<Admission>,
    asked: usize,
}

impl Gate for ScriptedGate {
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        let answer = self.answers[self.asked % self.answers.len()];
        self.asked += 1;
        self.events
            .borrow_mut()
            .push(format!("admit {request:?} -> {answer:?}"));
        answer
    }
    fn attempt_ended(&mut self, record: &AttemptRecord) {
        self.events.borrow_mut().push(format!("ended {record:?}"));
    }
    fn call_ended(&mut self, verdict: &Verdict, now: Instant) {
        self.events
            .borrow_mut()
            .push(format!("call ended {verdict:?} {now:?}"));
    }
    fn hedge(&mut self, state: &HedgeState) -> HedgeDecision {
        let decision = crate::hedge::fixed_delay(state);
        self.events
            .borrow_mut()
            .push(format!("hedge {state:?} -> {decision:?}"));
        decision
    }
}

/// One attempt's script: after `delay_ms` (0: ready at its first poll),
/// `result`.
#[derive(Copy, Clone, Debug)]
struct Step {
    delay_ms: u64,
    result: Result<u32, &'static str>,
}

/// A random scenario: policy, attempt scripts, gate answers, and when the
/// caller gives up.
#[derive(Clone, Debug)]
struct Scenario {
    policy: Policy,
    steps: Vec<Step>,
    answers: Vec<Admission>,
    stop_ms: u64,
    /// When the call starts: sometimes so near the clock's end that every
    /// deadline saturates to it.
    epoch: Instant,
    /// The gate's expected latency, if any (retried calls only).
    latency: Option<Duration>,
}

fn scenario(rng: &mut fastrand::Rng) -> Scenario {
    let mut policy = Policy::DEFAULT;
    let r = &mut policy.retry;
    r.max_attempts = rng.u32(1..5);
    r.initial_backoff = Duration::from_millis(rng.u64(0..20));
    r.max_backoff = Duration::from_millis(rng.u64(0..60));
    r.jitter = [
        crate::Jitter::None,
        crate::Jitter::Full,
        crate::Jitter::Decorrelated,
    ][rng.usize(0..3)];
    r.timeout_per_attempt = rng.bool().then(|| Duration::from_millis(rng.u64(0..40)));
    r.overall_timeout = rng.bool().then(|| Duration::from_millis(rng.u64(0..120)));
    policy.hedge.enabled = rng.u8(0..4) == 0;
    policy.hedge.max_hedges = rng.u32(1..3);
    policy.hedge.hedge_delay = Duration::from_millis(rng.u64(0..30));
    let steps = (0..12)
        .map(|_| Step {
            delay_ms: if rng.bool() { 0 } else { rng.u64(0..50) },
            result: match rng.u8(0..6) {
                0..=2 => Ok(rng.u32(..)),
                3 | 4 => Err("flaky"),
                _ => Err("bad"),
            },
        })
        .collect();
    let answers = (0..rng.usize(1..4))
        .map(|_| match rng.u8(0..10) {
            0 => Admission::denied("budget_denied"),
            1 => Admission::circuit_open("circuit_open"),
            2 => Admission::ALLOWED,
            _ => Admission::NO_BUDGET,
        })
        .collect();
    Scenario {
        policy,
        steps,
        answers,
        stop_ms: if rng.u8(0..3) == 0 {
            u64::MAX
        } else {
            rng.u64(0..100)
        },
        epoch: match rng.u8(0..8) {
            0 => Instant::MAX,
            1 => Instant::from_nanos(u64::MAX - rng.u64(0..50_000_000)),
            _ => Instant::from_nanos(rng.u64(0..1 << 50)),
        },
        latency: None,
    }
}

/// Non-retryable for `Err("bad")`, retryable for other errors.
fn classify(r: &Result<u32, &'static str>) -> Outcome {
    match r {
        Ok(_) => Outcome::SUCCESS,
        Err("bad") => Outcome::non_retryable("bad_request"),
        Err(_) => Outcome::retryable("unavailable"),
    }
}

type Outcome2 = Option<Result<u32, Error<&'static str>>>;

/// Runs `scenario` with `slots` attempt slots, with a staged machine or a
/// full one: the result (`None` when dropped at the stop time) and every
/// event.
fn run(scenario: &Scenario, slots: usize, staged: bool, seed: u64) -> (Outcome2, Vec<String>) {
    let clock = Clock::starting_at(scenario.epoch);
    let events = Events::default();
    let gate = ScriptedGate {
        events: events.clone(),
        answers: scenario.answers.clone(),
        asked: 0,
    };
    let op = |info: AttemptInfo| {
        let step = scenario.steps[usize::from(info.id.0) % scenario.steps.len()];
        let sleep = clock.sleep_until(clock.now() + Duration::from_millis(step.delay_ms));
        async move {
            sleep.await;
            step.result
        }
    };
    let stop = scenario.epoch + Duration::from_millis(scenario.stop_ms.min(1 << 40));
    let builder = call(KEY, &scenario.policy, clock.clone(), op)
        .classifier(classify)
        .observer(Log(events.clone()))
        .gate(gate)
        .rng(fastrand::Rng::with_seed(seed));
    let result = match (slots, staged) {
        (1, true) => clock.run_until(builder.into_future(), stop),
        (1, false) => clock.run_until(builder.width::<Full<1>>().into_future(), stop),
        (_, true) => clock.run_until(builder.slots::<3>().into_future(), stop),
        (_, false) => clock.run_until(builder.width::<Full<3>>().into_future(), stop),
    };
    let events = events.borrow().clone();
    (result, events)
}

#[test]
fn the_compact_stage_changes_nothing_a_caller_or_gate_can_see() {
    let runs = if cfg!(miri) { 20 } else { 4_000 };
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let (mut first_poll_wins, mut later, mut refused, mut dropped) = (0, 0, 0, 0);
    for seed in 0..runs {
        let s = scenario(&mut rng);
        let slots = if rng.bool() { 1 } else { 3 };
        let with = run(&s, slots, true, seed);
        let without = run(&s, slots, false, seed);
        assert_eq!(with, without, "seed {seed}, {slots} slots: {s:#?}");
        // What the runs covered (so that the test cannot pass vacuously).
        let events = &with.1;
        match &with.0 {
            None => dropped += 1,
            Some(Ok(_)) if events.iter().filter(|e| e.starts_with("launch")).count() == 1 => {
                first_poll_wins += usize::from(s.steps[0].delay_ms == 0);
            }
            Some(Err(Error::BudgetDenied { .. } | Error::CircuitOpen { .. })) => refused += 1,
            Some(_) => later += 1,
        }
    }
    // Under Miri (a few runs, for the unsafe slot code) coverage is the
    // normal run's business.
    let min = if cfg!(miri) { 0 } else { runs as usize / 25 };
    assert!(
        first_poll_wins >= min && later >= min && refused >= min && dropped >= min,
        "coverage: {first_poll_wins} won at once, {later} other results, {refused} refused, \
         {dropped} dropped"
    );
}

/// A gate that counts what it is told.
#[derive(Default)]
struct Counting {
    admitted: Cell<u32>,
    ended: Cell<u32>,
    calls_ended: Cell<u32>,
}

impl Gate for &Counting {
    fn admit(&mut self, _: &AdmitRequest) -> Admission {
        self.admitted.set(self.admitted.get() + 1);
        Admission::ALLOWED
    }
    fn attempt_ended(&mut self, _: &AttemptRecord) {
        self.ended.set(self.ended.get() + 1);
    }
    fn call_ended(&mut self, _: &Verdict, _: Instant) {
        self.calls_ended.set(self.calls_ended.get() + 1);
    }
}

/// Where a test makes the call panic.
#[derive(Copy, Clone, Debug)]
enum PanicIn {
    Operation,
    Classifier,
    OnAttempt,
    OnSuccess,
}

/// An observer that panics in `on_attempt` or `on_success` when asked to,
/// and logs.
struct Panicky(Events, Option<PanicIn>);

impl Observer for Panicky {
    fn on_attempt(&mut self, key: PolicyKey<'_>, record: &AttemptRecord) {
        Log(self.0.clone()).on_attempt(key, record);
        if matches!(self.1, Some(PanicIn::OnAttempt)) {
            panic!("observer");
        }
    }
    fn on_success(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        Log(self.0.clone()).on_success(key, end);
        if matches!(self.1, Some(PanicIn::OnSuccess)) {
            panic!("observer");
        }
    }
    fn on_failure(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        Log(self.0.clone()).on_failure(key, end);
    }
}

/// A call whose first attempt is ready at once, panicking in `at`: what
/// the gate heard (admitted, attempts ended, calls ended) and the events.
fn panicking(at: PanicIn, staged: bool) -> ((u32, u32, u32), Vec<String>) {
    let clock = Clock::default();
    let events = Events::default();
    let gate = Counting::default();
    let builder = call(KEY, Policy::DEFAULT, clock.clone(), |_| async move {
        if matches!(at, PanicIn::Operation) {
            panic!("operation");
        }
        Ok::<u32, &str>(7)
    })
    .classifier(move |r: &Result<u32, &str>| {
        if matches!(at, PanicIn::Classifier) {
            panic!("classifier");
        }
        crate::Classifier::classify(&crate::DefaultClassifier, r)
    })
    .observer(Panicky(events.clone(), Some(at)))
    .gate(&gate);
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        if staged {
            clock.run_until(builder.into_future(), Instant::MAX)
        } else {
            clock.run_until(builder.width::<Full<1>>().into_future(), Instant::MAX)
        }
    }));
    assert!(unwound.is_err(), "{at:?}: the panic reaches the caller");
    let told = (
        gate.admitted.get(),
        gate.ended.get(),
        gate.calls_ended.get(),
    );
    let events = events.borrow().clone();
    (told, events)
}

#[test]
fn a_panic_inside_the_compact_stage_still_settles_the_gate_exactly_once() {
    for at in [
        PanicIn::Operation,
        PanicIn::Classifier,
        PanicIn::OnAttempt,
        PanicIn::OnSuccess,
    ] {
        let with = panicking(at, true);
        let without = panicking(at, false);
        assert_eq!(with, without, "{at:?}");
        assert_eq!(with.0, (1, 1, 1), "{at:?}: admitted, ended, call ended");
    }
}

#[test]
fn a_first_attempt_that_succeeds_makes_no_full_machine() {
    let made = |delay_ms: u64, result: Result<u32, &'static str>| {
        let clock = Clock::default();
        let before = MADE.with(Cell::get);
        let out = clock.run_until(
            call(KEY, Policy::DEFAULT, clock.clone(), |_| {
                let sleep = clock.sleep_until(clock.now() + Duration::from_millis(delay_ms));
                Box::pin(async move {
                    sleep.await;
                    result
                })
            })
            .width::<Staged<1>>()
            .into_future(),
            Instant::MAX,
        );
        (out, MADE.with(Cell::get) - before)
    };
    assert_eq!(made(0, Ok(1)), (Some(Ok(1)), 0));
    // Pending first: the compact stage waits for it too (the express lane
    // it replaced made the machine here).
    assert_eq!(made(5, Ok(1)), (Some(Ok(1)), 0));
    // A failure needs the full machine to retry.
    assert_eq!(
        made(0, Err("x")),
        (
            Some(Err(Error::RetriesExhausted {
                last: Some("x"),
                attempts: 3
            })),
            1
        )
    );
}

/// An observer whose first `on_attempt` panics, and logs.
struct PanicsOnce(Events, Cell<bool>);

impl Observer for PanicsOnce {
    fn on_attempt(&mut self, key: PolicyKey<'_>, record: &AttemptRecord) {
        Log(self.0.clone()).on_attempt(key, record);
        if !self.1.replace(true) {
            panic!("observer");
        }
    }
    fn on_success(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        Log(self.0.clone()).on_success(key, end);
    }
    fn on_failure(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        Log(self.0.clone()).on_failure(key, end);
    }
}

/// What a call resolves to.
type Outcome3 = Result<u32, Error<&'static str>>;

/// A call whose observer panics while the first attempt's record is out,
/// polled again after the panic: its result, what the gate heard and the
/// events.
fn polled_again(staged: bool) -> (Poll<Outcome3>, (u32, u32, u32), Vec<String>) {
    use core::task::{Context, Waker};
    let clock = Clock::default();
    let events = Events::default();
    let gate = Counting::default();
    let builder = call(KEY, Policy::DEFAULT, clock.clone(), |_| async {
        Ok::<u32, &str>(7)
    })
    .observer(PanicsOnce(events.clone(), Cell::new(false)))
    .gate(&gate);
    let mut cx = Context::from_waker(Waker::noop());
    let mut poll_twice =
        |mut fut: core::pin::Pin<&mut dyn core::future::Future<Output = Outcome3>>| {
            let first = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
            assert!(first.is_err(), "the observer's panic reaches the caller");
            fut.as_mut().poll(&mut cx)
        };
    let out = if staged {
        poll_twice(core::pin::pin!(builder.into_future()))
    } else {
        poll_twice(core::pin::pin!(builder.width::<Full<1>>().into_future()))
    };
    let told = (
        gate.admitted.get(),
        gate.ended.get(),
        gate.calls_ended.get(),
    );
    let events = events.borrow().clone();
    (out, told, events)
}

#[test]
fn a_call_polled_again_after_its_record_panicked_ends_as_the_full_machine_ends_it() {
    let staged = polled_again(true);
    assert_eq!(staged, polled_again(false));
    // The winner stands, and the gate heard of the call's end once.
    assert_eq!(staged.0, Poll::Ready(Ok(7)));
    assert_eq!(staged.1, (1, 1, 1), "admitted, ended, call ended");
}

/// A classifier for retried calls: `Err("bad")` non-retryable,
/// `Err("stop")` abort, `Err("hint")` retryable with a retry-after hint
/// of 0 or 7 ms, other errors retryable.
fn classify_retries(r: &Result<u32, &'static str>) -> Outcome {
    match r {
        Ok(_) => Outcome::SUCCESS,
        Err("bad") => Outcome::non_retryable("bad_request"),
        Err("stop") => Outcome::abort("stop"),
        Err("hint0") => Outcome {
            retry_after: Some(Duration::ZERO),
            ..Outcome::retryable("pushback")
        },
        Err("hint") => Outcome {
            retry_after: Some(Duration::from_millis(7)),
            ..Outcome::retryable("pushback")
        },
        Err(_) => Outcome::retryable("unavailable"),
    }
}

/// A random scenario of a call that retries: no backoff most of the time
/// (the compact stage retries those itself), every outcome kind, retry-after
/// hints, gate refusals at any attempt, per-attempt and overall deadlines,
/// drops at any point, and sometimes a backoff with jitter (the full
/// machine's, after the stage grows).
fn retry_scenario(rng: &mut fastrand::Rng) -> Scenario {
    let mut policy = Policy::DEFAULT;
    let r = &mut policy.retry;
    r.max_attempts = rng.u32(1..9);
    if rng.u8(0..4) == 0 {
        r.initial_backoff = Duration::from_millis(rng.u64(0..5));
        r.max_backoff = Duration::from_millis(rng.u64(0..20));
    } else {
        r.initial_backoff = Duration::ZERO;
        r.max_backoff = Duration::ZERO;
    }
    r.jitter = [
        crate::Jitter::None,
        crate::Jitter::Full,
        crate::Jitter::Equal,
        crate::Jitter::Decorrelated,
    ][rng.usize(0..4)];
    r.timeout_per_attempt = (rng.u8(0..3) == 0).then(|| Duration::from_millis(rng.u64(0..30)));
    r.overall_timeout = (rng.u8(0..3) == 0).then(|| Duration::from_millis(rng.u64(0..80)));
    // Hedging on sometimes: with one slot it hedges nothing, and the
    // compact stage decides; with three it never starts compact.
    policy.hedge.enabled = rng.u8(0..4) == 0;
    policy.hedge.max_hedges = rng.u32(1..3);
    policy.hedge.hedge_delay = Duration::from_millis(rng.u64(0..30));
    let steps = (0..10)
        .map(|_| Step {
            delay_ms: if rng.u8(0..3) != 0 { 0 } else { rng.u64(0..25) },
            result: match rng.u8(0..20) {
                0..=3 => Ok(rng.u32(..)),
                4..=14 => Err("flaky"),
                15 => Err("bad"),
                16 => Err("stop"),
                17 => Err("hint0"),
                18 => Err("hint"),
                _ => Err("flaky"),
            },
        })
        .collect();
    let answers = (0..rng.usize(1..8))
        .map(|_| match rng.u8(0..16) {
            0 => Admission::denied("budget_denied"),
            1 => Admission::circuit_open("circuit_open"),
            2..=5 => Admission::NO_BUDGET,
            _ => Admission::ALLOWED,
        })
        .collect();
    Scenario {
        policy,
        steps,
        answers,
        stop_ms: match rng.u8(0..4) {
            0 => rng.u64(0..60),
            _ => u64::MAX,
        },
        epoch: match rng.u8(0..10) {
            0 => Instant::MAX,
            1 => Instant::from_nanos(u64::MAX - rng.u64(0..50_000_000)),
            _ => Instant::from_nanos(rng.u64(0..1 << 50)),
        },
        latency: (rng.u8(0..3) == 0).then(|| Duration::from_millis(rng.u64(0..40))),
    }
}

/// A [`ScriptedGate`] that also answers (and logs) the expected latency.
struct LatencyGate(ScriptedGate, Option<Duration>);

impl Gate for LatencyGate {
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        self.0.admit(request)
    }
    fn attempt_ended(&mut self, record: &AttemptRecord) {
        self.0.attempt_ended(record);
    }
    fn call_ended(&mut self, verdict: &Verdict, now: Instant) {
        self.0.call_ended(verdict, now);
    }
    fn hedge(&mut self, state: &HedgeState) -> HedgeDecision {
        self.0.hedge(state)
    }
    fn expected_latency(&mut self, now: Instant) -> Option<Duration> {
        self.0
            .events
            .borrow_mut()
            .push(format!("expected latency {now:?} -> {:?}", self.1));
        self.1
    }
}

/// [`run_retries`] of `scenario` staged and full from the start, which
/// must end alike, with the same events: the staged run.
fn run_both_ways(scenario: &Scenario, slots: usize, seed: u64) -> (Outcome2, Vec<String>, u64) {
    let with = run_retries(scenario, slots, true, seed);
    let without = run_retries(scenario, slots, false, seed);
    assert_eq!(
        (&with.0, &with.1),
        (&without.0, &without.1),
        "seed {seed}, {slots} slots: {scenario:#?}"
    );
    with
}

/// Runs `scenario` (with [`classify_retries`]) with `slots` attempt slots,
/// staged (counting the full machines it grows) or full from the start:
/// the result, every event, and the full machines the staged run made.
fn run_retries(
    scenario: &Scenario,
    slots: usize,
    staged: bool,
    seed: u64,
) -> (Outcome2, Vec<String>, u64) {
    let clock = Clock::starting_at(scenario.epoch);
    let events = Events::default();
    let gate = ScriptedGate {
        events: events.clone(),
        answers: scenario.answers.clone(),
        asked: 0,
    };
    let gate = LatencyGate(gate, scenario.latency);
    let op = |info: AttemptInfo| {
        let step = scenario.steps[usize::from(info.id.0) % scenario.steps.len()];
        let sleep = clock.sleep_until(clock.now() + Duration::from_millis(step.delay_ms));
        async move {
            sleep.await;
            step.result
        }
    };
    let stop = scenario.epoch + Duration::from_millis(scenario.stop_ms.min(1 << 40));
    let builder = call(KEY, &scenario.policy, clock.clone(), op)
        .classifier(classify_retries)
        .observer(Log(events.clone()))
        .gate(gate)
        .rng(fastrand::Rng::with_seed(seed));
    let before = MADE.with(Cell::get);
    let result = match (slots, staged) {
        (1, true) => clock.run_until(builder.width::<Staged<1>>().into_future(), stop),
        (1, false) => clock.run_until(builder.width::<Full<1>>().into_future(), stop),
        (_, true) => clock.run_until(builder.width::<Staged<3>>().into_future(), stop),
        (_, false) => clock.run_until(builder.width::<Full<3>>().into_future(), stop),
    };
    let made = MADE.with(Cell::get) - before;
    let events = events.borrow().clone();
    (result, events, made)
}

/// The compact stage retries a call with no backoff itself: every retry
/// case it decides (or grows for) ends as the full machine ends it — the
/// same result, observer events and gate calls in the same order — over
/// seeded random policies, outcomes (retryable, non-retryable, abort,
/// retry-after hints), gate refusals at any attempt, per-attempt and
/// overall deadlines, backoffs with jitter, max attempts, and drops (a
/// cancel) at any point, mid-backoff included.
#[test]
fn retried_calls_end_as_the_full_machine_ends_them() {
    let runs = if cfg!(miri) { 20 } else { 6_000 };
    let mut rng = fastrand::Rng::with_seed(0x7e7);
    // What the runs covered: finished by the compact stage after a retry;
    // grown after a compact retry, by cause; refused at a retry.
    let (mut compact, mut grown, mut refused_later, mut dropped, mut exhausted, mut terminal) =
        (0, 0, 0, 0, 0, 0);
    for seed in 0..runs {
        let s = retry_scenario(&mut rng);
        let slots = if rng.u8(0..4) == 0 { 3 } else { 1 };
        let with = run_both_ways(&s, slots, seed);
        let launches = with.1.iter().filter(|e| e.starts_with("launch")).count();
        if launches < 2 {
            continue;
        }
        if with.2 == 0 {
            compact += 1;
            continue;
        }
        // The full machine took over after the compact stage retried, or
        // it decided from the start (a hedging policy, a backoff).
        let retried_compact = s.policy.retry.initial_backoff.is_zero()
            && s.policy.retry.max_backoff.is_zero()
            && !(slots == 3 && s.policy.hedge.enabled)
            && with.1.iter().filter(|e| e.starts_with("admit")).count() >= 2;
        if !retried_compact {
            continue;
        }
        grown += 1;
        match &with.0 {
            None => dropped += 1,
            Some(Err(Error::BudgetDenied { .. } | Error::CircuitOpen { .. })) => {
                refused_later += 1;
            }
            Some(Err(Error::RetriesExhausted { .. })) => exhausted += 1,
            Some(Err(Error::Operation { .. })) => terminal += 1,
            Some(_) => {}
        }
    }
    let min = if cfg!(miri) { 0 } else { runs as usize / 100 };
    assert!(
        compact >= min
            && grown >= min
            && refused_later >= min
            && dropped >= min
            && exhausted >= min
            && terminal >= min,
        "coverage: {compact} retried and finished compact; {grown} grown after a compact \
         retry: {refused_later} refused, {dropped} dropped, {exhausted} exhausted, \
         {terminal} non-retryable or aborted"
    );
}

/// A call whose first attempt fails retryably and whose observer panics on
/// that failure's record, polled again after the panic until it ends, with
/// a policy without backoff (`backoff_ms` 0: the compact stage retries at
/// once) or with one: its result, what the gate heard and the events.
fn retry_polled_again(
    staged: bool,
    backoff_ms: u64,
) -> (Option<Outcome3>, (u32, u32, u32), Vec<String>) {
    let clock = Clock::default();
    let events = Events::default();
    let gate = Counting::default();
    let mut policy = Policy::DEFAULT;
    policy.retry.initial_backoff = Duration::from_millis(backoff_ms);
    policy.retry.max_backoff = Duration::from_millis(backoff_ms);
    let failures = Cell::new(0);
    let builder = call(KEY, &policy, clock.clone(), |_| {
        let fail = failures.replace(failures.get() + 1) == 0;
        async move {
            if fail {
                Err("flaky")
            } else {
                Ok::<u32, &str>(7)
            }
        }
    })
    .observer(PanicsOnce(events.clone(), Cell::new(false)))
    .gate(&gate);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    let mut run = |mut fut: core::pin::Pin<&mut dyn core::future::Future<Output = Outcome3>>| {
        let first = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
        assert!(first.is_err(), "the observer's panic reaches the caller");
        // Then as a runtime would, to the end (bounded: `run` panics on a
        // livelock).
        Some(clock.run(fut.as_mut()))
    };
    let out = if staged {
        run(core::pin::pin!(builder.width::<Staged<1>>().into_future()))
    } else {
        run(core::pin::pin!(builder.width::<Full<1>>().into_future()))
    };
    let told = (
        gate.admitted.get(),
        gate.ended.get(),
        gate.calls_ended.get(),
    );
    let events = events.borrow().clone();
    (out, told, events)
}

#[test]
fn a_retried_call_polled_again_after_its_failure_record_panicked_ends_as_the_full_machine_ends_it()
{
    for backoff_ms in [0, 5] {
        let staged = retry_polled_again(true, backoff_ms);
        assert_eq!(
            staged,
            retry_polled_again(false, backoff_ms),
            "{backoff_ms} ms"
        );
        // The retry ran and won; the gate heard two attempts and one end.
        assert_eq!(staged.0, Some(Ok(7)), "{backoff_ms} ms");
        assert_eq!(
            staged.1,
            (2, 2, 1),
            "{backoff_ms} ms: admitted, ended, call ended"
        );
    }
}

#[test]
fn a_retry_the_compact_stage_decides_makes_no_full_machine() {
    let made = |backoff_ms: u64, failures: u32| {
        let clock = Clock::default();
        let mut policy = Policy::DEFAULT;
        policy.retry.initial_backoff = Duration::from_millis(backoff_ms);
        policy.retry.max_backoff = Duration::from_millis(backoff_ms);
        let n = Cell::new(0);
        let before = MADE.with(Cell::get);
        let out = clock.run(
            call(KEY, &policy, clock.clone(), |_| {
                let fail = n.replace(n.get() + 1) < failures;
                clock.after(
                    Duration::from_millis(1),
                    if fail { Err("x") } else { Ok(1) },
                )
            })
            .width::<Staged<1>>()
            .into_future(),
        );
        (out, MADE.with(Cell::get) - before, clock.now())
    };
    // Two failures, then the success: no full machine without a backoff,
    // nor with one in a call without deadlines where the compact stage
    // sleeps it (10 ms after each failure; `SLEEPS`: on a 64-bit target).
    let grown = u64::from(!SLEEPS);
    assert_eq!(made(0, 2), (Ok(1), 0, Instant::from_nanos(3_000_000)));
    assert_eq!(made(10, 2), (Ok(1), grown, Instant::from_nanos(23_000_000)));
    // The third failure exhausts the attempts: the full machine ends it.
    assert_eq!(
        made(10, 3).0,
        Err(Error::RetriesExhausted {
            last: Some("x"),
            attempts: 3
        })
    );
    assert_eq!(made(10, 3).1, 1);
}

/// A random scenario of a call that backs off between its retries with no
/// deadline (the compact stage sleeps those backoffs itself): every
/// jitter, zero delays drawn (an initial backoff of 0 with a maximum),
/// every outcome kind and retry-after hints, gate refusals at any attempt,
/// drops at any point (mid-backoff included), the caller's clock starting
/// anywhere (near its end, where a wake saturates).
fn backoff_scenario(rng: &mut fastrand::Rng) -> Scenario {
    let mut s = retry_scenario(rng);
    let r = &mut s.policy.retry;
    r.initial_backoff = Duration::from_micros(rng.u64(0..6_000));
    r.max_backoff = Duration::from_micros(rng.u64(1..30_000));
    r.backoff_multiplier = [1.0, 1.5, 2.0, 3.7][rng.usize(0..4)];
    // Deadlines sometimes: the full machine's backoff (the stage grows).
    if rng.u8(0..5) != 0 {
        r.timeout_per_attempt = None;
        r.overall_timeout = None;
    }
    s
}

/// The compact stage sleeps a backoff itself in a call without deadlines:
/// every such call ends as the full machine ends it — the same result,
/// observer events (each record's backoff) and gate calls in the same
/// order, on the same instants — and the ones it decides to the end make
/// no full machine.
#[test]
fn backed_off_retries_end_as_the_full_machine_ends_them() {
    let runs = if cfg!(miri) { 20 } else { 6_000 };
    let mut rng = fastrand::Rng::with_seed(0xb0ff);
    // What the runs covered: finished compact after a backoff; grown after
    // one, by cause.
    let (mut compact, mut dropped, mut refused, mut exhausted, mut other) = (0, 0, 0, 0, 0);
    for seed in 0..runs {
        let s = backoff_scenario(&mut rng);
        let slots = if rng.u8(0..4) == 0 { 3 } else { 1 };
        let with = run_both_ways(&s, slots, seed);
        let r = &s.policy.retry;
        let sleeps_compact = r.timeout_per_attempt.is_none()
            && r.overall_timeout.is_none()
            && !(slots == 3 && s.policy.hedge.enabled)
            && with.1.iter().filter(|e| e.starts_with("admit")).count() >= 2;
        if !sleeps_compact {
            continue;
        }
        match (&with.0, with.2) {
            (Some(Ok(_)), 0) => compact += 1,
            (_, 0) => panic!("seed {seed}: ended without a full machine: {:?}", with.0),
            (None, _) => dropped += 1,
            (Some(Err(Error::BudgetDenied { .. } | Error::CircuitOpen { .. })), _) => refused += 1,
            (Some(Err(Error::RetriesExhausted { .. })), _) => exhausted += 1,
            _ => other += 1,
        }
    }
    let min = if cfg!(miri) { 0 } else { runs as usize / 100 };
    // (Where the stage does not sleep, every one of them grows.)
    let compact_min = if SLEEPS { min } else { 0 };
    assert!(
        compact >= compact_min
            && dropped >= min
            && refused >= min
            && exhausted >= min
            && other >= min,
        "coverage: {compact} backed off and finished compact; grown after a compact \
         backoff: {dropped} dropped, {refused} refused, {exhausted} exhausted, {other} other"
    );
}

/// Runs a call under `policy` (the caller's RNG seeded with 7) whose
/// attempts end after `ends_ms` each, failing retryably but the last,
/// staged or full from the start, on a clock starting at 0: its result,
/// every observer event and gate call, and the full machines made.
fn backoff_timeline(
    policy: &Policy,
    ends_ms: &[u64],
    staged: bool,
) -> (Outcome3, Vec<String>, u64) {
    let clock = Clock::default();
    let events = Events::default();
    let gate = ScriptedGate {
        events: events.clone(),
        answers: std::vec![Admission::ALLOWED],
        asked: 0,
    };
    let last = ends_ms.len() - 1;
    let op = |info: AttemptInfo| {
        let i = usize::from(info.id.0);
        let result = if i == last { Ok(7) } else { Err("flaky") };
        clock.after(Duration::from_millis(ends_ms[i]), result)
    };
    let builder = call(KEY, policy, clock.clone(), op)
        .classifier(classify)
        .observer(Log(events.clone()))
        .gate(gate)
        .rng(fastrand::Rng::with_seed(7));
    let before = MADE.with(Cell::get);
    let result = if staged {
        clock.run(builder.width::<Staged<1>>().into_future())
    } else {
        clock.run(builder.width::<Full<1>>().into_future())
    };
    let made = MADE.with(Cell::get) - before;
    let events = events.borrow().clone();
    (result, events, made)
}

/// The compact stage's backoff, on explicit instants: attempts that end 1,
/// 2 and 1 ms after their launch, the first two failing, under the
/// default 10 ms doubling backoff without jitter: launched at 0, 11 and
/// 33 ms (each failure's end plus 10, then 20 ms), each record carrying
/// the sleep before its attempt, the call ended at 34 ms — the full
/// machine's timeline, event for event, without a full machine. With full
/// jitter (drawn from the caller's RNG) the same events as the full
/// machine's.
#[test]
fn the_compact_stage_sleeps_a_backoff_on_the_full_machines_instants() {
    let policy = Policy::DEFAULT;
    let staged = backoff_timeline(&policy, &[1, 2, 1], true);
    let full = backoff_timeline(&policy, &[1, 2, 1], false);
    assert_eq!((&staged.0, &staged.1), (&full.0, &full.1));
    assert_eq!(staged.0, Ok(7));
    assert_eq!(
        (staged.2, full.2),
        (u64::from(!SLEEPS), 1),
        "full machines made"
    );
    let ms = Duration::from_millis;
    let admits: Vec<&str> = staged
        .1
        .iter()
        .filter_map(|e| e.strip_prefix("admit "))
        .collect();
    assert_eq!(admits.len(), 3, "{:#?}", staged.1);
    for (admit, at) in admits.iter().zip([0, 11, 33]) {
        let want = format!("now: {:?}", Instant::ZERO + ms(at));
        assert!(admit.contains(&want), "admitted at {at} ms: {admit}");
    }
    let records: Vec<&String> = staged
        .1
        .iter()
        .filter(|e| e.starts_with("attempt "))
        .collect();
    assert_eq!(records.len(), 3, "{:#?}", staged.1);
    for (record, (start, end, backoff)) in
        records.iter().zip([(0, 1, 0), (11, 13, 10), (33, 34, 20)])
    {
        for want in [
            format!("start: {:?}", Instant::ZERO + ms(start)),
            format!("end: {:?}", Instant::ZERO + ms(end)),
            format!("backoff: {:?}", ms(backoff)),
        ] {
            assert!(record.contains(&want), "{want} in {record}");
        }
    }
    assert!(
        staged.1.last().is_some_and(|e| e.starts_with("success")),
        "{:#?}",
        staged.1
    );

    let mut jittered = Policy::DEFAULT;
    jittered.retry.max_attempts = 5;
    for jitter in [
        crate::Jitter::Full,
        crate::Jitter::Equal,
        crate::Jitter::Decorrelated,
    ] {
        jittered.retry.jitter = jitter;
        let ends = [3, 0, 2, 5, 1];
        let staged = backoff_timeline(&jittered, &ends, true);
        let full = backoff_timeline(&jittered, &ends, false);
        assert_eq!((&staged.0, &staged.1), (&full.0, &full.1), "{jitter:?}");
        assert_eq!(
            (staged.0, staged.2),
            (Ok(7), u64::from(!SLEEPS)),
            "{jitter:?}"
        );
    }
}
