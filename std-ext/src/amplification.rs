//! One amplification ledger per policy key, shared between threads, with a
//! bound on the number of keys: what `amplification.max_amplification`
//! reads (see [`recourse_core::amplification`]).
//!
//! Each key's [`AmplificationLedger`] (ten one-second buckets, 160 bytes)
//! is created by the key's first attempt under a policy with the bound on;
//! a key never seen with the bound on costs nothing. At most `max_keys`
//! ledgers are kept (default 1024); a new key beyond that evicts the least
//! recently used one, which is counted ([`AmplificationLedgers::evictions`]).
//!
//! An executor's ledgers live in its
//! [`BudgetRegistry`](crate::BudgetRegistry)
//! ([`BudgetRegistry::with_amplification_ledgers`](crate::BudgetRegistry::with_amplification_ledgers)
//! sets another bound).
//!
//! Every instant passed to one store must come from one clock, such as an
//! executor's shared clock ([`TimerSource`](crate::timer::TimerSource)).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use recourse_core::amplification::{AmplificationLedger, Totals};
use recourse_core::policy::AmplificationPolicy;
use recourse_core::{AttemptKind, Instant, PolicyKey};

use crate::keyed::{Bound, Keyed, Shared};

/// Ledgers kept by default.
pub const DEFAULT_MAX_KEYS: usize = 1024;

/// One key's ledger, kept by whoever found it: see
/// [`AmplificationLedgers::entry`].
#[derive(Clone)]
pub(crate) struct LedgerEntry {
    shared: Arc<Shared<AmplificationLedger>>,
}

impl LedgerEntry {
    /// Whether the store has evicted it: look the key up again.
    pub(crate) fn is_evicted(&self) -> bool {
        self.shared.is_evicted()
    }
}

impl core::fmt::Debug for LedgerEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LedgerEntry")
            .field("id", &self.shared.id())
            .finish_non_exhaustive()
    }
}

/// Amplification ledgers by policy key (see the [module docs](self)).
pub struct AmplificationLedgers {
    inner: Mutex<Keyed<AmplificationLedger>>,
    bound: Bound,
}

impl AmplificationLedgers {
    /// A store of at most `max_keys` ledgers (at least 1).
    pub fn new(max_keys: usize) -> Self {
        Self {
            inner: Mutex::default(),
            bound: Bound::new(max_keys, "amplification ledger store"),
        }
    }

    /// Whether one more retry or hedge of `key` at `now` stays within
    /// `policy` (always, when it is off). A key without a ledger has no
    /// first attempts yet: only the floor of `min_per_sec` applies.
    pub fn allows_extra(
        &self,
        key: PolicyKey<'_>,
        policy: &AmplificationPolicy,
        now: Instant,
    ) -> bool {
        self.allows_extra_reserving(key, policy, now, 0)
    }

    /// [`allows_extra`](Self::allows_extra) with `reserve` extra attempts
    /// of the bound left for the layers above (see
    /// [`UpstreamEffect::reserve`](recourse_core::amplification::UpstreamEffect::reserve)).
    pub fn allows_extra_reserving(
        &self,
        key: PolicyKey<'_>,
        policy: &AmplificationPolicy,
        now: Instant,
        reserve: u64,
    ) -> bool {
        if !policy.is_enabled() {
            return true;
        }
        let shared = self.lock().get(key).map(Arc::clone);
        match shared {
            Some(shared) => shared.lock().allows_extra_reserving(policy, now, reserve),
            None => AmplificationLedger::new().allows_extra_reserving(policy, now, reserve),
        }
    }

    /// `key`'s ledger, found or made (which may evict another key's), for a
    /// caller that keeps it (an executor's per-thread key cache, when the
    /// key's policy has the bound on): its attempts then go to
    /// [`AmplificationLedgers::allows_extra_entry`] and
    /// [`AmplificationLedgers::record_entry`], with no search and no store
    /// lock, until the entry [`is_evicted`](LedgerEntry::is_evicted).
    pub(crate) fn entry(&self, key: PolicyKey<'_>) -> LedgerEntry {
        let (shared, warning) = {
            let mut inner = self.lock();
            let (shared, warning, _) =
                inner.get_or_insert(key, &self.bound, AmplificationLedger::new, |_| true);
            (Arc::clone(shared), warning)
        };
        self.bound.warn(warning);
        LedgerEntry { shared }
    }

    /// [`AmplificationLedgers::allows_extra`] on a kept entry.
    pub(crate) fn allows_extra_entry(
        &self,
        entry: &LedgerEntry,
        policy: &AmplificationPolicy,
        now: Instant,
        reserve: u64,
    ) -> bool {
        !policy.is_enabled()
            || entry
                .shared
                .lock()
                .allows_extra_reserving(policy, now, reserve)
    }

    /// [`AmplificationLedgers::record`] on a kept entry.
    pub(crate) fn record_entry(&self, entry: &LedgerEntry, kind: AttemptKind, now: Instant) {
        entry.shared.touch(&self.bound);
        entry.shared.lock().record(kind, now);
    }

    /// Counts an attempt of `kind` of `key` that was admitted at `now`.
    pub fn record(&self, key: PolicyKey<'_>, kind: AttemptKind, now: Instant) {
        let (shared, warning) = {
            let mut inner = self.lock();
            let (shared, warning, _) =
                inner.get_or_insert(key, &self.bound, AmplificationLedger::new, |_| true);
            (Arc::clone(shared), warning)
        };
        self.bound.warn(warning);
        shared.lock().record(kind, now);
    }

    /// What `key`'s ledger counted over the window that ends at `now`.
    pub fn totals(&self, key: PolicyKey<'_>, now: Instant) -> Totals {
        let shared = self.lock().get(key).map(Arc::clone);
        shared.map_or(Totals::default(), |shared| shared.lock().totals(now))
    }

    /// Keys with a ledger now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key has a ledger.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on keys.
    pub fn max_keys(&self) -> usize {
        self.bound.max_keys()
    }

    /// Ledgers evicted to keep the bound.
    pub fn evictions(&self) -> u64 {
        self.bound.evictions()
    }

    /// Every method leaves the map consistent, so a poisoned lock is still
    /// good.
    fn lock(&self) -> MutexGuard<'_, Keyed<AmplificationLedger>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for AmplificationLedgers {
    /// At most [`DEFAULT_MAX_KEYS`] keys.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl core::fmt::Debug for AmplificationLedgers {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AmplificationLedgers")
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON: AmplificationPolicy = AmplificationPolicy {
        max_amplification: 1.5,
        min_per_sec: 0,
        upstream_retry: recourse_core::policy::UpstreamRetry::Always,
    };

    #[test]
    fn each_key_has_its_own_ledger_and_the_store_is_bounded() {
        let s = AmplificationLedgers::new(2);
        let (a, b, c) = (
            PolicyKey::new("s", "A"),
            PolicyKey::new("s", "B"),
            PolicyKey::new("s", "C"),
        );
        let now = Instant::from_millis(5);
        assert!(!s.allows_extra(a, &ON, now), "no first attempts yet");
        assert!(s.allows_extra(a, &AmplificationPolicy::DEFAULT, now));
        s.record(a, AttemptKind::Initial, now);
        s.record(a, AttemptKind::Initial, now);
        assert!(s.allows_extra(a, &ON, now));
        assert!(!s.allows_extra(b, &ON, now), "b has its own ledger");
        s.record(a, AttemptKind::Retry, now);
        assert!(!s.allows_extra(a, &ON, now));
        assert_eq!(
            s.totals(a, now),
            Totals {
                firsts: 2,
                extras: 1
            }
        );
        s.record(b, AttemptKind::Initial, now);
        s.record(c, AttemptKind::Initial, now);
        assert_eq!((s.len(), s.evictions()), (2, 1));
        assert_eq!(s.totals(a, now), Totals::default(), "a was evicted");
    }
}
