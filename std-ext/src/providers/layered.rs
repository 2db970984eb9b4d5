//! Layers of providers: etcd over a file over code, say.
//!
//! Why "own policy first, then defaults": a layer's default is a guess for
//! keys it knows nothing about, so it must not hide a lower layer's policy
//! written for the key itself. A lookup asks the layers top-down for the
//! key's own policy; the first that has one answers. If none has, the
//! topmost layer's default answers. The answer keeps its layer's
//! [`PolicySource`] (`etcd`, `file`, `static`, ...), so the timeline's
//! `policy_source` says which layer answered.

use core::panic::AssertUnwindSafe;

use recourse_core::PolicyKey;

use crate::provider::{PolicyLookup, PolicyProvider, PolicySource, ProviderError};

/// Providers asked top-down; see the module docs for the rule.
///
/// ```
/// use recourse::providers::Layered;
/// use recourse::provider::PolicySource;
/// use recourse::{Policy, PolicyKey, PolicyProvider, StaticProvider};
///
/// let five = Policy::retries(4);
/// let top = StaticProvider::builder().default_policy(Policy::DEFAULT)?.build();
/// let bottom = StaticProvider::builder().policy("svc.Get", five)?.build();
/// let layered = Layered::new().layer(top).layer(bottom);
/// let found = layered.policy(PolicyKey::parse("svc.Get")).unwrap();
/// assert_eq!(found.policy.policy.retry.max_attempts, 5);
/// assert_eq!(found.source, PolicySource::Static);
/// let other = layered.policy(PolicyKey::parse("svc.Put")).unwrap();
/// assert_eq!(other.source, PolicySource::Default);
/// # Ok::<(), recourse::PolicyError>(())
/// ```
#[derive(Default)]
pub struct Layered {
    layers: Vec<Box<dyn PolicyProvider>>,
}

impl Layered {
    /// No layers: every lookup is [`ProviderError::NotFound`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a layer below the ones added before.
    #[must_use]
    pub fn layer(mut self, provider: impl PolicyProvider + 'static) -> Self {
        self.layers.push(Box::new(provider));
        self
    }

    /// How many layers there are.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl core::fmt::Debug for Layered {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Layered")
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl PolicyProvider for Layered {
    /// The first layer's own policy for `key`; else the first layer's
    /// default; else the first error other than `NotFound` (a layer that
    /// panicked counts as [`ProviderError::Panicked`] and the next layer is
    /// asked); else `NotFound`.
    fn policy(&self, key: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        let mut default: Option<PolicyLookup> = None;
        let mut error: Option<ProviderError> = None;
        for layer in &self.layers {
            let answer = std::panic::catch_unwind(AssertUnwindSafe(|| layer.policy(key)))
                .unwrap_or(Err(ProviderError::Panicked));
            match answer {
                Ok(found) if found.source != PolicySource::Default => return Ok(found),
                Ok(found) => {
                    default.get_or_insert(found);
                }
                Err(ProviderError::NotFound) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        default.ok_or_else(|| error.unwrap_or(ProviderError::NotFound))
    }

    /// Every layer's policies, top layer first.
    fn for_each_policy(&self, f: &mut dyn FnMut(&str, &recourse_core::Policy)) {
        for layer in &self.layers {
            // A listing is a check, not a call: a panicking layer lists none.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| layer.for_each_policy(f)));
        }
    }

    /// Every layer's generation, folded into one number (a layer's change
    /// changes it: each step is a bijection of the running value for a
    /// given layer value and of the layer value for a given running value);
    /// `None` when a layer has none.
    fn generation(&self) -> Option<u64> {
        self.layers.iter().try_fold(0u64, |folded, layer| {
            let g = std::panic::catch_unwind(AssertUnwindSafe(|| layer.generation())).ok()??;
            Some((folded.rotate_left(23) ^ g).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        })
    }

    /// The first layer's reason.
    fn lkg_reason(&self, key: PolicyKey<'_>) -> Option<String> {
        self.layers.iter().find_map(|layer| {
            std::panic::catch_unwind(AssertUnwindSafe(|| layer.lkg_reason(key)))
                .ok()
                .flatten()
        })
    }
}
