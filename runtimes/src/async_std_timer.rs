//! async-std's timer.
//!
//! async-std is discontinued upstream (its README recommends smol;
//! RUSTSEC-2025-0052). Its `task::sleep` is async-io's timer, so this adapter
//! uses async-io directly and needs no async-std dependency: existing
//! async-std programs keep working, and moving them to smol changes nothing
//! here.

use recourse_core::{Instant, Timer};

use crate::{AsyncIoSleep, AsyncIoTimer};

/// A [`Timer`] for async-std programs: async-io's timer, which is the one
/// async-std itself uses. async-std is discontinued upstream; prefer
/// [`AsyncIoTimer`] (smol) in new code.
#[derive(Copy, Clone, Debug, Default)]
pub struct AsyncStdTimer(AsyncIoTimer);

impl AsyncStdTimer {
    /// A timer whose epoch is now.
    pub fn new() -> Self {
        Self(AsyncIoTimer::new())
    }
}

impl Timer for AsyncStdTimer {
    type Sleep = AsyncIoSleep;

    fn now(&self) -> Instant {
        self.0.now()
    }

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        self.0.sleep_until(deadline)
    }
}
