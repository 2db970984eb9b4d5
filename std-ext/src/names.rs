//! Typos caught early: the budget, classifier and trigger names a policy
//! refers to, checked when the policy is added to an executor.
//!
//! Why: a misspelt budget name found only at call time refuses every call
//! (`budget_not_found`), a misspelt classifier or trigger silently falls
//! back. [`ExecutorBuilder::try_build`](crate::ExecutorBuilder::try_build)
//! checks every policy its provider lists (a [`StaticProvider`]'s, a policy
//! file's current document) and
//! [`Executor::check_policy`](crate::Executor::check_policy) checks one
//! before a control plane hands it over; both say which key's field names
//! which missing thing. Policy documents check the same names when they
//! are loaded (`providers::KnownNames`, feature `serde`).
//!
//! [`StaticProvider`]: crate::StaticProvider

use core::fmt;

use recourse_core::hedge::Trigger;
use recourse_core::policy::Policy;

use crate::budget::BudgetRegistry;
use crate::classify::ClassifierRegistry;

/// What a policy field names.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameKind {
    /// A budget in the executor's [`BudgetRegistry`].
    Budget,
    /// A classifier in the executor's [`ClassifierRegistry`].
    Classifier,
    /// A hedge trigger (`fixed_delay`, `p50`..`p99.9`,
    /// `max_extra_load:N%`).
    Trigger,
}

impl NameKind {
    /// `budget`, `classifier` or `trigger`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Budget => "budget",
            Self::Classifier => "classifier",
            Self::Trigger => "trigger",
        }
    }
}

/// A policy names a budget, classifier or hedge trigger the executor does
/// not have.
///
/// ```
/// use recourse::{Executor, Policy, StaticProvider};
///
/// let policy = Policy::retries(3).budget("retires")?; // a typo
/// let provider = StaticProvider::builder().policy("svc.Get", policy)?.build();
/// let err = Executor::builder().provider(provider).try_build().unwrap_err();
/// assert_eq!(err.key, "svc.Get");
/// assert_eq!(err.field, "retry.budget.name");
/// assert_eq!(err.name, "retires");
/// assert_eq!(
///     err.to_string(),
///     "policy `svc.Get`: field `retry.budget.name` names budget `retires`, \
///      which the executor does not have (known: none)"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    /// The policy's key (`default` for a provider's default policy).
    pub key: String,
    /// The dotted path of the field, e.g. `retry.budget.name`.
    pub field: &'static str,
    /// The name the field gives.
    pub name: String,
    /// What the field should name.
    pub kind: NameKind,
    /// The names the executor has of that kind (for triggers, the forms
    /// it accepts).
    pub known: Vec<String>,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy `{}`: field `{}` names {} `{}`, which the executor does not have (known: ",
            self.key,
            self.field,
            self.kind.as_str(),
            self.name
        )?;
        if self.known.is_empty() {
            f.write_str("none")?;
        } else {
            f.write_str(&self.known.join(", "))?;
        }
        f.write_str(")")
    }
}

impl core::error::Error for UnknownName {}

/// The trigger forms [`Trigger::parse`] accepts, for messages.
const TRIGGER_FORMS: [&str; 3] = ["fixed_delay", "p50..p99.9", "max_extra_load:N%"];

/// Checks every name `policy` (under `key`) refers to. Names in a hedge
/// section are checked only when hedging is enabled; an empty name (the
/// default budget, classifier or trigger) is always known.
pub(crate) fn check(
    key: &str,
    policy: &Policy,
    budgets: &BudgetRegistry,
    classifiers: &ClassifierRegistry,
) -> Result<(), UnknownName> {
    let unknown = |field, name: &str, kind, known: Vec<String>| UnknownName {
        key: key.to_owned(),
        field,
        name: name.to_owned(),
        kind,
        known,
    };
    let budget_names = || budgets.names().map(str::to_owned).collect();
    let budget = policy.retry.budget.name.as_str();
    if !budget.is_empty() && budgets.get(budget).is_none() {
        return Err(unknown(
            "retry.budget.name",
            budget,
            NameKind::Budget,
            budget_names(),
        ));
    }
    let classifier = policy.retry.classifier.as_str();
    if !classifier.is_empty() && !classifiers.contains(classifier) {
        return Err(unknown(
            "retry.classifier",
            classifier,
            NameKind::Classifier,
            classifiers.names().map(str::to_owned).collect(),
        ));
    }
    if !policy.hedge.enabled {
        return Ok(());
    }
    let budget = policy.hedge.budget.name.as_str();
    if !budget.is_empty() && budgets.get(budget).is_none() {
        return Err(unknown(
            "hedge.budget.name",
            budget,
            NameKind::Budget,
            budget_names(),
        ));
    }
    let trigger = policy.hedge.trigger.as_str();
    if Trigger::parse(trigger).is_none() {
        return Err(unknown(
            "hedge.trigger",
            trigger,
            NameKind::Trigger,
            TRIGGER_FORMS.iter().map(|s| (*s).to_owned()).collect(),
        ));
    }
    Ok(())
}
