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
