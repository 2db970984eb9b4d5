//! tokio's timer.

use core::time::Duration;

use recourse_core::time::nanos;
use recourse_core::{Instant, Timer};

/// A [`Timer`] on `tokio::time`.
///
/// It reads `tokio::time::Instant`, so under `tokio::time::pause()` (or
/// `#[tokio::test(start_paused = true)]`) a call's backoff and timeouts run on
/// the paused clock and a test finishes instantly. Sleeping needs a tokio
/// runtime with the time driver enabled.
#[derive(Copy, Clone, Debug)]
pub struct TokioTimer {
    epoch: tokio::time::Instant,
}

impl TokioTimer {
    /// A timer whose epoch is now.
    pub fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
        }
    }

    /// A timer whose instants count from `epoch` (which must not be later
    /// than any time it reads): timers that share an epoch share a clock,
    /// and making one reads no clock.
    pub fn with_epoch(epoch: tokio::time::Instant) -> Self {
        Self { epoch }
    }

    /// The tokio instant of `at`.
    pub fn to_tokio(&self, at: Instant) -> tokio::time::Instant {
        self.epoch + Duration::from_nanos(at.as_nanos())
    }
}

impl Default for TokioTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl Timer for TokioTimer {
    type Sleep = tokio::time::Sleep;

    fn now(&self) -> Instant {
        Instant::from_nanos(nanos(self.epoch.elapsed()))
    }

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        tokio::time::sleep_until(self.to_tokio(deadline))
    }
}
