//! The static provider: policies configured in code, per key, plus an
//! optional default.
//!
//! Keys are low-cardinality (a few dozen call sites), so the policies live in
//! a `Vec` sorted by `(namespace, name)` and a lookup is a binary search on
//! the borrowed key: no hashing, no allocation. Every policy is normalized
//! when it is added; a value with no sensible reading (a NaN multiplier) is
//! rejected there, with an error naming the field, instead of surfacing in
//! some later call.

use std::sync::Arc;

use recourse_core::policy::{Limits, Normalized, Policy, PolicyError};
use recourse_core::PolicyKey;

use crate::provider::{PolicyLookup, PolicyProvider, PolicySource, ProviderError};

/// Policies per key plus an optional default, fixed at build time.
///
/// ```
/// use recourse::provider::PolicySource;
/// use recourse::{Policy, PolicyKey, PolicyProvider, StaticProvider};
///
/// let provider = StaticProvider::builder()
///     .policy("user-service.GetUser", Policy::retries(4))?
///     .default_policy(Policy::DEFAULT)?
///     .build();
///
/// let found = provider.policy(PolicyKey::parse("user-service.GetUser")).unwrap();
/// assert_eq!(found.source, PolicySource::Static);
/// assert_eq!(found.policy.policy.retry.max_attempts, 5);
/// let other = provider.policy(PolicyKey::parse("billing.Charge")).unwrap();
/// assert_eq!(other.source, PolicySource::Default);
/// # Ok::<(), recourse::PolicyError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct StaticProvider {
    /// Sorted by `(namespace, name)`, keys unique.
    entries: Vec<Entry>,
    default: Option<Arc<Normalized>>,
}

#[derive(Clone, Debug)]
struct Entry {
    namespace: String,
    name: String,
    policy: Arc<Normalized>,
}

impl Entry {
    fn key(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

impl StaticProvider {
    /// A provider with no policies and no default: every lookup is
    /// [`ProviderError::NotFound`], so the executor's missing-policy mode
    /// decides every call.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A builder.
    pub fn builder() -> StaticProviderBuilder {
        StaticProviderBuilder::default()
    }

    /// How many keys have their own policy.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has its own policy (there may still be a default).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A provider from policies normalized already (by a provider that
    /// validated them itself), keeping what normalization reported.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn from_normalized<'a>(
        policies: impl IntoIterator<Item = (&'a str, Arc<Normalized>)>,
        default: Option<Arc<Normalized>>,
    ) -> Self {
        let mut provider = Self {
            entries: Vec::new(),
            default,
        };
        for (key, policy) in policies {
            provider.insert(key, policy);
        }
        provider
    }

    /// Sets `key`'s policy (parsed like [`PolicyKey::parse`]), replacing an
    /// earlier one; the entries stay sorted for [`StaticProvider::find`].
    fn insert(&mut self, key: &str, policy: Arc<Normalized>) {
        let key = PolicyKey::parse(key);
        match self
            .entries
            .binary_search_by(|e| e.key().cmp(&(key.namespace, key.name)))
        {
            Ok(i) => self.entries[i].policy = policy,
            Err(i) => self.entries.insert(
                i,
                Entry {
                    namespace: key.namespace.to_owned(),
                    name: key.name.to_owned(),
                    policy,
                },
            ),
        }
    }

    fn find(&self, key: PolicyKey<'_>) -> Option<&Arc<Normalized>> {
        self.entries
            .binary_search_by(|e| e.key().cmp(&(key.namespace, key.name)))
            .ok()
            .map(|i| &self.entries[i].policy)
    }
}

impl PolicyProvider for StaticProvider {
    /// Every key's policy, then the default one (as `default`).
    fn for_each_policy(&self, f: &mut dyn FnMut(&str, &Policy)) {
        for e in &self.entries {
            let key = PolicyKey::new(&e.namespace, &e.name).to_string();
            f(&key, &e.policy.policy);
        }
        if let Some(default) = &self.default {
            f("default", &default.policy);
        }
    }

    /// The key's own policy (source `static`), else the default (source
    /// `default`), else [`ProviderError::NotFound`].
    fn policy(&self, key: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        if let Some(policy) = self.find(key) {
            return Ok(PolicyLookup {
                policy: Arc::clone(policy),
                source: PolicySource::Static,
            });
        }
        match &self.default {
            Some(policy) => Ok(PolicyLookup {
                policy: Arc::clone(policy),
                source: PolicySource::Default,
            }),
            None => Err(ProviderError::NotFound),
        }
    }

    /// Fixed at build time: always the same generation.
    fn generation(&self) -> Option<u64> {
        Some(0)
    }
}

/// Builds a [`StaticProvider`]; every policy is normalized as it is added.
#[derive(Clone, Debug, Default)]
#[must_use = "call .build() to get the provider"]
pub struct StaticProviderBuilder {
    provider: StaticProvider,
}

impl StaticProviderBuilder {
    /// Sets the policy for `key` (parsed like [`PolicyKey::parse`], e.g.
    /// `"user-service.GetUser"`), replacing an earlier one for the same key.
    ///
    /// # Errors
    ///
    /// A value normalization cannot read (a NaN or infinite
    /// `retry.backoff_multiplier`); the error names the field.
    pub fn policy(mut self, key: &str, policy: Policy) -> Result<Self, PolicyError> {
        self.provider.insert(key, Arc::new(normalize(policy)?));
        Ok(self)
    }

    /// Sets the policy for keys without their own (source `default`).
    ///
    /// # Errors
    ///
    /// As for [`StaticProviderBuilder::policy`].
    pub fn default_policy(mut self, policy: Policy) -> Result<Self, PolicyError> {
        self.provider.default = Some(Arc::new(normalize(policy)?));
        Ok(self)
    }

    /// The provider.
    pub fn build(self) -> StaticProvider {
        self.provider
    }
}

/// Normalizes with the highest hedge ceiling: how many hedges run is the
/// executor's limit ([`ExecutorBuilder::max_hedges_ceiling`]), applied (and
/// reported) per call.
///
/// [`ExecutorBuilder::max_hedges_ceiling`]: crate::ExecutorBuilder::max_hedges_ceiling
pub(crate) fn normalize(policy: Policy) -> Result<Normalized, PolicyError> {
    policy.normalize_with(Limits {
        max_hedges_ceiling: Limits::MAX_HEDGES_CEILING,
        ..Limits::DEFAULT
    })
}
