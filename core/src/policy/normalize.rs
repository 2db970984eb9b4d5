//! Normalization: the reference defaults and clamps, one function per policy
//! section, each changed field reported by its dotted path.

use core::fmt;
use core::time::Duration;

use crate::limits::Limits;

use super::{
    AmplificationPolicy, CircuitPolicy, HedgePolicy, Policy, PolicyError, Problem, RetryPolicy,
};

const MS: Duration = Duration::from_millis(1);
const BACKOFF_CEILING: Duration = Duration::from_secs(30);

impl Policy {
    /// The reference defaults (see [`RetryPolicy::DEFAULT`]).
    pub const DEFAULT: Self = Self {
        retry: RetryPolicy::DEFAULT,
        hedge: HedgePolicy::DEFAULT,
        circuit: CircuitPolicy::DEFAULT,
        amplification: AmplificationPolicy::DEFAULT,
    };

    /// Applies the reference defaults and clamps with [`Limits::DEFAULT`].
    pub fn normalize(self) -> Result<Normalized, PolicyError> {
        self.normalize_with(Limits::DEFAULT)
    }

    /// Applies the reference defaults and clamps, reporting each changed
    /// field; fails only on a value with no sensible reading.
    ///
    /// ```
    /// use core::time::Duration;
    /// use recourse_core::policy::Policy;
    /// let mut p = Policy::DEFAULT;
    /// p.retry.max_attempts = 50;
    /// p.retry.max_backoff = Duration::from_secs(600);
    /// let n = p.normalize().unwrap();
    /// assert_eq!(n.policy.retry.max_attempts, 10);
    /// assert_eq!(n.policy.retry.max_backoff, Duration::from_secs(30));
    /// assert_eq!(format!("{}", n.changed), "retry.max_attempts,retry.max_backoff");
    /// ```
    pub fn normalize_with(mut self, limits: Limits) -> Result<Normalized, PolicyError> {
        if !self.retry.backoff_multiplier.is_finite() {
            return Err(PolicyError::new(
                Field::BackoffMultiplier.path(),
                Problem::NotFinite,
            ));
        }
        let amp = self.amplification.max_amplification;
        if amp.is_nan() || (amp != 0.0 && amp < 1.0) {
            return Err(PolicyError::new(
                Field::MaxAmplification.path(),
                Problem::OutOfRange,
            ));
        }
        if self.amplification.upstream_retry == super::UpstreamRetry::SharedAllowance && amp == 0.0
        {
            return Err(PolicyError::new(
                super::UPSTREAM_RETRY_FIELD,
                Problem::OutOfRange,
            ));
        }
        if self.retry.deadline_quantile_permille > 1000 {
            return Err(PolicyError::new(
                Field::DeadlineQuantile.path(),
                Problem::OutOfRange,
            ));
        }
        let mut changed = ChangedFields::EMPTY;
        normalize_amplification(&mut self.amplification, &mut changed);
        normalize_retry(&mut self.retry, &mut changed);
        normalize_hedge(&mut self.hedge, limits, &mut changed);
        normalize_circuit(&mut self.circuit, &mut changed);
        Ok(Normalized {
            policy: self,
            changed,
        })
    }
}

/// Records `field` in `changed` when `changed_now`.
fn reporter(changed: &mut ChangedFields) -> impl FnMut(Field, bool) + '_ {
    move |field, changed_now| {
        if changed_now {
            changed.insert(field);
        }
    }
}

/// `retry.*`: attempts, backoff, timeouts and the retry budget's cost; the
/// multiplier is known to be finite.
fn normalize_retry(r: &mut RetryPolicy, changed: &mut ChangedFields) {
    let mut set = reporter(changed);
    set(
        Field::MaxAttempts,
        fix(
            &mut r.max_attempts,
            |v| if v == 0 { 3 } else { v.clamp(1, 10) },
        ),
    );
    set(
        Field::InitialBackoff,
        fix(&mut r.initial_backoff, |v| {
            if v.is_zero() {
                Duration::from_millis(10)
            } else {
                v.clamp(MS, BACKOFF_CEILING)
            }
        }),
    );
    let initial = r.initial_backoff;
    set(
        Field::MaxBackoff,
        fix(&mut r.max_backoff, |v| {
            let v = if v.is_zero() {
                Duration::from_millis(250)
            } else {
                v.min(BACKOFF_CEILING)
            };
            v.max(initial)
        }),
    );
    set(
        Field::BackoffMultiplier,
        fix_f64(&mut r.backoff_multiplier, |v| {
            if v == 0.0 {
                2.0
            } else {
                v.clamp(1.0, 10.0)
            }
        }),
    );
    set(
        Field::OverallTimeout,
        fix_timeout(&mut r.overall_timeout, None),
    );
    let overall = r.overall_timeout;
    set(
        Field::TimeoutPerAttempt,
        fix_timeout(&mut r.timeout_per_attempt, overall),
    );
    set(
        Field::RetryBudgetCost,
        fix(&mut r.budget.cost, |c| c.max(1)),
    );
}

/// `hedge.*`: the budget cost always; count and delay only when hedging is
/// enabled, with the executor's ceiling.
fn normalize_hedge(h: &mut HedgePolicy, limits: Limits, changed: &mut ChangedFields) {
    let mut set = reporter(changed);
    // The cost is normalized whether or not hedging is on, so that a
    // document round-trips to the same policy when hedging is switched
    // on later (SPEC: budget cost ≤ 0 → 1).
    set(
        Field::HedgeBudgetCost,
        fix(&mut h.budget.cost, |c| c.max(1)),
    );
    if !h.enabled {
        return;
    }
    let ceiling = limits
        .max_hedges_ceiling
        .clamp(1, Limits::MAX_HEDGES_CEILING);
    set(
        Field::MaxHedges,
        fix(&mut h.max_hedges, |v| {
            if v == 0 {
                2.min(ceiling)
            } else {
                v.clamp(1, ceiling)
            }
        }),
    );
    set(
        Field::HedgeDelay,
        fix(&mut h.hedge_delay, |v| {
            if v.is_zero() {
                Duration::from_millis(200)
            } else {
                v.max(Duration::from_millis(10))
            }
        }),
    );
}

/// `circuit.*`: normalized whether or not the breaker is enabled.
fn normalize_circuit(c: &mut CircuitPolicy, changed: &mut ChangedFields) {
    let mut set = reporter(changed);
    set(
        Field::CircuitThreshold,
        fix(&mut c.threshold, |v| if v == 0 { 5 } else { v }),
    );
    set(
        Field::CircuitCooldown,
        fix(&mut c.cooldown, |v| {
            if v.is_zero() {
                Duration::from_secs(10)
            } else {
                v.max(Duration::from_millis(100))
            }
        }),
    );
    set(
        Field::CircuitFailureRatio,
        fix(&mut c.failure_ratio_permille, |v| v.min(1000)),
    );
    set(
        Field::CircuitWindow,
        fix(&mut c.window, |v| {
            if v.is_zero() {
                Duration::from_secs(10)
            } else {
                v.max(Duration::from_millis(100))
            }
        }),
    );
    set(
        Field::CircuitMinCalls,
        fix(&mut c.min_calls, |v| if v == 0 { 20 } else { v }),
    );
    set(
        Field::CircuitHalfOpenMaxProbes,
        fix(&mut c.half_open_max_probes, |v| v.clamp(1, 100)),
    );
    set(
        Field::CircuitHalfOpenSuccesses,
        fix(&mut c.half_open_successes, |v| v.clamp(1, 100)),
    );
}

/// `amplification.*`: the ratio is known to be 0 or at least 1.
fn normalize_amplification(a: &mut AmplificationPolicy, changed: &mut ChangedFields) {
    let mut set = reporter(changed);
    set(
        Field::MaxAmplification,
        fix_f64(&mut a.max_amplification, |v| v.min(100.0)),
    );
    set(
        Field::AmplificationMinPerSec,
        fix(&mut a.min_per_sec, |v| v.min(10_000)),
    );
}

fn fix<T: Copy + PartialEq>(v: &mut T, f: impl FnOnce(T) -> T) -> bool {
    let new = f(*v);
    let changed = new != *v;
    *v = new;
    changed
}

fn fix_f64(v: &mut f64, f: impl FnOnce(f64) -> f64) -> bool {
    let new = f(*v);
    // Compare bit patterns so that -0.0 → 2.0 and the like count as changes.
    let changed = new.to_bits() != v.to_bits();
    *v = new;
    changed
}

/// Zero disables; a set value is at least 1 ms and at most `ceiling`.
fn fix_timeout(v: &mut Option<Duration>, ceiling: Option<Duration>) -> bool {
    fix(v, |t| {
        let t = t.filter(|t| !t.is_zero())?.max(MS);
        Some(match ceiling {
            Some(c) => t.min(c),
            None => t,
        })
    })
}

/// A policy after [`Policy::normalize`], with the fields that changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalized {
    /// The normalized policy.
    pub policy: Policy,
    /// The fields normalization changed.
    pub changed: ChangedFields,
}

/// A policy field, by its dotted path.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `retry.max_attempts`
    MaxAttempts,
    /// `retry.initial_backoff`
    InitialBackoff,
    /// `retry.max_backoff`
    MaxBackoff,
    /// `retry.backoff_multiplier`
    BackoffMultiplier,
    /// `retry.timeout_per_attempt`
    TimeoutPerAttempt,
    /// `retry.overall_timeout`
    OverallTimeout,
    /// `retry.budget.cost`
    RetryBudgetCost,
    /// `hedge.max_hedges`
    MaxHedges,
    /// `hedge.hedge_delay`
    HedgeDelay,
    /// `hedge.budget.cost`
    HedgeBudgetCost,
    /// `circuit.threshold`
    CircuitThreshold,
    /// `circuit.cooldown`
    CircuitCooldown,
    /// `circuit.failure_ratio_permille`
    CircuitFailureRatio,
    /// `circuit.window`
    CircuitWindow,
    /// `circuit.min_calls`
    CircuitMinCalls,
    /// `circuit.half_open_max_probes`
    CircuitHalfOpenMaxProbes,
    /// `circuit.half_open_successes`
    CircuitHalfOpenSuccesses,
    /// `amplification.max_amplification`
    MaxAmplification,
    /// `amplification.min_per_sec`
    AmplificationMinPerSec,
    /// `retry.deadline_quantile_permille` (never clamped: out of range is
    /// an error)
    DeadlineQuantile,
}

impl Field {
    /// Every field, in the order [`ChangedFields`] lists them.
    pub const ALL: [Self; 20] = [
        Self::MaxAttempts,
        Self::InitialBackoff,
        Self::MaxBackoff,
        Self::BackoffMultiplier,
        Self::TimeoutPerAttempt,
        Self::OverallTimeout,
        Self::RetryBudgetCost,
        Self::MaxHedges,
        Self::HedgeDelay,
        Self::HedgeBudgetCost,
        Self::CircuitThreshold,
        Self::CircuitCooldown,
        Self::CircuitFailureRatio,
        Self::CircuitWindow,
        Self::CircuitMinCalls,
        Self::CircuitHalfOpenMaxProbes,
        Self::CircuitHalfOpenSuccesses,
        Self::MaxAmplification,
        Self::AmplificationMinPerSec,
        Self::DeadlineQuantile,
    ];

    /// The dotted path, as in configuration files and timelines.
    pub const fn path(self) -> &'static str {
        match self {
            Self::MaxAttempts => "retry.max_attempts",
            Self::InitialBackoff => "retry.initial_backoff",
            Self::MaxBackoff => "retry.max_backoff",
            Self::BackoffMultiplier => "retry.backoff_multiplier",
            Self::TimeoutPerAttempt => "retry.timeout_per_attempt",
            Self::OverallTimeout => "retry.overall_timeout",
            Self::RetryBudgetCost => "retry.budget.cost",
            Self::MaxHedges => "hedge.max_hedges",
            Self::HedgeDelay => "hedge.hedge_delay",
            Self::HedgeBudgetCost => "hedge.budget.cost",
            Self::CircuitThreshold => "circuit.threshold",
            Self::CircuitCooldown => "circuit.cooldown",
            Self::CircuitFailureRatio => "circuit.failure_ratio_permille",
            Self::CircuitWindow => "circuit.window",
            Self::CircuitMinCalls => "circuit.min_calls",
            Self::CircuitHalfOpenMaxProbes => "circuit.half_open_max_probes",
            Self::CircuitHalfOpenSuccesses => "circuit.half_open_successes",
            Self::MaxAmplification => "amplification.max_amplification",
            Self::AmplificationMinPerSec => "amplification.min_per_sec",
            Self::DeadlineQuantile => "retry.deadline_quantile_permille",
        }
    }
}

/// The set of fields normalization changed; displays as comma-separated
/// dotted paths in a fixed order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ChangedFields(u32);

impl ChangedFields {
    /// No field changed.
    pub const EMPTY: Self = Self(0);

    fn insert(&mut self, f: Field) {
        self.0 |= 1 << f as u32;
    }

    /// Whether `f` changed.
    pub const fn contains(self, f: Field) -> bool {
        self.0 & (1 << f as u32) != 0
    }

    /// Whether nothing changed.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The changed fields, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Field> {
        Field::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl fmt::Display for ChangedFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(field.path())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
                ..Limits::DEFAULT
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
    fn a_shared_allowance_without_the_ledger_is_an_error_naming_the_field() {
        use crate::policy::UpstreamRetry;
        let mut p = Policy::DEFAULT;
        p.amplification.upstream_retry = UpstreamRetry::SharedAllowance;
        let e = p.clone().normalize().unwrap_err();
        assert_eq!(e.field, "amplification.upstream_retry");
        assert_eq!(
            e.to_string(),
            "invalid policy field `amplification.upstream_retry`: out of range \
             (allowed: always, not_when_retry, or shared_allowance (which needs \
             amplification.max_amplification of at least 1))"
        );
        p.amplification.max_amplification = 1.1;
        let n = p.normalize().unwrap();
        assert!(n.changed.is_empty());
        assert_eq!(
            n.policy.amplification.upstream_retry,
            UpstreamRetry::SharedAllowance
        );
        // The other modes need no ledger.
        for mode in [UpstreamRetry::Always, UpstreamRetry::NotWhenRetry] {
            let mut p = Policy::DEFAULT;
            p.amplification.upstream_retry = mode;
            assert!(p.normalize().unwrap().changed.is_empty(), "{mode}");
        }
        // Parsing: names, case, dashes; anything else names the field.
        assert_eq!("Not-When-Retry".parse(), Ok(UpstreamRetry::NotWhenRetry));
        assert_eq!(" always ".parse(), Ok(UpstreamRetry::Always));
        for bad in ["", "never", "shared", "always!"] {
            let e = bad.parse::<UpstreamRetry>().unwrap_err();
            assert_eq!(e.field, "amplification.upstream_retry", "{bad}");
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
}
