//! What a simulation run measured.

use core::fmt;
use core::time::Duration;
use std::collections::BTreeMap;
use std::sync::mpsc::Sender;

use recourse_core::breaker::CircuitState;
use recourse_core::{AttemptId, AttemptInfo, AttemptKind, Verdict};

use crate::timeline::Ms;

/// Counts kept while the simulation runs.
#[derive(Debug)]
pub(crate) struct Tally {
    warmup: u64,
    /// Call latencies in nanoseconds, in 32 bits while they fit (about
    /// 4.3 s: half the memory to fill and to sort).
    latencies: Latencies,
    error_latencies: Vec<u64>,
    /// Calls that succeeded (counted apart: most calls do, and a map entry
    /// per call cost more than the rest of the tally).
    successes: u64,
    /// Calls that failed, by cause.
    outcomes: BTreeMap<&'static str, u64>,
    attempts: u64,
    hedges: u64,
    retries: u64,
    retry_denials: u64,
    hedge_denials: u64,
    circuit_opened: u64,
    circuit_closed: u64,
    circuit_refusals: u64,
    /// Virtual time from the first arrival to the last event.
    pub(crate) simulated: Duration,
    /// Where full blocks of latencies go while a helper thread takes them
    /// ([`Tally::stream_to`]).
    stream: Option<Sender<Vec<u32>>>,
    /// The count of latencies kept at which a block goes to the helper:
    /// `usize::MAX` when none takes them.
    flush_at: usize,
    /// The latencies the helper took, in its buckets ([`Buckets`]), once
    /// the run is over.
    streamed: Option<Buckets>,
}

impl Tally {
    pub(crate) fn new(warmup: u64, calls: u64) -> Self {
        Self {
            warmup,
            latencies: Latencies::Narrow(Vec::with_capacity(
                usize::try_from(calls).unwrap_or(0).min(1 << 24),
            )),
            error_latencies: Vec::new(),
            successes: 0,
            outcomes: BTreeMap::new(),
            attempts: 0,
            hedges: 0,
            retries: 0,
            retry_denials: 0,
            hedge_denials: 0,
            circuit_opened: 0,
            circuit_closed: 0,
            circuit_refusals: 0,
            simulated: Duration::ZERO,
            stream: None,
            flush_at: usize::MAX,
            streamed: None,
        }
    }

    /// Hands the latencies to `stream` in blocks of [`STREAM_BLOCK`] as
    /// they come (a helper thread puts them in [`Buckets`], the radix
    /// sort's first pass, while the run goes on), until
    /// [`end_stream`](Self::end_stream).
    pub(crate) fn stream_to(&mut self, stream: Sender<Vec<u32>>) {
        if let Latencies::Narrow(v) = &mut self.latencies {
            // Each block is a list of its own: no room beyond one.
            v.shrink_to(STREAM_BLOCK);
            self.stream = Some(stream);
            self.flush_at = STREAM_BLOCK;
        }
    }

    /// Hands the latencies kept so far to the helper thread, or keeps them
    /// all here once it is gone.
    #[cold]
    #[inline(never)]
    fn flush(&mut self) {
        let (Latencies::Narrow(v), Some(stream)) = (&mut self.latencies, &self.stream) else {
            return;
        };
        let block = core::mem::replace(v, Vec::with_capacity(STREAM_BLOCK));
        if let Err(unsent) = stream.send(block) {
            *v = unsent.0;
            self.stream = None;
            self.flush_at = usize::MAX;
        }
    }

    /// Hands the last latencies to the helper thread and lets it go: it
    /// finishes its buckets, which come back by [`Tally::streamed`].
    pub(crate) fn end_stream(&mut self) {
        if matches!(&self.latencies, Latencies::Narrow(v) if !v.is_empty()) {
            self.flush();
        }
        self.stream = None;
        self.flush_at = usize::MAX;
    }

    /// The buckets of the latencies the helper thread took.
    pub(crate) fn streamed(&mut self, buckets: Buckets) {
        self.streamed = Some(buckets);
    }

    /// The breaker went from `before` to `after` (and refused the call).
    pub(crate) fn circuit(&mut self, before: CircuitState, after: CircuitState, refused: bool) {
        match (before, after) {
            (CircuitState::Open { .. }, CircuitState::Open { .. }) => {}
            (_, CircuitState::Open { .. }) => self.circuit_opened += 1,
            (CircuitState::HalfOpen, CircuitState::Closed) => self.circuit_closed += 1,
            _ => {}
        }
        if refused {
            self.circuit_refusals += 1;
        }
    }

    /// Adds the breaker's and the budgets' counts of `other` (what the
    /// gates counted in the shared tally while the engine held this one).
    pub(crate) fn add_counts(&mut self, other: &Tally) {
        self.circuit_opened += other.circuit_opened;
        self.circuit_closed += other.circuit_closed;
        self.circuit_refusals += other.circuit_refusals;
        self.retry_denials += other.retry_denials;
        self.hedge_denials += other.hedge_denials;
    }

    /// Adds the launches the engine counted.
    pub(crate) fn add_launched(&mut self, launched: &Launched) {
        self.attempts += launched.attempts;
        self.hedges += launched.hedges;
        self.retries += launched.retries;
    }

    pub(crate) fn denied(&mut self, kind: AttemptKind) {
        match kind {
            AttemptKind::Hedge => self.hedge_denials += 1,
            AttemptKind::Initial | AttemptKind::Retry => self.retry_denials += 1,
        }
    }

    /// A call ended after `ns` nanoseconds with `verdict`.
    #[inline(always)]
    pub(crate) fn finished(&mut self, ns: u64, verdict: &Verdict) {
        match &mut self.latencies {
            Latencies::Narrow(v) if ns <= u64::from(u32::MAX) => {
                v.push(ns as u32);
                if v.len() >= self.flush_at {
                    self.flush();
                }
            }
            _ => self.latencies.push_wide(ns),
        }
        if matches!(verdict, Verdict::Success(_)) {
            self.successes += 1;
            return;
        }
        self.error_latencies.push(ns);
        *self
            .outcomes
            .entry(super::outcome_name(verdict))
            .or_default() += 1;
    }

    /// The report, its latencies sorted on two threads when `two_threads`
    /// (the same report: a sort is a sort).
    pub(crate) fn into_report(mut self, two_threads: bool) -> Report {
        if self.successes > 0 {
            self.outcomes.insert(
                super::outcome_name(&Verdict::Success(AttemptId(0))),
                self.successes,
            );
        }
        let latencies = match (self.latencies, self.streamed.take()) {
            (Latencies::Narrow(v), None) => radix_sorted_narrow(v, two_threads),
            (Latencies::Wide(mut v), None) => {
                radix_sort(&mut v);
                v
            }
            // The helper thread took some in its buckets: the rest join
            // them.
            (Latencies::Narrow(v), Some(mut buckets)) => {
                buckets.take(&v);
                buckets.sorted(two_threads)
            }
            (Latencies::Wide(mut v), Some(buckets)) => {
                v.extend(buckets.lists.into_iter().flatten().map(u64::from));
                radix_sort(&mut v);
                v
            }
        };
        radix_sort(&mut self.error_latencies);
        Report {
            error_latencies: self.error_latencies,
            calls: latencies.len() as u64,
            warmup: self.warmup,
            attempts: self.attempts,
            hedges: self.hedges,
            retries: self.retries,
            retry_denials: self.retry_denials,
            hedge_denials: self.hedge_denials,
            circuit_opened: self.circuit_opened,
            circuit_closed: self.circuit_closed,
            circuit_refusals: self.circuit_refusals,
            outcomes: self.outcomes,
            latencies,
            clamped: String::new(),
            simulated: self.simulated,
        }
    }
}

/// The measured calls' launches, counted by the engine apart from the
/// [`Tally`] (which the gate's callbacks share) and added to it at the end.
#[derive(Debug, Default)]
pub(crate) struct Launched {
    attempts: u64,
    hedges: u64,
    retries: u64,
}

impl Launched {
    /// Counts the launch of `info`.
    #[inline(always)]
    pub(crate) fn count(&mut self, info: &AttemptInfo) {
        self.attempts += 1;
        match info.kind() {
            AttemptKind::Hedge => self.hedges += 1,
            AttemptKind::Retry => self.retries += 1,
            AttemptKind::Initial => {}
        }
    }
}

/// Call latencies as the tally keeps them.
#[derive(Debug)]
enum Latencies {
    /// Every one so far fits in 32 bits.
    Narrow(Vec<u32>),
    /// Not every one does.
    Wide(Vec<u64>),
}

impl Latencies {
    /// Adds `ns`, widening first if needed.
    #[cold]
    fn push_wide(&mut self, ns: u64) {
        if let Self::Narrow(v) = self {
            let mut wide = Vec::with_capacity(v.capacity().max(v.len() + 1));
            wide.extend(v.iter().map(|&x| u64::from(x)));
            *self = Self::Wide(wide);
        }
        if let Self::Wide(v) = self {
            v.push(ns);
        }
    }
}

/// The measurements of one run, over the calls after the warm-up. Its
/// `Display` is the full text report; the same scenario and seed print the
/// same bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Calls measured.
    pub calls: u64,
    /// Calls run before them and left out.
    pub warmup: u64,
    /// Attempts the measured calls sent to the backend.
    pub attempts: u64,
    /// Of those, hedges.
    pub hedges: u64,
    /// Of those, retries (primaries of a later retry group).
    pub retries: u64,
    /// First attempts and retries a budget refused.
    pub retry_denials: u64,
    /// Hedges a budget refused.
    pub hedge_denials: u64,
    /// Times the circuit breaker opened (from closed, or again from
    /// half-open when a probe failed).
    pub circuit_opened: u64,
    /// Times it closed again (its probes succeeded).
    pub circuit_closed: u64,
    /// Calls it refused (they never reached the backend).
    pub circuit_refusals: u64,
    /// Calls by how they ended: `success`, or the failure's cause
    /// (`retries_exhausted`, `deadline_exceeded`, `budget_denied` ...).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Call latencies, sorted, in nanoseconds.
    latencies: Vec<u64>,
    /// The latencies of the calls that failed, sorted, in nanoseconds.
    error_latencies: Vec<u64>,
    /// The policy fields normalization changed, comma-separated dotted
    /// paths (`retry.max_attempts`); empty when none.
    pub clamped: String,
    /// Virtual time the run covered, warm-up included.
    simulated: Duration,
}

impl Report {
    /// The `q_permille`-th quantile of call latency (999 = p99.9; 1000 =
    /// the maximum), by the nearest-rank method; zero with no calls.
    pub fn quantile(&self, q_permille: u32) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let q = u64::from(q_permille.min(1000));
        // Nearest rank: ceil(q × n / 1000), at least 1.
        let rank = (q * n as u64).div_ceil(1000).max(1);
        let i = usize::try_from(rank - 1).unwrap_or(n - 1).min(n - 1);
        Duration::from_nanos(self.latencies[i])
    }

    /// The `q_permille`-th quantile of the time to error: the latency of
    /// the calls that failed (500 = the median), by the nearest-rank
    /// method; zero when none failed.
    pub fn error_quantile(&self, q_permille: u32) -> Duration {
        nearest_rank(&self.error_latencies, q_permille)
    }

    /// Virtual time the run covered, warm-up included: from the first
    /// call's arrival to the last event (an attempt ending at the backend,
    /// a call's timer going off). Not part of the text report.
    pub fn simulated(&self) -> Duration {
        self.simulated
    }

    /// Mean call latency.
    pub fn mean(&self) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let sum: u128 = self.latencies.iter().map(|&l| u128::from(l)).sum();
        let mean = sum / self.latencies.len() as u128;
        Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX))
    }

    /// Attempts sent per call: 1.0 is no extra load.
    pub fn load_amplification(&self) -> f64 {
        ratio(self.attempts, self.calls)
    }

    /// Extra load: attempts beyond one per call, per call (0.05 = 5 %).
    pub fn extra_load(&self) -> f64 {
        self.load_amplification() - 1.0
    }

    /// Hedges launched per call.
    pub fn hedges_per_call(&self) -> f64 {
        ratio(self.hedges, self.calls)
    }

    /// Calls that succeeded.
    pub fn successes(&self) -> u64 {
        self.outcomes.get("success").copied().unwrap_or(0)
    }

    /// Calls per latency bucket, for the histogram: `(upper bound, count)`,
    /// bounds 1-2-5 from 1 ms to 10 s, then everything longer.
    pub fn histogram(&self) -> Vec<(Option<Duration>, u64)> {
        let mut bounds: Vec<Option<Duration>> = HISTOGRAM_BOUNDS_MS
            .iter()
            .map(|&ms| Some(Duration::from_millis(ms)))
            .collect();
        bounds.push(None);
        let mut counts = vec![0u64; bounds.len()];
        let mut bucket = 0;
        for &l in &self.latencies {
            while let Some(Some(b)) = bounds.get(bucket) {
                if u128::from(l) <= b.as_nanos() {
                    break;
                }
                bucket += 1;
            }
            counts[bucket] += 1;
        }
        bounds.into_iter().zip(counts).collect()
    }
}

const HISTOGRAM_BOUNDS_MS: [u64; 13] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000,
];

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl fmt::Display for Report {
    /// ```text
    /// calls 20000 (after 1000 warm-up)
    /// latency ms     mean      p50      p90      p99    p99.9      max
    ///                10.3     10.0     13.8     18.9     27.2    104.6
    /// attempts/call 1.032  hedges/call 0.032  retries/call 0.000  extra load 3.2 %
    /// budget denials: retries 0, hedges 0
    /// outcomes: success 20000
    /// histogram (calls per latency bucket, bar length on a log scale):
    ///     ≤ 10 ms  10412 ########################################
    /// ...
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "calls {} (after {} warm-up)", self.calls, self.warmup)?;
        if !self.clamped.is_empty() {
            writeln!(f, "policy clamped: {}", self.clamped)?;
        }
        writeln!(
            f,
            "latency ms {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "mean", "p50", "p90", "p99", "p99.9", "max"
        )?;
        writeln!(
            f,
            "           {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            Ms(self.mean()),
            Ms(self.quantile(500)),
            Ms(self.quantile(900)),
            Ms(self.quantile(990)),
            Ms(self.quantile(999)),
            Ms(self.quantile(1000)),
        )?;
        writeln!(
            f,
            "attempts/call {:.3}  hedges/call {:.3}  retries/call {:.3}  extra load {:.1} %",
            self.load_amplification(),
            self.hedges_per_call(),
            ratio(self.retries, self.calls),
            self.extra_load() * 100.0,
        )?;
        writeln!(
            f,
            "budget denials: retries {}, hedges {}",
            self.retry_denials, self.hedge_denials
        )?;
        if self.circuit_opened + self.circuit_closed + self.circuit_refusals > 0 {
            writeln!(
                f,
                "circuit breaker: opened {}, closed {}, calls refused {}",
                self.circuit_opened, self.circuit_closed, self.circuit_refusals
            )?;
        }
        f.write_str("outcomes:")?;
        for (i, (name, n)) in self.outcomes.iter().enumerate() {
            write!(f, "{} {name} {n}", if i == 0 { "" } else { "," })?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "histogram (calls per latency bucket, bar length on a log scale):"
        )?;
        let hist = self.histogram();
        let first = hist.iter().position(|(_, n)| *n > 0).unwrap_or(0);
        let last = hist.iter().rposition(|(_, n)| *n > 0).unwrap_or(0);
        let max = hist.iter().map(|(_, n)| *n).max().unwrap_or(0);
        for (bound, n) in &hist[first..=last] {
            let label = match bound {
                Some(b) if b.as_millis() >= 1_000 => format!("<= {} s", b.as_secs()),
                Some(b) => format!("<= {} ms", b.as_millis()),
                None => "> 10 s".to_owned(),
            };
            let bar = if *n == 0 {
                0
            } else {
                // At least one mark for any non-empty bucket.
                let scale = (1.0 + *n as f64).ln() / (1.0 + max as f64).ln();
                ((scale * 40.0).ceil() as usize).max(1)
            };
            writeln!(f, "  {label:>10} {n:>8} {}", "#".repeat(bar))?;
        }
        Ok(())
    }
}

/// Sorts `v` ascending (the same order as `sort_unstable`: equal values
/// are indistinguishable): a least-significant-digit radix sort, 11 bits a
/// pass, skipping the digits every value shares — latencies under an hour
/// fit in 42 bits, so a million of them take four passes instead of a
/// comparison sort's twenty compares each.
fn radix_sort(v: &mut Vec<u64>) {
    const BITS: u32 = 11;
    const RADIX: usize = 1 << BITS;
    const PASSES: usize = 64_usize.div_ceil(BITS as usize);
    if v.len() < 4 * RADIX {
        v.sort_unstable();
        return;
    }
    let digit = |x: u64, pass: usize| (x >> (pass as u32 * BITS)) as usize & (RADIX - 1);
    // Only the digits some value has: latencies under 2 s fit in three.
    let bits = 64 - v.iter().fold(0, |all, &x| all | x).leading_zeros();
    let passes = (bits as usize).div_ceil(BITS as usize).clamp(1, PASSES);
    let mut counts = vec![[0usize; RADIX]; passes];
    // Every digit counted in one read of the values, the passes unrolled.
    fn count<const P: usize>(v: &[u64], counts: &mut [[usize; RADIX]]) {
        let Ok(counts) = <&mut [[usize; RADIX]; P]>::try_from(counts) else {
            return;
        };
        for &x in v {
            for (pass, c) in counts.iter_mut().enumerate() {
                c[(x >> (pass as u32 * BITS)) as usize & (RADIX - 1)] += 1;
            }
        }
    }
    match passes {
        1 => count::<1>(v, &mut counts),
        2 => count::<2>(v, &mut counts),
        3 => count::<3>(v, &mut counts),
        4 => count::<4>(v, &mut counts),
        5 => count::<5>(v, &mut counts),
        _ => count::<PASSES>(v, &mut counts),
    }
    let n = v.len();
    let mut buf = vec![0u64; n];
    for (pass, c) in counts.iter_mut().enumerate() {
        if c.contains(&n) {
            continue;
        }
        let mut sum = 0;
        for k in c.iter_mut() {
            sum += core::mem::replace(k, sum);
        }
        for &x in v.iter() {
            let d = digit(x, pass);
            buf[c[d]] = x;
            c[d] += 1;
        }
        core::mem::swap(v, &mut buf);
    }
}

/// 32-bit values sorted ascending and widened to 64 bits (the order of
/// `sort_unstable`): a radix sort by the top 11 bits first, then within
/// each bucket by the bits below (least significant digit first, the last
/// pass widening), and buckets too small for that by `sort_unstable`.
///
/// Why the top digit first: call latencies gather in a few milliseconds'
/// worth of buckets, each small enough to sort in the cache, so the whole
/// list goes through memory twice (the first pass, the last) instead of
/// once a digit (the passes of [`radix_sort`] over lists larger than the
/// cache were bound by memory traffic).
fn radix_sorted_narrow(mut v: Vec<u32>, two_threads: bool) -> Vec<u64> {
    const TOP: u32 = 11;
    /// Buckets below this are sorted by comparison.
    const SMALL: usize = 2_048;
    let n = v.len();
    let bits = 32 - v.iter().fold(0, |all, &x| all | x).leading_zeros();
    if n < 2 * SMALL || bits <= TOP {
        let mut wide: Vec<u64> = v.into_iter().map(u64::from).collect();
        wide.sort_unstable();
        return wide;
    }
    // The bits under the top digit: 1..=21, sorted in one or two passes
    // of at most 11 bits.
    let shift = bits - TOP;
    let passes = shift.div_ceil(11);
    let width = shift.div_ceil(passes);
    let mut starts = [0usize; 1 << TOP];
    for &x in &v {
        starts[(x >> shift) as usize] += 1;
    }
    let mut sum = 0;
    for s in &mut starts {
        sum += core::mem::replace(s, sum);
    }
    let mut ends = starts;
    let mut buf = vec![0u32; n];
    for &x in &v {
        let d = (x >> shift) as usize;
        buf[ends[d]] = x;
        ends[d] += 1;
    }
    let mut out = vec![0u64; n];
    let buckets: Vec<(usize, usize)> = starts
        .iter()
        .zip(&ends)
        .map(|(&a, &b)| (a, b))
        .filter(|(a, b)| a < b)
        .collect();
    let sort =
        |buf: &mut [u32], scratch: &mut [u32], out: &mut [u64], buckets: &[(usize, usize)]| {
            // The buckets' bounds are in the whole list; the slices start at
            // the first bucket's.
            let base = buckets.first().map_or(0, |b| b.0);
            let mut counts = [[0usize; 1 << 11]; 2];
            for &(a, b) in buckets {
                let (a, b) = (a - base, b - base);
                let (bucket, scratch, out) = (&mut buf[a..b], &mut scratch[a..b], &mut out[a..b]);
                if bucket.len() < SMALL {
                    bucket.sort_unstable();
                    for (o, &x) in out.iter_mut().zip(bucket.iter()) {
                        *o = u64::from(x);
                    }
                    continue;
                }
                sort_bucket(bucket, scratch, out, width, passes, &mut counts);
            }
        };
    // On two threads: the buckets from the one holding the middle value on
    // go to a second thread (the buckets are apart in all three lists).
    let split = buckets.partition_point(|b| b.1 <= n / 2);
    if !two_threads || n < PARALLEL || split == 0 || split == buckets.len() {
        sort(&mut buf, &mut v, &mut out, &buckets);
        return out;
    }
    let mid = buckets[split].0;
    let (buf_low, buf_high) = buf.split_at_mut(mid);
    let (v_low, v_high) = v.split_at_mut(mid);
    let (out_low, out_high) = out.split_at_mut(mid);
    let (low, high) = buckets.split_at(split);
    // The upper half waits here until a thread takes it; if none can be
    // started, this thread sorts it too.
    let upper = std::sync::Mutex::new(Some((buf_high, v_high, out_high)));
    let sort_upper = || {
        let taken = upper.lock().map(|mut u| u.take()).ok().flatten();
        if let Some((buf, scratch, out)) = taken {
            sort(buf, scratch, out, high);
        }
    };
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("recourse-sim-sort".into())
            .spawn_scoped(scope, sort_upper);
        sort(buf_low, v_low, out_low, low);
        if helper.is_err() {
            sort_upper();
        }
    });
    out
}

/// Latencies from which [`radix_sorted_narrow`] sorts its buckets on two
/// threads when asked to (fewer sort in less time than a thread takes to
/// start).
const PARALLEL: usize = 1 << 16;

/// Sorts `bucket` (values that differ only in their low `width × passes`
/// bits, `passes` 1 or 2) into `out`, widened, by the digits of `width`
/// bits, least significant first; `scratch` (as long) holds the values
/// between the passes.
fn sort_bucket(
    bucket: &[u32],
    scratch: &mut [u32],
    out: &mut [u64],
    width: u32,
    passes: u32,
    counts: &mut [[usize; 1 << 11]; 2],
) {
    let radix = 1usize << width;
    let mask = radix - 1;
    let digit = |x: u32, pass: u32| (x >> (pass * width)) as usize & mask;
    for c in counts.iter_mut() {
        c[..radix].fill(0);
    }
    for &x in bucket {
        counts[0][digit(x, 0)] += 1;
        counts[1][digit(x, 1)] += 1;
    }
    for c in counts.iter_mut() {
        let mut sum = 0;
        for k in &mut c[..radix] {
            sum += core::mem::replace(k, sum);
        }
    }
    let [first, second] = counts;
    if passes == 1 {
        for &x in bucket {
            let d = digit(x, 0);
            out[first[d]] = u64::from(x);
            first[d] += 1;
        }
        return;
    }
    for &x in bucket {
        let d = digit(x, 0);
        scratch[first[d]] = x;
        first[d] += 1;
    }
    for &x in scratch.iter() {
        let d = digit(x, 1);
        out[second[d]] = u64::from(x);
        second[d] += 1;
    }
}

/// Latencies per block a helper thread takes ([`Tally::stream_to`]); a
/// few in the crate's tests, so that their runs hand over many blocks.
pub(crate) const STREAM_BLOCK: usize = if cfg!(test) { 64 } else { 1 << 13 };

/// Streamed latencies by their top 11 bits (of 32): the radix sort's first
/// pass, made by the helper thread as the blocks come.
#[derive(Debug)]
pub(crate) struct Buckets {
    lists: Vec<Vec<u32>>,
}

impl Buckets {
    /// The bits under the top digit.
    const SHIFT: u32 = 21;

    pub(crate) fn new() -> Self {
        Self {
            lists: vec![Vec::new(); 1 << (32 - Self::SHIFT)],
        }
    }

    /// Puts each of `block` in its bucket.
    pub(crate) fn take(&mut self, block: &[u32]) {
        for &x in block {
            self.lists[(x >> Self::SHIFT) as usize].push(x);
        }
    }

    /// Every latency, sorted and widened: each bucket by the 21 bits under
    /// the top digit (two passes of 11), on two threads when `two_threads`
    /// and there are many (the buckets from the one holding the middle
    /// value on go to the second).
    fn sorted(mut self, two_threads: bool) -> Vec<u64> {
        /// Buckets below this are sorted by comparison.
        const SMALL: usize = 2_048;
        let n: usize = self.lists.iter().map(Vec::len).sum();
        let mut out = vec![0u64; n];
        let sort = |lists: &mut [Vec<u32>], out: &mut [u64]| {
            let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
            let mut scratch = vec![0u32; longest];
            let mut counts = [[0usize; 1 << 11]; 2];
            let mut at = 0;
            for list in lists {
                let len = list.len();
                let out = &mut out[at..at + len];
                at += len;
                if len < SMALL {
                    list.sort_unstable();
                    for (o, &x) in out.iter_mut().zip(list.iter()) {
                        *o = u64::from(x);
                    }
                    continue;
                }
                sort_bucket(list, &mut scratch[..len], out, 11, 2, &mut counts);
            }
        };
        // The first bucket holding a value past the middle, and where it
        // starts.
        let (mut split, mut mid) = (self.lists.len(), 0);
        for (i, list) in self.lists.iter().enumerate() {
            if mid + list.len() > n / 2 {
                split = i;
                break;
            }
            mid += list.len();
        }
        if !two_threads || n < PARALLEL || split == 0 || split == self.lists.len() {
            sort(&mut self.lists, &mut out);
            return out;
        }
        let (low, high) = self.lists.split_at_mut(split);
        let (out_low, out_high) = out.split_at_mut(mid);
        // The upper half waits here until a thread takes it; if none can be
        // started, this thread sorts it too.
        let upper = std::sync::Mutex::new(Some((high, out_high)));
        let sort_upper = || {
            let taken = upper.lock().map(|mut u| u.take()).ok().flatten();
            if let Some((lists, out)) = taken {
                sort(lists, out);
            }
        };
        std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("recourse-sim-sort".into())
                .spawn_scoped(scope, sort_upper);
            sort(low, out_low);
            if helper.is_err() {
                sort_upper();
            }
        });
        out
    }
}

/// The nearest-rank `q_permille` quantile of sorted nanoseconds.
fn nearest_rank(sorted: &[u64], q_permille: u32) -> Duration {
    let n = sorted.len();
    if n == 0 {
        return Duration::ZERO;
    }
    let q = u64::from(q_permille.min(1000));
    let rank = (q * n as u64).div_ceil(1000).max(1);
    let i = usize::try_from(rank - 1).unwrap_or(n - 1).min(n - 1);
    Duration::from_nanos(sorted[i])
}

#[cfg(test)]
mod tests {
    use super::{radix_sort, radix_sorted_narrow, Tally};
    use recourse_core::{AttemptId, Verdict};

    /// A latency past 32 bits widens the tally's list; the report has
    /// every latency, sorted.
    #[test]
    fn latencies_past_32_bits_widen_the_tally() {
        let success = Verdict::Success(AttemptId(0));
        let mut tally = Tally::new(0, 4);
        let values = [
            5,
            1 << 33,
            7,
            u64::from(u32::MAX),
            3,
            u64::from(u32::MAX) + 1,
        ];
        for ns in values {
            tally.finished(ns, &success);
        }
        let report = tally.into_report(false);
        let mut want = values.to_vec();
        want.sort_unstable();
        assert_eq!(report.latencies, want);
        assert_eq!(report.calls, 6);
    }

    #[test]
    fn the_radix_sort_sorts_as_the_standard_sort_does() {
        let mut rng = fastrand::Rng::with_seed(4);
        for (n, max) in [
            (0, 1),
            (10, 100),
            (20_000, 1 << 42),
            (50_000, u64::MAX),
            (30_000, 7),
        ] {
            let v: Vec<u64> = (0..n).map(|_| rng.u64(0..max)).collect();
            let mut want = v.clone();
            want.sort_unstable();
            let mut got = v;
            radix_sort(&mut got);
            assert_eq!(got, want, "{n} values below {max}");
        }
        for (n, max, shift) in [
            (0, 1, 0),
            (10, 100, 0),
            (20_000, 1 << 31, 0),
            (50_000, u64::from(u32::MAX), 0),
            (30_000, 7, 0),
            (30_000, 7, 20),
            (30_000, 1, 0),
            (9_000, 1 << 12, 11),
            (9_000, 1 << 12, 0),
            (9_000, 1 << 13, 0),
            (200_000, 1 << 22, 0),
            (200_000, 1 << 20, 3),
        ] {
            let v: Vec<u32> = (0..n)
                .map(|_| u32::try_from(rng.u64(0..max) << shift).unwrap())
                .collect();
            let mut want: Vec<u64> = v.iter().map(|&x| u64::from(x)).collect();
            want.sort_unstable();
            for two_threads in [false, true] {
                assert_eq!(
                    radix_sorted_narrow(v.clone(), two_threads),
                    want,
                    "{n} values below {max} << {shift}, two threads: {two_threads}"
                );
            }
        }
        // Shaped like call latencies: log-normal around 10 ms, 1 % near a
        // second (a few large buckets sorted in two passes, many small).
        for n in [5_000, 300_000] {
            let v: Vec<u32> = (0..n)
                .map(|_| {
                    let ms = if rng.u8(0..100) == 0 {
                        800.0 + 400.0 * rng.f64()
                    } else {
                        10.0 * (0.25 * (rng.f64() * 6.0 - 3.0)).exp()
                    };
                    (ms * 1e6) as u32
                })
                .collect();
            let mut want: Vec<u64> = v.iter().map(|&x| u64::from(x)).collect();
            want.sort_unstable();
            for two_threads in [false, true] {
                assert_eq!(
                    radix_sorted_narrow(v.clone(), two_threads),
                    want,
                    "{n} latencies, two threads: {two_threads}"
                );
            }
        }
    }
}
