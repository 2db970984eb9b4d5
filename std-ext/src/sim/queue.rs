//! The simulator's event queue: events in order of their instant, and in
//! the order they were queued at one instant.
//!
//! Why not `BinaryHeap<Reverse<(Instant, u64, Ev)>>`, which gives the same
//! order: its comparisons went through the tuple and the event enum, and
//! its pops and sift-ups were a fifth of the simulator's instructions. Here
//! an entry's order is one `u128` — the instant's nanoseconds above the
//! sequence number — compared in one instruction pair, in a binary heap
//! popped bottom-up (the hole goes to a leaf, then the last entry sifts up
//! from there: about half the comparisons of a top-down sift, since the
//! last entry usually belongs near the bottom).

use recourse_core::Instant;

/// A queued event's place in the order: its instant's nanoseconds, then the
/// sequence number it was queued with.
pub(super) type Key = u128;

/// The order key of an event at `at` queued `seq`-th.
pub(super) fn key(at: Instant, seq: u64) -> Key {
    (u128::from(at.as_nanos()) << 64) | u128::from(seq)
}

/// The instant of `key`.
pub(super) fn instant(key: Key) -> Instant {
    // The high half is the instant's nanoseconds: it fits.
    Instant::from_nanos((key >> 64) as u64)
}

#[derive(Copy, Clone, Debug)]
struct Entry<E> {
    key: Key,
    ev: E,
}

/// A min-queue of events by [`Key`] (keys are unique: every push takes the
/// next sequence number).
#[derive(Debug)]
pub(super) struct Queue<E> {
    heap: Vec<Entry<E>>,
    seq: u64,
}

impl<E: Copy> Queue<E> {
    pub(super) fn new() -> Self {
        Self {
            heap: Vec::with_capacity(64),
            seq: 0,
        }
    }

    /// The next sequence number, for an event kept outside the queue that
    /// must still be ordered with the queued ones.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Queues `ev` at `at`, after the events already queued for `at`, and
    /// returns its key.
    pub(super) fn push(&mut self, at: Instant, ev: E) -> Key {
        let key = key(at, self.next_seq());
        self.push_key(key, ev);
        key
    }

    /// Queues `ev` with a key taken before ([`Queue::next_seq`]), not
    /// below the key of the last event popped.
    pub(super) fn push_key(&mut self, key: Key, ev: E) {
        let entry = Entry { key, ev };
        let mut i = self.heap.len();
        self.heap.push(entry);
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].key <= entry.key {
                break;
            }
            self.heap[i] = self.heap[parent];
            i = parent;
        }
        self.heap[i] = entry;
    }

    /// The key of the first event.
    pub(super) fn peek(&self) -> Option<Key> {
        self.heap.first().map(|e| e.key)
    }

    /// Takes the first event out.
    pub(super) fn pop(&mut self) -> Option<(Key, E)> {
        let last = self.heap.pop()?;
        let Some(first) = self.heap.first().copied() else {
            return Some((last.key, last.ev));
        };
        // The hole at the root goes down to a leaf along the smaller
        // children, then `last` moves up from there to its place.
        let len = self.heap.len();
        let mut i = 0;
        loop {
            let left = 2 * i + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right].key < self.heap[left].key {
                right
            } else {
                left
            };
            self.heap[i] = self.heap[child];
            i = child;
        }
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].key <= last.key {
                break;
            }
            self.heap[i] = self.heap[parent];
            i = parent;
        }
        self.heap[i] = last;
        Some((first.key, first.ev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_instant_then_by_queueing_order() {
        let mut q = Queue::new();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut want = Vec::new();
        for round in 0..50u32 {
            for i in 0..rng.usize(0..40) {
                // Few distinct instants: many ties.
                let at = Instant::from_nanos(rng.u64(0..20));
                q.push(at, (round, i));
                want.push((at, q.seq, (round, i)));
            }
            want.sort_by_key(|w| (w.0, w.1));
            for _ in 0..rng.usize(0..=want.len()) {
                let (k, ev) = q.pop().unwrap();
                let w = want.remove(0);
                assert_eq!((instant(k), k as u64, ev), w);
            }
            assert_eq!(q.peek(), want.first().map(|w| key(w.0, w.1)));
        }
        while let Some((k, ev)) = q.pop() {
            let w = want.remove(0);
            assert_eq!((instant(k), k as u64, ev), w);
        }
        assert!(want.is_empty());
    }
}
