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
mod tests;

/// The timer contract of [`Timer`](crate::Timer), and what the driver does
/// when a timer breaks it, on fake clocks.
#[cfg(test)]
mod timer_contract;
