//! Classifiers in the executor: chosen by policy through a registry, and
//! panic containment.
//!
//! Why contain: a classifier is user code run on every attempt; a bug in it
//! (an index out of range on an odd response) must not take the caller's
//! task down. With containment on (the executor's default), a panicking
//! classifier makes the attempt's outcome abort `panic_in_classifier`, the
//! call stops there, and the panic message is kept in the timeline attribute
//! `panic_in_classifier`.

use crate::report::PanicMessage;
use core::any::Any;
use core::fmt;
use core::marker::PhantomData;
use core::panic::AssertUnwindSafe;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use recourse_core::policy::Policy;
use recourse_core::{Classifier, DefaultClassifier, Outcome};

use crate::timeline::Timeline;

/// Reason (and timeline attribute): the classifier panicked.
pub const PANIC_IN_CLASSIFIER: &str = "panic_in_classifier";

/// A classifier whose panics become an abort outcome.
pub(crate) struct Contained<'a, C> {
    pub(crate) inner: C,
    pub(crate) contain: bool,
    /// The first panic's message, for the call's observer path: the
    /// call's report tells the observer and the timeline when the attempt's
    /// record (reason `panic_in_classifier`) arrives.
    pub(crate) panicked: &'a OnceLock<PanicMessage>,
}

impl<T, E, C: Classifier<T, E>> Classifier<T, E> for Contained<'_, C> {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        if !self.contain {
            return self.inner.classify(result);
        }
        self.classify_contained(result)
    }
}

impl<'a, C> Contained<'a, C> {
    /// `inner`, contained when `contain` is on and it may panic at all.
    #[inline]
    pub(crate) fn new<T, E>(inner: C, contain: bool, panicked: &'a OnceLock<PanicMessage>) -> Self
    where
        C: CallClassifier<T, E>,
    {
        Self {
            contain: contain && inner.may_panic(),
            inner,
            panicked,
        }
    }
}

impl<C> Contained<'_, C> {
    /// `classify` under `catch_unwind` (out of line: a call whose
    /// classifier cannot panic does not carry it).
    #[inline(never)]
    fn classify_contained<T, E>(&self, result: &Result<T, E>) -> Outcome
    where
        C: Classifier<T, E>,
    {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.classify(result))) {
            Ok(outcome) => outcome,
            Err(payload) => {
                let _ = self.panicked.set(Box::new(panic_message(&*payload)));
                Outcome::abort(PANIC_IN_CLASSIFIER)
            }
        }
    }
}

/// A classifier a call runs, and whether it may panic at all: one that
/// cannot (the default classifier) runs without a `catch_unwind` around it
/// (issue 16), one that may is contained as [`Contained`] says.
pub(crate) trait CallClassifier<T, E>: Classifier<T, E> {
    /// Whether `classify` may panic. Default: it may.
    fn may_panic(&self) -> bool {
        true
    }
}

impl<T: 'static, E: 'static> CallClassifier<T, E> for ByPolicy<'_> {
    /// Only a registered classifier is user code.
    #[inline]
    fn may_panic(&self) -> bool {
        matches!(self, Self::Named(_))
    }
}

impl<T, E> CallClassifier<crate::contract::Accepted<T>, crate::contract::Split<T, E>>
    for crate::contract::Carried
{
}

/// A classifier the caller gave: user code, which may panic.
#[cfg(any(feature = "tower", feature = "reqwest", feature = "tonic"))]
pub(crate) struct Given<C>(pub(crate) C);

#[cfg(any(feature = "tower", feature = "reqwest", feature = "tonic"))]
impl<T, E, C: Classifier<T, E>> Classifier<T, E> for Given<C> {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self.0.classify(result)
    }
}

#[cfg(any(feature = "tower", feature = "reqwest", feature = "tonic"))]
impl<T, E, C: Classifier<T, E>> CallClassifier<T, E> for Given<C> {}

/// A panic payload's message (`&str` or `String`), for timelines.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Reason (and `classifier_error` attribute): the classifier the policy names
/// was registered for other result types than the call's.
pub const CLASSIFIER_TYPE_MISMATCH: &str = "classifier_type_mismatch";
/// `classifier_error` attribute: the policy names a classifier the registry
/// does not have; the call used the default classifier.
pub const CLASSIFIER_NOT_FOUND: &str = "classifier_not_found";

/// A classifier for results of one type, behind a type-erased interface.
pub(crate) trait AnyClassifier: Send + Sync {
    /// The outcome, or `None` when `result` is not of the registered type.
    fn classify_any(&self, result: &dyn Any) -> Option<Outcome>;
}

struct Typed<C, T, E>(C, PhantomData<fn(&Result<T, E>)>);

impl<C, T, E> AnyClassifier for Typed<C, T, E>
where
    C: Classifier<T, E> + Send + Sync,
    T: 'static,
    E: 'static,
{
    fn classify_any(&self, result: &dyn Any) -> Option<Outcome> {
        result
            .downcast_ref::<Result<T, E>>()
            .map(|r| self.0.classify(r))
    }
}

/// Classifiers by name, for policies that choose one (`retry.classifier`).
///
/// A classifier is registered for one result type `Result<T, E>`. A call
/// whose policy names it and whose operation returns that type uses it; one
/// that returns another type gets the non-retryable outcome
/// `classifier_type_mismatch` (a configuration error, never a panic); a name
/// the registry does not have falls back to the default classifier, with
/// the timeline attributes `classifier_name` and
/// `classifier_error=classifier_not_found`. A classifier passed to
/// [`Executor::call_classified`](crate::Executor::call_classified) wins over
/// the policy's.
///
/// ```
/// use recourse::{ClassifierRegistry, Outcome};
///
/// let classifiers = ClassifierRegistry::new().with("status", |r: &Result<u16, String>| match r {
///     Ok(200) => Outcome::SUCCESS,
///     Ok(503) | Err(_) => Outcome::retryable("unavailable"),
///     Ok(_) => Outcome::non_retryable("bad_status"),
/// });
/// assert!(classifiers.contains("status"));
/// ```
#[derive(Clone, Default)]
pub struct ClassifierRegistry {
    classifiers: BTreeMap<String, Arc<dyn AnyClassifier>>,
    /// What a policy naming a classifier this registry does not have gets;
    /// `None`: the executor's default ([`MissingClassifierMode::Fallback`]).
    missing: Option<MissingClassifierMode>,
}

impl fmt::Debug for ClassifierRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifierRegistry")
            .field("names", &self.classifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ClassifierRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// This registry with `classifier` under `name`, for results of type
    /// `Result<T, E>`.
    pub fn with<T, E, C>(mut self, name: impl Into<String>, classifier: C) -> Self
    where
        T: 'static,
        E: 'static,
        C: Classifier<T, E> + Send + Sync + 'static,
    {
        self.register(name, classifier);
        self
    }

    /// Adds `classifier` under `name` (replacing one of that name).
    pub fn register<T, E, C>(&mut self, name: impl Into<String>, classifier: C)
    where
        T: 'static,
        E: 'static,
        C: Classifier<T, E> + Send + Sync + 'static,
    {
        let typed: Typed<C, T, E> = Typed(classifier, PhantomData);
        self.classifiers.insert(name.into(), Arc::new(typed));
    }

    /// This registry with `mode` deciding a call whose policy names a
    /// classifier it does not have (the extension and its missing-mode
    /// together; [`ExecutorBuilder::classifiers`](crate::ExecutorBuilder::classifiers)
    /// takes both).
    #[must_use]
    pub fn on_missing(mut self, mode: MissingClassifierMode) -> Self {
        self.missing = Some(mode);
        self
    }

    /// The missing-classifier mode set with [`ClassifierRegistry::on_missing`].
    pub fn missing_mode(&self) -> Option<MissingClassifierMode> {
        self.missing
    }

    /// The registered names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.classifiers.keys().map(String::as_str)
    }

    /// Whether a classifier is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.classifiers.contains_key(name)
    }

    /// The classifier for a call under `policy`, noting a fallback in the
    /// timeline.
    #[inline]
    pub(crate) fn for_policy(
        &self,
        policy: &Policy,
        mode: MissingClassifierMode,
        timeline: Option<&mut Timeline>,
    ) -> ByPolicy<'_> {
        if policy.retry.classifier.is_empty() {
            return ByPolicy::Default;
        }
        self.named(policy, mode, timeline)
    }

    /// [`ClassifierRegistry::for_policy`] for a policy that names one.
    #[inline(never)]
    fn named(
        &self,
        policy: &Policy,
        mode: MissingClassifierMode,
        timeline: Option<&mut Timeline>,
    ) -> ByPolicy<'_> {
        let name = policy.retry.classifier.as_str();
        let named = self.classifiers.get(name).map(|c| &**c);
        if let Some(t) = timeline {
            t.attributes.insert("classifier_name", name.to_owned());
            if named.is_none() {
                t.attributes
                    .insert("classifier_error", CLASSIFIER_NOT_FOUND.to_owned());
                t.attributes
                    .insert("missing_classifier_mode", mode.as_str().to_owned());
            }
        }
        match (named, mode) {
            (Some(c), _) => ByPolicy::Named(c),
            (None, MissingClassifierMode::Fallback) => ByPolicy::Default,
            (None, MissingClassifierMode::Deny) => ByPolicy::NotFound,
        }
    }
}

/// What a call does when its policy names a classifier the registry does
/// not have.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MissingClassifierMode {
    /// Use the default classifier (`Err` retryable). The default.
    #[default]
    Fallback,
    /// Fail closed: every failed attempt's outcome is non-retryable
    /// `classifier_not_found`, so the operation runs once and is not retried
    /// on a guess.
    Deny,
}

impl MissingClassifierMode {
    /// `fallback` or `deny`, as in the timeline attribute
    /// `missing_classifier_mode`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fallback => "fallback",
            Self::Deny => "deny",
        }
    }
}

/// The policy's classifier, the default one, or none to be had.
pub(crate) enum ByPolicy<'a> {
    Default,
    Named(&'a dyn AnyClassifier),
    NotFound,
}

impl<T: 'static, E: 'static> Classifier<T, E> for ByPolicy<'_> {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        // The default classifier inline, the others out of line (merged,
        // the arms were computed alike and picked branch-free: about 25
        // instructions per attempt on the usual path).
        if let Self::Default = self {
            return DefaultClassifier.classify(result);
        }
        self.classify_other(result)
    }
}

impl ByPolicy<'_> {
    #[inline(never)]
    fn classify_other<T: 'static, E: 'static>(&self, result: &Result<T, E>) -> Outcome {
        match self {
            Self::Default => DefaultClassifier.classify(result),
            Self::Named(c) => c
                .classify_any(result)
                .unwrap_or(Outcome::non_retryable(CLASSIFIER_TYPE_MISMATCH)),
            Self::NotFound if result.is_ok() => Outcome::SUCCESS,
            Self::NotFound => Outcome::non_retryable(CLASSIFIER_NOT_FOUND),
        }
    }
}
