//! The current document of a provider, readable without a lock, a
//! reference-count write or an allocation.
//!
//! Why not a plain `ArcSwap::load` per lookup: it is lock-free, but costs
//! about a hundred instructions (a per-thread debt slot taken and given
//! back), which would make every file- or etcd-backed call pay for the
//! ability to change policies. Instead each thread keeps the snapshot it
//! last used, tagged with the generation it was loaded at; a lookup reads
//! the generation (one atomic load) and, when it has not moved, uses the
//! thread's snapshot as it is. Only the first lookup after a swap, per
//! thread, goes through the `ArcSwap`.
//!
//! The cost: each thread holds at most [`SLOTS`] snapshots (of the providers
//! it used most recently) until its next lookup after a swap, or until it
//! exits.

use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::static_provider::StaticProvider;

/// Snapshots a thread keeps (one per provider it uses, most recent).
pub(crate) const SLOTS: usize = 4;

/// Unique per `Snapshot`, so a thread's cache never mixes two providers.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct Slot {
    id: u64,
    generation: u64,
    snapshot: Arc<StaticProvider>,
}

std::thread_local! {
    static CACHE: RefCell<heapless::Vec<Slot, SLOTS>> = const { RefCell::new(heapless::Vec::new()) };
}

/// A provider's current document.
pub(crate) struct Snapshot {
    id: u64,
    generation: AtomicU64,
    current: ArcSwap<StaticProvider>,
}

impl Snapshot {
    pub(crate) fn new(first: StaticProvider) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            current: ArcSwap::from_pointee(first),
        }
    }

    /// Swaps `next` in; lookups that start after this returns see it.
    pub(crate) fn store(&self, next: StaticProvider) {
        self.current.store(Arc::new(next));
        // After the store: a reader that sees the new generation loads the
        // new snapshot (or a newer one).
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Bumped after every [`Snapshot::store`]: a reader that reads it before
    /// a lookup and sees it unchanged later got an answer at least as new.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Runs `f` on the current snapshot (`f` must not look up this
    /// provider again; it is a `StaticProvider` lookup).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&StaticProvider) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        let mut f = Some(f);
        let fast = CACHE.try_with(|cache| {
            let f = f.take().expect("taken once");
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return f(&self.current.load());
            };
            let i = match cache.iter().position(|s| s.id == self.id) {
                Some(i) => {
                    if cache[i].generation != generation {
                        cache[i].snapshot = self.current.load_full();
                        cache[i].generation = generation;
                    }
                    i
                }
                None => {
                    if cache.is_full() {
                        cache.remove(0);
                    }
                    // Cannot fail: a slot was just freed if there was none.
                    let _ = cache.push(Slot {
                        id: self.id,
                        generation,
                        snapshot: self.current.load_full(),
                    });
                    cache.len() - 1
                }
            };
            f(&cache[i].snapshot)
        });
        match fast {
            Ok(r) => r,
            // The thread is exiting (its cache is gone): the closure did not
            // run, so `f` is still there.
            Err(_) => (f.take().expect("the closure did not run"))(&self.current.load()),
        }
    }
}
