//! What the stores keyed by policy key share ([`Breakers`](crate::Breakers),
//! [`LatencyTrackers`](crate::latency::LatencyTrackers)): a map that owns its keys but
//! is searched with a borrowed [`PolicyKey`] (no allocation for a key it
//! has), least-recently-used eviction, and the bound with its eviction
//! counter and one-time warning.

use core::hash::{Hash, Hasher};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use core::hash::BuildHasher;

use hashbrown::hash_map::RawEntryMut;
use hashbrown::{Equivalent, HashMap};
use recourse_core::PolicyKey;

type Hook = Box<dyn Fn(&str) + Send + Sync>;

/// One key's value, shared between its store and the calls that found it
/// (an executor's per-thread key cache keeps it, so a call with a known
/// key reaches its breaker or sketch without searching the store or
/// taking the store's lock: only this value's own lock).
///
/// `F` is what a value keeps beside its lock, for uses that do not take it
/// (the breakers' lock-free fast path: [`crate::breakers`]); made with
/// `F::default()`.
pub(crate) struct Shared<V, F = ()> {
    value: Mutex<V>,
    /// Beside the lock: see the type's docs.
    pub(crate) side: F,
    /// Unique per value created, never 0: tells a key's value from the one
    /// that replaced it after an eviction.
    id: u64,
    /// The store's tick at the last use (least recently used goes first).
    last_used: AtomicU64,
    /// Set when the store evicted it: whoever holds it must look the key
    /// up again (and gets a new value), so a bound store stays the only
    /// home of its keys' state.
    evicted: AtomicBool,
}

impl<V, F: Default> Shared<V, F> {
    fn new(value: V, id: u64, tick: u64) -> Self {
        Self {
            value: Mutex::new(value),
            side: F::default(),
            id,
            last_used: AtomicU64::new(tick),
            evicted: AtomicBool::new(false),
        }
    }
}

impl<V, F> Shared<V, F> {
    /// The value. Every user leaves it consistent (nothing panics half-way
    /// through a change), so a poisoned lock is still good.
    pub(crate) fn lock(&self) -> MutexGuard<'_, V> {
        self.value.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether the store has evicted it.
    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Counts a use found without the store (a cached value) as more
    /// recent than every use through the store so far: its last use
    /// becomes the tick the store's next use will take, without taking it.
    /// The store's tick is never written here, and the value only when
    /// more than an eighth of the bound's worth of uses went through the
    /// store since its last use: calls on several threads with keys they
    /// keep (hot or not) mostly write no line they share. So eviction's
    /// order is least recently used to within that slack (exact for a
    /// bound under 8), which is all it needs: it looks for a cold key.
    #[inline]
    pub(crate) fn touch(&self, bound: &Bound) {
        let tick = bound.tick.load(Ordering::Relaxed);
        let last = self.last_used.load(Ordering::Relaxed);
        // `next - last > slack` with `next = tick + 1`, as `tick - last >=
        // slack` (signed: a use touched since the store's last use has
        // `last = tick + 1`, a difference of -1), so that `next` is made
        // only when stored (one instruction less on every call).
        let behind = tick.wrapping_sub(last) as i64;
        if behind >= bound.touch_slack() as i64 {
            self.last_used
                .store(tick.wrapping_add(1), Ordering::Relaxed);
        }
    }
}

/// Values of type `V` by policy key, each behind its own lock, in use
/// order. Not bounded by itself: [`Keyed::get_or_insert`] keeps it within a
/// [`Bound`].
///
/// Hashed with foldhash (hashbrown's default hasher), not SipHash; the keys
/// are the application's operation names, bounded in number. A use of a
/// key it has is one search; a caller that keeps the [`Shared`] value it
/// found needs no search at all.
pub(crate) struct Keyed<V, F = ()> {
    map: HashMap<OwnedKey, Arc<Shared<V, F>>>,
    /// The id of the last value created.
    last_id: u64,
}

impl<V, F> Default for Keyed<V, F> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            last_id: 0,
        }
    }
}

impl<V, F: Default> Keyed<V, F> {
    /// Keys with a value.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether `key` has a value.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: PolicyKey<'_>) -> bool {
        self.map.contains_key(&Borrowed(key))
    }

    /// `key`'s value; does not count as a use.
    pub(crate) fn get(&self, key: PolicyKey<'_>) -> Option<&Arc<Shared<V, F>>> {
        self.map.get(&Borrowed(key))
    }

    /// `key`'s value, counted as a use.
    pub(crate) fn get_used(
        &mut self,
        key: PolicyKey<'_>,
        bound: &Bound,
    ) -> Option<&Arc<Shared<V, F>>> {
        let tick = bound.next_tick();
        let shared = self.map.get(&Borrowed(key))?;
        shared.last_used.store(tick, Ordering::Relaxed);
        Some(shared)
    }

    /// `key`'s value, counted as a use; made by `make` when it has none,
    /// after evicting the least recently used value that `evictable`
    /// accepts (or the least recently used one when it accepts none) if
    /// `bound` is reached. One search when `key` has a value and the store
    /// is not full.
    ///
    /// Also returns the bound's one-time warning, for the caller to hand to
    /// [`Bound::warn`] outside its lock, and `key`'s hash.
    pub(crate) fn get_or_insert(
        &mut self,
        key: PolicyKey<'_>,
        bound: &Bound,
        make: impl FnOnce() -> V,
        evictable: impl Fn(&V) -> bool,
    ) -> (&Arc<Shared<V, F>>, Option<String>, u64) {
        let tick = bound.next_tick();
        // A full store searches twice: once to know whether to evict.
        let warning = if self.map.len() >= bound.max_keys && !self.map.contains_key(&Borrowed(key))
        {
            self.evict(evictable)
                .and_then(|victim| bound.evicted(&victim))
        } else {
            None
        };
        let borrowed = Borrowed(key);
        let hash = self.map.hasher().hash_one(&borrowed);
        let shared = match self
            .map
            .raw_entry_mut()
            .from_hash(hash, |k| borrowed.equivalent(k))
        {
            RawEntryMut::Occupied(entry) => entry.into_mut(),
            RawEntryMut::Vacant(entry) => {
                self.last_id += 1;
                let shared = Arc::new(Shared::new(make(), self.last_id, tick));
                entry
                    .insert_hashed_nocheck(hash, OwnedKey::from(key), shared)
                    .1
            }
        };
        shared.last_used.store(tick, Ordering::Relaxed);
        (shared, warning, hash)
    }

    /// Removes the least recently used value that `evictable` accepts, or
    /// the least recently used one when it accepts none, and marks it
    /// evicted; returns its key.
    fn evict(&mut self, evictable: impl Fn(&V) -> bool) -> Option<OwnedKey> {
        let lru = |only_evictable: bool| {
            self.map
                .iter()
                .filter(|(_, shared)| !only_evictable || evictable(&shared.lock()))
                .min_by_key(|(_, shared)| shared.last_used.load(Ordering::Relaxed))
                .map(|(key, _)| key)
        };
        let victim = lru(true).or_else(|| lru(false))?.clone();
        if let Some(shared) = self.map.remove(&victim) {
            shared.evicted.store(true, Ordering::Relaxed);
        }
        Some(victim)
    }
}

/// A store's bound on keys, what it has evicted, and the hook that hears
/// about the first eviction.
pub(crate) struct Bound {
    max_keys: usize,
    /// Ticks on every use through the store; a value's `last_used` is the
    /// tick of its last use.
    tick: AtomicU64,
    /// What the warning calls the store: "circuit breaker store".
    store: &'static str,
    evictions: AtomicU64,
    reached: AtomicBool,
    hook: Option<Hook>,
}

impl Bound {
    /// A bound of `max_keys` keys (at least 1) for the store called `store`.
    pub(crate) fn new(max_keys: usize, store: &'static str) -> Self {
        Self {
            max_keys: max_keys.max(1),
            tick: AtomicU64::new(0),
            store,
            evictions: AtomicU64::new(0),
            reached: AtomicBool::new(false),
            hook: None,
        }
    }

    pub(crate) fn set_hook(&mut self, hook: impl Fn(&str) + Send + Sync + 'static) {
        self.hook = Some(Box::new(hook));
    }

    pub(crate) fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Store uses a kept value's use may lag behind (see
    /// [`Shared::touch`]).
    fn touch_slack(&self) -> u64 {
        (self.max_keys / 8) as u64
    }

    /// The next tick (a use through the store).
    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    pub(crate) fn reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    /// Counts the eviction of `key`; the first one returns the warning.
    fn evicted(&self, key: &OwnedKey) -> Option<String> {
        self.evictions.fetch_add(1, Ordering::Relaxed);
        (!self.reached.swap(true, Ordering::Relaxed)).then(|| {
            format!(
                "recourse: the {} reached its bound of {} keys and evicted `{}`; \
                 policy keys must name operations, not requests",
                self.store,
                self.max_keys,
                PolicyKey::new(&key.namespace, &key.name)
            )
        })
    }

    /// Hands `warning` to the hook, if both are there (call it outside the
    /// store's lock).
    pub(crate) fn warn(&self, warning: Option<String>) {
        if let (Some(message), Some(hook)) = (warning, &self.hook) {
            hook(&message);
        }
    }
}

/// A policy key the store owns.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OwnedKey {
    namespace: Box<str>,
    name: Box<str>,
}

impl From<PolicyKey<'_>> for OwnedKey {
    fn from(key: PolicyKey<'_>) -> Self {
        Self {
            namespace: key.namespace.into(),
            name: key.name.into(),
        }
    }
}

/// A borrowed key, to search the map without building an [`OwnedKey`]:
/// hashes and compares like the [`OwnedKey`] with the same parts.
struct Borrowed<'a>(PolicyKey<'a>);

impl Hash for OwnedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (&*self.namespace, &*self.name).hash(state);
    }
}

impl Hash for Borrowed<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0.namespace, self.0.name).hash(state);
    }
}

impl Equivalent<OwnedKey> for Borrowed<'_> {
    fn equivalent(&self, key: &OwnedKey) -> bool {
        *key.namespace == *self.0.namespace && *key.name == *self.0.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_prefers_evictable_values_then_the_least_recently_used() {
        let bound = Bound::new(2, "test store");
        let mut keyed = Keyed::<bool>::default();
        let key = PolicyKey::parse;
        let insert = |keyed: &mut Keyed<bool>, k: &str, value: bool| {
            keyed
                .get_or_insert(PolicyKey::parse(k), &bound, || value, |v| *v)
                .1
        };
        assert_eq!(insert(&mut keyed, "a", false), None);
        assert_eq!(insert(&mut keyed, "b", true), None);
        let b = Arc::clone(keyed.get_used(key("b"), &bound).unwrap()); // b is now the most recent
        let warning = insert(&mut keyed, "c", false);
        assert!(keyed.contains(key("a")) && !keyed.contains(key("b")));
        assert!(b.is_evicted(), "whoever holds b hears that it is gone");
        let warning = warning.expect("first eviction warns");
        assert!(
            warning.contains("test store") && warning.contains("`b`"),
            "{warning}"
        );
        // Nothing evictable: the least recently used goes, without a warning.
        assert_eq!(insert(&mut keyed, "d", false), None);
        assert!(!keyed.contains(key("a")) && keyed.contains(key("c")));
        assert_eq!(
            (keyed.len(), bound.evictions(), bound.reached()),
            (2, 2, true)
        );
        // Ids are never reused.
        let ids: Vec<u64> = [key("c"), key("d")]
            .map(|k| keyed.get(k).map_or(0, |s| s.id()))
            .into();
        assert_eq!(ids, [3, 4]);
    }

    #[test]
    fn a_use_found_without_the_store_counts_for_eviction() {
        let bound = Bound::new(2, "test store");
        let mut keyed = Keyed::<bool>::default();
        let key = PolicyKey::parse;
        let a = Arc::clone(keyed.get_or_insert(key("a"), &bound, || false, |_| true).0);
        keyed.get_or_insert(key("b"), &bound, || false, |_| true);
        // `a` used through a kept value, after `b`'s last use.
        a.touch(&bound);
        keyed.get_or_insert(key("c"), &bound, || false, |_| true);
        assert!(keyed.contains(key("a")) && !keyed.contains(key("b")));
        assert!(!a.is_evicted());
    }

    /// A kept value's use writes its last use only once the store's uses
    /// since got a slack ahead (an eighth of the bound), and then as the
    /// store's next use; uses right after write nothing.
    #[test]
    fn a_kept_value_is_touched_once_per_slack_of_store_uses() {
        let bound = Bound::new(64, "test store");
        assert_eq!(bound.touch_slack(), 8);
        let mut keyed = Keyed::<bool>::default();
        let a = Arc::clone(
            keyed
                .get_or_insert(PolicyKey::parse("a"), &bound, || false, |_| true)
                .0,
        );
        let last = || a.last_used.load(Ordering::Relaxed);
        let inserted = last();
        let mut others = 0;
        let mut use_others = |n: usize, keyed: &mut Keyed<bool>| {
            for _ in 0..n {
                let k = format!("k{others}");
                others += 1;
                keyed.get_or_insert(PolicyKey::parse(&k), &bound, || false, |_| true);
            }
        };
        a.touch(&bound);
        assert_eq!(last(), inserted, "just used through the store");
        use_others(7, &mut keyed);
        a.touch(&bound);
        assert_eq!(last(), inserted, "seven uses behind: within the slack");
        use_others(1, &mut keyed);
        a.touch(&bound);
        let tick = bound.tick.load(Ordering::Relaxed);
        assert_eq!(
            (tick, last()),
            (inserted + 8, tick + 1),
            "eight behind: touched"
        );
        for _ in 0..3 {
            a.touch(&bound);
            assert_eq!(last(), tick + 1, "touched again: nothing written");
        }
    }
}
