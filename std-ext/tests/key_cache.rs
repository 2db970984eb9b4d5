//! The executor's per-thread key cache (issue 16): a known key is neither
//! searched nor asked for again, and yet a provider's update reaches the
//! very next call, a provider that cannot say when it changes is asked on
//! every call, two executors never share answers, and a breaker the store
//! evicted is not used through the cache.

mod common;
use common::{executor, normalized_attempts, poll_once, JumpClock, Swappable};

use core::future::ready;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use recourse::provider::{PolicyLookup, PolicySource, ProviderError};
use recourse::{Breakers, Error, Executor, Policy, PolicyKey, PolicyProvider, StaticProvider};

/// Attempts a call of `key` made when every attempt fails.
fn attempts_of(exec: &Executor<JumpClock>, key: &str) -> u32 {
    let mut n = 0;
    let result: Result<(), Error<&str>> = poll_once(exec.call(key, |_| {
        n += 1;
        ready(Err("down"))
    }));
    assert!(result.is_err());
    n
}

#[test]
fn a_known_key_is_not_asked_again_and_an_update_reaches_the_next_call() {
    let provider = Swappable::new(normalized_attempts(1), true);
    let exec = executor(Arc::clone(&provider));
    assert_eq!(attempts_of(&exec, "svc.A"), 1);
    assert_eq!(provider.asked(), 1);
    for _ in 0..10 {
        assert_eq!(attempts_of(&exec, "svc.A"), 1);
    }
    assert_eq!(provider.asked(), 1, "answered from the cache");

    // The update reaches the very next call: no stale policy.
    provider.set(normalized_attempts(3));
    assert_eq!(attempts_of(&exec, "svc.A"), 3);
    assert_eq!(provider.asked(), 2);
    assert_eq!(attempts_of(&exec, "svc.A"), 3);
    assert_eq!(provider.asked(), 2);

    // Another key is asked for once too.
    assert_eq!(attempts_of(&exec, "svc.B"), 3);
    assert_eq!(attempts_of(&exec, "svc.B"), 3);
    assert_eq!(provider.asked(), 3);

    // And an update seen on another thread first still reaches this one.
    provider.set(normalized_attempts(2));
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(attempts_of(&exec, "svc.A"), 2));
    });
    assert_eq!(attempts_of(&exec, "svc.A"), 2);
}

#[test]
fn a_provider_without_a_generation_is_asked_on_every_call() {
    let provider = Swappable::new(normalized_attempts(1), false);
    let exec = executor(Arc::clone(&provider));
    for i in 1..=5 {
        assert_eq!(attempts_of(&exec, "svc.A"), 1);
        assert_eq!(provider.asked(), i);
    }
    provider.set(normalized_attempts(4));
    assert_eq!(attempts_of(&exec, "svc.A"), 4);
}

#[test]
fn two_executors_never_share_answers() {
    let one = executor(Swappable::new(normalized_attempts(1), true));
    let four = executor(Swappable::new(normalized_attempts(4), true));
    for _ in 0..3 {
        assert_eq!(attempts_of(&one, "svc.Same"), 1);
        assert_eq!(attempts_of(&four, "svc.Same"), 4);
    }
}

#[test]
fn keys_that_share_a_slot_or_are_long_keep_their_own_policies() {
    // Many more keys than the cache has slots, and keys past its length
    // limit: each always runs under its own policy.
    let mut builder = StaticProvider::builder();
    let keys: Vec<String> = (0..600)
        .map(|i| {
            if i % 50 == 0 {
                format!("a-rather-long-service-name-for-the-cache.Operation{i:04}-and-more")
            } else {
                format!("svc.Op{i}")
            }
        })
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let mut p = Policy::DEFAULT;
        p.retry.max_attempts = 1 + (i % 4) as u32;
        builder = builder.policy(key, p).unwrap();
    }
    let exec = Executor::builder()
        .provider(builder.build())
        .timer(JumpClock::default())
        .build();
    for round in 0..2 {
        for (i, key) in keys.iter().enumerate() {
            // A key made afresh each time: the cache compares text, not
            // addresses.
            let fresh = key.clone();
            assert_eq!(
                attempts_of(&exec, &fresh),
                1 + (i % 4) as u32,
                "round {round}, {key}"
            );
        }
    }
}

#[test]
fn a_breaker_evicted_from_the_store_is_not_used_through_the_cache() {
    let mut guarded = Policy::DEFAULT;
    guarded.retry.max_attempts = 1;
    guarded.circuit.enabled = true;
    guarded.circuit.threshold = 2;
    let provider = StaticProvider::builder()
        .default_policy(guarded)
        .unwrap()
        .build();
    let exec = Executor::builder()
        .provider(provider)
        .breakers(Breakers::new(1))
        .timer(JumpClock::default())
        .build();
    // One failure of `a` (threshold 2), then `b` takes the store's only
    // place: `a`'s breaker is evicted.
    assert_eq!(attempts_of(&exec, "svc.a"), 1);
    assert_eq!(attempts_of(&exec, "svc.b"), 1);
    // `a` gets a new breaker, so one more failure does not open it...
    assert_eq!(attempts_of(&exec, "svc.a"), 1);
    // ...and the second does (the cache now holds the new breaker).
    assert_eq!(attempts_of(&exec, "svc.a"), 1);
    let refused: Result<(), Error<&str>> = poll_once(exec.call("svc.a", |_| ready(Ok(()))));
    assert!(
        matches!(refused, Err(Error::CircuitOpen { .. })),
        "{refused:?}"
    );
}

#[test]
fn an_update_of_a_layer_reaches_the_next_call_through_layered() {
    let top = Swappable::new(normalized_attempts(1), true);
    let layered = recourse::providers::Layered::new()
        .layer(Arc::clone(&top))
        .layer(
            StaticProvider::builder()
                .default_policy(Policy::DEFAULT)
                .unwrap()
                .build(),
        );
    let exec = Executor::builder()
        .provider(layered)
        .timer(JumpClock::default())
        .build();
    assert_eq!(attempts_of(&exec, "svc.A"), 1);
    assert_eq!(attempts_of(&exec, "svc.A"), 1);
    assert_eq!(top.asked(), 1, "answered from the cache");
    top.set(normalized_attempts(2));
    assert_eq!(attempts_of(&exec, "svc.A"), 2);
}

/// A provider whose `generation` panics: contained, the call runs (asking
/// the provider, which answers), nothing is cached.
struct PanickingGeneration(AtomicU64);

impl PolicyProvider for PanickingGeneration {
    fn policy(&self, _: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(PolicyLookup {
            policy: normalized_attempts(2),
            source: PolicySource::Custom,
        })
    }

    fn generation(&self) -> Option<u64> {
        panic!("generation is broken")
    }
}

#[test]
fn a_panicking_generation_is_contained_and_nothing_is_cached() {
    let provider = Arc::new(PanickingGeneration(AtomicU64::new(0)));
    let exec = Executor::builder()
        .provider(Arc::clone(&provider))
        .timer(JumpClock::default())
        .build();
    for i in 1..=3 {
        assert_eq!(attempts_of(&exec, "svc.A"), 2);
        assert_eq!(provider.0.load(Ordering::Relaxed), i);
    }
}
