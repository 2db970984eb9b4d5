//! Timer sources: where each call gets its [`Timer`] from.
//!
//! Why a *source* and not a timer: the right timer depends on where the
//! call runs (tokio's, so that its paused test clock works, or async-io's,
//! which works under any executor). So the executor holds a [`TimerSource`]
//! and asks it for a timer at the start of every call, in the task that
//! polls the call. [`DefaultTimer`]'s timers all count from one
//! process-wide anchor, so making one reads no clock and their instants
//! compare across calls.
//!
//! - [`DefaultTimer`] sleeps on tokio's timer (`recourse_runtimes::TokioTimer`)
//!   when a sleep is made inside a tokio runtime (with the `tokio` feature),
//!   on [`AsyncIoTimer`] otherwise; it reads tokio's clock (the paused one in
//!   a paused runtime, the system's monotonic clock everywhere else) and
//!   looks for a runtime only when it makes a sleep, never on a call that
//!   does not sleep.
//! - Any `Clone` [`Timer`] (a virtual clock in a test, an embedded tick
//!   counter, a specific runtime's timer) is its own source: each call gets a
//!   clone.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;
use recourse_core::{Instant, Timer};
use recourse_runtimes::{AsyncIoSleep, AsyncIoTimer};

/// Gives each call its timer.
///
/// Implemented by [`DefaultTimer`] and by every `Clone` [`Timer`] that is
/// `Send + Sync + 'static` (each call gets a clone).
pub trait TimerSource: Send + Sync + 'static {
    /// The timer of one call.
    type Timer: Timer;

    /// A timer for a call that starts now. Called once per call, from the
    /// task that polls the call.
    fn timer(&self) -> Self::Timer;

    /// The time on a clock shared by every call of the executor, for what
    /// outlives one call (budgets, breakers): a call's own timer may count
    /// from the call's start, and then its instants cannot be compared
    /// across calls.
    fn shared_now(&self) -> Instant;

    /// Whether every call's timer reads the clock of
    /// [`shared_now`](Self::shared_now) itself (the same epoch): then a call
    /// carries its own instants over to the shared clock as they are,
    /// without reading it. Default `false` (the shared clock is read once
    /// per call that needs it); [`DefaultTimer`] and every `Clone` timer
    /// say `true`.
    fn calls_share_its_clock(&self) -> bool {
        false
    }
}

impl<T> TimerSource for T
where
    T: Timer + Clone + Send + Sync + 'static,
{
    type Timer = T;

    fn timer(&self) -> T {
        self.clone()
    }

    /// Every call gets a clone of the same timer, so its clock is shared.
    fn shared_now(&self) -> Instant {
        self.now()
    }

    fn calls_share_its_clock(&self) -> bool {
        true
    }
}

/// The executor's default timer source: tokio's timer inside a tokio runtime
/// (with the `tokio` feature), async-io's timer everywhere else.
///
/// The choice is made where a call sleeps (a backoff, a timeout, a hedge
/// delay), in the task that polls it, so a call awaited inside
/// `#[tokio::test(start_paused = true)]` runs on the paused clock and the same
/// call under `smol::block_on` runs on async-io. The time is read from
/// tokio's clock (with the `tokio` feature), which is the paused clock inside
/// a paused runtime and the system's monotonic clock everywhere else, so a
/// call that does not sleep never looks for a runtime (issue 16: looking
/// cloned the runtime's handle, an atomic count shared by every worker
/// thread, on every call). A tokio runtime must have its
/// time driver enabled (`#[tokio::main]` and `#[tokio::test]` do); for one
/// without it, give the executor an
/// [`AsyncIoTimer`] as its timer.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DefaultTimer;

impl TimerSource for DefaultTimer {
    type Timer = DefaultCallTimer;

    /// Reads no clock and looks for no runtime: every call's timer counts
    /// from the same anchor (and holds nothing: it reads the anchor when it
    /// reads the clock, so a call's future carries no copy of it).
    fn timer(&self) -> DefaultCallTimer {
        DefaultCallTimer { _anchor: () }
    }

    /// Nanoseconds from the process-wide anchor, on tokio's clock inside a
    /// tokio runtime (so budgets refill on a paused test clock too), on the
    /// system's monotonic clock elsewhere: the clock of the calls' own
    /// timers.
    fn shared_now(&self) -> Instant {
        self.timer().now()
    }

    fn calls_share_its_clock(&self) -> bool {
        true
    }
}

/// [`anchor`] as a tokio instant.
#[cfg(feature = "tokio")]
fn tokio_epoch() -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(|| tokio::time::Instant::from_std(anchor()))
}

/// The epoch of every [`DefaultCallTimer`]: a century before the first use,
/// so that any instant read later — tokio's paused clock included, whose
/// base is the runtime's start — comes after it.
fn anchor() -> std::time::Instant {
    static ANCHOR: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *ANCHOR.get_or_init(|| {
        let now = std::time::Instant::now();
        now.checked_sub(core::time::Duration::from_secs(100 * 365 * 86_400))
            .unwrap_or(now)
    })
}

/// The timer [`DefaultTimer`] gives a call, counting from the process-wide
/// anchor (the same clock as [`DefaultTimer::shared_now`]): it reads tokio's
/// clock (with the `tokio` feature; the system's monotonic clock outside a
/// paused runtime) and sleeps on tokio's timer when the sleep is made inside
/// a tokio runtime, on async-io's otherwise. Zero-sized: the anchor is read
/// from where the process keeps it (issue 16: a call's future held a copy,
/// 16 bytes).
#[derive(Copy, Clone, Debug)]
pub struct DefaultCallTimer {
    /// Made only by [`DefaultTimer::timer`].
    _anchor: (),
}

impl DefaultCallTimer {
    /// The anchor, on tokio's clock with the `tokio` feature.
    #[cfg(feature = "tokio")]
    #[inline(always)]
    fn epoch(self) -> tokio::time::Instant {
        tokio_epoch()
    }

    #[cfg(not(feature = "tokio"))]
    #[inline(always)]
    fn epoch(self) -> std::time::Instant {
        anchor()
    }

    /// Whether a sleep made now, on this thread, would be tokio's (the
    /// thread is in a tokio runtime's context).
    pub fn is_tokio(&self) -> bool {
        #[cfg(feature = "tokio")]
        if tokio::runtime::Handle::try_current().is_ok() {
            return true;
        }
        false
    }
}

impl Timer for DefaultCallTimer {
    type Sleep = DefaultSleep;

    fn now(&self) -> Instant {
        // tokio's clock is the system's monotonic clock unless a runtime
        // paused it (then, inside that runtime, the paused one); tokio reads
        // it without looking up the runtime until a clock was paused.
        #[cfg(feature = "tokio")]
        let since = tokio::time::Instant::now().saturating_duration_since(self.epoch());
        #[cfg(not(feature = "tokio"))]
        let since = std::time::Instant::now().saturating_duration_since(self.epoch());
        Instant::from_nanos(recourse_core::time::nanos(since))
    }

    fn sleep_until(&self, deadline: Instant) -> DefaultSleep {
        #[cfg(feature = "tokio")]
        if self.is_tokio() {
            let t = recourse_runtimes::TokioTimer::with_epoch(self.epoch());
            return DefaultSleep {
                inner: SleepInner::Tokio {
                    sleep: t.sleep_until(deadline),
                },
            };
        }
        #[cfg(feature = "tokio")]
        let t = AsyncIoTimer::with_epoch(self.epoch().into_std());
        #[cfg(not(feature = "tokio"))]
        let t = AsyncIoTimer::with_epoch(self.epoch());
        DefaultSleep {
            inner: SleepInner::AsyncIo {
                sleep: t.sleep_until(deadline),
            },
        }
    }
}

/// Without the `tokio` feature the tokio variant is never made; this keeps
/// one enum definition for both builds.
#[cfg(feature = "tokio")]
type TokioSleep = tokio::time::Sleep;
#[cfg(not(feature = "tokio"))]
type TokioSleep = core::future::Pending<()>;

pin_project! {
    /// The sleep future of [`DefaultCallTimer`]; no allocation, dropping it
    /// cancels the sleep.
    #[derive(Debug)]
    #[must_use = "a sleep does nothing unless polled"]
    pub struct DefaultSleep {
        #[pin]
        inner: SleepInner,
    }
}

pin_project! {
    #[project = SleepProj]
    #[derive(Debug)]
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    enum SleepInner {
        AsyncIo { #[pin] sleep: AsyncIoSleep },
        Tokio { #[pin] sleep: TokioSleep },
    }
}

impl Future for DefaultSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.project().inner.project() {
            SleepProj::AsyncIo { sleep } => sleep.poll(cx),
            SleepProj::Tokio { sleep } => sleep.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DefaultTimer, TimerSource};
    use recourse_core::Timer;

    /// Outside a runtime: async-io's timers, on the same clock as
    /// `shared_now`, read in order.
    #[test]
    fn call_timers_outside_tokio_share_the_executor_clock() {
        let a = DefaultTimer.timer();
        assert!(!a.is_tokio());
        let first = a.now();
        let b = DefaultTimer.timer();
        let shared = DefaultTimer.shared_now();
        let second = b.now();
        assert!(
            first <= shared && shared <= second,
            "{first:?} {shared:?} {second:?}"
        );
        // A century from the anchor: nothing saturates at zero.
        assert!(first.as_nanos() > 99 * 365 * 86_400 * 1_000_000_000);
    }

    /// Inside tokio, on the paused clock: every call's timer and
    /// `shared_now` read the same instant, and time moves by exactly what
    /// the clock advanced.
    #[cfg(feature = "tokio")]
    #[tokio::test(start_paused = true)]
    async fn call_timers_on_tokio_share_the_executor_clock() {
        let a = DefaultTimer.timer();
        assert!(a.is_tokio());
        let start = a.now();
        tokio::time::advance(core::time::Duration::from_millis(5)).await;
        let b = DefaultTimer.timer();
        assert_eq!(a.now(), b.now());
        assert_eq!(b.now(), DefaultTimer.shared_now());
        assert_eq!(b.now() - start, core::time::Duration::from_millis(5));
    }
}
