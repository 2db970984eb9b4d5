//! Policy providers: where a call's policy comes from.
//!
//! Why a synchronous trait: the provider is consulted exactly once per call,
//! before the first attempt, on the caller's task. A provider that fetches
//! policies from far away (a file, a control plane) refreshes them in the
//! background and answers from memory, so the lookup never waits on I/O and
//! the call's latency never includes it.
//!
//! Policies are normalized once, when the provider stores them, and handed
//! out as an `Arc<Normalized>`: a lookup clones an `Arc`, never a policy, and
//! never normalizes.

use core::fmt;
use std::sync::Arc;

use recourse_core::policy::{Normalized, Policy, PolicyError};
use recourse_core::PolicyKey;

/// Gives the normalized policy for a key.
///
/// The executor calls [`PolicyProvider::policy`] exactly once per call.
/// When it returns an error, the executor's
/// [`MissingPolicyMode`](crate::MissingPolicyMode) decides what happens; the
/// error is recorded in the timeline attribute `policy_error`.
pub trait PolicyProvider: Send + Sync {
    /// The policy for `key`. Must not block on I/O; should not allocate.
    fn policy(&self, key: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError>;

    /// Why `key` is served last-known-good: the latest fetch error, which
    /// the executor records as the timeline attribute `policy_error`. Asked
    /// only after [`PolicyProvider::policy`] answered source
    /// [`PolicySource::Lkg`] (so only during an outage); the default says
    /// nothing.
    fn lkg_reason(&self, key: PolicyKey<'_>) -> Option<String> {
        let _ = key;
        None
    }

    /// Calls `f` with every policy this provider holds now, by key
    /// (`default` for its default policy), so that an executor can check the
    /// budget, classifier and trigger names they refer to when it is built
    /// ([`ExecutorBuilder::try_build`](crate::ExecutorBuilder::try_build)).
    /// The default lists none: a provider that looks policies up remotely
    /// cannot list them.
    fn for_each_policy(&self, f: &mut dyn FnMut(&str, &Policy)) {
        let _ = f;
    }

    /// A number that changes whenever an answer of
    /// [`PolicyProvider::policy`] may change (a reload, a swap, a
    /// reconnection); `None`, the default, when answers may change at any
    /// time.
    ///
    /// The executor keeps each key's answer per thread and reuses it while
    /// this number stays the same, so a call with a known key neither asks
    /// the provider nor searches anything (issue 16); with `None` it asks
    /// on every call. A provider that returns `Some` must change the number
    /// (one atomic load is what it should cost) before, or in the same
    /// step as, any change of its answers becomes visible: a new document
    /// swapped in, then the generation bumped, lets a call see the old
    /// number with the new document (harmless: it re-asks next time) but
    /// never the new number with the old document.
    fn generation(&self) -> Option<u64> {
        None
    }
}

impl<P: PolicyProvider + ?Sized> PolicyProvider for Arc<P> {
    fn policy(&self, key: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        (**self).policy(key)
    }
    fn lkg_reason(&self, key: PolicyKey<'_>) -> Option<String> {
        (**self).lkg_reason(key)
    }
    fn for_each_policy(&self, f: &mut dyn FnMut(&str, &Policy)) {
        (**self).for_each_policy(f)
    }

    fn generation(&self) -> Option<u64> {
        (**self).generation()
    }
}

impl<P: PolicyProvider + ?Sized> PolicyProvider for Box<P> {
    fn policy(&self, key: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        (**self).policy(key)
    }
    fn lkg_reason(&self, key: PolicyKey<'_>) -> Option<String> {
        (**self).lkg_reason(key)
    }
    fn for_each_policy(&self, f: &mut dyn FnMut(&str, &Policy)) {
        (**self).for_each_policy(f)
    }

    fn generation(&self) -> Option<u64> {
        (**self).generation()
    }
}

/// A found policy and where it came from.
#[derive(Clone, Debug)]
pub struct PolicyLookup {
    /// The policy, normalized when the provider stored it, with the fields
    /// normalization changed.
    pub policy: Arc<Normalized>,
    /// Where it came from.
    pub source: PolicySource,
}

/// Where a call's policy came from; recorded in the timeline attribute
/// `policy_source`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicySource {
    /// Configured for this key in code ([`StaticProvider`](crate::StaticProvider)).
    Static,
    /// A default: the provider's policy for keys without their own, or the
    /// executor's fallback when the provider had none (then the timeline also
    /// says `missing_policy_mode`).
    Default,
    /// Fetched from a remote control plane.
    Remote,
    /// The last-known-good policy, served because fetching failed.
    Lkg,
    /// Read from a policy file (`FileProvider`).
    File,
    /// Read from etcd (`EtcdProvider`).
    Etcd,
    /// Answered by a custom function (`providers::PolicyFn`).
    Custom,
}

impl PolicySource {
    /// The lowercase name used in timelines: `static`, `default`, `remote`,
    /// `lkg`, `file`, `etcd`, `custom`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Default => "default",
            Self::Remote => "remote",
            Self::Lkg => "lkg",
            Self::File => "file",
            Self::Etcd => "etcd",
            Self::Custom => "custom",
        }
    }
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a provider gave no policy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderError {
    /// No policy for the key and no default.
    NotFound,
    /// The policy for the key is invalid; the error names the field.
    Invalid(PolicyError),
    /// The provider could not answer (a remote source without a cached or
    /// last-known-good policy, say); the text says why.
    Unavailable(String),
    /// The provider panicked; the executor contained the panic.
    Panicked,
}

impl ProviderError {
    /// A low-cardinality code: `not_found`, `invalid_policy`,
    /// `provider_unavailable`, `panic_in_provider`.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Invalid(_) => "invalid_policy",
            Self::Unavailable(_) => "provider_unavailable",
            Self::Panicked => "panic_in_provider",
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("not_found: no policy for the key and no default"),
            Self::Invalid(e) => write!(f, "invalid_policy: {e}"),
            Self::Unavailable(why) => write!(f, "provider_unavailable: {why}"),
            Self::Panicked => f.write_str("panic_in_provider: the policy provider panicked"),
        }
    }
}

impl core::error::Error for ProviderError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Invalid(e) => Some(e),
            _ => None,
        }
    }
}
