//! async-io's timer (smol's, and async-std's).

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use recourse_core::time::nanos;
use recourse_core::{Instant, Timer};

/// A [`Timer`] on `async_io::Timer`: works under any executor (smol,
/// async-std, `futures::executor::block_on`, even tokio), because async-io
/// drives its timers from its own reactor thread when nobody else does.
#[derive(Copy, Clone, Debug)]
pub struct AsyncIoTimer {
    epoch: std::time::Instant,
}

impl AsyncIoTimer {
    /// A timer whose epoch is now.
    pub fn new() -> Self {
        Self {
            epoch: std::time::Instant::now(),
        }
    }

    /// A timer whose instants count from `epoch` (which must not be later
    /// than any time it reads): timers that share an epoch share a clock,
    /// and making one reads no clock.
    pub fn with_epoch(epoch: std::time::Instant) -> Self {
        Self { epoch }
    }

    /// The `std` instant of `at`.
    pub fn to_std(&self, at: Instant) -> std::time::Instant {
        self.epoch + Duration::from_nanos(at.as_nanos())
    }
}

impl Default for AsyncIoTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl Timer for AsyncIoTimer {
    type Sleep = AsyncIoSleep;

    fn now(&self) -> Instant {
        Instant::from_nanos(nanos(self.epoch.elapsed()))
    }

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        AsyncIoSleep(async_io::Timer::at(self.to_std(deadline)))
    }
}

/// The sleep future of [`AsyncIoTimer`]; dropping it deregisters the timer.
#[derive(Debug)]
#[must_use = "a sleep does nothing unless polled"]
pub struct AsyncIoSleep(async_io::Timer);

impl Future for AsyncIoSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}
