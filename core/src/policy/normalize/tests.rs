//! Tests of `policy/normalize.rs`.

use super::*;
use std::string::ToString;

#[test]
fn defaults_are_already_normal() {
    let n = Policy::DEFAULT.normalize().unwrap();
    assert!(n.changed.is_empty(), "{}", n.changed);
    assert_eq!(n.policy, Policy::DEFAULT);
    assert_eq!(Policy::default(), Policy::DEFAULT);
}

#[test]
fn zeros_take_defaults_and_are_reported() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 0;
    p.retry.initial_backoff = Duration::ZERO;
    p.retry.max_backoff = Duration::ZERO;
    p.retry.backoff_multiplier = 0.0;
    p.retry.budget.cost = 0;
    p.circuit.threshold = 0;
    p.circuit.cooldown = Duration::ZERO;
    p.circuit.window = Duration::ZERO;
    p.circuit.min_calls = 0;
    p.circuit.half_open_max_probes = 0;
    p.circuit.half_open_successes = 0;
    let n = p.normalize().unwrap();
    assert_eq!(n.policy, Policy::DEFAULT);
    assert_eq!(
        n.changed.to_string(),
        "retry.max_attempts,retry.initial_backoff,retry.max_backoff,\
         retry.backoff_multiplier,retry.budget.cost,circuit.threshold,circuit.cooldown,\
         circuit.window,circuit.min_calls,circuit.half_open_max_probes,\
         circuit.half_open_successes"
    );
}

#[test]
fn clamps_each_field_and_reports_it() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 11;
    p.retry.initial_backoff = Duration::from_micros(10);
    p.retry.max_backoff = Duration::from_secs(31);
    p.retry.backoff_multiplier = 0.5;
    p.retry.timeout_per_attempt = Some(Duration::from_secs(5));
    p.retry.overall_timeout = Some(Duration::from_micros(1));
    let n = p.normalize().unwrap();
    let r = &n.policy.retry;
    assert_eq!(r.max_attempts, 10);
    assert_eq!(r.initial_backoff, MS);
    assert_eq!(r.max_backoff, BACKOFF_CEILING);
    assert_eq!(r.backoff_multiplier, 1.0);
    assert_eq!(r.overall_timeout, Some(MS));
    assert_eq!(
        r.timeout_per_attempt,
        Some(MS),
        "per-attempt never beyond overall"
    );
    for f in [
        Field::MaxAttempts,
        Field::InitialBackoff,
        Field::MaxBackoff,
        Field::BackoffMultiplier,
        Field::TimeoutPerAttempt,
        Field::OverallTimeout,
    ] {
        assert!(n.changed.contains(f), "{} not reported", f.path());
    }
    assert!(!n.changed.contains(Field::MaxHedges));
}

#[test]
fn max_backoff_never_below_initial() {
    let mut p = Policy::DEFAULT;
    p.retry.initial_backoff = Duration::from_secs(2);
    p.retry.max_backoff = Duration::from_secs(1);
    let n = p.clone().normalize().unwrap();
    assert_eq!(n.policy.retry.max_backoff, Duration::from_secs(2));
    assert_eq!(n.changed.to_string(), "retry.max_backoff");
    // and the initial backoff's own ceiling is 30 s.
    p.retry.initial_backoff = Duration::from_secs(60);
    let n = p.normalize().unwrap();
    assert_eq!(n.policy.retry.initial_backoff, BACKOFF_CEILING);
    assert_eq!(n.policy.retry.max_backoff, BACKOFF_CEILING);
}

#[test]
fn zero_timeouts_disable() {
    let mut p = Policy::DEFAULT;
    p.retry.timeout_per_attempt = Some(Duration::ZERO);
    let n = p.normalize().unwrap();
    assert_eq!(n.policy.retry.timeout_per_attempt, None);
    assert_eq!(n.changed.to_string(), "retry.timeout_per_attempt");
}

#[test]
fn hedge_section_only_when_enabled_and_ceiling_is_an_executor_limit() {
    let mut p = Policy::DEFAULT;
    p.hedge.max_hedges = 9;
    p.hedge.hedge_delay = Duration::from_millis(1);
    assert!(p.clone().normalize().unwrap().changed.is_empty());
    p.hedge.enabled = true;
    let n = p.clone().normalize().unwrap();
    assert_eq!(n.policy.hedge.max_hedges, 3);
    assert_eq!(n.policy.hedge.hedge_delay, Duration::from_millis(10));
    assert_eq!(n.changed.to_string(), "hedge.max_hedges,hedge.hedge_delay");
    let n = p
        .normalize_with(Limits {
            max_hedges_ceiling: 10,
        })
        .unwrap();
    assert_eq!(n.policy.hedge.max_hedges, 9);
}

#[test]
fn hedge_budget_cost_is_normalized_whether_or_not_hedging_is_on() {
    let mut p = Policy::DEFAULT;
    p.hedge.budget.cost = 0;
    p.hedge.max_hedges = 9;
    let off = p.clone().normalize().unwrap();
    assert_eq!(off.policy.hedge.budget.cost, 1);
    assert_eq!(off.policy.hedge.max_hedges, 9, "count untouched while off");
    assert_eq!(off.changed.to_string(), "hedge.budget.cost");
    // Switching hedging on later gives the same cost as normalizing
    // with hedging on from the start.
    let mut later = off.policy.clone();
    later.hedge.enabled = true;
    p.hedge.enabled = true;
    let (later, at_once) = (later.normalize().unwrap(), p.normalize().unwrap());
    assert_eq!(later.policy, at_once.policy);
    assert_eq!(later.policy.hedge.budget.cost, 1);
    assert!(at_once.changed.contains(Field::HedgeBudgetCost));
    assert!(!later.changed.contains(Field::HedgeBudgetCost));
}

#[test]
fn amplification_out_of_range_is_an_error_naming_the_field() {
    for bad in [f64::NAN, 0.5, 0.999, -1.0, f64::NEG_INFINITY] {
        let mut p = Policy::DEFAULT;
        p.amplification.max_amplification = bad;
        let e = p.normalize().unwrap_err();
        assert_eq!(e.field, "amplification.max_amplification", "{bad}");
        assert_eq!(
            e.to_string(),
            "invalid policy field `amplification.max_amplification`: \
             out of range (allowed: 0 (off) or 1 to 100)"
        );
    }
    let mut p = Policy::DEFAULT;
    p.amplification.max_amplification = f64::INFINITY;
    p.amplification.min_per_sec = u32::MAX;
    let n = p.normalize().unwrap();
    assert_eq!(n.policy.amplification.max_amplification, 100.0);
    assert_eq!(n.policy.amplification.min_per_sec, 10_000);
    assert_eq!(
        n.changed.to_string(),
        "amplification.max_amplification,amplification.min_per_sec"
    );
    for ok in [0.0, 1.0, 1.1, 100.0] {
        let mut p = Policy::DEFAULT;
        p.amplification.max_amplification = ok;
        assert!(p.normalize().unwrap().changed.is_empty(), "{ok}");
    }
}

#[test]
fn a_deadline_quantile_past_1000_is_an_error_naming_the_field() {
    for ok in [0, 1, 900, 1000] {
        let mut p = Policy::DEFAULT;
        p.retry.deadline_quantile_permille = ok;
        assert!(p.normalize().unwrap().changed.is_empty());
    }
    for bad in [1001, u32::MAX] {
        let mut p = Policy::DEFAULT;
        p.retry.deadline_quantile_permille = bad;
        let e = p.normalize().unwrap_err();
        assert_eq!(e.field, "retry.deadline_quantile_permille");
        assert!(e.to_string().contains("1 to 1000"), "{e}");
    }
}

#[test]
fn circuit_floor() {
    let mut p = Policy::DEFAULT;
    p.circuit.cooldown = Duration::from_millis(5);
    let n = p.normalize().unwrap();
    assert_eq!(n.policy.circuit.cooldown, Duration::from_millis(100));
    assert_eq!(n.changed.to_string(), "circuit.cooldown");
}

#[test]
fn circuit_ratio_window_and_probes_are_clamped_and_reported() {
    let mut p = Policy::DEFAULT;
    // Normalized whether or not the breaker is enabled.
    p.circuit.failure_ratio_permille = 1500;
    p.circuit.window = Duration::from_millis(20);
    p.circuit.half_open_max_probes = 500;
    p.circuit.half_open_successes = 101;
    let n = p.normalize().unwrap();
    let c = &n.policy.circuit;
    assert_eq!(c.failure_ratio_permille, 1000);
    assert_eq!(c.window, Duration::from_millis(100));
    assert_eq!(c.half_open_max_probes, 100);
    assert_eq!(c.half_open_successes, 100);
    assert_eq!(
        n.changed.to_string(),
        "circuit.failure_ratio_permille,circuit.window,\
         circuit.half_open_max_probes,circuit.half_open_successes"
    );
    for f in [
        Field::CircuitFailureRatio,
        Field::CircuitWindow,
        Field::CircuitHalfOpenMaxProbes,
        Field::CircuitHalfOpenSuccesses,
    ] {
        assert!(n.changed.contains(f), "{} not reported", f.path());
    }

    // In range: untouched; a zero ratio stays off.
    let mut p = Policy::DEFAULT;
    p.circuit.enabled = true;
    p.circuit.failure_ratio_permille = 500;
    p.circuit.window = Duration::from_secs(60);
    p.circuit.min_calls = 3;
    p.circuit.half_open_max_probes = 4;
    p.circuit.half_open_successes = 2;
    let n = p.clone().normalize().unwrap();
    assert!(n.changed.is_empty(), "{}", n.changed);
    assert_eq!(n.policy, p);
    assert_eq!(Policy::DEFAULT.circuit.failure_ratio_permille, 0);
}

#[test]
fn non_finite_multiplier_is_an_error_naming_the_field() {
    for m in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut p = Policy::DEFAULT;
        p.retry.backoff_multiplier = m;
        let e = p.normalize().unwrap_err();
        assert_eq!(e.field, "retry.backoff_multiplier");
        assert_eq!(e.problem, Problem::NotFinite);
        assert!(e.to_string().contains("retry.backoff_multiplier"));
    }
}
