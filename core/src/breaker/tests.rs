//! Tests of `breaker/mod.rs`.

use super::*;
use crate::gate::Admission;
use crate::record::AttemptId;
use crate::verdict::{Cause, Verdict};
use core::time::Duration;

const fn ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

fn policy() -> CircuitPolicy {
    CircuitPolicy {
        enabled: true,
        threshold: 3,
        cooldown: Duration::from_secs(1),
        ..CircuitPolicy::DEFAULT
    }
}

fn call(b: &mut CircuitBreaker, result: CallResult, now: Instant) -> Option<CircuitState> {
    let permit = b.admit(now).expect("admitted");
    b.record(permit, result, now)
}

/// A breaker opened at `t` (cooldown 1 s).
fn opened(p: CircuitPolicy, t: Instant) -> CircuitBreaker {
    let mut b = CircuitBreaker::new(p);
    while b.state(t) == CircuitState::Closed {
        call(&mut b, CallResult::Failure, t);
    }
    assert_eq!(
        b.state(t),
        CircuitState::Open {
            until: t + b.policy().cooldown
        }
    );
    b
}

#[test]
fn disabled_breaker_admits_everything_and_counts_nothing() {
    let mut b = CircuitBreaker::new(CircuitPolicy::DEFAULT);
    for i in 0..100 {
        let p = b.admit(ms(i)).unwrap();
        assert!(p.is_bypass() && !p.is_probe());
        assert_eq!(b.record(p, CallResult::Failure, ms(i)), None);
    }
    assert_eq!(b.state(ms(100)), CircuitState::Closed);
    assert_eq!(b.consecutive_failures(), 0);
}

#[test]
fn open_until_holds_past_the_cooldown_until_an_admission() {
    let mut b = CircuitBreaker::new(policy());
    assert_eq!(b.open_until(), None);
    let mut b2 = opened(policy(), ms(0));
    assert_eq!(b2.open_until(), Some(ms(1000)));
    // The cooldown is over, but no call came: still open inside.
    assert_eq!(b2.state(ms(2000)), CircuitState::HalfOpen);
    assert_eq!(b2.open_until(), Some(ms(1000)));
    let probe = b2.admit(ms(2000)).unwrap();
    assert!(probe.is_probe());
    assert_eq!(b2.open_until(), None);
    assert_eq!(call(&mut b, CallResult::Success, ms(0)), None);
    assert_eq!(b.open_until(), None);
}

#[test]
fn consecutive_failures_open_at_the_threshold() {
    let mut b = CircuitBreaker::new(policy());
    assert_eq!(call(&mut b, CallResult::Failure, ms(0)), None);
    assert_eq!(call(&mut b, CallResult::Failure, ms(1)), None);
    // A success resets the streak.
    assert_eq!(call(&mut b, CallResult::Success, ms(2)), None);
    assert_eq!(b.consecutive_failures(), 0);
    assert_eq!(call(&mut b, CallResult::Failure, ms(3)), None);
    assert_eq!(call(&mut b, CallResult::Failure, ms(4)), None);
    assert_eq!(b.consecutive_failures(), 2);
    let until = ms(1005);
    assert_eq!(
        call(&mut b, CallResult::Failure, ms(5)),
        Some(CircuitState::Open { until })
    );
    assert_eq!(b.state(ms(5)), CircuitState::Open { until });
    let r = b.admit(ms(6)).unwrap_err();
    assert_eq!(r.reason, CIRCUIT_OPEN);
    assert_eq!(r.state, CircuitState::Open { until });
    assert_eq!(r.admission(), Admission::circuit_open("circuit_open"));
    assert_eq!(
        std::format!("{r}"),
        "circuit breaker refused the call: circuit_open (state open)"
    );
}

#[test]
fn neutral_results_neither_count_nor_reset() {
    let mut b = CircuitBreaker::new(policy());
    call(&mut b, CallResult::Failure, ms(0));
    call(&mut b, CallResult::Failure, ms(1));
    call(&mut b, CallResult::Neutral, ms(2));
    assert_eq!(b.consecutive_failures(), 2);
    assert_eq!(b.window_counts(ms(2)).calls, 2);
    assert!(call(&mut b, CallResult::Failure, ms(3)).is_some());
}

#[test]
fn cooldown_then_half_open() {
    let mut b = opened(policy(), ms(0));
    assert_eq!(b.state(ms(999)), CircuitState::Open { until: ms(1000) });
    assert!(b.admit(ms(999)).is_err());
    // Reported half-open as soon as the cooldown is over ...
    assert_eq!(b.state(ms(1000)), CircuitState::HalfOpen);
    // ... and the next call is a probe.
    let probe = b.admit(ms(1000)).unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.probes_in_flight(), 1);
    assert_eq!(b.state(ms(1000)), CircuitState::HalfOpen);
}

#[test]
fn half_open_refuses_beyond_the_probe_limit() {
    let mut b = opened(
        CircuitPolicy {
            half_open_max_probes: 2,
            ..policy()
        },
        ms(0),
    );
    let p1 = b.admit(ms(1000)).unwrap();
    let p2 = b.admit(ms(1001)).unwrap();
    assert!(p1.is_probe() && p2.is_probe());
    let r = b.admit(ms(1002)).unwrap_err();
    assert_eq!(r.reason, HALF_OPEN_PROBE_LIMIT);
    assert_eq!(r.reason, "circuit_half_open_probe_limit");
    assert_eq!(r.state, CircuitState::HalfOpen);
    assert_eq!(
        r.admission(),
        Admission::circuit_open("circuit_half_open_probe_limit")
    );
    // A slot freed by a result is taken by the next call.
    assert_eq!(b.record(p1, CallResult::Neutral, ms(1003)), None);
    assert!(b.admit(ms(1004)).unwrap().is_probe());
    assert!(b.admit(ms(1005)).is_err());
}

#[test]
fn a_probe_success_closes() {
    let mut b = opened(policy(), ms(0));
    let probe = b.admit(ms(1500)).unwrap();
    assert_eq!(
        b.record(probe, CallResult::Success, ms(1600)),
        Some(CircuitState::Closed)
    );
    assert_eq!(b.state(ms(1600)), CircuitState::Closed);
    let p = b.admit(ms(1601)).unwrap();
    assert!(!p.is_probe() && !p.is_bypass());
    // Counting starts afresh.
    assert_eq!(b.consecutive_failures(), 0);
    assert_eq!(b.window_counts(ms(1601)), WindowCounts::default());
}

#[test]
fn closing_can_take_several_probe_successes() {
    let mut b = opened(
        CircuitPolicy {
            half_open_successes: 2,
            ..policy()
        },
        ms(0),
    );
    let p = b.admit(ms(1000)).unwrap();
    assert_eq!(b.record(p, CallResult::Success, ms(1001)), None);
    assert_eq!(b.state(ms(1001)), CircuitState::HalfOpen);
    let p = b.admit(ms(1002)).unwrap();
    assert!(p.is_probe());
    assert_eq!(
        b.record(p, CallResult::Success, ms(1003)),
        Some(CircuitState::Closed)
    );
}

#[test]
fn a_probe_failure_reopens_with_a_fresh_cooldown() {
    let mut b = opened(policy(), ms(0));
    let probe = b.admit(ms(1500)).unwrap();
    assert_eq!(
        b.record(probe, CallResult::Failure, ms(2000)),
        Some(CircuitState::Open { until: ms(3000) })
    );
    let r = b.admit(ms(2999)).unwrap_err();
    assert_eq!(r.reason, CIRCUIT_OPEN);
    assert_eq!(r.state, CircuitState::Open { until: ms(3000) });
    assert!(b.admit(ms(3000)).unwrap().is_probe());
}

/// The Go original's defect: an aborted probe kept its slot and the
/// circuit stayed half-open forever.
#[test]
fn a_neutral_probe_frees_its_slot() {
    let mut b = opened(policy(), ms(0));
    for i in 0..5 {
        let t = ms(1000 + i * 10);
        let probe = b.admit(t).unwrap();
        assert!(probe.is_probe());
        assert!(b.admit(t).is_err(), "one probe at a time");
        assert_eq!(
            b.record(probe, CallResult::Neutral, t + Duration::from_millis(5)),
            None
        );
        assert_eq!(b.state(t), CircuitState::HalfOpen);
        assert_eq!(b.probes_in_flight(), 0);
    }
    // The next call is admitted as a probe, and can close the circuit.
    let probe = b.admit(ms(2000)).unwrap();
    assert!(probe.is_probe());
    b.record(probe, CallResult::Success, ms(2001));
    assert_eq!(b.state(ms(2001)), CircuitState::Closed);
}

#[test]
fn ratio_opens_only_with_the_minimum_of_calls() {
    let p = CircuitPolicy {
        threshold: 100,
        failure_ratio_permille: 500,
        min_calls: 4,
        window: Duration::from_secs(10),
        ..policy()
    };
    let mut b = CircuitBreaker::new(p.clone());
    // Three failures: 100 %, but below the minimum of calls.
    for i in 0..3 {
        assert_eq!(call(&mut b, CallResult::Failure, ms(i)), None);
    }
    assert_eq!(
        b.window_counts(ms(3)),
        WindowCounts {
            calls: 3,
            failures: 3
        }
    );
    // The fourth call reaches the minimum at 75 %.
    assert!(call(&mut b, CallResult::Failure, ms(3)).is_some());

    // Below the ratio: stays closed; at the ratio: opens.
    let mut b = CircuitBreaker::new(p);
    call(&mut b, CallResult::Success, ms(0));
    call(&mut b, CallResult::Success, ms(1));
    call(&mut b, CallResult::Failure, ms(2));
    call(&mut b, CallResult::Success, ms(3));
    assert_eq!(b.state(ms(3)), CircuitState::Closed, "1 of 4");
    assert_eq!(call(&mut b, CallResult::Failure, ms(4)), None, "2 of 5");
    assert_eq!(
        call(&mut b, CallResult::Failure, ms(5)),
        Some(CircuitState::Open { until: ms(1005) }),
        "3 of 6 = 500 per mille"
    );
}

#[test]
fn ratio_counts_expire_with_the_window() {
    let mut b = CircuitBreaker::new(CircuitPolicy {
        threshold: 100,
        failure_ratio_permille: 500,
        min_calls: 4,
        window: Duration::from_secs(10),
        ..policy()
    });
    // 1 s buckets. Three failures at 0.5 s.
    for _ in 0..3 {
        call(&mut b, CallResult::Failure, ms(500));
    }
    assert_eq!(b.window_counts(ms(9_999)).calls, 3);
    // Bucket 0 has slid out of the window by t = 10 s.
    assert_eq!(b.window_counts(ms(10_000)), WindowCounts::default());
    // A fourth failure now sees 1 call, not 4.
    assert_eq!(call(&mut b, CallResult::Failure, ms(10_000)), None);
    assert_eq!(b.state(ms(10_000)), CircuitState::Closed);
    // Three more within the window open it.
    call(&mut b, CallResult::Failure, ms(12_000));
    call(&mut b, CallResult::Failure, ms(15_000));
    assert!(call(&mut b, CallResult::Failure, ms(19_999)).is_some());
}

#[test]
fn ratio_buckets_are_reused_around_the_ring() {
    let mut b = CircuitBreaker::new(CircuitPolicy {
        threshold: 1000,
        failure_ratio_permille: 1000,
        min_calls: 1000,
        window: Duration::from_secs(1),
        ..policy()
    });
    // 100 ms buckets; one call every 50 ms for 10 s.
    for i in 0..200 {
        call(&mut b, CallResult::Success, ms(i * 50));
    }
    // Ten buckets of two calls each.
    assert_eq!(b.window_counts(ms(9_999)).calls, 20);
}

#[test]
fn stale_permits_are_ignored() {
    let mut b = CircuitBreaker::new(policy());
    // Admitted while closed, ends after the circuit opened.
    let slow = b.admit(ms(0)).unwrap();
    for i in 0..3 {
        call(&mut b, CallResult::Failure, ms(i));
    }
    assert_eq!(b.record(slow, CallResult::Success, ms(10)), None);
    assert_eq!(b.state(ms(10)), CircuitState::Open { until: ms(1002) });

    // A probe of an earlier half-open episode neither closes the circuit
    // nor frees a slot of this one.
    let old = b.admit(ms(1002)).unwrap();
    let newer = b.admit(ms(1002));
    assert!(newer.is_err());
    b.record(old, CallResult::Failure, ms(1100));
    let current = b.admit(ms(2100)).unwrap();
    assert!(current.is_probe());
    assert_eq!(b.record(old, CallResult::Success, ms(2101)), None);
    assert_eq!(b.state(ms(2101)), CircuitState::HalfOpen);
    assert_eq!(b.probes_in_flight(), 1);
    assert_eq!(
        b.record(current, CallResult::Success, ms(2102)),
        Some(CircuitState::Closed)
    );
}

#[test]
fn time_going_back_is_clamped() {
    let mut b = opened(policy(), ms(5000));
    // An earlier `now` from a racing caller does not reopen the past.
    assert_eq!(b.state(ms(0)), CircuitState::Open { until: ms(6000) });
    assert!(b.admit(ms(0)).is_err());
    let probe = b.admit(ms(6000)).unwrap();
    // A probe failure reported with an old time still cools down from
    // the latest time seen.
    assert_eq!(
        b.record(probe, CallResult::Failure, ms(10)),
        Some(CircuitState::Open { until: ms(7000) })
    );
}

#[test]
fn policy_updates_keep_state_and_disabling_resets() {
    let mut b = opened(policy(), ms(0));
    let mut p = policy();
    p.cooldown = Duration::from_secs(5);
    b.set_policy(&p);
    assert_eq!(b.policy().cooldown, Duration::from_secs(5));
    assert_eq!(b.state(ms(10)), CircuitState::Open { until: ms(1000) });
    p.enabled = false;
    b.set_policy(&p);
    assert_eq!(b.state(ms(10)), CircuitState::Closed);
    assert!(b.admit(ms(10)).unwrap().is_bypass());
    p.enabled = true;
    b.set_policy(&p);
    assert_eq!(b.state(ms(10)), CircuitState::Closed);
    assert!(!b.admit(ms(10)).unwrap().is_bypass());
}

#[test]
fn zeros_do_not_wedge_or_trip() {
    let mut b = CircuitBreaker::new(CircuitPolicy {
        enabled: true,
        threshold: 0,
        cooldown: Duration::ZERO,
        failure_ratio_permille: 500,
        window: Duration::ZERO,
        min_calls: 0,
        half_open_max_probes: 0,
        half_open_successes: 0,
    });
    assert_eq!(b.state(ms(0)), CircuitState::Closed);
    assert!(call(&mut b, CallResult::Failure, ms(0)).is_some());
    let probe = b.admit(ms(0)).unwrap();
    assert!(probe.is_probe());
    b.record(probe, CallResult::Success, ms(0));
    assert_eq!(b.state(ms(0)), CircuitState::Closed);
}

#[test]
fn state_maps_to_other_instants() {
    let s = CircuitState::Open { until: ms(7) };
    assert_eq!(
        s.map_instant(|t| t.as_nanos()),
        CircuitState::Open { until: 7_000_000 }
    );
    assert_eq!(s.as_str(), "open");
    assert_eq!(CircuitState::<Instant>::HalfOpen.as_str(), "half_open");
    let r = Refusal {
        reason: CIRCUIT_OPEN,
        state: s,
    };
    assert_eq!(
        r.map_instant(|_| ()).state,
        CircuitState::Open { until: () }
    );
}

#[test]
fn verdict_to_call_result_table() {
    use CallResult::{Failure, Neutral, Success};
    let failed = Some(AttemptId(0));
    let v = |cause, last| Verdict::Failure { cause, last };
    let table = [
        (Verdict::Success(AttemptId(2)), Success),
        (v(Cause::Accepted, failed), Success),
        (v(Cause::NonRetryable, failed), Failure),
        (v(Cause::Exhausted, failed), Failure),
        (v(Cause::Exhausted, None), Failure),
        (v(Cause::BackoffBeyondDeadline, failed), Failure),
        (v(Cause::RetryAfterBeyondDeadline, failed), Failure),
        (v(Cause::DeadlineExceeded, failed), Failure),
        (v(Cause::DeadlineExceeded, None), Neutral),
        (v(Cause::BudgetDenied, failed), Failure),
        (v(Cause::BudgetDenied, None), Neutral),
        (v(Cause::Abort, failed), Neutral),
        (v(Cause::Cancelled, failed), Neutral),
        (v(Cause::Cancelled, None), Neutral),
        (v(Cause::CircuitOpen, None), Neutral),
    ];
    for (verdict, expected) in table {
        assert_eq!(CallResult::from_verdict(&verdict), expected, "{verdict:?}");
        assert_eq!(CallResult::from(&verdict), expected);
    }
}

#[test]
fn a_breaker_is_small_and_const() {
    const B: CircuitBreaker = CircuitBreaker::new(CircuitPolicy::DEFAULT);
    assert_eq!(B.state(Instant::ZERO), CircuitState::Closed);
    assert!(core::mem::size_of::<CircuitBreaker>() <= 256);
}

/// What a shared breaker's lock-free path relies on: a quiet closed
/// breaker admits `Permit::closed` of its generation, and successes
/// absorbed later leave it exactly as recording them one by one does;
/// successes of an ended episode count for nothing.
#[test]
fn absorbed_successes_are_recorded_successes() {
    let p = CircuitPolicy {
        failure_ratio_permille: 500,
        min_calls: 4,
        window: Duration::from_secs(10),
        ..policy()
    };
    let t = Instant::from_secs(100);
    let mut by_one = CircuitBreaker::new(p.clone());
    let mut absorbed = CircuitBreaker::new(p);
    let g = absorbed.quiet_generation().expect("a new breaker is quiet");
    assert_eq!(absorbed.closed_generation(), Some(g));
    for _ in 0..5 {
        let permit = by_one.admit(t).expect("closed");
        assert_eq!(permit, Permit::closed(g));
        assert!(permit.is_closed() && permit.generation() == g);
        assert_eq!(by_one.record(permit, CallResult::Success, t), None);
    }
    let bucket = t.as_nanos() / absorbed.window_bucket_width();
    absorbed.observe(t);
    absorbed.absorb_successes(g, bucket, 5);
    assert_eq!(absorbed, by_one);
    assert_eq!(absorbed.latest(), t);
    // A failure makes it closed but not quiet.
    assert_eq!(call(&mut absorbed, CallResult::Failure, t), None);
    assert_eq!(absorbed.quiet_generation(), None);
    assert_eq!(absorbed.closed_generation(), Some(g));
    // Opened: a new episode; the old one's successes change nothing.
    let opened = opened(policy(), t);
    let before = opened.clone();
    let mut after = opened;
    assert_eq!(after.closed_generation(), None);
    after.absorb_successes(g, bucket, 3);
    assert_eq!(after, before);
}
