//! Extending a wrapping hardware counter to the core's [`Instant`]: what a
//! custom [`Timer`](crate::Timer) on a microcontroller is built on.
//!
//! Why: a microcontroller's clock is a counter a few bits wide — SysTick
//! counts 24 bits, most timer peripherals 16 or 32, a tick count kept by an
//! interrupt 32 — that wraps around after seconds or days, while the
//! machine's [`Instant`] is 64 bits of nanoseconds and must never go back.
//! [`TickCounter`] keeps the last raw value it saw and a 64-bit total of
//! ticks: each reading adds the distance from the previous one, modulo the
//! counter's width, so a wrap between two readings is counted exactly once.
//!
//! Its contract with the program:
//!
//! - **Read it at least twice per wrap period** (for a 24-bit counter at
//!   12 MHz, more often than every 0.7 s; for a 32-bit count of 1 kHz ticks,
//!   more often than every 24 days). A periodic interrupt that calls
//!   [`TickCounter::observe`] does that whatever the rest of the program
//!   does.
//! - **A reading that looks like more than half a period ahead is taken as
//!   the counter going backwards** (two readings taken out of order, say in
//!   an interrupt and the code it interrupted): the clock holds at the
//!   latest instant and the reading is otherwise ignored. The instants
//!   returned never decrease.
//! - A down-counter (SysTick) is read as `mask - value`, so that it counts
//!   up.
//!
//! It is a plain value (`&mut self`, no atomics): keep it where the program
//! keeps shared state, usually a critical-section mutex.
//!
//! ```
//! use recourse_core::counter::TickCounter;
//! use recourse_core::Instant;
//!
//! // A 24-bit counter at 1 MHz: it wraps every 16.78 s.
//! let mut c = TickCounter::new(24, 1_000_000).unwrap();
//! assert_eq!(c.observe(0xFF_FFF0), Instant::from_micros(0xFF_FFF0));
//! // It wrapped between two readings: 0x20 ticks later, not 16 s earlier.
//! assert_eq!(c.observe(0x00_0010), Instant::from_micros(0x100_0010));
//! // A reading from before the latest one: the clock holds.
//! assert_eq!(c.observe(0x00_0008), Instant::from_micros(0x100_0010));
//! ```

use core::fmt;

use crate::time::Instant;

/// A wrapping counter of `bits` bits at `hz` ticks per second, extended to
/// a monotonic [`Instant`] that counts from the first reading's counter
/// value as seen from zero (the counter's own zero is the epoch).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TickCounter {
    mask: u32,
    hz: u32,
    /// The latest raw reading (masked).
    last: u32,
    /// Ticks since the epoch, wraps included.
    ticks: u64,
    /// No reading yet: the first one is taken as it is, whatever its value.
    fresh: bool,
}

/// A [`TickCounter`] parameter out of its range.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct CounterError {
    /// The parameter: `bits` or `hz`.
    pub field: &'static str,
    /// The value given.
    pub value: u32,
    /// The smallest allowed value.
    pub min: u32,
    /// The largest allowed value.
    pub max: u32,
}

impl fmt::Display for CounterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "counter {} = {} is out of range {}..={}",
            self.field, self.value, self.min, self.max
        )
    }
}

impl core::error::Error for CounterError {}

impl TickCounter {
    /// A counter `bits` wide (2..=32) ticking `hz` times per second
    /// (1..=`u32::MAX`); its first reading, whatever its value, is taken
    /// as ticks since the epoch.
    pub const fn new(bits: u32, hz: u32) -> Result<Self, CounterError> {
        if bits < 2 || bits > 32 {
            return Err(CounterError {
                field: "bits",
                value: bits,
                min: 2,
                max: 32,
            });
        }
        if hz == 0 {
            return Err(CounterError {
                field: "hz",
                value: hz,
                min: 1,
                max: u32::MAX,
            });
        }
        Ok(Self {
            mask: u32::MAX >> (32 - bits),
            hz,
            last: 0,
            ticks: 0,
            fresh: true,
        })
    }

    /// The largest raw value, `2^bits - 1` (a down-counter's reading is
    /// `mask() - value`).
    pub const fn mask(&self) -> u32 {
        self.mask
    }

    /// Ticks per second.
    pub const fn hz(&self) -> u32 {
        self.hz
    }

    /// Takes a raw reading (bits above the counter's width are ignored)
    /// and returns the instant it stands for; never earlier than the
    /// previous one.
    pub fn observe(&mut self, raw: u32) -> Instant {
        let raw = raw & self.mask;
        if self.fresh {
            // The counter's own zero is the epoch.
            self.fresh = false;
            self.last = raw;
            self.ticks = u64::from(raw);
            return self.instant();
        }
        let delta = raw.wrapping_sub(self.last) & self.mask;
        // More than half a period ahead: a reading older than the latest.
        if delta <= self.mask / 2 {
            self.last = raw;
            self.ticks = self.ticks.saturating_add(u64::from(delta));
        }
        self.instant()
    }

    /// The instant of the latest reading.
    pub const fn instant(&self) -> Instant {
        self.to_instant(self.ticks)
    }

    /// Ticks since the epoch, wraps included, as of the latest reading.
    pub const fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The instant `ticks` ticks after the epoch (saturating; no 128-bit
    /// arithmetic).
    pub const fn to_instant(&self, ticks: u64) -> Instant {
        let hz = self.hz as u64;
        let secs = ticks / hz;
        // rem < hz <= u32::MAX, so rem * 10^9 fits in a u64.
        let sub = (ticks % hz) * 1_000_000_000 / hz;
        Instant::from_nanos(secs.saturating_mul(1_000_000_000).saturating_add(sub))
    }

    /// The first tick at or after `instant`: what a timer compares the
    /// extended count with to wake no earlier than `instant`.
    pub const fn ticks_at(&self, instant: Instant) -> u64 {
        let nanos = instant.as_nanos();
        let hz = self.hz as u64;
        let secs = nanos / 1_000_000_000;
        let rem = nanos % 1_000_000_000;
        // rem < 10^9 and hz <= u32::MAX: the product fits in a u64.
        let sub = (rem * hz).div_ceil(1_000_000_000);
        secs.saturating_mul(hz).saturating_add(sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn bad_parameters_name_the_field_and_the_range() {
        let e = TickCounter::new(1, 1000).unwrap_err();
        assert_eq!((e.field, e.value, e.min, e.max), ("bits", 1, 2, 32));
        assert_eq!(e.to_string(), "counter bits = 1 is out of range 2..=32");
        let e = TickCounter::new(33, 1000).unwrap_err();
        assert_eq!((e.field, e.value), ("bits", 33));
        let e = TickCounter::new(24, 0).unwrap_err();
        assert_eq!((e.field, e.value, e.min), ("hz", 0, 1));
        assert_eq!(TickCounter::new(24, 1).unwrap().mask(), 0xFF_FFFF);
        assert_eq!(TickCounter::new(32, 1).unwrap().mask(), u32::MAX);
        assert_eq!(TickCounter::new(2, 1).unwrap().mask(), 3);
    }

    /// A fake `bits`-wide counter stepped by irregular amounts through many
    /// wraps: the extended count is the true count.
    fn many_wraps(bits: u32, hz: u32) {
        let mut c = TickCounter::new(bits, hz).unwrap();
        let period = u64::from(c.mask()) + 1;
        let mut truth: u64 = 0;
        let mut rng = fastrand::Rng::with_seed(u64::from(bits));
        let mut last = Instant::ZERO;
        // Fewer steps under Miri: still over a hundred wraps.
        let steps = if cfg!(miri) { 1_000 } else { 10_000 };
        for _ in 0..steps {
            // Up to just under half a period per step (the contract).
            truth += rng.u64(0..period / 2);
            let got = c.observe(truth as u32);
            assert_eq!(c.ticks(), truth, "bits {bits}");
            assert_eq!(got, c.to_instant(truth));
            assert!(got >= last);
            last = got;
        }
        assert!(truth > 100 * period, "bits {bits}: only {truth} ticks");
    }

    #[test]
    fn counts_through_many_wraps_of_8_16_24_and_32_bits() {
        many_wraps(8, 1000);
        many_wraps(16, 32_768);
        many_wraps(24, 12_000_000);
        many_wraps(32, 1000);
    }

    #[test]
    fn a_wrap_between_two_readings_counts_once() {
        let mut c = TickCounter::new(24, 1000).unwrap();
        c.observe(0xFF_FFFE);
        assert_eq!(c.observe(0x00_0001), Instant::from_millis(0x100_0001));
        // High bits of a wider register are ignored.
        assert_eq!(c.observe(0xAB00_0002), Instant::from_millis(0x100_0002));
        // 32 bits: wrapping at u32::MAX.
        let mut c = TickCounter::new(32, 1000).unwrap();
        c.observe(u32::MAX - 4);
        assert_eq!(c.observe(5), Instant::from_millis(u64::from(u32::MAX) + 6));
    }

    #[test]
    fn a_counter_going_backwards_holds_the_clock() {
        let mut c = TickCounter::new(16, 1000).unwrap();
        assert_eq!(c.observe(1000), Instant::from_millis(1000));
        // An older reading (out of order): held, and not taken as a wrap.
        assert_eq!(c.observe(990), Instant::from_millis(1000));
        assert_eq!(c.ticks(), 1000);
        // Time goes on from the latest good reading.
        assert_eq!(c.observe(1010), Instant::from_millis(1010));
        // Across a wrap, then a reading from before the wrap: held.
        c.observe(30_000);
        c.observe(60_000);
        assert_eq!(c.observe(500), Instant::from_millis(65_536 + 500));
        assert_eq!(c.observe(65_000), Instant::from_millis(65_536 + 500));
        assert_eq!(c.observe(600), Instant::from_millis(65_536 + 600));
    }

    #[test]
    fn ticks_and_instants_round_trip_without_waking_early() {
        let c = TickCounter::new(24, 32_768).unwrap();
        for t in [0u64, 1, 2, 32_767, 32_768, 1 << 40] {
            let i = c.to_instant(t);
            // The first tick at or after a tick's own instant is that tick.
            assert_eq!(c.ticks_at(i), t, "tick {t}");
            // One nanosecond later needs the next tick.
            assert_eq!(c.ticks_at(i + core::time::Duration::from_nanos(1)), t + 1);
            assert!(c.to_instant(c.ticks_at(i)) >= i);
        }
        // Faster than 1 GHz: a tick is less than a nanosecond, and a
        // timer still never wakes early.
        let c = TickCounter::new(32, u32::MAX).unwrap();
        for n in [1u64, 999, 1_000_000_007, 1 << 50] {
            let i = Instant::from_nanos(n);
            assert!(c.to_instant(c.ticks_at(i)) >= i, "{n} ns");
        }
        let c = TickCounter::new(32, 1).unwrap();
        assert_eq!(c.to_instant(u64::MAX), Instant::MAX);
        assert_eq!(c.ticks_at(Instant::from_millis(1)), 1);
    }
}

/// The timer contract of [`Timer`](crate::Timer), and what the driver does
/// when a timer breaks it, on fake clocks.
#[cfg(test)]
mod timer_contract {
    use core::cell::{Cell, RefCell};
    use core::future::{Future, IntoFuture};
    use core::pin::Pin;
    use core::task::{Context, Poll, Waker};
    use core::time::Duration;
    use std::vec::Vec;

    use super::TickCounter;
    use crate::{
        call, AttemptInfo, AttemptRecord, Error, Instant, Observer, Policy, PolicyKey, Timer,
    };

    /// Keeps every attempt record.
    #[derive(Default)]
    struct Records(Vec<AttemptRecord>);

    impl Observer for Records {
        fn on_attempt(&mut self, _: PolicyKey<'_>, record: &AttemptRecord) {
            self.0.push(*record);
        }
    }

    /// A 16-bit counter at 1 kHz behind a [`TickCounter`]; every read of
    /// the clock advances the raw counter by `step` ticks (wrapping).
    struct Counter16 {
        raw: Cell<u16>,
        step: u16,
        ext: RefCell<TickCounter>,
        sleeps: RefCell<Vec<Instant>>,
    }

    impl Counter16 {
        fn new(start: u16, step: u16) -> Self {
            Self {
                raw: Cell::new(start),
                step,
                ext: RefCell::new(TickCounter::new(16, 1000).unwrap()),
                sleeps: RefCell::new(Vec::new()),
            }
        }
    }

    struct Sleep<'a> {
        timer: &'a Counter16,
        deadline: Instant,
    }

    impl Future for Sleep<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.timer.now() >= self.deadline {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl<'a> Timer for &'a Counter16 {
        type Sleep = Sleep<'a>;
        fn now(&self) -> Instant {
            let raw = self.raw.get();
            self.raw.set(raw.wrapping_add(self.step));
            self.ext.borrow_mut().observe(u32::from(raw))
        }
        fn sleep_until(&self, deadline: Instant) -> Sleep<'a> {
            self.sleeps.borrow_mut().push(deadline);
            Sleep {
                timer: self,
                deadline,
            }
        }
    }

    /// Polls `fut` until it is ready, at most `polls` times.
    fn run<F: IntoFuture>(fut: F, polls: usize) -> Option<F::Output> {
        let mut fut = core::pin::pin!(fut.into_future());
        let mut cx = Context::from_waker(Waker::noop());
        (0..polls).find_map(|_| match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    }

    fn policy(max_attempts: u32) -> Policy {
        let mut p = Policy::DEFAULT;
        p.retry.max_attempts = max_attempts;
        p.retry.initial_backoff = Duration::from_millis(10);
        p.retry.backoff_multiplier = 1.0;
        p
    }

    /// Fails the first `n` attempts.
    fn flaky(n: u32) -> impl FnMut(AttemptInfo) -> core::future::Ready<Result<u32, &'static str>> {
        let mut left = n;
        move |_| {
            let fail = left > 0;
            left = left.saturating_sub(1);
            core::future::ready(if fail { Err("flaky") } else { Ok(7) })
        }
    }

    #[test]
    fn a_counter_wrapping_during_a_call_gives_exact_times() {
        // 16 bits at 1 kHz wrap every 65.536 s; the call starts 5 ms before.
        let timer = Counter16::new(65_531, 1);
        let mut records = Records::default();
        let p = policy(3);
        let out = run(
            call(PolicyKey::parse("svc.Get"), &p, &timer, flaky(2)).observer(&mut records),
            1000,
        );
        assert_eq!(out, Some(Ok(7)));
        let r = &records.0;
        assert_eq!(r.len(), 3);
        for pair in r.windows(2) {
            // Each retry starts its backoff after the previous attempt
            // ended, on the same (extended) clock: 10 ms, not -65 s.
            assert!(pair[1].start >= pair[0].end + Duration::from_millis(10));
            assert!(pair[1].start - pair[0].end < Duration::from_millis(20));
        }
        assert!(r[0].start < Instant::from_millis(65_536));
        assert!(r[2].end > Instant::from_millis(65_536));
        assert!(r[2].end - r[0].start < Duration::from_millis(60));
    }

    /// A clock that reads each scripted instant once, then the last forever.
    struct Script {
        times: RefCell<Vec<Instant>>,
        sleeps: Cell<u32>,
    }

    impl Timer for &Script {
        type Sleep = core::future::Ready<()>;
        fn now(&self) -> Instant {
            let mut t = self.times.borrow_mut();
            if t.len() > 1 {
                t.remove(0)
            } else {
                t[0]
            }
        }
        fn sleep_until(&self, _: Instant) -> Self::Sleep {
            self.sleeps.set(self.sleeps.get() + 1);
            core::future::ready(())
        }
    }

    /// In debug builds the async driver asserts the timer's clock is
    /// monotonic (crate docs, driver contract step 4): a timer that breaks
    /// the contract is caught where it is written.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "clock went backwards")]
    fn a_clock_going_backwards_is_caught_in_debug_builds() {
        let timer = Script {
            times: RefCell::new([900, 800, 700].map(Instant::from_millis).to_vec()),
            sleeps: Cell::new(0),
        };
        let p = policy(3);
        let _ = run(
            call(PolicyKey::parse("svc.Get"), &p, &timer, flaky(2)),
            1000,
        );
    }

    /// In release builds (no assertion) the machine holds its clock: CI
    /// runs this with `cargo test -p recourse-core --release --lib counter`.
    #[test]
    #[cfg(not(debug_assertions))]
    fn a_clock_going_backwards_never_moves_the_machine_back() {
        let ms = Instant::from_millis;
        let timer = Script {
            // Each read earlier than the one before.
            times: RefCell::new(
                [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
                    .map(ms)
                    .to_vec(),
            ),
            sleeps: Cell::new(0),
        };
        let mut records = Records::default();
        let p = policy(3);
        let out = run(
            call(PolicyKey::parse("svc.Get"), &p, &timer, flaky(2)).observer(&mut records),
            1000,
        );
        assert_eq!(out, Some(Ok(7)));
        let r = &records.0;
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].start, ms(900));
        let mut latest = Instant::ZERO;
        for rec in r {
            assert!(rec.start >= latest, "{r:?}");
            assert!(rec.end >= rec.start, "{r:?}");
            latest = rec.end;
        }
        // Both backoffs are slept in full on the machine's clock.
        assert_eq!(r[1].backoff, Duration::from_millis(10));
        assert_eq!(r[1].start, r[0].end + Duration::from_millis(10));
        assert_eq!(r[2].start, r[1].end + Duration::from_millis(10));
        assert_eq!(timer.sleeps.get(), 2);
    }

    #[test]
    fn a_deadline_already_past_wakes_at_once() {
        // Every read of the clock moves it 1 s: each backoff deadline is
        // past by the time the driver sleeps on it.
        let timer = Counter16::new(0, 1000);
        let p = policy(3);
        // Ready in a single poll: no sleep stays pending.
        let out = run(call(PolicyKey::parse("svc.Get"), &p, &timer, flaky(2)), 1);
        assert_eq!(out, Some(Ok(7)));
        // Each backoff was asked for at most once (a driver may also skip
        // a sleep whose deadline it sees is past).
        assert!(timer.sleeps.borrow().len() <= 2);
    }

    #[test]
    fn a_policy_with_zero_attempts() {
        // Normalizing takes the default and names the field.
        let n = policy(0).normalize().unwrap();
        assert_eq!(n.policy.retry.max_attempts, 3);
        assert_eq!(std::format!("{}", n.changed), "retry.max_attempts");
        // Unnormalized, the call still makes its first attempt.
        let timer = Counter16::new(0, 1);
        let p = policy(0);
        let mut records = Records::default();
        let out = run(
            call(PolicyKey::parse("svc.Get"), &p, &timer, flaky(1)).observer(&mut records),
            1000,
        );
        assert!(
            matches!(out, Some(Err(Error::RetriesExhausted { attempts: 1, .. }))),
            "{out:?}"
        );
        assert_eq!(records.0.len(), 1);
    }
}
