//! [`CallMachine::restart_from`]: a machine run through a call and
//! restarted is the fresh machine it restarts from, field for field and
//! action for action.

use core::time::Duration;
use std::format;
use std::vec::Vec;

use super::CountingGate;
use crate::machine::{Action, CallMachine, Event, Limits};
use crate::outcome::{reason, Outcome};
use crate::policy::{Jitter, Policy};
use crate::time::Instant;

fn policy(rng: &mut fastrand::Rng) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = rng.u32(1..6);
    p.retry.initial_backoff = Duration::from_micros(rng.u64(0..20_000));
    p.retry.max_backoff = Duration::from_micros(rng.u64(0..80_000));
    p.retry.jitter = [Jitter::None, Jitter::Full, Jitter::Decorrelated][rng.usize(0..3)];
    p.retry.timeout_per_attempt = rng.bool().then(|| Duration::from_millis(rng.u64(1..40)));
    p.retry.overall_timeout = rng.bool().then(|| Duration::from_millis(rng.u64(1..200)));
    p.hedge.enabled = rng.bool();
    p.hedge.max_hedges = rng.u32(0..4);
    p.hedge.hedge_delay = Duration::from_millis(rng.u64(0..20));
    p.normalize().map(|n| n.policy).unwrap_or_default()
}

/// Drives `m` from its start at `start` with events drawn from `rng`
/// (attempts end after a draw, fail half the time, timers fire when due),
/// at most 200 steps; the actions it took.
fn run<const N: usize>(
    m: &mut CallMachine<N>,
    start: Instant,
    rng: &mut fastrand::Rng,
) -> Vec<Action> {
    let mut gate = CountingGate::default();
    let mut actions = Vec::new();
    let mut now = start;
    let mut live = Vec::new();
    let mut timer = None;
    m.handle(Event::Start { now });
    for _ in 0..200 {
        let action = m.poll(&mut gate);
        actions.push(action);
        match action {
            Action::Launch(info) => {
                live.push((info.id, now + Duration::from_millis(rng.u64(1..30))))
            }
            Action::Cancel(record) => live.retain(|l| l.0 != record.info.id),
            Action::Record(_) => {}
            Action::Finish(_) => break,
            Action::Wait { until, .. } => timer = Some(until),
            Action::AwaitAttempts => timer = None,
        }
        if matches!(action, Action::Wait { .. } | Action::AwaitAttempts) {
            let first = live.iter().copied().min_by_key(|l| l.1);
            match (first, timer) {
                (Some((id, end)), t) if t.is_none_or(|t| end < t) => {
                    live.retain(|l| l.0 != id);
                    now = end;
                    let outcome = if rng.bool() {
                        Outcome::SUCCESS
                    } else {
                        Outcome::retryable(reason::RETRYABLE_ERROR)
                    };
                    m.handle(Event::AttemptFinished { id, outcome, now });
                }
                (_, Some(t)) => {
                    now = t;
                    m.handle(Event::Tick { now });
                }
                _ => break,
            }
        }
    }
    actions
}

fn restarts_as_fresh<const N: usize>(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let p = policy(&mut rng);
    let fresh: CallMachine<N> = CallMachine::new(&p, Limits::DEFAULT, fastrand::Rng::with_seed(0));
    let mut m = fresh.clone();
    m.set_rng(fastrand::Rng::with_seed(seed));
    // A first call, then four more in the same machine.
    let _ = run(&mut m, Instant::from_millis(5), &mut rng.clone());
    for call in 1..5 {
        let call_rng = fastrand::Rng::with_seed(seed ^ call);
        // Calls 1 and 3 restart from the fresh machine, 2 and 4 keep
        // their own settings (`restart`): the same machine either way.
        if call % 2 == 1 {
            m.restart_from(&fresh, call_rng.clone());
        } else {
            m.restart(call_rng.clone());
        }
        let mut want = fresh.clone();
        want.set_rng(call_rng);
        assert_eq!(
            format!("{m:?}"),
            format!("{want:?}"),
            "seed {seed}, call {call}"
        );
        let start = Instant::from_millis(1_000 * call);
        let got = run(&mut m, start, &mut rng.clone());
        assert_eq!(
            got,
            run(&mut want, start, &mut rng),
            "seed {seed}, call {call}"
        );
    }
}

#[test]
fn a_restarted_machine_is_the_fresh_one() {
    // Fewer seeds under Miri, which runs every step of the machine
    // thousands of times slower.
    for seed in 0..if cfg!(miri) { 4 } else { 300 } {
        restarts_as_fresh::<1>(seed);
        restarts_as_fresh::<2>(seed);
        restarts_as_fresh::<4>(seed);
    }
}

/// [`CallPlan::draws`](crate::machine::CallPlan::draws): a machine whose
/// plan says it does not draw takes the same actions whatever its random
/// source (the simulator then restarts it without a seed of its own), and
/// leaves that source as it was; under a plan that draws, a jittered
/// backoff does change with the source.
#[test]
fn a_plan_that_does_not_draw_never_reads_the_random_source() {
    // Under Miri, which runs every step of the machine thousands of
    // times slower, only until each kind of plan has been seen a few
    // times.
    let want = if cfg!(miri) { 4 } else { 51 };
    let (mut silent, mut drawn) = (0, 0);
    for seed in 0..600 {
        if cfg!(miri) && silent >= want && drawn >= want {
            break;
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let p = policy(&mut rng);
        let plan = crate::machine::CallPlan::new(&p);
        assert_eq!(
            plan.draws(),
            p.retry.max_attempts > 1
                && !(p.retry.initial_backoff.is_zero() && p.retry.max_backoff.is_zero()),
            "seed {seed}"
        );
        let start = Instant::from_millis(5);
        let mut a: CallMachine<2> =
            CallMachine::with_plan(&plan, Limits::DEFAULT, fastrand::Rng::with_seed(seed));
        let mut b: CallMachine<2> =
            CallMachine::with_plan(&plan, Limits::DEFAULT, fastrand::Rng::with_seed(!seed));
        let got = run(&mut a, start, &mut rng.clone());
        let other = run(&mut b, start, &mut rng.clone());
        if plan.draws() {
            drawn += 1;
            continue;
        }
        silent += 1;
        assert_eq!(got, other, "seed {seed}");
        // The source is as it was made.
        let source = format!("{:?}", fastrand::Rng::with_seed(seed));
        assert!(format!("{a:?}").contains(&source), "seed {seed}: {a:?}");
    }
    assert!(silent >= want && drawn >= want, "{silent} {drawn}");
}
