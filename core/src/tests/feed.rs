//! [`CallMachine::feed`] against [`CallMachine::handle`] then
//! [`CallMachine::poll`]: the same actions, the same gate calls, in the
//! same order, over seeded random runs (retries, hedges, deadlines,
//! refusals, cancels).

use core::time::Duration;
use std::vec::Vec;

use super::random::random_policy;
use super::CountingGate;
use crate::machine::{Action, ActionSink, CallMachine, Event, Limits};
use crate::outcome::{reason, Outcome};
use crate::record::{AttemptId, AttemptInfo, AttemptRecord};
use crate::time::Instant;

/// An [`ActionSink`] that writes down what it is told.
struct Collect<'g> {
    gate: &'g mut CountingGate,
    actions: Vec<Action>,
    hears: bool,
}

impl ActionSink for Collect<'_> {
    type Gate = CountingGate;
    fn gate(&mut self) -> &mut CountingGate {
        self.gate
    }
    fn launch(&mut self, info: AttemptInfo) {
        self.actions.push(Action::Launch(info));
    }
    fn cancel(&mut self, record: &AttemptRecord) {
        self.actions.push(Action::Cancel(*record));
    }
    fn record(&mut self, record: &AttemptRecord) {
        // A sink that hears no records still gets a refused attempt's.
        assert!(
            self.hears || !record.budget_allowed,
            "an attempt's end for a sink that hears none: {record:?}"
        );
        self.actions.push(Action::Record(*record));
    }
    fn hears_records(&self) -> bool {
        self.hears
    }
}

/// `event` fed by `handle`, then `poll` until the machine waits or
/// finishes: every action, the last one included.
fn by_poll(m: &mut CallMachine, gate: &mut CountingGate, event: Event) -> Vec<Action> {
    m.handle(event);
    let mut actions = Vec::new();
    for _ in 0..64 {
        let action = m.poll(gate);
        actions.push(action);
        if matches!(
            action,
            Action::Wait { .. } | Action::AwaitAttempts | Action::Finish(_)
        ) {
            return actions;
        }
    }
    panic!("poll never stopped: {actions:?}");
}

/// `event` fed by `feed`: every action, the last one included.
fn by_feed(m: &mut CallMachine, gate: &mut CountingGate, event: Event, hears: bool) -> Vec<Action> {
    let mut sink = Collect {
        gate,
        actions: Vec::new(),
        hears,
    };
    let last = m.feed(event, &mut sink);
    assert!(
        matches!(
            last,
            Action::Wait { .. } | Action::AwaitAttempts | Action::Finish(_)
        ),
        "feed stopped at {last:?}"
    );
    sink.actions.push(last);
    sink.actions
}

fn same_gate(a: &CountingGate, b: &CountingGate, run: u64) {
    assert_eq!(a.admitted, b.admitted, "run {run}: admissions");
    assert_eq!(a.ended, b.ended, "run {run}: attempt ends");
    assert_eq!(a.calls_ended, b.calls_ended, "run {run}: call ends");
    assert_eq!(a.previous, b.previous, "run {run}: previous outcomes");
    assert_eq!(a.kinds, b.kinds, "run {run}: kinds");
}

#[test]
fn feed_does_what_handle_then_poll_does() {
    let runs: u64 = if cfg!(miri) { 50 } else { 2_000 };
    let mut rng = fastrand::Rng::with_seed(0xfeed);
    let (mut hedges, mut records, mut finished) = (0u64, 0u64, 0u64);
    for run in 0..runs {
        let policy = random_policy(&mut rng);
        let deny_from = (rng.u8(0..8) == 0).then(|| rng.u32(0..4));
        let gate = || CountingGate {
            deny_from,
            ..Default::default()
        };
        let machine = || CallMachine::new(&policy, Limits::DEFAULT, fastrand::Rng::with_seed(run));
        // By poll; by feed, hearing records; by feed, hearing none.
        let (mut a, mut b, mut c) = (machine(), machine(), machine());
        let (mut ga, mut gb, mut gc) = (gate(), gate(), gate());
        let mut now = Instant::ZERO;
        let mut event = Event::Start { now };
        let mut in_flight: Vec<AttemptId> = Vec::new();
        for _step in 0..100 {
            let want = by_poll(&mut a, &mut ga, event);
            assert_eq!(by_feed(&mut b, &mut gb, event, true), want, "run {run}");
            // Without the records of admitted attempts' ends.
            let unheard: Vec<Action> = want
                .iter()
                .copied()
                .filter(|a| !matches!(a, Action::Record(r) if r.budget_allowed))
                .collect();
            assert_eq!(by_feed(&mut c, &mut gc, event, false), unheard, "run {run}");
            same_gate(&ga, &gb, run);
            same_gate(&ga, &gc, run);
            for action in &want {
                match action {
                    Action::Launch(info) => {
                        hedges += u64::from(info.is_hedge);
                        in_flight.push(info.id);
                    }
                    Action::Cancel(r) => in_flight.retain(|id| *id != r.info.id),
                    Action::Record(_) => records += 1,
                    _ => {}
                }
            }
            if matches!(want.last(), Some(Action::Finish(_))) {
                finished += 1;
                break;
            }
            now = now + Duration::from_micros(rng.u64(0..40_000));
            event = match rng.u8(0..12) {
                0 => Event::Cancel { now },
                1..=7 if !in_flight.is_empty() => {
                    let id = in_flight.remove(rng.usize(0..in_flight.len()));
                    let outcome = match rng.u8(0..10) {
                        0..=3 => Outcome::SUCCESS,
                        4..=7 => Outcome::retryable(reason::RETRYABLE_ERROR),
                        8 => Outcome::non_retryable(reason::NON_RETRYABLE_ERROR),
                        _ => Outcome::abort(reason::ABORT),
                    };
                    Event::AttemptFinished { id, outcome, now }
                }
                _ => Event::Tick { now },
            };
        }
    }
    // The runs reach hedges, records and finishes, not only first attempts.
    assert!(hedges > runs / 10, "only {hedges} hedges");
    assert!(records > runs, "only {records} records");
    assert!(finished > runs / 2, "only {finished} finished");
}

/// An event `handle`d and not polled yet has its actions carried out
/// first by the next `feed`, as `poll` would have handed them out.
#[test]
fn feed_carries_out_an_event_handled_before() {
    let mut policy = crate::policy::Policy::DEFAULT;
    policy.retry.max_attempts = 3;
    policy.retry.initial_backoff = Duration::ZERO;
    policy.retry.jitter = crate::policy::Jitter::None;
    let policy = policy.normalize().map(|n| n.policy).unwrap_or_default();
    let machine = || CallMachine::new(&policy, Limits::DEFAULT, fastrand::Rng::with_seed(1));
    let (mut a, mut b) = (machine(), machine());
    let (mut ga, mut gb) = (CountingGate::default(), CountingGate::default());
    let start = Event::Start { now: Instant::ZERO };
    assert_eq!(
        by_poll(&mut a, &mut ga, start),
        by_feed(&mut b, &mut gb, start, true)
    );
    let now = Instant::from_millis(5);
    let failed = Event::AttemptFinished {
        id: AttemptId(0),
        outcome: Outcome::retryable(reason::RETRYABLE_ERROR),
        now,
    };
    // By poll: the failure, then a tick when the backoff ends.
    let mut want = by_poll(&mut a, &mut ga, failed);
    let Some(Action::Wait { until, .. }) = want.pop() else {
        panic!("no backoff: {want:?}");
    };
    want.extend(by_poll(&mut a, &mut ga, Event::Tick { now: until }));
    // By feed: the failure handled and not polled, then the tick fed.
    b.handle(failed);
    let got = by_feed(&mut b, &mut gb, Event::Tick { now: until }, true);
    assert_eq!(got, want);
    assert!(matches!(got[0], Action::Record(r) if r.info.id == AttemptId(0)));
    assert!(
        got.iter()
            .any(|a| matches!(a, Action::Launch(i) if i.id == AttemptId(1))),
        "{got:?}"
    );
    same_gate(&ga, &gb, 0);
}
