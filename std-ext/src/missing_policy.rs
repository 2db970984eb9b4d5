//! Missing policies: what a call runs under when the provider has none.
//!
//! Why a mode and not an error: a provider can fail for reasons that have
//! nothing to do with the call (a key nobody configured yet, a control plane
//! that is down). Whether the call should then be refused, run once, or run
//! with safe defaults is the owner's decision, made once per executor
//! ([`MissingPolicyMode`]) and visible in every timeline it affects
//! (`missing_policy_mode`, `policy_error`).
//!
//! recourse's default is [`MissingPolicyMode::Fallback`], unlike the Go
//! original's deny: it keeps the one-line facade working with no
//! configuration at all, and the timeline says that the fallback was used.

use core::fmt;
use core::panic::AssertUnwindSafe;
use std::collections::BTreeMap;
use std::sync::Arc;

use recourse_core::policy::{Normalized, Policy};
use recourse_core::PolicyKey;

use crate::provider::{PolicyProvider, PolicySource, ProviderError};

/// What a call does when the provider gives no policy for its key (not
/// found, invalid, unavailable, or the provider panicked).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MissingPolicyMode {
    /// Fail with [`Error::NoPolicy`](recourse_core::Error::NoPolicy) without
    /// calling the operation.
    Deny,
    /// Call the operation once: no retries, no timeouts.
    Allow,
    /// Run under [`Policy::DEFAULT`] (3 attempts, 10 ms backoff doubling to
    /// 250 ms, no jitter, no timeouts). The default.
    #[default]
    Fallback,
    /// An unknown key is an error: a key the provider does not have (and no
    /// default policy) fails with
    /// [`Error::NoPolicy`](recourse_core::Error::NoPolicy) without calling
    /// the operation, so a misspelt key is found at once; a provider that
    /// cannot answer (unavailable, invalid, panicked) falls back to
    /// [`Policy::DEFAULT`] as in [`MissingPolicyMode::Fallback`].
    Strict,
}

impl MissingPolicyMode {
    /// The lowercase name used in timelines: `deny`, `allow`, `fallback`,
    /// `strict`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
            Self::Fallback => "fallback",
            Self::Strict => "strict",
        }
    }
}

impl fmt::Display for MissingPolicyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policies the missing-policy modes run under, normalized once per
/// executor.
#[derive(Debug)]
pub(crate) struct Fallbacks {
    /// [`Policy::DEFAULT`].
    fallback: Arc<Normalized>,
    /// One attempt, nothing else.
    single: Arc<Normalized>,
}

impl Fallbacks {
    pub(crate) fn new() -> Self {
        let single = Policy::once();
        Self {
            fallback: Arc::new(normal(Policy::DEFAULT)),
            single: Arc::new(normal(single)),
        }
    }
}

/// Normalizes a built-in policy, which is always valid (a finite multiplier).
fn normal(policy: Policy) -> Normalized {
    match policy.clone().normalize() {
        Ok(n) => n,
        // Unreachable for the built-ins; run the policy as written.
        Err(_) => Normalized {
            policy,
            changed: Default::default(),
        },
    }
}

/// What one call runs under: the provider's answer, or what the mode made of
/// its error.
#[derive(Clone, Debug)]
pub(crate) struct Resolution {
    /// `None`: the call is denied.
    pub(crate) policy: Option<Arc<Normalized>>,
    /// Where the policy came from; `None` when denied.
    pub(crate) source: Option<PolicySource>,
    /// The mode, when it decided the call.
    pub(crate) mode: Option<MissingPolicyMode>,
    /// The provider's error, when there was one.
    pub(crate) error: Option<ProviderError>,
}

impl Resolution {
    /// Asks `provider` once (containing a panic) and applies `mode` to an
    /// error. Allocates nothing unless the provider does.
    pub(crate) fn resolve(
        provider: &dyn PolicyProvider,
        key: PolicyKey<'_>,
        mode: MissingPolicyMode,
        fallbacks: &Fallbacks,
    ) -> Self {
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| provider.policy(key)))
            .unwrap_or(Err(ProviderError::Panicked));
        let error = match answer {
            Ok(found) => {
                // Last-known-good (an outage): say why, in `policy_error`.
                let error = (found.source == PolicySource::Lkg)
                    .then(|| provider.lkg_reason(key).map(ProviderError::Unavailable))
                    .flatten();
                return Self {
                    policy: Some(found.policy),
                    source: Some(found.source),
                    mode: None,
                    error,
                };
            }
            Err(e) => e,
        };
        let policy = match mode {
            MissingPolicyMode::Deny => None,
            MissingPolicyMode::Allow => Some(Arc::clone(&fallbacks.single)),
            MissingPolicyMode::Fallback => Some(Arc::clone(&fallbacks.fallback)),
            MissingPolicyMode::Strict if error == ProviderError::NotFound => None,
            MissingPolicyMode::Strict => Some(Arc::clone(&fallbacks.fallback)),
        };
        Self {
            source: policy.as_ref().map(|_| PolicySource::Default),
            policy,
            mode: Some(mode),
            error: Some(error),
        }
    }

    /// Whether the call runs under a fallback instead of its key's own
    /// policy: the mode's, or the provider's default policy.
    pub(crate) fn is_fallback(&self) -> bool {
        self.policy.is_some() && (self.mode.is_some() || self.source == Some(PolicySource::Default))
    }

    /// Writes `policy_source`, `policy_normalized`, `policy_clamped_fields`,
    /// `missing_policy_mode`, `policy_error` and `policy_fallback`
    /// (`true` when [`Resolution::is_fallback`]), each when it applies.
    pub(crate) fn write_attributes(&self, attrs: &mut BTreeMap<&'static str, String>) {
        if self.is_fallback() {
            attrs.insert("policy_fallback", "true".to_owned());
        }
        if let Some(source) = self.source {
            attrs.insert("policy_source", source.as_str().to_owned());
        }
        if let Some(policy) = &self.policy {
            if !policy.changed.is_empty() {
                attrs.insert("policy_normalized", "true".to_owned());
                attrs.insert("policy_clamped_fields", policy.changed.to_string());
            }
        }
        if let Some(mode) = self.mode {
            attrs.insert("missing_policy_mode", mode.as_str().to_owned());
        }
        if let Some(error) = &self.error {
            attrs.insert("policy_error", error.to_string());
        }
    }
}
