//! embassy-time's timer.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use embassy_time::TICK_HZ;
use recourse_core::{Instant, Timer};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A [`Timer`] on `embassy_time`: an embassy program drives recourse with
/// the clock and time driver it already has.
///
/// Its epoch is embassy's (boot): [`Instant`]s are embassy's ticks in
/// nanoseconds, rounded down, so instants from different `EmbassyTimer`s
/// compare. A deadline becomes the first tick at or after it, so a sleep
/// never wakes early; a deadline already past completes at the first poll
/// (embassy's own `Timer::at` always yields once first). embassy's 64-bit tick count does not wrap in
/// practice (at 1 MHz, after 584 000 years). Exact for tick rates up to
/// 18 GHz (embassy's are at most a few hundred MHz).
#[derive(Copy, Clone, Debug, Default)]
pub struct EmbassyTimer;

impl EmbassyTimer {
    /// The recourse instant of embassy's `at` (rounded down to the
    /// nanosecond).
    pub fn from_embassy(at: embassy_time::Instant) -> Instant {
        let ticks = at.as_ticks();
        let secs = ticks / TICK_HZ;
        // rem < TICK_HZ: the product fits for tick rates below 18 GHz.
        let sub = (ticks % TICK_HZ).saturating_mul(NANOS_PER_SEC) / TICK_HZ;
        Instant::from_nanos(secs.saturating_mul(NANOS_PER_SEC).saturating_add(sub))
    }

    /// The first embassy instant at or after `at`.
    pub fn to_embassy(at: Instant) -> embassy_time::Instant {
        let nanos = at.as_nanos();
        let secs = nanos / NANOS_PER_SEC;
        // rem < 10^9: the product fits for tick rates below 18 GHz.
        let sub = (nanos % NANOS_PER_SEC)
            .saturating_mul(TICK_HZ)
            .div_ceil(NANOS_PER_SEC);
        embassy_time::Instant::from_ticks(secs.saturating_mul(TICK_HZ).saturating_add(sub))
    }
}

impl Timer for EmbassyTimer {
    type Sleep = EmbassySleep;

    fn now(&self) -> Instant {
        Self::from_embassy(embassy_time::Instant::now())
    }

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        let at = Self::to_embassy(deadline);
        EmbassySleep {
            at,
            timer: embassy_time::Timer::at(at),
        }
    }
}

/// The sleep of an [`EmbassyTimer`]: embassy's `Timer`, ready at once when
/// its deadline has already passed.
#[derive(Debug)]
#[must_use = "a sleep does nothing unless polled"]
pub struct EmbassySleep {
    at: embassy_time::Instant,
    timer: embassy_time::Timer,
}

impl Future for EmbassySleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if embassy_time::Instant::now() >= self.at {
            return Poll::Ready(());
        }
        // `embassy_time::Timer` is `Unpin`.
        Pin::new(&mut self.timer).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    //! On embassy-time's mock driver (1 MHz ticks; time moves only when a
    //! test advances it). One test: the driver is process-wide.

    use core::future::IntoFuture;
    use core::pin::pin;
    use core::task::Waker;
    use core::time::Duration;

    use embassy_time::{Duration as EDuration, MockDriver};
    use recourse_core::{call, AttemptInfo, Policy, PolicyKey};

    use super::*;

    fn ready<F: Future>(f: core::pin::Pin<&mut F>) -> bool {
        f.poll(&mut Context::from_waker(Waker::noop())).is_ready()
    }

    #[test]
    fn embassy_clock_sleeps_and_a_call_on_it() {
        assert_eq!(TICK_HZ, 1_000_000);
        let driver = MockDriver::get();
        driver.reset();
        let t = EmbassyTimer;
        let start = t.now();
        driver.advance(EDuration::from_millis(5));
        assert_eq!(t.now() - start, Duration::from_millis(5));

        // Conversions: whole ticks round-trip; a deadline between ticks
        // rounds up to the next one.
        let at = embassy_time::Instant::from_ticks(123_456_789);
        assert_eq!(
            EmbassyTimer::from_embassy(at),
            Instant::from_micros(123_456_789)
        );
        assert_eq!(
            EmbassyTimer::to_embassy(Instant::from_micros(123_456_789)),
            at
        );
        assert_eq!(
            EmbassyTimer::to_embassy(Instant::from_nanos(123_456_789_001)),
            embassy_time::Instant::from_ticks(123_456_790)
        );

        // A deadline already past wakes at once.
        assert!(ready(pin!(t.sleep_until(start)).as_mut()));
        // A deadline ahead: not one tick early.
        let deadline = t.now() + Duration::from_nanos(2_500);
        let mut sleep = pin!(t.sleep_until(deadline));
        assert!(!ready(sleep.as_mut()));
        driver.advance(EDuration::from_micros(2));
        assert!(!ready(sleep.as_mut()));
        driver.advance(EDuration::from_micros(1));
        assert!(ready(sleep.as_mut()));

        // A call that fails twice, with 10 and 20 ms backoffs, on the mock
        // clock: advanced 1 ms per pending poll, it ends 30 ms later.
        let policy = Policy::DEFAULT;
        let mut failures = 2;
        let begin = t.now();
        let call = call(PolicyKey::parse("svc.Get"), &policy, t, |_: AttemptInfo| {
            let fail = failures > 0;
            failures -= 1;
            core::future::ready(if fail { Err("flaky") } else { Ok(7) })
        });
        let mut fut = pin!(call.into_future());
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = None;
        for _ in 0..1000 {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                out = Some(v);
                break;
            }
            driver.advance(EDuration::from_millis(1));
        }
        assert_eq!(out, Some(Ok(7)));
        assert_eq!(t.now() - begin, Duration::from_millis(30));
    }
}
