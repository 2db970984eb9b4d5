//! The policy builders: `const` constructors and setters that take a
//! policy (or one of its sections) by value, so that a policy reads as one
//! expression and can be a `const`.

use core::time::Duration;

use super::{
    name, AmplificationPolicy, CircuitPolicy, HedgePolicy, Jitter, Policy, PolicyError,
    RetryPolicy, UpstreamRetry,
};

/// Policies built the Rust way: `const` constructors and setters that take
/// the policy by value, so a policy reads as one expression and can be a
/// `const`:
///
/// ```
/// use core::time::Duration;
/// use recourse_core::policy::{CircuitPolicy, HedgePolicy, Jitter, Policy};
///
/// const GET_USER: Policy = Policy::retries(4)
///     .backoff(Duration::from_millis(20), Duration::from_secs(1))
///     .jitter(Jitter::Full)
///     .attempt_timeout(Duration::from_millis(300))
///     .overall_timeout(Duration::from_secs(2))
///     .circuit(CircuitPolicy::after_failures(5).cooldown(Duration::from_secs(10)));
/// assert_eq!(GET_USER.retry.max_attempts, 5);
///
/// // Names are checked for length and know their field.
/// let p = Policy::retries(2).budget("retries")?.hedge(HedgePolicy::after(Duration::from_millis(50)).trigger("p95")?);
/// assert_eq!(p.retry.budget.name, "retries");
/// assert!(p.hedge.enabled);
/// let e = Policy::retries(2).classifier(&"x".repeat(40)).unwrap_err();
/// assert_eq!(e.field, "retry.classifier");
/// # Ok::<(), recourse_core::policy::PolicyError>(())
/// ```
impl Policy {
    /// The default policy with `retries` retries after the first attempt
    /// (`retries + 1` attempts in all; normalization clamps to 10).
    pub const fn retries(retries: u32) -> Self {
        Self::DEFAULT.max_attempts(retries.saturating_add(1))
    }

    /// The default policy without retries: one attempt.
    pub const fn once() -> Self {
        Self::DEFAULT.max_attempts(1)
    }

    /// This policy with `max_attempts` attempts in all, the first included.
    #[must_use]
    pub const fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.retry.max_attempts = max_attempts;
        self
    }

    /// This policy with backoff from `initial` growing to at most `max`.
    #[must_use]
    pub const fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry.initial_backoff = initial;
        self.retry.max_backoff = max;
        self
    }

    /// This policy with the backoff growing by `multiplier` per retry.
    #[must_use]
    pub const fn multiplier(mut self, multiplier: f64) -> Self {
        self.retry.backoff_multiplier = multiplier;
        self
    }

    /// This policy with `jitter`.
    #[must_use]
    pub const fn jitter(mut self, jitter: Jitter) -> Self {
        self.retry.jitter = jitter;
        self
    }

    /// This policy with each attempt cut after `timeout`.
    #[must_use]
    pub const fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.retry.timeout_per_attempt = Some(timeout);
        self
    }

    /// This policy with the whole call, backoff included, cut after
    /// `timeout`.
    #[must_use]
    pub const fn overall_timeout(mut self, timeout: Duration) -> Self {
        self.retry.overall_timeout = Some(timeout);
        self
    }

    /// This policy letting protocol classifiers retry non-idempotent
    /// requests (see [`RetryPolicy::retry_non_idempotent`]).
    #[must_use]
    pub const fn retry_non_idempotent(mut self, retry: bool) -> Self {
        self.retry.retry_non_idempotent = retry;
        self
    }

    /// This policy with deadline-aware retries at the quantile `permille`
    /// (see [`RetryPolicy::deadline_quantile_permille`]).
    #[must_use]
    pub const fn deadline_quantile_permille(mut self, permille: u32) -> Self {
        self.retry.deadline_quantile_permille = permille;
        self
    }

    /// This policy with its attempts gated by the budget `name`.
    ///
    /// # Errors
    ///
    /// `name` is longer than [`NAME_CAPACITY`](super::NAME_CAPACITY) bytes; the error names
    /// `retry.budget.name`.
    pub fn budget(mut self, name: &str) -> Result<Self, PolicyError> {
        self.retry = self.retry.budget(name)?;
        Ok(self)
    }

    /// This policy with its results classified by the classifier `name`.
    ///
    /// # Errors
    ///
    /// `name` is longer than [`NAME_CAPACITY`](super::NAME_CAPACITY) bytes; the error names
    /// `retry.classifier`.
    pub fn classifier(mut self, name: &str) -> Result<Self, PolicyError> {
        self.retry = self.retry.classifier(name)?;
        Ok(self)
    }

    /// This policy with `retry` as its retry section.
    #[must_use]
    pub const fn retry(mut self, retry: RetryPolicy) -> Self {
        // A name's storage has a destructor a `const fn` cannot run; the
        // section replaced owns no resource.
        core::mem::forget(core::mem::replace(&mut self.retry, retry));
        self
    }

    /// This policy with `hedge` as its hedge section.
    #[must_use]
    pub const fn hedge(mut self, hedge: HedgePolicy) -> Self {
        // A name's storage has a destructor a `const fn` cannot run; the
        // section replaced owns no resource.
        core::mem::forget(core::mem::replace(&mut self.hedge, hedge));
        self
    }

    /// This policy with `circuit` as its circuit-breaker section.
    #[must_use]
    pub const fn circuit(mut self, circuit: CircuitPolicy) -> Self {
        self.circuit = circuit;
        self
    }

    /// This policy with one bound on retries and hedges together (see
    /// [`AmplificationPolicy`]).
    #[must_use]
    pub const fn amplification(mut self, amplification: AmplificationPolicy) -> Self {
        self.amplification = amplification;
        self
    }
}

impl RetryPolicy {
    /// These retries gated by the budget `name`.
    ///
    /// # Errors
    ///
    /// `name` is longer than [`NAME_CAPACITY`](super::NAME_CAPACITY) bytes; the error names
    /// `retry.budget.name`.
    pub fn budget(mut self, name: &str) -> Result<Self, PolicyError> {
        self.budget.name = self::name("retry.budget.name", name)?;
        Ok(self)
    }

    /// These retries with each attempt costing `cost` budget units.
    #[must_use]
    pub const fn budget_cost(mut self, cost: u32) -> Self {
        self.budget.cost = cost;
        self
    }

    /// These retries classified by the classifier `name`.
    ///
    /// # Errors
    ///
    /// `name` is longer than [`NAME_CAPACITY`](super::NAME_CAPACITY) bytes; the error names
    /// `retry.classifier`.
    pub fn classifier(mut self, name: &str) -> Result<Self, PolicyError> {
        self.classifier = self::name("retry.classifier", name)?;
        Ok(self)
    }
}

impl HedgePolicy {
    /// Hedging on: a hedge after each `delay` (the fixed-delay trigger), at
    /// most 2 per retry group.
    pub const fn after(delay: Duration) -> Self {
        let mut h = Self::DEFAULT;
        h.enabled = true;
        h.hedge_delay = delay;
        h
    }

    /// These hedges, at most `max_hedges` per retry group.
    #[must_use]
    pub const fn max_hedges(mut self, max_hedges: u32) -> Self {
        self.max_hedges = max_hedges;
        self
    }

    /// These hedges with a non-retryable or abort outcome of one attempt
    /// ending the call.
    #[must_use]
    pub const fn cancel_on_first_terminal(mut self, cancel: bool) -> Self {
        self.cancel_on_first_terminal = cancel;
        self
    }

    /// These hedges launched by the trigger `name` (`fixed_delay`, `p95`,
    /// `max_extra_load:2%`, ...).
    ///
    /// # Errors
    ///
    /// `name` is longer than [`NAME_CAPACITY`](super::NAME_CAPACITY) bytes; the error names
    /// `hedge.trigger`.
    pub fn trigger(mut self, name: &str) -> Result<Self, PolicyError> {
        self.trigger = self::name("hedge.trigger", name)?;
        Ok(self)
    }

    /// These hedges gated by the budget `name`.
    ///
    /// # Errors
    ///
    /// `name` is longer than [`NAME_CAPACITY`](super::NAME_CAPACITY) bytes; the error names
    /// `hedge.budget.name`.
    pub fn budget(mut self, name: &str) -> Result<Self, PolicyError> {
        self.budget.name = self::name("hedge.budget.name", name)?;
        Ok(self)
    }
}

impl CircuitPolicy {
    /// The breaker on: the circuit opens after `threshold` consecutive
    /// failed calls, with the reference values otherwise.
    pub const fn after_failures(threshold: u32) -> Self {
        let mut c = Self::DEFAULT;
        c.enabled = true;
        c.threshold = threshold;
        c
    }

    /// This breaker staying open `cooldown` before it lets a probe through.
    #[must_use]
    pub const fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// This breaker also opening when `permille` of the calls in `window`
    /// failed, once at least `min_calls` ended there.
    #[must_use]
    pub const fn failure_ratio(mut self, permille: u32, window: Duration, min_calls: u32) -> Self {
        self.failure_ratio_permille = permille;
        self.window = window;
        self.min_calls = min_calls;
        self
    }

    /// This breaker's half-open state: `max_probes` probes at once,
    /// `successes` successful ones to close.
    #[must_use]
    pub const fn half_open(mut self, max_probes: u32, successes: u32) -> Self {
        self.half_open_max_probes = max_probes;
        self.half_open_successes = successes;
        self
    }
}

impl AmplificationPolicy {
    /// At most `max_amplification` attempts of any kind per first attempt,
    /// with a floor of 1 extra attempt per second.
    pub const fn at_most(max_amplification: f64) -> Self {
        Self {
            max_amplification,
            min_per_sec: 1,
            upstream_retry: UpstreamRetry::Always,
        }
    }

    /// This bound with `upstream_retry` deciding what a request that was
    /// already a retry upstream may do here.
    #[must_use]
    pub const fn upstream_retry(mut self, upstream_retry: UpstreamRetry) -> Self {
        self.upstream_retry = upstream_retry;
        self
    }

    /// This bound allowing `min_per_sec` extra attempts per second whatever
    /// the ratio.
    #[must_use]
    pub const fn min_per_sec(mut self, min_per_sec: u32) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }
}
