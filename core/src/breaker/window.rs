//! The breaker's failure-ratio window: calls and failures counted in a fixed
//! ring of time buckets, so the ratio rule sees the last `window` of calls
//! in fixed memory and the window slides without a timer.

use core::num::NonZeroU64;
use core::time::Duration;

use crate::time::{nanos, Instant};

/// Buckets of the failure-ratio window: the window slides in steps of a
/// tenth of its length.
const BUCKETS: usize = 10;

/// Calls and failures the ratio rule sees in the window.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct WindowCounts {
    /// Calls that ended with a success or a failure.
    pub calls: u32,
    /// Of those, failures.
    pub failures: u32,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Bucket {
    /// `now / width` of the calls counted here.
    index: u64,
    counts: WindowCounts,
}

const EMPTY_BUCKET: Bucket = Bucket {
    index: 0,
    counts: WindowCounts {
        calls: 0,
        failures: 0,
    },
};

/// A fixed ring of time buckets: call `t` lands in bucket `t / width`; the
/// window is the last [`BUCKETS`] bucket indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Window {
    /// Nanoseconds per bucket. Non-zero by type, so the divisions by it
    /// need no zero check (nor its panic path, in flash on a
    /// microcontroller).
    width: NonZeroU64,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    pub(super) const fn new(window: Duration) -> Self {
        let width = nanos(window) / BUCKETS as u64;
        Self {
            width: match NonZeroU64::new(width) {
                Some(width) => width,
                None => NonZeroU64::MIN,
            },
            buckets: [EMPTY_BUCKET; BUCKETS],
        }
    }

    pub(super) fn clear(&mut self) {
        self.buckets = [EMPTY_BUCKET; BUCKETS];
    }

    pub(super) fn add(&mut self, now: Instant, failed: bool) {
        let index = now.as_nanos() / self.width;
        let bucket = &mut self.buckets[(index % BUCKETS as u64) as usize];
        if bucket.index != index {
            *bucket = Bucket {
                index,
                ..EMPTY_BUCKET
            };
        }
        bucket.counts.calls = bucket.counts.calls.saturating_add(1);
        if failed {
            bucket.counts.failures = bucket.counts.failures.saturating_add(1);
        }
    }

    /// Nanoseconds per bucket: call `t` lands in bucket `t / width`.
    pub(super) const fn width(&self) -> u64 {
        self.width.get()
    }

    /// `n` successful calls counted in bucket `index`, as `n` calls of
    /// [`Window::add`] at an instant of that bucket would, given that no
    /// later call was added to its ring slot (a slot holding a later
    /// bucket keeps it: the successes are out of its window already).
    pub(super) fn add_successes(&mut self, index: u64, n: u32) {
        let bucket = &mut self.buckets[(index % BUCKETS as u64) as usize];
        if bucket.index > index {
            return;
        }
        if bucket.index != index {
            *bucket = Bucket {
                index,
                ..EMPTY_BUCKET
            };
        }
        bucket.counts.calls = bucket.counts.calls.saturating_add(n);
    }

    pub(super) fn counts(&self, now: Instant) -> WindowCounts {
        let current = now.as_nanos() / self.width;
        self.buckets
            .iter()
            .filter(|b| b.index <= current && current - b.index < BUCKETS as u64)
            .fold(WindowCounts::default(), |sum, b| WindowCounts {
                calls: sum.calls.saturating_add(b.counts.calls),
                failures: sum.failures.saturating_add(b.counts.failures),
            })
    }
}
