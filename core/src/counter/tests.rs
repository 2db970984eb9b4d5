//! Tests of `counter.rs`.

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
