//! The static provider: per-key policies, a default, normalization at build
//! time, errors naming the field.

use core::time::Duration;
use std::sync::Arc;

use recourse::policy::Field;
use recourse::provider::{PolicySource, ProviderError};
use recourse::{Policy, PolicyKey, PolicyProvider, StaticProvider};

#[test]
fn per_key_policy_then_default_then_not_found() {
    let mut a = Policy::DEFAULT;
    a.retry.max_attempts = 2;
    let mut fallback = Policy::DEFAULT;
    fallback.retry.max_attempts = 7;
    let with_default = StaticProvider::builder()
        .policy("svc.A", a)
        .unwrap()
        .default_policy(fallback)
        .unwrap()
        .build();

    let found = with_default.policy(PolicyKey::parse("svc.A")).unwrap();
    assert_eq!(found.source, PolicySource::Static);
    assert_eq!(found.policy.policy.retry.max_attempts, 2);

    let other = with_default.policy(PolicyKey::parse("svc.B")).unwrap();
    assert_eq!(other.source, PolicySource::Default);
    assert_eq!(other.policy.policy.retry.max_attempts, 7);

    let without_default = StaticProvider::builder()
        .policy("svc.A", Policy::DEFAULT)
        .unwrap()
        .build();
    assert_eq!(
        without_default
            .policy(PolicyKey::parse("svc.B"))
            .unwrap_err(),
        ProviderError::NotFound
    );
    assert_eq!(
        StaticProvider::empty()
            .policy(PolicyKey::parse("svc.A"))
            .unwrap_err(),
        ProviderError::NotFound
    );
}

#[test]
fn keys_are_parsed_and_looked_up_by_parts() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 4;
    let provider = StaticProvider::builder()
        .policy(" db.Users.Query ", p.clone())
        .unwrap()
        .policy("health", Policy::DEFAULT)
        .unwrap()
        .policy("a.b", Policy::DEFAULT)
        .unwrap()
        .build();
    assert_eq!(provider.len(), 3);
    // The same key, borrowed from elsewhere.
    let found = provider
        .policy(PolicyKey::new("db", "Users.Query"))
        .unwrap();
    assert_eq!(found.policy.policy.retry.max_attempts, 4);
    assert!(provider.policy(PolicyKey::new("", "health")).is_ok());
    assert!(provider.policy(PolicyKey::new("db", "Users")).is_err());
    assert!(provider
        .policy(PolicyKey::new("", "db.Users.Query"))
        .is_err());
}

#[test]
fn a_later_policy_for_the_same_key_replaces_the_earlier_one() {
    let mut second = Policy::DEFAULT;
    second.retry.max_attempts = 9;
    let provider = StaticProvider::builder()
        .policy("svc.A", Policy::DEFAULT)
        .unwrap()
        .policy("svc.A", second)
        .unwrap()
        .build();
    assert_eq!(provider.len(), 1);
    let found = provider.policy(PolicyKey::parse("svc.A")).unwrap();
    assert_eq!(found.policy.policy.retry.max_attempts, 9);
}

#[test]
fn policies_are_normalized_once_when_added() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 50;
    p.retry.max_backoff = Duration::from_secs(600);
    let provider = StaticProvider::builder()
        .policy("svc.A", p)
        .unwrap()
        .build();
    let first = provider.policy(PolicyKey::parse("svc.A")).unwrap();
    let second = provider.policy(PolicyKey::parse("svc.A")).unwrap();
    // The same normalized value, shared, not normalized per lookup.
    assert!(Arc::ptr_eq(&first.policy, &second.policy));
    assert_eq!(first.policy.policy.retry.max_attempts, 10);
    assert_eq!(
        first.policy.policy.retry.max_backoff,
        Duration::from_secs(30)
    );
    assert!(first.policy.changed.contains(Field::MaxAttempts));
    assert_eq!(
        first.policy.changed.to_string(),
        "retry.max_attempts,retry.max_backoff"
    );
}

#[test]
fn a_nan_multiplier_is_rejected_naming_the_field() {
    let mut p = Policy::DEFAULT;
    p.retry.backoff_multiplier = f64::NAN;
    let err = StaticProvider::builder().policy("svc.A", p).unwrap_err();
    assert_eq!(err.field, "retry.backoff_multiplier");
    assert!(
        err.to_string().contains("retry.backoff_multiplier"),
        "{err}"
    );

    let mut p = Policy::DEFAULT;
    p.retry.backoff_multiplier = f64::INFINITY;
    let err = StaticProvider::builder().default_policy(p).unwrap_err();
    assert_eq!(err.field, "retry.backoff_multiplier");
}

#[test]
fn provider_errors_have_codes_and_readable_text() {
    assert_eq!(ProviderError::NotFound.code(), "not_found");
    assert_eq!(ProviderError::Panicked.code(), "panic_in_provider");
    let e = ProviderError::Unavailable("control plane down".into());
    assert_eq!(e.code(), "provider_unavailable");
    assert_eq!(e.to_string(), "provider_unavailable: control plane down");
}
