//! Deterministic tests of the call machine and the driver: a small harness
//! owns `now`, feeds events with explicit instants, drains actions and
//! asserts exact action sequences.

use core::time::Duration;
use std::vec::Vec;

use crate::gate::{Admission, AdmitRequest, Gate};
use crate::machine::{Action, CallMachine, Cause, Event, Limits, Verdict, WaitReason};
use crate::outcome::{reason, Outcome, OutcomeKind};
use crate::policy::{Jitter, Policy};
use crate::record::{AttemptId, AttemptInfo, AttemptKind, AttemptRecord};
use crate::time::Instant;

mod clock_reads;
mod driver;
mod feed;
mod hedging;
mod layout;
mod random;
mod restart;
mod staged;

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

fn dur(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A gate that counts, and can be told to refuse.
#[derive(Default, Debug)]
struct CountingGate {
    admitted: Vec<AttemptInfo>,
    ended: Vec<(AttemptId, Option<OutcomeKind>)>,
    calls_ended: Vec<Verdict>,
    previous: Vec<Option<Outcome>>,
    kinds: Vec<AttemptKind>,
    deny_from: Option<u32>,
}

impl Gate for CountingGate {
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        let attempt = &request.attempt;
        self.kinds.push(attempt.kind());
        self.previous.push(request.previous);
        if self.deny_from.is_some_and(|n| attempt.retry_index >= n) {
            return Admission::DENIED;
        }
        self.admitted.push(*attempt);
        Admission::ALLOWED
    }
    fn attempt_ended(&mut self, record: &AttemptRecord) {
        assert!(self.calls_ended.is_empty(), "attempt ended after the call");
        let attempt = &record.info;
        let kind = (!record.cancelled).then_some(record.outcome.kind);
        assert!(
            !self.ended.iter().any(|(id, _)| *id == attempt.id),
            "attempt {:?} ended twice",
            attempt.id
        );
        self.ended.push((attempt.id, kind));
    }
    fn call_ended(&mut self, verdict: &Verdict, _now: Instant) {
        assert!(self.calls_ended.is_empty(), "call ended twice");
        self.calls_ended.push(*verdict);
    }
}

impl CountingGate {
    /// Every admitted attempt ended exactly once.
    fn balanced(&self) -> bool {
        self.admitted.len() == self.ended.len()
            && self
                .admitted
                .iter()
                .all(|a| self.ended.iter().filter(|(id, _)| *id == a.id).count() == 1)
    }
}

struct Harness {
    m: CallMachine,
    gate: CountingGate,
}

impl Harness {
    fn new(policy: &Policy) -> Self {
        Self::with(policy, Limits::DEFAULT, 7)
    }

    fn with(policy: &Policy, limits: Limits, seed: u64) -> Self {
        let mut m = CallMachine::new(policy, limits, fastrand::Rng::with_seed(seed));
        m.handle(Event::Start { now: Instant::ZERO });
        Self {
            m,
            gate: CountingGate::default(),
        }
    }

    /// Polls until the machine waits or finishes.
    fn drain(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        loop {
            let a = self.m.poll(&mut self.gate);
            out.push(a);
            if matches!(
                a,
                Action::Wait { .. } | Action::AwaitAttempts | Action::Finish(_)
            ) {
                return out;
            }
        }
    }

    fn finish(&mut self, id: u16, outcome: Outcome, at: Instant) -> Vec<Action> {
        self.m.handle(Event::AttemptFinished {
            id: AttemptId(id),
            outcome,
            now: at,
        });
        self.drain()
    }

    fn tick(&mut self, at: Instant) -> Vec<Action> {
        self.m.handle(Event::Tick { now: at });
        self.drain()
    }
}

fn launch(id: u16, retry_index: u32, deadline: Option<Instant>) -> Action {
    Action::Launch(AttemptInfo {
        id: AttemptId(id),
        retry_index,
        hedge_index: 0,
        is_hedge: false,
        deadline,
    })
}

fn wait(until: Instant, reason: WaitReason) -> Action {
    Action::Wait { until, reason }
}

fn record_of(a: &Action) -> AttemptRecord {
    match a {
        Action::Record(r) | Action::Cancel(r) => *r,
        other => panic!("expected a record, got {other:?}"),
    }
}

fn failure(cause: Cause, last: Option<u16>) -> Action {
    Action::Finish(Verdict::Failure {
        cause,
        last: last.map(AttemptId),
    })
}

const RETRY: Outcome = Outcome::retryable(reason::RETRYABLE_ERROR);

#[test]
fn success_on_first_attempt() {
    let mut h = Harness::new(&Policy::DEFAULT);
    assert_eq!(h.drain(), [launch(0, 0, None), Action::AwaitAttempts]);
    let a = h.finish(0, Outcome::SUCCESS, ms(4));
    assert_eq!(a.len(), 2);
    let r = record_of(&a[0]);
    assert_eq!((r.start, r.end, r.backoff), (ms(0), ms(4), Duration::ZERO));
    assert_eq!(r.outcome, Outcome::SUCCESS);
    assert!(r.budget_allowed && !r.cancelled);
    assert_eq!(a[1], Action::Finish(Verdict::Success(AttemptId(0))));
    // Finished is final: polling again repeats the verdict, launches nothing.
    assert_eq!(h.drain(), [Action::Finish(Verdict::Success(AttemptId(0)))]);
    assert!(h.m.is_finished());
    assert!(h.gate.balanced());
}

#[test]
fn retries_back_off_exponentially_then_succeed() {
    let mut h = Harness::new(&Policy::DEFAULT);
    h.drain();
    let a = h.finish(0, RETRY, ms(1));
    assert_eq!(a[1], wait(ms(11), WaitReason::Backoff));
    // An early tick changes nothing.
    assert_eq!(h.tick(ms(5)), [wait(ms(11), WaitReason::Backoff)]);
    assert_eq!(h.tick(ms(11)), [launch(1, 1, None), Action::AwaitAttempts]);
    let a = h.finish(1, RETRY, ms(12));
    assert_eq!(a[1], wait(ms(32), WaitReason::Backoff));
    assert_eq!(h.tick(ms(32))[0], launch(2, 2, None));
    let a = h.finish(2, Outcome::SUCCESS, ms(40));
    let r = record_of(&a[0]);
    assert_eq!(r.backoff, dur(20), "the record carries the sleep before it");
    assert_eq!(r.start, ms(32));
    assert_eq!(a[1], Action::Finish(Verdict::Success(AttemptId(2))));
    assert_eq!(h.m.attempts(), 3);
    assert_eq!(
        h.gate.kinds,
        [AttemptKind::Initial, AttemptKind::Retry, AttemptKind::Retry]
    );
}

#[test]
fn exhaustion_after_max_attempts_names_the_last_attempt() {
    let mut h = Harness::new(&Policy::DEFAULT);
    h.drain();
    h.finish(0, RETRY, ms(1));
    h.tick(ms(11));
    h.finish(1, RETRY, ms(12));
    h.tick(ms(32));
    let a = h.finish(2, RETRY, ms(33));
    // No sleep follows the last attempt.
    assert_eq!(a[1], failure(Cause::Exhausted, Some(2)));
    assert_eq!(a.len(), 2);
}

#[test]
fn non_retryable_and_abort_stop_after_one_attempt() {
    for (outcome, cause) in [
        (Outcome::non_retryable("bad_request"), Cause::NonRetryable),
        (Outcome::abort("context_canceled"), Cause::Abort),
    ] {
        let mut h = Harness::new(&Policy::DEFAULT);
        h.drain();
        let a = h.finish(0, outcome, ms(2));
        assert_eq!(record_of(&a[0]).outcome, outcome);
        assert_eq!(a[1], failure(cause, Some(0)));
        assert_eq!(h.gate.admitted.len(), 1);
    }
}

#[test]
fn per_attempt_timeout_cuts_a_hung_attempt_and_the_next_runs() {
    let mut p = Policy::DEFAULT;
    p.retry.timeout_per_attempt = Some(dur(30));
    let mut h = Harness::new(&p);
    assert_eq!(
        h.drain(),
        [
            launch(0, 0, Some(ms(30))),
            wait(ms(30), WaitReason::AttemptDeadline)
        ]
    );
    let a = h.tick(ms(30));
    let r = record_of(&a[0]);
    assert!(matches!(a[0], Action::Cancel(_)));
    assert_eq!(r.outcome.reason, reason::ATTEMPT_TIMEOUT);
    assert_eq!(r.outcome.kind, OutcomeKind::Retryable);
    assert!(r.cancelled);
    assert_eq!(a[1], wait(ms(40), WaitReason::Backoff));
    assert_eq!(
        h.tick(ms(40)),
        [
            launch(1, 1, Some(ms(70))),
            wait(ms(70), WaitReason::AttemptDeadline)
        ]
    );
    // A late result of the cut attempt is stale and ignored.
    assert_eq!(
        h.finish(0, Outcome::SUCCESS, ms(41)),
        [wait(ms(70), WaitReason::AttemptDeadline)]
    );
    let a = h.finish(1, Outcome::SUCCESS, ms(45));
    assert_eq!(a[1], Action::Finish(Verdict::Success(AttemptId(1))));
    assert_eq!(h.gate.ended[0], (AttemptId(0), None));
    assert!(h.gate.balanced());
}

#[test]
fn overall_timeout_bounds_the_call_backoff_included() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 10;
    p.retry.initial_backoff = dur(40);
    p.retry.max_backoff = dur(40);
    p.retry.overall_timeout = Some(dur(100));
    let mut h = Harness::new(&p);
    // The attempt's deadline is the overall one.
    assert_eq!(
        h.drain(),
        [
            launch(0, 0, Some(ms(100))),
            wait(ms(100), WaitReason::CallDeadline)
        ]
    );
    assert_eq!(
        h.finish(0, RETRY, ms(10))[1],
        wait(ms(50), WaitReason::Backoff)
    );
    assert_eq!(h.tick(ms(50))[0], launch(1, 1, Some(ms(100))));
    // 60 + 40 = 100: a backoff that ends at the deadline cannot be followed
    // by an attempt, so the call stops now instead of sleeping into it.
    let a = h.finish(1, RETRY, ms(60));
    assert_eq!(a[1], failure(Cause::BackoffBeyondDeadline, Some(1)));
}

#[test]
fn overall_deadline_cuts_the_attempt_in_flight() {
    let mut p = Policy::DEFAULT;
    p.retry.timeout_per_attempt = Some(dur(80));
    p.retry.overall_timeout = Some(dur(100));
    let mut h = Harness::new(&p);
    h.drain();
    let a = h.tick(ms(80));
    assert_eq!(record_of(&a[0]).outcome.reason, reason::ATTEMPT_TIMEOUT);
    assert_eq!(a[1], wait(ms(90), WaitReason::Backoff));
    // The second attempt's own deadline (170) is clipped to the overall one.
    assert_eq!(
        h.tick(ms(90)),
        [
            launch(1, 1, Some(ms(100))),
            wait(ms(100), WaitReason::CallDeadline)
        ]
    );
    let a = h.tick(ms(100));
    let r = record_of(&a[0]);
    assert!(r.cancelled);
    assert_eq!(r.outcome.reason, reason::OVERALL_TIMEOUT);
    assert_eq!(a[1], failure(Cause::DeadlineExceeded, Some(0)));
    assert!(h.gate.balanced());
}

#[test]
fn no_attempt_launches_at_or_after_the_overall_deadline() {
    let mut p = Policy::DEFAULT;
    p.retry.overall_timeout = Some(dur(5));
    let mut m: CallMachine = CallMachine::new(&p, Limits::DEFAULT, fastrand::Rng::with_seed(1));
    m.handle(Event::Start { now: ms(0) });
    // The driver was late: by the first poll the deadline has passed.
    m.handle(Event::Tick { now: ms(5) });
    assert_eq!(m.poll(&mut ()), failure(Cause::DeadlineExceeded, None));
    assert_eq!(m.attempts(), 0);
}

#[test]
fn retry_after_hint_replaces_the_backoff() {
    let mut h = Harness::new(&Policy::DEFAULT);
    h.drain();
    let hinted = RETRY.with_retry_after(Duration::from_secs(2));
    assert_eq!(
        h.finish(0, hinted, ms(1))[1],
        wait(ms(2001), WaitReason::Backoff)
    );
    assert_eq!(h.tick(ms(2001))[0], launch(1, 1, None));
    // Not cut to max_backoff (250 ms); recorded as the backoff.
    let a = h.finish(1, Outcome::SUCCESS, ms(2002));
    assert_eq!(record_of(&a[0]).backoff, Duration::from_secs(2));
}

#[test]
fn retry_after_hint_is_bounded_by_the_executor_maximum() {
    let limits = Limits {
        max_retry_after: Duration::from_secs(1),
        ..Limits::DEFAULT
    };
    let mut h = Harness::with(&Policy::DEFAULT, limits, 7);
    h.drain();
    let hinted = RETRY.with_retry_after(Duration::from_secs(3600));
    assert_eq!(
        h.finish(0, hinted, ms(0))[1],
        wait(ms(1000), WaitReason::Backoff)
    );
}

#[test]
fn retry_after_past_the_deadline_stops_now_with_the_last_error() {
    let mut p = Policy::DEFAULT;
    p.retry.overall_timeout = Some(Duration::from_secs(1));
    let mut h = Harness::new(&p);
    h.drain();
    let hinted = RETRY.with_retry_after(Duration::from_secs(5));
    let a = h.finish(0, hinted, ms(10));
    assert_eq!(a[1], failure(Cause::RetryAfterBeyondDeadline, Some(0)));
}

#[test]
fn cancel_before_the_first_attempt_launches_nothing() {
    let mut m: CallMachine = CallMachine::new(
        &Policy::DEFAULT,
        Limits::DEFAULT,
        fastrand::Rng::with_seed(1),
    );
    m.handle(Event::Start { now: ms(0) });
    m.handle(Event::Cancel { now: ms(0) });
    let mut gate = CountingGate::default();
    assert_eq!(m.poll(&mut gate), failure(Cause::Cancelled, None));
    assert!(gate.kinds.is_empty(), "the gate was not even consulted");
}

#[test]
fn cancel_during_backoff_finishes_at_once() {
    let mut p = Policy::DEFAULT;
    p.retry.initial_backoff = Duration::from_secs(10);
    let mut h = Harness::new(&p);
    h.drain();
    assert_eq!(
        h.finish(0, RETRY, ms(1))[1],
        wait(ms(10_001), WaitReason::Backoff)
    );
    h.m.handle(Event::Cancel { now: ms(500) });
    assert_eq!(h.drain(), [failure(Cause::Cancelled, Some(0))]);
    assert_eq!(h.m.now(), ms(500));
}

#[test]
fn cancel_with_an_attempt_in_flight_cancels_it_first() {
    let mut h = Harness::new(&Policy::DEFAULT);
    h.drain();
    h.m.handle(Event::Cancel { now: ms(7) });
    let a = h.drain();
    let r = record_of(&a[0]);
    assert!(matches!(a[0], Action::Cancel(_)));
    assert_eq!(
        (r.outcome.reason, r.end, r.cancelled),
        (reason::CANCELLED, ms(7), true)
    );
    assert_eq!(a[1], failure(Cause::Cancelled, None));
    assert!(h.gate.balanced());
}

#[test]
fn a_refused_attempt_never_launches_and_is_recorded() {
    let mut h = Harness::new(&Policy::DEFAULT);
    h.gate.deny_from = Some(1);
    h.drain();
    let a = h.finish(0, RETRY, ms(1));
    assert_eq!(a[1], wait(ms(11), WaitReason::Backoff));
    let a = h.tick(ms(11));
    let r = record_of(&a[0]);
    assert!(matches!(a[0], Action::Record(_)));
    assert!(!r.budget_allowed);
    assert_eq!(r.budget_reason, reason::BUDGET_DENIED);
    assert_eq!(r.backoff, dur(10));
    assert_eq!(a[1], failure(Cause::BudgetDenied, Some(0)));
    assert_eq!(h.m.attempts(), 1, "refused attempts do not count");
    assert!(h.gate.balanced(), "refusals are not released");
}

#[test]
fn time_never_goes_back() {
    let mut h = Harness::new(&Policy::DEFAULT);
    h.drain();
    h.finish(0, RETRY, ms(50));
    // A clock read from before the last event is taken as the last event.
    assert_eq!(h.tick(ms(10)), [wait(ms(60), WaitReason::Backoff)]);
    assert_eq!(h.m.now(), ms(50));
}

#[test]
fn waits_are_always_in_the_future() {
    // Jump straight to (and past) each wait; the machine must act, never
    // repeat a wait that is already due.
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 10;
    p.retry.timeout_per_attempt = Some(dur(3));
    p.retry.jitter = Jitter::Full;
    let mut h = Harness::new(&p);
    let mut actions = h.drain();
    for _ in 0..100 {
        match *actions.last().unwrap() {
            Action::Wait { until, .. } => {
                assert!(until > h.m.now());
                actions = h.tick(until + dur(1));
            }
            Action::Finish(v) => {
                assert_eq!(v, failure_verdict(Cause::Exhausted, 9));
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("livelock");
}

fn failure_verdict(cause: Cause, last: u16) -> Verdict {
    Verdict::Failure {
        cause,
        last: Some(AttemptId(last)),
    }
}

#[test]
fn same_seed_and_events_give_the_same_actions() {
    let run = |seed: u64| {
        let mut p = Policy::DEFAULT;
        p.retry.max_attempts = 6;
        p.retry.jitter = Jitter::Decorrelated;
        let mut h = Harness::with(&p, Limits::DEFAULT, seed);
        let mut log = h.drain();
        let mut t = 0;
        for id in 0..6 {
            t += 1;
            log.extend(h.finish(id, RETRY, ms(t)));
            if let Some(Action::Wait { until, .. }) = log.last().copied() {
                t = until.as_nanos() / 1_000_000 + 1;
                log.extend(h.tick(until));
            }
        }
        log
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43), "jitter depends on the seed");
}

#[test]
fn the_gate_hears_the_previous_failure_and_the_call_end_once() {
    let mut p = Policy::DEFAULT;
    p.retry.timeout_per_attempt = Some(dur(30));
    let mut h = Harness::new(&p);
    h.drain();
    h.tick(ms(30)); // attempt 0 cut at its deadline
    h.tick(ms(40));
    h.finish(1, RETRY, ms(45));
    h.tick(ms(65));
    h.finish(2, Outcome::SUCCESS, ms(66));
    let timeout = Outcome::retryable(reason::ATTEMPT_TIMEOUT);
    assert_eq!(h.gate.previous, [None, Some(timeout), Some(RETRY)]);
    assert_eq!(h.gate.calls_ended, [Verdict::Success(AttemptId(2))]);
    // Polling a finished machine does not end the call again.
    h.drain();
    assert_eq!(h.gate.calls_ended.len(), 1);
}

/// Refuses the initial attempt as a circuit breaker would.
struct OpenCircuit;

impl Gate for OpenCircuit {
    fn admit(&mut self, _: &AdmitRequest) -> Admission {
        Admission::circuit_open("circuit_open")
    }
}

#[test]
fn a_circuit_refusal_ends_the_call_before_any_attempt() {
    let mut m: CallMachine = CallMachine::new(
        &Policy::DEFAULT,
        Limits::DEFAULT,
        fastrand::Rng::with_seed(1),
    );
    m.handle(Event::Start { now: ms(0) });
    let r = record_of(&m.poll(&mut OpenCircuit));
    assert_eq!((r.budget_allowed, r.budget_reason), (false, "circuit_open"));
    assert_eq!(m.poll(&mut OpenCircuit), failure(Cause::CircuitOpen, None));
    assert_eq!((m.attempts(), m.refusal()), (0, Some("circuit_open")));
}

#[test]
fn a_start_after_a_later_event_never_sets_the_clock_back() {
    let mut m: CallMachine = CallMachine::new(
        &Policy::DEFAULT,
        Limits::DEFAULT,
        fastrand::Rng::with_seed(1),
    );
    m.handle(Event::Tick { now: ms(5) });
    m.handle(Event::Start { now: ms(0) });
    assert_eq!((m.now(), m.start()), (ms(5), ms(5)));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "65,535 attempts is minutes under Miri; no unsafe code on this path"
)]
fn a_call_whose_attempt_ids_run_out_ends_exhausted() {
    // Only an unnormalized policy allows this many attempts; ids are u16
    // and must stay unique (found by the fuzzer: it used to overflow).
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 70_000;
    p.retry.initial_backoff = Duration::ZERO;
    p.retry.max_backoff = Duration::ZERO;
    let mut m: CallMachine = CallMachine::new(&p, Limits::DEFAULT, fastrand::Rng::with_seed(1));
    m.handle(Event::Start { now: ms(0) });
    let mut launched = 0u32;
    let verdict = loop {
        match m.poll(&mut ()) {
            Action::Launch(info) => {
                launched += 1;
                m.handle(Event::AttemptFinished {
                    id: info.id,
                    outcome: RETRY,
                    now: ms(0),
                });
            }
            Action::Record(_) => {}
            Action::Finish(v) => break v,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(launched, u32::from(u16::MAX));
    assert!(matches!(
        verdict,
        Verdict::Failure {
            cause: Cause::Exhausted,
            ..
        }
    ));
}
