//! The backoff schedule the machine must follow, rebuilt from the docs
//! (`Jitter`'s variants, `RetryPolicy::backoff_multiplier`, the
//! `recourse_core::backoff` module) independently of the machine's own
//! `Backoff`, and drawn from the same RNG stream: the machine's seeded RNG
//! serves the jitter draws and nothing else, so a model that makes the same
//! draws in the same order knows every delay exactly.
//!
//! - the un-jittered base `b` starts at `initial_backoff`; after each delay
//!   it becomes `b × multiplier`, in fixed point (1/1000ths, truncated),
//!   capped at `max_backoff` (itself at least `initial_backoff`); the
//!   multiplier is clamped to 1..=10, NaN and infinity read as 2;
//! - `None`: `b`; `Full`: `U[0, b)`; `Equal`: `b/2 + U[0, b − b/2)`;
//!   `Decorrelated`: `U[initial, 3 × prev)` (or `initial` when that range
//!   is empty), `prev` the previous delay; every delay at most
//!   `max_backoff`;
//! - a delay is drawn whenever a retry group fails retryably and another
//!   may follow — also when a retry-after hint then replaces it.

use core::time::Duration;

use recourse_core::policy::{Jitter, RetryPolicy};
use recourse_core::time::nanos;

/// The reference schedule of one call.
#[derive(Clone, Debug)]
pub(in crate::invariants) struct Schedule {
    initial: u64,
    max: u64,
    multiplier_milli: u64,
    jitter: Jitter,
    base: u64,
    prev: u64,
    rng: fastrand::Rng,
}

impl Schedule {
    pub(in crate::invariants) fn new(r: &RetryPolicy, seed: u64) -> Self {
        let initial = nanos(r.initial_backoff);
        let max = nanos(r.max_backoff).max(initial);
        let m = r.backoff_multiplier;
        let m = if m.is_finite() {
            m.clamp(1.0, 10.0)
        } else {
            2.0
        };
        Self {
            initial,
            max,
            // Truncated to whole thousandths.
            multiplier_milli: (m * 1000.0) as u64,
            jitter: r.jitter,
            base: initial,
            prev: initial,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The next delay, and the documented range it lies in.
    pub(in crate::invariants) fn next(&mut self) -> Result<Duration, String> {
        let b = self.base;
        let (d, lo, hi) = match self.jitter {
            Jitter::None => (b, b, b),
            Jitter::Full if b == 0 => (0, 0, 0),
            Jitter::Full => (self.rng.u64(0..b), 0, b - 1),
            Jitter::Equal => {
                let half = b / 2;
                let rest = b - half;
                let extra = if rest == 0 { 0 } else { self.rng.u64(0..rest) };
                (half + extra, half, half + rest.saturating_sub(1))
            }
            Jitter::Decorrelated => {
                let hi = self.prev.saturating_mul(3);
                let d = if hi > self.initial {
                    self.rng.u64(self.initial..hi)
                } else {
                    self.initial
                };
                (d, self.initial, hi.saturating_sub(1).max(self.initial))
            }
        };
        let d = d.min(self.max);
        if !(lo.min(self.max)..=hi.min(self.max)).contains(&d) {
            return Err(format!(
                "reference backoff {d} ns outside its documented range {lo}..={hi} ({:?})",
                self.jitter
            ));
        }
        if self.jitter == Jitter::Decorrelated {
            self.prev = d;
        }
        self.base = grow(b, self.multiplier_milli).min(self.max);
        Ok(Duration::from_nanos(d))
    }
}

/// `b × m / 1000`, exact while `b × m` fits 64 bits (every normalized
/// policy: bases up to 30 s); above that the documented approximation
/// `(b / 1000) × m`, saturating.
fn grow(b: u64, m: u64) -> u64 {
    let exact = u128::from(b) * u128::from(m);
    if exact <= u128::from(u64::MAX) {
        (exact / 1000) as u64
    } else {
        (b / 1000).saturating_mul(m)
    }
}
