//! Seeded random event sequences against the machine's invariants, checked
//! after every step.

use core::time::Duration;
use std::vec::Vec;

use super::CountingGate;
use crate::machine::{Action, CallMachine, Cause, Event, Limits, Verdict};
use crate::outcome::{reason, Outcome};
use crate::policy::{Jitter, Policy};
use crate::record::AttemptId;
use crate::time::Instant;

pub(super) fn random_policy(rng: &mut fastrand::Rng) -> Policy {
    let mut p = Policy::DEFAULT;
    let r = &mut p.retry;
    r.max_attempts = rng.u32(0..14);
    r.initial_backoff = Duration::from_micros(rng.u64(0..50_000));
    r.max_backoff = Duration::from_micros(rng.u64(0..200_000));
    r.backoff_multiplier = rng.f64() * 12.0;
    r.jitter = [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ][rng.usize(0..4)];
    r.timeout_per_attempt = rng
        .bool()
        .then(|| Duration::from_micros(rng.u64(0..60_000)));
    r.overall_timeout = rng
        .bool()
        .then(|| Duration::from_micros(rng.u64(0..300_000)));
    p.hedge.enabled = rng.bool();
    p.hedge.max_hedges = rng.u32(0..5);
    p.hedge.hedge_delay = Duration::from_micros(rng.u64(0..30_000));
    p.hedge.cancel_on_first_terminal = rng.bool();
    p.normalize().map(|n| n.policy).unwrap_or_default()
}

/// Seeded runs; fewer under Miri, which interprets every step.
const RUNS: u64 = if cfg!(miri) { 100 } else { 5_000 };

#[test]
fn invariants_hold_over_random_runs() {
    let mut rng = fastrand::Rng::with_seed(0xdec1de);
    let mut total_hedges = 0u32;
    for run in 0..RUNS {
        let policy = random_policy(&mut rng);
        let mut gate = CountingGate {
            deny_from: (rng.u8(0..8) == 0).then(|| rng.u32(0..4)),
            ..Default::default()
        };
        let mut m: CallMachine =
            CallMachine::new(&policy, Limits::DEFAULT, fastrand::Rng::with_seed(run));
        let mut now = Instant::ZERO;
        m.handle(Event::Start { now });
        let deadline = policy.retry.overall_timeout.map(|d| now + d);
        let mut in_flight: Vec<AttemptId> = Vec::new();
        let mut launched = 0u32;
        let mut hedges_in_group = [0u32; 16];
        let mut terminal_seen = false;
        let mut finished = None;
        let mut last_failed = None;
        for _step in 0..200 {
            let action = m.poll(&mut gate);
            if let Some(v) = finished {
                assert_eq!(action, Action::Finish(v), "nothing after finish");
                break;
            }
            match action {
                Action::Launch(info) => {
                    if info.is_hedge {
                        let g = &mut hedges_in_group[info.retry_index as usize];
                        *g += 1;
                        total_hedges += 1;
                        assert!(*g <= policy.hedge.max_hedges, "run {run}: too many hedges");
                        assert!(policy.hedge.enabled, "run {run}: hedge with hedging off");
                        assert_eq!(info.hedge_index, *g);
                        assert!(!in_flight.is_empty(), "run {run}: a hedge with no primary");
                    } else {
                        assert!(in_flight.is_empty(), "run {run}: a primary beside others");
                        launched += 1;
                    }
                    assert!(in_flight.len() < 4, "run {run}: more attempts than slots");
                    assert!(
                        launched <= policy.retry.max_attempts,
                        "run {run}: too many attempts"
                    );
                    assert!(
                        deadline.is_none_or(|d| now < d),
                        "run {run}: launch past deadline"
                    );
                    if let (Some(a), Some(d)) = (info.deadline, deadline) {
                        assert!(a <= d, "per-attempt deadline beyond overall");
                    }
                    in_flight.push(info.id);
                    continue;
                }
                Action::Cancel(r) => {
                    let i = in_flight.iter().position(|id| *id == r.info.id);
                    assert!(i.is_some(), "run {run}: cancel of an attempt not in flight");
                    in_flight.remove(i.unwrap_or_default());
                    if r.outcome.reason == reason::ATTEMPT_TIMEOUT {
                        last_failed = Some(r.info.id);
                    }
                    continue;
                }
                Action::Record(_) => continue,
                Action::Finish(v) => {
                    assert!(
                        in_flight.is_empty(),
                        "run {run}: finished with attempts in flight"
                    );
                    if let Verdict::Failure { last, cause } = v {
                        // With hedges, a held non-retryable outcome is the
                        // group's result even if another failed later.
                        if !(terminal_seen && matches!(cause, Cause::NonRetryable | Cause::Abort)) {
                            assert_eq!(last, last_failed, "run {run}: {cause:?}");
                        }
                        if cause == Cause::Exhausted {
                            assert_eq!(launched, policy.retry.max_attempts);
                        }
                    }
                    finished = Some(v);
                    continue;
                }
                Action::Wait { until, .. } => assert!(until > now, "run {run}: wait in the past"),
                Action::AwaitAttempts => assert!(!in_flight.is_empty(), "run {run}: idle hang"),
            }
            // Something happens: an attempt ends, time passes, or the
            // caller gives up.
            now = now + Duration::from_micros(rng.u64(0..40_000));
            match rng.u8(0..10) {
                0 => m.handle(Event::Cancel { now }),
                1..=6 if !in_flight.is_empty() => {
                    let id = in_flight.remove(0);
                    let outcome = match rng.u8(0..10) {
                        0..=3 => Outcome::SUCCESS,
                        4..=7 => Outcome::retryable(reason::RETRYABLE_ERROR),
                        8 => Outcome::non_retryable(reason::NON_RETRYABLE_ERROR),
                        _ => Outcome::abort(reason::ABORT),
                    };
                    if !outcome.is_success() {
                        last_failed = Some(id);
                    }
                    terminal_seen |= matches!(
                        outcome.kind,
                        crate::OutcomeKind::NonRetryable | crate::OutcomeKind::Abort
                    );
                    m.handle(Event::AttemptFinished { id, outcome, now });
                }
                _ => m.handle(Event::Tick { now }),
            }
        }
        assert!(
            finished.is_some() || m.is_finished() || !in_flight.is_empty() || deadline.is_none()
        );
        assert!(gate.ended.len() <= gate.admitted.len());
        if finished.is_some() {
            assert!(
                gate.balanced(),
                "run {run}: an admitted attempt was not released once"
            );
        }
    }
    // The runs do exercise hedging, not just retries.
    assert!(
        u64::from(total_hedges) > RUNS / 10,
        "only {total_hedges} hedges in all runs"
    );
}
