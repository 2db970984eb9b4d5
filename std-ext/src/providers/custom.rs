//! Custom providers answer with a plain [`Policy`]; this normalizes and
//! caches.
//!
//! Why: a provider must hand out normalized policies (`Arc<Normalized>`), so
//! that a call never normalizes and `policy_clamped_fields` is right. A
//! custom source (a config service, a feature-flag system) naturally has a
//! `Policy`, not that. [`PolicyFn`] wraps a function `key → Option<Policy>`:
//! it normalizes an answer the first time it sees it and reuses the
//! normalized `Arc` while the function keeps answering the same policy for
//! the key.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use recourse_core::policy::{Normalized, Policy};
use recourse_core::PolicyKey;

use crate::provider::{PolicyLookup, PolicyProvider, PolicySource, ProviderError};

/// Most keys whose normalized policy is remembered; past it the memory is
/// cleared (keys are low-cardinality, so this is a guard, not a policy).
const MAX_KEYS: usize = 4096;

type Cache = HashMap<String, (Policy, Arc<Normalized>)>;

/// A provider from a function that answers plain policies (source
/// `custom`).
///
/// ```
/// use recourse::providers::PolicyFn;
/// use recourse::provider::PolicySource;
/// use recourse::{Policy, PolicyKey, PolicyProvider};
///
/// let provider = PolicyFn::new(|key: PolicyKey<'_>| {
///     // 50 attempts: clamped to 10, and reported.
///     (key.namespace == "billing").then(|| Policy::DEFAULT.max_attempts(50))
/// });
/// let found = provider.policy(PolicyKey::parse("billing.Charge")).unwrap();
/// assert_eq!(found.source, PolicySource::Custom);
/// assert_eq!(found.policy.policy.retry.max_attempts, 10);
/// assert_eq!(found.policy.changed.to_string(), "retry.max_attempts");
/// assert!(provider.policy(PolicyKey::parse("user.Get")).is_err());
/// ```
pub struct PolicyFn<F> {
    f: F,
    cache: RwLock<Cache>,
}

impl<F> core::fmt::Debug for PolicyFn<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PolicyFn").finish_non_exhaustive()
    }
}

impl<F> PolicyFn<F>
where
    F: Fn(PolicyKey<'_>) -> Option<Policy> + Send + Sync,
{
    /// Wraps `f`; `None` means no policy for the key (`NotFound`).
    pub fn new(f: F) -> Self {
        Self {
            f,
            cache: RwLock::new(HashMap::new()),
        }
    }
}

impl<F> PolicyProvider for PolicyFn<F>
where
    F: Fn(PolicyKey<'_>) -> Option<Policy> + Send + Sync,
{
    /// Calls the function; normalizes a policy it has not answered before
    /// for the key. A value normalization cannot read is
    /// [`ProviderError::Invalid`].
    fn policy(&self, key: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        let policy = (self.f)(key).ok_or(ProviderError::NotFound)?;
        let joined = crate::providers::joined_key(key);
        let full: &str = &joined;
        {
            let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((raw, normalized)) = cache.get(full) {
                if *raw == policy {
                    return Ok(PolicyLookup {
                        policy: Arc::clone(normalized),
                        source: PolicySource::Custom,
                    });
                }
            }
        }
        let normalized = Arc::new(
            crate::static_provider::normalize(policy.clone()).map_err(ProviderError::Invalid)?,
        );
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_KEYS && !cache.contains_key(full) {
            cache.clear();
        }
        cache.insert(full.to_owned(), (policy, Arc::clone(&normalized)));
        Ok(PolicyLookup {
            policy: normalized,
            source: PolicySource::Custom,
        })
    }
}
