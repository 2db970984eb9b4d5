//! Policy normalization against SPEC.md's table, one row at a time: every
//! raw value either comes out as the row says or is an error naming the
//! field, every changed field is reported and no other, and normalizing
//! twice changes nothing.

use core::fmt::Debug;
use core::time::Duration;

use recourse_core::policy::{Field, Limits, Normalized, Policy, Problem};

const MS: Duration = Duration::from_millis(1);
const BACKOFF_CEILING: Duration = Duration::from_secs(30);

/// Checks `raw.normalize_with(limits)` (and `normalize()`) against the
/// spec; panics naming the field and the rule that broke.
pub fn check_normalize(raw: &Policy, limits: Limits) {
    let result = raw.clone().normalize_with(limits);
    if limits == Limits::DEFAULT {
        assert_eq!(
            raw.clone().normalize(),
            result,
            "normalize() must be normalize_with(Limits::DEFAULT)"
        );
    }
    if !raw.retry.backoff_multiplier.is_finite() {
        let e = result.expect_err("a NaN or infinite multiplier is an error");
        assert_eq!(
            (e.field, e.problem),
            ("retry.backoff_multiplier", Problem::NotFinite),
            "{raw:?}"
        );
        assert!(e.to_string().contains("retry.backoff_multiplier"));
        return;
    }
    let n = match result {
        Ok(n) => n,
        Err(e) => panic!("normalization failed on a finite multiplier: {e}\n{raw:?}"),
    };
    let _ = n.changed.to_string();
    let mut rows = Rows {
        raw,
        n: &n,
        confirmed: Vec::new(),
    };
    rows.retry();
    rows.hedge(limits);
    rows.circuit();
    rows.untouched();
    for f in n.changed.iter() {
        assert!(
            rows.confirmed.contains(&f),
            "{} reported as changed, but no row here checks it (a new field needs a row)",
            f.path()
        );
    }
    let paths: Vec<&str> = n.changed.iter().map(Field::path).collect();
    assert_eq!(n.changed.to_string(), paths.join(","));
    // Idempotent: a normalized policy is left alone.
    let again = n
        .policy
        .clone()
        .normalize_with(limits)
        .expect("a normalized policy normalizes");
    assert!(
        again.changed.is_empty() && again.policy == n.policy,
        "normalizing twice changed {}\n{raw:?}",
        again.changed
    );
}

struct Rows<'a> {
    raw: &'a Policy,
    n: &'a Normalized,
    /// Fields a row found changed.
    confirmed: Vec<Field>,
}

impl Rows<'_> {
    /// `field` came out as `want` and is reported exactly when it changed
    /// (`changed`, by the caller's notion of equality).
    fn row<T: PartialEq + Debug>(&mut self, field: Field, raw: T, got: T, want: T, changed: bool) {
        assert!(
            got == want,
            "{}: {raw:?} normalized to {got:?}, the spec says {want:?}\n{:?}",
            field.path(),
            self.raw
        );
        assert_eq!(
            self.n.changed.contains(field),
            changed,
            "{}: {raw:?} → {got:?}, reported as changed: {}",
            field.path(),
            self.n.changed.contains(field)
        );
        if changed {
            self.confirmed.push(field);
        }
    }

    fn eq_row<T: PartialEq + Debug + Copy>(&mut self, field: Field, raw: T, got: T, want: T) {
        self.row(field, raw, got, want, got != raw);
    }

    fn retry(&mut self) {
        let (r, n) = (&self.raw.retry, &self.n.policy.retry);
        // retry.max_attempts: 0 → 3; clamp 1..=10.
        let want = if r.max_attempts == 0 {
            3
        } else {
            r.max_attempts.clamp(1, 10)
        };
        self.eq_row(Field::MaxAttempts, r.max_attempts, n.max_attempts, want);
        // retry.initial_backoff: 0 → 10 ms; floor 1 ms; ceiling 30 s.
        let want = if r.initial_backoff.is_zero() {
            Duration::from_millis(10)
        } else {
            r.initial_backoff.clamp(MS, BACKOFF_CEILING)
        };
        self.eq_row(
            Field::InitialBackoff,
            r.initial_backoff,
            n.initial_backoff,
            want,
        );
        // retry.max_backoff: 0 → 250 ms; ceiling 30 s; below initial → initial.
        let want = if r.max_backoff.is_zero() {
            Duration::from_millis(250)
        } else {
            r.max_backoff.min(BACKOFF_CEILING)
        }
        .max(n.initial_backoff);
        self.eq_row(Field::MaxBackoff, r.max_backoff, n.max_backoff, want);
        assert!(n.initial_backoff <= n.max_backoff && n.max_backoff <= BACKOFF_CEILING);
        // retry.backoff_multiplier: 0 → 2; clamp 1..=10 (changes by bits).
        let m = r.backoff_multiplier;
        let want = if m == 0.0 { 2.0 } else { m.clamp(1.0, 10.0) };
        let changed = n.backoff_multiplier.to_bits() != m.to_bits();
        self.row(
            Field::BackoffMultiplier,
            m,
            n.backoff_multiplier,
            want,
            changed,
        );
        // Timeouts: 0 disables; a set value has a 1 ms floor; per-attempt
        // never beyond overall.
        let enabled = |t: Option<Duration>| t.filter(|d| !d.is_zero()).map(|d| d.max(MS));
        let overall = enabled(r.overall_timeout);
        self.eq_row(
            Field::OverallTimeout,
            r.overall_timeout,
            n.overall_timeout,
            overall,
        );
        let per = enabled(r.timeout_per_attempt).map(|d| overall.map_or(d, |o| d.min(o)));
        self.eq_row(
            Field::TimeoutPerAttempt,
            r.timeout_per_attempt,
            n.timeout_per_attempt,
            per,
        );
        // Budget cost: 0 → 1.
        self.eq_row(
            Field::RetryBudgetCost,
            r.budget.cost,
            n.budget.cost,
            r.budget.cost.max(1),
        );
    }

    fn hedge(&mut self, limits: Limits) {
        let (h, n) = (&self.raw.hedge, &self.n.policy.hedge);
        // Budget cost: 0 → 1, whether or not hedging is on.
        self.eq_row(
            Field::HedgeBudgetCost,
            h.budget.cost,
            n.budget.cost,
            h.budget.cost.max(1),
        );
        if !h.enabled {
            let mut left = h.clone();
            left.budget.cost = n.budget.cost;
            assert_eq!(
                &left, n,
                "a disabled hedge section is left alone but its cost"
            );
            for f in [Field::MaxHedges, Field::HedgeDelay] {
                assert!(!self.n.changed.contains(f), "{} reported", f.path());
            }
            return;
        }
        // max_hedges: 0 → 2, clamp 1..=ceiling (3, liftable to 10).
        let ceiling = limits
            .max_hedges_ceiling
            .clamp(1, Limits::MAX_HEDGES_CEILING);
        let want = if h.max_hedges == 0 { 2 } else { h.max_hedges }.clamp(1, ceiling);
        self.eq_row(Field::MaxHedges, h.max_hedges, n.max_hedges, want);
        // hedge_delay: 0 → 200 ms, floor 10 ms.
        let want = if h.hedge_delay.is_zero() {
            Duration::from_millis(200)
        } else {
            h.hedge_delay.max(Duration::from_millis(10))
        };
        self.eq_row(Field::HedgeDelay, h.hedge_delay, n.hedge_delay, want);
    }

    fn circuit(&mut self) {
        let (c, n) = (&self.raw.circuit, &self.n.policy.circuit);
        let or = |v: u32, default: u32| if v == 0 { default } else { v };
        let floor = |d: Duration, default: Duration| {
            if d.is_zero() {
                default
            } else {
                d.max(Duration::from_millis(100))
            }
        };
        self.eq_row(
            Field::CircuitThreshold,
            c.threshold,
            n.threshold,
            or(c.threshold, 5),
        );
        self.eq_row(
            Field::CircuitCooldown,
            c.cooldown,
            n.cooldown,
            floor(c.cooldown, Duration::from_secs(10)),
        );
        self.eq_row(
            Field::CircuitFailureRatio,
            c.failure_ratio_permille,
            n.failure_ratio_permille,
            c.failure_ratio_permille.min(1000),
        );
        self.eq_row(
            Field::CircuitWindow,
            c.window,
            n.window,
            floor(c.window, Duration::from_secs(10)),
        );
        self.eq_row(
            Field::CircuitMinCalls,
            c.min_calls,
            n.min_calls,
            or(c.min_calls, 20),
        );
        self.eq_row(
            Field::CircuitHalfOpenMaxProbes,
            c.half_open_max_probes,
            n.half_open_max_probes,
            c.half_open_max_probes.clamp(1, 100),
        );
        self.eq_row(
            Field::CircuitHalfOpenSuccesses,
            c.half_open_successes,
            n.half_open_successes,
            c.half_open_successes.clamp(1, 100),
        );
    }

    /// Fields without a rule come through as they were.
    fn untouched(&self) {
        let (r, n) = (&self.raw, &self.n.policy);
        assert_eq!(r.retry.jitter, n.retry.jitter);
        assert_eq!(r.retry.classifier, n.retry.classifier);
        assert_eq!(r.retry.budget.name, n.retry.budget.name);
        assert_eq!(r.retry.retry_non_idempotent, n.retry.retry_non_idempotent);
        assert_eq!(r.hedge.enabled, n.hedge.enabled);
        assert_eq!(r.hedge.trigger, n.hedge.trigger);
        assert_eq!(
            r.hedge.cancel_on_first_terminal,
            n.hedge.cancel_on_first_terminal
        );
        assert_eq!(r.hedge.budget.name, n.hedge.budget.name);
        assert_eq!(r.circuit.enabled, n.circuit.enabled);
    }
}
