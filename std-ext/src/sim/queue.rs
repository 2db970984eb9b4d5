//! The simulator's event queue: events in order of their instant, and in
//! the order they were queued at one instant.
//!
//! An entry's order is one `u128` key — the instant's nanoseconds above the
//! sequence number — and keys are unique (every push takes the next
//! sequence number). The simulator never queues an event before the last
//! one popped (virtual time does not go back), so the queue can be a
//! *timing wheel*: [`SLOTS`] lists, one per span of [`SPAN`] nanoseconds
//! (about a millisecond), from the span of the last event popped on. An
//! event due within the wheel's reach goes onto its span's list (a shift
//! and a push, in front of the one or two later keys already there when
//! there are: each list is kept in descending order); a pop finds the first
//! non-empty span from a bit mask (a rotation and a trailing-zeros count)
//! and takes the last entry of its list. (Unordered lists searched for
//! their smallest key at each pop cost as much; ordered, with entries of
//! 24 bytes instead of 32 and the push inlined, the queue costs about 20
//! instructions a simulated call less.) Events due past the wheel's reach
//! (about 67 ms: a straggler of the Tail-at-Scale scenario, a long
//! timeout) wait in a binary heap beside it, and a pop takes whichever of
//! the two firsts comes first. The queue keeps its first event's key and
//! place as events come and go (a push below it takes its place; a pop
//! takes it out and looks for the next): the simulator asks before each
//! arrival whether an event comes first, and that is one comparison.
//!
//! Why not only a binary heap (this was one, keyed the same way, and
//! before it a `BinaryHeap<Reverse<(Instant, u64, Ev)>>`): with the 20 to
//! 30 events of the Tail-at-Scale scenario in flight, its pops and pushes
//! sifted through five levels, about 240 instructions per simulated call.
//! Nor a radix heap (tried): its entries moved down three buckets on
//! average between push and pop, which cost as much as the sifts.

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

/// A queued event and its key, kept as two words (aligned to 8 bytes, not
/// to a `u128`'s 16: with a one-word event, 24 bytes to write and read
/// instead of 32).
#[derive(Copy, Clone, Debug)]
struct Entry<E> {
    /// The key's high half (the instant's nanoseconds).
    hi: u64,
    /// The key's low half (the sequence number).
    lo: u64,
    ev: E,
}

impl<E> Entry<E> {
    #[inline(always)]
    fn new(key: Key, ev: E) -> Self {
        // The halves of the key: they fit.
        Self {
            hi: (key >> 64) as u64,
            lo: key as u64,
            ev,
        }
    }

    #[inline(always)]
    fn key(&self) -> Key {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }
}

/// The nanoseconds of one span of the wheel: 2^20, about a millisecond.
const SPAN: u64 = 1 << 20;
/// Spans on the wheel (its reach is `SLOTS × SPAN`, about 67 ms); one bit
/// each in a `u64` mask.
const SLOTS: usize = 64;

/// The span of `key`'s instant.
fn span(key: Key) -> u64 {
    // The high half is the instant's nanoseconds.
    (key >> 64) as u64 / SPAN
}

/// A min-queue of events by [`Key`], for keys pushed in no particular
/// order but never below the last key popped (see the [module docs](self)).
#[derive(Debug)]
pub(super) struct Queue<E> {
    /// Events due in the span `s` (from `base` to `base + SLOTS - 1`) in
    /// slot `s % SLOTS`, in descending order of their keys (the first
    /// last: a pop takes it off the end, with no search of the list).
    wheel: [Vec<Entry<E>>; SLOTS],
    /// Bit `i` set: slot `i` holds events.
    occupied: u64,
    /// The span of the last event popped: no event is due before it.
    base: u64,
    /// Events due past the wheel's reach when they were queued.
    far: Heap<E>,
    /// The key of `far`'s first event, `Key::MAX` when it has none.
    far_first: Key,
    /// The key of the first event queued, `Key::MAX` when there is none:
    /// kept as events come and go, so that a pop that finds the next
    /// arrival first (about one a simulated call) is one comparison.
    first: Key,
    /// Where the first event is (when there is one).
    first_at: At,
    seq: u64,
}

/// Where a queue's first event is.
#[derive(Copy, Clone, Debug)]
enum At {
    /// Last in the list of this slot of the wheel.
    Wheel(u32),
    /// First in the heap of events past the wheel's reach.
    Far,
}

impl<E: Copy> Queue<E> {
    pub(super) fn new() -> Self {
        Self {
            wheel: core::array::from_fn(|_| Vec::new()),
            occupied: 0,
            base: 0,
            far: Heap::new(),
            far_first: Key::MAX,
            first: Key::MAX,
            first_at: At::Far,
            seq: 0,
        }
    }

    /// The next sequence number, for an event kept outside the queue that
    /// must still be ordered with the queued ones.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The last sequence number taken: every key taken from now on has a
    /// higher one.
    #[inline]
    pub(super) fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Queues `ev` at `at`, after the events already queued for `at`, and
    /// returns its key.
    #[inline(always)]
    pub(super) fn push(&mut self, at: Instant, ev: E) -> Key {
        let key = key(at, self.next_seq());
        self.push_key(key, ev);
        key
    }

    /// Queues `ev` with a key taken before ([`Queue::next_seq`]), above the
    /// key of the last event popped.
    // Inlined into the simulator's loop (out of line, about 10
    // instructions a simulated call more).
    #[inline(always)]
    pub(super) fn push_key(&mut self, key: Key, ev: E) {
        let s = span(key);
        debug_assert!(s >= self.base, "no event before the last popped");
        if s.wrapping_sub(self.base) < SLOTS as u64 {
            let slot = s as usize % SLOTS;
            let list = &mut self.wheel[slot];
            // Kept in descending order, the first event last: usually the
            // list was empty or ends in a larger key (the entry goes last,
            // written once), else the entry goes in front of one or two.
            match list.last() {
                Some(last) if last.key() < key => insert_descending(list, Entry::new(key, ev)),
                _ => list.push(Entry::new(key, ev)),
            }
            self.occupied |= 1 << slot;
            if key < self.first {
                self.first_at = At::Wheel(slot as u32);
                self.first = key;
            }
        } else {
            self.push_far(Entry::new(key, ev));
            if key < self.first {
                self.first_at = At::Far;
                self.first = key;
            }
        }
    }

    #[inline(never)]
    fn push_far(&mut self, entry: Entry<E>) {
        self.far.push(entry);
        self.far_first = self.far.peek().unwrap_or(Key::MAX);
    }

    /// Takes the first event out.
    #[cfg(test)]
    pub(super) fn pop(&mut self) -> Option<(Key, E)> {
        self.pop_before(Key::MAX)
    }

    /// Takes the first event out if its key is below `limit` (the key of
    /// an event kept outside the queue: the next arrival); then finds the
    /// next first event.
    #[inline]
    pub(super) fn pop_before(&mut self, limit: Key) -> Option<(Key, E)> {
        if self.first >= limit {
            return None;
        }
        let first = match self.first_at {
            At::Wheel(slot) => {
                // `% SLOTS`: no bounds check (it is below).
                let list = &mut self.wheel[slot as usize % SLOTS];
                // The list's first event is its last entry.
                let first = list.pop()?;
                if list.is_empty() {
                    self.occupied &= !(1 << slot);
                }
                first
            }
            At::Far => self.pop_far()?,
        };
        self.base = first.hi / SPAN;
        self.find_first();
        Some((first.key(), first.ev))
    }

    /// Finds the first event: the last entry of the first non-empty slot
    /// of the wheel from `base`'s on (the wheel's slots are the spans
    /// `base..base + SLOTS` in turn; each list is in descending order), or
    /// the heap's first when that comes before.
    #[inline]
    fn find_first(&mut self) {
        let (mut at, mut first) = (At::Far, self.far_first);
        if self.occupied != 0 {
            let from = (self.base % SLOTS as u64) as u32;
            let ahead = self.occupied.rotate_right(from).trailing_zeros();
            let slot = (from + ahead) as usize % SLOTS;
            let min_key = self.wheel[slot].last().map_or(Key::MAX, |e| e.key());
            if min_key < first {
                (at, first) = (At::Wheel(slot as u32), min_key);
            }
        }
        self.first = first;
        self.first_at = at;
    }

    /// Takes the heap's first event out (the queue's first: the heap has
    /// one).
    #[inline(never)]
    fn pop_far(&mut self) -> Option<Entry<E>> {
        let first = self.far.pop();
        self.far_first = self.far.peek().unwrap_or(Key::MAX);
        first
    }
}

/// Puts `entry` into `list` (in descending order of keys, its last key
/// below `entry`'s) in front of the keys below it.
#[inline]
fn insert_descending<E: Copy>(list: &mut Vec<Entry<E>>, entry: Entry<E>) {
    let key = entry.key();
    // The entries with larger keys stay in front: the rest (at least the
    // last) move up by one.
    let at = list.iter().position(|e| e.key() < key).unwrap_or(0);
    list.insert(at, entry);
}

/// A binary min-heap of entries by key, popped bottom-up (the hole goes
/// to a leaf, then the last entry sifts up from there).
#[derive(Debug)]
struct Heap<E> {
    heap: Vec<Entry<E>>,
}

impl<E: Copy> Heap<E> {
    fn new() -> Self {
        Self { heap: Vec::new() }
    }

    fn push(&mut self, entry: Entry<E>) {
        let mut i = self.heap.len();
        self.heap.push(entry);
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].key() <= entry.key() {
                break;
            }
            self.heap[i] = self.heap[parent];
            i = parent;
        }
        self.heap[i] = entry;
    }

    fn peek(&self) -> Option<Key> {
        self.heap.first().map(|e| e.key())
    }

    fn pop(&mut self) -> Option<Entry<E>> {
        let last = self.heap.pop()?;
        let Some(first) = self.heap.first().copied() else {
            return Some(last);
        };
        let len = self.heap.len();
        let mut i = 0;
        loop {
            let left = 2 * i + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right].key() < self.heap[left].key() {
                right
            } else {
                left
            };
            self.heap[i] = self.heap[child];
            i = child;
        }
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].key() <= last.key() {
                break;
            }
            self.heap[i] = self.heap[parent];
            i = parent;
        }
        self.heap[i] = last;
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a sorted list: pushes at or after the last popped instant
    /// (as the simulator's are), on the wheel, past its reach and at its
    /// edge, with many ties and keys taken earlier (as a parked timer's
    /// is), popped in rounds of random length.
    #[test]
    fn pops_by_instant_then_by_queueing_order() {
        let mut q = Queue::new();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut want: Vec<(Key, (u32, usize))> = Vec::new();
        let mut now = 0u64;
        let mut held: Vec<(Key, (u32, usize))> = Vec::new();
        for round in 0..2_000u32 {
            for i in 0..rng.usize(0..40) {
                // Few distinct instants (many ties), instants within the
                // wheel's reach and just past it, and now and then far
                // ahead.
                let reach = SLOTS as u64 * SPAN;
                let ahead = match rng.u8(..) {
                    0 => rng.u64(0..1 << 40),
                    1..=40 => rng.u64(reach - 3 * SPAN..reach + 3 * SPAN),
                    41..=120 => rng.u64(0..reach),
                    _ => rng.u64(0..20),
                };
                let at = Instant::from_nanos(now + ahead);
                if rng.u8(..) < 16 {
                    // A key taken now, queued later (before it is due).
                    held.push((key(at, q.next_seq()), (round, i)));
                    continue;
                }
                let k = q.push(at, (round, i));
                want.push((k, (round, i)));
            }
            for _ in 0..rng.usize(0..=want.len() + held.len()) {
                // A held key goes in before anything after it is popped.
                loop {
                    let next = want.iter().map(|w| w.0).min();
                    let Some(i) = held.iter().position(|h| next.is_none_or(|n| h.0 < n)) else {
                        break;
                    };
                    let (k, ev) = held.swap_remove(i);
                    q.push_key(k, ev);
                    want.push((k, ev));
                }
                want.sort_by_key(|w| w.0);
                let Some(w) = (!want.is_empty()).then(|| want.remove(0)) else {
                    break;
                };
                let (k, ev) = q.pop().unwrap();
                assert_eq!((k, ev), w);
                now = instant(k).as_nanos();
                // Keys taken before this pop and below it are queued
                // before it in the simulator; none here is below.
                assert!(held.iter().all(|h| h.0 > k));
            }
        }
        for (k, ev) in held.drain(..) {
            q.push_key(k, ev);
            want.push((k, ev));
        }
        want.sort_by_key(|w| w.0);
        for w in want {
            assert_eq!(q.pop(), Some(w));
        }
        assert_eq!(q.pop(), None);
    }
}
