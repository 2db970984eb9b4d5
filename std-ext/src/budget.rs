//! Retry budgets: the built-in budgets, the [`Budget`] trait, the registry
//! policies refer to by name, and what happens when a policy names a budget
//! the registry does not have.
//!
//! | budget | what it bounds |
//! |---|---|
//! | [`RetryRatio`] | retries to a share of recent first attempts (Finagle) |
//! | [`TokenBucket`] | attempts to a refill rate (gRPC-style tokens) |
//! | [`AwsRetryQuota`] | AWS SDK's retry quota (timeouts cost more) |
//! | [`GrpcThrottle`] | gRPC's retry throttling (`grpc-retry-pushback-ms`) |
//! | [`Concurrency`] | attempts in flight at once |
//! | [`Unlimited`] | nothing (the reference) |
//!
//! Why names: a policy comes from code, a file or a control plane, and says
//! `retry.budget.name = "user-service-retries"`; the executor owns the one
//! shared budget of that name (see [`recourse_core::budget`] for the
//! built-ins). Retries (and first attempts) use the policy's `retry.budget`,
//! hedges its `hedge.budget`; an empty name means no budget (`no_budget`).

use core::fmt;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use recourse_core::budget::{
    AwsRetryQuota, Budget, BudgetRequest, Concurrency, Decision, GrpcThrottle, Reservation,
    RetryRatio, TokenBucket, Unlimited, DEFAULT_TIMEOUT_REASONS, MAX_REFILL_PER_SECOND,
    PUSHBACK_STOP,
};

/// A budget shared by every call that names it.
pub type SharedBudget = Arc<dyn Budget + Send + Sync>;

/// Budgets by name.
///
/// ```
/// use recourse::budget::{BudgetRegistry, Unlimited};
///
/// static UNLIMITED: Unlimited = Unlimited;
/// let budgets = BudgetRegistry::new().with("unlimited", &UNLIMITED);
/// assert!(budgets.get("unlimited").is_some());
/// assert!(budgets.get("missing").is_none());
/// ```
#[derive(Clone, Default)]
pub struct BudgetRegistry {
    budgets: BTreeMap<String, SharedBudget>,
    // amplification: the key's ledgers, shared by clones of the registry.
    amplification: std::sync::Arc<crate::amplification::AmplificationLedgers>,
    /// What a policy naming a budget this registry does not have gets;
    /// `None`: the executor's default ([`MissingBudgetMode::Deny`]).
    missing: Option<MissingBudgetMode>,
}

impl BudgetRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The amplification ledgers, one per key, that
    /// `amplification.max_amplification` reads (default: at most 1024
    /// keys). Clones of the registry share them.
    pub fn amplification_ledgers(&self) -> &crate::amplification::AmplificationLedgers {
        &self.amplification
    }

    /// This registry with `ledgers` as its amplification ledgers (for
    /// another bound on keys).
    pub fn with_amplification_ledgers(
        mut self,
        ledgers: crate::amplification::AmplificationLedgers,
    ) -> Self {
        self.amplification = std::sync::Arc::new(ledgers);
        self
    }

    /// This registry with `mode` deciding an attempt whose policy names a
    /// budget it does not have (the extension and its missing-mode
    /// together; [`ExecutorBuilder::budgets`](crate::ExecutorBuilder::budgets)
    /// takes both).
    ///
    /// ```
    /// use recourse::budget::{BudgetRegistry, MissingBudgetMode, RetryRatio};
    ///
    /// let budgets = BudgetRegistry::new()
    ///     .with("retries", RetryRatio::finagle())
    ///     .on_missing(MissingBudgetMode::AllowUnsafe);
    /// assert_eq!(budgets.missing_mode(), Some(MissingBudgetMode::AllowUnsafe));
    /// ```
    #[must_use]
    pub fn on_missing(mut self, mode: MissingBudgetMode) -> Self {
        self.missing = Some(mode);
        self
    }

    /// The missing-budget mode set with [`BudgetRegistry::on_missing`].
    pub fn missing_mode(&self) -> Option<MissingBudgetMode> {
        self.missing
    }

    /// This registry with `budget` under `name` (replacing one of that name).
    /// A `&'static` budget (a `static`) is a budget too.
    pub fn with(
        mut self,
        name: impl Into<String>,
        budget: impl Budget + Send + Sync + 'static,
    ) -> Self {
        self.register(name, budget);
        self
    }

    /// Adds `budget` under `name`, replacing one of that name.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        budget: impl Budget + Send + Sync + 'static,
    ) {
        self.budgets.insert(name.into(), Arc::new(budget));
    }

    /// Adds an already shared budget under `name`.
    pub fn register_shared(&mut self, name: impl Into<String>, budget: SharedBudget) {
        self.budgets.insert(name.into(), budget);
    }

    /// The budget named `name` (no allocation).
    pub fn get(&self, name: &str) -> Option<&SharedBudget> {
        self.budgets.get(name)
    }

    /// The registered names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.budgets.keys().map(String::as_str)
    }
}

impl fmt::Debug for BudgetRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetRegistry")
            .field("names", &self.budgets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What an attempt does when its policy names a budget the registry does not
/// have.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MissingBudgetMode {
    /// Refuse the attempt (`budget_not_found`): fail closed. The default — a
    /// typo in a budget name must not silently remove the bound on load.
    #[default]
    Deny,
    /// Let the attempt run (`budget_not_found`, mode `allow_unsafe`): fail
    /// open, for migrations.
    AllowUnsafe,
}

impl MissingBudgetMode {
    /// `deny` or `allow_unsafe`, as in budget-decision events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::AllowUnsafe => "allow_unsafe",
        }
    }
}
