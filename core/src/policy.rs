//! The policy envelope: retry, hedge and circuit sections, and their
//! normalization.
//!
//! Why normalize instead of reject: policies come from files and control
//! planes written by people, and a retry loop must never run with 0 attempts,
//! a 0 ms backoff or a 40-minute sleep because a field was left out or
//! mistyped. [`Policy::normalize`] applies the reference defaults and clamps
//! and reports every field it changed by its dotted path, so the change is
//! visible (in the timeline attribute `policy_clamped_fields`) rather than
//! silent. Only values that have no sensible reading — a NaN multiplier, an
//! unknown jitter kind, a name too long to store — are errors, and the error
//! names the field.

use core::fmt;
use core::str::FromStr;
use core::time::Duration;

/// Most bytes a classifier, budget or trigger name may have (names are stored
/// inline, without an allocator).
pub const NAME_CAPACITY: usize = 32;

/// A classifier, budget or trigger name of at most [`NAME_CAPACITY`]
/// bytes, stored inline (no allocator). Empty means "the default".
///
/// Set names with the policy's setters, which know their field
/// ([`RetryPolicy::budget`], [`RetryPolicy::classifier`],
/// [`HedgePolicy::trigger`], ...); `Name::try_from` gives a [`NameTooLong`]
/// without one.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(heapless::String<NAME_CAPACITY>);

impl Name {
    /// The empty name.
    pub const fn new() -> Self {
        Self(heapless::String::new())
    }

    /// The name as a string slice.
    #[inline]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl core::ops::Deref for Name {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<&str> for Name {
    type Error = NameTooLong;
    /// The name `s`, or [`NameTooLong`] when it has more than
    /// [`NAME_CAPACITY`] bytes.
    fn try_from(s: &str) -> Result<Self, NameTooLong> {
        heapless::String::try_from(s)
            .map(Self)
            .map_err(|_| NameTooLong)
    }
}

impl FromStr for Name {
    type Err = NameTooLong;
    fn from_str(s: &str) -> Result<Self, NameTooLong> {
        Self::try_from(s)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name longer than [`NAME_CAPACITY`] bytes (the policy setters turn it
/// into a [`PolicyError`] naming their field).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NameTooLong;

impl fmt::Display for NameTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "longer than {NAME_CAPACITY} bytes")
    }
}

impl core::error::Error for NameTooLong {}

/// Makes a [`Name`], or an error naming `field` when `s` is longer than
/// [`NAME_CAPACITY`] bytes. The policy setters ([`RetryPolicy::budget`],
/// [`Policy::budget`], ...) call it with their own field.
pub fn name(field: &'static str, s: &str) -> Result<Name, PolicyError> {
    Name::try_from(s).map_err(|_| PolicyError::new(field, Problem::NameTooLong))
}

/// How a backoff delay is randomized.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Jitter {
    /// The delay is the exponential backoff itself.
    #[default]
    None,
    /// `U[0, b)`: uniformly anywhere below the backoff `b`.
    Full,
    /// `b/2 + U[0, b/2)`: at least half the backoff.
    Equal,
    /// `min(max_backoff, U[initial, prev × 3))`, AWS's decorrelated jitter.
    Decorrelated,
}

impl Jitter {
    /// The lowercase name used in configuration files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Full => "full",
            Self::Equal => "equal",
            Self::Decorrelated => "decorrelated",
        }
    }
}

impl FromStr for Jitter {
    type Err = PolicyError;
    /// Parses `none`, `full`, `equal` or `decorrelated` (ASCII case
    /// insensitive; empty means `none`); anything else is an error naming
    /// `retry.jitter`.
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let s = s.trim();
        for j in [Self::None, Self::Full, Self::Equal, Self::Decorrelated] {
            if s.eq_ignore_ascii_case(j.as_str()) {
                return Ok(j);
            }
        }
        if s.is_empty() {
            return Ok(Self::None);
        }
        Err(PolicyError::new("retry.jitter", Problem::UnknownJitter))
    }
}

impl fmt::Display for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which budget gates an attempt, and what an attempt costs there.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BudgetRef {
    /// The budget's name; empty means no budget (every attempt allowed,
    /// reason `no_budget`).
    pub name: Name,
    /// Units one attempt costs; 0 is normalized to 1.
    pub cost: u32,
}

/// Retries: how many attempts, how far apart, and how long each may take.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default 3; 0 → 3; clamped to
    /// 1..=10.
    pub max_attempts: u32,
    /// Backoff before the first retry. Default 10 ms; 0 → 10 ms; at least
    /// 1 ms, at most 30 s.
    pub initial_backoff: Duration,
    /// Ceiling of any backoff. Default 250 ms; 0 → 250 ms; at most 30 s,
    /// never below `initial_backoff`.
    pub max_backoff: Duration,
    /// Growth of the backoff per retry. Default 2; 0 → 2; clamped to
    /// 1..=10; NaN and infinity are errors.
    pub backoff_multiplier: f64,
    /// How each backoff is randomized.
    pub jitter: Jitter,
    /// Deadline of one attempt; `None` (or zero) disables it. At least 1 ms,
    /// never beyond `overall_timeout`.
    pub timeout_per_attempt: Option<Duration>,
    /// Deadline of the whole call, backoff included; `None` (or zero)
    /// disables it. At least 1 ms.
    pub overall_timeout: Option<Duration>,
    /// The classifier to use, by name; empty means the default classifier.
    pub classifier: Name,
    /// The budget that gates attempts of this call.
    pub budget: BudgetRef,
    /// Whether protocol classifiers may retry non-idempotent requests (an
    /// HTTP POST or PATCH): off by default, because a retried POST may
    /// charge a card twice.
    pub retry_non_idempotent: bool,
    /// Deadline-aware retries and hedges: with an overall timeout, a retry
    /// whose start plus this quantile (permille: 900 = p90) of the key's
    /// completed attempts lies past the deadline is not launched, and the
    /// call ends at once with `deadline_unreachable`; a hedge that would
    /// end past it is not launched. Off (0) by default, and until the
    /// key's latency tracker has enough samples. 1..=1000; above 1000 is an
    /// error naming the field.
    pub deadline_quantile_permille: u32,
}

impl RetryPolicy {
    /// The reference defaults: 3 attempts, 10 ms doubling to at most 250 ms,
    /// no jitter, no timeouts, default classifier, no budget.
    pub const DEFAULT: Self = Self {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(250),
        backoff_multiplier: 2.0,
        jitter: Jitter::None,
        timeout_per_attempt: None,
        overall_timeout: None,
        classifier: Name::new(),
        budget: BudgetRef {
            name: Name::new(),
            cost: 1,
        },
        retry_non_idempotent: false,
        deadline_quantile_permille: 0,
    };
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Hedged requests (used by the hedging release; defined and normalized now).
#[derive(Clone, Debug, PartialEq)]
pub struct HedgePolicy {
    /// Whether hedges are launched at all.
    pub enabled: bool,
    /// Hedges per retry group. Default 2; 0 → 2; clamped to 1..=3 (an
    /// executor may lift the ceiling to 10).
    pub max_hedges: u32,
    /// Delay before each hedge. Default 200 ms; 0 → 200 ms; at least 10 ms.
    pub hedge_delay: Duration,
    /// The trigger to use, by name; empty means the fixed-delay trigger.
    pub trigger: Name,
    /// Whether a non-retryable or abort outcome of one attempt ends the call.
    pub cancel_on_first_terminal: bool,
    /// The budget that gates hedges.
    pub budget: BudgetRef,
}

impl HedgePolicy {
    /// Hedging off, with the reference values ready for when it is enabled.
    pub const DEFAULT: Self = Self {
        enabled: false,
        max_hedges: 2,
        hedge_delay: Duration::from_millis(200),
        trigger: Name::new(),
        cancel_on_first_terminal: false,
        budget: BudgetRef {
            name: Name::new(),
            cost: 1,
        },
    };
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The circuit breaker (see [`crate::breaker`]): when to stop calling a
/// failing dependency, and how to find out that it has recovered.
///
/// The circuit opens on whichever rule trips first: `threshold` consecutive
/// failed calls, or (when `failure_ratio_permille` is set) a failure ratio
/// over the last `window` once at least `min_calls` calls ended there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitPolicy {
    /// Whether the breaker is consulted.
    pub enabled: bool,
    /// Consecutive failed calls that open the circuit. Default 5; 0 → 5.
    pub threshold: u32,
    /// Time open before a probe is let through. Default 10 s; 0 → 10 s; at
    /// least 100 ms.
    pub cooldown: Duration,
    /// Failed calls per 1000 calls in `window` that open the circuit (500 =
    /// half of them failed). Default 0: the ratio rule is off; above 1000 →
    /// 1000 (every call failed).
    pub failure_ratio_permille: u32,
    /// The sliding window of the ratio rule; it slides in steps of a tenth
    /// of its length. Default 10 s; 0 → 10 s; at least 100 ms.
    pub window: Duration,
    /// Calls that must have ended in `window` before the ratio rule may open
    /// the circuit. Default 20; 0 → 20.
    pub min_calls: u32,
    /// Probe calls a half-open circuit lets run at once. Default 1; 0 → 1;
    /// at most 100.
    pub half_open_max_probes: u32,
    /// Successful probes that close a half-open circuit. Default 1; 0 → 1;
    /// at most 100.
    pub half_open_successes: u32,
}

impl CircuitPolicy {
    /// Breaker off, with the reference values ready for when it is enabled.
    pub const DEFAULT: Self = Self {
        enabled: false,
        threshold: 5,
        cooldown: Duration::from_secs(10),
        failure_ratio_permille: 0,
        window: Duration::from_secs(10),
        min_calls: 20,
        half_open_max_probes: 1,
        half_open_successes: 1,
    };
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One bound on retries and hedges together, per key (see
/// [`crate::amplification`]): over a sliding 10 s window, the attempts of
/// every kind stay within `max_amplification` times the first attempts,
/// plus `min_per_sec` extra attempts per second.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct AmplificationPolicy {
    /// Attempts of any kind per first attempt (`1.1`: at most 10 % extra
    /// attempts). Default 0: off. Otherwise at least 1 (below 1 or NaN is
    /// an error naming `amplification.max_amplification`), at most 100.
    pub max_amplification: f64,
    /// Extra attempts per second allowed whatever the ratio, so that a
    /// quiet key may still retry. Default 1; at most 10 000.
    pub min_per_sec: u32,
    /// What this layer does when the request it serves is itself a retry
    /// or a hedge of a caller above (the caller's attempt count, carried by
    /// `grpc-previous-rpc-attempts` or `recourse-attempt`, is above 0).
    /// Default [`UpstreamRetry::Always`].
    pub upstream_retry: UpstreamRetry,
}

/// What a layer does when the request it serves is itself a retry or a
/// hedge upstream (see [`crate::amplification::upstream_effect`]).
///
/// The trade-off: [`NotWhenRetry`](Self::NotWhenRetry) needs no ledger and
/// cuts a 3 × 3 × 3 stack from 27 attempts at the bottom to 11, but a layer
/// still retries what its caller sent first, so the extra attempts of the
/// layers add up (1.1 × 1.1 × 1.1 with a ledger at each).
/// [`SharedAllowance`](Self::SharedAllowance) counts the retries made above
/// against this layer's amplification ledger, so that every layer draws on
/// one allowance of `max_amplification` extra attempts per original
/// request: at most 1.1× at every layer and end to end, but a layer may
/// find the allowance spent by its callers and not retry at all.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum UpstreamRetry {
    /// Retry and hedge as the policy says, whatever the caller did.
    #[default]
    Always,
    /// A request that is itself a retry or a hedge is sent once: no retry,
    /// no hedge at this layer.
    NotWhenRetry,
    /// A request that is itself a retry or a hedge counts as an extra
    /// attempt in this layer's amplification ledger (not as a first one),
    /// so that retries and hedges at every layer share one allowance.
    /// Needs `max_amplification` (an error naming
    /// `amplification.upstream_retry` otherwise).
    SharedAllowance,
}

impl UpstreamRetry {
    /// Every mode, in the order of the documentation.
    pub const ALL: [Self; 3] = [Self::Always, Self::NotWhenRetry, Self::SharedAllowance];

    /// The name used in configuration files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::NotWhenRetry => "not_when_retry",
            Self::SharedAllowance => "shared_allowance",
        }
    }
}

impl FromStr for UpstreamRetry {
    type Err = PolicyError;
    /// Parses `always`, `not_when_retry` or `shared_allowance` (ASCII case
    /// insensitive, `-` read as `_`); anything else is an error naming
    /// `amplification.upstream_retry`.
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let s = s.trim().as_bytes();
        for mode in Self::ALL {
            let name = mode.as_str().as_bytes();
            if s.len() == name.len()
                && s.iter().zip(name).all(|(a, b)| {
                    let a = if *a == b'-' { b'_' } else { *a };
                    a.eq_ignore_ascii_case(b)
                })
            {
                return Ok(mode);
            }
        }
        Err(PolicyError::new(UPSTREAM_RETRY_FIELD, Problem::OutOfRange))
    }
}

impl fmt::Display for UpstreamRetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The dotted path of [`AmplificationPolicy::upstream_retry`].
pub const UPSTREAM_RETRY_FIELD: &str = "amplification.upstream_retry";

impl AmplificationPolicy {
    /// Off, with a floor of 1 extra attempt per second for when it is set.
    pub const DEFAULT: Self = Self {
        max_amplification: 0.0,
        min_per_sec: 1,
        upstream_retry: UpstreamRetry::Always,
    };

    /// Whether the ledger is consulted (`max_amplification` is set).
    pub fn is_enabled(&self) -> bool {
        self.max_amplification >= 1.0
    }
}

impl Default for AmplificationPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A whole policy envelope.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Policy {
    /// Retries and timeouts.
    pub retry: RetryPolicy,
    /// Hedged requests.
    pub hedge: HedgePolicy,
    /// The circuit breaker.
    pub circuit: CircuitPolicy,
    /// One bound on retries and hedges together.
    pub amplification: AmplificationPolicy,
}

mod builders;

mod normalize;

pub use crate::limits::Limits;
pub use normalize::{ChangedFields, Field, Normalized};

/// A policy value with no sensible reading.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The dotted path of the field, e.g. `retry.jitter`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: Problem,
}

impl PolicyError {
    /// An error about `field`.
    pub const fn new(field: &'static str, problem: Problem) -> Self {
        Self { field, problem }
    }
}

/// What is wrong with a policy field.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A number that is NaN or infinite.
    NotFinite,
    /// A jitter kind other than `none`, `full`, `equal`, `decorrelated`.
    UnknownJitter,
    /// A name longer than [`NAME_CAPACITY`] bytes.
    NameTooLong,
    /// A number outside its allowed range ([`Problem::allowed`] says
    /// which; no payload, so that a `PolicyError` stays small).
    OutOfRange,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid policy field `{}`: ", self.field)?;
        match self.problem {
            Problem::NotFinite => f.write_str("must be a finite number (allowed range 1 to 10)"),
            Problem::UnknownJitter => {
                f.write_str("unknown jitter kind; expected one of none, full, equal, decorrelated")
            }
            Problem::NameTooLong => write!(f, "longer than {NAME_CAPACITY} bytes"),
            Problem::OutOfRange => {
                write!(
                    f,
                    "out of range (allowed: {})",
                    Problem::allowed(self.field)
                )
            }
        }
    }
}

impl Problem {
    /// The allowed range of a field whose problem is
    /// [`Problem::OutOfRange`], by dotted path.
    pub const fn allowed(field: &str) -> &'static str {
        match field.as_bytes() {
            b"amplification.max_amplification" => "0 (off) or 1 to 100",
            b"retry.deadline_quantile_permille" => "0 (off) or 1 to 1000 permille (900 = p90)",
            b"amplification.upstream_retry" => {
                "always, not_when_retry, or shared_allowance (which needs \
                 amplification.max_amplification of at least 1)"
            }
            _ => "see the field's documentation",
        }
    }
}

impl core::error::Error for PolicyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn jitter_parse() {
        assert_eq!("full".parse::<Jitter>(), Ok(Jitter::Full));
        assert_eq!(" Decorrelated ".parse::<Jitter>(), Ok(Jitter::Decorrelated));
        assert_eq!("".parse::<Jitter>(), Ok(Jitter::None));
        let e = "gaussian".parse::<Jitter>().unwrap_err();
        assert_eq!(e.field, "retry.jitter");
        assert_eq!(
            e.to_string(),
            "invalid policy field `retry.jitter`: unknown jitter kind; \
             expected one of none, full, equal, decorrelated"
        );
    }

    #[test]
    fn builders_set_what_they_name_and_stay_const() {
        const P: Policy = Policy::retries(4)
            .backoff(Duration::from_millis(20), Duration::from_secs(1))
            .multiplier(3.0)
            .jitter(Jitter::Equal)
            .attempt_timeout(Duration::from_millis(300))
            .overall_timeout(Duration::from_secs(2))
            .retry_non_idempotent(true)
            .deadline_quantile_permille(900)
            .hedge(HedgePolicy::after(Duration::from_millis(50)).max_hedges(1))
            .circuit(
                CircuitPolicy::after_failures(3)
                    .cooldown(Duration::from_secs(5))
                    .failure_ratio(500, Duration::from_secs(20), 10)
                    .half_open(2, 2),
            )
            .amplification(AmplificationPolicy::at_most(1.1).min_per_sec(0));
        let mut by_hand = Policy::DEFAULT;
        by_hand.retry.max_attempts = 5;
        by_hand.retry.initial_backoff = Duration::from_millis(20);
        by_hand.retry.max_backoff = Duration::from_secs(1);
        by_hand.retry.backoff_multiplier = 3.0;
        by_hand.retry.jitter = Jitter::Equal;
        by_hand.retry.timeout_per_attempt = Some(Duration::from_millis(300));
        by_hand.retry.overall_timeout = Some(Duration::from_secs(2));
        by_hand.retry.retry_non_idempotent = true;
        by_hand.retry.deadline_quantile_permille = 900;
        by_hand.hedge.enabled = true;
        by_hand.hedge.max_hedges = 1;
        by_hand.hedge.hedge_delay = Duration::from_millis(50);
        by_hand.circuit.enabled = true;
        by_hand.circuit.threshold = 3;
        by_hand.circuit.cooldown = Duration::from_secs(5);
        by_hand.circuit.failure_ratio_permille = 500;
        by_hand.circuit.window = Duration::from_secs(20);
        by_hand.circuit.min_calls = 10;
        by_hand.circuit.half_open_max_probes = 2;
        by_hand.circuit.half_open_successes = 2;
        by_hand.amplification.max_amplification = 1.1;
        by_hand.amplification.min_per_sec = 0;
        assert_eq!(P, by_hand);
        assert_eq!(Policy::once().retry.max_attempts, 1);
        assert_eq!(Policy::retries(u32::MAX).retry.max_attempts, u32::MAX);
        assert_eq!(Policy::DEFAULT.max_attempts(7).retry.max_attempts, 7);
        let mut retry = RetryPolicy::DEFAULT.budget_cost(2);
        retry.max_attempts = 2;
        assert_eq!(Policy::DEFAULT.retry(retry.clone()).retry, retry);
    }

    #[test]
    fn name_setters_know_their_field() {
        let long = "x".repeat(NAME_CAPACITY + 1);
        let fits = "y".repeat(NAME_CAPACITY);
        let cases: [(Result<Policy, PolicyError>, &str); 4] = [
            (Policy::DEFAULT.budget(&long), "retry.budget.name"),
            (Policy::DEFAULT.classifier(&long), "retry.classifier"),
            (
                HedgePolicy::DEFAULT
                    .trigger(&long)
                    .map(|h| Policy::DEFAULT.hedge(h)),
                "hedge.trigger",
            ),
            (
                HedgePolicy::DEFAULT
                    .budget(&long)
                    .map(|h| Policy::DEFAULT.hedge(h)),
                "hedge.budget.name",
            ),
        ];
        for (result, field) in cases {
            assert_eq!(
                result,
                Err(PolicyError::new(field, Problem::NameTooLong)),
                "{field}"
            );
        }
        let p = Policy::DEFAULT
            .budget(&fits)
            .and_then(|p| p.classifier("status"))
            .unwrap();
        assert_eq!(p.retry.budget.name, fits.as_str());
        assert_eq!(p.retry.classifier.as_str(), "status");
        let h = HedgePolicy::DEFAULT
            .trigger("p95")
            .unwrap()
            .budget("h")
            .unwrap();
        assert_eq!((h.trigger.as_str(), h.budget.name.as_str()), ("p95", "h"));
    }

    #[test]
    fn names_read_like_strings() {
        let n = Name::try_from("retries").unwrap();
        assert_eq!(n, "retries");
        assert_eq!(&*n, "retries");
        assert_eq!(n.to_string(), "retries");
        assert_eq!(std::format!("{n:?}"), "\"retries\"");
        assert!(Name::new().is_empty());
        assert_eq!(
            "ratio".parse::<Name>(),
            Ok(Name::try_from("ratio").unwrap())
        );
        let e = Name::try_from("x".repeat(33).as_str()).unwrap_err();
        assert_eq!(e, NameTooLong);
        assert_eq!(e.to_string(), "longer than 32 bytes");
    }

    #[test]
    fn long_names_are_errors() {
        assert!(name("retry.budget.name", "ratio").is_ok());
        let e = name("retry.budget.name", &"x".repeat(33)).unwrap_err();
        assert_eq!(e.field, "retry.budget.name");
        assert_eq!(e.problem, Problem::NameTooLong);
    }
}
