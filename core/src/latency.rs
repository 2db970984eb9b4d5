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
//! [`LatencySketch::record`] is two comparisons, a leading-zeros count, two
//! shifts and three additions; [`LatencySketch::quantile`] is one
//! multiplication, one division and a scan of at most 28 group sums then 8
//! counts a window, whatever the latencies.
//! [`LatencySketch::quantile_tracked`], what a quantile trigger asks on
//! every hedge decision, gives the same answer from where the last one lay
//! (16 bytes of the state): a record moves the rank by at most one sample,
//! so between rotations it is usually a multiplication, a division and a
//! comparison or two. No floats anywhere (a Cortex-M4F has only a
//! single-precision FPU).
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

/// Groups of [`SUB`] buckets whose sums the sketch keeps, so that a
/// quantile skips whole groups.
const GROUPS: usize = BUCKETS / SUB as usize;

/// A quantile's rank denominator: `q_permille` 990 is p99, 999 is p99.9.
const PERMILLE: u64 = 1_000;

/// The bucket counting a latency of `nanos` nanoseconds.
const fn bucket(nanos: u64) -> usize {
    let units = nanos >> UNIT_SHIFT;
    if units < 2 * SUB {
        return units as usize;
    }
    // `units` ≥ 16, so `e` ≥ 4.
    let e = 63 - units.leading_zeros();
    if e > TOP_EXP {
        return BUCKETS - 1;
    }
    let sub = (units >> (e - SUB_BITS)) & (SUB - 1);
    ((e - SUB_BITS + 1) as u64 * SUB + sub) as usize
}

/// The first nanosecond counted by bucket `index` and the bucket's width in
/// nanoseconds.
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
    /// Samples in each window (saturating).
    totals: [u32; 2],
    /// The start of the current window.
    start: Instant,
    /// The window length in nanoseconds, at least 1.
    window: u64,
    /// Fewer samples than this make no quantile.
    min_samples: u32,
    /// Which of `counts` is the current window: 0 or 1.
    current: u8,
    /// Where the last [`LatencySketch::quantile_tracked`] answer lies, so
    /// that the next is found from there.
    cursor: Cursor,
}

/// The bucket holding the sample of one quantile's rank, and the samples
/// of both windows below it: kept by [`LatencySketch::quantile_tracked`]
/// across records (each moves the rank by at most one sample) and cleared
/// by a rotation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Cursor {
    /// The quantile it tracks, in permille; `u16::MAX`: none.
    q_permille: u16,
    /// The bucket of the last answer.
    bucket: u16,
    /// Samples (both windows) in the buckets before `bucket`.
    below: u64,
}

impl Cursor {
    const NONE: Self = Self {
        q_permille: u16::MAX,
        bucket: 0,
        below: 0,
    };
}

// The size the module docs state, on every target (`u64` aligned to 4 or 8
// bytes alike).
const _: () = assert!(core::mem::size_of::<LatencySketch>() == 2288);

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
        Self {
            counts: [[0; BUCKETS]; 2],
            groups: [[0; GROUPS]; 2],
            totals: [0; 2],
            start: Instant::ZERO,
            window: if window == 0 { 1 } else { window },
            min_samples: Self::DEFAULT_MIN_SAMPLES,
            current: 0,
            cursor: Cursor::NONE,
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
    pub fn record(&mut self, latency: Duration, now: Instant) {
        self.rotate(now);
        let current = usize::from(self.current);
        let index = bucket(nanos(latency));
        let slot = &mut self.counts[current][index];
        if *slot < u32::MAX {
            *slot += 1;
            self.groups[current][index / SUB as usize] += 1;
            if index < usize::from(self.cursor.bucket) {
                self.cursor.below += 1;
            }
        }
        self.totals[current] = self.totals[current].saturating_add(1);
    }

    /// Samples counted at `now`: those of the last one to two windows.
    pub fn count(&self, now: Instant) -> u64 {
        let current = usize::from(self.current);
        match self.age(now) {
            Age::Current => u64::from(self.totals[0]) + u64::from(self.totals[1]),
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
        if n == 0 || n < u64::from(self.min_samples) {
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
    pub fn quantile_tracked(&mut self, q_permille: u32, now: Instant) -> Option<Duration> {
        if self.age(now) != Age::Current {
            return self.quantile(q_permille, now);
        }
        let n = u64::from(self.totals[0]) + u64::from(self.totals[1]);
        if n == 0 || n < u64::from(self.min_samples) {
            return None;
        }
        let rank = rank(q_permille, n);
        let q = q_permille.min(PERMILLE as u32) as u16;
        if self.cursor.q_permille != q {
            let (bucket, below) = self.locate(rank, true);
            self.cursor = Cursor {
                q_permille: q,
                bucket: bucket as u16,
                below,
            };
            return Some(middle(bucket));
        }
        // Walk from the last answer: up while the rank lies past this
        // bucket, down while it lies before it, a whole group of 8 at a time
        // from a group's first bucket. A record moves the rank by at most one
        // sample, so the walk is usually no step at all, and never more than
        // the scan's 28 groups and 16 buckets.
        let Cursor {
            mut bucket,
            mut below,
            ..
        } = self.cursor;
        // Usually the rank is still in the same bucket.
        if below < rank && rank <= below + self.both(usize::from(bucket)) {
            return Some(middle(usize::from(bucket)));
        }
        loop {
            let at = usize::from(bucket);
            let group = at / SUB as usize;
            if at % SUB as usize == 0 {
                // At a group's first bucket: skip whole groups.
                let sum = self.groups[0][group] + self.groups[1][group];
                if below + sum < rank && at + (SUB as usize) < BUCKETS {
                    below += sum;
                    bucket += SUB as u16;
                    continue;
                }
                if group > 0 {
                    let before = self.groups[0][group - 1] + self.groups[1][group - 1];
                    if below >= before && below - before >= rank {
                        below -= before;
                        bucket -= SUB as u16;
                        continue;
                    }
                }
            }
            let here = self.both(at);
            if below + here < rank {
                if usize::from(bucket) + 1 >= BUCKETS {
                    // A saturated window: as `locate`, the top bucket.
                    self.cursor = Cursor::NONE;
                    return Some(middle(BUCKETS - 1));
                }
                below += here;
                bucket += 1;
            } else if below >= rank && bucket > 0 {
                bucket -= 1;
                below -= self.both(usize::from(bucket));
            } else {
                break;
            }
        }
        self.cursor.bucket = bucket;
        self.cursor.below = below;
        Some(middle(usize::from(bucket)))
    }

    /// Both windows' count of bucket `index`.
    fn both(&self, index: usize) -> u64 {
        u64::from(self.counts[0][index]) + u64::from(self.counts[1][index])
    }

    /// The bucket holding the sample of `rank` (counting both windows, or
    /// only the current one), and the samples below it.
    fn locate(&self, rank: u64, both: bool) -> (usize, u64) {
        let current = usize::from(self.current);
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

    /// Makes the window holding `now` the current one.
    fn rotate(&mut self, now: Instant) {
        match self.age(now) {
            Age::Current => {}
            Age::Next => {
                self.current ^= 1;
                self.clear(usize::from(self.current));
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
    }

    fn clear(&mut self, window: usize) {
        self.cursor = Cursor::NONE;
        self.counts[window] = [0; BUCKETS];
        self.groups[window] = [0; GROUPS];
        self.totals[window] = 0;
    }
}

/// The nearest rank of the `q_permille`‰ quantile of `n` samples: the
/// smallest sample with at least q‰ of the samples at or below it (values
/// above 1000 are taken as 1000). `q × n` < 2^43: no overflow.
fn rank(q_permille: u32, n: u64) -> u64 {
    let q = u64::from(q_permille).min(PERMILLE);
    (q * n).div_ceil(PERMILLE).max(1)
}

/// The middle of bucket `index`, reported for every sample in it.
fn middle(index: usize) -> Duration {
    let (first, width) = bounds(index);
    Duration::from_nanos(first + width / 2)
}

impl fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = usize::from(self.current);
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

    #[test]
    fn debug_is_short() {
        let s = LatencySketch::new(Duration::from_secs(1));
        let text = std::format!("{s:?}");
        assert!(text.starts_with("LatencySketch { window: 1s"), "{text}");
        assert!(text.len() < 200);
    }
}
