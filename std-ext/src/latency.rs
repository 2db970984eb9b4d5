//! Recent latencies per policy key, shared between threads, with a bound on
//! the number of keys: what a quantile hedge trigger reads.
//!
//! Each key gets a [`LatencySketch`] (see [`recourse_core::latency`] for the
//! buckets, the 1/16 error bound and the two-window decay), 2288 bytes on
//! the heap, created by the key's first sample (or, in an executor, when a
//! policy that reads or feeds it is first resolved for the key). Why a bound: keys are meant
//! to name operations (`payments.Charge`), never requests; a key built from
//! a user id or a URL path would otherwise grow this store by one sketch per
//! request, forever. [`LatencyTrackers`] keeps at most `max_keys` sketches
//! (about 2.3 MB at the default 1024); a new key beyond that evicts the
//! least recently recorded one. Evictions are counted
//! ([`LatencyTrackers::evictions`]), and the first one is reported once
//! through an optional hook ([`LatencyTrackers::on_bound`]) and a flag
//! ([`LatencyTrackers::bound_reached`]).
//!
//! The sketches live in one `Mutex`ed map (foldhash, not SipHash) whose
//! lookup of an existing key does not allocate, each sketch behind its own
//! lock. An executor finds a key's sketch once and keeps it with the key's
//! answer in its per-thread key cache, so its calls take neither the map's
//! lock nor a search: a record holds the sketch's lock for three additions,
//! a quantile for [`LatencySketch::quantile_tracked`] (from where the last
//! answer lay: usually a step or none, never more than the full scan of 28
//! group sums and 8 counts a window).
//!
//! ## Time
//!
//! Every instant passed to one store must come from one clock, such as an
//! executor's shared clock ([`TimerSource`](crate::timer::TimerSource)); a call's
//! own timer, which may start at zero, will not do. Windows are aligned to
//! multiples of the window length on that clock.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use recourse_core::{Instant, LatencySketch, PolicyKey, TrackedAnswer};

use crate::keyed::{Bound, Keyed, Shared};

/// The bound on keys of [`LatencyTrackers::default`].
pub const DEFAULT_MAX_KEYS: usize = 1024;

/// The window of [`LatencyTrackers::default`]: samples count for 10 to 20
/// seconds.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// One key's sketch, kept by whoever found it (an executor's per-thread key
/// cache): see [`LatencyTrackers::entry`].
#[derive(Clone)]
pub(crate) struct LatencyEntry {
    shared: Arc<Cell>,
}

/// A key's sketch in the store: behind its lock, with its last answer
/// beside it.
type Cell = Shared<Box<LatencySketch>, Published>;

/// The sketch's answer for the quantile it tracks
/// ([`TrackedAnswer`]'s bits), written under the sketch's lock by every
/// record and every quantile asked there, read without it: a hedge
/// decision between two records takes no lock and walks nothing.
///
/// The answer holds before the end of the window it was made in, kept
/// beside it: a reader loads the end first, then the answer; a writer
/// whose window moved clears the answer before it stores the new end, so
/// that a reader who sees the new end never takes the old window's answer
/// for it.
#[derive(Default)]
pub(crate) struct Published {
    end: AtomicU64,
    answer: AtomicU64,
}

impl Published {
    /// The published answer for `q_permille` at `now`, when it holds.
    #[inline(always)]
    fn get(&self, q_permille: u32, now: Instant) -> Option<Option<Duration>> {
        let end = self.end.load(Ordering::Acquire);
        let answer = TrackedAnswer::from_bits(self.answer.load(Ordering::Relaxed));
        answer.get(q_permille, now, end)
    }

    /// [`Published::get`] in whole nanoseconds.
    #[inline(always)]
    fn get_nanos(&self, q_permille: u32, now: Instant) -> Option<Option<u64>> {
        let end = self.end.load(Ordering::Acquire);
        let answer = TrackedAnswer::from_bits(self.answer.load(Ordering::Relaxed));
        answer.get_nanos(q_permille, now, end)
    }

    /// Publishes `answer`, made in the window of `sketch` (under its lock).
    #[inline(always)]
    fn set(&self, sketch: &LatencySketch, answer: TrackedAnswer) {
        let end = sketch.window_end();
        if self.end.load(Ordering::Relaxed) != end {
            // Once a window.
            self.answer.store(0, Ordering::Relaxed);
            self.end.store(end, Ordering::Release);
        }
        self.answer.store(answer.to_bits(), Ordering::Release);
    }
}

/// Records `latency` at `now` in `cell`'s sketch and publishes its answer
/// after the record (under its lock, so that answers are published in the
/// order of the records).
fn record_in(cell: &Cell, latency: Duration, now: Instant) {
    let mut sketch = cell.lock();
    let answer = sketch.record_published(latency, now);
    cell.side.set(&sketch, answer);
}

/// [`record_in`] of a latency of `nanos` nanoseconds: what an executor's
/// gate records on every completed attempt of a key it keeps (inlined
/// there, one frame fewer).
#[inline(always)]
fn record_nanos_in(cell: &Cell, nanos: u64, now: Instant) {
    let mut sketch = cell.lock();
    let answer = sketch.record_published_nanos(nanos, now);
    cell.side.set(&sketch, answer);
}

impl LatencyEntry {
    /// Whether the store has evicted it: look the key up again.
    #[inline]
    pub(crate) fn is_evicted(&self) -> bool {
        self.shared.is_evicted()
    }
}

impl fmt::Debug for LatencyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyEntry")
            .field("id", &self.shared.id())
            .finish_non_exhaustive()
    }
}

/// Latency sketches by policy key (see the [module docs](self)).
///
/// ```
/// use core::time::Duration;
/// use recourse::latency::LatencyTrackers;
/// use recourse::observer::Instant;
/// use recourse::PolicyKey;
///
/// let trackers = LatencyTrackers::new(1024, Duration::from_secs(10));
/// let key = PolicyKey::parse("user-service.GetUser");
/// let now = Instant::from_secs(60);
/// assert_eq!(trackers.quantile(key, 950, now), None, "no samples yet");
/// for ms in 1..=100 {
///     trackers.record(key, Duration::from_millis(ms), now);
/// }
/// let p95 = trackers.quantile(key, 950, now).unwrap();
/// assert!(p95.abs_diff(Duration::from_millis(95)) <= Duration::from_millis(95) / 16);
/// ```
pub struct LatencyTrackers {
    /// A fresh sketch, copied for each new key.
    template: LatencySketch,
    inner: Mutex<Keyed<Box<LatencySketch>, Published>>,
    bound: Bound,
}

impl LatencyTrackers {
    /// A store of at most `max_keys` sketches (at least 1) whose samples
    /// count for one to two `window`s.
    pub fn new(max_keys: usize, window: Duration) -> Self {
        Self {
            template: LatencySketch::new(window),
            inner: Mutex::default(),
            bound: Bound::new(max_keys, "latency tracker store"),
        }
    }

    /// Quantiles need at least `min_samples` samples of a key (default
    /// [`LatencySketch::DEFAULT_MIN_SAMPLES`]); applies to keys created
    /// from now on.
    pub fn with_min_samples(mut self, min_samples: u32) -> Self {
        self.template = self.template.with_min_samples(min_samples);
        self
    }

    /// Calls `hook` once, with a warning naming the bound and the first
    /// evicted key, the first time a new key evicts another (outside the
    /// store's lock).
    pub fn on_bound(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.bound.set_hook(hook);
        self
    }

    /// The bound on keys.
    pub fn max_keys(&self) -> usize {
        self.bound.max_keys()
    }

    /// The window length: a sample counts for one to two of them.
    pub fn window(&self) -> Duration {
        self.template.window()
    }

    /// Keys with a sketch now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key has a sketch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sketches evicted to keep the bound.
    pub fn evictions(&self) -> u64 {
        self.bound.evictions()
    }

    /// Whether the bound has ever forced an eviction (a sign that keys are
    /// not low-cardinality, or that the bound is too small).
    pub fn bound_reached(&self) -> bool {
        self.bound.reached()
    }

    /// Counts one attempt of `key` that took `latency`, finished at `now`.
    ///
    /// Only attempts that ran belong here (not budget denials or breaker
    /// refusals). A key without a sketch gets one, which may evict the
    /// least recently recorded key's.
    pub fn record(&self, key: PolicyKey<'_>, latency: Duration, now: Instant) {
        let entry = self.entry(key);
        record_in(&entry.shared, latency, now);
    }

    /// `key`'s sketch, found or made (which may evict another key's), for a
    /// caller that keeps it: its samples and quantiles then go to
    /// [`LatencyTrackers::record_entry`] and
    /// [`LatencyTrackers::quantile_entry`], with no search and no store
    /// lock, until the entry [`is_evicted`](LatencyEntry::is_evicted).
    pub(crate) fn entry(&self, key: PolicyKey<'_>) -> LatencyEntry {
        let (shared, warning) = {
            let mut inner = self.lock();
            let (shared, warning, _) = inner.get_or_insert(
                key,
                &self.bound,
                || Box::new(self.template.clone()),
                |_| true,
            );
            (Arc::clone(shared), warning)
        };
        self.bound.warn(warning);
        LatencyEntry { shared }
    }

    /// [`LatencyTrackers::record`] on a kept entry.
    pub(crate) fn record_entry(&self, entry: &LatencyEntry, latency: Duration, now: Instant) {
        entry.shared.touch(&self.bound);
        record_in(&entry.shared, latency, now);
    }

    /// [`LatencyTrackers::record_entry`] of a latency of `nanos`
    /// nanoseconds (an attempt's end minus its start).
    #[inline(always)]
    pub(crate) fn record_entry_nanos(&self, entry: &LatencyEntry, nanos: u64, now: Instant) {
        entry.shared.touch(&self.bound);
        record_nanos_in(&entry.shared, nanos, now);
    }

    /// [`LatencyTrackers::quantile_entry`] in whole nanoseconds: the
    /// published answer as it is kept, or the sketch's under its lock.
    #[inline]
    pub(crate) fn quantile_entry_nanos(
        &self,
        entry: &LatencyEntry,
        q_permille: u32,
        now: Instant,
    ) -> Option<u64> {
        match entry.shared.side.get_nanos(q_permille, now) {
            Some(answer) => answer,
            None => self
                .quantile_locked(entry, q_permille, now)
                .map(recourse_core::time::nanos),
        }
    }

    /// [`LatencyTrackers::quantile`] on a kept entry: the answer published
    /// beside the sketch when it holds (no lock), else the sketch's
    /// (under its lock, then published).
    #[inline]
    pub(crate) fn quantile_entry(
        &self,
        entry: &LatencyEntry,
        q_permille: u32,
        now: Instant,
    ) -> Option<Duration> {
        match entry.shared.side.get(q_permille, now) {
            Some(answer) => answer,
            None => self.quantile_locked(entry, q_permille, now),
        }
    }

    /// [`LatencyTrackers::quantile_entry`] under the sketch's lock.
    #[inline(never)]
    fn quantile_locked(
        &self,
        entry: &LatencyEntry,
        q_permille: u32,
        now: Instant,
    ) -> Option<Duration> {
        let mut sketch = entry.shared.lock();
        let (answer, published) = sketch.quantile_published(q_permille, now);
        entry.shared.side.set(&sketch, published);
        answer
    }

    /// The `q_permille`‰ quantile (950: p95) of `key`'s recent latencies at
    /// `now`, within 1/16 of the exact value; `None` when the key has fewer
    /// than `min_samples` samples in its last one to two windows (or none
    /// at all). Does not count as a use of the key.
    ///
    /// The answer changes with every [`LatencyTrackers::record`] for `key`,
    /// when `now` crosses a window boundary, and when the key is evicted.
    pub fn quantile(&self, key: PolicyKey<'_>, q_permille: u32, now: Instant) -> Option<Duration> {
        let shared = self.lock().get(key).map(Arc::clone)?;
        let quantile = shared.lock().quantile_tracked(q_permille, now);
        quantile
    }

    /// `key`'s samples counted at `now` (0 without a sketch).
    pub fn count(&self, key: PolicyKey<'_>, now: Instant) -> u64 {
        let shared = self.lock().get(key).map(Arc::clone);
        shared.map_or(0, |shared| shared.lock().count(now))
    }

    /// Every method leaves the map consistent (nothing in them panics
    /// half-way), so a poisoned lock is still good.
    fn lock(&self) -> MutexGuard<'_, Keyed<Box<LatencySketch>, Published>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for LatencyTrackers {
    /// At most [`DEFAULT_MAX_KEYS`] keys, windows of [`DEFAULT_WINDOW`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS, DEFAULT_WINDOW)
    }
}

impl fmt::Debug for LatencyTrackers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyTrackers")
            .field("max_keys", &self.max_keys())
            .field("window", &self.window())
            .field("len", &self.len())
            .field("evictions", &self.evictions())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const T: Instant = Instant::from_secs(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn within(got: Option<Duration>, want: Duration) -> bool {
        got.is_some_and(|d| d.abs_diff(want) <= want / 16)
    }

    #[test]
    fn the_bound_holds_under_ten_thousand_distinct_keys() {
        let warnings = Arc::new(AtomicUsize::new(0));
        let seen = warnings.clone();
        let l = LatencyTrackers::new(1024, Duration::from_secs(10)).on_bound(move |message| {
            assert!(message.contains("latency tracker store"), "{message}");
            assert!(message.contains("1024 keys"), "{message}");
            seen.fetch_add(1, Ordering::Relaxed);
        });
        for i in 0..10_000 {
            let key = format!("svc.user-{i}");
            l.record(PolicyKey::parse(&key), ms(5), T);
            assert!(l.len() <= 1024);
        }
        assert_eq!(l.len(), 1024);
        assert_eq!(l.evictions(), 10_000 - 1024);
        assert!(l.bound_reached());
        assert_eq!(warnings.load(Ordering::Relaxed), 1, "warned once");
        // The most recent keys are the ones kept.
        assert_eq!(l.count(PolicyKey::parse("svc.user-9999"), T), 1);
        assert_eq!(l.count(PolicyKey::parse("svc.user-0"), T), 0);
    }

    #[test]
    fn a_hot_key_keeps_its_samples() {
        let l = LatencyTrackers::new(16, Duration::from_secs(10));
        let hot = PolicyKey::parse("payments.Charge");
        let mut recorded = 0;
        for i in 0..10_000 {
            l.record(PolicyKey::parse(&format!("cold.k{i}")), ms(1), T);
            if i % 8 == 0 {
                // 99 % at 10 ms, 1 % at a second.
                let latency = if recorded % 100 == 99 {
                    ms(1_000)
                } else {
                    ms(10)
                };
                l.record(hot, latency, T);
                recorded += 1;
            }
        }
        assert_eq!(l.count(hot, T), recorded);
        assert!(within(l.quantile(hot, 500, T), ms(10)));
        assert!(within(l.quantile(hot, 1000, T), ms(1_000)));
        assert_eq!(l.len(), 16);
    }

    #[test]
    fn quantiles_need_min_samples_and_decay() {
        let l = LatencyTrackers::new(8, Duration::from_secs(1)).with_min_samples(3);
        let key = PolicyKey::parse("svc.op");
        assert_eq!(l.quantile(key, 500, T), None);
        l.record(key, ms(20), T);
        l.record(key, ms(20), T);
        assert_eq!(l.quantile(key, 500, T), None);
        l.record(key, ms(20), T);
        assert!(within(l.quantile(key, 500, T), ms(20)));
        // Two windows later the samples no longer count; the key stays.
        assert_eq!(l.quantile(key, 500, T + Duration::from_secs(2)), None);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn lookup_does_not_confuse_keys_that_display_alike() {
        let l = LatencyTrackers::new(8, Duration::from_secs(1)).with_min_samples(1);
        l.record(PolicyKey::parse("x"), ms(5), T);
        // {"", "x"} has a sample; {"x", ""} is another key.
        assert_eq!(l.quantile(PolicyKey::new("x", ""), 500, T), None);
        assert!(l.quantile(PolicyKey::new("", "x"), 500, T).is_some());
        assert!(!l.is_empty());
    }

    #[test]
    fn concurrent_use_from_two_threads() {
        let l = LatencyTrackers::new(64, Duration::from_secs(10));
        let shared = PolicyKey::parse("shared.op");
        std::thread::scope(|s| {
            for thread in 0..2u64 {
                let l = &l;
                s.spawn(move || {
                    for i in 0..5_000u64 {
                        let now = T + Duration::from_micros(i);
                        l.record(shared, ms(10 + thread), now);
                        let own = format!("t{thread}.k{}", i % 100);
                        l.record(PolicyKey::parse(&own), ms(1), now);
                        let _ = l.quantile(shared, 990, now);
                        assert!(l.len() <= 64);
                    }
                });
            }
        });
        assert!(l.len() <= 64);
        assert!(l.evictions() > 0);
        // Recorded every other operation, the shared key was never the
        // least recently used: all 10,000 samples are there.
        assert_eq!(l.count(shared, T), 10_000);
        assert!(within(l.quantile(shared, 500, T), ms(10)));
    }

    /// Between two records a kept entry's quantile is the published one
    /// (no lock): the same answer as the sketch's, at every `now` before
    /// the window's end, and none at or after it.
    #[test]
    fn a_kept_entry_publishes_its_answer_between_records() {
        let l = LatencyTrackers::new(8, Duration::from_secs(10)).with_min_samples(3);
        let key = PolicyKey::parse("svc.op");
        let entry = l.entry(key);
        let t = Instant::from_secs(100);
        let end = Instant::from_secs(110);
        for n in 1..=40u64 {
            l.record_entry(&entry, ms(n), t);
            let published = entry.shared.side.get(950, t);
            let want = entry.shared.lock().quantile(950, t);
            if n > 3 {
                // Tracked since the first ask with enough samples (the
                // third): published by each record since.
                assert_eq!(published, Some(want), "after {n} samples");
            }
            assert_eq!(l.quantile_entry(&entry, 950, t), want);
            assert_eq!(entry.shared.side.get(950, t), Some(want));
            assert_eq!(
                entry.shared.side.get(950, end - Duration::from_nanos(1)),
                Some(want)
            );
            assert_eq!(entry.shared.side.get(950, end), None, "past the window");
            assert_eq!(entry.shared.side.get(990, t), None, "another quantile");
        }
        assert!(within(l.quantile_entry(&entry, 950, t), ms(38)));
        // The next window: the sketch decides (only the current window's
        // samples count); a record there moves the windows, which forgets
        // the tracked quantile, and the next ask publishes again.
        let next = end + Duration::from_secs(1);
        assert_eq!(
            l.quantile_entry(&entry, 950, next),
            l.quantile(key, 950, next)
        );
        assert_eq!(entry.shared.side.get(950, next), None);
        l.record_entry(&entry, ms(1), next);
        assert_eq!(entry.shared.side.get(950, next), None, "a new window");
        let want = entry.shared.lock().quantile(950, next);
        assert!(within(want, ms(38)), "{want:?}");
        assert_eq!(l.quantile_entry(&entry, 950, next), want);
        assert_eq!(entry.shared.side.get(950, next), Some(want));
    }

    /// A kept entry fed in nanoseconds (what an executor's gate does) is
    /// the entry fed the same samples as durations: the same counts, the
    /// same published answers, the same quantiles at every step.
    #[test]
    fn a_kept_entry_fed_nanoseconds_is_fed_durations() {
        let by_duration = LatencyTrackers::new(8, Duration::from_millis(100)).with_min_samples(3);
        let by_nanos = LatencyTrackers::new(8, Duration::from_millis(100)).with_min_samples(3);
        let key = PolicyKey::parse("svc.op");
        let (d, n) = (by_duration.entry(key), by_nanos.entry(key));
        let mut rng = fastrand::Rng::with_seed(16);
        let mut now = T;
        for i in 0..2_000u32 {
            let nanos = if rng.u8(..20) == 0 {
                rng.u64(100_000_000..2_000_000_000)
            } else {
                rng.u64(1_000..30_000_000)
            };
            now = now + Duration::from_micros(rng.u64(..300));
            by_duration.record_entry(&d, Duration::from_nanos(nanos), now);
            by_nanos.record_entry_nanos(&n, nanos, now);
            for q in [950, 990] {
                let want = by_duration.quantile_entry(&d, q, now);
                assert_eq!(
                    by_nanos.quantile_entry_nanos(&n, q, now),
                    want.map(recourse_core::time::nanos),
                    "sample {i}, q {q}"
                );
                assert_eq!(by_nanos.quantile(key, q, now), want, "sample {i}, q {q}");
            }
            assert_eq!(by_nanos.count(key, now), by_duration.count(key, now));
        }
        // The windows rotated on the way (about 300 ms of samples, 100 ms
        // windows: the first ones stopped counting) and the last ones
        // still answer.
        assert!(by_nanos.count(key, now) < 2_000);
        assert!(by_nanos.quantile_entry_nanos(&n, 950, now).is_some());
    }

    #[test]
    fn defaults() {
        let l = LatencyTrackers::default();
        assert_eq!(
            (l.max_keys(), l.window()),
            (DEFAULT_MAX_KEYS, DEFAULT_WINDOW)
        );
        assert!(format!("{l:?}").starts_with("LatencyTrackers { max_keys: 1024"));
    }
}
