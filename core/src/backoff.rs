//! Exponential backoff with jitter, in integer nanoseconds.
//!
//! Why integers: `f64` runs in software on a Cortex-M4F and rounds
//! differently across platforms; the multiplier is turned into a fixed-point
//! factor once, and every delay after that is exact `u64` arithmetic, so the
//! same seed gives the same delays everywhere.
//!
//! Why jitter: clients that fail together and back off by the same amounts
//! retry together. Randomizing the delay spreads them out; the random source
//! is an injected, seedable [`fastrand::Rng`], never a global one.

use core::time::Duration;

use crate::policy::{Jitter, RetryPolicy};
use crate::time::nanos;

/// Fixed-point scale of the multiplier (1/1000ths).
const MILLI: u64 = 1000;

/// The sequence of backoff delays of one call.
///
/// Invariants: every delay is in `0..=max_backoff`; the un-jittered base
/// starts at `initial_backoff` and grows by the multiplier after each delay,
/// capped at `max_backoff`.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: u64,
    max: u64,
    multiplier_milli: u64,
    jitter: Jitter,
    /// The un-jittered backoff for the next delay.
    base: u64,
    /// The previous delay (decorrelated jitter grows from it).
    prev: u64,
}

impl Backoff {
    /// The backoff of a (normalized) retry policy.
    pub fn new(policy: &RetryPolicy) -> Self {
        BackoffSpec::new(policy).backoff()
    }

    /// The next delay; advances the sequence.
    pub fn next_delay(&mut self, rng: &mut fastrand::Rng) -> Duration {
        let b = self.base;
        let d = match self.jitter {
            Jitter::None => b,
            Jitter::Full => below(rng, b),
            Jitter::Equal => {
                let half = b / 2;
                half + below(rng, b - half)
            }
            Jitter::Decorrelated => {
                let hi = self.prev.saturating_mul(3);
                let d = if hi > self.initial {
                    rng.u64(self.initial..hi)
                } else {
                    self.initial
                };
                self.prev = d.min(self.max);
                d
            }
        }
        .min(self.max);
        self.base = grow(b, self.multiplier_milli).min(self.max);
        Duration::from_nanos(d)
    }

    /// The un-jittered backoff the next delay is drawn from.
    pub fn base(&self) -> Duration {
        Duration::from_nanos(self.base)
    }
}

/// What a [`Backoff`] is made from: the retry policy's four backoff fields,
/// copied as they are. Cheap to take on every call; the conversion to
/// integer nanoseconds and a fixed-point multiplier waits for
/// [`BackoffSpec::backoff`], which only a call that retries needs.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct BackoffSpec {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
}

impl BackoffSpec {
    /// The backoff fields of `policy`.
    pub const fn new(policy: &RetryPolicy) -> Self {
        Self {
            initial: policy.initial_backoff,
            max: policy.max_backoff,
            multiplier: policy.backoff_multiplier,
            jitter: policy.jitter,
        }
    }

    /// The sequence of delays.
    pub fn backoff(&self) -> Backoff {
        let initial = nanos(self.initial);
        let max = nanos(self.max).max(initial);
        // Normalized multipliers are in 1..=10; anything else is clamped here
        // too so that an unnormalized policy still gives bounded delays.
        let m = if self.multiplier.is_finite() {
            self.multiplier.clamp(1.0, 10.0)
        } else {
            2.0
        };
        Backoff {
            initial,
            max,
            multiplier_milli: (m * MILLI as f64) as u64,
            jitter: self.jitter,
            base: initial,
            prev: initial,
        }
    }
}

/// `b` times the fixed-point multiplier `m / 1000`, in `u64`: exact while
/// `b * m` fits (a base up to about 21 days at the largest multiplier, far
/// beyond a normalized policy's 30 s), within `m` nanoseconds above that,
/// saturating at `u64::MAX`. No 128-bit division, which is a library call
/// on 32- and 64-bit targets alike.
fn grow(b: u64, m: u64) -> u64 {
    match b.checked_mul(m) {
        Some(x) => x / MILLI,
        None => (b / MILLI).saturating_mul(m),
    }
}

/// `U[0, n)`, or 0 when `n` is 0.
fn below(rng: &mut fastrand::Rng, n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        rng.u64(0..n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(250),
            backoff_multiplier: 2.0,
            jitter,
            ..RetryPolicy::DEFAULT
        }
    }

    #[test]
    fn no_jitter_doubles_and_caps() {
        let mut b = Backoff::new(&policy(Jitter::None));
        let mut rng = fastrand::Rng::with_seed(1);
        let got: [u64; 7] = core::array::from_fn(|_| b.next_delay(&mut rng).as_millis() as u64);
        assert_eq!(got, [10, 20, 40, 80, 160, 250, 250]);
    }

    #[test]
    fn fractional_multiplier_is_exact_fixed_point() {
        let mut p = policy(Jitter::None);
        p.backoff_multiplier = 1.5;
        let mut b = Backoff::new(&p);
        let mut rng = fastrand::Rng::with_seed(1);
        let got: [u64; 4] = core::array::from_fn(|_| b.next_delay(&mut rng).as_micros() as u64);
        assert_eq!(got, [10_000, 15_000, 22_500, 33_750]);
    }

    /// Each jitter kind stays within its range over 10,000 seeded draws, per
    /// step of the sequence (the base at that step is known); 200 under Miri.
    #[test]
    fn jitter_ranges_over_10k_draws() {
        const CALLS: u32 = if cfg!(miri) { 20 } else { 1_000 };
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let p = policy(jitter);
            let max = nanos(p.max_backoff);
            let initial = nanos(p.initial_backoff);
            let mut rng = fastrand::Rng::with_seed(0x5eed);
            let (mut lo_seen, mut hi_seen) = (u64::MAX, 0);
            for _call in 0..CALLS {
                let mut b = Backoff::new(&p);
                let mut prev = initial;
                for _step in 0..10 {
                    let base = nanos(b.base());
                    let d = nanos(b.next_delay(&mut rng));
                    assert!(d <= max, "{jitter:?}: {d} above max {max}");
                    let (lo, hi) = match jitter {
                        Jitter::None => (base, base),
                        Jitter::Full => (0, base.saturating_sub(1)),
                        Jitter::Equal => (base / 2, base - 1),
                        Jitter::Decorrelated => (initial, (prev * 3 - 1).min(max)),
                    };
                    assert!(lo <= d && d <= hi, "{jitter:?}: {d} outside [{lo}, {hi}]");
                    lo_seen = lo_seen.min(d);
                    hi_seen = hi_seen.max(d);
                    prev = d;
                }
            }
            // The draws cover their range rather than sitting on one value.
            if jitter != Jitter::None {
                assert!(
                    hi_seen > 2 * lo_seen.max(1),
                    "{jitter:?}: {lo_seen}..{hi_seen}"
                );
            }
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let p = policy(Jitter::Full);
        let run = |seed| {
            let mut b = Backoff::new(&p);
            let mut rng = fastrand::Rng::with_seed(seed);
            core::array::from_fn::<_, 8, _>(|_| b.next_delay(&mut rng))
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    /// The `u64` growth agrees with exact 128-bit arithmetic wherever the
    /// product fits, and stays within `m` nanoseconds of it beyond.
    #[test]
    fn growth_matches_exact_arithmetic() {
        let exact = |b: u64, m: u64| {
            u64::try_from(u128::from(b) * u128::from(m) / u128::from(MILLI)).unwrap_or(u64::MAX)
        };
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..if cfg!(miri) { 200 } else { 10_000 } {
            let m = rng.u64(MILLI..=10 * MILLI);
            let b = match rng.u8(0..3) {
                0 => rng.u64(0..1 << 40),
                1 => rng.u64(u64::MAX / m - 1000..=u64::MAX / m + 1000),
                _ => rng.u64(..),
            };
            let (got, want) = (grow(b, m), exact(b, m));
            if b.checked_mul(m).is_some() {
                assert_eq!(got, want, "b={b} m={m}");
            } else {
                assert!(
                    got <= want && want - got <= m,
                    "b={b} m={m}: {got} vs {want}"
                );
            }
        }
        assert_eq!(grow(u64::MAX, 10 * MILLI), u64::MAX);
    }

    #[test]
    fn unnormalized_multiplier_still_bounded() {
        let mut p = policy(Jitter::None);
        p.backoff_multiplier = f64::NAN;
        let mut b = Backoff::new(&p);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..20 {
            assert!(b.next_delay(&mut rng) <= Duration::from_millis(250));
        }
    }
}
