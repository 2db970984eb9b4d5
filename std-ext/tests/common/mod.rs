//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::{Arc, Mutex, PoisonError};

use recourse::observer::{AttemptRecord, CallStart, CallSummary};
use recourse::provider::{PolicyLookup, PolicySource, ProviderError};
use recourse::{Executor, Observer, Policy, PolicyKey, PolicyProvider, StaticProvider};
use recourse_core::policy::Normalized;

/// Records every observer event as a line.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    pub fn events(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, event: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }
}

impl Observer for Recorder {
    fn on_start(&self, key: PolicyKey<'_>, _: &CallStart) {
        self.push(format!("start {key}"));
    }
    fn on_attempt(&self, _: PolicyKey<'_>, record: &AttemptRecord) {
        self.push(format!(
            "attempt {} {}",
            record.info.id.0, record.outcome.reason
        ));
    }
    fn on_success(&self, key: PolicyKey<'_>, _: &CallSummary) {
        self.push(format!("success {key}"));
    }
    fn on_failure(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        self.push(format!("failure {key} {}", summary.reason().unwrap_or("-")));
    }
}

/// A provider that counts its lookups.
pub struct Counting<P> {
    pub inner: P,
    pub lookups: AtomicUsize,
}

impl<P> Counting<P> {
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            lookups: AtomicUsize::new(0),
        }
    }

    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl<P: PolicyProvider> PolicyProvider for Counting<P> {
    fn policy(&self, key: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.policy(key)
    }
}

/// A policy with `attempts` attempts and the default backoff (10 ms, ×2).
pub fn attempts(attempts: u32) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = attempts;
    p
}

/// A provider with one policy.
pub fn one(key: &str, policy: Policy) -> StaticProvider {
    StaticProvider::builder()
        .policy(key, policy)
        .map(|b| b.build())
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A virtual clock whose sleeps complete at once (the clock jumps to their
/// deadline): a whole call, retries and hedges included, completes in one
/// poll.
#[derive(Clone, Default)]
pub struct JumpClock(std::sync::Arc<core::sync::atomic::AtomicU64>);

impl recourse::core_machine::Timer for JumpClock {
    type Sleep = core::future::Ready<()>;
    fn now(&self) -> recourse::observer::Instant {
        recourse::observer::Instant::from_nanos(self.0.load(Ordering::SeqCst))
    }
    fn sleep_until(&self, deadline: recourse::observer::Instant) -> Self::Sleep {
        self.0.fetch_max(deadline.as_nanos(), Ordering::SeqCst);
        core::future::ready(())
    }
}

/// Polls `fut` once with a no-op waker; panics unless it completed.
pub fn poll_once<F: core::future::Future>(fut: F) -> F::Output {
    let mut fut = core::pin::pin!(fut);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        core::task::Poll::Ready(v) => v,
        core::task::Poll::Pending => panic!("the call did not complete in one poll"),
    }
}

/// A normalized policy of `n` attempts, as a provider hands it out.
pub fn normalized_attempts(n: u32) -> Arc<Normalized> {
    Arc::new(attempts(n).normalize().expect("valid"))
}

/// One policy for every key, replaced by `set`, which moves the generation
/// (when the provider has one) after the swap, as the trait asks; counts
/// what it is asked.
pub struct Swappable {
    policy: Mutex<Arc<Normalized>>,
    generation: Option<AtomicU64>,
    asked: AtomicU64,
}

impl Swappable {
    pub fn new(policy: Arc<Normalized>, with_generation: bool) -> Arc<Self> {
        Arc::new(Self {
            policy: Mutex::new(policy),
            generation: with_generation.then(|| AtomicU64::new(0)),
            asked: AtomicU64::new(0),
        })
    }

    pub fn set(&self, policy: Arc<Normalized>) {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) = policy;
        if let Some(g) = &self.generation {
            g.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }
}

impl PolicyProvider for Swappable {
    fn policy(&self, _: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        Ok(PolicyLookup {
            policy: Arc::clone(&self.policy.lock().unwrap_or_else(PoisonError::into_inner)),
            source: PolicySource::Remote,
        })
    }

    fn generation(&self) -> Option<u64> {
        self.generation.as_ref().map(|g| g.load(Ordering::Acquire))
    }
}

/// An executor of `provider`'s policies on a [`JumpClock`].
pub fn executor(provider: impl PolicyProvider + 'static) -> Executor<JumpClock> {
    Executor::builder()
        .provider(provider)
        .timer(JumpClock::default())
        .build()
}
