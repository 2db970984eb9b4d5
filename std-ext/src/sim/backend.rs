//! The simulated dependency: how long an attempt takes and whether it
//! fails, and how calls arrive.

use core::time::Duration;

use recourse_core::time::nanos;
use recourse_core::Instant;

/// The longest latency a distribution yields; longer draws are cut here so
/// that a heavy tail cannot overflow the clock.
pub const MAX_LATENCY: Duration = Duration::from_secs(3600);

/// A latency distribution.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Latency {
    /// Always this long.
    Constant(Duration),
    /// Log-normal: `median × e^(sigma × Z)`, `Z` standard normal. The usual
    /// shape of service latency; `sigma` 0.25 is a tight service, 1 a wild
    /// one.
    LogNormal {
        /// The median.
        median: Duration,
        /// The standard deviation of the logarithm.
        sigma: f64,
    },
    /// Pareto (type I): `scale × U^(-1/shape)`, at least `scale`. Heavy
    /// tailed: `shape` 1.5 has a finite mean and an infinite variance.
    Pareto {
        /// The minimum.
        scale: Duration,
        /// The tail index (> 0; smaller is heavier).
        shape: f64,
    },
    /// `slow` with probability `slow_fraction`, `fast` otherwise: the
    /// stragglers of "The Tail at Scale" (a GC pause, a cold cache).
    Bimodal {
        /// The usual latency.
        fast: Box<Latency>,
        /// The stragglers' latency.
        slow: Box<Latency>,
        /// The share of stragglers, 0..=1.
        slow_fraction: f64,
    },
    /// Uniform between the two bounds.
    Uniform {
        /// The lower bound.
        low: Duration,
        /// The upper bound.
        high: Duration,
    },
}

impl Latency {
    /// `fast` with `slow` stragglers at `slow_fraction`.
    pub fn bimodal(fast: Latency, slow: Latency, slow_fraction: f64) -> Self {
        Self::Bimodal {
            fast: Box::new(fast),
            slow: Box::new(slow),
            slow_fraction,
        }
    }

    /// "The Tail at Scale" backend: log-normal around 10 ms (sigma 0.25),
    /// with 1 % stragglers uniform in 0.8..1.2 s.
    pub fn tail_at_scale() -> Self {
        Self::bimodal(
            Self::LogNormal {
                median: Duration::from_millis(10),
                sigma: 0.25,
            },
            Self::Uniform {
                low: Duration::from_millis(800),
                high: Duration::from_millis(1_200),
            },
            0.01,
        )
    }

    /// One draw, at most [`MAX_LATENCY`].
    pub fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        Duration::from_nanos(self.sample_nanos(rng))
    }

    /// [`Latency::sample`] in nanoseconds: the same draws and the same
    /// value, without making a `Duration` of it.
    fn sample_nanos(&self, rng: &mut fastrand::Rng) -> u64 {
        let secs = match self {
            Self::Constant(d) => d.as_secs_f64(),
            Self::LogNormal { median, sigma } => {
                median.as_secs_f64() * (sigma * standard_normal(rng)).exp()
            }
            Self::Pareto { scale, shape } => {
                // 1 - U is in (0, 1]: never a division by zero.
                scale.as_secs_f64() * (1.0 - rng.f64()).powf(-1.0 / shape)
            }
            Self::Bimodal {
                fast,
                slow,
                slow_fraction,
            } => {
                return if rng.f64() < *slow_fraction {
                    slow.sample_nanos(rng)
                } else {
                    fast.sample_nanos(rng)
                }
            }
            Self::Uniform { low, high } => {
                let (low, high) = (low.as_secs_f64(), high.as_secs_f64());
                low + (high - low).max(0.0) * rng.f64()
            }
        };
        // 0 × ∞ (a zero scale with a huge factor) is NaN: read it as the
        // zero the scale says; a negative draw cannot happen but is zero
        // too, and anything too large for a Duration is the cap.
        latency_nanos(secs)
    }

    /// The distribution read once for a run: [`Draw::nanos`] draws what
    /// [`Latency::sample`] does, with the constants worked out.
    pub(crate) fn draw(&self) -> Draw {
        let leaf = match self {
            Self::Bimodal {
                fast,
                slow,
                slow_fraction,
            } => {
                return Draw::Mix {
                    fast: Box::new(fast.draw()),
                    slow: Box::new(slow.draw()),
                    slow_fraction: *slow_fraction,
                }
            }
            Self::Constant(d) => Leaf::Constant(latency_nanos(d.as_secs_f64())),
            Self::LogNormal { median, sigma } => Leaf::LogNormal {
                median: median.as_secs_f64(),
                sigma: *sigma,
            },
            Self::Pareto { scale, shape } => Leaf::Pareto {
                scale: scale.as_secs_f64(),
                exponent: -1.0 / shape,
            },
            Self::Uniform { low, high } => {
                let (low, high) = (low.as_secs_f64(), high.as_secs_f64());
                Leaf::Uniform {
                    low,
                    width: (high - low).max(0.0),
                }
            }
        };
        Draw::Leaf(leaf)
    }

    /// Checks the parameters, naming the bad one.
    pub(crate) fn check(&self) -> Result<(), SimError> {
        match self {
            Self::Constant(_) | Self::Uniform { .. } => Ok(()),
            Self::LogNormal { sigma, .. } => {
                finite_at_least("latency.sigma", *sigma, 0.0, "a finite number >= 0")
            }
            Self::Pareto { shape, .. } => {
                if shape.is_finite() && *shape > 0.0 {
                    Ok(())
                } else {
                    Err(SimError::new("latency.shape", "a finite number > 0"))
                }
            }
            Self::Bimodal {
                fast,
                slow,
                slow_fraction,
            } => {
                probability("latency.slow_fraction", *slow_fraction)?;
                fast.check()?;
                slow.check()
            }
        }
    }
}

/// A [`Latency`] read once for a run (see [`Latency::draw`]).
#[derive(Clone, Debug)]
pub(crate) enum Draw {
    /// A distribution of its own.
    Leaf(Leaf),
    /// `slow` with probability `slow_fraction`, `fast` otherwise.
    Mix {
        fast: Box<Draw>,
        slow: Box<Draw>,
        slow_fraction: f64,
    },
}

/// A distribution other than a mix, its constants worked out as
/// [`Latency::sample`] works them out on every draw.
#[derive(Copy, Clone, Debug)]
pub(crate) enum Leaf {
    /// Nanoseconds.
    Constant(u64),
    /// Seconds, and the log's standard deviation.
    LogNormal { median: f64, sigma: f64 },
    /// Seconds, and `-1 / shape`.
    Pareto { scale: f64, exponent: f64 },
    /// Seconds: the low bound and the width (at least 0).
    Uniform { low: f64, width: f64 },
}

impl Draw {
    /// One draw in nanoseconds: the same draws and the same value as
    /// [`Latency::sample`] (the same operations on the same numbers).
    // Inlined into the loop that makes the draws ahead (the engine's
    // `Ahead`), as `gap_nanos` is.
    #[inline(always)]
    pub(crate) fn nanos(&self, rng: &mut fastrand::Rng) -> u64 {
        let mut draw = self;
        let leaf = loop {
            match draw {
                Self::Leaf(leaf) => break leaf,
                Self::Mix {
                    fast,
                    slow,
                    slow_fraction,
                } => {
                    draw = if rng.f64() < *slow_fraction {
                        slow
                    } else {
                        fast
                    }
                }
            }
        };
        let secs = match *leaf {
            Leaf::Constant(nanos) => return nanos,
            Leaf::LogNormal { median, sigma } => median * (sigma * standard_normal(rng)).exp(),
            Leaf::Pareto { scale, exponent } => scale * (1.0 - rng.f64()).powf(exponent),
            Leaf::Uniform { low, width } => low + width * rng.f64(),
        };
        latency_nanos(secs)
    }
}

/// A drawn latency of `secs` seconds in nanoseconds, at most
/// [`MAX_LATENCY`]: 0 × ∞ (a zero scale with a huge factor) is NaN, read as
/// the zero the scale says; a negative draw cannot happen but is zero too.
fn latency_nanos(secs: f64) -> u64 {
    if secs.is_nan() || secs <= 0.0 {
        return 0;
    }
    // What `Duration::try_from_secs_f64(secs)`, capped, would hold.
    secs_to_nanos(secs).min(MAX_LATENCY_NANOS)
}

/// [`MAX_LATENCY`] in nanoseconds.
const MAX_LATENCY_NANOS: u64 = 3_600_000_000_000;
const _: () = assert!(MAX_LATENCY.as_nanos() == MAX_LATENCY_NANOS as u128);

/// The nanoseconds of `Duration::try_from_secs_f64(secs)` for `secs >= 0`
/// (not NaN), saturating at `u64::MAX` where that is an error or too long
/// for `u64` nanoseconds: the same rounding (to the nearest nanosecond,
/// ties to even, from the exact value of `secs`), without making a
/// `Duration` and taking its nanoseconds apart again.
///
/// `secs` is `mant × 2^(exp − 52)`; its nanoseconds are
/// `mant × 10^9 / 2^(52 − exp)` rounded, which `Duration` computes in two
/// parts (whole seconds, and the fraction's nanoseconds rounded): the whole
/// seconds are an even number of nanoseconds, so the ties round alike.
fn secs_to_nanos(secs: f64) -> u64 {
    // Usually the product in floating point settles it: it is within half
    // an ulp (at most `x / 2^53`) of the exact product, so a fraction
    // farther than `x / 2^50` from one half rounds as the exact one does.
    // Below 2^52 the whole part and the fraction are exact.
    let x = secs * 1e9;
    if (0.0..4.0e15).contains(&x) {
        // In 0..2^52: fits, and in a signed integer too, whose conversions
        // to and from floating point are one instruction each (an
        // unsigned one's are several).
        let whole = x as i64;
        #[allow(clippy::cast_precision_loss)] // below 2^52: exact
        let off = x - whole as f64 - 0.5;
        let margin = x * (1.0 / 1_125_899_906_842_624.0); // 2^-50
        if off.abs() > margin {
            // Up or down is a coin flip: no branch on it. Not negative.
            return whole.unsigned_abs() + u64::from(off > 0.0);
        }
    }
    secs_to_nanos_exact(secs)
}

/// [`secs_to_nanos`] in integers, from the bits of `secs`.
fn secs_to_nanos_exact(secs: f64) -> u64 {
    const MANT_BITS: i32 = 52;
    const MANT_MASK: u64 = (1 << MANT_BITS) - 1;
    let bits = secs.to_bits();
    let mant = (bits & MANT_MASK) | (MANT_MASK + 1);
    // The exponent field is at most 0x7ff: it fits an i32.
    let exp = ((bits >> MANT_BITS) & 0x7ff) as i32 - 1023;
    if exp < -31 {
        // Less than half a nanosecond (a subnormal included).
        return 0;
    }
    if exp >= MANT_BITS {
        // Whole seconds (infinity and 2^64 s and beyond included).
        return if exp < 64 {
            (mant << (exp - MANT_BITS)).saturating_mul(1_000_000_000)
        } else {
            u64::MAX
        };
    }
    // `shift` is in 1..=83 and the product below 2^83.
    let shift = (MANT_BITS - exp) as u32;
    let product = u128::from(mant) * 1_000_000_000;
    // Rounded half up; a tie (nothing left below the shift once the half
    // is added) goes back down to the even neighbour.
    let sum = product + (1u128 << (shift - 1));
    let rounded = sum >> shift;
    let tie = sum.trailing_zeros() >= shift;
    let rounded = rounded - u128::from(tie && rounded & 1 == 1);
    // Below 2^52 × 10^9 / 2 + 1: fits.
    u64::try_from(rounded).unwrap_or(u64::MAX)
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64(); // (0, 1]
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (core::f64::consts::TAU * u2).cos()
}

/// A span of simulated time, `start..end`, counted from the simulation's
/// start.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// When it begins.
    pub start: Duration,
    /// When it ends (exclusive).
    pub end: Duration,
}

impl Window {
    /// `start..end`.
    pub const fn new(start: Duration, end: Duration) -> Self {
        Self { start, end }
    }

    fn contains(&self, t: Duration) -> bool {
        self.start <= t && t < self.end
    }
}

/// Recurring error bursts: for `length` out of every `every`, attempts fail
/// with probability `error_rate` instead of the base rate.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Bursts {
    /// The period.
    pub every: Duration,
    /// How long each burst lasts, from the start of its period.
    pub length: Duration,
    /// The error rate during a burst, 0..=1.
    pub error_rate: f64,
}

/// Where latency grows with load: while more than `capacity` attempts are
/// at the backend, each new one takes its drawn latency times
/// `in_flight / capacity` (a queue forming in front of `capacity` workers).
/// Cancelled attempts keep loading the backend until they would have ended,
/// as a server that does not notice the client left.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Brownout {
    /// When the backend is load-sensitive; `None`: always.
    pub window: Option<Window>,
    /// Attempts it serves at full speed.
    pub capacity: u32,
}

/// The simulated dependency.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    pub(crate) latency: Latency,
    pub(crate) error_rate: f64,
    pub(crate) bursts: Option<Bursts>,
    pub(crate) outages: Vec<Window>,
    pub(crate) brownout: Option<Brownout>,
}

impl Backend {
    /// A backend with `latency` that never fails.
    pub fn new(latency: Latency) -> Self {
        Self {
            latency,
            error_rate: 0.0,
            bursts: None,
            outages: Vec::new(),
            brownout: None,
        }
    }

    /// Each attempt fails (retryably) with probability `rate`, after its
    /// drawn latency.
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// Recurring error bursts.
    pub fn bursts(mut self, bursts: Bursts) -> Self {
        self.bursts = Some(bursts);
        self
    }

    /// Every attempt launched in `window` fails.
    pub fn outage(mut self, window: Window) -> Self {
        self.outages.push(window);
        self
    }

    /// Latency grows with load (see [`Brownout`]).
    pub fn brownout(mut self, brownout: Brownout) -> Self {
        self.brownout = Some(brownout);
        self
    }

    pub(crate) fn check(&self) -> Result<(), SimError> {
        self.latency.check()?;
        probability("backend.error_rate", self.error_rate)?;
        if let Some(b) = &self.bursts {
            probability("backend.bursts.error_rate", b.error_rate)?;
            if b.every.is_zero() {
                return Err(SimError::new("backend.bursts.every", "more than zero"));
            }
        }
        if self.brownout.is_some_and(|b| b.capacity == 0) {
            return Err(SimError::new("backend.brownout.capacity", "at least 1"));
        }
        Ok(())
    }

    /// One attempt launched at `at` (time since the start) with
    /// `in_flight` attempts already at the backend: its latency and
    /// whether it fails.
    #[cfg(test)]
    pub(crate) fn attempt(
        &self,
        at: Duration,
        in_flight: u32,
        rng: &mut fastrand::Rng,
    ) -> (Duration, bool) {
        let at = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        let (latency, failed) = self.attempt_nanos(&self.latency.draw(), at, in_flight, rng);
        (Duration::from_nanos(latency), failed)
    }

    /// One attempt launched `at` nanoseconds after the start with
    /// `in_flight` attempts already at the backend: its latency in
    /// nanoseconds, drawn from `draw` (this backend's [`Latency::draw`]),
    /// and whether it fails.
    #[cfg(test)]
    pub(crate) fn attempt_nanos(
        &self,
        draw: &Draw,
        at: u64,
        in_flight: u32,
        rng: &mut fastrand::Rng,
    ) -> (u64, bool) {
        let draws = AttemptDraws::draw(draw, rng);
        self.attempt_from(draws, at, in_flight)
    }

    /// One attempt launched `at` nanoseconds after the start with
    /// `in_flight` attempts already at the backend, from its `draws`: its
    /// latency in nanoseconds and whether it fails.
    #[inline]
    pub(crate) fn attempt_from(&self, draws: AttemptDraws, at: u64, in_flight: u32) -> (u64, bool) {
        if self.brownout.is_none() && self.bursts.is_none() && self.outages.is_empty() {
            // A backend with one error rate throughout: no need for the
            // time of the launch.
            return draws.steady(self.error_rate);
        }
        self.attempt_in_time(draws, at, in_flight)
    }

    /// The error rate, when it is the same throughout (no outage, burst
    /// or brownout): [`Backend::attempt_from`] is then
    /// [`AttemptDraws::steady`] with it, whenever the attempt launches.
    pub(crate) fn steady_error_rate(&self) -> Option<f64> {
        (self.brownout.is_none() && self.bursts.is_none() && self.outages.is_empty())
            .then_some(self.error_rate)
    }

    /// [`Backend::attempt_from`] for a backend whose behaviour changes in
    /// time or with load.
    #[inline(never)]
    fn attempt_in_time(&self, draws: AttemptDraws, at: u64, in_flight: u32) -> (u64, bool) {
        let at = Duration::from_nanos(at);
        let mut latency = draws.latency;
        if let Some(b) = self.brownout {
            let load = in_flight + 1;
            if b.window.is_none_or(|w| w.contains(at)) && load > b.capacity {
                latency = nanos(
                    Duration::from_nanos(latency)
                        .mul_f64(f64::from(load) / f64::from(b.capacity))
                        .min(MAX_LATENCY),
                );
            }
        }
        let rate = match self.bursts {
            _ if self.outages.iter().any(|w| w.contains(at)) => 1.0,
            Some(b) if duration_rem(at, b.every) < b.length => b.error_rate,
            _ => self.error_rate,
        };
        (latency, draws.failure < rate)
    }
}

/// What one attempt draws, whatever the backend makes of it: its latency,
/// then the number in `0..1` its failure is decided by (drawn even at an
/// error rate of 0 or 1, so that the latency stream does not depend on the
/// error settings). Only the backend draws from its random source, one
/// attempt after another, so the draws can be made ahead of the attempts
/// (see the engine's `Ahead`).
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct AttemptDraws {
    latency: u64,
    failure: f64,
}

impl AttemptDraws {
    /// The attempt's latency in nanoseconds and whether it fails, at a
    /// backend whose error rate is `error_rate` throughout.
    #[inline(always)]
    pub(crate) fn steady(self, error_rate: f64) -> (u64, bool) {
        (self.latency, self.failure < error_rate)
    }

    /// The next attempt's draws from `rng`, from the latency `draw`.
    #[inline]
    pub(crate) fn draw(draw: &Draw, rng: &mut fastrand::Rng) -> Self {
        let latency = draw.nanos(rng);
        let failure = rng.f64();
        Self { latency, failure }
    }
}

fn duration_rem(t: Duration, period: Duration) -> Duration {
    let n = t.as_nanos() % period.as_nanos().max(1);
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// How calls arrive: open loop, whatever the backend does.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Arrivals {
    /// A Poisson process: exponential gaps averaging `1 / per_second`.
    Poisson {
        /// Calls per second.
        per_second: f64,
    },
    /// Evenly spaced.
    Uniform {
        /// Calls per second.
        per_second: f64,
    },
}

impl Arrivals {
    /// The gap to the next arrival.
    #[cfg(test)]
    pub(crate) fn gap(&self, rng: &mut fastrand::Rng) -> Duration {
        let secs = self.gap_secs(rng);
        // A rate so low that the gap outgrows a Duration waits forever (the
        // clock saturates, so the run still ends).
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }

    /// The gap to the next arrival in nanoseconds, saturating: a rate so
    /// low that the gap outgrows the clock waits forever (the clock
    /// saturates at `u64::MAX` nanoseconds, so the run still ends).
    // Inlined into the loop that makes the gaps ahead (the engine's
    // `Ahead`) instead of called per gap (with `Draw::nanos`, about 20
    // instructions fewer per simulated call).
    #[inline(always)]
    pub(crate) fn gap_nanos(&self, rng: &mut fastrand::Rng) -> u64 {
        let secs = self.gap_secs(rng);
        if secs.is_nan() || secs < 0.0 {
            // Not with a checked rate; `try_from_secs_f64` fails the same.
            return u64::MAX;
        }
        secs_to_nanos(secs)
    }

    fn gap_secs(&self, rng: &mut fastrand::Rng) -> f64 {
        match *self {
            Self::Poisson { per_second } => -(1.0 - rng.f64()).ln() / per_second,
            Self::Uniform { per_second } => 1.0 / per_second,
        }
    }

    pub(crate) fn check(&self) -> Result<(), SimError> {
        let (Self::Poisson { per_second } | Self::Uniform { per_second }) = *self;
        if per_second.is_finite() && per_second > 0.0 {
            Ok(())
        } else {
            Err(SimError::new("arrivals.per_second", "a finite number > 0"))
        }
    }
}

/// A scenario parameter out of its range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimError {
    /// The parameter, as a dotted path.
    pub field: &'static str,
    /// What it must be.
    pub expected: &'static str,
}

impl SimError {
    pub(crate) const fn new(field: &'static str, expected: &'static str) -> Self {
        Self { field, expected }
    }
}

impl core::fmt::Display for SimError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} must be {}", self.field, self.expected)
    }
}

impl core::error::Error for SimError {}

fn probability(field: &'static str, p: f64) -> Result<(), SimError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(SimError::new(field, "a probability in 0..=1"))
    }
}

fn finite_at_least(
    field: &'static str,
    v: f64,
    min: f64,
    expected: &'static str,
) -> Result<(), SimError> {
    if v.is_finite() && v >= min {
        Ok(())
    } else {
        Err(SimError::new(field, expected))
    }
}

/// The simulation's clock starts here (an arbitrary, fixed instant).
pub(crate) const EPOCH: Instant = Instant::from_secs(1_000);

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn quantile(mut v: Vec<Duration>, q: f64) -> Duration {
        v.sort();
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
    }

    #[test]
    fn distributions_have_their_shape() {
        let mut rng = fastrand::Rng::with_seed(1);
        let draws = |l: &Latency, rng: &mut fastrand::Rng| {
            (0..20_000).map(|_| l.sample(rng)).collect::<Vec<_>>()
        };
        let ln = Latency::LogNormal {
            median: ms(10),
            sigma: 0.5,
        };
        let med = quantile(draws(&ln, &mut rng), 0.5);
        assert!(med.abs_diff(ms(10)) < ms(1), "{med:?}");
        // e^(0.5 × 2.326) ≈ 3.2: p99 about 32 ms.
        let p99 = quantile(draws(&ln, &mut rng), 0.99);
        assert!(p99 > ms(28) && p99 < ms(36), "{p99:?}");

        let pareto = Latency::Pareto {
            scale: ms(5),
            shape: 2.0,
        };
        let d = draws(&pareto, &mut rng);
        assert!(d.iter().all(|x| *x >= ms(5)));
        // P(X > 5 × 10) = 10^-2.
        let over = d.iter().filter(|x| **x > ms(50)).count();
        assert!((120..=280).contains(&over), "{over}");

        let tail = Latency::tail_at_scale();
        let d = draws(&tail, &mut rng);
        let slow = d.iter().filter(|x| **x >= ms(800)).count();
        assert!((140..=260).contains(&slow), "{slow} stragglers of 20000");
        assert!(quantile(d, 0.5).abs_diff(ms(10)) < ms(1));

        assert_eq!(Latency::Constant(ms(3)).sample(&mut rng), ms(3));
        let huge = Latency::Pareto {
            scale: Duration::from_secs(100),
            shape: 0.01,
        };
        assert!(draws(&huge, &mut rng).iter().all(|x| *x <= MAX_LATENCY));
    }

    #[test]
    fn errors_outages_bursts_and_brownouts() {
        let mut rng = fastrand::Rng::with_seed(2);
        let b = Backend::new(Latency::Constant(ms(10)))
            .error_rate(0.1)
            .outage(Window::new(ms(1_000), ms(2_000)))
            .bursts(Bursts {
                every: ms(10_000),
                length: ms(100),
                error_rate: 1.0,
            })
            .brownout(Brownout {
                window: None,
                capacity: 4,
            });
        assert!(b.attempt(ms(1_500), 0, &mut rng).1, "outage");
        assert!(b.attempt(ms(20_050), 0, &mut rng).1, "burst");
        let fails = (0..10_000)
            .filter(|_| b.attempt(ms(5_000), 0, &mut rng).1)
            .count();
        assert!((850..=1_150).contains(&fails), "{fails}");
        assert_eq!(b.attempt(ms(5_000), 3, &mut rng).0, ms(10), "at capacity");
        assert_eq!(
            b.attempt(ms(5_000), 7, &mut rng).0,
            ms(20),
            "twice the load"
        );
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = Backend::new(Latency::bimodal(
            Latency::Constant(ms(1)),
            Latency::Constant(ms(2)),
            1.5,
        ));
        assert_eq!(
            bad.check().unwrap_err().to_string(),
            "latency.slow_fraction must be a probability in 0..=1"
        );
        let bad = Backend::new(Latency::LogNormal {
            median: ms(1),
            sigma: f64::NAN,
        });
        assert_eq!(bad.check().unwrap_err().field, "latency.sigma");
        assert_eq!(
            Backend::new(Latency::Constant(ms(1)))
                .error_rate(-0.1)
                .check()
                .unwrap_err()
                .field,
            "backend.error_rate"
        );
        assert_eq!(
            Arrivals::Poisson { per_second: 0.0 }
                .check()
                .unwrap_err()
                .field,
            "arrivals.per_second"
        );
    }

    /// `secs_to_nanos` against `Duration::try_from_secs_f64`: edge cases
    /// (ties, the powers of two around the branches, the second's
    /// carry, tiny and huge values) and a million random bit patterns and
    /// draws shaped like the simulator's.
    #[test]
    fn seconds_become_the_nanoseconds_a_duration_would_hold() {
        let want = |secs: f64| {
            Duration::try_from_secs_f64(secs).map_or(u64::MAX, |d| {
                u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
            })
        };
        let mut cases = vec![
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            0.5e-9,
            1.5e-9,
            2.5e-9,
            0.999_999_999_5,
            0.999_999_999_7,
            1.0,
            1.5,
            3600.0,
            1e10,
            1.8e10,
            2f64.powi(52),
            2f64.powi(53) + 2.0,
            2f64.powi(63),
            2f64.powi(64),
            f64::INFINITY,
            f64::MAX,
        ];
        for e in -40..70 {
            let p = 2f64.powi(e);
            cases.extend([
                p,
                p * 1.000_000_1,
                p * 0.999_999_9,
                p.next_up(),
                p.next_down(),
            ]);
        }
        for n in [1u64, 3, 7, 999_999_999, 1_000_000_001, 12_345_678_901] {
            // Halfway between two nanoseconds, and next to it.
            let tie = (n as f64 + 0.5) / 1e9;
            cases.extend([tie, tie.next_up(), tie.next_down()]);
        }
        for secs in cases {
            assert_eq!(secs_to_nanos(secs), want(secs), "{secs:e}");
            assert_eq!(secs_to_nanos_exact(secs), want(secs), "{secs:e}");
        }
        let mut rng = fastrand::Rng::with_seed(16);
        for _ in 0..1_000_000 {
            // Any non-negative bit pattern but NaN.
            let bits = rng.u64(..) >> 1;
            let secs = f64::from_bits(bits);
            if !secs.is_nan() {
                assert_eq!(secs_to_nanos(secs), want(secs), "{bits:#x}");
                assert_eq!(secs_to_nanos_exact(secs), want(secs), "{bits:#x}");
            }
            // Below a few hours, where the floating-point way decides.
            let secs = rng.f64() * 10f64.powi(rng.i32(-9..5));
            assert_eq!(secs_to_nanos(secs), want(secs), "{secs:e}");
            // Latencies and gaps as the simulator draws them.
            let secs = 0.01 * (0.5 * standard_normal(&mut rng)).exp();
            assert_eq!(secs_to_nanos(secs), want(secs), "{secs:e}");
            let secs = -(1.0 - rng.f64()).ln() / 1_000.0;
            assert_eq!(secs_to_nanos(secs), want(secs), "{secs:e}");
        }
    }

    /// A run's [`Draw`] draws what [`Latency::sample`] does, value for
    /// value, from the same stream, for every distribution and a mix of
    /// mixes.
    #[test]
    fn a_runs_draw_is_the_distributions_sample() {
        let latencies = [
            Latency::Constant(ms(7)),
            Latency::Constant(Duration::new(5_000, 1)),
            Latency::LogNormal {
                median: ms(20),
                sigma: 0.99,
            },
            Latency::Pareto {
                scale: ms(5),
                shape: 1.5,
            },
            Latency::Pareto {
                scale: Duration::ZERO,
                shape: 0.01,
            },
            Latency::Uniform {
                low: ms(3),
                high: ms(1),
            },
            Latency::tail_at_scale(),
            Latency::bimodal(
                Latency::tail_at_scale(),
                Latency::bimodal(Latency::Constant(ms(1)), Latency::Constant(ms(2)), 0.5),
                0.3,
            ),
        ];
        for latency in latencies {
            let draw = latency.draw();
            let (mut a, mut b) = (fastrand::Rng::with_seed(8), fastrand::Rng::with_seed(8));
            for _ in 0..20_000 {
                let want = u64::try_from(latency.sample(&mut a).as_nanos()).unwrap();
                assert_eq!(draw.nanos(&mut b), want, "{latency:?}");
            }
            assert_eq!(a.u64(..), b.u64(..), "the same draws: {latency:?}");
        }
    }

    #[test]
    fn poisson_gaps_average_the_rate() {
        let mut rng = fastrand::Rng::with_seed(3);
        let a = Arrivals::Poisson {
            per_second: 1_000.0,
        };
        let total: Duration = (0..100_000).map(|_| a.gap(&mut rng)).sum();
        assert!(total.abs_diff(Duration::from_secs(100)) < Duration::from_secs(2));
        let u = Arrivals::Uniform { per_second: 500.0 };
        assert_eq!(u.gap(&mut rng), ms(2));
    }
}
