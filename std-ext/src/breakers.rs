//! Circuit breakers per policy key, shared between threads, with a bound on
//! the number of keys.
//!
//! Why a bound: a breaker is kept per key, and keys are meant to name
//! operations (`payments.Charge`), never requests. A key built from a user
//! id or a URL path would otherwise grow this store by one breaker per
//! request, forever. [`Breakers`] keeps at most `max_keys` breakers; a new
//! key beyond that evicts the least recently used breaker that is closed
//! (its state is the least worth keeping), or, when every breaker is open or
//! half-open, the least recently used one anyway. Evictions are counted
//! ([`Breakers::evictions`]), and the first one is reported once through an
//! optional hook ([`Breakers::on_bound`]) and a flag
//! ([`Breakers::bound_reached`]).
//!
//! Each breaker is a [`CircuitBreaker`] (see [`recourse_core::breaker`] for
//! the states and rules); the store holds them in one `Mutex`ed map whose
//! lookup of an existing key does not allocate and is one search (foldhash),
//! each breaker behind its own lock. [`Breakers::admit`] takes the map's
//! lock for the search, then the breaker's for its decision. An executor
//! finds a key's breaker once, when it resolves the key, and keeps it in
//! its per-thread key cache: its calls take only the breaker's own lock,
//! never the map's, and the policy is given to the breaker then, not on
//! every call.
//!
//! ## The closed circuit's fast path
//!
//! A closed circuit, the usual state, takes no shared lock and writes no
//! line that other threads write (issue 16: two threads calling one hot
//! key then cost what one does). Each breaker publishes, after every use
//! under its lock, whether it is closed and whether it is *quiet* (closed
//! with no failure counted since the last success) in one atomic word,
//! with its episode's generation. Then:
//!
//! - admitting a call of a closed circuit reads that word and gives the
//!   permit the breaker would give
//!   ([`Permit::closed`](recourse_core::breaker::Permit::closed)), without
//!   the lock; the time it was asked at is kept in the calling thread's
//!   shard;
//! - a success of a quiet circuit changes nothing but the window's count
//!   of calls: it is counted in the calling thread's shard, by episode and
//!   window bucket. A shard belongs to one thread at a time (a slot number
//!   no other living thread has), which writes it with plain stores: no
//!   lock, no read-modify-write;
//! - every other use (a failure, an open or half-open circuit, a new
//!   bucket in a shard, reading the state) takes the breaker's lock and
//!   first drains every shard into it
//!   ([`CircuitBreaker::absorb_successes`]): the successes counted there
//!   are then recorded, in the order they would have been had each been
//!   the next use of the lock (a success counted by one thread while
//!   another recorded a failure is ordered after that failure), and
//!   permits of an episode that has ended count for nothing, as with
//!   [`CircuitBreaker::record`].
//!
//! A breaker keeps 16 shards of 64 bytes (1 KiB beside each key's
//! breaker); a thread beyond the sixteenth alive at once (which has no
//! slot) takes the lock on every call, as before.
//!
//! An executor's gate inlines the two common cases
//! (`EntryRef::admit_closed`, `EntryRef::count_in_bucket`; the gate keeps
//! the kept breaker with a closed permit, so the call's end does not look
//! it up again):
//! a closed circuit's admission is a load of the word, one thread-local
//! load and the shard's time; a quiet success whose shard already counts
//! in its episode and window bucket is a few loads and one store (the
//! bucket is kept as its first nanosecond, so the test is a subtraction
//! and a comparison, no division). Anything else — the first call of a
//! thread, a new bucket, a failure, a circuit that is not closed — goes
//! out of line to the paths above, which decide the same (issue 16: the
//! breaker's cost per successful call 227 → 100 instructions).
//!
//! ## Time
//!
//! Calls carry timers with different epochs (each call's timer may start at
//! zero), so the store does not take core [`Instant`]s: the caller passes a
//! `std::time::Instant`, which the store converts to nanoseconds since its
//! own creation. Under tokio's paused clock pass
//! `tokio::time::Instant::now().into_std()`. Instants before the store was
//! created count as its creation.

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant as StdInstant;

use recourse_core::breaker::{self, CircuitBreaker};
use recourse_core::policy::CircuitPolicy;
use recourse_core::time::nanos;
use recourse_core::{Instant, PolicyKey};

use crate::keyed::{Bound, Keyed, Shared};
use crate::sharded::{self, OWN_SLOTS};

pub use recourse_core::breaker::{CallResult, CIRCUIT_OPEN, HALF_OPEN_PROBE_LIMIT};

/// A breaker's state, with `std::time::Instant`s.
pub type CircuitState = breaker::CircuitState<StdInstant>;

/// A refusal, with `std::time::Instant`s: the operation must not be called.
pub type Refusal = breaker::Refusal<StdInstant>;

/// The bound on keys of [`Breakers::default`].
pub const DEFAULT_MAX_KEYS: usize = 1024;

/// Leave to run one call, from [`Breakers::admit`]; hand it back to
/// [`Breakers::record`] exactly once when the call ends.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[must_use = "hand the permit back to `record` when the call ends, or a probe slot stays taken"]
// The breaker's permit first (its kind first): an executor's gate keeps
// its own permit, a generation and a kept breaker, in the same sixteen
// bytes after the kind (`gate::GatePermit`).
#[repr(C)]
pub struct Permit {
    permit: breaker::Permit,
    /// The store entry that issued it (0: none); a permit of an evicted
    /// breaker is not recorded on its successor.
    entry: u64,
}

impl Permit {
    /// Whether this call is a half-open probe; a probe runs without hedges.
    pub const fn is_probe(&self) -> bool {
        self.permit.is_probe()
    }

    /// Whether the key's policy had the breaker disabled (nothing counted).
    pub const fn is_bypass(&self) -> bool {
        self.permit.is_bypass()
    }

    /// The breaker's permit and the store entry, each a word (passed in
    /// registers where the permit is not).
    pub(crate) const fn into_parts(self) -> (breaker::Permit, u64) {
        (self.permit, self.entry)
    }

    /// The permit of [`Permit::into_parts`].
    pub(crate) const fn from_parts(permit: breaker::Permit, entry: u64) -> Self {
        Self { permit, entry }
    }
}

/// One key's breaker, kept by whoever found it (an executor's per-thread
/// key cache): see [`Breakers::entry`].
#[derive(Clone)]
pub(crate) struct BreakerEntry {
    shared: Arc<Cell>,
}

/// A key's breaker in the store: the breaker behind its lock, the fast
/// path's state beside it (see the [module docs](self)).
type Cell = Shared<CircuitBreaker, Fast>;

/// What a breaker's fast path reads and writes without its lock.
#[derive(Default)]
pub(crate) struct Fast {
    /// `generation << 2 | quiet << 1 | closed`, published after every use
    /// under the lock; 0 (not closed) until the first.
    word: AtomicU64,
    /// The breaker's [`latest`](CircuitBreaker::latest) time, in
    /// nanoseconds, as of that use.
    latest: AtomicU64,
    /// Its [`window_bucket_width`](CircuitBreaker::window_bucket_width).
    width: AtomicU64,
    /// One per [`own_slot`](sharded::own_slot): written by that slot's
    /// thread alone, read under the breaker's lock.
    shards: [Line<Shard>; OWN_SLOTS],
}

/// A value on a 64-byte cache line of its own.
#[derive(Default)]
#[repr(align(64))]
struct Line<T>(T);

/// One thread's share of a breaker's fast path. Its owner (the thread
/// holding its [`own_slot`](sharded::own_slot)) writes everything but
/// `absorbed`, with plain stores; the breaker's lock drains it.
#[derive(Default)]
struct Shard {
    /// The latest time the owner asked at, in nanoseconds.
    now: AtomicU64,
    /// Successes the owner counted here, ever (it never goes back).
    successes: AtomicU64,
    /// Of those, the ones the lock has drained into the breaker (written
    /// under the lock only).
    absorbed: AtomicU64,
    /// The episode, bucket width and window bucket (as the bucket's first
    /// nanosecond, `bucket * width`: a success at `at` is in it when
    /// `at - start < width`, no division) of the successes not drained
    /// yet; the owner moves them only when none is left to drain.
    generation: AtomicU32,
    width: AtomicU64,
    start: AtomicU64,
}

const CLOSED: u64 = 1;
const QUIET: u64 = 2;

impl Shard {
    /// Takes `now` as seen here (only the owner writes it: no
    /// read-modify-write); returns the latest time seen here.
    #[inline(always)]
    fn observe(&self, now: Instant) -> u64 {
        let seen = self.now.load(Ordering::Relaxed);
        let now = now.as_nanos();
        if now > seen {
            self.now.store(now, Ordering::Relaxed);
            return now;
        }
        seen
    }

    /// Whether the successes counted here are of episode `generation`, in
    /// buckets of `width`, in the bucket of time `at`.
    #[inline(always)]
    fn holds(&self, generation: u32, width: u64, at: u64) -> bool {
        self.generation.load(Ordering::Relaxed) == generation
            && self.width.load(Ordering::Relaxed) == width
            && at.wrapping_sub(self.start.load(Ordering::Relaxed)) < width
    }
}

/// The published word of a quiet circuit in episode `generation`.
const fn quiet_word(generation: u32) -> u64 {
    (generation as u64) << 2 | QUIET | CLOSED
}

impl Fast {
    /// The generation, when the published word has `flag`.
    #[inline(always)]
    fn generation(&self, flag: u64) -> Option<u32> {
        let word = self.word.load(Ordering::Acquire);
        // The generation is the word's upper bits (a u32 shifted by 2).
        (word & flag != 0).then_some((word >> 2) as u32)
    }

    /// Publishes `b` (under its lock) for the fast path; writes only what
    /// changed, so that a hot key's line stays shared.
    fn publish(&self, b: &CircuitBreaker) {
        let word = match b.closed_generation() {
            Some(g) => {
                let quiet = if b.quiet_generation().is_some() {
                    QUIET
                } else {
                    0
                };
                u64::from(g) << 2 | CLOSED | quiet
            }
            None => 0,
        };
        let store = |cell: &AtomicU64, value: u64, order| {
            if cell.load(Ordering::Relaxed) != value {
                cell.store(value, order);
            }
        };
        store(&self.width, b.window_bucket_width(), Ordering::Relaxed);
        store(&self.latest, b.latest().as_nanos(), Ordering::Relaxed);
        store(&self.word, word, Ordering::Release);
    }

    /// This thread's shard, with `now` taken as seen there, and the
    /// latest time seen there (`now` included); `None`: the thread has no
    /// slot of its own.
    #[inline]
    fn own_shard(&self, now: Instant) -> Option<(&Shard, u64)> {
        // `own_slot` is below OWN_SLOTS: the remainder only spares the
        // bounds check.
        let Line(shard) = self.shards.get(sharded::own_slot()? % OWN_SLOTS)?;
        Some((shard, shard.observe(now)))
    }

    /// [`Fast::own_shard`] of a thread that has taken its slot already
    /// (no first-use path: for the fast paths inlined into their callers).
    #[inline(always)]
    fn held_shard(&self, now: Instant) -> Option<(&Shard, u64)> {
        let Line(shard) = self.shards.get(sharded::held_slot()? % OWN_SLOTS)?;
        Some((shard, shard.observe(now)))
    }

    /// [`Fast::count_success`] when the thread's shard holds the permit's
    /// episode and the success's bucket already (a success of a hot key:
    /// every other than the first of a bucket), inlined into the caller:
    /// a few loads, one store, no call; `false`: nothing counted, ask
    /// [`Fast::count_success`] (what this did is what that does first).
    #[inline(always)]
    fn count_in_bucket(&self, permit: breaker::Permit, now: Instant) -> bool {
        let generation = permit.generation();
        if !permit.is_closed() || self.word.load(Ordering::Acquire) != quiet_word(generation) {
            return false;
        }
        let Some((shard, seen)) = self.held_shard(now) else {
            return false;
        };
        let at = seen.max(self.latest.load(Ordering::Relaxed));
        if !shard.holds(generation, self.width.load(Ordering::Relaxed), at) {
            return false;
        }
        let counted = shard.successes.load(Ordering::Relaxed);
        shard.successes.store(counted + 1, Ordering::Release);
        true
    }

    /// Counts a success of `permit` at `now` in this thread's shard when
    /// the breaker is quiet in the permit's episode; `false`: record it
    /// under the lock.
    #[inline(never)]
    fn count_success(&self, permit: breaker::Permit, now: Instant) -> bool {
        let generation = permit.generation();
        // Quiet in the permit's episode: one comparison of the word.
        if !permit.is_closed() || self.word.load(Ordering::Acquire) != quiet_word(generation) {
            return false;
        }
        let Some((shard, seen)) = self.own_shard(now) else {
            return false;
        };
        // The breaker's own time never goes back: a success counts at the
        // latest time seen (by its last use under the lock, and here).
        let at = seen.max(self.latest.load(Ordering::Relaxed));
        let width = self.width.load(Ordering::Relaxed);
        let counted = shard.successes.load(Ordering::Relaxed);
        if !shard.holds(generation, width, at)
            && !Self::move_shard(shard, counted, generation, width, at)
        {
            return false;
        }
        // Published with what it counts under (a drain that sees it sees
        // them).
        shard.successes.store(counted + 1, Ordering::Release);
        true
    }

    /// Moves `shard` to another episode or bucket (the one of a success
    /// at `at`), only once the lock has drained the successes counted
    /// under the last (then it reads none of these while they move; see
    /// `drain`); `false`: it has not.
    #[cold]
    #[inline(never)]
    fn move_shard(shard: &Shard, counted: u64, generation: u32, width: u64, at: u64) -> bool {
        // 0: not published yet (then the word is not quiet either).
        if width == 0 || shard.absorbed.load(Ordering::Acquire) != counted {
            return false;
        }
        shard.generation.store(generation, Ordering::Relaxed);
        shard.width.store(width, Ordering::Relaxed);
        shard.start.store(at - at % width, Ordering::Relaxed);
        true
    }

    /// Records what the shards counted in `b` (under its lock).
    fn drain(&self, b: &mut CircuitBreaker) {
        for Line(shard) in &self.shards {
            b.observe(Instant::from_nanos(shard.now.load(Ordering::Relaxed)));
            let counted = shard.successes.load(Ordering::Acquire);
            let absorbed = shard.absorbed.load(Ordering::Relaxed);
            if counted == absorbed {
                continue;
            }
            // The owner moves these only once `absorbed` has caught up
            // with what it counted, which it has not (it is stored below).
            let generation = shard.generation.load(Ordering::Relaxed);
            let width = shard.width.load(Ordering::Relaxed);
            let start = shard.start.load(Ordering::Relaxed);
            if width == b.window_bucket_width() {
                // Never 0 (`move_shard` refuses it); `max` spares the check.
                let bucket = start / width.max(1);
                let n = u32::try_from(counted - absorbed).unwrap_or(u32::MAX);
                b.absorb_successes(generation, bucket, n);
            }
            shard.absorbed.store(counted, Ordering::Release);
        }
    }
}

/// `f` on `cell`'s breaker under its lock, after draining the fast path's
/// shards into it; publishes it afterwards.
fn with_breaker<R>(cell: &Cell, f: impl FnOnce(&mut CircuitBreaker) -> R) -> R {
    let mut b = cell.lock();
    cell.side.drain(&mut b);
    let r = f(&mut b);
    cell.side.publish(&b);
    r
}

/// Gives `cell`'s breaker `policy` when it has another one.
fn set_policy(cell: &Cell, policy: &CircuitPolicy) {
    if cell.lock().policy() != policy {
        with_breaker(cell, |b| b.set_policy(policy));
    }
}

impl BreakerEntry {
    /// Whether the store has evicted it: look the key up again.
    #[inline]
    pub(crate) fn is_evicted(&self) -> bool {
        self.shared.is_evicted()
    }

    /// [`Breakers::admit_entry`]'s answer when the circuit is closed and
    /// this thread has a shard of its own (the usual case, inlined into
    /// the caller); `None`: ask [`Breakers::admit_entry`].
    #[cfg(test)]
    #[inline(always)]
    pub(crate) fn admit_closed(&self, breakers: &Breakers, now: Instant) -> Option<Permit> {
        let entry = self.get();
        let generation = entry.admit_closed(breakers, now)?;
        Some(entry.permit(generation))
    }

    /// Counts a success of `permit` at `now` as [`Breakers::record_entry`]
    /// would, when the circuit is quiet and this thread's shard counts in
    /// the success's bucket already (the usual case, inlined into the
    /// caller); `false`: nothing counted, ask [`Breakers::record_entry`].
    ///
    /// `permit` must come from this entry ([`BreakerEntry::admit_closed`]
    /// or [`Breakers::admit_entry`] on it): its store entry is not checked
    /// here, as [`Breakers::record_entry`] checks it.
    #[cfg(test)]
    #[inline(always)]
    pub(crate) fn count_in_bucket(&self, permit: Permit, now: Instant) -> bool {
        debug_assert_eq!(permit.entry, self.shared.id(), "a permit of another entry");
        self.shared.side.count_in_bucket(permit.permit, now)
    }

    /// The kept breaker, borrowed for one call ([`EntryRef`]).
    #[inline(always)]
    pub(crate) fn get(&self) -> EntryRef<'_> {
        EntryRef(&self.shared)
    }
}

/// A kept breaker, borrowed for the length of one call: an executor's gate
/// keeps it beside a closed circuit's permit, so that the call's end
/// counts its success without looking the breaker up in the call's kept
/// answer again (issue 16: the breaker's margin).
#[derive(Copy, Clone)]
pub(crate) struct EntryRef<'a>(&'a Cell);

impl EntryRef<'_> {
    /// The generation of the closed permit [`BreakerEntry::admit_closed`]
    /// gives (its permit is [`EntryRef::permit`] of it); `None`: ask
    /// [`Breakers::admit_entry`].
    #[inline(always)]
    pub(crate) fn admit_closed(self, breakers: &Breakers, now: Instant) -> Option<u32> {
        let cell = self.0;
        let generation = cell.side.generation(CLOSED)?;
        cell.side.held_shard(now)?;
        cell.touch(&breakers.bound);
        Some(generation)
    }

    /// [`BreakerEntry::count_in_bucket`] of the closed permit of episode
    /// `generation` this entry gave.
    #[inline(always)]
    pub(crate) fn count_in_bucket(self, generation: u32, now: Instant) -> bool {
        self.0
            .side
            .count_in_bucket(breaker::Permit::closed(generation), now)
    }

    /// The closed permit of episode `generation` this entry gives, with
    /// its store entry.
    #[inline]
    pub(crate) fn permit(self, generation: u32) -> Permit {
        Permit {
            permit: breaker::Permit::closed(generation),
            entry: self.0.id(),
        }
    }
}

impl fmt::Debug for BreakerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerEntry")
            .field("id", &self.shared.id())
            .finish_non_exhaustive()
    }
}

/// Circuit breakers by policy key (see the [module docs](self)).
///
/// ```
/// use std::time::{Duration, Instant};
/// use recourse::breakers::{Breakers, CallResult, CircuitState};
/// use recourse::{CircuitPolicy, PolicyKey};
///
/// let breakers = Breakers::new(1024);
/// let policy = CircuitPolicy { enabled: true, threshold: 2, ..CircuitPolicy::DEFAULT };
/// let key = PolicyKey::parse("payments.Charge");
/// let t = Instant::now();
/// for _ in 0..2 {
///     let permit = breakers.admit(key, &policy, t).unwrap();
///     breakers.record(key, permit, CallResult::Failure, t);
/// }
/// let refusal = breakers.admit(key, &policy, t).unwrap_err();
/// assert_eq!(refusal.reason, "circuit_open");
/// assert_eq!(refusal.state, CircuitState::Open { until: t + policy.cooldown });
/// ```
pub struct Breakers {
    epoch: StdInstant,
    inner: Mutex<Keyed<CircuitBreaker, Fast>>,
    bound: Bound,
}

impl Breakers {
    /// A store of at most `max_keys` breakers (at least 1).
    pub fn new(max_keys: usize) -> Self {
        Self {
            epoch: StdInstant::now(),
            inner: Mutex::default(),
            bound: Bound::new(max_keys, "circuit breaker store"),
        }
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

    /// Keys with a breaker now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key has a breaker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Breakers evicted to keep the bound.
    pub fn evictions(&self) -> u64 {
        self.bound.evictions()
    }

    /// Whether the bound has ever forced an eviction (a sign that keys are
    /// not low-cardinality, or that the bound is too small).
    pub fn bound_reached(&self) -> bool {
        self.bound.reached()
    }

    /// Asks to run one call for `key` at `now`, under `policy` (normalized;
    /// a changed policy replaces the breaker's without losing its state).
    ///
    /// A disabled policy admits with a bypass permit and touches nothing.
    /// Otherwise the key's breaker is found (or created, which may evict
    /// another key's) and asked: see [`CircuitBreaker::admit`].
    pub fn admit(
        &self,
        key: PolicyKey<'_>,
        policy: &CircuitPolicy,
        now: StdInstant,
    ) -> Result<Permit, Refusal> {
        self.admit_at(key, policy, self.to_core(now))
            .map_err(|r| r.map_instant(|t| self.to_std(t)))
    }

    /// [`Breakers::admit`] with `now` given on a clock of the caller's
    /// choosing (as nanoseconds since its epoch), such as an executor's
    /// shared clock; every call on one store must use the same clock.
    pub fn admit_at(
        &self,
        key: PolicyKey<'_>,
        policy: &CircuitPolicy,
        now: Instant,
    ) -> Result<Permit, breaker::Refusal> {
        self.admit_tracked(key, policy, now).0
    }

    /// [`Breakers::admit_at`], also saying when this admission moved the
    /// breaker from open to half-open: then `Some(until)`, the cooldown's end
    /// of the open state it left (the executor's gate tells its observer).
    pub(crate) fn admit_tracked(
        &self,
        key: PolicyKey<'_>,
        policy: &CircuitPolicy,
        now: Instant,
    ) -> (Result<Permit, breaker::Refusal>, Option<Instant>) {
        if !policy.enabled {
            let bypass = Permit {
                permit: breaker::Permit::BYPASS,
                entry: 0,
            };
            return (Ok(bypass), None);
        }
        let (entry, warning) = {
            let mut inner = self.lock();
            // The least worth keeping: a closed breaker.
            let (entry, warning, _) = inner.get_or_insert(
                key,
                &self.bound,
                || CircuitBreaker::new(policy.clone()),
                |b| b.state(now) == breaker::CircuitState::Closed,
            );
            (Arc::clone(entry), warning)
        };
        self.bound.warn(warning);
        set_policy(&entry, policy);
        Self::admit_shared(&entry, now)
    }

    /// `key`'s breaker under `policy` (enabled; normalized), found or made
    /// (which may evict another key's), for a caller that keeps it: its
    /// calls then go to [`Breakers::admit_entry`] and
    /// [`Breakers::record_entry`], with no search and no store lock, until
    /// the entry [`is_evicted`](BreakerEntry::is_evicted). The policy is
    /// given to the breaker here, once, not on every call.
    ///
    /// Reads no clock: whether a breaker is closed (the eviction
    /// preference) does not depend on the time.
    pub(crate) fn entry(&self, key: PolicyKey<'_>, policy: &CircuitPolicy) -> BreakerEntry {
        let (entry, warning) = {
            let mut inner = self.lock();
            let (entry, warning, _) = inner.get_or_insert(
                key,
                &self.bound,
                || CircuitBreaker::new(policy.clone()),
                |b| b.state(Instant::ZERO) == breaker::CircuitState::Closed,
            );
            (Arc::clone(entry), warning)
        };
        self.bound.warn(warning);
        set_policy(&entry, policy);
        BreakerEntry { shared: entry }
    }

    /// [`Breakers::admit_tracked`] on a kept entry.
    pub(crate) fn admit_entry(
        &self,
        entry: &BreakerEntry,
        now: Instant,
    ) -> (Result<Permit, breaker::Refusal>, Option<Instant>) {
        entry.shared.touch(&self.bound);
        Self::admit_shared(&entry.shared, now)
    }

    /// [`Breakers::record_at`] on the entry that admitted `permit`.
    pub(crate) fn record_entry(
        &self,
        entry: &BreakerEntry,
        permit: Permit,
        result: CallResult,
        now: Instant,
    ) -> Option<breaker::CircuitState> {
        if permit.is_bypass() || entry.shared.id() != permit.entry {
            return None;
        }
        Self::record_shared(&entry.shared, permit.permit, result, now)
    }

    fn record_shared(
        cell: &Cell,
        permit: breaker::Permit,
        result: CallResult,
        now: Instant,
    ) -> Option<breaker::CircuitState> {
        if result == CallResult::Success && cell.side.count_success(permit, now) {
            // Quiet: a success changes no state.
            return None;
        }
        Self::record_locked(cell, permit, result, now)
    }

    /// [`Breakers::record_shared`] under the breaker's lock (kept out of
    /// the fast path's code).
    #[inline(never)]
    fn record_locked(
        cell: &Cell,
        permit: breaker::Permit,
        result: CallResult,
        now: Instant,
    ) -> Option<breaker::CircuitState> {
        with_breaker(cell, |b| b.record(permit, result, now))
    }

    fn admit_shared(
        shared: &Cell,
        now: Instant,
    ) -> (Result<Permit, breaker::Refusal>, Option<Instant>) {
        let fast = &shared.side;
        if let Some(generation) = fast.generation(CLOSED) {
            // Closed: the permit the breaker would give, whatever the time
            // (kept in this thread's shard, as the breaker keeps it).
            if fast.own_shard(now).is_some() {
                let permit = Permit {
                    permit: breaker::Permit::closed(generation),
                    entry: shared.id(),
                };
                return (Ok(permit), None);
            }
        }
        Self::admit_locked(shared, now)
    }

    /// [`Breakers::admit_shared`] under the breaker's lock (kept out of the
    /// fast path's code).
    #[inline(never)]
    fn admit_locked(
        shared: &Cell,
        now: Instant,
    ) -> (Result<Permit, breaker::Refusal>, Option<Instant>) {
        let (was_open, answer) = with_breaker(shared, |b| (b.open_until(), b.admit(now)));
        let left_open = if answer.is_ok_and(|p| p.is_probe()) {
            was_open
        } else {
            None
        };
        let answer = answer.map(|permit| Permit {
            permit,
            entry: shared.id(),
        });
        (answer, left_open)
    }

    /// The call for `key` admitted with `permit` ended with `result` at
    /// `now`; returns the breaker's new state when the result changed it.
    ///
    /// Call it exactly once per permit. A bypass permit, or one whose
    /// breaker was evicted meanwhile, records nothing.
    pub fn record(
        &self,
        key: PolicyKey<'_>,
        permit: Permit,
        result: CallResult,
        now: StdInstant,
    ) -> Option<CircuitState> {
        self.record_at(key, permit, result, self.to_core(now))
            .map(|s| s.map_instant(|t| self.to_std(t)))
    }

    /// [`Breakers::record`] on the clock of [`Breakers::admit_at`].
    pub fn record_at(
        &self,
        key: PolicyKey<'_>,
        permit: Permit,
        result: CallResult,
        now: Instant,
    ) -> Option<breaker::CircuitState> {
        if permit.is_bypass() {
            return None;
        }
        let shared = {
            let mut inner = self.lock();
            let shared = inner.get_used(key, &self.bound)?;
            if shared.id() != permit.entry {
                return None;
            }
            Arc::clone(shared)
        };
        Self::record_shared(&shared, permit.permit, result, now)
    }

    /// `key`'s state at `now` (closed when it has no breaker); does not
    /// count as a use.
    pub fn state(&self, key: PolicyKey<'_>, now: StdInstant) -> CircuitState {
        let now = self.to_core(now);
        let shared = self.lock().get(key).map(Arc::clone);
        let state = match shared {
            Some(shared) => with_breaker(&shared, |b| b.state(now)),
            None => breaker::CircuitState::Closed,
        };
        state.map_instant(|t| self.to_std(t))
    }

    /// The state is consistent after every method (nothing in them panics
    /// half-way), so a poisoned lock is still good.
    fn lock(&self) -> MutexGuard<'_, Keyed<CircuitBreaker, Fast>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn to_core(&self, t: StdInstant) -> Instant {
        Instant::from_nanos(nanos(t.saturating_duration_since(self.epoch)))
    }

    fn to_std(&self, t: Instant) -> StdInstant {
        // At most a century ahead, which every platform's Instant holds.
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let d = t.since_epoch().min(CENTURY);
        self.epoch.checked_add(d).unwrap_or(self.epoch)
    }
}

impl Default for Breakers {
    /// A store of at most [`DEFAULT_MAX_KEYS`] breakers.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl fmt::Debug for Breakers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breakers")
            .field("max_keys", &self.max_keys())
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

    fn policy() -> CircuitPolicy {
        CircuitPolicy {
            enabled: true,
            threshold: 3,
            cooldown: Duration::from_secs(1),
            ..CircuitPolicy::DEFAULT
        }
    }

    fn call(b: &Breakers, key: &str, result: CallResult, now: StdInstant) -> Option<CircuitState> {
        let key = PolicyKey::parse(key);
        let permit = b.admit(key, &policy(), now).expect("admitted");
        b.record(key, permit, result, now)
    }

    fn open(b: &Breakers, key: &str, now: StdInstant) {
        for _ in 0..3 {
            call(b, key, CallResult::Failure, now);
        }
        assert!(matches!(
            b.state(PolicyKey::parse(key), now),
            CircuitState::Open { .. }
        ));
    }

    #[test]
    fn the_bound_holds_under_ten_thousand_distinct_keys() {
        let warnings = Arc::new(AtomicUsize::new(0));
        let seen = warnings.clone();
        let b = Breakers::new(1024).on_bound(move |message| {
            assert!(message.contains("1024 keys"), "{message}");
            seen.fetch_add(1, Ordering::Relaxed);
        });
        let t = StdInstant::now();
        for i in 0..10_000 {
            let key = format!("svc.user-{i}");
            call(&b, &key, CallResult::Failure, t);
            assert!(b.len() <= 1024);
        }
        assert_eq!(b.len(), 1024);
        assert_eq!(b.evictions(), 10_000 - 1024);
        assert!(b.bound_reached());
        assert_eq!(warnings.load(Ordering::Relaxed), 1, "warned once");
        // The most recent keys are the ones kept.
        assert!(b.lock().contains(PolicyKey::parse("svc.user-9999")));
        assert!(!b.lock().contains(PolicyKey::parse("svc.user-0")));
    }

    #[test]
    fn eviction_prefers_closed_breakers() {
        let b = Breakers::new(3);
        let t = StdInstant::now();
        open(&b, "a", t); // least recently used, but open
        call(&b, "b", CallResult::Success, t);
        call(&b, "c", CallResult::Success, t);
        call(&b, "d", CallResult::Success, t); // evicts b
        let has = |k: &str| b.lock().contains(PolicyKey::parse(k));
        assert!(has("a") && !has("b") && has("c") && has("d"));
        assert_eq!(b.evictions(), 1);

        // With every breaker open, the least recently used goes anyway.
        open(&b, "c", t);
        open(&b, "d", t);
        call(&b, "e", CallResult::Success, t);
        assert!(!has("a") && has("c") && has("d") && has("e"));
        assert_eq!(b.evictions(), 2);
    }

    #[test]
    fn a_hot_key_keeps_its_state() {
        let b = Breakers::new(16);
        let t = StdInstant::now();
        let hot = PolicyKey::parse("payments.Charge");
        // Two failures of three: closed, with a count worth keeping.
        call(&b, "payments.Charge", CallResult::Failure, t);
        call(&b, "payments.Charge", CallResult::Failure, t);
        for i in 0..10_000 {
            call(&b, &format!("cold.k{i}"), CallResult::Success, t);
            if i % 8 == 0 {
                // A neutral call: a use that changes nothing.
                call(&b, "payments.Charge", CallResult::Neutral, t);
            }
        }
        assert_eq!(b.state(hot, t), CircuitState::Closed);
        // The third failure opens it: the first two were not forgotten.
        assert_eq!(
            call(&b, "payments.Charge", CallResult::Failure, t),
            Some(CircuitState::Open {
                until: t + Duration::from_secs(1)
            })
        );
        // And an open key survives a stream of new ones.
        for i in 0..1_000 {
            call(&b, &format!("colder.k{i}"), CallResult::Success, t);
        }
        assert!(matches!(b.state(hot, t), CircuitState::Open { .. }));
        let refusal = b.admit(hot, &policy(), t).unwrap_err();
        assert_eq!(refusal.reason, CIRCUIT_OPEN);
    }

    #[test]
    fn a_permit_of_an_evicted_breaker_is_not_recorded_on_its_successor() {
        let b = Breakers::new(1);
        let t = StdInstant::now();
        let a = PolicyKey::parse("a");
        let stale = b.admit(a, &policy(), t).unwrap();
        call(&b, "b", CallResult::Success, t); // evicts a
        call(&b, "a", CallResult::Failure, t); // evicts b, a is new
        assert_eq!(b.record(a, stale, CallResult::Failure, t), None);
        assert_eq!(b.evictions(), 2);
        // Only one failure counted: two more to open.
        assert_eq!(call(&b, "a", CallResult::Failure, t), None);
        assert!(call(&b, "a", CallResult::Failure, t).is_some());
    }

    #[test]
    fn a_disabled_policy_bypasses_the_store() {
        let b = Breakers::default();
        assert_eq!(b.max_keys(), DEFAULT_MAX_KEYS);
        let key = PolicyKey::parse("svc.op");
        let t = StdInstant::now();
        for _ in 0..10 {
            let p = b.admit(key, &CircuitPolicy::DEFAULT, t).unwrap();
            assert!(p.is_bypass());
            assert_eq!(b.record(key, p, CallResult::Failure, t), None);
        }
        assert!(b.is_empty());
        assert_eq!(b.state(key, t), CircuitState::Closed);
    }

    #[test]
    fn probes_and_cooldown_in_std_time() {
        let b = Breakers::new(8);
        let t = StdInstant::now();
        let key = PolicyKey::parse("svc.op");
        open(&b, "svc.op", t);
        let r = b
            .admit(key, &policy(), t + Duration::from_millis(999))
            .unwrap_err();
        assert_eq!(
            r.state,
            CircuitState::Open {
                until: t + Duration::from_secs(1)
            }
        );
        let probe = b.admit(key, &policy(), t + Duration::from_secs(1)).unwrap();
        assert!(probe.is_probe());
        let r = b
            .admit(key, &policy(), t + Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(r.reason, HALF_OPEN_PROBE_LIMIT);
        assert_eq!(r.state, CircuitState::HalfOpen);
        // A neutral probe frees its slot.
        b.record(key, probe, CallResult::Neutral, t + Duration::from_secs(2));
        let probe = b.admit(key, &policy(), t + Duration::from_secs(2)).unwrap();
        assert!(probe.is_probe());
        assert_eq!(
            b.record(key, probe, CallResult::Success, t + Duration::from_secs(2)),
            Some(CircuitState::Closed)
        );
    }

    #[test]
    fn concurrent_use_from_two_threads() {
        let b = Breakers::new(64);
        let t = StdInstant::now();
        std::thread::scope(|s| {
            for thread in 0..2 {
                let b = &b;
                s.spawn(move || {
                    for i in 0..5_000u64 {
                        let now = t + Duration::from_micros(i);
                        // A shared key that always fails, and a churn of
                        // private keys.
                        let shared = PolicyKey::parse("shared.op");
                        if let Ok(p) = b.admit(shared, &policy(), now) {
                            b.record(shared, p, CallResult::Failure, now);
                        }
                        let own = format!("t{thread}.k{}", i % 100);
                        let own = PolicyKey::parse(&own);
                        if let Ok(p) = b.admit(own, &policy(), now) {
                            b.record(own, p, CallResult::Success, now);
                        }
                        assert!(b.len() <= 64);
                    }
                });
            }
        });
        assert!(b.len() <= 64);
        assert!(b.evictions() > 0);
        assert!(matches!(
            b.state(PolicyKey::parse("shared.op"), t),
            CircuitState::Open { .. }
        ));
    }

    /// How a test asks the store: by key, as [`Breakers::admit_at`] and
    /// [`Breakers::record_at`] do, or through a kept entry, as an
    /// executor's gate does (the inlined fast paths first, the entry's
    /// methods when they decline).
    #[derive(Copy, Clone, Debug)]
    enum Way {
        ByKey,
        Kept,
    }

    /// One key of a store, asked one [`Way`].
    struct Ask<'a> {
        way: Way,
        store: &'a Breakers,
        key: PolicyKey<'a>,
        policy: &'a CircuitPolicy,
        entry: BreakerEntry,
        /// Successes the inlined fast path counted.
        inlined: u32,
    }

    impl<'a> Ask<'a> {
        fn new(
            way: Way,
            store: &'a Breakers,
            key: PolicyKey<'a>,
            policy: &'a CircuitPolicy,
        ) -> Self {
            let entry = store.entry(key, policy);
            Self {
                way,
                store,
                key,
                policy,
                entry,
                inlined: 0,
            }
        }

        fn admit(&self, t: Instant) -> Result<Permit, breaker::Refusal> {
            match self.way {
                Way::ByKey => self.store.admit_at(self.key, self.policy, t),
                Way::Kept => match self.entry.admit_closed(self.store, t) {
                    Some(permit) => Ok(permit),
                    None => self.store.admit_entry(&self.entry, t).0,
                },
            }
        }

        fn record(
            &mut self,
            permit: Permit,
            result: CallResult,
            t: Instant,
        ) -> Option<breaker::CircuitState> {
            match self.way {
                Way::ByKey => self.store.record_at(self.key, permit, result, t),
                Way::Kept => {
                    if result == CallResult::Success && self.entry.count_in_bucket(permit, t) {
                        self.inlined += 1;
                        return None;
                    }
                    self.store.record_entry(&self.entry, permit, result, t)
                }
            }
        }
    }

    /// The store's breaker (fast path and all, asked by key or through a
    /// kept entry) against a plain [`CircuitBreaker`] under the same
    /// random admissions, results and times (some going back), on one
    /// thread: the same answers, and, drained, the same breaker, window
    /// buckets included.
    #[test]
    fn the_fast_path_answers_as_the_breaker_does() {
        for way in [Way::ByKey, Way::Kept] {
            fast_path_against_the_breaker(way);
        }
    }

    fn fast_path_against_the_breaker(way: Way) {
        use recourse_core::breaker::Permit as CorePermit;
        let results = [
            CallResult::Success,
            CallResult::Success,
            CallResult::Success,
            CallResult::Failure,
            CallResult::Neutral,
        ];
        // Successes the inlined fast path counted (kept entries only).
        let mut inlined = 0;
        for seed in 0..300u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let policy = CircuitPolicy {
                enabled: true,
                threshold: rng.u32(1..5),
                failure_ratio_permille: if rng.bool() { 0 } else { rng.u32(100..900) },
                min_calls: rng.u32(1..6),
                window: Duration::from_micros(rng.u64(1..300)),
                cooldown: Duration::from_micros(rng.u64(1..100)),
                half_open_max_probes: rng.u32(1..3),
                half_open_successes: rng.u32(1..3),
            };
            let store = Breakers::new(4);
            let mut plain = CircuitBreaker::new(policy.clone());
            let key = PolicyKey::parse("svc.op");
            let mut ask = Ask::new(way, &store, key, &policy);
            let mut now = 1_000_000u64;
            let mut held: Vec<(Permit, CorePermit)> = Vec::new();
            for step in 0..400 {
                now += rng.u64(0..8_000);
                if rng.u8(..) < 16 {
                    now -= rng.u64(0..20_000);
                }
                let t = Instant::from_nanos(now);
                if held.is_empty() || rng.u8(..) < 110 {
                    let a = ask.admit(t);
                    let b = plain.admit(t);
                    assert_eq!(
                        a.map(|p| p.permit),
                        b,
                        "{way:?} seed {seed} step {step}: admit"
                    );
                    if let (Ok(a), Ok(b)) = (a, b) {
                        held.push((a, b));
                    }
                } else {
                    let (a, b) = held.swap_remove(rng.usize(..held.len()));
                    let r = results[rng.usize(..results.len())];
                    assert_eq!(
                        ask.record(a, r, t),
                        plain.record(b, r, t),
                        "{way:?} seed {seed} step {step}: record {r:?}"
                    );
                }
                if step % 50 == 49 {
                    let cell = store.lock().get(key).map(Arc::clone).expect("kept");
                    let drained = with_breaker(&cell, |b| b.clone());
                    assert_eq!(drained, plain, "{way:?} seed {seed} step {step}");
                }
            }
            inlined += ask.inlined;
        }
        if matches!(way, Way::Kept) {
            // About 5,000 of the 300 seeds' successes.
            assert!(
                inlined > 1_000,
                "the inlined fast path taken {inlined} times"
            );
        }
    }

    /// Successes counted on the fast path by several threads at once are
    /// all recorded, and a failure among them opens the circuit as the
    /// ratio rule says. More threads than there are slots of their own:
    /// the ones without a slot take the lock, and count the same.
    #[test]
    fn fast_successes_of_many_threads_are_all_counted() {
        for way in [Way::ByKey, Way::Kept] {
            successes_of_many_threads(way);
        }
    }

    fn successes_of_many_threads(way: Way) {
        let policy = CircuitPolicy {
            enabled: true,
            // Only the ratio rule opens it.
            threshold: u32::MAX,
            failure_ratio_permille: 500,
            min_calls: 1,
            window: Duration::from_secs(3_600),
            ..CircuitPolicy::DEFAULT
        };
        let store = Breakers::new(4);
        let key = PolicyKey::parse("svc.hot");
        let t = Instant::from_secs(10);
        std::thread::scope(|s| {
            for _ in 0..(OWN_SLOTS + 4) {
                s.spawn(|| {
                    let mut ask = Ask::new(way, &store, key, &policy);
                    for _ in 0..500 {
                        let p = ask.admit(t).expect("closed");
                        let to = ask.record(p, CallResult::Success, t);
                        assert_eq!(to, None, "{way:?}");
                    }
                });
            }
        });
        let cell = store.lock().get(key).map(Arc::clone).expect("kept");
        let counts = with_breaker(&cell, |b| b.window_counts(t));
        let successes = (OWN_SLOTS as u32 + 4) * 500;
        assert_eq!((counts.calls, counts.failures), (successes, 0), "{way:?}");
        // As many failures less one keep the ratio under one half; the
        // last one reaches it.
        for _ in 0..successes - 1 {
            let p = store.admit_at(key, &policy, t).expect("closed");
            assert_eq!(store.record_at(key, p, CallResult::Failure, t), None);
        }
        let p = store.admit_at(key, &policy, t).expect("closed");
        assert!(matches!(
            store.record_at(key, p, CallResult::Failure, t),
            Some(breaker::CircuitState::Open { .. })
        ));
    }

    #[test]
    fn lookup_does_not_confuse_keys_that_display_alike() {
        let b = Breakers::new(8);
        let t = StdInstant::now();
        open(&b, "x", t);
        // {"", "x"} is open; {"x", ""} is another key.
        let other = PolicyKey::new("x", "");
        assert_eq!(b.state(other, t), CircuitState::Closed);
        assert!(b.admit(other, &policy(), t).is_ok());
    }
}
