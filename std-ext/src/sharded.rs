//! Counters and per-key state that threads update without sharing a cache
//! line (issue 16): each thread writes its own shard, a reader sums them.
//!
//! Why: one `AtomicU64` that every call increments is one cache line that
//! every core writes. Two threads making calls at once then pass that line
//! back and forth on every call, and a call costs about twice what it costs
//! on one thread (measured for issue 16: the executor's count of
//! fallback-policy calls took `do_value` on two threads from 1.76× to 1.97×
//! one thread's cost per call). A thread here
//! is given a shard number on its first use, round-robin, so up to
//! [`SHARDS`] threads each write their own line; more threads share shards
//! (still correct: every shard is atomic).

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards per counter: threads beyond this many share shards.
pub(crate) const SHARDS: usize = 8;

/// The next shard number handed to a thread.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// This thread's shard number; `usize::MAX` until its first use.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard number, below [`SHARDS`].
#[inline]
pub(crate) fn shard() -> usize {
    SHARD
        .try_with(|s| {
            let n = s.get();
            if n < SHARDS {
                return n;
            }
            let n = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(n);
            n
        })
        // A thread being torn down: any shard is correct.
        .unwrap_or(0)
}

/// Slots a thread may own alone: [`own_slot`].
pub(crate) const OWN_SLOTS: usize = 16;

/// Slot numbers given back by threads that ended.
static FREE_SLOTS: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// The next slot number never handed out.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// Gives a thread's slot back when the thread ends.
struct SlotGuard;

/// Not asked yet.
const UNASKED: usize = usize::MAX;
/// Asked, and every slot was taken.
const NONE_LEFT: usize = usize::MAX - 1;

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let n = OWN.try_with(Cell::get).unwrap_or(UNASKED);
        if n < OWN_SLOTS {
            // No use of the slot comes after this: the thread is ending
            // (and may not take it again: `OWN` says none is left).
            let _ = OWN.try_with(|own| own.set(NONE_LEFT));
            FREE_SLOTS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(n);
        }
    }
}

std::thread_local! {
    /// This thread's slot number (no destructor: read with one load).
    static OWN: Cell<usize> = const { Cell::new(UNASKED) };
    /// Registered when the thread takes a slot; gives it back.
    static GUARD: SlotGuard = const { SlotGuard };
}

/// A slot number below [`OWN_SLOTS`] that no other living thread has:
/// state kept per slot is written by this thread alone (plain loads and
/// stores, no read-modify-write). The number goes back to a free list
/// when the thread ends, and the next thread to ask takes it over, with
/// whatever its previous owner left in the slots (everything that thread
/// wrote happened before: the list is behind a lock). `None` once
/// [`OWN_SLOTS`] threads hold one (the caller takes a shared path), or
/// while the thread is being torn down.
#[inline]
pub(crate) fn own_slot() -> Option<usize> {
    let n = OWN.try_with(Cell::get).ok()?;
    if n < OWN_SLOTS {
        Some(n)
    } else {
        take_slot(n)
    }
}

/// [`own_slot`] of a thread that has taken one already: one load and one
/// comparison, no first-use path (for a fast path inlined into its
/// caller); `None`: ask [`own_slot`].
#[inline(always)]
pub(crate) fn held_slot() -> Option<usize> {
    let n = OWN.try_with(Cell::get).ok()?;
    (n < OWN_SLOTS).then_some(n)
}

/// A thread's first [`own_slot`] (`n`: [`UNASKED`]), or none left (`n`:
/// [`NONE_LEFT`]); out of line, so that the usual case is one load and one
/// comparison.
#[cold]
#[inline(never)]
fn take_slot(n: usize) -> Option<usize> {
    if n != UNASKED {
        return None;
    }
    // The guard first: a thread that cannot register it (being torn down)
    // takes no slot, so every slot taken is given back.
    GUARD.try_with(|_| ()).ok()?;
    let free = FREE_SLOTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop();
    let n = free.or_else(|| {
        NEXT_SLOT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < OWN_SLOTS).then_some(n + 1)
            })
            .ok()
            .map(spread)
    });
    OWN.try_with(|own| own.set(n.unwrap_or(NONE_LEFT))).ok()?;
    n
}

/// The slot handed out `n`-th (below [`OWN_SLOTS`]): the even numbers
/// first, then the odd ones. State kept per slot is often a 64-byte line
/// per slot side by side, and x86's adjacent-line prefetcher fetches lines
/// in 128-byte pairs: the first threads to take slots (the two workers of a
/// two-core runtime) then write lines of different pairs, and one
/// thread's miss on its own line does not pull in the line another thread
/// is writing.
const fn spread(n: usize) -> usize {
    const HALF: usize = OWN_SLOTS / 2;
    (n % HALF) * 2 + (n / HALF) % 2
}

/// A value on a cache line of its own (128 bytes: two lines, which the
/// adjacent-line prefetcher of x86 fetches together).
#[derive(Default, Debug)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// A count that many threads increment and few read.
#[derive(Default, Debug)]
pub(crate) struct Counter {
    shards: [Padded<AtomicU64>; SHARDS],
}

impl Counter {
    /// Adds one, on this thread's shard.
    #[inline]
    pub(crate) fn increment(&self) {
        // `shard()` is below SHARDS: the index never fails.
        if let Some(s) = self.shards.get(shard()) {
            s.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sum of every shard. Increments made at the same time by other
    /// threads may or may not be in it; every increment that happened
    /// before this call (in the sense of a join or a lock) is.
    pub(crate) fn sum(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |n, s| n.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_sums_every_threads_increments() {
        let c = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..(SHARDS + 3) {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        c.increment();
                    }
                });
            }
        });
        assert_eq!(c.sum(), (SHARDS as u64 + 3) * 1_000);
    }

    #[test]
    fn own_slots_are_never_held_by_two_living_threads() {
        let mine = own_slot();
        let barrier = std::sync::Barrier::new(OWN_SLOTS + 4);
        let seen: Vec<Option<usize>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..OWN_SLOTS + 4)
                .map(|_| {
                    s.spawn(|| {
                        let n = own_slot();
                        assert_eq!(own_slot(), n, "kept");
                        // Every thread holds its slot until all have asked.
                        barrier.wait();
                        n
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().ok().flatten())
                .collect()
        });
        let mut held: Vec<usize> = seen.iter().flatten().copied().collect();
        held.extend(mine);
        let count = held.len();
        held.sort_unstable();
        held.dedup();
        assert_eq!(held.len(), count, "no slot held twice: {seen:?}");
        assert!(held.iter().all(|&n| n < OWN_SLOTS));
        // Other tests' threads may hold a few; most of these got one.
        assert!(count >= 4, "{seen:?}");
        // They ended: their slots are free again.
        let later = std::thread::spawn(own_slot).join().ok().flatten();
        assert!(later.is_some());
    }

    #[test]
    fn slots_are_handed_out_even_first_each_once() {
        let order: Vec<usize> = (0..OWN_SLOTS).map(spread).collect();
        assert_eq!(order[..4], [0, 2, 4, 6]);
        assert_eq!(order[OWN_SLOTS / 2], 1);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..OWN_SLOTS).collect::<Vec<_>>(), "{order:?}");
    }

    #[test]
    fn threads_get_shards_in_range_and_keep_them() {
        let mine = shard();
        assert!(mine < SHARDS);
        assert_eq!(shard(), mine);
        let others: Vec<usize> = (0..SHARDS)
            .map(|_| std::thread::spawn(shard).join().unwrap_or(usize::MAX))
            .collect();
        assert!(others.iter().all(|&n| n < SHARDS), "{others:?}");
    }
}
