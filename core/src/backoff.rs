//! Exponential backoff with jitter, in integer nanoseconds.
//!
//! Why integers: `f64` runs in software on a Cortex-M4F and rounds
//! differently across platforms; the multiplier is turned into a fixed-point
//! factor once (from the `f64`'s bits, with integer arithmetic), and every
//! delay after that is exact `u64` arithmetic, so the same seed gives the
//! same delays everywhere and no floating-point code runs.
//!
//! Why jitter: clients that fail together and back off by the same amounts
//! retry together. Randomizing the delay spreads them out; the random source
//! is an injected, seedable [`fastrand::Rng`], never a global one.

use core::time::Duration;

use crate::policy::{Jitter, RetryPolicy};
use crate::time::nanos;

/// Fixed-point scale of the multiplier (1/1000ths).
const MILLI: u64 = 1000;

/// The sequence of backoff delays of one call.
///
/// Invariants: every delay is in `0..=max_backoff`; the un-jittered base
/// starts at `initial_backoff` and grows by the multiplier after each delay,
/// capped at `max_backoff`.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: u64,
    max: u64,
    multiplier_milli: u64,
    jitter: Jitter,
    /// The un-jittered backoff for the next delay.
    base: u64,
    /// The previous delay (decorrelated jitter grows from it).
    prev: u64,
}

impl Backoff {
    /// The backoff of a (normalized) retry policy.
    pub fn new(policy: &RetryPolicy) -> Self {
        BackoffSpec::new(policy).backoff()
    }

    /// The next delay; advances the sequence.
    #[inline]
    pub fn next_delay(&mut self, rng: &mut fastrand::Rng) -> Duration {
        Duration::from_nanos(self.next_nanos(rng))
    }

    /// [`next_delay`](Self::next_delay) in nanoseconds: for a caller that
    /// keeps the delay as a number (no division into a `Duration`'s
    /// seconds and back).
    #[inline]
    pub(crate) fn next_nanos(&mut self, rng: &mut fastrand::Rng) -> u64 {
        let b = self.base;
        let d = match self.jitter {
            Jitter::None => b,
            Jitter::Full => below(rng, b),
            Jitter::Equal => {
                let half = b / 2;
                half + below(rng, b - half)
            }
            Jitter::Decorrelated => {
                let hi = self.prev.saturating_mul(3);
                // `rng.u64(initial..hi)`, the same draw (fastrand maps a
                // range to its start plus a draw below its length), through
                // the one copy of the draw that `below` is.
                let d = self.initial + below(rng, hi.saturating_sub(self.initial));
                self.prev = d.min(self.max);
                d
            }
        }
        .min(self.max);
        self.base = grow(b, self.multiplier_milli).min(self.max);
        d
    }

    /// The un-jittered backoff the next delay is drawn from.
    pub fn base(&self) -> Duration {
        Duration::from_nanos(self.base)
    }

    /// The sequence's state in one number, for a machine that keeps it
    /// instead of the whole sequence (whose parameters it reads again from
    /// its policy): the previous delay for decorrelated jitter, the next
    /// un-jittered base otherwise. [`resume`](Self::resume) takes it back.
    #[inline]
    pub(crate) fn state(&self) -> u64 {
        match self.jitter {
            Jitter::Decorrelated => self.prev,
            _ => self.base,
        }
    }

    /// Skips a fresh sequence past `draws` delays, the last of them
    /// `last` nanoseconds: what it would be after drawing them, for a
    /// caller that kept the delays it drew rather than the sequence's
    /// state (the call future's compact stage, whose full machine takes
    /// the sequence over). Decorrelated jitter grows from the previous
    /// delay (which [`next_delay`](Self::next_delay) keeps as it returns
    /// it, capped alike); the base grows from the initial backoff by the
    /// multiplier at each draw whatever was drawn (a loop of `draws`
    /// steps: the compact stage's calls retry a few times). No draw
    /// leaves it fresh.
    #[inline]
    pub(crate) fn skip(&mut self, draws: u16, last: u64) {
        if draws == 0 {
            return;
        }
        match self.jitter {
            Jitter::Decorrelated => self.prev = last,
            _ => {
                for _ in 0..draws {
                    self.base = grow(self.base, self.multiplier_milli).min(self.max);
                }
            }
        }
    }

    /// A fresh sequence made to continue where the one whose
    /// [`state`](Self::state) is `state` stopped; 0 (what a sequence not
    /// drawn from yet keeps) leaves it fresh. Exact: a state is 0 only
    /// while the initial backoff is 0 (the base only grows from it, and a
    /// decorrelated delay is at least it), and then fresh is that state.
    #[inline]
    pub(crate) fn resume(&mut self, state: u64) {
        if state != 0 {
            match self.jitter {
                Jitter::Decorrelated => self.prev = state,
                _ => self.base = state,
            }
        }
    }
}

/// What a [`Backoff`] is made from: the retry policy's four backoff fields,
/// copied as they are. Cheap to take on every call; the conversion to
/// integer nanoseconds and a fixed-point multiplier waits for
/// [`BackoffSpec::backoff`], which only a call that retries needs.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct BackoffSpec {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
}

impl BackoffSpec {
    /// The backoff fields of `policy`.
    pub const fn new(policy: &RetryPolicy) -> Self {
        Self {
            initial: policy.initial_backoff,
            max: policy.max_backoff,
            multiplier: policy.backoff_multiplier,
            jitter: policy.jitter,
        }
    }

    /// The sequence of delays.
    pub fn backoff(&self) -> Backoff {
        self.backoff_with(self.multiplier_milli())
    }

    /// The multiplier in fixed point (thousandths, 1000..=10000): what
    /// [`backoff`](Self::backoff) converts it to, for a caller that keeps
    /// it rather than the whole sequence.
    #[inline]
    pub(crate) const fn multiplier_milli(&self) -> u64 {
        multiplier_milli(self.multiplier)
    }

    /// The delay that [`backoff`](Self::backoff), skipped past `draws`
    /// delays, the last of them `last` nanoseconds
    /// ([`Backoff::skip`]), draws next from `rng`, in nanoseconds: for a
    /// caller that keeps the delays it drew rather than the sequence (the
    /// call future's compact stage), with no state to hand back. Inlined,
    /// with the multiplier converted only where earlier draws grew the
    /// base by it (a first draw does not read it), so that a first retry's
    /// delay costs the two conversions to nanoseconds and the draw.
    #[inline(always)]
    pub(crate) fn delay_after(&self, draws: u16, last: u64, rng: &mut fastrand::Rng) -> u64 {
        // Any multiplier: a first draw's delay does not depend on it (it
        // only grows the base after the draw, which nobody keeps).
        let milli = if draws == 0 {
            MILLI
        } else {
            self.multiplier_milli()
        };
        let mut backoff = self.backoff_with(milli);
        backoff.skip(draws, last);
        backoff.next_nanos(rng)
    }

    /// [`backoff`](Self::backoff), its multiplier converted already
    /// (`multiplier_milli` is what [`Self::multiplier_milli`] returned).
    #[inline]
    pub(crate) fn backoff_with(&self, multiplier_milli: u64) -> Backoff {
        let initial = nanos(self.initial);
        let max = nanos(self.max).max(initial);
        Backoff {
            initial,
            max,
            multiplier_milli,
            jitter: self.jitter,
            base: initial,
            prev: initial,
        }
    }
}

/// The multiplier in thousandths, `(m.clamp(1.0, 10.0) * 1000.0) as u64`
/// (2000 for a NaN or infinite `m`), computed from `m`'s bits with integer
/// arithmetic only.
///
/// Why: on a target without a double-precision FPU (every Cortex-M but the
/// M7), each `f64` multiply, comparison and conversion is a library call;
/// these four cost about 1.3 KiB of flash. The result is bit for bit the
/// floating-point one: normalized multipliers are in 1..=10 and anything
/// else is clamped, as before, so that an unnormalized policy still gives
/// bounded delays.
const fn multiplier_milli(m: f64) -> u64 {
    const EXP: u64 = 0x7ff0_0000_0000_0000;
    const FRAC: u64 = (1 << 52) - 1;
    const ONE: u64 = 0x3ff0_0000_0000_0000; // 1.0
    const TEN: u64 = 0x4024_0000_0000_0000; // 10.0
    const TWO: u64 = 0x4000_0000_0000_0000; // 2.0
    let bits = m.to_bits();
    // The default multiplier (and the usual one) at once: what the
    // conversion below gives it.
    if bits == TWO {
        return 2 * MILLI;
    }
    if bits & EXP == EXP {
        return 2 * MILLI; // NaN, +∞ or −∞
    }
    // Positive doubles order like their bits; the sign bit makes every
    // negative one (−0.0 included) compare above 10.0, hence its own test.
    if bits >> 63 == 1 || bits < ONE {
        return MILLI;
    }
    if bits > TEN {
        return 10 * MILLI;
    }
    // m = mant × 2^(exp − 1075) with 2^52 <= mant < 2^53 and exp in
    // 1023..=1026.
    let exp = bits >> 52;
    let mant = (bits & FRAC) | (1 << 52);
    // The exact product mant × 1000 has 62 or 63 bits (2^61.9 <= p < 2^63).
    // The floating-point multiply rounds it to 53 significant bits, ties to
    // even: it drops the low 9 or 10 bits, adding one unit of the last kept
    // bit when they are above half of it, or at half with that bit odd —
    // which is adding `half - 1 + odd` and truncating.
    let p = mant * MILLI;
    let (half, odd) = if p >> 62 == 1 {
        (1 << 9, (p >> 10) & 1)
    } else {
        (1 << 8, (p >> 9) & 1)
    };
    // `as u64` then truncates the rounded product × 2^(exp − 1075): one
    // right shift by 49..=52 truncates both at once (no overflow: p < 2^63).
    (p + half - 1 + odd) >> (1075 - exp)
}

/// `b` times the fixed-point multiplier `m / 1000`, in `u64`: exact while
/// `b * m` fits (a base up to about 21 days at the largest multiplier, far
/// beyond a normalized policy's 30 s), within `m` nanoseconds above that,
/// saturating at `u64::MAX`. No 128-bit division, which is a library call
/// on 32- and 64-bit targets alike.
fn grow(b: u64, m: u64) -> u64 {
    match b.checked_mul(m) {
        Some(x) => x / MILLI,
        None => (b / MILLI).saturating_mul(m),
    }
}

/// `U[0, n)`, or 0 when `n` is 0: the draw of `rng.u64(0..n)`, the same
/// values from the same RNG state.
///
/// It is fastrand's own method (Lemire's multiply-and-reject on its
/// full-range `u64`), written with one loop where fastrand's has a first
/// draw and a loop of redraws: each draw is a 64 × 64-bit multiply to 128
/// bits, a dozen instructions on a 32-bit target, and this keeps one copy
/// of it. `draws_equal_fastrands` checks the two agree.
fn below(rng: &mut fastrand::Rng, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    // Draws whose low half is under this are rejected (`2^64 mod n`,
    // computed only when a draw is under `n`, which it rarely is).
    let mut threshold = None;
    loop {
        let m = u128::from(rng.u64(..)) * u128::from(n);
        let low = m as u64;
        if low >= n || low >= *threshold.get_or_insert_with(|| n.wrapping_neg() % n) {
            return (m >> 64) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(250),
            backoff_multiplier: 2.0,
            jitter,
            ..RetryPolicy::DEFAULT
        }
    }

    /// `below` draws what `rng.u64(0..n)` draws, state for state: for
    /// lengths of every size, those that reject often (just above a power
    /// of two, `2^63 + 1` rejects nearly half the draws) included.
    #[test]
    fn draws_equal_fastrands() {
        let mut lengths = std::vec![1, 2, 3, 7, 1000, 10_000_000, u64::MAX, u64::MAX - 1];
        for shift in [1, 31, 32, 33, 62, 63] {
            lengths.extend([(1 << shift) - 1, 1 << shift, (1 << shift) + 1]);
        }
        let mut lens = fastrand::Rng::with_seed(5);
        lengths.extend((0..200).map(|_| lens.u64(1..)));
        for n in lengths {
            for seed in 0..if cfg!(miri) { 3 } else { 200 } {
                let (mut a, mut b) = (
                    fastrand::Rng::with_seed(seed),
                    fastrand::Rng::with_seed(seed),
                );
                for _ in 0..8 {
                    assert_eq!(below(&mut a, n), b.u64(0..n), "n = {n}, seed {seed}");
                    assert_eq!(a.get_seed(), b.get_seed(), "n = {n}, seed {seed}");
                }
            }
        }
        let mut rng = fastrand::Rng::with_seed(9);
        assert_eq!(below(&mut rng, 0), 0);
        assert_eq!(rng.get_seed(), 9, "no draw for an empty range");
    }

    #[test]
    fn no_jitter_doubles_and_caps() {
        let mut b = Backoff::new(&policy(Jitter::None));
        let mut rng = fastrand::Rng::with_seed(1);
        let got: [u64; 7] = core::array::from_fn(|_| b.next_delay(&mut rng).as_millis() as u64);
        assert_eq!(got, [10, 20, 40, 80, 160, 250, 250]);
    }

    #[test]
    fn fractional_multiplier_is_exact_fixed_point() {
        let mut p = policy(Jitter::None);
        p.backoff_multiplier = 1.5;
        let mut b = Backoff::new(&p);
        let mut rng = fastrand::Rng::with_seed(1);
        let got: [u64; 4] = core::array::from_fn(|_| b.next_delay(&mut rng).as_micros() as u64);
        assert_eq!(got, [10_000, 15_000, 22_500, 33_750]);
    }

    /// Each jitter kind stays within its range over 10,000 seeded draws, per
    /// step of the sequence (the base at that step is known); 200 under Miri.
    #[test]
    fn jitter_ranges_over_10k_draws() {
        const CALLS: u32 = if cfg!(miri) { 20 } else { 1_000 };
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let p = policy(jitter);
            let max = nanos(p.max_backoff);
            let initial = nanos(p.initial_backoff);
            let mut rng = fastrand::Rng::with_seed(0x5eed);
            let (mut lo_seen, mut hi_seen) = (u64::MAX, 0);
            for _call in 0..CALLS {
                let mut b = Backoff::new(&p);
                let mut prev = initial;
                for _step in 0..10 {
                    let base = nanos(b.base());
                    let d = nanos(b.next_delay(&mut rng));
                    assert!(d <= max, "{jitter:?}: {d} above max {max}");
                    let (lo, hi) = match jitter {
                        Jitter::None => (base, base),
                        Jitter::Full => (0, base.saturating_sub(1)),
                        Jitter::Equal => (base / 2, base - 1),
                        Jitter::Decorrelated => (initial, (prev * 3 - 1).min(max)),
                    };
                    assert!(lo <= d && d <= hi, "{jitter:?}: {d} outside [{lo}, {hi}]");
                    lo_seen = lo_seen.min(d);
                    hi_seen = hi_seen.max(d);
                    prev = d;
                }
            }
            // The draws cover their range rather than sitting on one value.
            if jitter != Jitter::None {
                assert!(
                    hi_seen > 2 * lo_seen.max(1),
                    "{jitter:?}: {lo_seen}..{hi_seen}"
                );
            }
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let p = policy(Jitter::Full);
        let run = |seed| {
            let mut b = Backoff::new(&p);
            let mut rng = fastrand::Rng::with_seed(seed);
            core::array::from_fn::<_, 8, _>(|_| b.next_delay(&mut rng))
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    /// The `u64` growth agrees with exact 128-bit arithmetic wherever the
    /// product fits, and stays within `m` nanoseconds of it beyond.
    #[test]
    fn growth_matches_exact_arithmetic() {
        let exact = |b: u64, m: u64| {
            u64::try_from(u128::from(b) * u128::from(m) / u128::from(MILLI)).unwrap_or(u64::MAX)
        };
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..if cfg!(miri) { 200 } else { 10_000 } {
            let m = rng.u64(MILLI..=10 * MILLI);
            let b = match rng.u8(0..3) {
                0 => rng.u64(0..1 << 40),
                1 => rng.u64(u64::MAX / m - 1000..=u64::MAX / m + 1000),
                _ => rng.u64(..),
            };
            let (got, want) = (grow(b, m), exact(b, m));
            if b.checked_mul(m).is_some() {
                assert_eq!(got, want, "b={b} m={m}");
            } else {
                assert!(
                    got <= want && want - got <= m,
                    "b={b} m={m}: {got} vs {want}"
                );
            }
        }
        assert_eq!(grow(u64::MAX, 10 * MILLI), u64::MAX);
    }

    /// The integer conversion equals the floating-point one it replaced,
    /// `(m.clamp(1.0, 10.0) * 1000.0) as u64` (2000 for NaN and ±∞), on
    /// every step of 0.001 and 0.1 in range, their neighbours one ulp
    /// away, the edges, and random doubles in and out of range.
    #[test]
    fn integer_multiplier_equals_the_float_one() {
        fn float(m: f64) -> u64 {
            let m = if m.is_finite() {
                m.clamp(1.0, 10.0)
            } else {
                2.0
            };
            (m * MILLI as f64) as u64
        }
        let check =
            |m: f64| assert_eq!(multiplier_milli(m), float(m), "{m:e} ({:#x})", m.to_bits());
        for m in [
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            1.0,
            10.0,
            1.5,
            2.0,
            9.999_999_999_999_998,
            f64::from_bits(1), // the smallest subnormal
        ] {
            check(m);
        }
        let steps = if cfg!(miri) { 200 } else { 9_001 };
        for k in 0..steps {
            for m in [1.0 + k as f64 / 1000.0, k as f64 / 10.0] {
                for b in [m.to_bits().wrapping_sub(1), m.to_bits(), m.to_bits() + 1] {
                    check(f64::from_bits(b));
                }
            }
        }
        let mut rng = fastrand::Rng::with_seed(16);
        let (one, ten) = (1f64.to_bits(), 10f64.to_bits());
        for _ in 0..if cfg!(miri) { 500 } else { 200_000 } {
            check(f64::from_bits(rng.u64(one..=ten)));
            check(f64::from_bits(rng.u64(..)));
        }
    }

    /// A fresh sequence skipped past the delays a sequence drew is that
    /// sequence (the same state, the same next delays), and `delay_after`
    /// is the delay it draws next, from the same RNG state: for every
    /// jitter, after 0 to 8 draws (the last delay given), whatever the
    /// multiplier.
    #[test]
    fn a_skipped_sequence_is_the_one_that_drew_and_delay_after_its_next() {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            for multiplier in [1.0, 1.7, 2.0, 10.0] {
                for (initial, max) in [(10, 250), (0, 40), (3, 3), (7, 1)] {
                    let mut p = policy(jitter);
                    p.initial_backoff = Duration::from_millis(initial);
                    p.max_backoff = Duration::from_millis(max);
                    p.backoff_multiplier = multiplier;
                    let spec = BackoffSpec::new(&p);
                    let mut b = spec.backoff();
                    let mut rng = fastrand::Rng::with_seed(initial * 31 + max);
                    let mut last = 0;
                    for draws in 0..9u16 {
                        let at = std::format!(
                            "{jitter:?} x{multiplier} {initial}..{max} ms, {draws} draws"
                        );
                        let mut skipped = spec.backoff();
                        skipped.skip(draws, last);
                        assert_eq!(skipped.state(), b.state(), "{at}");
                        let (mut r1, mut r2, mut drew) =
                            (rng.clone(), rng.clone(), (skipped.clone(), b.clone()));
                        for _ in 0..3 {
                            assert_eq!(
                                drew.0.next_delay(&mut r1),
                                drew.1.next_delay(&mut r2),
                                "{at}"
                            );
                        }
                        let (mut r1, mut r2, mut r3) = (rng.clone(), rng.clone(), rng.clone());
                        let got = spec.delay_after(draws, last, &mut r1);
                        assert_eq!(got, skipped.next_nanos(&mut r2), "{at}");
                        assert_eq!(got, b.clone().next_nanos(&mut r3), "{at}");
                        assert_eq!(r1.get_seed(), r2.get_seed(), "{at}");
                        last = nanos(b.next_delay(&mut rng));
                    }
                }
            }
        }
    }

    #[test]
    fn unnormalized_multiplier_still_bounded() {
        let mut p = policy(Jitter::None);
        p.backoff_multiplier = f64::NAN;
        let mut b = Backoff::new(&p);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..20 {
            assert!(b.next_delay(&mut rng) <= Duration::from_millis(250));
        }
    }
}
