//! What the stores keyed by policy key share ([`Breakers`](crate::Breakers),
//! [`LatencyTrackers`](crate::LatencyTrackers)): a map that owns its keys but
//! is searched with a borrowed [`PolicyKey`] (no allocation for a key it
//! has), least-recently-used eviction, and the bound with its eviction
//! counter and one-time warning.

use core::hash::{Hash, Hasher};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use core::hash::BuildHasher;

use hashbrown::hash_map::RawEntryMut;
use hashbrown::{Equivalent, HashMap};
use recourse_core::PolicyKey;

type Hook = Box<dyn Fn(&str) + Send + Sync>;

/// Values of type `V` by policy key, in use order. Not bounded by itself:
/// [`Keyed::get_or_insert_mut`] keeps it within a [`Bound`].
///
/// Hashed with foldhash (hashbrown's default hasher), not SipHash: a
/// lookup is on every call's path, and the keys are the application's
/// operation names, bounded in number. A use of a key it has is one
/// search.
pub(crate) struct Keyed<V> {
    map: HashMap<OwnedKey, Slot<V>>,
    /// Ticks on every use; a slot's `last_used` is the tick of its last use.
    clock: u64,
    /// The id of the last slot created.
    last_id: u64,
}

/// One key's value.
pub(crate) struct Slot<V> {
    pub(crate) value: V,
    /// Unique per slot created, never 0: tells a key's value from the one
    /// that replaced it after an eviction.
    pub(crate) id: u64,
    last_used: u64,
}

impl<V> Default for Keyed<V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            clock: 0,
            last_id: 0,
        }
    }
}

impl<V> Keyed<V> {
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
    pub(crate) fn get(&self, key: PolicyKey<'_>) -> Option<&Slot<V>> {
        self.map.get(&Borrowed(key))
    }

    /// `key`'s value, counted as a use (the calls' paths use
    /// [`Keyed::get_mut_hashed`]; the eviction tests use this).
    #[cfg(test)]
    pub(crate) fn get_mut(&mut self, key: PolicyKey<'_>) -> Option<&mut Slot<V>> {
        self.clock += 1;
        let tick = self.clock;
        let slot = self.map.get_mut(&Borrowed(key))?;
        slot.last_used = tick;
        Some(slot)
    }

    /// `key`'s value found by the hash [`Keyed::get_or_insert_mut`] gave
    /// (no hashing), counted as a use.
    pub(crate) fn get_mut_hashed(&mut self, hash: u64, key: PolicyKey<'_>) -> Option<&mut Slot<V>> {
        self.clock += 1;
        let tick = self.clock;
        let key = Borrowed(key);
        match self
            .map
            .raw_entry_mut()
            .from_hash(hash, |k| key.equivalent(k))
        {
            RawEntryMut::Occupied(entry) => {
                let slot = entry.into_mut();
                slot.last_used = tick;
                Some(slot)
            }
            RawEntryMut::Vacant(_) => None,
        }
    }

    /// `key`'s value, counted as a use; made by `make` when it has none,
    /// after evicting the least recently used value that `evictable`
    /// accepts (or the least recently used one when it accepts none) if
    /// `bound` is reached. One search when `key` has a value and the store
    /// is not full.
    ///
    /// Also returns the bound's one-time warning, for the caller to hand to
    /// [`Bound::warn`] outside its lock, and `key`'s hash, which finds it
    /// again without hashing ([`Keyed::get_mut_hashed`]).
    pub(crate) fn get_or_insert_mut(
        &mut self,
        key: PolicyKey<'_>,
        bound: &Bound,
        make: impl FnOnce() -> V,
        evictable: impl Fn(&V) -> bool,
    ) -> (&mut Slot<V>, Option<String>, u64) {
        self.clock += 1;
        let tick = self.clock;
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
        let slot = match self
            .map
            .raw_entry_mut()
            .from_hash(hash, |k| borrowed.equivalent(k))
        {
            RawEntryMut::Occupied(entry) => entry.into_mut(),
            RawEntryMut::Vacant(entry) => {
                self.last_id += 1;
                let slot = Slot {
                    value: make(),
                    id: self.last_id,
                    last_used: tick,
                };
                entry
                    .insert_hashed_nocheck(hash, OwnedKey::from(key), slot)
                    .1
            }
        };
        slot.last_used = tick;
        (slot, warning, hash)
    }

    /// Removes the least recently used value that `evictable` accepts, or
    /// the least recently used one when it accepts none; returns its key.
    fn evict(&mut self, evictable: impl Fn(&V) -> bool) -> Option<OwnedKey> {
        let lru = |only_evictable: bool| {
            self.map
                .iter()
                .filter(|(_, slot)| !only_evictable || evictable(&slot.value))
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(key, _)| key)
        };
        let victim = lru(true).or_else(|| lru(false))?.clone();
        self.map.remove(&victim);
        Some(victim)
    }
}

/// A store's bound on keys, what it has evicted, and the hook that hears
/// about the first eviction.
pub(crate) struct Bound {
    max_keys: usize,
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
                .get_or_insert_mut(PolicyKey::parse(k), &bound, || value, |v| *v)
                .1
        };
        assert_eq!(insert(&mut keyed, "a", false), None);
        assert_eq!(insert(&mut keyed, "b", true), None);
        assert!(keyed.get_mut(key("b")).is_some()); // b is now the most recent
        let warning = insert(&mut keyed, "c", false);
        assert!(keyed.contains(key("a")) && !keyed.contains(key("b")));
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
            .map(|k| keyed.get(k).map_or(0, |s| s.id))
            .into();
        assert_eq!(ids, [3, 4]);
    }
}
