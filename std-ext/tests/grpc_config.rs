//! gRPC service config ingest on gRFC A6's examples, and its rules.
#![allow(clippy::unwrap_used)]

use core::time::Duration;

use recourse::grpc::GrpcClassifier;
use recourse::provider::PolicySource;
use recourse::providers::grpc_config::{GrpcServiceConfig, THROTTLE_BUDGET};
use recourse::{ClassifierRegistry, Jitter, PolicyKey, PolicyProvider};
use tonic::Code;

/// gRFC A6's examples (retry policy, hedging policy, retry throttling) in
/// one service config, with fields recourse does not use.
const A6: &str = r#"{
  "loadBalancingPolicy": "round_robin",
  "methodConfig": [
    {
      "name": [{"service": "EchoService", "method": "Echo"}],
      "waitForReady": true,
      "timeout": "2s",
      "retryPolicy": {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"]
      }
    },
    {
      "name": [{"service": "EchoService", "method": "EchoHedged"}, {"service": "SearchService"}],
      "hedgingPolicy": {
        "maxAttempts": 4,
        "hedgingDelay": "0.5s",
        "nonFatalStatusCodes": ["UNAVAILABLE", "INTERNAL", "ABORTED"]
      }
    },
    {
      "name": [{}],
      "retryPolicy": {
        "maxAttempts": 10,
        "initialBackoff": "0.05s",
        "maxBackoff": "0.5s",
        "backoffMultiplier": 1.5,
        "retryableStatusCodes": [14, "RESOURCE_EXHAUSTED"]
      }
    }
  ],
  "retryThrottling": {
    "maxTokens": 10,
    "tokenRatio": 0.1
  }
}"#;

#[test]
fn the_a6_examples_become_policies_classifiers_and_a_throttle() {
    let config = GrpcServiceConfig::from_json(A6).unwrap();
    let p = &config.provider;

    let echo = p.policy(PolicyKey::parse("EchoService/Echo")).unwrap();
    assert_eq!(echo.source, PolicySource::Static);
    let r = &echo.policy.policy.retry;
    assert_eq!(r.max_attempts, 4);
    assert_eq!(r.initial_backoff, Duration::from_millis(100));
    assert_eq!(r.max_backoff, Duration::from_secs(1));
    assert_eq!(r.backoff_multiplier, 2.0);
    assert_eq!(
        r.jitter,
        Jitter::Full,
        "gRPC randomizes backoff uniformly below it"
    );
    assert_eq!(r.overall_timeout, Some(Duration::from_secs(2)));
    assert_eq!(r.classifier.as_str(), "grpc-retry-0");
    assert_eq!(r.budget.name.as_str(), THROTTLE_BUDGET);
    assert!(!echo.policy.policy.hedge.enabled);

    // Hedging: the first attempt plus maxAttempts - 1 hedges, 0.5 s apart;
    // a fatal code ends the call.
    let hedged = p
        .policy(PolicyKey::parse("EchoService/EchoHedged"))
        .unwrap();
    let h = &hedged.policy.policy.hedge;
    assert!(h.enabled);
    assert_eq!(h.max_hedges, 3);
    assert_eq!(h.hedge_delay, Duration::from_millis(500));
    assert!(h.cancel_on_first_terminal);
    assert_eq!(h.budget.name.as_str(), THROTTLE_BUDGET);
    assert_eq!(hedged.policy.policy.retry.max_attempts, 1);
    // A service name covers its methods.
    let search = p.policy(PolicyKey::parse("SearchService/Query")).unwrap();
    assert!(search.policy.policy.hedge.enabled);

    // The default; A6 caps maxAttempts at 5.
    let other = p.policy(PolicyKey::parse("Other/Method")).unwrap();
    assert_eq!(other.source, PolicySource::Default);
    assert_eq!(other.policy.policy.retry.max_attempts, 5);
    assert_eq!(config.capped, vec!["<default>".to_owned()]);

    // Classifiers: the retryable codes, the non-fatal codes.
    let names: Vec<_> = config.classifiers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["grpc-retry-0", "grpc-retry-1", "grpc-retry-2"]);
    let c0 = config.classifiers[0].1;
    assert!(c0.is_retryable(Code::Unavailable));
    assert!(!c0.is_retryable(Code::Internal));
    assert_eq!(
        config.classifiers[1].1,
        GrpcClassifier::with_retryable(&[Code::Unavailable, Code::Internal, Code::Aborted])
    );
    assert!(config.classifiers[2]
        .1
        .is_retryable(Code::ResourceExhausted));
    assert!(
        config.classifiers[2].1.is_retryable(Code::Unavailable),
        "14 is UNAVAILABLE"
    );
    let mut registry = ClassifierRegistry::new();
    config.register_classifiers::<()>(&mut registry);
    assert!(registry.contains("grpc-retry-1"));

    // retryThrottling: maxTokens 10, tokenRatio 0.1.
    let t = config.throttle.as_ref().unwrap();
    assert_eq!(t.max_tokens_milli(), 10_000);
    assert_eq!(t.threshold_milli(), 5_000);
}

#[test]
fn a_zero_hedging_delay_is_raised_to_the_floor_and_reported() {
    let config = GrpcServiceConfig::from_json(
        r#"{"methodConfig":[{"name":[{"service":"S"}],"hedgingPolicy":{"maxAttempts":2}}]}"#,
    )
    .unwrap();
    let found = config.provider.policy(PolicyKey::parse("S/M")).unwrap();
    assert_eq!(
        found.policy.policy.hedge.hedge_delay,
        Duration::from_millis(10)
    );
    assert_eq!(found.policy.changed.to_string(), "hedge.hedge_delay");
    assert!(config.throttle.is_none());
    assert_eq!(found.policy.policy.retry.budget.name.as_str(), "");
}

#[test]
fn values_outside_a6_rules_are_errors_naming_the_field() {
    let retry = |body: &str| {
        format!(r#"{{"methodConfig":[{{"name":[{{"service":"S"}}],"retryPolicy":{body}}}]}}"#)
    };
    let ok = r#""initialBackoff":"0.1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]"#;
    let cases = [
        (retry(&format!(r#"{{"maxAttempts":1,{ok}}}"#)), "methodConfig.0.retryPolicy.maxAttempts"),
        (retry(r#"{"maxAttempts":3,"initialBackoff":"0s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#), "methodConfig.0.retryPolicy.initialBackoff"),
        (retry(r#"{"maxAttempts":3,"initialBackoff":"100","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#), "methodConfig.0.retryPolicy.initialBackoff"),
        (retry(r#"{"maxAttempts":3,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":0,"retryableStatusCodes":["UNAVAILABLE"]}"#), "methodConfig.0.retryPolicy.backoffMultiplier"),
        (retry(r#"{"maxAttempts":3,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":[]}"#), "methodConfig.0.retryPolicy.retryableStatusCodes"),
        (retry(r#"{"maxAttempts":3,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABEL"]}"#), "methodConfig.0.retryPolicy.retryableStatusCodes.0"),
        (retry(&format!(r#"{{"maxAttempts":3,"maxAttemps":3,{ok}}}"#)), "methodConfig.0.retryPolicy.maxAttemps"),
        (retry(&format!(r#"{{"maxAttempts":-3,{ok}}}"#)), "methodConfig.0.retryPolicy.maxAttempts"),
        (r#"{"methodConfig":[{"name":[{"service":"S"}],"retryPolicy":{"maxAttempts":2,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":[14]},"hedgingPolicy":{"maxAttempts":2}}]}"#.to_owned(), "methodConfig.0.hedgingPolicy"),
        (r#"{"methodConfig":[{"name":[{"service":"S"}]},{"name":[{"service":"S"}]}]}"#.to_owned(), "methodConfig.1.name.0"),
        (r#"{"methodConfig":[{"name":[{"method":"M"}]}]}"#.to_owned(), "methodConfig.0.name.0.method"),
        (r#"{"retryThrottling":{"maxTokens":0,"tokenRatio":0.1}}"#.to_owned(), "retryThrottling.maxTokens"),
        (r#"{"retryThrottling":{"maxTokens":10,"tokenRatio":0}}"#.to_owned(), "retryThrottling.tokenRatio"),
        (r#"{"retryThrottling":{"maxTokens":2000,"tokenRatio":0.1}}"#.to_owned(), "retryThrottling.maxTokens"),
    ];
    for (text, field) in cases {
        let e = GrpcServiceConfig::from_json(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(field), "{text}: {e}");
        assert!(!e.message.is_empty(), "{text}");
    }
    // Malformed JSON has a line and column.
    let e = GrpcServiceConfig::from_json("{\n  \"methodConfig\": [\n").unwrap_err();
    assert!(e.line.is_some(), "{e}");
}
