//! [`Limits`]: the bounds that are the executor's to set, not the policy's
//! — one type for normalization ([`Policy::normalize_with`]) and for the
//! call machine ([`CallMachine::new`], the call builder's
//! [`limits`](crate::CallBuilder::limits)).
//!
//! [`Policy::normalize_with`]: crate::policy::Policy::normalize_with
//! [`CallMachine::new`]: crate::CallMachine::new

use core::time::Duration;

/// Bounds that are the executor's to set, not the policy's: how far a
/// server's retry-after hint is honoured and how many hedges a retry group
/// may launch, whatever the policy asks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Upper bound of a server's retry-after hint. A longer hint is cut to
    /// this; a hint that would end at or past the overall deadline stops the
    /// call. Default 60 s.
    pub max_retry_after: Duration,
    /// The most hedges a retry group may launch, whatever the policy asks
    /// (the ceiling of `hedge.max_hedges`): default 3; an executor may lift
    /// it to [`Limits::MAX_HEDGES_CEILING`] (10).
    pub max_hedges_ceiling: u32,
}

impl Limits {
    /// The reference bounds: retry-after hints up to 60 s, 3 hedges.
    pub const DEFAULT: Self = Self {
        max_retry_after: Duration::from_secs(60),
        max_hedges_ceiling: 3,
    };
    /// The highest `max_hedges_ceiling` an executor may set.
    pub const MAX_HEDGES_CEILING: u32 = 10;
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
