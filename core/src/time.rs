//! Time as the machine sees it: a monotonic [`Instant`] and the [`Timer`]
//! trait that runtime adapters implement.
//!
//! Why its own `Instant`: the machine never reads a clock. Every event carries
//! the time it happened, so the same machine runs on tokio's paused clock, on a
//! microcontroller's tick counter and in the simulator's virtual time. An
//! [`Instant`] is a plain count of nanoseconds from an epoch the timer chooses
//! (the start of the call, boot, the start of a simulation); only differences
//! between instants of one timer mean anything.

use core::fmt;
use core::future::Future;
use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on a timer's monotonic clock, in nanoseconds from the timer's epoch.
///
/// All arithmetic saturates: an instant never wraps around, and the distance
/// from a later instant to an earlier one is zero, never negative.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Self = Self(0);
    /// The latest representable instant (about 584 years after the epoch).
    pub const MAX: Self = Self(u64::MAX);

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// An instant `micros` microseconds after the epoch (saturating).
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros.saturating_mul(1_000))
    }

    /// An instant `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis.saturating_mul(1_000_000))
    }

    /// An instant `secs` seconds after the epoch (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time elapsed since the epoch.
    pub const fn since_epoch(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    #[cfg_attr(target_pointer_width = "32", inline(never))]
    pub const fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(nanos(d)))
    }

    /// `self - d`, saturating at the epoch.
    #[cfg_attr(target_pointer_width = "32", inline(never))]
    pub const fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(nanos(d)))
    }

    /// `self` plus `nanos` nanoseconds, saturating at [`Instant::MAX`]
    /// (what `self + d` is for `d` of `nanos` nanoseconds, without the
    /// conversion: the machine keeps its durations in nanoseconds).
    #[inline]
    pub(crate) const fn plus_nanos(self, nanos: u64) -> Self {
        Self(self.0.saturating_add(nanos))
    }

    /// The time from `earlier` to `self`; zero when `earlier` is later.
    #[cfg_attr(target_pointer_width = "32", inline(never))]
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Self;
    fn add(self, d: Duration) -> Self {
        self.saturating_add(d)
    }
}

impl Sub<Duration> for Instant {
    type Output = Self;
    fn sub(self, d: Duration) -> Self {
        self.saturating_sub(d)
    }
}

impl Sub for Instant {
    type Output = Duration;
    /// Saturating: an earlier minus a later instant is zero.
    fn sub(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instant({:?})", self.since_epoch())
    }
}

/// A [`Duration`] as whole nanoseconds, saturating at `u64::MAX` (584 years).
///
/// In `u64` arithmetic: [`Duration::as_nanos`] is a `u128`, whose multiply
/// and compare are several instructions each on a 32-bit target, and this
/// is inlined wherever an [`Instant`] moves by a [`Duration`].
#[cfg_attr(target_pointer_width = "32", inline(never))]
pub const fn nanos(d: Duration) -> u64 {
    match d.as_secs().checked_mul(1_000_000_000) {
        Some(secs) => secs.saturating_add(d.subsec_nanos() as u64),
        None => u64::MAX,
    }
}

/// A clock and a way to sleep until an instant on it: all a runtime adapter
/// provides.
///
/// # The contract of a timer
///
/// Written once here for every adapter, including one a microcontroller
/// program writes for its own hardware counter:
///
/// - **`now` is monotonic**: never earlier than an earlier `now` of the same
///   timer. The epoch is the timer's choice (boot, the start of a
///   simulation); only differences matter.
/// - **`sleep_until(deadline)` completes at or after `deadline`**, never
///   before: once `now() >= deadline` holds, or later. A `deadline` that is
///   already past completes at its first poll. Until then it returns
///   `Pending` and arranges to wake its task (its waker, or an interrupt
///   that ends the executor's `wfi`) when the deadline comes.
/// - **Dropping the sleep cancels it**; nothing fires afterwards.
/// - **Tick rate**: the clock may advance in ticks coarser than a
///   nanosecond (1 ms for a 1 kHz tick interrupt). Deadlines round *up* to
///   the next tick, so a sleep is never short; an attempt timeout is then
///   late by at most one tick, and times in records are whole ticks.
/// - **Wrap-around**: [`Instant`] is 64 bits of nanoseconds (584 years) and
///   never wraps. A hardware counter that does (24-bit SysTick, a 32-bit
///   tick count) is extended to 64 bits before it becomes an [`Instant`]:
///   [`TickCounter`](crate::counter::TickCounter) does that, provided it is
///   read at least twice per wrap period (a periodic interrupt is the usual
///   way), and converts deadlines back to ticks
///   ([`ticks_at`](crate::counter::TickCounter::ticks_at)) for the compare.
///
/// What the machine does when a timer breaks the contract: the async
/// driver `debug_assert`s a clock that goes back, so debug builds stop
/// there; in release builds an instant
/// earlier than one it has seen is taken as the latest one — its clock
/// never goes back, so records never end before they start and no backoff
/// is cut short by a clock step back; the driver may call `sleep_until`
/// with an instant already past, and that sleep must complete at once. A sleep that
/// completes early is trusted — the driver takes its deadline as reached —
/// which is why a sleep must never complete early.
///
/// On a microcontroller the timer is usually a zero-sized handle to a
/// `static` counter; see `examples/embedded` for a SysTick timer and the
/// `embassy` feature of `recourse-runtimes` for embassy-time's clock.
pub trait Timer {
    /// The future returned by [`Timer::sleep_until`].
    type Sleep: Future<Output = ()>;

    /// The current instant on this timer's clock.
    fn now(&self) -> Instant;

    /// A future that completes at or after `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;
}

impl<T: Timer + ?Sized> Timer for &T {
    type Sleep = T::Sleep;
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        (**self).sleep_until(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!(t + Duration::from_millis(3), Instant::from_millis(8));
        assert_eq!(t - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(t - Instant::from_millis(2), Duration::from_millis(3));
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
