//! Bad input: every policy field set out of range or to garbage through the
//! public constructors gives a clear error naming the field (and its
//! allowed range), or a value inside the range with the field reported in
//! [`ChangedFields`] by its dotted path; a value already in range stays
//! as it is and is not reported. Never a panic.
//!
//! There is no configuration loader yet: the constructors are `Policy`
//! literals with [`Policy::normalize`] / [`Policy::normalize_with`],
//! [`name`], [`Jitter`]'s `FromStr`, [`PolicyKey::parse`],
//! [`StaticProvider`]'s builder, the [`ExecutorBuilder`] options,
//! [`Trigger::parse`], the budgets' constructors, [`LatencyTrackers`],
//! [`LatencySketch`], the breakers and the simulator's [`Scenario`].
//!
//! The rules are SPEC.md's "Policy and normalization" table, and for the
//! fields it does not list (the breaker's ratio rule and probes) the field
//! docs of `recourse_core::policy`. Each field gets 0, 1, its bounds ± 1,
//! `u32::MAX`, `Duration::ZERO`, one nanosecond, `Duration::MAX`, and for
//! the multiplier NaN, ±∞, negative numbers, −0 and subnormals; names get
//! over-long, multi-byte, empty and garbage strings. The normalized extreme
//! policies then run through an [`Executor`] on a virtual clock that jumps
//! to each sleep's deadline (so a `Duration::MAX` timeout is reached at
//! once), starting at 0 and at the end of time, and each call must end
//! with the clamped fields in its timeline. Budgets, latency stores and
//! breakers are driven with extreme parameters at `Instant::ZERO` and
//! `Instant::MAX`.
//!
//! [`ExecutorBuilder`]: recourse::ExecutorBuilder
//! [`LatencyTrackers`]: recourse::latency::LatencyTrackers

#![allow(clippy::unwrap_used)]

use core::future::Future;
use core::ops::RangeInclusive;
use core::panic::AssertUnwindSafe;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::panic::catch_unwind;
use std::sync::Arc;

use recourse::core_machine::breaker::{CallResult, CircuitBreaker, CircuitState};
use recourse::core_machine::budget::{
    AwsRetryQuota, Budget, BudgetRequest, Concurrency, GrpcThrottle, RetryRatio, TokenBucket,
    Unlimited, MAX_REFILL_PER_SECOND, PUSHBACK_STOP,
};
use recourse::core_machine::hedge::Trigger;
use recourse::core_machine::policy::{name, Limits, Problem, NAME_CAPACITY};
use recourse::core_machine::LatencySketch;
use recourse::core_machine::Timer;
use recourse::latency::LatencyTrackers;
use recourse::observer::{AttemptId, AttemptKind, AttemptRecord, Instant};
use recourse::policy::{ChangedFields, Field};
use recourse::sim::{Arrivals, Backend, Brownout, Bursts, Latency, Scenario, Window};
use recourse::{
    reason, AttemptInfo, Breakers, BudgetRegistry, CircuitPolicy, Error, Executor, Jitter, Outcome,
    Policy, PolicyKey, StaticProvider, Timeline,
};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const NS: Duration = Duration::from_nanos(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// Policy fields, by dotted path
// ---------------------------------------------------------------------------

/// Every [`Field`]; a new one fails [`value_of`] until it is handled there.
const FIELDS: [Field; 20] = Field::ALL;

/// `f`'s value in `p`, as text (`{:?}`, so −0.0 and 0.0 differ).
fn value_of(p: &Policy, f: Field) -> String {
    let (r, h, c) = (&p.retry, &p.hedge, &p.circuit);
    match f {
        Field::MaxAttempts => format!("{:?}", r.max_attempts),
        Field::InitialBackoff => format!("{:?}", r.initial_backoff),
        Field::MaxBackoff => format!("{:?}", r.max_backoff),
        Field::BackoffMultiplier => format!("{:?}", r.backoff_multiplier),
        Field::TimeoutPerAttempt => format!("{:?}", r.timeout_per_attempt),
        Field::OverallTimeout => format!("{:?}", r.overall_timeout),
        Field::RetryBudgetCost => format!("{:?}", r.budget.cost),
        Field::MaxHedges => format!("{:?}", h.max_hedges),
        Field::HedgeDelay => format!("{:?}", h.hedge_delay),
        Field::HedgeBudgetCost => format!("{:?}", h.budget.cost),
        Field::CircuitThreshold => format!("{:?}", c.threshold),
        Field::CircuitCooldown => format!("{:?}", c.cooldown),
        Field::CircuitFailureRatio => format!("{:?}", c.failure_ratio_permille),
        Field::CircuitWindow => format!("{:?}", c.window),
        Field::CircuitMinCalls => format!("{:?}", c.min_calls),
        Field::CircuitHalfOpenMaxProbes => format!("{:?}", c.half_open_max_probes),
        Field::CircuitHalfOpenSuccesses => format!("{:?}", c.half_open_successes),
        Field::MaxAmplification => format!("{:?}", p.amplification.max_amplification),
        Field::AmplificationMinPerSec => format!("{:?}", p.amplification.min_per_sec),
        Field::DeadlineQuantile => format!("{:?}", r.deadline_quantile_permille),
        other => panic!("a field this test does not know: {other:?}; add it to FIELDS"),
    }
}

/// `out` with every [`Field`] of `from`: what is left to differ is what no
/// field path can report.
fn with_fields_of(mut out: Policy, from: &Policy) -> Policy {
    let (r, h, c) = (&from.retry, &from.hedge, &from.circuit);
    out.retry.max_attempts = r.max_attempts;
    out.retry.initial_backoff = r.initial_backoff;
    out.retry.max_backoff = r.max_backoff;
    out.retry.backoff_multiplier = r.backoff_multiplier;
    out.retry.timeout_per_attempt = r.timeout_per_attempt;
    out.retry.overall_timeout = r.overall_timeout;
    out.retry.budget.cost = r.budget.cost;
    out.hedge.max_hedges = h.max_hedges;
    out.hedge.hedge_delay = h.hedge_delay;
    out.hedge.budget.cost = h.budget.cost;
    out.circuit.threshold = c.threshold;
    out.circuit.cooldown = c.cooldown;
    out.circuit.failure_ratio_permille = c.failure_ratio_permille;
    out.circuit.window = c.window;
    out.circuit.min_calls = c.min_calls;
    out.circuit.half_open_max_probes = c.half_open_max_probes;
    out.circuit.half_open_successes = c.half_open_successes;
    out.amplification = from.amplification;
    out.retry.deadline_quantile_permille = r.deadline_quantile_permille;
    out
}

/// Normalizes `input` with `limits` and asserts the report is exact: a
/// field is in `changed` exactly when its value changed, and nothing that
/// has no field path changed at all. Returns the normalized policy.
fn normalize_exactly(input: &Policy, limits: Limits) -> (Policy, ChangedFields) {
    let n = input
        .clone()
        .normalize_with(limits)
        .unwrap_or_else(|e| panic!("{e} for {input:?}"));
    for f in FIELDS {
        let (before, after) = (value_of(input, f), value_of(&n.policy, f));
        assert_eq!(
            n.changed.contains(f),
            before != after,
            "{}: {before} → {after}, reported: {}",
            f.path(),
            n.changed
        );
    }
    assert_eq!(
        with_fields_of(n.policy.clone(), input),
        *input,
        "normalization changed something no field path reports"
    );
    (n.policy, n.changed)
}

/// [`Policy::DEFAULT`] with hedging and the breaker on (their sections are
/// normalized then), already normal.
fn base() -> Policy {
    let mut p = Policy::DEFAULT;
    p.hedge.enabled = true;
    p.circuit.enabled = true;
    let n = p.clone().normalize().unwrap();
    assert!(n.changed.is_empty(), "{}", n.changed);
    p
}

/// One integer field: where it lives, SPEC's rule and the allowed range
/// (under the default hedge ceiling of 3).
struct U32Field {
    field: Field,
    at: fn(&mut Policy) -> &mut u32,
    rule: fn(u32) -> u32,
    range: RangeInclusive<u32>,
}

fn u32_fields() -> Vec<U32Field> {
    vec![
        U32Field {
            field: Field::MaxAttempts,
            at: |p| &mut p.retry.max_attempts,
            rule: |v| if v == 0 { 3 } else { v.clamp(1, 10) },
            range: 1..=10,
        },
        U32Field {
            field: Field::RetryBudgetCost,
            at: |p| &mut p.retry.budget.cost,
            rule: |v| v.max(1),
            range: 1..=u32::MAX,
        },
        U32Field {
            field: Field::MaxHedges,
            at: |p| &mut p.hedge.max_hedges,
            rule: |v| if v == 0 { 2 } else { v.clamp(1, 3) },
            range: 1..=3,
        },
        U32Field {
            field: Field::HedgeBudgetCost,
            at: |p| &mut p.hedge.budget.cost,
            rule: |v| v.max(1),
            range: 1..=u32::MAX,
        },
        U32Field {
            field: Field::CircuitThreshold,
            at: |p| &mut p.circuit.threshold,
            rule: |v| if v == 0 { 5 } else { v },
            range: 1..=u32::MAX,
        },
        U32Field {
            field: Field::CircuitFailureRatio,
            at: |p| &mut p.circuit.failure_ratio_permille,
            rule: |v| v.min(1000),
            range: 0..=1000,
        },
        U32Field {
            field: Field::CircuitMinCalls,
            at: |p| &mut p.circuit.min_calls,
            rule: |v| if v == 0 { 20 } else { v },
            range: 1..=u32::MAX,
        },
        U32Field {
            field: Field::CircuitHalfOpenMaxProbes,
            at: |p| &mut p.circuit.half_open_max_probes,
            rule: |v| v.clamp(1, 100),
            range: 1..=100,
        },
        U32Field {
            field: Field::CircuitHalfOpenSuccesses,
            at: |p| &mut p.circuit.half_open_successes,
            rule: |v| v.clamp(1, 100),
            range: 1..=100,
        },
    ]
}

/// 0, 1, 2, each bound ± 1, and the top of `u32`.
fn u32_values(range: &RangeInclusive<u32>) -> Vec<u32> {
    let (lo, hi) = (*range.start(), *range.end());
    let mut v = vec![
        0,
        1,
        2,
        lo.saturating_sub(1),
        lo,
        lo.saturating_add(1),
        hi.saturating_sub(1),
        hi,
        hi.saturating_add(1),
        u32::MAX / 2,
        u32::MAX - 1,
        u32::MAX,
    ];
    v.sort_unstable();
    v.dedup();
    v
}

/// One duration field: where it lives, SPEC's rule, its allowed range.
struct DurationField {
    field: Field,
    at: fn(&mut Policy) -> &mut Duration,
    rule: fn(Duration) -> Duration,
    range: RangeInclusive<Duration>,
}

/// The ceiling of both backoffs.
const BACKOFF_CEILING: Duration = Duration::from_secs(30);

fn duration_fields() -> Vec<DurationField> {
    let initial = Policy::DEFAULT.retry.initial_backoff;
    vec![
        DurationField {
            field: Field::InitialBackoff,
            at: |p| &mut p.retry.initial_backoff,
            rule: |v| {
                if v.is_zero() {
                    ms(10)
                } else {
                    v.clamp(MS, BACKOFF_CEILING)
                }
            },
            range: MS..=BACKOFF_CEILING,
        },
        DurationField {
            field: Field::MaxBackoff,
            at: |p| &mut p.retry.max_backoff,
            // Never below the initial backoff (the default 10 ms here).
            rule: |v| {
                let v = if v.is_zero() { ms(250) } else { v };
                v.min(BACKOFF_CEILING).max(ms(10))
            },
            range: initial..=BACKOFF_CEILING,
        },
        DurationField {
            field: Field::HedgeDelay,
            at: |p| &mut p.hedge.hedge_delay,
            rule: |v| if v.is_zero() { ms(200) } else { v.max(ms(10)) },
            range: ms(10)..=Duration::MAX,
        },
        DurationField {
            field: Field::CircuitCooldown,
            at: |p| &mut p.circuit.cooldown,
            rule: |v| {
                if v.is_zero() {
                    10 * SEC
                } else {
                    v.max(ms(100))
                }
            },
            range: ms(100)..=Duration::MAX,
        },
        DurationField {
            field: Field::CircuitWindow,
            at: |p| &mut p.circuit.window,
            rule: |v| {
                if v.is_zero() {
                    10 * SEC
                } else {
                    v.max(ms(100))
                }
            },
            range: ms(100)..=Duration::MAX,
        },
    ]
}

/// Zero, a nanosecond, each bound of any duration field ± 1 ns, and the
/// largest durations there are.
fn duration_values() -> Vec<Duration> {
    let mut v = vec![Duration::ZERO, NS, Duration::from_micros(1)];
    for bound in [
        MS,
        ms(10),
        ms(100),
        ms(200),
        ms(250),
        10 * SEC,
        BACKOFF_CEILING,
    ] {
        v.extend([bound - NS, bound, bound + NS]);
    }
    v.extend([
        Duration::from_secs(3600),
        Duration::from_nanos(u64::MAX),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ]);
    v
}

/// Optional timeouts: `None`, then `Some` of every duration.
fn timeout_values() -> Vec<Option<Duration>> {
    let mut v = vec![None];
    v.extend(duration_values().into_iter().map(Some));
    v
}

/// SPEC: zero disables; a set value has a 1 ms floor.
fn timeout_rule(v: Option<Duration>) -> Option<Duration> {
    v.filter(|d| !d.is_zero()).map(|d| d.max(MS))
}

/// Multipliers: 0, −0, the bounds ± the smallest steps, negative and
/// subnormal numbers, the largest ones. (NaN and ±∞ are errors.)
fn finite_multipliers() -> Vec<f64> {
    let subnormal = f64::from_bits(1);
    vec![
        0.0,
        -0.0,
        subnormal,
        -subnormal,
        f64::MIN_POSITIVE,
        f64::EPSILON,
        0.5,
        1.0 - f64::EPSILON,
        1.0,
        1.0 + f64::EPSILON,
        2.0,
        9.999_999_999,
        10.0,
        10.000_000_001,
        -1.0,
        -10.0,
        1e308,
        f64::MAX,
        f64::MIN,
    ]
}

/// SPEC: 0 → 2; clamp 1..=10.
fn multiplier_rule(v: f64) -> f64 {
    if v == 0.0 {
        2.0
    } else {
        v.clamp(1.0, 10.0)
    }
}

#[test]
fn every_integer_field_is_clamped_into_its_range_and_reported() {
    for f in u32_fields() {
        for v in u32_values(&f.range) {
            let mut input = base();
            *(f.at)(&mut input) = v;
            let (mut out, changed) = normalize_exactly(&input, Limits::DEFAULT);
            let got = *(f.at)(&mut out);
            let path = f.field.path();
            assert_eq!(got, (f.rule)(v), "{path} = {v}");
            assert!(f.range.contains(&got), "{path} = {v} → {got}");
            if got == v {
                assert!(
                    changed.is_empty(),
                    "{path} = {v} in range, reported: {changed}"
                );
            } else {
                assert_eq!(changed.to_string(), path, "{path} = {v} → {got}");
            }
        }
    }
}

#[test]
fn every_duration_field_is_clamped_into_its_range_and_reported() {
    for f in duration_fields() {
        for v in duration_values() {
            let mut input = base();
            *(f.at)(&mut input) = v;
            let (mut out, changed) = normalize_exactly(&input, Limits::DEFAULT);
            let got = *(f.at)(&mut out);
            let path = f.field.path();
            assert_eq!(got, (f.rule)(v), "{path} = {v:?}");
            assert!(f.range.contains(&got), "{path} = {v:?} → {got:?}");
            // (A field in range may still move another: an initial backoff
            // above the maximum lifts the maximum, reported as such.)
            let reported = changed.contains(f.field);
            assert_eq!(
                reported,
                got != v,
                "{path} = {v:?} → {got:?}, reported: {changed}"
            );
        }
    }
    // A huge initial backoff is cut to the ceiling and lifts the maximum with
    // it: both reported.
    for v in [BACKOFF_CEILING + NS, Duration::MAX] {
        let mut p = base();
        p.retry.initial_backoff = v;
        p.retry.max_backoff = Duration::ZERO;
        let (out, changed) = normalize_exactly(&p, Limits::DEFAULT);
        assert_eq!(
            (out.retry.initial_backoff, out.retry.max_backoff),
            (BACKOFF_CEILING, BACKOFF_CEILING)
        );
        assert_eq!(
            changed.to_string(),
            "retry.initial_backoff,retry.max_backoff"
        );
    }
    // A maximum below the initial backoff is lifted to it.
    let mut p = base();
    p.retry.initial_backoff = 5 * SEC;
    p.retry.max_backoff = SEC;
    let (out, changed) = normalize_exactly(&p, Limits::DEFAULT);
    assert_eq!(out.retry.max_backoff, 5 * SEC);
    assert_eq!(changed.to_string(), "retry.max_backoff");
}

#[test]
fn timeouts_disable_at_zero_have_a_floor_and_per_attempt_never_exceeds_overall() {
    for overall in timeout_values() {
        for per_attempt in timeout_values() {
            let mut input = base();
            input.retry.overall_timeout = overall;
            input.retry.timeout_per_attempt = per_attempt;
            let (out, _) = normalize_exactly(&input, Limits::DEFAULT);
            let r = &out.retry;
            let want_overall = timeout_rule(overall);
            let want_per_attempt = match (timeout_rule(per_attempt), want_overall) {
                (Some(p), Some(o)) => Some(p.min(o)),
                (p, _) => p,
            };
            assert_eq!(r.overall_timeout, want_overall, "{overall:?}");
            assert_eq!(
                r.timeout_per_attempt, want_per_attempt,
                "per attempt {per_attempt:?}, overall {overall:?}"
            );
            for t in [r.overall_timeout, r.timeout_per_attempt]
                .into_iter()
                .flatten()
            {
                assert!(t >= MS, "{t:?}");
            }
        }
    }
}

#[test]
fn finite_multipliers_are_clamped_and_non_finite_ones_are_errors_naming_the_field_and_range() {
    for v in finite_multipliers() {
        let mut input = base();
        input.retry.backoff_multiplier = v;
        let (out, changed) = normalize_exactly(&input, Limits::DEFAULT);
        let got = out.retry.backoff_multiplier;
        assert_eq!(got.to_bits(), multiplier_rule(v).to_bits(), "{v:e}");
        assert!((1.0..=10.0).contains(&got), "{v:e} → {got}");
        let reported = changed.contains(Field::BackoffMultiplier);
        assert_eq!(reported, got.to_bits() != v.to_bits(), "{v:e} → {got}");
    }
    for v in [f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut p = base();
        p.retry.backoff_multiplier = v;
        let e = p.clone().normalize().unwrap_err();
        assert_eq!(
            (e.field, e.problem),
            ("retry.backoff_multiplier", Problem::NotFinite)
        );
        let message = e.to_string();
        assert!(
            message.contains("retry.backoff_multiplier") && message.contains("1 to 10"),
            "{message}"
        );
        // The same error where policies enter an executor.
        let e = StaticProvider::builder()
            .policy("svc.Get", p.clone())
            .unwrap_err();
        assert_eq!(e.field, "retry.backoff_multiplier");
        let e = StaticProvider::builder()
            .default_policy(p.clone())
            .unwrap_err();
        assert_eq!(e.field, "retry.backoff_multiplier");
        // And in the simulator.
        let e = Scenario::new(p, Backend::new(Latency::Constant(MS)))
            .calls(1)
            .run()
            .unwrap_err();
        assert_eq!(e.field, "retry.backoff_multiplier");
        assert!(e.to_string().contains("retry.backoff_multiplier"), "{e}");
    }
}

#[test]
fn max_amplification_below_one_or_nan_is_an_error_naming_the_field_and_range() {
    for v in [0.0, 1.0, 1.1, 2.5, 100.0, 100.5, 1e300, f64::INFINITY] {
        let mut input = base();
        input.amplification.max_amplification = v;
        input.amplification.min_per_sec = 20_000;
        let (out, changed) = normalize_exactly(&input, Limits::DEFAULT);
        let got = out.amplification.max_amplification;
        assert_eq!(got, v.min(100.0), "{v:e}");
        assert_eq!(changed.contains(Field::MaxAmplification), v > 100.0);
        assert_eq!(out.amplification.min_per_sec, 10_000);
        assert!(changed.contains(Field::AmplificationMinPerSec));
    }
    for v in [
        f64::NAN,
        -f64::NAN,
        -0.0,
        0.5,
        0.999_999,
        -1.0,
        f64::NEG_INFINITY,
    ] {
        let mut p = base();
        p.amplification.max_amplification = v;
        if v == 0.0 {
            // -0.0 is 0: off.
            assert!(p.normalize().is_ok());
            continue;
        }
        let e = p.clone().normalize().unwrap_err();
        assert_eq!(e.field, "amplification.max_amplification", "{v:e}");
        let message = e.to_string();
        assert!(message.contains("1 to 100"), "{message}");
        let e = StaticProvider::builder()
            .policy("svc.Get", p.clone())
            .unwrap_err();
        assert_eq!(e.field, "amplification.max_amplification");
        let e = Scenario::new(p, Backend::new(Latency::Constant(MS)))
            .calls(1)
            .run()
            .unwrap_err();
        assert_eq!(e.field, "amplification.max_amplification");
        assert!(e.to_string().contains("1 to 100"), "{e}");
    }
}

#[test]
fn a_deadline_quantile_outside_0_to_1000_is_an_error_naming_the_field() {
    for v in [1_001, 1_000_000, u32::MAX] {
        let mut p = base();
        p.retry.deadline_quantile_permille = v;
        let e = p.clone().normalize().unwrap_err();
        assert_eq!(e.field, "retry.deadline_quantile_permille");
        assert!(e.to_string().contains("1 to 1000"), "{e}");
        let e = StaticProvider::builder().policy("svc.Get", p).unwrap_err();
        assert_eq!(e.field, "retry.deadline_quantile_permille");
    }
    for v in [0, 1, 500, 900, 1000] {
        let mut p = base();
        p.retry.deadline_quantile_permille = v;
        let (out, _) = normalize_exactly(&p, Limits::DEFAULT);
        assert_eq!(out.retry.deadline_quantile_permille, v);
    }
}

#[test]
fn the_simulators_multiplier_error_names_the_range() {
    let mut p = Policy::DEFAULT;
    p.retry.backoff_multiplier = f64::NAN;
    let e = Scenario::new(p, Backend::new(Latency::Constant(MS)))
        .run()
        .unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("1 to 10") || message.contains("1..=10"),
        "{message}"
    );
}

#[test]
fn max_hedges_is_clamped_to_the_ceiling_an_executor_sets_and_reported() {
    for ceiling in [0, 1, 2, 3, 4, 9, 10, 11, u32::MAX] {
        let effective = ceiling.clamp(1, Limits::MAX_HEDGES_CEILING);
        let limits = Limits {
            max_hedges_ceiling: ceiling,
            ..Limits::DEFAULT
        };
        for v in [0, 1, 2, 3, 4, 9, 10, 11, u32::MAX] {
            let mut input = base();
            input.hedge.max_hedges = v;
            let (out, changed) = normalize_exactly(&input, limits);
            let want = if v == 0 {
                2.min(effective)
            } else {
                v.clamp(1, effective)
            };
            assert_eq!(
                out.hedge.max_hedges, want,
                "max_hedges {v}, ceiling {ceiling}"
            );
            assert_eq!(changed.contains(Field::MaxHedges), want != v);
        }
    }
}

#[test]
fn the_hedge_section_is_left_alone_while_hedging_is_off_but_its_cost() {
    for v in [0, u32::MAX] {
        for d in [Duration::ZERO, NS, Duration::MAX] {
            let mut input = base();
            input.hedge.enabled = false;
            input.hedge.max_hedges = v;
            input.hedge.hedge_delay = d;
            input.hedge.budget.cost = 0;
            let (out, changed) = normalize_exactly(&input, Limits::DEFAULT);
            // SPEC: budget cost ≤ 0 → 1 whether or not hedging is on.
            let mut want = input.clone();
            want.hedge.budget.cost = 1;
            assert_eq!(out, want);
            assert_eq!(changed.to_string(), "hedge.budget.cost");
        }
    }
}

#[test]
fn every_field_at_once_at_each_extreme() {
    let extremes: [(u32, Duration, Option<Duration>, f64); 5] = [
        (0, Duration::ZERO, Some(Duration::ZERO), 0.0),
        (1, NS, Some(NS), f64::from_bits(1)),
        (u32::MAX, Duration::MAX, Some(Duration::MAX), f64::MAX),
        (u32::MAX - 1, Duration::from_nanos(u64::MAX), None, -1.0),
        (2, Duration::from_secs(u64::MAX), Some(MS - NS), 10.5),
    ];
    for (n, d, t, m) in extremes {
        let p = all_fields(n, d, t, m);
        let (out, changed) = normalize_exactly(&p, Limits::DEFAULT);
        assert!(!changed.is_empty());
        // Every range holds at once.
        let r = &out.retry;
        assert!((1..=10).contains(&r.max_attempts));
        assert!((MS..=BACKOFF_CEILING).contains(&r.initial_backoff));
        assert!((r.initial_backoff..=BACKOFF_CEILING).contains(&r.max_backoff));
        assert!((1.0..=10.0).contains(&r.backoff_multiplier));
        assert!(out.hedge.max_hedges <= 3 && out.hedge.hedge_delay >= ms(10));
        assert!(out.circuit.cooldown >= ms(100) && out.circuit.window >= ms(100));
    }
}

/// Every field of [`base`] set from one value of each type.
fn all_fields(n: u32, d: Duration, t: Option<Duration>, m: f64) -> Policy {
    let mut p = base();
    for f in u32_fields() {
        *(f.at)(&mut p) = n;
    }
    for f in duration_fields() {
        *(f.at)(&mut p) = d;
    }
    p.retry.timeout_per_attempt = t;
    p.retry.overall_timeout = t;
    p.retry.backoff_multiplier = m;
    p
}

// ---------------------------------------------------------------------------
// Names, jitter, keys, triggers
// ---------------------------------------------------------------------------

#[test]
fn names_longer_than_their_capacity_are_errors_naming_the_field() {
    let cases = [
        String::new(),
        "x".repeat(NAME_CAPACITY),
        "x".repeat(NAME_CAPACITY + 1),
        // 33 bytes, the last character split by the capacity.
        format!("{}é", "x".repeat(NAME_CAPACITY - 1)),
        "é".repeat(NAME_CAPACITY / 2),
        "€".repeat(11),
        "😀".repeat(NAME_CAPACITY / 4),
        "😀".repeat(NAME_CAPACITY / 4 + 1),
        "\0\n\t \u{200B}".to_owned(),
        "y".repeat(1 << 20),
    ];
    for field in [
        "retry.budget.name",
        "hedge.budget.name",
        "retry.classifier",
        "hedge.trigger",
    ] {
        for s in &cases {
            match name(field, s) {
                Ok(n) => {
                    assert!(s.len() <= NAME_CAPACITY, "{} bytes accepted", s.len());
                    assert_eq!(n.as_str(), s);
                }
                Err(e) => {
                    assert!(s.len() > NAME_CAPACITY, "{} bytes refused", s.len());
                    assert_eq!((e.field, e.problem), (field, Problem::NameTooLong));
                    let message = e.to_string();
                    assert!(
                        message.contains(field)
                            && message.contains(&format!("{NAME_CAPACITY} bytes")),
                        "{message}"
                    );
                }
            }
        }
    }
}

#[test]
fn jitter_names_other_than_the_four_are_errors_naming_the_field() {
    for (s, want) in [
        ("", Jitter::None),
        ("  ", Jitter::None),
        ("none", Jitter::None),
        (" FULL ", Jitter::Full),
        ("Equal", Jitter::Equal),
        ("\tdecorrelated\n", Jitter::Decorrelated),
    ] {
        assert_eq!(s.parse::<Jitter>(), Ok(want), "{s:?}");
    }
    let long = "full".repeat(1 << 18);
    for s in [
        "gaussian",
        "nonee",
        "ful",
        "full,equal",
        "full\0",
        "ｆｕｌｌ",
        "none\u{200B}",
        "-1",
        "NaN",
        "\u{FFFD}",
        long.as_str(),
    ] {
        let e = s.parse::<Jitter>().unwrap_err();
        assert_eq!(
            (e.field, e.problem),
            ("retry.jitter", Problem::UnknownJitter)
        );
        let message = e.to_string();
        for part in ["retry.jitter", "none", "full", "equal", "decorrelated"] {
            assert!(message.contains(part), "{message}");
        }
    }
}

/// SPEC's key rule, written out: trim; no dot → the name; split at the
/// first dot and trim both; an empty name part makes the whole trimmed
/// string the name.
fn spec_key(s: &str) -> (String, String) {
    let s = s.trim();
    match s.split_once('.') {
        None => (String::new(), s.to_owned()),
        Some((_, name)) if name.trim().is_empty() => (String::new(), s.to_owned()),
        Some((ns, name)) => (ns.trim().to_owned(), name.trim().to_owned()),
    }
}

/// Strings of up to `max_len` characters from `alphabet`, seeded.
fn garbage(seed: u64, count: usize, max_len: usize, alphabet: &[&str]) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| {
            (0..rng.usize(0..=max_len))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect()
        })
        .collect()
}

#[test]
fn policy_keys_of_any_shape_parse_by_the_spec_rule() {
    let mut keys = garbage(
        1,
        20_000,
        10,
        &[
            ".", " ", "\t", "\n", "a", "Z", "é", "\u{3000}", "\0", "..", "😀",
        ],
    );
    keys.extend([
        "".into(),
        ".".into(),
        "...".into(),
        " . ".into(),
        "a.".into(),
    ]);
    keys.push("k".repeat(1 << 20));
    keys.push(format!("{}.{}", "n".repeat(1 << 16), "m".repeat(1 << 16)));
    for s in &keys {
        let key = PolicyKey::parse(s);
        let (ns, name) = spec_key(s);
        assert_eq!(
            (key.namespace, key.name),
            (ns.as_str(), name.as_str()),
            "{s:?}"
        );
        let shown = key.to_string();
        assert!(shown.len() <= s.len(), "{s:?} shown as {shown:?}");
        assert_eq!(key.is_empty(), s.trim().is_empty(), "{s:?}");
    }
}

#[test]
fn trigger_names_of_any_shape_are_a_trigger_in_range_or_none() {
    for (s, want) in [
        ("", Some(Trigger::FixedDelay)),
        ("p50", Some(Trigger::Quantile { permille: 500 })),
        ("p99.9", Some(Trigger::Quantile { permille: 999 })),
        (
            "max_extra_load:0.1%",
            Some(Trigger::Quantile { permille: 999 }),
        ),
        (
            "max_extra_load:50%",
            Some(Trigger::Quantile { permille: 500 }),
        ),
        ("p49.9", None),
        ("p100", None),
        ("p9999999999999999999999", None),
        ("p-95", None),
        ("p+95", None),
        ("p 95", None),
        ("p95 ", None),
        ("p9.5.", None),
        ("p95.", None),
        ("p٩٥", None),
        ("p1e2", None),
        ("max_extra_load:", None),
        ("max_extra_load:%", None),
        ("max_extra_load:-5%", None),
        ("max_extra_load:0%", None),
        ("max_extra_load:50.1%", None),
        ("max_extra_load:99999999999999999999%", None),
        ("FIXED", None),
    ] {
        assert_eq!(Trigger::parse(s), want, "{s:?}");
    }
    let mut names = garbage(
        2,
        20_000,
        8,
        &[
            "p",
            "9",
            "5",
            "0",
            "1",
            ".",
            "%",
            "-",
            " ",
            "é",
            "max_extra_load:",
            "fixed",
        ],
    );
    names.push("p".repeat(1 << 16));
    for s in &names {
        match Trigger::parse(s) {
            None | Some(Trigger::FixedDelay) => {}
            Some(Trigger::Quantile { permille }) => {
                assert!((500..=999).contains(&permille), "{s:?} → {permille}")
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Running extreme policies: an executor on a jumping clock
// ---------------------------------------------------------------------------

/// A virtual clock whose sleeps complete when first polled, moving the clock
/// to their deadline (never back): a whole call runs in a few polls, however
/// long its timeouts and backoffs.
#[derive(Clone, Debug)]
struct JumpClock(Arc<AtomicU64>);

impl JumpClock {
    fn at(t: Instant) -> Self {
        Self(Arc::new(AtomicU64::new(t.as_nanos())))
    }
}

/// A [`JumpClock`] sleep.
#[derive(Debug)]
struct Jump {
    clock: Arc<AtomicU64>,
    to: Instant,
}

impl Future for Jump {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        self.clock.fetch_max(self.to.as_nanos(), Ordering::SeqCst);
        Poll::Ready(())
    }
}

impl Timer for JumpClock {
    type Sleep = Jump;
    fn now(&self) -> Instant {
        Instant::from_nanos(self.0.load(Ordering::SeqCst))
    }
    fn sleep_until(&self, deadline: Instant) -> Jump {
        Jump {
            clock: self.0.clone(),
            to: deadline,
        }
    }
}

/// Polls `fut` until it is ready (`None` if it is still pending after many
/// polls: it would hang).
fn drive<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = core::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    (0..1_000).find_map(|_| match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    })
}

/// What each attempt of a call does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Op {
    /// Fails at once, every time.
    Fails,
    /// Takes 5 ms; fails twice, then succeeds.
    ThirdTime,
    /// Never completes (only under a timeout).
    Hangs,
    /// Fails with a retry-after hint of `Duration::MAX`.
    HintsForever,
}

/// The budgets every extreme policy may name.
fn extreme_budgets() -> BudgetRegistry {
    BudgetRegistry::new()
        .with("bucket", TokenBucket::new(u32::MAX, u32::MAX))
        .with("empty", TokenBucket::new(0, 0))
        .with("ratio", RetryRatio::new(Duration::ZERO, u32::MAX, u32::MAX))
        .with("aws", AwsRetryQuota::new(1, u32::MAX, u32::MAX, u32::MAX))
        .with("grpc", GrpcThrottle::new(0, 0))
        .with("conc", Concurrency::new(u32::MAX, u32::MAX))
        .with("conc0", Concurrency::new(0, 0))
        .with("unlimited", Unlimited)
}

const BUDGET_NAMES: [&str; 8] = [
    "bucket",
    "empty",
    "ratio",
    "aws",
    "grpc",
    "conc",
    "conc0",
    "unlimited",
];

/// The executor's default hedge ceiling.
const EXEC_CEILING: u32 = 3;

/// Runs `policy` (already accepted by a static provider) through an
/// executor whose clock starts at `epoch`, with every attempt doing `op`;
/// asserts the call ends, and that its timeline reports exactly the fields
/// normalization (and the executor's hedge ceiling) changed.
fn run_extreme(policy: &Policy, epoch: Instant, op: Op) -> Timeline {
    let provider = StaticProvider::builder()
        .policy("svc.Extreme", policy.clone())
        .unwrap()
        .build();
    let clock = JumpClock::at(epoch);
    let exec = Executor::builder()
        .provider(provider)
        .budgets(extreme_budgets())
        .timer(clock.clone())
        .seed(7)
        .build();
    let attempt = move |a: AttemptInfo| {
        let clock = clock.clone();
        async move {
            match op {
                Op::Hangs => core::future::pending::<()>().await,
                Op::ThirdTime => clock.sleep_until(clock.now() + ms(5)).await,
                Op::Fails | Op::HintsForever => {}
            }
            if op == Op::ThirdTime && a.retry_index >= 2 {
                Ok(a.retry_index)
            } else {
                Err("boom")
            }
        }
    };
    let classify = move |r: &Result<u32, &'static str>| match (r, op) {
        (Ok(_), _) => Outcome::SUCCESS,
        (Err(_), Op::HintsForever) => Outcome::retryable("busy").with_retry_after(Duration::MAX),
        (Err(_), _) => Outcome::retryable(reason::RETRYABLE_ERROR),
    };
    let Some((result, timeline)) =
        drive(exec.call_classified_with_timeline("svc.Extreme", classify, attempt))
    else {
        panic!("the call hung: {op:?} at {epoch:?} under {policy:?}");
    };

    // The fields the provider's normalization changed, then the hedge
    // ceiling's cut.
    let n = policy
        .clone()
        .normalize_with(Limits {
            max_hedges_ceiling: Limits::MAX_HEDGES_CEILING,
            ..Limits::DEFAULT
        })
        .unwrap();
    let mut want: Vec<&str> = n.changed.iter().map(Field::path).collect();
    let h = &n.policy.hedge;
    if h.enabled && h.max_hedges > EXEC_CEILING && !want.contains(&"hedge.max_hedges") {
        want.push("hedge.max_hedges");
    }
    let want = (!want.is_empty()).then(|| want.join(","));
    assert_eq!(
        timeline.attribute("policy_clamped_fields"),
        want.as_deref(),
        "{op:?} at {epoch:?} under {policy:?}"
    );
    assert_eq!(
        timeline.attribute("policy_normalized"),
        want.as_ref().map(|_| "true")
    );
    let r = &n.policy.retry;
    // Each retry group: a primary and up to the ceiling's hedges, each of
    // which may also be refused by a budget.
    let most = r.max_attempts as usize * 2 * (1 + EXEC_CEILING as usize);
    assert!(timeline.attempts.len() <= most, "{timeline}");
    match &result {
        Ok(_) => assert_eq!(op, Op::ThirdTime),
        Err(Error::NoPolicy | Error::Cancelled { .. }) => panic!("{result:?}"),
        Err(_) => {}
    }
    // The timeline prints, at the end of time too.
    assert!(!timeline.to_string().is_empty());
    timeline
}

/// The policies to run: every single-field extreme of the tables above,
/// and every field at once at each extreme, each naming one of the
/// extreme budgets.
fn extreme_policies() -> Vec<Policy> {
    let mut policies = Vec::new();
    for f in u32_fields() {
        for v in u32_values(&f.range) {
            let mut p = base();
            *(f.at)(&mut p) = v;
            policies.push(p);
        }
    }
    for f in duration_fields() {
        for v in duration_values() {
            let mut p = base();
            *(f.at)(&mut p) = v;
            policies.push(p);
        }
    }
    for t in timeout_values() {
        let mut p = base();
        p.retry.timeout_per_attempt = t;
        policies.push(p.clone());
        p.retry.overall_timeout = t;
        policies.push(p);
    }
    for m in finite_multipliers() {
        let mut p = base();
        p.retry.backoff_multiplier = m;
        p.retry.jitter = Jitter::Decorrelated;
        policies.push(p);
    }
    for (n, d, t) in [
        (0, Duration::ZERO, Some(Duration::ZERO)),
        (u32::MAX, Duration::MAX, Some(Duration::MAX)),
        (1, NS, Some(NS)),
    ] {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let mut p = all_fields(n, d, t, f64::MAX);
            p.retry.jitter = jitter;
            policies.push(p);
        }
    }
    for (i, p) in policies.iter_mut().enumerate() {
        let retry = BUDGET_NAMES[i % BUDGET_NAMES.len()];
        let hedge = BUDGET_NAMES[(i / BUDGET_NAMES.len() + 5) % BUDGET_NAMES.len()];
        p.retry.budget.name = name("retry.budget.name", retry).unwrap();
        p.hedge.budget.name = name("hedge.budget.name", hedge).unwrap();
    }
    policies
}

#[test]
fn extreme_policies_normalized_run_to_the_end_and_report_their_clamps() {
    let epochs = [
        Instant::ZERO,
        Instant::from_secs(1),
        Instant::from_nanos(u64::MAX - 1_000_000_000),
        Instant::MAX,
    ];
    // What the calls did, to show the extremes were reached: calls, calls
    // that ended at the end of time, hedges that ran, attempts refused by a
    // budget, attempts cut at their deadline, calls by reason.
    let (mut calls, mut at_end, mut hedges, mut refused, mut cut) = (0, 0, 0, 0, 0);
    let mut reasons = std::collections::BTreeMap::new();
    for policy in extreme_policies() {
        let r = &policy.retry;
        let timed = timeout_rule(r.overall_timeout).is_some()
            || timeout_rule(r.timeout_per_attempt).is_some();
        for op in [Op::Fails, Op::ThirdTime, Op::Hangs, Op::HintsForever] {
            if op == Op::Hangs && !timed {
                // Without a deadline a hanging operation hangs the call, as
                // it should.
                continue;
            }
            for epoch in epochs {
                let t = run_extreme(&policy, epoch, op);
                calls += 1;
                at_end += usize::from(t.end == Instant::MAX);
                for a in &t.attempts {
                    hedges += usize::from(a.info.is_hedge && a.budget_allowed);
                    refused += usize::from(!a.budget_allowed);
                    cut += usize::from(a.outcome.reason == reason::ATTEMPT_TIMEOUT);
                }
                *reasons.entry(t.reason.unwrap_or("ok")).or_insert(0) += 1;
            }
        }
    }
    println!(
        "{calls} calls, {at_end} ended at Instant::MAX; {hedges} hedges ran, {refused} attempts \
         refused, {cut} cut at their deadline; by reason: {reasons:?}"
    );
    assert!(calls > 1_000, "{calls}");
    assert!(at_end > 100 && hedges > 100 && refused > 100 && cut > 100);
    for reason in [
        "ok",
        "retries_exhausted",
        "budget_denied",
        "deadline_exceeded",
    ] {
        assert!(
            reasons.contains_key(reason),
            "no call ended {reason}: {reasons:?}"
        );
    }
}

#[test]
fn duration_max_timeouts_and_backoffs_reach_the_end_of_time_without_overflow() {
    let mut p = all_fields(u32::MAX, Duration::MAX, Some(Duration::MAX), 10.0);
    p.hedge.enabled = false;
    p.retry.budget.name = name("retry.budget.name", "bucket").unwrap();
    // The attempt hangs until the per-attempt deadline, `Duration::MAX`
    // away: the clock jumps to the end of time; every later instant
    // saturates there.
    let t = run_extreme(&p, Instant::from_secs(1), Op::Hangs);
    assert_eq!(t.end, Instant::MAX);
    assert!(t.reason.is_some(), "{t}");
    // With a server asking to wait forever and no deadline, the call waits
    // as long as the executor allows (60 s by default), then retries.
    let mut p = base();
    p.retry.max_attempts = u32::MAX;
    let t = run_extreme(&p, Instant::ZERO, Op::HintsForever);
    assert_eq!(t.attempts.len(), 10);
    assert_eq!(t.attempts[1].backoff, Duration::from_secs(60));
}

#[test]
fn unknown_names_in_a_policy_fall_back_or_fail_closed_and_say_so() {
    let mut p = base();
    p.retry.classifier = name("retry.classifier", "no-such-classifier").unwrap();
    p.hedge.trigger = name("hedge.trigger", "p100").unwrap();
    p.hedge.hedge_delay = ms(10);
    p.retry.timeout_per_attempt = Some(SEC);
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy("svc.A", p.clone())
                .unwrap()
                .build(),
        )
        .timer(JumpClock::at(Instant::ZERO))
        .build();
    let (result, t) =
        drive(exec.call_with_timeline("svc.A", |_| core::future::pending::<Result<(), ()>>()))
            .unwrap();
    assert!(
        matches!(result, Err(Error::AttemptsTimedOut { attempts: 9 })),
        "{result:?}"
    );
    assert_eq!(
        t.attribute("classifier_error"),
        Some("classifier_not_found")
    );
    assert_eq!(
        t.attribute("hedge_trigger_error"),
        Some("trigger_not_found")
    );

    // An unknown budget denies (fail closed), naming why.
    p.retry.budget.name = name("retry.budget.name", "no-such-budget").unwrap();
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy("svc.A", p)
                .unwrap()
                .build(),
        )
        .timer(JumpClock::at(Instant::ZERO))
        .build();
    let (result, t) =
        drive(exec.call_with_timeline("svc.A", |_| core::future::ready(Ok::<_, ()>(())))).unwrap();
    assert!(
        matches!(
            result,
            Err(Error::BudgetDenied {
                reason: "budget_not_found",
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(t.attribute("budget_error"), Some("budget_not_found"));
}

#[test]
fn any_key_string_is_a_key_a_provider_and_an_executor_take() {
    let mut keys = garbage(3, 300, 6, &[".", " ", "a", "é", "\0", "😀"]);
    keys.push("k".repeat(1 << 16));
    let mut builder = StaticProvider::builder();
    for (i, k) in keys.iter().enumerate() {
        let mut p = Policy::DEFAULT;
        p.retry.max_attempts = u32::try_from(i % 10).unwrap() + 1;
        builder = builder.policy(k, p).unwrap();
    }
    let exec = Executor::builder()
        .provider(builder.build())
        .timer(JumpClock::at(Instant::ZERO))
        .build();
    for k in &keys {
        let (result, t) =
            drive(exec.call_with_timeline(k, |_| core::future::ready(Err::<(), _>(())))).unwrap();
        assert!(
            matches!(result, Err(Error::RetriesExhausted { .. })),
            "{k:?}"
        );
        assert_eq!(t.attribute("policy_source"), Some("static"), "{k:?}");
    }
}

#[test]
fn quantile_triggers_at_extreme_delays_windows_and_instants() {
    for trigger in ["p50", "p99.9", "max_extra_load:0.1%", "max_extra_load:50%"] {
        for delay in [Duration::ZERO, NS, ms(10), Duration::MAX] {
            for window in [Duration::ZERO, Duration::MAX] {
                for epoch in [Instant::ZERO, Instant::from_nanos(u64::MAX - 1_000_000)] {
                    let mut p = base();
                    p.hedge.trigger = name("hedge.trigger", trigger).unwrap();
                    p.hedge.hedge_delay = delay;
                    p.hedge.max_hedges = u32::MAX;
                    p.retry.timeout_per_attempt = Some(SEC);
                    let clock = JumpClock::at(epoch);
                    let exec = Executor::builder()
                        .provider(
                            StaticProvider::builder()
                                .policy("svc.Q", p)
                                .unwrap()
                                .build(),
                        )
                        .timer(clock.clone())
                        .latency_trackers(LatencyTrackers::new(0, window).with_min_samples(0))
                        .max_hedges_ceiling(u32::MAX)
                        .build();
                    for i in 0..30 {
                        let clock = clock.clone();
                        let op = move |a: AttemptInfo| {
                            let clock = clock.clone();
                            async move {
                                let took = ms((i + u64::from(a.hedge_index)) % 7);
                                clock.sleep_until(clock.now() + took).await;
                                if i % 3 == 0 {
                                    Err(())
                                } else {
                                    Ok(())
                                }
                            }
                        };
                        let (_, t) = drive(exec.call_with_timeline("svc.Q", op))
                            .unwrap_or_else(|| panic!("{trigger} {delay:?} {window:?} hung"));
                        assert_eq!(t.attribute("hedge_trigger"), Some(trigger));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Executor options
// ---------------------------------------------------------------------------

#[test]
fn the_hedge_ceiling_option_is_clamped_to_one_to_ten_and_its_cut_is_reported() {
    let mut p = base();
    p.retry.max_attempts = 1;
    p.retry.timeout_per_attempt = Some(SEC);
    p.hedge.max_hedges = 10;
    p.hedge.hedge_delay = ms(10);
    for ceiling in [0, 1, 2, 3, 9, 10, 11, u32::MAX] {
        let effective = ceiling.clamp(1, Limits::MAX_HEDGES_CEILING);
        let exec = Executor::builder()
            .provider(
                StaticProvider::builder()
                    .policy("svc.H", p.clone())
                    .unwrap()
                    .build(),
            )
            .timer(JumpClock::at(Instant::ZERO))
            .max_hedges_ceiling(ceiling)
            .build();
        let (result, t) =
            drive(exec.call_with_timeline("svc.H", |_| core::future::pending::<Result<(), ()>>()))
                .unwrap();
        assert!(result.is_err());
        let hedges = t.attempts.iter().filter(|a| a.info.is_hedge).count();
        assert_eq!(hedges, effective as usize, "ceiling {ceiling}");
        let cut = (10 > effective).then_some("hedge.max_hedges");
        assert_eq!(
            t.attribute("policy_clamped_fields"),
            cut,
            "ceiling {ceiling}"
        );
    }
}

#[test]
fn retry_after_hints_of_any_length_under_any_maximum() {
    for max in [Duration::ZERO, NS, SEC, Duration::MAX] {
        for overall in [None, Some(SEC), Some(Duration::MAX)] {
            for epoch in [Instant::ZERO, Instant::MAX] {
                let mut p = Policy::DEFAULT;
                p.retry.overall_timeout = overall;
                let clock = JumpClock::at(epoch);
                let exec = Executor::builder()
                    .provider(
                        StaticProvider::builder()
                            .policy("svc.R", p)
                            .unwrap()
                            .build(),
                    )
                    .timer(clock)
                    .max_retry_after(max)
                    .build();
                for hint in [Duration::ZERO, NS, Duration::MAX] {
                    let classify = move |r: &Result<(), ()>| match r {
                        Ok(()) => Outcome::SUCCESS,
                        Err(()) => Outcome::retryable("busy").with_retry_after(hint),
                    };
                    let (result, t) =
                        drive(exec.call_classified_with_timeline("svc.R", classify, |_| {
                            core::future::ready(Err(()))
                        }))
                        .unwrap();
                    assert!(result.is_err(), "{result:?}");
                    for a in t.attempts.iter().skip(1) {
                        assert!(a.backoff <= max, "{t}");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Budgets
// ---------------------------------------------------------------------------

/// The instants every budget is asked at, in this order (time going back
/// included).
const INSTANTS: [Instant; 7] = [
    Instant::ZERO,
    Instant::from_millis(1),
    Instant::MAX,
    Instant::ZERO,
    Instant::from_nanos(u64::MAX - 1),
    Instant::from_secs(u64::MAX),
    Instant::from_millis(2),
];

/// Drives `budget` through every kind, cost and previous outcome at every
/// instant of [`INSTANTS`], settling each allowed attempt once (ran or
/// not, succeeded or failed). Returns the decisions allowed.
fn exercise(budget: &dyn Budget) -> usize {
    let kinds = [AttemptKind::Initial, AttemptKind::Retry, AttemptKind::Hedge];
    let previous = [
        None,
        Some(Outcome::retryable(reason::ATTEMPT_TIMEOUT)),
        Some(Outcome::non_retryable(PUSHBACK_STOP)),
    ];
    let outcomes = [
        Outcome::SUCCESS,
        Outcome::retryable(reason::RETRYABLE_ERROR),
        Outcome::non_retryable(PUSHBACK_STOP),
        Outcome::abort(reason::CANCELLED),
    ];
    let mut allowed = 0;
    let mut n = 0u16;
    for now in INSTANTS {
        for kind in kinds {
            for cost in [0, 1, u32::MAX] {
                for prev in previous {
                    n = n.wrapping_add(1);
                    let is_hedge = kind == AttemptKind::Hedge;
                    let info = AttemptInfo {
                        id: AttemptId(n),
                        retry_index: u32::from(kind == AttemptKind::Retry) * u32::MAX,
                        hedge_index: u32::from(is_hedge),
                        is_hedge,
                        deadline: Some(Instant::MAX),
                    };
                    let d = budget.decide(&BudgetRequest {
                        key: PolicyKey::new("", ""),
                        attempt: info,
                        kind,
                        budget: "",
                        cost,
                        previous: prev,
                        now,
                    });
                    if !d.allowed {
                        continue;
                    }
                    allowed += 1;
                    let record = AttemptRecord {
                        info,
                        start: now,
                        end: Instant::MAX,
                        outcome: outcomes[usize::from(n) % outcomes.len()],
                        cancelled: n % 5 == 0,
                        backoff: Duration::MAX,
                        budget_allowed: n % 7 != 0,
                        budget_reason: d.reason,
                    };
                    budget.settle(&record, d.reservation, now);
                }
            }
        }
    }
    allowed
}

/// Runs `f`, turning a panic into its message.
fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

#[test]
fn budgets_at_extreme_parameters_and_instants_never_panic() {
    let extremes = [0, 1, 2, 999, 1_000, 1_001, 1_000_000, 1_000_001, u32::MAX];
    let durations = [
        Duration::ZERO,
        NS,
        MS,
        SEC,
        60 * SEC,
        61 * SEC,
        Duration::MAX,
    ];
    let mut panics = Vec::new();
    let mut check = |what: String, f: &dyn Fn() -> usize| {
        if let Err(message) = no_panic(f) {
            panics.push(format!("{what}: {message}"));
        }
    };
    for &a in &extremes {
        for &b in &extremes {
            check(format!("TokenBucket::new({a}, {b})"), &|| {
                let bucket = TokenBucket::new(a, b);
                assert_eq!(bucket.capacity(), a);
                assert_eq!(bucket.refill_per_second(), b.min(MAX_REFILL_PER_SECOND));
                let allowed = exercise(&bucket);
                for now in INSTANTS {
                    assert!(bucket.available(now) <= u64::from(a));
                }
                allowed
            });
            check(format!("GrpcThrottle::new({a}, {b})"), &|| {
                let throttle = GrpcThrottle::new(a, b);
                let max = throttle.max_tokens_milli();
                assert!((1..=1_000_000).contains(&max), "{max}");
                let allowed = exercise(&throttle);
                assert!(throttle.tokens_milli() <= max);
                allowed
            });
            check(format!("GrpcThrottle::from_milli({a}, {b})"), &|| {
                exercise(&GrpcThrottle::from_milli(a, b))
            });
            check(format!("Concurrency::new({a}, {b})"), &|| {
                let c = Concurrency::new(a, b);
                let allowed = exercise(&c);
                assert_eq!((c.active(), c.extra_in_flight()), (0, 0), "all settled");
                allowed
            });
            for &d in &durations {
                check(format!("RetryRatio::new({d:?}, {a}, {b})"), &|| {
                    let ratio = RetryRatio::new(d, a, b);
                    for now in INSTANTS {
                        let _ = ratio.balance(now);
                    }
                    exercise(&ratio)
                });
            }
            for &c in &[0, 1, u32::MAX] {
                check(format!("AwsRetryQuota::new({a}, {b}, {c}, {c})"), &|| {
                    let quota = AwsRetryQuota::new(a, b, c, c).with_timeout_reasons(&[]);
                    let allowed = exercise(&quota);
                    assert!(quota.available() <= quota.capacity());
                    allowed
                });
            }
        }
    }
    check("Unlimited".into(), &|| exercise(&Unlimited));
    assert!(
        panics.is_empty(),
        "{} panics:\n{}",
        panics.len(),
        panics.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Latency stores
// ---------------------------------------------------------------------------

fn exercise_sketch(sketch: &mut LatencySketch) {
    let latencies = [
        Duration::ZERO,
        NS,
        MS,
        Duration::from_secs(200),
        Duration::MAX,
    ];
    for now in INSTANTS {
        for l in latencies {
            sketch.record(l, now);
        }
        for q in [0, 1, 500, 999, 1_000, 1_001, u32::MAX] {
            if let Some(v) = sketch.quantile(q, now) {
                assert!(v <= Duration::from_secs(140), "p{q} = {v:?}");
            }
        }
        let _ = sketch.count(now);
    }
}

#[test]
fn latency_sketches_and_trackers_at_extreme_windows_keys_and_instants() {
    for window in [
        Duration::ZERO,
        NS,
        MS,
        SEC,
        Duration::from_nanos(u64::MAX),
        Duration::MAX,
    ] {
        // The window is at least a nanosecond, at most `u64::MAX` ns; either
        // way, as the getter reports.
        let effective = window.clamp(NS, Duration::from_nanos(u64::MAX));
        for min_samples in [0, 1, u32::MAX] {
            let mut sketch = LatencySketch::new(window).with_min_samples(min_samples);
            assert_eq!(sketch.window(), effective);
            assert_eq!(sketch.min_samples(), min_samples.max(1));
            exercise_sketch(&mut sketch);
        }
        for max_keys in [0, 1, 2, usize::MAX] {
            let warned = Arc::new(AtomicU64::new(0));
            let hook = warned.clone();
            let trackers = LatencyTrackers::new(max_keys, window)
                .with_min_samples(0)
                .on_bound(move |_| {
                    hook.fetch_add(1, Ordering::SeqCst);
                });
            assert_eq!(trackers.max_keys(), max_keys.max(1));
            assert_eq!(trackers.window(), effective);
            let keys = ["a.b", "", ".", "c", "é.😀"];
            for now in INSTANTS {
                for k in keys {
                    let key = PolicyKey::parse(k);
                    trackers.record(key, Duration::MAX, now);
                    let _ = trackers.quantile(key, u32::MAX, now);
                    let _ = trackers.count(key, now);
                }
            }
            assert!(trackers.len() <= max_keys.max(1));
            let bounded = max_keys < keys.len();
            assert_eq!(trackers.bound_reached(), bounded, "{max_keys}");
            assert_eq!(warned.load(Ordering::SeqCst), u64::from(bounded));
        }
    }
}

// ---------------------------------------------------------------------------
// Breakers
// ---------------------------------------------------------------------------

/// Circuit sections with every field at an extreme, raw (as a no_std user
/// might pass them) and normalized.
fn extreme_circuits() -> Vec<CircuitPolicy> {
    let mut out = Vec::new();
    for n in [0, 1, 1_000, 1_001, u32::MAX] {
        for d in [Duration::ZERO, NS, ms(100), Duration::MAX] {
            let c = CircuitPolicy {
                enabled: true,
                threshold: n,
                cooldown: d,
                failure_ratio_permille: n,
                window: d,
                min_calls: n,
                half_open_max_probes: n,
                half_open_successes: n,
            };
            let mut p = Policy::DEFAULT;
            p.circuit = c.clone();
            out.push(p.normalize().unwrap().policy.circuit);
            out.push(c);
        }
    }
    out
}

#[test]
fn breakers_at_extreme_policies_and_instants_never_panic() {
    let results = [
        CallResult::Failure,
        CallResult::Success,
        CallResult::Neutral,
    ];
    for policy in extreme_circuits() {
        let mut breaker = CircuitBreaker::new(policy.clone());
        let breakers = Breakers::new(0);
        assert_eq!(breakers.max_keys(), 1);
        for (i, now) in INSTANTS.iter().copied().cycle().take(40).enumerate() {
            let result = results[i % results.len()];
            if let Ok(permit) = breaker.admit(now) {
                let _ = breaker.record(permit, result, now);
            }
            let _ = breaker.state(now);
            let _ = breaker.window_counts(now);
            let key = PolicyKey::parse(["a", "b"][i % 2]);
            match breakers.admit_at(key, &policy, now) {
                Ok(permit) => {
                    let _ = breakers.record_at(key, permit, result, now);
                }
                Err(refusal) => {
                    assert!(
                        matches!(
                            refusal.state,
                            CircuitState::Open { .. } | CircuitState::HalfOpen
                        ),
                        "{refusal}"
                    );
                }
            }
        }
        // The std-clock side maps the end of time without overflow.
        let far = std::time::Instant::now() + Duration::from_secs(1 << 32);
        let _ = breakers.state(PolicyKey::parse("a"), far);
        if let Ok(permit) = breakers.admit(PolicyKey::parse("a"), &policy, far) {
            let _ = breakers.record(PolicyKey::parse("a"), permit, CallResult::Failure, far);
        }
    }
}

#[test]
fn an_extreme_circuit_policy_through_the_executor_opens_with_a_clear_error() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 1;
    p.circuit = CircuitPolicy {
        enabled: true,
        threshold: 1,
        cooldown: Duration::MAX,
        failure_ratio_permille: u32::MAX,
        window: Duration::MAX,
        min_calls: u32::MAX,
        half_open_max_probes: u32::MAX,
        half_open_successes: u32::MAX,
    };
    // (At `Instant::MAX` itself an open circuit's end saturates to now, so
    // it is half-open at once: there is no later instant to wait for.)
    for epoch in [Instant::ZERO, Instant::from_secs(1 << 30)] {
        let exec = Executor::builder()
            .provider(
                StaticProvider::builder()
                    .policy("svc.C", p.clone())
                    .unwrap()
                    .build(),
            )
            .timer(JumpClock::at(epoch))
            .build();
        let (first, t) =
            drive(exec.call_with_timeline("svc.C", |_| core::future::ready(Err::<(), _>(()))))
                .unwrap();
        assert!(
            matches!(first, Err(Error::RetriesExhausted { .. })),
            "{first:?}"
        );
        assert_eq!(
            t.attribute("policy_clamped_fields"),
            Some(
                "circuit.failure_ratio_permille,circuit.half_open_max_probes,\
                 circuit.half_open_successes"
            )
        );
        let second = drive(exec.call("svc.C", |_| core::future::ready(Ok::<_, ()>(())))).unwrap();
        assert!(
            matches!(
                second,
                Err(Error::CircuitOpen {
                    reason: "circuit_open"
                })
            ),
            "{epoch:?}: {second:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------

fn constant() -> Backend {
    Backend::new(Latency::Constant(ms(10)))
}

/// Out-of-range parameters of a scenario, each with the field its error
/// must name.
fn bad_scenarios() -> Vec<(Scenario, &'static str)> {
    let nan = f64::NAN;
    let on = |b: Backend| Scenario::new(Policy::DEFAULT, b);
    let latency = |l: Latency| on(Backend::new(l));
    let lognormal = |sigma| latency(Latency::LogNormal { median: MS, sigma });
    let pareto = |shape| Latency::Pareto { scale: MS, shape };
    let bursts = |every, error_rate| Bursts {
        every,
        length: MS,
        error_rate,
    };
    let mut cases = vec![
        (on(constant()).calls(0), "calls"),
        (
            on(constant().bursts(bursts(Duration::ZERO, 0.5))),
            "backend.bursts.every",
        ),
        (
            on(constant().bursts(bursts(SEC, f64::INFINITY))),
            "backend.bursts.error_rate",
        ),
        (
            on(constant().brownout(Brownout {
                window: None,
                capacity: 0,
            })),
            "backend.brownout.capacity",
        ),
        (lognormal(nan), "latency.sigma"),
        (lognormal(-1.0), "latency.sigma"),
        (latency(pareto(0.0)), "latency.shape"),
        (latency(pareto(f64::NEG_INFINITY)), "latency.shape"),
        (
            latency(Latency::bimodal(
                Latency::Constant(MS),
                Latency::Constant(SEC),
                nan,
            )),
            "latency.slow_fraction",
        ),
        (
            latency(Latency::bimodal(Latency::Constant(MS), pareto(nan), 0.5)),
            "latency.shape",
        ),
    ];
    for ceiling in [0, 11, u32::MAX] {
        cases.push((
            on(constant()).max_hedges_ceiling(ceiling),
            "max_hedges_ceiling",
        ));
    }
    for rate in [nan, -f64::from_bits(1), 1.0 + f64::EPSILON] {
        cases.push((on(constant().error_rate(rate)), "backend.error_rate"));
    }
    for rate in [0.0, -0.0, -1.0, nan, f64::INFINITY, f64::NEG_INFINITY] {
        for a in [
            Arrivals::Poisson { per_second: rate },
            Arrivals::Uniform { per_second: rate },
        ] {
            cases.push((on(constant()).arrivals(a), "arrivals.per_second"));
        }
    }
    cases
}

#[test]
fn simulator_parameters_out_of_range_are_errors_naming_them() {
    for (scenario, field) in bad_scenarios() {
        let e = scenario.run().unwrap_err();
        assert_eq!(e.field, field, "{scenario:?}");
        let message = e.to_string();
        assert!(
            message.starts_with(field) && message.contains(" must be "),
            "{message}"
        );
    }
}

/// Runs `scenario` with `calls` calls on its own thread, within 30 s:
/// `Err` with the panic message, or "hung".
fn run_sim(scenario: impl FnOnce() -> Scenario + Send + 'static) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = no_panic(|| {
            let report = scenario().run().map_err(|e| e.to_string())?;
            // Every summary prints.
            let _ = (report.to_string(), report.mean(), report.quantile(u32::MAX));
            Ok::<_, String>(report.calls)
        });
        let _ = tx.send(outcome);
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("error: {e}")),
        Ok(Err(panic)) => Err(format!("panic: {panic}")),
        Err(_) => Err("hung for 30 s".into()),
    }
}

/// A small scenario of `policy` against `backend`.
fn small(policy: Policy, backend: Backend) -> Scenario {
    Scenario::new(policy, backend).calls(200).seed(u64::MAX)
}

#[test]
fn the_simulator_runs_extreme_but_valid_scenarios() {
    type Make = Box<dyn FnOnce() -> Scenario + Send>;
    let sub = f64::from_bits(1);
    let mut cases: Vec<(String, Make)> = Vec::new();
    let mut add = |what: &str, make: Make| cases.push((what.to_owned(), make));
    for latency in [
        Latency::Constant(Duration::ZERO),
        Latency::Constant(Duration::MAX),
        Latency::LogNormal {
            median: Duration::MAX,
            sigma: f64::MAX,
        },
        Latency::LogNormal {
            median: NS,
            sigma: sub,
        },
        Latency::Pareto {
            scale: Duration::MAX,
            shape: sub,
        },
        Latency::Pareto {
            scale: NS,
            shape: f64::MAX,
        },
        Latency::Uniform {
            low: Duration::MAX,
            high: Duration::ZERO,
        },
        Latency::bimodal(Latency::Constant(NS), Latency::Constant(Duration::MAX), 1.0),
    ] {
        let what = format!("{latency:?}");
        add(
            &what,
            Box::new(move || small(Policy::DEFAULT, Backend::new(latency))),
        );
    }
    for rate in [0.0, -0.0, sub, 1.0] {
        add(
            &format!("error_rate({rate:e})"),
            Box::new(move || small(Policy::DEFAULT, constant().error_rate(rate))),
        );
    }
    add(
        "bursts every 1 ns, length MAX, outage (MAX, ZERO), brownout capacity 1",
        Box::new(|| {
            let backend = constant()
                .bursts(Bursts {
                    every: NS,
                    length: Duration::MAX,
                    error_rate: 1.0,
                })
                .outage(Window::new(Duration::MAX, Duration::ZERO))
                .outage(Window::new(Duration::ZERO, Duration::MAX))
                .brownout(Brownout {
                    window: Some(Window::new(Duration::ZERO, Duration::MAX)),
                    capacity: 1,
                });
            small(Policy::DEFAULT, backend)
        }),
    );
    for rate in [f64::MAX, 1e-9, 1e-12] {
        for a in [
            Arrivals::Poisson { per_second: rate },
            Arrivals::Uniform { per_second: rate },
        ] {
            add(
                &format!("{a:?}"),
                Box::new(move || small(Policy::DEFAULT, constant()).arrivals(a)),
            );
        }
    }
    for window in [Duration::ZERO, Duration::MAX] {
        add(
            &format!("latency_window({window:?})"),
            Box::new(move || {
                let mut p = base();
                p.hedge.trigger = name("hedge.trigger", "p99.9").unwrap();
                small(p, constant()).latency_window(window).warmup(100)
            }),
        );
    }
    add(
        "calls(1), warmup(0), max_hedges_ceiling(10)",
        Box::new(|| small(base(), constant()).calls(1).max_hedges_ceiling(10)),
    );
    add(
        "extreme budgets",
        Box::new(|| {
            small(base(), constant().error_rate(0.5))
                .retry_budget(|| TokenBucket::new(0, 0))
                .hedge_budget(|| Concurrency::new(u32::MAX, u32::MAX))
        }),
    );
    add(
        "one extreme shared budget",
        Box::new(|| small(base(), constant()).budget(|| RetryRatio::new(Duration::MAX, 0, 0))),
    );
    for (i, policy) in extreme_policies().into_iter().enumerate() {
        add(
            &format!("extreme policy #{i}: {policy:?}"),
            Box::new(move || {
                small(policy, constant().error_rate(0.5))
                    .calls(20)
                    .budget(|| TokenBucket::new(u32::MAX, u32::MAX))
            }),
        );
    }
    let failures: Vec<String> = cases
        .into_iter()
        .filter_map(|(what, make)| run_sim(make).err().map(|e| format!("{what}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} scenarios failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Bugs found: each test states the exact input, and passes once fixed
// ---------------------------------------------------------------------------

#[test]
fn tiny_arrival_rates_are_an_error_naming_the_field_or_run() {
    for rate in [1e-20, f64::MIN_POSITIVE, f64::from_bits(1)] {
        for a in [
            Arrivals::Uniform { per_second: rate },
            Arrivals::Poisson { per_second: rate },
        ] {
            let outcome = run_sim(move || small(Policy::DEFAULT, constant()).arrivals(a));
            assert!(
                outcome
                    .as_ref()
                    .map_or_else(|e| e.starts_with("error: arrivals.per_second"), |()| true),
                "{a:?}: {outcome:?}"
            );
        }
    }
}

#[test]
fn a_warmup_and_call_count_beyond_u64_is_an_error_naming_them() {
    let outcome = run_sim(|| small(Policy::DEFAULT, constant()).warmup(u64::MAX).calls(1));
    let e = outcome.unwrap_err();
    assert!(
        e.starts_with("error: warmup") || e.starts_with("error: calls"),
        "{e}"
    );
}

#[test]
fn a_zero_scale_latency_is_zero_or_an_error_naming_the_field() {
    for latency in [
        Latency::Pareto {
            scale: Duration::ZERO,
            shape: 0.001,
        },
        Latency::LogNormal {
            median: Duration::ZERO,
            sigma: 1e308,
        },
    ] {
        match Scenario::new(Policy::DEFAULT, Backend::new(latency.clone()))
            .calls(100)
            .run()
        {
            Ok(report) => assert_eq!(report.quantile(1000), Duration::ZERO, "{latency:?}"),
            Err(e) => assert!(e.field.starts_with("latency."), "{e}"),
        }
    }
}

#[test]
fn the_simulator_reports_the_fields_it_clamped() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 50;
    let report = Scenario::new(p, constant().error_rate(1.0))
        .calls(10)
        .run()
        .unwrap();
    assert_eq!(report.attempts, 100, "clamped to 10 attempts a call");
    assert!(
        report.to_string().contains("retry.max_attempts"),
        "{report}"
    );
}
