//! Configuring an [`Executor`]: provider, observers, timer, missing-policy
//! mode, seed and limits.

use core::fmt;
use core::sync::atomic::AtomicU64;
use core::time::Duration;

use recourse_core::policy::Limits;

use crate::breakers::Breakers;
use crate::budget::{BudgetRegistry, MissingBudgetMode};
use crate::classify::{ClassifierRegistry, MissingClassifierMode};
use crate::executor::Executor;
use crate::hedging::MissingTriggerMode;
use crate::latency::LatencyTrackers;
use crate::missing_policy::{Fallbacks, MissingPolicyMode};
use crate::names::{self, UnknownName};
use crate::observer::{MultiObserver, Observer};
use crate::provider::PolicyProvider;
use crate::static_provider::StaticProvider;
use crate::timer::{DefaultTimer, TimerSource};

/// Builds an [`Executor`]; start with [`Executor::builder`].
///
/// ```
/// use std::time::Duration;
/// use recourse::{Executor, MissingPolicyMode, NoopObserver, StaticProvider};
///
/// let exec = Executor::builder()
///     .provider(StaticProvider::empty())
///     .observer(NoopObserver)
///     .missing_policy_mode(MissingPolicyMode::Deny)
///     .seed(42)
///     .max_retry_after(Duration::from_secs(5))
///     .build();
/// assert_eq!(exec.missing_policy_mode(), MissingPolicyMode::Deny);
/// ```
#[must_use = "call .build() to get the executor"]
pub struct ExecutorBuilder<S = DefaultTimer> {
    provider: Option<Box<dyn PolicyProvider>>,
    observers: Vec<Box<dyn Observer>>,
    timer: S,
    mode: MissingPolicyMode,
    seed: Option<u64>,
    options: Limits,
    budgets: BudgetRegistry,
    missing_budget: MissingBudgetMode,
    contain_panics: bool,
    breakers: Breakers,
    classifiers: ClassifierRegistry,
    missing_classifier: MissingClassifierMode,
    latency: LatencyTrackers,
    missing_trigger: MissingTriggerMode,
}

impl ExecutorBuilder {
    /// The defaults (see [`Executor::builder`]).
    pub fn new() -> Self {
        Self {
            provider: None,
            observers: Vec::new(),
            timer: DefaultTimer,
            mode: MissingPolicyMode::default(),
            seed: None,
            options: Limits::DEFAULT,
            budgets: BudgetRegistry::new(),
            missing_budget: MissingBudgetMode::default(),
            contain_panics: true,
            breakers: Breakers::default(),
            classifiers: ClassifierRegistry::new(),
            missing_classifier: MissingClassifierMode::default(),
            latency: LatencyTrackers::default(),
            missing_trigger: MissingTriggerMode::default(),
        }
    }
}

impl Default for ExecutorBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> fmt::Debug for ExecutorBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorBuilder")
            .field("has_provider", &self.provider.is_some())
            .field("observers", &self.observers.len())
            .field("missing_policy_mode", &self.mode)
            .field("seed", &self.seed)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S> ExecutorBuilder<S> {
    /// Where policies come from. Default: an empty [`StaticProvider`], so
    /// every call is decided by the missing-policy mode.
    pub fn provider(mut self, provider: impl PolicyProvider + 'static) -> Self {
        self.provider = Some(Box::new(provider));
        self
    }

    /// Adds an observer. Called more than once, every observer hears every
    /// event, in the order they were added.
    pub fn observer(mut self, observer: impl Observer + 'static) -> Self {
        self.observers.push(Box::new(observer));
        self
    }

    /// Where each call gets its timer: [`DefaultTimer`] (the default), or any
    /// `Clone` [`Timer`](recourse_core::Timer) such as a virtual clock.
    pub fn timer<S2: TimerSource>(self, timer: S2) -> ExecutorBuilder<S2> {
        ExecutorBuilder {
            provider: self.provider,
            observers: self.observers,
            timer,
            mode: self.mode,
            seed: self.seed,
            options: self.options,
            budgets: self.budgets,
            missing_budget: self.missing_budget,
            contain_panics: self.contain_panics,
            breakers: self.breakers,
            classifiers: self.classifiers,
            missing_classifier: self.missing_classifier,
            latency: self.latency,
            missing_trigger: self.missing_trigger,
        }
    }

    /// What a call does when its policy names a classifier the registry
    /// does not have: [`MissingClassifierMode::Fallback`] (the default) or
    /// [`MissingClassifierMode::Deny`].
    pub fn missing_classifier_mode(mut self, mode: MissingClassifierMode) -> Self {
        self.missing_classifier = mode;
        self
    }

    /// The classifiers policies choose by name (`retry.classifier`), with
    /// the registry's missing-classifier mode when it has one
    /// ([`ClassifierRegistry::on_missing`]).
    pub fn classifiers(mut self, classifiers: ClassifierRegistry) -> Self {
        if let Some(mode) = classifiers.missing_mode() {
            self.missing_classifier = mode;
        }
        self.classifiers = classifiers;
        self
    }

    /// The per-key circuit breakers (by default a store bounded at
    /// [`DEFAULT_MAX_KEYS`](crate::breakers::DEFAULT_MAX_KEYS) keys);
    /// policies with `circuit.enabled` consult them before a call's first
    /// attempt.
    pub fn breakers(mut self, breakers: Breakers) -> Self {
        self.breakers = breakers;
        self
    }

    /// The budgets policies refer to by name (`retry.budget.name`,
    /// `hedge.budget.name`), with the registry's missing-budget mode when it
    /// has one ([`BudgetRegistry::on_missing`]).
    pub fn budgets(mut self, budgets: BudgetRegistry) -> Self {
        if let Some(mode) = budgets.missing_mode() {
            self.missing_budget = mode;
        }
        self.budgets = budgets;
        self
    }

    /// What an attempt does when its policy names a budget the registry
    /// does not have: [`MissingBudgetMode::Deny`] (the default) or
    /// [`MissingBudgetMode::AllowUnsafe`].
    pub fn missing_budget_mode(mut self, mode: MissingBudgetMode) -> Self {
        self.missing_budget = mode;
        self
    }

    /// Whether a panic in a classifier, a budget or the operation is
    /// contained (the default: it becomes the outcome `panic_in_classifier`,
    /// the refusal `panic_in_budget`, the timeline attribute
    /// `panic_in_budget_settle`, or, for the operation, the call's error
    /// [`Error::OperationPanicked`](crate::Error::OperationPanicked) with
    /// every attempt settled) or unwinds through the call. Either way the
    /// observer hears a panicking operation's call end as
    /// `panic_in_operation`. Observer panics are always contained.
    pub fn contain_panics(mut self, contain: bool) -> Self {
        self.contain_panics = contain;
        self
    }

    /// What a call does when the provider has no policy for its key.
    /// Default [`MissingPolicyMode::Fallback`].
    pub fn missing_policy_mode(mut self, mode: MissingPolicyMode) -> Self {
        self.mode = mode;
        self
    }

    /// Makes jitter reproducible: call `n` of this executor (counted from 0
    /// in the order calls start) draws from an RNG seeded with a mix of
    /// `seed` and `n`. Two executors with the same seed and the same
    /// sequence of calls back off identically. Without a seed each call's
    /// RNG is seeded from entropy.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The most hedges a retry group may launch, whatever a policy asks:
    /// default 3, lifted as far as 10 ([`Limits::MAX_HEDGES_CEILING`]);
    /// values outside 1..=10 are clamped into it. A policy asking for more
    /// runs with the ceiling, and its timeline lists `hedge.max_hedges` in
    /// `policy_clamped_fields`.
    pub fn max_hedges_ceiling(mut self, ceiling: u32) -> Self {
        self.options.max_hedges_ceiling = ceiling.clamp(1, Limits::MAX_HEDGES_CEILING);
        self
    }

    /// Where quantile hedge triggers keep each key's recent latencies
    /// (default: [`LatencyTrackers::default`], at most 1024 keys, 10 s
    /// windows).
    pub fn latency_trackers(mut self, trackers: LatencyTrackers) -> Self {
        self.latency = trackers;
        self
    }

    /// What a call does when its policy's `hedge.trigger` names no trigger
    /// (default [`MissingTriggerMode::Fallback`]: the fixed delay).
    pub fn missing_trigger_mode(mut self, mode: MissingTriggerMode) -> Self {
        self.missing_trigger = mode;
        self
    }

    /// The longest delay a server's retry-after hint may impose; a longer
    /// hint is cut to this. Default 60 s.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.options.max_retry_after = max;
        self
    }

    /// The executor, after checking every policy its provider lists (see
    /// [`PolicyProvider::for_each_policy`]): each budget, classifier and
    /// hedge trigger a policy names must exist.
    ///
    /// # Errors
    ///
    /// The first policy that names a budget, classifier or trigger the
    /// executor does not have: the error names its key, field and the
    /// missing name ([`UnknownName`]).
    #[allow(clippy::result_large_err)]
    pub fn try_build(self) -> Result<Executor<S>, UnknownName> {
        let exec = self.build();
        let mut first = None;
        exec.provider.for_each_policy(&mut |key, policy| {
            if first.is_none() {
                first = names::check(key, policy, &exec.budgets, &exec.classifiers).err();
            }
        });
        match first {
            Some(e) => Err(e),
            None => Ok(exec),
        }
    }

    /// The budget and classifier names this builder's registries have, for
    /// a policy document or file provider to check every document against
    /// when it is loaded (`FileProviderBuilder::known_names`), so a reload
    /// naming a missing budget is rejected like a malformed one. Set the
    /// registries first. Hedge triggers are not listed (their names are
    /// forms, not a list): [`ExecutorBuilder::try_build`] checks them.
    #[cfg(feature = "serde")]
    pub fn known_names(&self) -> crate::providers::KnownNames {
        crate::providers::KnownNames {
            budgets: Some(self.budgets.names().map(str::to_owned).collect()),
            classifiers: Some(self.classifiers.names().map(str::to_owned).collect()),
            triggers: None,
        }
    }

    /// The executor, unchecked: a policy naming a budget, classifier or
    /// trigger the executor does not have is found at call time, where the
    /// missing-budget, -classifier and -trigger modes decide. Prefer
    /// [`ExecutorBuilder::try_build`], which finds it now.
    pub fn build(mut self) -> Executor<S> {
        // One counter for every contained observer panic: the executor's
        // own (one observer) and the multi-observer's (several) are the same.
        let observer_panics = std::sync::Arc::new(AtomicU64::new(0));
        let observer: Option<Box<dyn Observer>> = match self.observers.len() {
            0 => None,
            1 => self.observers.pop(),
            _ => Some(Box::new(MultiObserver::counting(
                self.observers,
                observer_panics.clone(),
            ))),
        };
        Executor {
            provider: self
                .provider
                .unwrap_or_else(|| Box::new(StaticProvider::empty())),
            observer,
            timer: self.timer,
            mode: self.mode,
            seed: self.seed,
            options: self.options,
            fallbacks: Fallbacks::new(),
            budgets: self.budgets,
            missing_budget: self.missing_budget,
            contain_panics: self.contain_panics,
            breakers: self.breakers,
            calls: AtomicU64::new(0),
            observer_panics,
            settle_panics: AtomicU64::new(0),
            classifiers: self.classifiers,
            missing_classifier: self.missing_classifier,
            latency: self.latency,
            missing_trigger: self.missing_trigger,
            policy_fallbacks: crate::sharded::Counter::default(),
            id: crate::key_cache::executor_id(),
        }
    }
}
