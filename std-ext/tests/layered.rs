//! Layered providers and custom providers: the first layer with the key's
//! own policy answers, defaults come last, a panicking layer is skipped, and
//! the timeline says which layer answered.
#![allow(clippy::unwrap_used)]

use core::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use recourse::provider::{PolicyLookup, PolicySource, ProviderError};
use recourse::providers::{Layered, PolicyFn};
use recourse::{AttemptInfo, Executor, Policy, PolicyKey, PolicyProvider, StaticProvider};

fn with_attempts(n: u32) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = n;
    p.retry.initial_backoff = core::time::Duration::from_millis(1);
    p
}

struct Panics;

impl PolicyProvider for Panics {
    fn policy(&self, _: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        panic!("a broken layer")
    }
}

struct Down;

impl PolicyProvider for Down {
    fn policy(&self, _: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        Err(ProviderError::Unavailable("down".into()))
    }
}

fn layers() -> Layered {
    // Top: a custom source that knows the `billing` namespace and has a
    // default; middle: a panicking layer and an unavailable one; bottom:
    // code, with its own policy for user.Get.
    let top =
        PolicyFn::new(|key: PolicyKey<'_>| (key.namespace == "billing").then(|| with_attempts(4)));
    let top_default = StaticProvider::builder()
        .default_policy(with_attempts(2))
        .unwrap()
        .build();
    let bottom = StaticProvider::builder()
        .policy("user.Get", with_attempts(5))
        .unwrap()
        .policy("billing.Charge", with_attempts(9))
        .unwrap()
        .build();
    Layered::new()
        .layer(top)
        .layer(top_default)
        .layer(Panics)
        .layer(Down)
        .layer(bottom)
}

fn answer(l: &Layered, key: &str) -> (u32, PolicySource) {
    let found = l.policy(PolicyKey::parse(key)).unwrap();
    (found.policy.policy.retry.max_attempts, found.source)
}

#[test]
fn first_own_policy_wins_then_the_first_default() {
    let l = layers();
    assert_eq!(l.len(), 5);
    // The top layer knows it: it wins over the bottom's own policy.
    assert_eq!(answer(&l, "billing.Charge"), (4, PolicySource::Custom));
    // Only the bottom knows it: a default above does not hide it, and the
    // panicking and unavailable layers in between are skipped.
    assert_eq!(answer(&l, "user.Get"), (5, PolicySource::Static));
    // Nobody knows it: the first default.
    assert_eq!(answer(&l, "search.Query"), (2, PolicySource::Default));
}

#[test]
fn without_a_default_the_first_real_error_is_reported() {
    let l = Layered::new().layer(Panics).layer(Down);
    assert_eq!(
        l.policy(PolicyKey::parse("a.b")).unwrap_err(),
        ProviderError::Panicked
    );
    let l = Layered::new().layer(StaticProvider::empty()).layer(Down);
    assert_eq!(
        l.policy(PolicyKey::parse("a.b")).unwrap_err().code(),
        "provider_unavailable"
    );
    assert_eq!(
        Layered::new().policy(PolicyKey::parse("a.b")).unwrap_err(),
        ProviderError::NotFound
    );
}

#[test]
fn the_timeline_says_which_layer_answered() {
    let exec = Executor::builder().provider(layers()).build();
    for (key, source, attempts) in [
        ("billing.Charge", "custom", 4),
        ("user.Get", "static", 5),
        ("search.Query", "default", 2),
    ] {
        let (_, t) = async_io::block_on(
            exec.call_with_timeline(key, |_: AttemptInfo| async { Err::<(), _>("down") }),
        );
        assert_eq!(t.attribute("policy_source"), Some(source), "{key}");
        assert_eq!(t.attempts.len(), attempts, "{key}");
    }
}

#[test]
fn custom_answers_are_normalized_once_and_reported() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let p = PolicyFn::new(move |_: PolicyKey<'_>| {
        let n = seen.fetch_add(1, Ordering::Relaxed);
        // The same policy for 3 lookups, then another.
        Some(with_attempts(if n < 3 { 50 } else { 7 }))
    });
    let a = p.policy(PolicyKey::parse("a.b")).unwrap();
    let b = p.policy(PolicyKey::parse("a.b")).unwrap();
    assert!(
        Arc::ptr_eq(&a.policy, &b.policy),
        "the same answer reuses its normalized policy"
    );
    assert_eq!(a.policy.policy.retry.max_attempts, 10);
    assert_eq!(a.policy.changed.to_string(), "retry.max_attempts");
    let _ = p.policy(PolicyKey::parse("a.b")).unwrap();
    let c = p.policy(PolicyKey::parse("a.b")).unwrap();
    assert_eq!(c.policy.policy.retry.max_attempts, 7);
    assert!(c.policy.changed.is_empty());

    // A value normalization cannot read is an invalid-policy error.
    let bad = PolicyFn::new(|_: PolicyKey<'_>| {
        let mut p = Policy::DEFAULT;
        p.retry.backoff_multiplier = f64::NAN;
        Some(p)
    });
    let e = bad.policy(PolicyKey::parse("a.b")).unwrap_err();
    assert_eq!(e.code(), "invalid_policy");
    assert!(e.to_string().contains("retry.backoff_multiplier"));
}
