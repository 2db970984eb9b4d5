//! Hedging in the machine: several attempts of one retry group in flight,
//! with explicit instants.

use core::time::Duration;

use super::{dur, failure, launch, ms, record_of, wait, Harness, RETRY};
use crate::gate::{Admission, AdmitRequest};
use crate::machine::{Action, Cause, Verdict, WaitReason};
use crate::outcome::{reason, Outcome};
use crate::policy::Policy;
use crate::record::{AttemptId, AttemptInfo, AttemptKind};
use crate::time::Instant;
use crate::CallMachine;

fn hedged(max_hedges: u32, delay_ms: u64) -> Policy {
    let mut p = Policy::DEFAULT;
    p.hedge.enabled = true;
    p.hedge.max_hedges = max_hedges;
    p.hedge.hedge_delay = dur(delay_ms);
    p
}

fn hedge(id: u16, retry_index: u32, hedge_index: u32) -> Action {
    Action::Launch(AttemptInfo {
        id: AttemptId(id),
        retry_index,
        hedge_index,
        is_hedge: true,
        deadline: None,
    })
}

#[test]
fn fixed_delay_hedges_and_the_first_success_wins() {
    let mut h = Harness::new(&hedged(2, 10));
    assert_eq!(
        h.drain(),
        [launch(0, 0, None), wait(ms(10), WaitReason::HedgeDelay)]
    );
    assert_eq!(
        h.tick(ms(10)),
        [hedge(1, 0, 1), wait(ms(20), WaitReason::HedgeDelay)]
    );
    assert_eq!(h.tick(ms(20)), [hedge(2, 0, 2), Action::AwaitAttempts]);
    let a = h.finish(1, Outcome::SUCCESS, ms(25));
    assert_eq!(record_of(&a[0]).info.id, AttemptId(1));
    for (i, loser) in [0u16, 2].into_iter().enumerate() {
        let r = record_of(&a[1 + i]);
        assert!(matches!(a[1 + i], Action::Cancel(_)));
        assert_eq!(
            (r.info.id, r.outcome.reason, r.cancelled),
            (AttemptId(loser), reason::HEDGE_LOSER, true)
        );
        assert_eq!(r.backoff, Duration::ZERO);
    }
    assert_eq!(a[3], Action::Finish(Verdict::Success(AttemptId(1))));
    assert_eq!(
        h.gate.kinds,
        [AttemptKind::Initial, AttemptKind::Hedge, AttemptKind::Hedge]
    );
    assert!(h.gate.balanced());
    assert_eq!(h.m.attempts(), 3);
}

#[test]
fn a_fast_retryable_failure_does_not_end_the_group_while_a_hedge_runs() {
    let mut h = Harness::new(&hedged(1, 10));
    h.drain();
    h.tick(ms(10)); // hedge 1 launched
                    // The primary fails: the hedge may still succeed, so no backoff yet.
    assert_eq!(h.finish(0, RETRY, ms(12))[1], Action::AwaitAttempts);
    let a = h.finish(1, RETRY, ms(15));
    // Every attempt of the group failed: back off, then the next group.
    assert_eq!(a[1], wait(ms(25), WaitReason::Backoff));
    assert_eq!(h.tick(ms(25))[0], launch(2, 1, None));
}

#[test]
fn without_cancel_on_first_terminal_a_non_retryable_waits_and_is_never_masked() {
    let mut h = Harness::new(&hedged(1, 10));
    h.drain();
    h.tick(ms(10));
    let bad = Outcome::non_retryable("invalid");
    assert_eq!(h.finish(0, bad, ms(11))[1], Action::AwaitAttempts);
    // The hedge's later retryable failure does not mask the non-retryable.
    let a = h.finish(1, RETRY, ms(12));
    assert_eq!(a[1], failure(Cause::NonRetryable, Some(0)));

    // And a hedge that succeeds after it wins.
    let mut h = Harness::new(&hedged(1, 10));
    h.drain();
    h.tick(ms(10));
    h.finish(0, bad, ms(11));
    let a = h.finish(1, Outcome::SUCCESS, ms(12));
    assert_eq!(a[1], Action::Finish(Verdict::Success(AttemptId(1))));
}

#[test]
fn with_cancel_on_first_terminal_a_non_retryable_ends_the_call() {
    let mut p = hedged(1, 10);
    p.hedge.cancel_on_first_terminal = true;
    let mut h = Harness::new(&p);
    h.drain();
    h.tick(ms(10));
    let a = h.finish(1, Outcome::abort("context_canceled"), ms(11));
    let r = record_of(&a[1]);
    assert!(matches!(a[1], Action::Cancel(_)));
    assert_eq!(r.info.id, AttemptId(0));
    assert_eq!(a[2], failure(Cause::Abort, Some(1)));
    assert!(h.gate.balanced());
}

/// Refuses hedges, allows the rest.
#[derive(Default)]
struct NoHedges(u32);

impl crate::Gate for NoHedges {
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        if request.attempt.kind() == AttemptKind::Hedge {
            self.0 += 1;
            Admission::DENIED
        } else {
            Admission::ALLOWED
        }
    }
}

#[test]
fn a_refused_hedge_is_recorded_and_the_primary_keeps_running() {
    let mut m: CallMachine = CallMachine::new(
        &hedged(3, 10),
        Default::default(),
        fastrand::Rng::with_seed(1),
    );
    let mut gate = NoHedges::default();
    m.handle(crate::Event::Start { now: ms(0) });
    assert_eq!(m.poll(&mut gate), launch(0, 0, None));
    assert_eq!(m.poll(&mut gate), wait(ms(10), WaitReason::HedgeDelay));
    m.handle(crate::Event::Tick { now: ms(10) });
    let r = record_of(&m.poll(&mut gate));
    assert!(r.info.is_hedge && !r.budget_allowed);
    assert_eq!(r.budget_reason, reason::BUDGET_DENIED);
    // No further hedge in this group: the primary's result decides.
    assert_eq!(m.poll(&mut gate), Action::AwaitAttempts);
    assert_eq!(gate.0, 1);
    m.handle(crate::Event::AttemptFinished {
        id: AttemptId(0),
        outcome: Outcome::SUCCESS,
        now: ms(30),
    });
    assert!(matches!(m.poll(&mut gate), Action::Record(_)));
    assert_eq!(
        m.poll(&mut gate),
        Action::Finish(Verdict::Success(AttemptId(0)))
    );
    assert_eq!(m.attempts(), 1);
}

#[test]
fn hedges_are_bounded_by_the_slots_and_the_policy() {
    // One slot: no room for a hedge, whatever the policy says.
    let mut m: CallMachine<1> = CallMachine::new(
        &hedged(3, 10),
        Default::default(),
        fastrand::Rng::with_seed(1),
    );
    m.handle(crate::Event::Start { now: ms(0) });
    assert_eq!(m.poll(&mut ()), launch(0, 0, None));
    assert_eq!(m.poll(&mut ()), Action::AwaitAttempts);
    // max_hedges 1: one hedge, then nothing more to wait for.
    let mut h = Harness::new(&hedged(1, 10));
    h.drain();
    assert_eq!(h.tick(ms(10)), [hedge(1, 0, 1), Action::AwaitAttempts]);
    assert_eq!(h.tick(ms(1000)), [Action::AwaitAttempts]);
}

#[test]
fn the_overall_deadline_cuts_every_attempt_in_flight() {
    let mut p = hedged(1, 10);
    p.retry.overall_timeout = Some(dur(50));
    let mut h = Harness::new(&p);
    h.drain();
    h.tick(ms(10));
    let a = h.tick(ms(50));
    let ids: std::vec::Vec<_> = a[..2].iter().map(|x| record_of(x).info.id).collect();
    assert_eq!(ids, [AttemptId(0), AttemptId(1)]);
    assert!(a[..2]
        .iter()
        .all(|x| record_of(x).outcome.reason == reason::OVERALL_TIMEOUT));
    assert_eq!(a[2], failure(Cause::DeadlineExceeded, None));
    assert!(h.gate.balanced());
    let _ = Instant::ZERO;
}
