//! Recent latencies of one operation in fixed memory: what a quantile hedge
//! trigger asks ("has this attempt already run longer than p95 of recent
//! ones?").
//!
//! Why a sketch and not a buffer of samples: an exact quantile needs every
//! sample, and a bounded reservoir forgets the rare slow ones — exactly the
//! tail a hedge looks at. A log-linear histogram keeps one count per bucket
//! whose width is a fixed fraction of its value, so every quantile is known
//! to within that fraction, in memory fixed at compile time, with no heap,
//! no floats and no sorting. (The layout is HdrHistogram's, with three bits
//! of sub-bucket precision.)
//!
//! ## Buckets and error
//!
//! Durations are counted in units of 128 ns. Below 16 units (2.048 µs) each
//! unit is a bucket; above, every power of two `[2^e, 2^(e+1))` units is
//! split into 8 equal buckets, up to `2^30` units (`2^37` ns ≈ 137.4 s):
//! [`BUCKETS`] = 224 buckets. A quantile is reported as the middle of the
//! bucket holding the sample of that rank, so it is within **1/16 (6.25 %)**
//! of the exact nearest-rank quantile of the counted samples for latencies
//! from 1.024 µs to 137 s, and within 64 ns below 1.024 µs. Longer latencies
//! are counted in the top bucket and reported as its middle (about 133 s).
//!
//! ## Decay: two windows
//!
//! Samples are counted in the current window. When a window of `window`
//! has passed (windows are aligned to multiples of `window` on the caller's
//! clock), the current window becomes the previous one and the previous one
//! is forgotten. Counts and quantiles cover both, so they always describe
//! the last one to two windows: a sample stops counting between one and two
//! windows after it was recorded, never later.
//!
//! Why not halve every count at each rotation (half the memory): with
//! integer counts, halving forgets rare samples first — one 1 s outlier
//! becomes 0 while 99 samples of 10 ms become 49 — so the tail decays
//! faster than the body, and a burst of slow calls lingers for
//! `log2(count)` windows instead of a bounded time. Two windows keep exact
//! counts, a hard limit on a sample's age, and a rotation that is flipping
//! an index and zeroing one array.
//!
//! ## Memory and cost
//!
//! Two windows of 224 `u32` counts, their sums per group of 8 buckets (28
//! `u64`s a window) and 48 bytes of state: **2288 bytes**, on 64-bit
//! targets and on `thumbv7em-none-eabihf` alike (asserted at compile time).
//! [`LatencySketch::record`] is one comparison against the end of the
//! current window (the rotation, once a window, is out of line), the
//! bucket without a branch (a leading-zeros count, two shifts, an
//! addition: `8 s + (units >> s)`), and four increments;
//! [`LatencySketch::quantile`] is one multiplication, one division and a
//! scan of at most 28 group sums then 8 counts a window, whatever the
//! latencies. [`LatencySketch::quantile_tracked`], what a quantile trigger
//! asks on every hedge decision, gives the same answer from where the last
//! one lay (11 bytes of the state): a record moves the rank by at most one
//! sample, so between rotations it is usually the same comparison against
//! the window's end, three multiplications, two comparisons and a table
//! lookup for the bucket's middle — no division. No floats anywhere (a
//! Cortex-M4F has only a single-precision FPU).
//!
//! ## Time
//!
//! `now` is an [`Instant`] on any one monotonic clock. An instant before
//! the current window's start counts as inside it, so callers sharing a
//! sketch behind a lock may arrive slightly out of order.

use core::fmt;
use core::time::Duration;

use crate::time::{nanos, Instant};

/// Bits of a nanosecond count below the sketch's unit of 128 ns.
const UNIT_SHIFT: u32 = 7;
/// Bits of linear precision within a power of two: 8 buckets each.
const SUB_BITS: u32 = 3;
/// Buckets per power of two.
const SUB: u64 = 1 << SUB_BITS;
/// The highest power of two, in units, with buckets of its own: `2^29`
/// units of 128 ns, so the top bucket ends at `2^37` ns ≈ 137.4 s.
const TOP_EXP: u32 = 29;

/// Buckets per window: 16 linear ones below 2.048 µs, then 8 per power of
/// two up to 137.4 s.
pub const BUCKETS: usize = ((TOP_EXP - SUB_BITS + 2) as u64 * SUB) as usize;

/// The first unit of the top bucket (`15 × 2^26` units, 128.85 s): every
/// count at or above it is in the top bucket.
const TOP_UNITS: u64 = (2 * SUB - 1) << (TOP_EXP - SUB_BITS);

/// Whole seconds from which a latency is in the top bucket: 129 s ≥
/// [`TOP_UNITS`] units, 128 s is not.
const TOP_SECS: u64 = (TOP_UNITS << UNIT_SHIFT).div_ceil(1_000_000_000);

/// Groups of [`SUB`] buckets whose sums the sketch keeps, so that a
/// quantile skips whole groups.
const GROUPS: usize = BUCKETS / SUB as usize;

/// A quantile's rank denominator: `q_permille` 990 is p99, 999 is p99.9.
const PERMILLE: u64 = 1_000;

/// The bucket counting a latency of `nanos` nanoseconds.
///
/// Branch-free below the top: with `s` = max(0, ⌊log2 units⌋ − 3), the
/// bucket is `8 s + (units >> s)` (`units >> s` is the leading 1 and three
/// mantissa bits, 8..16, or the unit count itself below 16 units), which is
/// HdrHistogram's `(e − 2) × 8 + sub` above 16 units and `units` below.
const fn bucket(nanos: u64) -> usize {
    // Clamped: the top bucket is `8 × 26 + 15`, whatever is above it.
    let units = min(nanos >> UNIT_SHIFT, TOP_UNITS);
    // `units | 8` ≥ 8: ⌊log2⌋ ≥ 3, so `s` ≥ 0; `units` < 2^30: `s` ≤ 26.
    let s = 63 - SUB_BITS - (units | SUB).leading_zeros();
    ((s as u64) * SUB + (units >> s)) as usize
}

/// The bucket counting a latency of `latency`: [`bucket`] without the
/// saturating conversion to nanoseconds (a latency of [`TOP_SECS`] or more
/// is in the top bucket, so it is counted as `TOP_SECS`: no overflow).
#[inline]
fn bucket_of(latency: Duration) -> usize {
    let secs = min(latency.as_secs(), TOP_SECS);
    bucket(secs * 1_000_000_000 + latency.subsec_nanos() as u64)
}

/// The smaller of `a` and `b` (`Ord::min` is not `const`).
const fn min(a: u64, b: u64) -> u64 {
    if a < b {
        a
    } else {
        b
    }
}

/// The first nanosecond counted by bucket `index` and the bucket's width in
/// nanoseconds.
#[cfg(test)]
const fn bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < 2 * SUB {
        return (index << UNIT_SHIFT, 1 << UNIT_SHIFT);
    }
    let shift = (index / SUB) as u32 - 1;
    let sub = index % SUB;
    ((SUB + sub) << shift << UNIT_SHIFT, 1 << shift << UNIT_SHIFT)
}

/// Recent latencies of one operation, as a two-window log-linear histogram
/// (see the [module docs](self) for the buckets, the error bound and the
/// decay).
///
/// ```
/// use core::time::Duration;
/// use recourse_core::{Instant, LatencySketch};
///
/// let mut sketch = LatencySketch::new(Duration::from_secs(10));
/// let t = Instant::from_secs(100);
/// for i in 0..100u32 {
///     // 99 % of calls take 10 ms, 1 % take a second (Tail at Scale).
///     let latency = if i == 50 { Duration::from_secs(1) } else { Duration::from_millis(10) };
///     sketch.record(latency, t);
/// }
/// let p99 = sketch.quantile(990, t).unwrap();
/// assert!(p99.abs_diff(Duration::from_millis(10)) <= Duration::from_millis(10) / 16);
/// let max = sketch.quantile(1000, t).unwrap();
/// assert!(max.abs_diff(Duration::from_secs(1)) <= Duration::from_secs(1) / 16);
/// // Two windows later, none of them count.
/// assert_eq!(sketch.count(t + Duration::from_secs(20)), 0);
/// ```
#[derive(Clone)]
pub struct LatencySketch {
    /// Two windows of counts; `counts[current]` is the current one.
    counts: [[u32; BUCKETS]; 2],
    /// Per window, the sum of each group of [`SUB`] consecutive counts
    /// (exact: a saturated count stops adding to its group).
    groups: [[u64; GROUPS]; 2],
    /// The start of the current window.
    start: Instant,
    /// The end of the current window, `start + window` (saturating): a
    /// `now` before it is in the current window, the one comparison a
    /// record and a tracked quantile make before counting.
    next: u64,
    /// The window length in nanoseconds, at least 1.
    window: u64,
    /// Samples (both windows) in the buckets before `cursor_bucket`: where
    /// the last [`LatencySketch::quantile_tracked`] answer lies, kept
    /// across records (each moves the rank by at most one sample) and
    /// cleared by a rotation. (The cursor's three fields are fields of the
    /// sketch, not a struct, so that they pack with the others.)
    cursor_below: u64,
    /// Samples in each window (saturating).
    totals: [u32; 2],
    /// Fewer samples than this make no quantile; at least 1.
    min_samples: u32,
    /// The quantile the cursor tracks, in permille; [`NO_CURSOR`]: none.
    cursor_q: u16,
    /// The bucket of the last tracked answer (`BUCKETS` ≤ 256).
    cursor_bucket: u8,
    /// Which of `counts` is the current window: 0 or 1.
    current: u8,
}

/// `cursor_q` when no quantile is tracked.
const NO_CURSOR: u16 = u16::MAX;

/// A [`LatencySketch::quantile_tracked`] answer packed in a `u64`, for a
/// cache beside a sketch shared behind a lock (one atomic word, read
/// without the lock): made by [`LatencySketch::quantile_published`] and
/// [`LatencySketch::record_published`], it is the sketch's answer for its
/// quantile at every `now` before the end of the window it was made in
/// ([`LatencySketch::window_end`] then), until the sketch next records.
/// Whoever keeps it must replace it (or [`TrackedAnswer::NONE`]) with
/// every record, and keep the window's end with it.
///
/// Bits: the quantile in permille (10), whether it holds at all, whether
/// there were enough samples for an answer, the answer (its bucket's
/// middle in units of 64 ns, 32).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct TrackedAnswer(u64);

impl TrackedAnswer {
    /// Holds no answer: ask the sketch.
    pub const NONE: Self = Self(0);
    const Q_MASK: u64 = (1 << 10) - 1;
    const VALID: u64 = 1 << 10;
    const FOUND: u64 = 1 << 11;
    const MIDDLE_SHIFT: u32 = 12;

    /// The answer for `q` (at most 1000): the middle of `bucket`.
    #[inline]
    fn found(q: u32, bucket: usize) -> Self {
        let middle = u64::from(MIDDLES[bucket]);
        Self(Self::VALID | Self::FOUND | middle << Self::MIDDLE_SHIFT | u64::from(q))
    }

    /// The answer of its bits ([`TrackedAnswer::to_bits`]).
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// Its bits, for an atomic word.
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// [`LatencySketch::quantile_tracked`]'s answer for `q_permille` at
    /// `now` on the sketch this was made from, whose window ended at `end`
    /// nanoseconds when it was made, when this holds it; `None`: ask the
    /// sketch.
    #[inline]
    pub fn get(self, q_permille: u32, now: Instant, end: u64) -> Option<Option<Duration>> {
        self.middle(q_permille, now, end)
            .map(|m| m.map(|middle| half_units(middle as u32)))
    }

    /// [`TrackedAnswer::get`] with the answer in whole nanoseconds (what
    /// [`nanos`] makes of it): for a hedge trigger
    /// that spaces hedges in nanoseconds
    /// ([`Trigger::decide_nanos`](crate::hedge::Trigger::decide_nanos)).
    #[inline]
    pub fn get_nanos(self, q_permille: u32, now: Instant, end: u64) -> Option<Option<u64>> {
        // The middle, 32 bits of 64 ns units: below 2^38, no overflow.
        self.middle(q_permille, now, end)
            .map(|m| m.map(|middle| middle << (UNIT_SHIFT - 1)))
    }

    /// The published middle (in half units) for quantile `q_permille`
    /// at `now`, as [`TrackedAnswer::get`] reads it: `None` when this
    /// does not hold it, `Some(None)` when the sketch found none.
    #[inline(always)]
    fn middle(self, q_permille: u32, now: Instant, end: u64) -> Option<Option<u64>> {
        let bits = self.0;
        let q = u64::from(q_permille.min(PERMILLE as u32));
        if bits & (Self::VALID | Self::Q_MASK) != Self::VALID | q || now.as_nanos() >= end {
            return None;
        }
        if bits & Self::FOUND == 0 {
            return Some(None);
        }
        Some(Some(bits >> Self::MIDDLE_SHIFT))
    }
}

/// How much of the sketch a `now` sees.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Age {
    /// `now` is in the current window: both windows count.
    Current,
    /// `now` is in the window after the current one: only the current
    /// window counts (it is about to become the previous one).
    Next,
    /// Two or more windows later: nothing counts.
    Stale,
}

impl LatencySketch {
    /// The default [`LatencySketch::min_samples`]: 20.
    pub const DEFAULT_MIN_SAMPLES: u32 = 20;

    /// An empty sketch whose samples count for one to two `window`s (a zero
    /// window is taken as 1 ns), asking for
    /// [`LatencySketch::DEFAULT_MIN_SAMPLES`] samples before it answers.
    pub const fn new(window: Duration) -> Self {
        let window = nanos(window);
        let window = if window == 0 { 1 } else { window };
        Self {
            counts: [[0; BUCKETS]; 2],
            groups: [[0; GROUPS]; 2],
            start: Instant::ZERO,
            next: window,
            window,
            cursor_below: 0,
            totals: [0; 2],
            min_samples: Self::DEFAULT_MIN_SAMPLES,
            cursor_q: NO_CURSOR,
            cursor_bucket: 0,
            current: 0,
        }
    }

    /// The same sketch answering [`LatencySketch::quantile`] only with at
    /// least `min_samples` samples counted (0 is taken as 1).
    #[must_use]
    pub const fn with_min_samples(mut self, min_samples: u32) -> Self {
        self.min_samples = if min_samples == 0 { 1 } else { min_samples };
        self
    }

    /// The window length: a sample counts for one to two of them.
    pub const fn window(&self) -> Duration {
        Duration::from_nanos(self.window)
    }

    /// Samples needed before [`LatencySketch::quantile`] answers.
    pub const fn min_samples(&self) -> u32 {
        self.min_samples
    }

    /// Counts one attempt that took `latency`, finished at `now`.
    ///
    /// Rotates the windows first when `now` is past the current one.
    #[inline]
    pub fn record(&mut self, latency: Duration, now: Instant) {
        self.record_in(bucket_of(latency), now);
    }

    /// [`LatencySketch::record`] of a latency of `nanos` nanoseconds (the
    /// same bucket as the [`Duration`] of that many nanoseconds).
    #[inline]
    pub fn record_nanos(&mut self, nanos: u64, now: Instant) {
        self.record_in(bucket(nanos), now);
    }

    /// Counts a sample in bucket `index`, finished at `now`.
    #[inline]
    fn record_in(&mut self, index: usize, now: Instant) {
        if now.as_nanos() >= self.next {
            // Out of line and last: nothing is kept across a call here.
            return self.record_past(index, now);
        }
        self.count_sample(index);
    }

    /// [`LatencySketch::record`] at a `now` at or past the end of the
    /// current window: rotates first (once a window).
    #[cold]
    #[inline(never)]
    fn record_past(&mut self, index: usize, now: Instant) {
        self.rotate(now);
        self.count_sample(index);
    }

    /// Counts a sample in bucket `index` of the current window.
    #[inline]
    fn count_sample(&mut self, index: usize) {
        // `& 1`: no bounds check (it is 0 or 1).
        let current = usize::from(self.current & 1);
        let slot = &mut self.counts[current][index];
        if *slot < u32::MAX {
            *slot += 1;
            self.groups[current][index / SUB as usize] += 1;
            self.cursor_below += u64::from(index < usize::from(self.cursor_bucket));
        }
        self.totals[current] = self.totals[current].saturating_add(1);
    }

    /// Samples counted at `now`: those of the last one to two windows.
    pub fn count(&self, now: Instant) -> u64 {
        let current = usize::from(self.current & 1);
        match self.age(now) {
            Age::Current => self.both_totals(),
            Age::Next => u64::from(self.totals[current]),
            Age::Stale => 0,
        }
    }

    /// The `q_permille`‰ quantile (990: p99; values above 1000 are taken as
    /// 1000) of the samples counted at `now`, within 1/16 of the exact
    /// nearest-rank quantile; `None` with fewer than
    /// [`LatencySketch::min_samples`] samples.
    ///
    /// The answer changes with every [`LatencySketch::record`] and when
    /// `now` crosses into the next window (the previous window stops
    /// counting) or the one after (nothing counts).
    pub fn quantile(&self, q_permille: u32, now: Instant) -> Option<Duration> {
        let n = self.count(now);
        if n < u64::from(self.min_samples) {
            return None;
        }
        let rank = rank(q_permille, n);
        let both = self.age(now) == Age::Current;
        Some(middle(self.locate(rank, both).0))
    }

    /// [`LatencySketch::quantile`], the same answer, found in a constant
    /// number of steps per call, whatever the latencies: the sketch keeps
    /// where the last answer for `q_permille` lay, and each
    /// [`LatencySketch::record`] since moved the rank by at most one
    /// sample. What a hedge trigger asks on every decision. A rotation of
    /// the windows (once per window), another `q_permille`, or a `now` in
    /// the window after the current one start from a scan, as
    /// [`LatencySketch::quantile`] does.
    #[inline]
    pub fn quantile_tracked(&mut self, q_permille: u32, now: Instant) -> Option<Duration> {
        if now.as_nanos() >= self.next {
            return self.quantile_past(q_permille, now);
        }
        self.tracked_bucket(q_permille).map(middle)
    }

    /// [`LatencySketch::quantile_tracked`] in whole nanoseconds (what
    /// [`nanos`] makes of that answer): the same answer, without a
    /// [`Duration`] made and taken apart on the way (a bucket's middle is
    /// kept in units of 32 ns), for a hedge trigger that spaces hedges in
    /// nanoseconds
    /// ([`Trigger::decide_nanos`](crate::hedge::Trigger::decide_nanos)).
    // Inlined into the gate, which asks it on every hedge decision (out
    // of line, its call cost a simulated call about 10 instructions more).
    #[inline(always)]
    pub fn quantile_tracked_nanos(&mut self, q_permille: u32, now: Instant) -> Option<u64> {
        if now.as_nanos() >= self.next {
            return self.quantile_past(q_permille, now).map(nanos);
        }
        self.tracked_bucket(q_permille).map(middle_nanos)
    }

    /// [`LatencySketch::quantile_tracked`]'s bucket at a `now` in the
    /// current window.
    #[inline(always)]
    fn tracked_bucket(&mut self, q_permille: u32) -> Option<usize> {
        let n = self.both_totals();
        // `min_samples` ≥ 1: no quantile of no samples either.
        if n < u64::from(self.min_samples) {
            return None;
        }
        let q = q_permille.min(PERMILLE as u32);
        let bucket = usize::from(self.cursor_bucket);
        // Usually the rank is still in the bucket of the last answer:
        // `below < rank ≤ below + count`, with `rank` = ⌈q·n / 1000⌉, is
        // `1000 · below < q·n ≤ 1000 · (below + count)` (all < 2^44), no
        // division. (A `q·n` of 0, whose rank is 1, takes the walk.)
        let qn = u64::from(q) * n;
        if u32::from(self.cursor_q) == q
            && self.cursor_below * PERMILLE < qn
            && qn <= (self.cursor_below + self.both(bucket)) * PERMILLE
        {
            return Some(bucket);
        }
        Some(self.track(q, rank(q, n)))
    }

    /// [`LatencySketch::quantile_tracked`], and that answer as a
    /// [`TrackedAnswer`] for a cache outside the sketch (outside its lock):
    /// it stays the answer for `q_permille` at any `now` before the
    /// current window's end until the sketch next records
    /// ([`TrackedAnswer::NONE`] when it cannot say so).
    #[inline]
    pub fn quantile_published(
        &mut self,
        q_permille: u32,
        now: Instant,
    ) -> (Option<Duration>, TrackedAnswer) {
        let answer = self.quantile_tracked(q_permille, now);
        (answer, self.published(q_permille, now, answer))
    }

    /// [`LatencySketch::record`], then the quantile the sketch tracks
    /// (the one [`LatencySketch::quantile_tracked`] was last asked for) as
    /// [`LatencySketch::quantile_published`] gives it: what a cache of
    /// the sketch's answer holds after the record
    /// ([`TrackedAnswer::NONE`]: none tracked).
    #[inline]
    pub fn record_published(&mut self, latency: Duration, now: Instant) -> TrackedAnswer {
        self.record_published_in(bucket_of(latency), now)
    }

    /// [`LatencySketch::record_published`] of a latency of `nanos`
    /// nanoseconds (the same bucket as the [`Duration`] of that many
    /// nanoseconds): what a latency store records on every completed
    /// attempt.
    #[inline(always)]
    pub fn record_published_nanos(&mut self, nanos: u64, now: Instant) -> TrackedAnswer {
        self.record_published_in(bucket(nanos), now)
    }

    /// [`LatencySketch::record_published`] of a sample in bucket `index`:
    /// one comparison against the window's end, the counts, and (the
    /// rank usually still in the cursor's bucket) three multiplications
    /// and two comparisons; a rotation or a walk out of line.
    #[inline(always)]
    fn record_published_in(&mut self, index: usize, now: Instant) -> TrackedAnswer {
        if now.as_nanos() >= self.next {
            return self.record_published_past(index, now);
        }
        self.count_sample(index);
        self.published_in_window()
    }

    /// [`LatencySketch::record_published_in`] at a `now` at or past the
    /// end of the current window: rotates first (once a window).
    #[cold]
    #[inline(never)]
    fn record_published_past(&mut self, index: usize, now: Instant) -> TrackedAnswer {
        self.rotate(now);
        self.count_sample(index);
        if now.as_nanos() >= self.next {
            // The end saturated: no answer holds until it.
            return TrackedAnswer::NONE;
        }
        self.published_in_window()
    }

    /// The tracked quantile's answer packed, at a `now` before the
    /// window's end: what `quantile_tracked(q, now)` does there, with `q`
    /// tracked (so at most 1000), packed as it goes.
    #[inline(always)]
    fn published_in_window(&mut self) -> TrackedAnswer {
        if self.cursor_q == NO_CURSOR {
            return TrackedAnswer::NONE;
        }
        let q = u32::from(self.cursor_q);
        let n = self.both_totals();
        if n < u64::from(self.min_samples) {
            return TrackedAnswer(TrackedAnswer::VALID | u64::from(q));
        }
        let qn = u64::from(q) * n;
        let at = usize::from(self.cursor_bucket);
        if self.cursor_below * PERMILLE < qn && qn <= (self.cursor_below + self.both(at)) * PERMILLE
        {
            return TrackedAnswer::found(q, at);
        }
        self.published_walk(q, n)
    }

    /// [`LatencySketch::published_in_window`] once the rank left the
    /// cursor's bucket: the walk from there.
    #[inline(never)]
    fn published_walk(&mut self, q: u32, n: u64) -> TrackedAnswer {
        let bucket = self.track(q, rank(q, n));
        if u32::from(self.cursor_q) != q {
            // A saturated window's top bucket (the cursor was cleared).
            return TrackedAnswer::NONE;
        }
        TrackedAnswer::found(q, bucket)
    }

    /// `answer`, [`LatencySketch::quantile_tracked`]'s for `q_permille` at
    /// `now` just now, packed while it holds for every `now` before the
    /// window's end: `now` in the current window (else the answer is the
    /// age's, not the counts'), and the answer found from the counts alone
    /// (too few samples, or the cursor's bucket).
    #[inline]
    fn published(&self, q_permille: u32, now: Instant, answer: Option<Duration>) -> TrackedAnswer {
        let q = q_permille.min(PERMILLE as u32);
        if now.as_nanos() >= self.next {
            return TrackedAnswer::NONE;
        }
        let found = match answer {
            None if self.both_totals() < u64::from(self.min_samples) => 0,
            // The cursor holds the answer for `q`.
            Some(_) if u32::from(self.cursor_q) == q => {
                return TrackedAnswer::found(q, usize::from(self.cursor_bucket));
            }
            // A saturated window's top bucket (the cursor was cleared).
            _ => return TrackedAnswer::NONE,
        };
        TrackedAnswer(TrackedAnswer::VALID | found | u64::from(q))
    }

    /// The end of the current window, in nanoseconds on the sketch's
    /// clock (saturating): a [`TrackedAnswer`] made now holds before it.
    #[inline]
    pub const fn window_end(&self) -> u64 {
        self.next
    }

    /// [`LatencySketch::quantile_tracked`] at a `now` at or past the end of
    /// the current window: the exact age decides (the end saturates at the
    /// clock's last instant).
    #[cold]
    #[inline(never)]
    fn quantile_past(&mut self, q_permille: u32, now: Instant) -> Option<Duration> {
        if self.age(now) != Age::Current {
            return self.quantile(q_permille, now);
        }
        let n = self.both_totals();
        if n < u64::from(self.min_samples) {
            return None;
        }
        let q = q_permille.min(PERMILLE as u32);
        Some(middle(self.track(q, rank(q, n))))
    }

    /// Moves the cursor to the bucket holding `rank` of both windows for
    /// the `q`‰ quantile (at most 1000) and returns that bucket: a scan
    /// for another quantile than the one tracked, else a walk from the
    /// last answer.
    #[inline(never)]
    fn track(&mut self, q: u32, rank: u64) -> usize {
        if u32::from(self.cursor_q) != q {
            let (bucket, below) = self.locate(rank, true);
            self.cursor_q = q as u16;
            self.cursor_bucket = bucket as u8;
            self.cursor_below = below;
            return bucket;
        }
        // Walk from the last answer: up while the rank lies past this
        // bucket, down while it lies before it, a whole group of 8 at a time
        // from a group's first bucket. A record moves the rank by at most one
        // sample, so the walk is usually a step or two, and never more than
        // the scan's 28 groups and 16 buckets.
        let mut bucket = usize::from(self.cursor_bucket);
        let mut below = self.cursor_below;
        loop {
            let at = bucket;
            let group = at / SUB as usize;
            if at % SUB as usize == 0 {
                // At a group's first bucket: skip whole groups.
                let sum = self.groups[0][group] + self.groups[1][group];
                if below + sum < rank && at + (SUB as usize) < BUCKETS {
                    below += sum;
                    bucket += SUB as usize;
                    continue;
                }
                if group > 0 {
                    let before = self.groups[0][group - 1] + self.groups[1][group - 1];
                    if below >= before && below - before >= rank {
                        below -= before;
                        bucket -= SUB as usize;
                        continue;
                    }
                }
            }
            let here = self.both(at);
            if below + here < rank {
                if bucket + 1 >= BUCKETS {
                    // A saturated window: as `locate`, the top bucket.
                    self.cursor_q = NO_CURSOR;
                    self.cursor_bucket = 0;
                    self.cursor_below = 0;
                    return BUCKETS - 1;
                }
                below += here;
                bucket += 1;
            } else if below >= rank && bucket > 0 {
                bucket -= 1;
                below -= self.both(bucket);
            } else {
                break;
            }
        }
        self.cursor_bucket = bucket as u8;
        self.cursor_below = below;
        bucket
    }

    /// Samples in both windows.
    #[inline]
    fn both_totals(&self) -> u64 {
        u64::from(self.totals[0]) + u64::from(self.totals[1])
    }

    /// Both windows' count of bucket `index`.
    #[inline]
    fn both(&self, index: usize) -> u64 {
        u64::from(self.counts[0][index]) + u64::from(self.counts[1][index])
    }

    /// The bucket holding the sample of `rank` (counting both windows, or
    /// only the current one), and the samples below it.
    fn locate(&self, rank: u64, both: bool) -> (usize, u64) {
        let current = usize::from(self.current & 1);
        // Whole groups first, then the buckets of the group that reaches
        // the rank: the same bucket as a scan of every count.
        let mut seen = 0u64;
        for group in 0..GROUPS {
            let mut sum = self.groups[current][group];
            if both {
                sum += self.groups[current ^ 1][group];
            }
            if seen + sum < rank {
                seen += sum;
                continue;
            }
            let first = group * SUB as usize;
            for index in first..first + SUB as usize {
                let mut count = u64::from(self.counts[current][index]);
                if both {
                    count += u64::from(self.counts[current ^ 1][index]);
                }
                if seen + count >= rank {
                    return (index, seen);
                }
                seen += count;
            }
        }
        // Only when a window's total saturated before its buckets did.
        (BUCKETS - 1, seen)
    }

    /// Where `now` falls relative to the current window.
    fn age(&self, now: Instant) -> Age {
        let elapsed = now.as_nanos().saturating_sub(self.start.as_nanos());
        if elapsed < self.window {
            Age::Current
        } else if elapsed < self.window.saturating_mul(2) {
            Age::Next
        } else {
            Age::Stale
        }
    }

    /// Makes the window holding `now` the current one: what a record at or
    /// past the end of the current window does first (once a window, or
    /// never when the end saturated and `now` is still inside).
    fn rotate(&mut self, now: Instant) {
        match self.age(now) {
            Age::Current => return,
            Age::Next => {
                self.current ^= 1;
                self.clear(usize::from(self.current & 1));
                self.start = self.start.saturating_add(Duration::from_nanos(self.window));
            }
            Age::Stale => {
                self.clear(0);
                self.clear(1);
                // Aligned to a multiple of `window` after the old start.
                let elapsed = now.as_nanos() - self.start.as_nanos();
                self.start = Instant::from_nanos(now.as_nanos() - elapsed % self.window);
            }
        }
        self.next = self.start.as_nanos().saturating_add(self.window);
    }

    fn clear(&mut self, window: usize) {
        self.cursor_q = NO_CURSOR;
        self.cursor_bucket = 0;
        self.cursor_below = 0;
        self.counts[window] = [0; BUCKETS];
        self.groups[window] = [0; GROUPS];
        self.totals[window] = 0;
    }
}

/// The nearest rank of the `q_permille`‰ quantile of `n` samples: the
/// smallest sample with at least q‰ of the samples at or below it (values
/// above 1000 are taken as 1000). `q × n` < 2^43: no overflow.
#[inline]
fn rank(q_permille: u32, n: u64) -> u64 {
    let q = u64::from(q_permille).min(PERMILLE);
    (q * n).div_ceil(PERMILLE).max(1)
}

/// The middle of bucket `index`, reported for every sample in it: a load
/// and a shift ([`MIDDLES`]), and no division by 10^9 below a second.
#[inline]
fn middle(index: usize) -> Duration {
    half_units(MIDDLES[index])
}

/// The middle of bucket `index` in nanoseconds: [`nanos`] of
/// [`middle`]`(index)` (below 2^38: no overflow).
#[inline]
fn middle_nanos(index: usize) -> u64 {
    u64::from(MIDDLES[index]) << (UNIT_SHIFT - 1)
}

/// `units` of 64 ns (a bucket's middle, [`MIDDLES`]) as a duration.
#[inline]
fn half_units(units: u32) -> Duration {
    let nanos = u64::from(units) << (UNIT_SHIFT - 1);
    if nanos < 1_000_000_000 {
        Duration::new(0, nanos as u32)
    } else {
        Duration::from_nanos(nanos)
    }
}

/// Each bucket's middle in units of 64 ns (half the sketch's unit), 896
/// bytes: with `s` = max(0, ⌊index / 8⌋ − 1) and `m` = `index − 8 s` (the
/// bucket's leading 1 and mantissa bits, or its unit below 16 units), the
/// bucket counts units `[m << s, (m + 1) << s)`, so its middle is
/// `(2m + 1) << s` half-units; the top one, `31 << 26`, fits a `u32`.
static MIDDLES: [u32; BUCKETS] = {
    let mut middles = [0; BUCKETS];
    let mut index = 0;
    while index < BUCKETS {
        let i = index as u64;
        let s = (i / SUB).saturating_sub(1);
        let m = i - s * SUB;
        let middle = (2 * m + 1) << s;
        assert!(middle <= u32::MAX as u64);
        middles[index] = middle as u32;
        index += 1;
    }
    middles
};

impl fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = usize::from(self.current & 1);
        f.debug_struct("LatencySketch")
            .field("window", &self.window())
            .field("min_samples", &self.min_samples)
            .field("start", &self.start)
            .field("current_count", &self.totals[current])
            .field("previous_count", &self.totals[current ^ 1])
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const MS: u64 = 1_000_000;

    /// The exact nearest-rank quantile of `sorted`.
    fn exact(sorted: &[u64], q: u32) -> u64 {
        let n = sorted.len() as u64;
        let rank = (u64::from(q.min(1000)) * n).div_ceil(1000).max(1);
        sorted[(rank - 1) as usize]
    }

    /// `estimate` is within the stated bound of `exact`; returns the
    /// relative error in parts per million (0 below 1.024 µs, where the
    /// bound is absolute).
    fn check(estimate: Duration, exact: u64) -> u64 {
        let estimate = nanos(estimate);
        let diff = estimate.abs_diff(exact);
        if exact >= 1024 {
            assert!(diff * 16 <= exact, "{estimate} ns vs exact {exact} ns");
            diff * 1_000_000 / exact
        } else {
            assert!(diff <= 64, "{estimate} ns vs exact {exact} ns");
            0
        }
    }

    /// Records `samples` at `now` and checks every `q` against the exact
    /// quantile; returns the worst relative error in ppm.
    fn compare(samples: &[u64], qs: &[u32]) -> u64 {
        let t = Instant::from_secs(1);
        let mut s = LatencySketch::new(Duration::from_secs(10)).with_min_samples(1);
        for &x in samples {
            s.record(Duration::from_nanos(x), t);
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        assert_eq!(s.count(t), samples.len() as u64);
        qs.iter()
            .map(|&q| check(s.quantile(q, t).unwrap(), exact(&sorted, q)))
            .max()
            .unwrap_or(0)
    }

    /// A published answer is the sketch's: after every record and every
    /// ask, at any `now` before the window's end, for the quantile it was
    /// made for, and nothing past the end or for another quantile.
    #[test]
    fn published_answers_are_the_sketchs() {
        let mut rng = fastrand::Rng::with_seed(0x9b);
        let window = Duration::from_secs(10);
        let mut s = LatencySketch::new(window).with_min_samples(5);
        let mut published = TrackedAnswer::NONE;
        let mut end = 0;
        let mut hits = 0;
        // Fewer samples under Miri (each asks the whole sketch thrice).
        let samples: u64 = if cfg!(miri) { 300 } else { 20_000 };
        for i in 0..samples {
            // Mostly fast, a slow tail, crossing windows now and then.
            let now = Instant::from_millis(1_000 + i * 3);
            let latency = if rng.u32(..100) < 3 {
                Duration::from_millis(rng.u64(200..2_000))
            } else {
                Duration::from_micros(rng.u64(500..20_000))
            };
            let q = if i % 1_000 < 10 { 990 } else { 950 };
            if let Some(answer) = published.get(q, now, end) {
                assert_eq!(answer, s.quantile(q, now), "published, sample {i}");
                hits += 1;
            }
            let (answer, p) = s.quantile_published(q, now);
            assert_eq!(answer, s.quantile(q, now), "asked, sample {i}");
            (published, end) = (p, s.window_end());
            for later in [now, Instant::from_nanos(end - 1)] {
                if let Some(got) = published.get(q, later, end) {
                    assert_eq!(got, s.quantile(q, later), "sample {i} at {later:?}");
                }
            }
            assert_eq!(published.get(q, Instant::from_nanos(end), end), None);
            assert_eq!(published.get(q + 1, now, end), None);
            published = s.record_published(latency, now);
            end = s.window_end();
            if let Some(got) = published.get(q, now, end) {
                assert_eq!(got, s.quantile(q, now), "recorded, sample {i}");
                hits += 1;
            }
        }
        assert!(hits > samples * 3 / 2, "published answers held: {hits}");
        assert_eq!(TrackedAnswer::NONE.get(950, Instant::ZERO, u64::MAX), None);
    }

    /// The nanosecond entry points count the same buckets and publish the
    /// same answers as the [`Duration`] ones: two sketches fed the same
    /// samples, one each way, stay equal in every count, answer and
    /// published word, across window rotations.
    #[test]
    fn nanosecond_records_and_answers_are_the_duration_ones() {
        let mut rng = fastrand::Rng::with_seed(0x7a);
        let window = Duration::from_millis(50);
        let mut by_duration = LatencySketch::new(window).with_min_samples(3);
        let mut by_nanos = by_duration.clone();
        let samples: u64 = if cfg!(miri) { 200 } else { 20_000 };
        let mut now = Instant::from_secs(1);
        for i in 0..samples {
            let nanos = match rng.u8(..10) {
                0 => rng.u64(..1_024),
                1 => u64::MAX - rng.u64(..3),
                2 => rng.u64(128_000_000_000..140_000_000_000),
                _ => rng.u64(1_000..2_000_000_000),
            };
            now = now + Duration::from_micros(rng.u64(..200));
            let q = [950, 990, 500][(i / 1_000 % 3) as usize];
            if i % 2 == 0 {
                by_duration.record(Duration::from_nanos(nanos), now);
                by_nanos.record_nanos(nanos, now);
            } else {
                let a = by_duration.record_published(Duration::from_nanos(nanos), now);
                let b = by_nanos.record_published_nanos(nanos, now);
                assert_eq!(a, b, "sample {i}");
                let end = by_nanos.window_end();
                assert_eq!(
                    b.get_nanos(q, now, end),
                    b.get(q, now, end).map(|a| a.map(nanos_of)),
                    "sample {i}"
                );
            }
            assert_eq!(by_duration.count(now), by_nanos.count(now));
            let (a, pa) = by_duration.quantile_published(q, now);
            let (b, pb) = by_nanos.quantile_published(q, now);
            assert_eq!((a, pa), (b, pb), "sample {i}");
            let end = by_nanos.window_end();
            if let Some(got) = pb.get_nanos(q, now, end) {
                assert_eq!(got, b.map(nanos_of), "sample {i}");
            }
            assert_eq!(pb.get_nanos(q, Instant::from_nanos(end), end), None);
        }
        assert_eq!(
            TrackedAnswer::NONE.get_nanos(950, Instant::ZERO, u64::MAX),
            None
        );
    }

    fn nanos_of(d: Duration) -> u64 {
        nanos(d)
    }

    #[test]
    fn the_size_is_fixed() {
        assert_eq!(BUCKETS, 224);
        assert_eq!(core::mem::size_of::<LatencySketch>(), 2288);
    }

    #[test]
    fn buckets_tile_the_range_in_order() {
        let mut next = 0;
        for index in 0..BUCKETS {
            let (first, width) = bounds(index);
            assert_eq!(
                first,
                next,
                "bucket {index} starts where {} ends",
                index.wrapping_sub(1)
            );
            assert_eq!(bucket(first), index);
            assert_eq!(bucket(first + width - 1), index);
            if first >= 1024 {
                assert!(
                    width * 8 <= first,
                    "bucket {index}: width {width} at {first}"
                );
            }
            next = first + width;
        }
        assert_eq!(next, 1 << 37, "the top bucket ends at 2^37 ns");
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket(0), 0);
    }

    #[test]
    fn uniform_latencies() {
        // 1 ms to 100 ms in 10 µs steps (500 µs under Miri), each once, in
        // a shuffled order.
        let step = if cfg!(miri) { 50 } else { 1 };
        let mut samples: Vec<u64> = (100..=10_000).step_by(step).map(|i| i * 10_000).collect();
        fastrand::Rng::with_seed(7).shuffle(&mut samples);
        let worst = compare(&samples, &[0, 10, 250, 500, 900, 950, 990, 999, 1000]);
        assert!(worst <= 62_500, "worst {worst} ppm");
        std::println!("uniform 1..100 ms: worst relative error {worst} ppm");
    }

    #[test]
    fn bimodal_latencies_like_tail_at_scale() {
        // 99 % at 10 ms, 1 % at 1 s; 10 000 samples (500 under Miri).
        let n = if cfg!(miri) { 500 } else { 10_000 };
        let mut samples: Vec<u64> = (0..n)
            .map(|i| if i % 100 == 0 { 1_000 * MS } else { 10 * MS })
            .collect();
        fastrand::Rng::with_seed(8).shuffle(&mut samples);
        let t = Instant::from_secs(1);
        let mut s = LatencySketch::new(Duration::from_secs(10));
        for &x in &samples {
            s.record(Duration::from_nanos(x), t);
        }
        for (q, want) in [
            (500, 10 * MS),
            (990, 10 * MS),
            (991, 1_000 * MS),
            (999, 1_000 * MS),
        ] {
            let got = s.quantile(q, t).unwrap();
            let ppm = check(got, want);
            std::println!("bimodal p{q}‰: {got:?} (exact {want} ns, {ppm} ppm)");
        }
        let worst = compare(&samples, &[0, 500, 900, 990, 991, 999, 1000]);
        assert!(worst <= 62_500);
    }

    #[test]
    fn samples_stop_counting_after_two_windows() {
        let w = Duration::from_secs(1);
        let mut s = LatencySketch::new(w).with_min_samples(1);
        // Windows are aligned: [10 s, 11 s) is the first.
        let t0 = Instant::from_millis(10_500);
        for _ in 0..100 {
            s.record(Duration::from_secs(1), t0);
        }
        assert_eq!(s.count(t0), 100);
        // In the next window the old samples still count...
        let t1 = Instant::from_millis(11_000);
        assert_eq!(s.count(t1), 100);
        for _ in 0..10 {
            s.record(Duration::from_millis(10), t1);
        }
        assert_eq!(s.count(t1), 110);
        let p50 = s.quantile(500, t1).unwrap();
        assert!(p50.abs_diff(Duration::from_secs(1)) <= Duration::from_secs(1) / 16);
        // ...and stop in the one after: only the 10 ms samples are left.
        let t2 = Instant::from_millis(12_000);
        assert_eq!(s.count(t2), 10);
        let p100 = s.quantile(1000, t2).unwrap();
        assert!(p100.abs_diff(Duration::from_millis(10)) <= Duration::from_millis(10) / 16);
        // Recording there rotates; the same answer follows.
        s.record(Duration::from_millis(10), t2);
        assert_eq!(s.count(t2), 11);
        // Two windows of silence forget everything, with or without a record.
        let t4 = Instant::from_millis(14_000);
        assert_eq!(s.count(t4), 0);
        assert_eq!(s.quantile(500, t4), None);
        let t9 = Instant::from_millis(19_999);
        s.record(Duration::from_millis(3), t9);
        assert_eq!(s.count(t9), 1);
        // The new window is aligned: [19 s, 20 s), so at 21 s it is gone.
        assert_eq!(s.count(Instant::from_millis(20_999)), 1);
        assert_eq!(s.count(Instant::from_secs(21)), 0);
    }

    #[test]
    fn an_earlier_now_counts_in_the_current_window() {
        let mut s = LatencySketch::new(Duration::from_secs(1)).with_min_samples(1);
        s.record(Duration::from_millis(5), Instant::from_millis(5_500));
        s.record(Duration::from_millis(5), Instant::from_millis(1_000));
        assert_eq!(s.count(Instant::from_millis(5_500)), 2);
        assert_eq!(s.count(Instant::ZERO), 2);
    }

    #[test]
    fn no_quantile_below_min_samples() {
        let t = Instant::from_secs(3);
        let mut s = LatencySketch::new(Duration::from_secs(1));
        assert_eq!(s.min_samples(), LatencySketch::DEFAULT_MIN_SAMPLES);
        assert_eq!(s.quantile(500, t), None);
        for _ in 0..19 {
            s.record(Duration::from_millis(10), t);
        }
        assert_eq!(s.quantile(500, t), None);
        s.record(Duration::from_millis(10), t);
        assert!(s.quantile(500, t).is_some());

        let mut s = LatencySketch::new(Duration::from_secs(1)).with_min_samples(0);
        assert_eq!(s.min_samples(), 1);
        assert_eq!(s.quantile(1000, t), None, "no samples, no quantile");
        s.record(Duration::from_millis(10), t);
        assert!(s.quantile(1000, t).is_some());
    }

    #[test]
    fn extreme_quantiles_are_the_smallest_and_largest_samples() {
        let t = Instant::from_secs(1);
        let mut s = LatencySketch::new(Duration::from_secs(1)).with_min_samples(1);
        for ms in [7, 300, 2, 40_000] {
            s.record(Duration::from_millis(ms), t);
        }
        let near = |d: Duration, ms: u64| check(d, ms * MS);
        near(s.quantile(0, t).unwrap(), 2);
        near(s.quantile(1, t).unwrap(), 2);
        near(s.quantile(250, t).unwrap(), 2);
        near(s.quantile(251, t).unwrap(), 7);
        near(s.quantile(999, t).unwrap(), 40_000);
        near(s.quantile(1000, t).unwrap(), 40_000);
        assert_eq!(s.quantile(5000, t), s.quantile(1000, t));

        // Zero, sub-microsecond and off-the-scale latencies.
        let mut s = LatencySketch::new(Duration::ZERO).with_min_samples(1);
        assert_eq!(s.window(), Duration::from_nanos(1));
        s.record(Duration::ZERO, t);
        assert_eq!(s.quantile(500, t), Some(Duration::from_nanos(64)));
        s.record(Duration::from_nanos(900), t);
        assert_eq!(s.quantile(1000, t), Some(Duration::from_nanos(960)));
        s.record(Duration::MAX, t);
        let top = s.quantile(1000, t).unwrap();
        assert!(top > Duration::from_secs(128) && top < Duration::from_secs(138));
        // A zero window: the next nanosecond is already the next window.
        assert_eq!(s.count(t + Duration::from_nanos(1)), 3);
        assert_eq!(s.count(t + Duration::from_nanos(2)), 0);
    }

    #[test]
    fn random_samples_match_exact_quantiles() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let mut worst = 0;
        // 300 runs of up to 2000 samples; 5 of up to 200 under Miri.
        let (runs, max_samples) = if cfg!(miri) { (5, 200) } else { (300, 2_000) };
        for _ in 0..runs {
            let n = rng.usize(1..max_samples);
            // Log-uniform-ish between 256 ns and 128 s: a random power of
            // two, then a uniform value inside it; a few exact repeats.
            let samples: Vec<u64> = (0..n)
                .map(|_| match rng.u8(0..10) {
                    0 => 10 * MS,
                    _ => {
                        let e = rng.u32(8..37);
                        rng.u64(1 << e..2 << e)
                    }
                })
                .collect();
            let qs: Vec<u32> = (0..8).map(|_| rng.u32(0..=1000)).collect();
            worst = worst.max(compare(&samples, &qs));
        }
        assert!(worst <= 62_500);
        std::println!("random: worst relative error {worst} ppm");
    }

    /// The tracked quantile is the scanned one, whatever the order of
    /// records, quantiles asked and windows rotating (the error bound is
    /// the scan's: the same bucket).
    #[test]
    fn the_tracked_quantile_is_the_scanned_one() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut sketch = LatencySketch::new(Duration::from_secs(1)).with_min_samples(1);
        let mut now = Instant::from_secs(10);
        // Fewer steps under Miri (still several window rotations).
        let (steps, max_gap) = if cfg!(miri) {
            (300, 30_000)
        } else {
            (20_000, 400)
        };
        for step in 0..steps {
            let r = next();
            // Mostly fast, sometimes slow (a bimodal tail), over 1 µs..10 s.
            let latency = match r % 100 {
                0..=89 => 1_000 + r % 50_000_000,
                90..=98 => 500_000_000 + r % 1_000_000_000,
                _ => 1 + r % 10_000_000_000,
            };
            sketch.record(Duration::from_nanos(latency), now);
            let q = [500, 950, 990, 999, 1000, 0][(r >> 40) as usize % 6];
            for q in [q, q, 950] {
                assert_eq!(
                    sketch.quantile_tracked(q, now),
                    sketch.quantile(q, now),
                    "step {step}, q {q}"
                );
            }
            now = now + Duration::from_micros(next() % max_gap);
        }
    }

    /// The tracked quantile in nanoseconds is `nanos` of the tracked (and
    /// scanned) one, and a sketch fed `record_nanos` answers as one fed
    /// `record` of the same durations, at every step, across rotations
    /// and with the quantile changing (the simulator's gate uses these two).
    #[test]
    fn the_tracked_quantile_in_nanoseconds_is_the_tracked_one() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let window = Duration::from_millis(500);
        let mut by_duration = LatencySketch::new(window).with_min_samples(5);
        let mut by_nanos = LatencySketch::new(window).with_min_samples(5);
        let mut now = Instant::from_secs(3);
        let steps = if cfg!(miri) { 300 } else { 10_000 };
        let mut answered = 0;
        for step in 0..steps {
            let r = next();
            // Up to 20 s: past the top bucket (which clamps) too.
            let latency = match r % 100 {
                0..=94 => r % 30_000_000,
                _ => r % 20_000_000_000,
            };
            by_duration.record(Duration::from_nanos(latency), now);
            by_nanos.record_nanos(latency, now);
            let q = [500, 950, 990, 1000, 1500][(r >> 40) as usize % 5];
            let want = by_duration.quantile_tracked(q, now);
            assert_eq!(want, by_duration.quantile(q, now), "step {step}, q {q}");
            assert_eq!(
                by_nanos.quantile_tracked_nanos(q, now),
                want.map(nanos),
                "step {step}, q {q}"
            );
            answered += usize::from(want.is_some());
            now = now + Duration::from_micros(next() % 2_000);
        }
        // Most steps had enough samples (rotations empty the windows).
        assert!(answered > steps * 9 / 10, "{answered} of {steps}");
    }

    /// The table of middles is the middle of each bucket's bounds, and the
    /// bucket of a `Duration` is the bucket of its nanoseconds, at every
    /// bucket's edges and at the top (where the conversion clamps).
    #[test]
    fn middles_and_duration_buckets_match_the_bounds() {
        for index in 0..BUCKETS {
            let (first, width) = bounds(index);
            assert_eq!(nanos(middle(index)), first + width / 2, "bucket {index}");
            for x in [first, first + width / 2, first + width - 1] {
                assert_eq!(bucket_of(Duration::from_nanos(x)), index, "{x} ns");
            }
        }
        for (d, index) in [
            (Duration::ZERO, 0),
            (Duration::from_secs(128), BUCKETS - 2),
            (Duration::from_nanos(128_849_018_879), BUCKETS - 2),
            (Duration::from_nanos(128_849_018_880), BUCKETS - 1),
            (Duration::from_secs(129), BUCKETS - 1),
            (Duration::from_secs(138), BUCKETS - 1),
            (
                Duration::from_secs(u64::MAX / 1_000_000_000 + 1),
                BUCKETS - 1,
            ),
            (Duration::MAX, BUCKETS - 1),
        ] {
            assert_eq!(bucket_of(d), index, "{d:?}");
            assert_eq!(bucket(nanos(d)), index, "{d:?}");
        }
    }

    /// A window whose end is past the clock's last instant (a window longer
    /// than half the clock) ends, for the one comparison a record makes, at
    /// that instant, and the exact age decides from there: a sample at the
    /// last instant counts in the current window, nothing overflows, and
    /// the tracked quantile is the scanned one.
    #[test]
    fn a_window_ending_past_the_last_instant_keeps_counting() {
        let w = (1u64 << 63) + 1;
        let mut s = LatencySketch::new(Duration::from_nanos(w)).with_min_samples(1);
        // The next window, [w, 2w): its end saturates.
        let t = Instant::from_nanos(w + 1);
        s.record(Duration::from_millis(1), t);
        assert_eq!(s.count(t), 1);
        let last = Instant::from_nanos(u64::MAX);
        s.record(Duration::from_millis(100), last);
        assert_eq!(s.count(last), 2, "still the window starting at {w} ns");
        for q in [0, 500, 1000] {
            assert_eq!(s.quantile_tracked(q, last), s.quantile(q, last));
            assert_eq!(s.quantile_tracked(q, last), s.quantile(q, t));
        }
        let p100 = s.quantile_tracked(1000, last).unwrap();
        assert!(p100.abs_diff(Duration::from_millis(100)) <= Duration::from_millis(100) / 16);
    }

    /// Records at and just after a window's end rotate exactly once, and
    /// the tracked quantile follows the rotation.
    #[test]
    fn the_rotation_instant_is_the_window_end() {
        let w = Duration::from_millis(10);
        let mut s = LatencySketch::new(w).with_min_samples(1);
        let end = Instant::from_millis(10);
        s.record(Duration::from_secs(1), Instant::from_nanos(9_999_999));
        assert_eq!(
            s.quantile_tracked(1000, Instant::from_nanos(9_999_999)),
            s.quantile(1000, end - Duration::from_nanos(1))
        );
        // At the end: the previous window still counts, the second sample
        // goes to the new one.
        s.record(Duration::from_millis(1), end);
        assert_eq!(s.count(end), 2);
        assert_eq!(s.quantile_tracked(0, end), s.quantile(0, end));
        assert_eq!(s.quantile_tracked(1000, end), s.quantile(1000, end));
        // One window later the 1 s sample is gone, the tracked answer too.
        let later = Instant::from_millis(20);
        assert_eq!(s.count(later), 1);
        let p100 = s.quantile_tracked(1000, later).unwrap();
        assert_eq!(Some(p100), s.quantile(1000, later));
        assert!(p100 < Duration::from_millis(2));
    }

    #[test]
    fn debug_is_short() {
        let s = LatencySketch::new(Duration::from_secs(1));
        let text = std::format!("{s:?}");
        assert!(text.starts_with("LatencySketch { window: 1s"), "{text}");
        assert!(text.len() < 200);
    }
}
