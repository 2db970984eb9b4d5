//! The executor: runs calls under the policy its provider gives for each
//! key, on the core driver, and reports them to its observer.
//!
//! What one call does, in order:
//!
//! 1. takes a fresh timer from the executor's [`TimerSource`] and a fresh
//!    RNG (seeded per call from the executor's seed, when it has one);
//! 2. asks the [`PolicyProvider`] for the key's policy — exactly once — and,
//!    when it has none, applies the [`MissingPolicyMode`];
//! 3. runs [`recourse_core::call`] under that policy with the call's
//!    classifier, forwarding its events to the [`Observer`] (and to the
//!    [`Timeline`], when one was asked for).
//!
//! No retry logic lives here: every decision is the core machine's. A call
//! without a timeline on an executor without an observer allocates nothing
//! (it clones the policy's `Arc`).

use core::fmt;
use core::future::{Future, IntoFuture};
use core::panic::AssertUnwindSafe;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::task::{Context, Poll};
use std::sync::Arc;
use std::time::SystemTime;

use recourse_core::amplification::{upstream_effect, UpstreamEffect};
use recourse_core::driver::derive_seed;
use recourse_core::policy::{Limits, Normalized, Policy};
use recourse_core::{AttemptInfo, Classifier, Error, PolicyKey, Timer};

use recourse_core::policy::UpstreamRetry;
use recourse_core::policy_gate::PolicyGate;

use crate::breakers::Breakers;
use crate::budget::{BudgetRegistry, MissingBudgetMode};
use crate::builder::ExecutorBuilder;
use crate::classify::{CallClassifier, ClassifierRegistry, Contained, MissingClassifierMode};
use crate::contract::{split_op, Accepted, Carried, Failure, Split};
use crate::gate::{CallGate, ExecParts};
use crate::hedging::{HedgePlan, MissingTriggerMode};
use crate::key_cache::{self, CallKey, Held, Kept, KeyArg, Resolved};
use crate::latency::LatencyTrackers;
use crate::missing_policy::{Fallbacks, MissingPolicyMode, Resolution};
use crate::names::{self, UnknownName};
use crate::observer::Observer;
use crate::provider::PolicyProvider;
use crate::report::{CallPanics, Report};
use crate::timeline::Timeline;
use crate::timer::{DefaultTimer, TimerSource};
use crate::upstream::{UPSTREAM_ATTEMPTS, UPSTREAM_EFFECT};

/// Runs calls with retries, backoff and timeouts under per-key policies.
///
/// Build one with [`Executor::builder`]; share it (it is `Send + Sync`) by
/// reference or in an `Arc`. Every call method takes the policy key (a
/// low-cardinality name such as `"user-service.GetUser"`) and the operation,
/// a closure called once per attempt with the attempt's [`AttemptInfo`]:
///
/// | method | classifier | returns |
/// |---|---|---|
/// | [`call`](Self::call) | the policy's (default: `Err` is retryable) | `Result<T, Error<E>>` |
/// | [`call_with_timeline`](Self::call_with_timeline) | the policy's | `(Result<T, Error<E>>, Timeline)` |
/// | [`call_classified`](Self::call_classified) | yours | `Result<T, Error<Failure<T, E>>>` |
/// | [`call_classified_with_timeline`](Self::call_classified_with_timeline) | yours | `(Result<T, Error<Failure<T, E>>>, Timeline)` |
/// | `call_http` (feature `http`) | `HttpClassifier` | `Result<Response<B>, Error<HttpFailure<B, E>>>` |
/// | `call_http_with_timeline` | `HttpClassifier` | `(…, Timeline)` |
///
/// Every method follows the crate's [result contract](crate#the-result-contract):
/// the caller and the observer hear one verdict, `Ok` means the classifier
/// accepted the value, and the last value or error is carried wherever the
/// error has room for it.
///
/// Dropping a call's future cancels it: the attempt in flight is dropped and
/// the observer hears `on_failure` with the reason `cancelled`.
///
/// ```
/// use recourse::{Executor, Policy, StaticProvider};
///
/// let exec = Executor::builder()
///     .provider(StaticProvider::builder().policy("svc.Get", Policy::retries(3))?.build())
///     .try_build()?;
///
/// let mut failures = 2;
/// let value = async_io::block_on(exec.call("svc.Get", |_attempt| {
///     let fail = failures > 0;
///     failures -= 1;
///     async move { if fail { Err("flaky") } else { Ok(42) } }
/// }));
/// assert_eq!(value, Ok(42));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Executor<S = DefaultTimer> {
    pub(crate) provider: Box<dyn PolicyProvider>,
    pub(crate) observer: Option<Box<dyn Observer>>,
    pub(crate) timer: S,
    pub(crate) mode: MissingPolicyMode,
    pub(crate) seed: Option<u64>,
    pub(crate) options: Limits,
    pub(crate) fallbacks: Fallbacks,
    /// Calls started on an executor with a seed: call `n`'s RNG is derived
    /// from the seed and `n`. Not counted without a seed (a shared count
    /// written by every call would slow down calls made on several threads
    /// at once).
    pub(crate) calls: AtomicU64,
    pub(crate) budgets: BudgetRegistry,
    pub(crate) missing_budget: MissingBudgetMode,
    pub(crate) contain_panics: bool,
    pub(crate) breakers: Breakers,
    pub(crate) observer_panics: std::sync::Arc<AtomicU64>,
    /// Contained panics in budgets' `settle`.
    pub(crate) settle_panics: AtomicU64,
    pub(crate) classifiers: ClassifierRegistry,
    pub(crate) missing_classifier: MissingClassifierMode,
    pub(crate) latency: LatencyTrackers,
    pub(crate) missing_trigger: MissingTriggerMode,
    /// Calls that ran under a fallback policy instead of their key's own
    /// (counted per thread: see [`crate::sharded`]).
    pub(crate) policy_fallbacks: crate::sharded::Counter,
    /// Tells this executor's entries in the per-thread key cache from
    /// other executors' ([`key_cache`](crate::key_cache)).
    pub(crate) id: u64,
}

impl Executor {
    /// A builder with the defaults: no policies (so every call takes the
    /// fallback policy), no observer, [`DefaultTimer`], mode
    /// [`MissingPolicyMode::Fallback`], RNGs from entropy, retry-after hints
    /// capped at 60 s.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::new()
    }

    /// An executor with the defaults of [`Executor::builder`].
    pub fn new() -> Self {
        Self::builder().build()
    }
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> fmt::Debug for Executor<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("missing_policy_mode", &self.mode)
            .field("seed", &self.seed)
            .field("options", &self.options)
            .field("has_observer", &self.observer.is_some())
            .field("seeded_calls", &self.calls.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S: TimerSource> Executor<S> {
    /// What a call does when the provider has no policy for its key.
    pub fn missing_policy_mode(&self) -> MissingPolicyMode {
        self.mode
    }

    /// Observer panics contained so far (a panicking observer never takes a
    /// call down; each contained panic is counted here, with one observer or
    /// several).
    pub fn observer_panics(&self) -> u64 {
        self.observer_panics.load(Ordering::Relaxed)
    }

    /// Calls in which a budget's `settle` panicked, contained (the call's result
    /// stands; its timeline carries the attribute
    /// [`PANIC_IN_BUDGET_SETTLE`](crate::gate::PANIC_IN_BUDGET_SETTLE)).
    pub fn budget_settle_panics(&self) -> u64 {
        self.settle_panics.load(Ordering::Relaxed)
    }

    /// Calls that ran under a fallback instead of their key's own policy:
    /// the missing-policy mode's (`fallback` or `allow`) or the provider's
    /// default policy. Each such call's timeline says so too
    /// (`policy_fallback`, with `policy_source` and `missing_policy_mode`).
    pub fn policy_fallbacks(&self) -> u64 {
        self.policy_fallbacks.sum()
    }

    /// Checks that every budget, classifier and hedge trigger `policy`
    /// names exists in this executor, e.g. before a control plane hands a
    /// new policy for `key` to the provider.
    ///
    /// # Errors
    ///
    /// The first name the executor does not have, with `key`, its field
    /// and the names it has ([`UnknownName`]).
    pub fn check_policy(&self, key: &str, policy: &Policy) -> Result<(), UnknownName> {
        names::check(key, policy, &self.budgets, &self.classifiers)
    }

    /// The executor's policy provider.
    pub fn provider(&self) -> &dyn PolicyProvider {
        &*self.provider
    }

    /// Calls `op` under the policy for `key` with the default classifier
    /// (`Ok` succeeds, every `Err` is retryable).
    ///
    /// # Errors
    ///
    /// The [`Error`] that ended the call: the operation's last error when
    /// retrying would not help or retries ran out (also when a budget
    /// refused the retry after it), a deadline, cancellation,
    /// or [`Error::NoPolicy`] in [`MissingPolicyMode::Deny`]. The default
    /// classifier accepts every `Ok`; when the policy names a classifier
    /// (`retry.classifier`) that rejects the last `Ok` value, the call ends
    /// [`Error::Rejected`] with the cause the observer hears (use
    /// [`Executor::call_classified`] to get the value back).
    ///
    /// The future returned is `run`'s own (no async frame of its own around
    /// it: one state machine, and `key` and `op` held once).
    // Like an `async fn`, it does nothing until first polled.
    pub fn call<'s, 'k, T, E, Op, Fut>(
        &'s self,
        key: &'k str,
        op: Op,
    ) -> impl Future<Output = Result<T, Error<E>>> + use<'s, 'k, S, T, E, Op, Fut>
    where
        T: 'static,
        E: 'static,
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run(
            key,
            |p, t| self.classifiers.for_policy(p, self.missing_classifier, t),
            op,
            None,
            true,
        )
    }

    /// [`Executor::call`] with a [`CallKey`], which keeps its key's
    /// resolution itself: the call skips the per-call lookup of its key
    /// (no hashing, no per-thread cache, no reference count), and runs
    /// under the provider's current policy all the same (see [`CallKey`]).
    ///
    /// ```
    /// use recourse::{CallKey, Executor};
    ///
    /// static RESERVE: CallKey = CallKey::new("inventory.Reserve");
    ///
    /// let exec = Executor::new();
    /// let value = async_io::block_on(exec.call_key(&RESERVE, |_| async { Ok::<_, ()>("ok") }));
    /// assert_eq!(value, Ok("ok"));
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`Executor::call`].
    pub fn call_key<'s, 'k, T, E, Op, Fut>(
        &'s self,
        key: &'k CallKey,
        op: Op,
    ) -> impl Future<Output = Result<T, Error<E>>> + use<'s, 'k, S, T, E, Op, Fut>
    where
        T: 'static,
        E: 'static,
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run(
            key,
            |p, t| self.classifiers.for_policy(p, self.missing_classifier, t),
            op,
            None,
            true,
        )
    }

    /// Like [`Executor::call`], and also returns the call's [`Timeline`].
    pub async fn call_with_timeline<T, E, Op, Fut>(
        &self,
        key: &str,
        op: Op,
    ) -> (Result<T, Error<E>>, Timeline)
    where
        T: 'static,
        E: 'static,
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.with_timeline(
            key,
            |p, t| self.classifiers.for_policy(p, self.missing_classifier, t),
            op,
        )
        .await
    }

    /// Like [`Executor::call`], with `classifier` deciding what each
    /// attempt's result means (a closure `Fn(&Result<T, E>) -> Outcome` is a
    /// classifier).
    ///
    /// `Ok` means the classifier accepted the value. A call that ends on a
    /// value it rejected is an `Err` carrying that value as
    /// [`Failure::Rejected`](crate::Failure) — whatever stopped the call:
    /// retries exhausted, a non-retryable or abort verdict, a budget or the
    /// breaker refusing the retry, the deadline — and the operation's errors
    /// are [`Failure::Error`](crate::Failure). The observer hears the same
    /// verdict. The classifier runs once per attempt.
    ///
    /// # Errors
    ///
    /// As for [`Executor::call`], with the last rejected value or error
    /// inside.
    pub async fn call_classified<T, E, C, Op, Fut>(
        &self,
        key: &str,
        classifier: C,
        op: Op,
    ) -> Result<T, Error<Failure<T, E>>>
    where
        C: Classifier<T, E>,
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let op = split_op(&classifier, op);
        let result = self.run(key, |_, _| Carried, op, None, true).await;
        unsplit(result)
    }

    /// Like [`Executor::call_classified`], and also returns the call's
    /// [`Timeline`].
    pub async fn call_classified_with_timeline<T, E, C, Op, Fut>(
        &self,
        key: &str,
        classifier: C,
        op: Op,
    ) -> (Result<T, Error<Failure<T, E>>>, Timeline)
    where
        C: Classifier<T, E>,
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let op = split_op(&classifier, op);
        let (result, timeline) = self.with_timeline(key, |_, _| Carried, op).await;
        (unsplit(result), timeline)
    }

    /// [`Executor::call_classified`] for the integrations (tower, reqwest,
    /// tonic), whose protocols return a response the classifier rejected as
    /// the response (a `503` is a reqwest `Response`), as the middleware
    /// conventions expect; the observer and the timeline say the call
    /// failed.
    #[cfg(any(feature = "tower", feature = "reqwest", feature = "tonic"))]
    pub(crate) async fn call_classified_in<T, E, C, Op, Fut>(
        &self,
        key: &str,
        classifier: C,
        op: Op,
    ) -> Result<T, Error<E>>
    where
        C: Classifier<T, E>,
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // The integrations' protocols return a rejected response as their
        // response (a `503` is a reqwest `Response`, a tower `Response`):
        // the observer and the timeline say the call failed.
        let classifier = crate::classify::Given(classifier);
        self.run(key, |_, _| classifier, op, None, false).await
    }

    /// Calls `op` (an HTTP request) under the policy for `key`, classified
    /// by an [`HttpClassifier`](crate::http::HttpClassifier) for `method`:
    /// idempotent methods retry transport errors, 5xx, 408 and 429 (honouring
    /// `Retry-After`); non-idempotent ones do so only when the policy sets
    /// `retry.retry_non_idempotent`.
    ///
    /// Only a `2xx` response is `Ok`. A call that ends on any other response
    /// is an `Err` carrying it as [`HttpFailure::Response`](crate::http::HttpFailure)
    /// (retries exhausted on a `503`, a budget refusing the retry after it,
    /// a `Retry-After` past the deadline, a `404`); a transport error is
    /// [`HttpFailure::Transport`](crate::http::HttpFailure). The observer
    /// hears the same verdict.
    ///
    /// # Errors
    ///
    /// As for [`Executor::call`], with the last response or transport error
    /// inside.
    #[cfg(feature = "http")]
    pub async fn call_http<B, E, Op, Fut>(
        &self,
        key: &str,
        method: &http::Method,
        op: Op,
    ) -> Result<http::Response<B>, Error<crate::http::HttpFailure<B, E>>>
    where
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<http::Response<B>, E>>,
    {
        let (classifier, op) = http_parts(method, op);
        self.run(key, classifier, op, None, true).await
    }

    /// Like [`Executor::call_http`], and also returns the call's
    /// [`Timeline`].
    #[cfg(feature = "http")]
    pub async fn call_http_with_timeline<B, E, Op, Fut>(
        &self,
        key: &str,
        method: &http::Method,
        op: Op,
    ) -> (
        Result<http::Response<B>, Error<crate::http::HttpFailure<B, E>>>,
        Timeline,
    )
    where
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<http::Response<B>, E>>,
    {
        let (classifier, op) = http_parts(method, op);
        self.with_timeline(key, classifier, op).await
    }

    async fn with_timeline<T, E, C, Op, Fut>(
        &self,
        key: &str,
        classifier: impl FnOnce(&Policy, Option<&mut Timeline>) -> C,
        op: Op,
    ) -> (Result<T, Error<E>>, Timeline)
    where
        C: CallClassifier<T, E>,
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let display = PolicyKey::parse(key).to_string();
        let mut timeline = Timeline::new(display, recourse_core::Instant::ZERO, SystemTime::now());
        let result = self
            .run(key, classifier, op, Some(&mut timeline), true)
            .await;
        timeline.conclude(&result);
        (result, timeline)
    }

    /// The one call path behind every method. With `rejected_is_error`, a
    /// call the observer heard fail never returns `Ok` (the result
    /// contract); the integrations pass `false`.
    async fn run<'k, K: KeyArg<'k>, T, E, C, Op, Fut>(
        &self,
        key: K,
        classifier: impl FnOnce(&Policy, Option<&mut Timeline>) -> C,
        op: Op,
        timeline: Option<&mut Timeline>,
        rejected_is_error: bool,
    ) -> Result<T, Error<E>>
    where
        C: CallClassifier<T, E>,
        Op: FnMut(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let timer = self.timer.timer();
        let rng = self.next_rng();
        let Prepared {
            key,
            kept,
            plan,
            classifier,
            policy_source,
            missing_policy_mode,
            upstream,
            timeline,
        } = self.prepare(key, classifier, timeline);
        let (Some(policy), Some(classifier)) = (kept.policy(), classifier) else {
            Report::new(self, timeline, policy_source, missing_policy_mode)
                .denied(key, timer.now());
            return Err(Error::NoPolicy);
        };
        // Neither the timeline nor the plan is borrowed here (the closure
        // borrows a copy of the plan): a local borrowed before the
        // call's `await` is kept in the call's future across it, with the
        // flags of its moves (issue 16: the report and the plan, 44 bytes
        // and 7 flags, were).
        // (`inspect` would give the timeline behind a shared reference.)
        #[allow(clippy::manual_inspect)]
        let timeline = timeline.map(move |t| {
            plan.write_attributes(&policy.policy, self.missing_trigger, &mut t.attributes);
            t
        });
        let call_panics = CallPanics {
            // Decided now, so that no flag of its own lives across the
            // call's awaits (the call future does not grow).
            keep_rejected: !rejected_is_error,
            ..CallPanics::default()
        };
        let parts = ExecParts {
            exec: self,
            kept: &kept,
            call_panics: &call_panics,
            offset: None,
            upstream,
        };
        let report = Report {
            call_panics: Some(&call_panics),
            ..Report::new(self, timeline, policy_source, missing_policy_mode)
        };
        // Every attempt's future is watched for a panic: the call's end is
        // then told as `panic_in_operation`, and with containment on the
        // caller gets `Error::OperationPanicked` instead of the unwind.
        let mut op = op;
        let watch = &call_panics.operation;
        let op = move |info: AttemptInfo| PanicWatch {
            inner: op(info),
            panicked: watch,
        };
        // A classifier that cannot panic runs bare (decided inside `new`:
        // asked here, the classifier took a second place in the call's
        // future, 24 bytes).
        let classifier = Contained::new(classifier, self.contain_panics, &call_panics.classifier);
        // The builder is made inside each arm, the gate last of all, right
        // where its call future is made: a builder made once before the
        // arms lived in a stack slot of its own, and the gate's inline
        // reservation slots (uninitialized) were copied from it into every
        // call future (272 bytes, a `memcpy` per call).
        // The gate holds as many reservations inline as the call has
        // attempts in flight at once (`$held`): one without hedges.
        macro_rules! builder {
            ($held:expr) => {
                recourse_core::call(key, &policy.policy, timer, op)
                    .classifier(classifier)
                    .observer(report)
                    .rng(rng)
                    .limits(self.options)
                    .gate::<CallGate<'_, S, { $held }>>(PolicyGate::with_needs(
                        key,
                        &policy.policy,
                        plan.trigger,
                        plan.needs,
                        parts,
                    ))
            };
        }
        // A call with one hedge holds its two attempts in place; one with
        // more holds its attempts' futures in one heap block (sized for the
        // default ceiling, or for the lifted one), so that every call's
        // future stays small.
        let watched = self.contain_panics.then_some(&call_panics.operation);
        let result = match plan.hedges {
            0 => contained(watched, builder!(1)).await,
            // One hedge (the usual): its two attempts held in place, no
            // allocation.
            1 => contained(watched, builder!(2).slots::<2>()).await,
            2..=3 => contained(watched, Box::pin(builder!(4).slots::<4>().into_future())).await,
            _ => {
                contained(
                    watched,
                    Box::pin(
                        builder!(crate::gate::INLINE_HELD)
                            .slots::<{ 1 + Limits::MAX_HEDGES_CEILING as usize }>()
                            .into_future(),
                    ),
                )
                .await
            }
        };
        // The result contract: a call the observer heard fail is an `Err`.
        // Only a value the classifier rejected reaches here as `Ok` (a
        // policy-named classifier under `call`; the methods taking a
        // classifier carry the value in their error instead).
        // (The cause is read only for an `Ok`: the usual `Err` and the
        // integrations' calls read nothing.)
        let result = match result {
            Ok(value) if !call_panics.keep_rejected => match call_panics.failure() {
                Some(cause) => Err(Error::Rejected { cause }),
                None => Ok(value),
            },
            result => result,
        };
        kept.release();
        result
    }

    /// What a call resolves before it starts, done outside the call's
    /// future so that only what it keeps ([`Kept`]) is held across its
    /// awaits.
    #[inline(always)]
    fn prepare<'k, 't, C>(
        &self,
        key: impl KeyArg<'k>,
        classifier: impl FnOnce(&Policy, Option<&mut Timeline>) -> C,
        timeline: Option<&'t mut Timeline>,
    ) -> Prepared<'k, 't, C> {
        // Read before the provider is asked: an answer cached under this
        // generation is at least as new as it (see `key_cache`).
        // A panicking provider is contained (then nothing is cached).
        let generation = std::panic::catch_unwind(AssertUnwindSafe(|| self.provider.generation()))
            .ok()
            .flatten();
        // A `CallKey`'s own answer: borrowed, no lookup.
        if let (Some(handle), Some(g)) = (key.handle(), generation) {
            if let Some((key, answer)) = handle.answer(self.id, g) {
                return self.prepared(key, Held::Borrowed(answer), classifier, timeline);
            }
            if handle.is_unresolved() {
                let (key, held) = self.resolve_handle(handle, g);
                return self.prepared(key, held, classifier, timeline);
            }
        }
        let key = key.text();
        // A hit (the usual call) apart from a miss: its answer is known to
        // be the cache's, and no `Held` is moved.
        if let Some((key, answer)) = generation.and_then(|g| key_cache::hit(self.id, key, g)) {
            return self.prepared(key, Held::Cached(answer), classifier, timeline);
        }
        let (key, resolved) =
            key_cache::resolve_and_keep(self.id, key, generation, |key| self.resolve(key));
        self.prepared(key, resolved, classifier, timeline)
    }

    /// A [`CallKey`]'s first call: asks the provider and keeps the answer
    /// in the handle (when it may be kept: else it is this call's own).
    #[cold]
    #[inline(never)]
    fn resolve_handle<'k>(
        &self,
        handle: &'k CallKey,
        generation: u64,
    ) -> (PolicyKey<'k>, Held<'k>) {
        let parsed = PolicyKey::parse(handle.as_str());
        let resolved = self.resolve(parsed);
        match handle.keep(self.id, generation, parsed, resolved) {
            Ok(()) => match handle.answer(self.id, generation) {
                Some((key, answer)) => (key, Held::Borrowed(answer)),
                // Only when a store evicted the key's state since it
                // was found: ask again, for this call alone.
                None => (parsed, Held::Own(self.resolve(parsed))),
            },
            Err(own) => (parsed, Held::Own(own)),
        }
    }

    /// What the provider answers for `key`, with its hedge plan and its
    /// per-key state (asked once per key and provider generation).
    fn resolve(&self, key: PolicyKey<'_>) -> Resolved {
        let resolution = Resolution::resolve(&*self.provider, key, self.mode, &self.fallbacks);
        let Some(policy) = resolution.policy.as_deref() else {
            // No policy: not a fallback either.
            return Resolved::with_state(resolution, HedgePlan::OFF, None, None, None);
        };
        let policy = &policy.policy;
        let plan = HedgePlan::resolve(
            policy,
            self.options.max_hedges_ceiling,
            self.missing_trigger,
        );
        // The key's state, found once here and kept with its answer.
        let breaker = policy
            .circuit
            .enabled
            .then(|| self.breakers.entry(key, &policy.circuit));
        let wants_samples = plan.trigger.is_some_and(|t| t.quantile().is_some())
            || policy.retry.deadline_quantile_permille > 0;
        let latency = wants_samples.then(|| self.latency.entry(key));
        let ledger = policy
            .amplification
            .is_enabled()
            .then(|| self.budgets.amplification_ledgers().entry(key));
        let upstream_matters = policy.amplification.upstream_retry != UpstreamRetry::Always;
        Resolved {
            fallback: resolution.is_fallback(),
            upstream_matters,
            ..Resolved::with_state(resolution, plan, breaker, latency, ledger)
        }
    }

    /// The rest of [`Executor::prepare`], once the key's answer is found.
    #[inline(always)]
    fn prepared<'k, 't, C>(
        &self,
        key: PolicyKey<'k>,
        resolved: Held<'k>,
        classifier: impl FnOnce(&Policy, Option<&mut Timeline>) -> C,
        mut timeline: Option<&'t mut Timeline>,
    ) -> Prepared<'k, 't, C> {
        // One look through the answer's `Held` (each is a `match`).
        let answer: &Resolved = &resolved;
        let mut plan = answer.plan;
        let resolution = &answer.resolution;
        if answer.fallback {
            self.policy_fallbacks.increment();
        }
        // The usual call (nothing done with the attempts made upstream, no
        // timeline) has nothing else to decide; any other call decides it
        // out of line (the call's future's poll stays small).
        let (effect, single) = if !answer.upstream_matters && timeline.is_none() {
            (UpstreamEffect::None, None)
        } else {
            self.unusual(answer, timeline.as_deref_mut())
        };
        let classifier = resolution
            .policy
            .as_ref()
            .map(|p| classifier(&p.policy, timeline.as_deref_mut()));
        let (policy_source, missing_policy_mode) = (resolution.source, resolution.mode);
        // Only what the call still needs is kept across its awaits.
        let mut kept = resolved.keep();
        if let Some(single) = single {
            plan = HedgePlan::resolve(
                &single.policy,
                self.options.max_hedges_ceiling,
                self.missing_trigger,
            );
            kept = kept.with_policy(single);
        }
        Prepared {
            key,
            kept,
            plan,
            classifier,
            policy_source,
            missing_policy_mode,
            upstream: effect,
            timeline,
        }
    }

    /// What [`Executor::prepared`] decides for a call whose policy does
    /// something with the attempts made upstream or that records a
    /// timeline: the upstream attempts and what the policy does with them,
    /// the timeline's attributes of the key's answer, and the one-attempt
    /// copy of the policy a retry upstream may run under.
    #[inline(never)]
    fn unusual(
        &self,
        answer: &Resolved,
        timeline: Option<&mut Timeline>,
    ) -> (UpstreamEffect, Option<Arc<Normalized>>) {
        let resolution = &answer.resolution;
        // The attempts made above for the request being served, and what
        // the policy does with them (see `crate::upstream`): read only when
        // the policy does something with them or the timeline records them.
        let upstream = if answer.upstream_matters || timeline.is_some() {
            crate::upstream::current()
        } else {
            None
        };
        let effect = match resolution.policy.as_ref() {
            Some(p) if answer.upstream_matters => {
                upstream_effect(&p.policy.amplification, upstream)
            }
            _ => UpstreamEffect::None,
        };
        if let Some(t) = timeline {
            resolution.write_attributes(&mut t.attributes);
            if let Some(n) = upstream {
                t.attributes.insert(UPSTREAM_ATTEMPTS, n.to_string());
            }
            if effect != UpstreamEffect::None {
                t.attributes.insert(UPSTREAM_EFFECT, effect.as_str().into());
            }
        }
        // A request that is itself a retry upstream may run here under a
        // one-attempt copy of its policy (made for this call alone).
        let single = resolution.policy.as_ref().and_then(|p| {
            if effect == UpstreamEffect::None {
                // Nothing to adjust (the usual case): no call, no copy.
                return None;
            }
            effect.adjusted(&p.policy).map(|single| {
                Arc::new(Normalized {
                    policy: single,
                    changed: p.changed,
                })
            })
        });
        (effect, single)
    }

    /// The RNG of the next call: derived from the seed and the call's number
    /// when the executor has a seed, from entropy otherwise.
    fn next_rng(&self) -> fastrand::Rng {
        match self.seed {
            Some(seed) => {
                let n = self.calls.fetch_add(1, Ordering::Relaxed);
                fastrand::Rng::with_seed(derive_seed(seed, n))
            }
            // From this thread's generator: nothing shared is written.
            None => fastrand::Rng::new(),
        }
    }
}

/// A split call's result as the caller gets it.
fn unsplit<T, E>(
    result: Result<Accepted<T>, Error<Split<T, E>>>,
) -> Result<T, Error<Failure<T, E>>> {
    result
        .map(|a| a.value)
        .map_err(|e| e.map_last(|s| s.failure))
}

/// A call's key, resolved: see [`Executor::prepare`].
struct Prepared<'k, 't, C> {
    key: PolicyKey<'k>,
    kept: Kept<'k>,
    plan: HedgePlan,
    classifier: Option<C>,
    policy_source: Option<crate::provider::PolicySource>,
    missing_policy_mode: Option<MissingPolicyMode>,
    /// What the policy does with the attempts made upstream.
    upstream: UpstreamEffect,
    timeline: Option<&'t mut Timeline>,
}

pin_project_lite::pin_project! {
    /// An attempt's future that marks `panicked` when its poll panics, then
    /// lets the panic go on unwinding.
    struct PanicWatch<'a, F> {
        #[pin]
        inner: F,
        panicked: &'a AtomicBool,
    }
}

impl<F: Future> Future for PanicWatch<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                this.panicked.store(true, Ordering::Relaxed);
                std::panic::resume_unwind(payload)
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The call's driver future; with `contain`, a panic of the operation
    /// (one [`PanicWatch`] saw) ends the call as [`Error::OperationPanicked`]
    /// once the driver is dropped (which settles the attempts and tells the
    /// observer). Any other panic goes on unwinding. Holds the driver in
    /// place (no copy), so the call future does not grow.
    struct ContainedCall<'a, F> {
        #[pin]
        inner: F,
        // `None`: containment off.
        watched: Option<&'a AtomicBool>,
    }
}

/// The call's builder and its containment, made into a [`ContainedCall`]
/// by the `await` itself ([`IntoFuture`]): the call's future is then made
/// right in the awaiting future's state, where a future made first and
/// moved in was copied there whole (issue 16: 40 instructions a call).
struct Contain<'a, B> {
    builder: B,
    watched: Option<&'a AtomicBool>,
}

fn contained<B: IntoFuture>(watched: Option<&AtomicBool>, builder: B) -> Contain<'_, B> {
    Contain { builder, watched }
}

impl<'a, B: IntoFuture> IntoFuture for Contain<'a, B>
where
    ContainedCall<'a, B::IntoFuture>: Future,
{
    type Output = <ContainedCall<'a, B::IntoFuture> as Future>::Output;
    type IntoFuture = ContainedCall<'a, B::IntoFuture>;

    #[inline(always)]
    fn into_future(self) -> Self::IntoFuture {
        ContainedCall {
            inner: self.builder.into_future(),
            watched: self.watched,
        }
    }
}

impl<T, E, F> Future for ContainedCall<'_, F>
where
    F: Future<Output = Result<T, Error<E>>>,
{
    type Output = Result<T, Error<E>>;

    // Inlined into the call's future: a wrapper that forwards a poll.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        // One call of the driver's poll, contained or not (issue 16: with
        // two, one bare and one under `catch_unwind`, each was a call of
        // its own and neither was inlined). A panic not contained goes on
        // unwinding as it came (its hook has run once).
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                // The driver is dropped with this future, right after the
                // call's `await` (before `run` returns): that settles the
                // attempts and tells the observer.
                if this.watched.is_some_and(|w| w.load(Ordering::Relaxed)) {
                    Poll::Ready(Err(Error::OperationPanicked))
                } else {
                    std::panic::resume_unwind(payload)
                }
            }
        }
    }
}

/// The classifier factory and the attempt wrapper of an HTTP call.
#[cfg(feature = "http")]
#[allow(clippy::type_complexity)]
fn http_parts<'m, B, E, Op, Fut>(
    method: &'m http::Method,
    mut op: Op,
) -> (
    impl FnOnce(
            &Policy,
            Option<&mut Timeline>,
        ) -> crate::http::FailureClassifier<crate::http::SystemClock>
        + 'm,
    impl FnMut(AttemptInfo) -> crate::http::HttpAttempt<Fut>,
)
where
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<http::Response<B>, E>>,
{
    let classifier = move |p: &Policy, _: Option<&mut Timeline>| {
        crate::http::FailureClassifier(
            crate::http::HttpClassifier::new(method)
                .retry_non_idempotent(p.retry.retry_non_idempotent),
        )
    };
    let op = move |info: AttemptInfo| crate::http::HttpAttempt { inner: op(info) };
    (classifier, op)
}
