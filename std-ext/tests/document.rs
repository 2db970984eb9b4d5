//! The policy document: TOML and JSON, human durations, percentages, errors
//! that name file, key, field, line and column, and the checked-in schema.
#![allow(clippy::unwrap_used)]

use core::time::Duration;
use std::path::{Path, PathBuf};

use recourse::provider::PolicySource;
use recourse::providers::document::{PolicyDocument, MAX_KEY_LEN};
use recourse::{Jitter, Policy, PolicyKey, PolicyProvider};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn the_sample_policy_file_loads() {
    let path = repo_file("examples/policies.toml");
    let doc = PolicyDocument::load(&path).unwrap();
    assert!(doc.clamped.is_empty(), "{:?}", doc.clamped);
    let p = &doc.provider;
    let get = p.policy(PolicyKey::parse("user-service.GetUser")).unwrap();
    assert_eq!(get.source, PolicySource::Static);
    let r = &get.policy.policy.retry;
    assert_eq!(r.max_attempts, 5);
    assert_eq!(r.initial_backoff, Duration::from_millis(20));
    assert_eq!(r.max_backoff, Duration::from_secs(1));
    assert_eq!(r.jitter, Jitter::Decorrelated);
    assert_eq!(r.timeout_per_attempt, Some(Duration::from_millis(500)));
    assert_eq!(r.overall_timeout, Some(Duration::from_secs(2)));
    assert_eq!(r.budget.name.as_str(), "user-service");
    let c = &get.policy.policy.circuit;
    assert!(c.enabled);
    assert_eq!(c.failure_ratio_permille, 500);
    assert_eq!(c.window, Duration::from_secs(30));
    let q = p.policy(PolicyKey::parse("search.Query")).unwrap();
    assert!(q.policy.policy.hedge.enabled);
    assert_eq!(q.policy.policy.hedge.trigger.as_str(), "p95");
    assert_eq!(q.policy.policy.hedge.hedge_delay, Duration::from_millis(50));
    let other = p.policy(PolicyKey::parse("billing.Refund")).unwrap();
    assert_eq!(other.source, PolicySource::Default);
    assert_eq!(other.policy.policy.retry.jitter, Jitter::Full);
    assert_eq!(p.len(), 3);
}

#[test]
fn toml_and_json_read_the_same_document_and_round_trip() {
    let toml_doc = PolicyDocument::from_toml(
        &std::fs::read_to_string(repo_file("examples/policies.toml")).unwrap(),
    )
    .unwrap();
    let json = serde_json::to_string_pretty(&toml_doc).unwrap();
    let json_doc = PolicyDocument::from_json(&json).unwrap();
    assert_eq!(toml_doc, json_doc);
    let toml_text = toml::to_string(&json_doc).unwrap();
    assert_eq!(PolicyDocument::from_toml(&toml_text).unwrap(), toml_doc);
    // Durations are written the way people write them.
    assert!(json.contains("\"initial_backoff\": \"20ms\""), "{json}");
    assert!(json.contains("\"overall_timeout\": \"2s\""), "{json}");
}

#[test]
fn absent_fields_take_the_defaults_and_an_empty_document_is_empty() {
    let doc = PolicyDocument::from_toml("[policies.\"a.b\"]\n").unwrap();
    assert_eq!(doc.policies["a.b"], Policy::DEFAULT);
    assert_eq!(
        PolicyDocument::from_toml("").unwrap(),
        PolicyDocument::default()
    );
    assert_eq!(
        PolicyDocument::from_json("{}").unwrap(),
        PolicyDocument::default()
    );
    // "off" and null both disable an optional timeout.
    let doc = PolicyDocument::from_json(
        r#"{"policies":{"a.b":{"retry":{"overall_timeout":"off","timeout_per_attempt":null}}}}"#,
    )
    .unwrap();
    assert_eq!(doc.policies["a.b"].retry.overall_timeout, None);
    assert_eq!(doc.policies["a.b"].retry.timeout_per_attempt, None);
}

#[test]
fn percentages_and_permille() {
    for (v, want) in [
        ("\"5%\"", 50),
        ("\"0.5%\"", 5),
        ("\"100%\"", 1000),
        ("250", 250),
    ] {
        let doc = PolicyDocument::from_toml(&format!(
            "[policies.\"a.b\".circuit]\nfailure_ratio_permille = {v}\n"
        ))
        .unwrap();
        assert_eq!(
            doc.policies["a.b"].circuit.failure_ratio_permille, want,
            "{v}"
        );
    }
    let e = PolicyDocument::from_toml(
        "[policies.\"a.b\".circuit]\nfailure_ratio_permille = \"5 percent\"\n",
    )
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("circuit.failure_ratio_permille"));
    assert!(e.message.contains("5 percent"), "{e}");
}

#[test]
fn a_duration_without_a_unit_names_file_key_field_value_range_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.toml");
    std::fs::write(
        &path,
        "[policies.\"user-service.GetUser\".retry]\nmax_attempts = 4\ninitial_backoff = \"5\"\n",
    )
    .unwrap();
    let e = PolicyDocument::load(&path).unwrap_err();
    assert_eq!(e.file.as_deref(), Some(path.as_path()));
    assert_eq!(e.key.as_deref(), Some("user-service.GetUser"));
    assert_eq!(e.field.as_deref(), Some("retry.initial_backoff"));
    assert_eq!(e.line, Some(3));
    assert_eq!(e.column, Some(19));
    assert!(e.message.contains("\"5\""), "{e}");
    assert!(e.message.contains("duration without a unit"), "{e}");
    assert!(e.allowed.unwrap().contains("1ms..=30s"), "{e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}:3:19: policy `user-service.GetUser`: field `retry.initial_backoff`: ",
            path.display()
        )),
        "{shown}"
    );
}

#[test]
fn json_errors_have_line_and_column_too() {
    let text =
        "{\n  \"policies\": {\n    \"a.b\": { \"retry\": { \"max_attempts\": -1 } }\n  }\n}\n";
    let e = PolicyDocument::from_json(text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("a.b"));
    assert_eq!(e.field.as_deref(), Some("retry.max_attempts"));
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("-1"), "{e}");
    assert!(e.allowed.unwrap().contains("1..=10"), "{e}");
}

#[test]
fn every_kind_of_bad_input_is_a_clear_error() {
    // (document, key, field, text the message must contain)
    let cases: &[(&str, Option<&str>, Option<&str>, &str)] = &[
        ("[policies.\"a.b\".retry]\nmax_atempts = 3\n", Some("a.b"), Some("retry.max_atempts"), "unknown field `max_atempts`"),
        ("[policies.\"a.b\"]\nretries = 3\n", Some("a.b"), Some("retries"), "unknown field `retries`"),
        ("[defaults]\n", None, Some("defaults"), "unknown field `defaults`"),
        ("[policies.\"a.b\".retry]\nmax_attempts = \"three\"\n", Some("a.b"), Some("retry.max_attempts"), "three"),
        ("[policies.\"a.b\".retry]\nmax_attempts = -2\n", Some("a.b"), Some("retry.max_attempts"), "-2"),
        ("[policies.\"a.b\".retry]\njitter = \"gaussian\"\n", Some("a.b"), Some("retry.jitter"), "gaussian"),
        ("[policies.\"a.b\".retry]\ninitial_backoff = 10\n", Some("a.b"), Some("retry.initial_backoff"), "10"),
        ("[policies.\"a.b\".retry]\ninitial_backoff = \"-1s\"\n", Some("a.b"), Some("retry.initial_backoff"), "-1s"),
        ("[policies.\"a.b\".retry]\nbudget = { name = \"a-budget-name-that-is-far-too-long-to-store\" }\n", Some("a.b"), Some("retry.budget.name"), "at most 32 bytes"),
        ("[policies.\"a.b\".retry]\nbackoff_multiplier = nan\n", Some("a.b"), Some("retry.backoff_multiplier"), "finite"),
        ("[policies.\"a.b\".amplification]\nmax_amplification = 0.5\n", Some("a.b"), Some("amplification.max_amplification"), "0 (off) or 1 to 100"),
        ("[policies.\"a.b\".amplification]\nmax_amplification = nan\n", Some("a.b"), Some("amplification.max_amplification"), "out of range"),
        ("[policies.\"a.b\".retry]\ndeadline_quantile_permille = 1001\n", Some("a.b"), Some("retry.deadline_quantile_permille"), "1 to 1000"),
        ("[policies.\"a.b\".amplification]\nmin_per_sec = -1\n", Some("a.b"), Some("amplification.min_per_sec"), "-1"),
        ("[policies.\"a.b\".amplification]\nmax_amplification = -1.0\n", Some("a.b"), Some("amplification.max_amplification"), "0 (off) or 1 to 100"),
        ("[policies.\"a.b\".amplification]\nmax_amplification = \"1.1\"\n", Some("a.b"), Some("amplification.max_amplification"), "1.1"),
        ("[policies.\"a.b\".retry]\ndeadline_quantile_permille = -1\n", Some("a.b"), Some("retry.deadline_quantile_permille"), "-1"),
        ("[policies.\"a.b\".retry]\ndeadline_quantile_permille = 0.9\n", Some("a.b"), Some("retry.deadline_quantile_permille"), "0.9"),
        ("[policies.\"a.b\".amplification]\nupstream_retry = \"sometimes\"\n", Some("a.b"), Some("amplification.upstream_retry"), "sometimes"),
        ("[policies.\"a.b\".amplification]\nupstream_retry = \"shared_allowance\"\n", Some("a.b"), Some("amplification.upstream_retry"), "needs amplification.max_amplification"),
        ("[policies.\"a.b\".retry\nmax_attempts = 3\n", None, None, ""),
    ];
    for (text, key, field, needle) in cases {
        let e = PolicyDocument::from_toml(text)
            .and_then(PolicyDocument::validate)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.key.as_deref(), *key, "{text}: {e}");
        assert_eq!(e.field.as_deref(), *field, "{text}: {e}");
        assert!(e.to_string().contains(needle), "{text}: {e}");
        if !e.message.starts_with("unknown field") && field.is_some() {
            assert!(e.allowed.is_some(), "{text}: {e}");
        }
        // Errors found by normalization (after parsing) have no position.
        if !text.contains("nan")
            && !text.contains("max_amplification")
            && !text.contains("deadline_quantile")
            && !text.contains("shared_allowance")
        {
            assert!(e.line.is_some() && e.column.is_some(), "{text}: {e}");
        }
    }
}

#[test]
fn upstream_retry_reads_and_writes_in_toml_and_json() {
    use recourse::upstream::UpstreamRetry;
    let doc = PolicyDocument::from_toml(
        "[policies.\"a.b\".amplification]\nmax_amplification = 1.1\nupstream_retry = \"shared_allowance\"\n\
         [policies.\"c.d\".amplification]\nupstream_retry = \"not-when-retry\"\n",
    )
    .and_then(PolicyDocument::validate)
    .unwrap();
    let mode = |k| {
        doc.provider
            .policy(PolicyKey::parse(k))
            .unwrap()
            .policy
            .policy
            .amplification
            .upstream_retry
    };
    assert_eq!(mode("a.b"), UpstreamRetry::SharedAllowance);
    assert_eq!(mode("c.d"), UpstreamRetry::NotWhenRetry);
    // Written by name, and left out at its default.
    let mut p = Policy::DEFAULT;
    assert!(!serde_json::to_string(&p)
        .unwrap()
        .contains("upstream_retry"));
    p.amplification.upstream_retry = UpstreamRetry::NotWhenRetry;
    let json = serde_json::to_string(&p).unwrap();
    assert!(
        json.contains("\"upstream_retry\":\"not_when_retry\""),
        "{json}"
    );
    let back: Policy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    let e = serde_json::from_str::<Policy>(r#"{"amplification":{"upstream_retry":3}}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("always"), "{e}");
}

#[test]
fn keys_that_are_empty_or_oversized_are_errors() {
    let long = "k".repeat(MAX_KEY_LEN + 1);
    for key in ["", "  ", long.as_str()] {
        let e = PolicyDocument::from_toml(&format!("[policies.\"{key}\"]\n"))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.key.is_some(), "{e}");
        assert!(e.message.contains("key"), "{e}");
    }
}

#[test]
fn out_of_range_values_are_clamped_and_reported_as_normalize_does() {
    let doc = PolicyDocument::from_toml(
        "[policies.\"a.b\".retry]\nmax_attempts = 50\nmax_backoff = \"10m\"\n",
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(doc.clamped.len(), 1);
    assert_eq!(doc.clamped[0].0, "a.b");
    assert_eq!(
        doc.clamped[0].1.to_string(),
        "retry.max_attempts,retry.max_backoff"
    );
    let found = doc.provider.policy(PolicyKey::parse("a.b")).unwrap();
    assert_eq!(found.policy.policy.retry.max_attempts, 10);
    assert_eq!(
        found.policy.changed.to_string(),
        "retry.max_attempts,retry.max_backoff"
    );
}

#[cfg(feature = "json-schema")]
#[test]
fn the_checked_in_json_schema_is_the_generated_one() {
    let path = repo_file("schemas/policy-document.schema.json");
    let generated = recourse::providers::document::json_schema();
    if std::env::var_os("RECOURSE_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is out of date; regenerate with RECOURSE_BLESS=1 cargo test -p recourse --features json-schema --test document",
        path.display()
    );
    // And it describes the document: the sample's keys are all in it.
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    let text = schema.to_string();
    for key in [
        "initial_backoff",
        "failure_ratio_permille",
        "hedge_delay",
        "additionalProperties",
    ] {
        assert!(text.contains(key), "{key}");
    }
}

#[test]
fn unknown_budget_classifier_and_trigger_names_are_errors_when_names_are_known() {
    use recourse::providers::KnownNames;
    let known = KnownNames {
        budgets: Some(vec!["user-service".into()]),
        classifiers: Some(vec!["http".into(), "grpc".into()]),
        triggers: Some(vec![]),
    };
    let doc = |section: &str, field: &str, name: &str| {
        PolicyDocument::from_toml(&format!("[policies.\"a.b\".{section}]\n{field}\n"))
            .unwrap()
            .validate_with(&known)
            .map(|_| ())
            .err()
            .map(|e| (e.key.unwrap(), e.field.unwrap(), e.message))
            .map(|(k, f, m)| {
                assert_eq!(k, "a.b");
                assert!(m.contains(name), "{m}");
                f
            })
    };
    assert_eq!(
        doc(
            "retry",
            "budget = { name = \"user-servce\" }",
            "user-servce"
        )
        .as_deref(),
        Some("retry.budget.name")
    );
    assert_eq!(
        doc("hedge", "budget = { name = \"nope\" }", "nope").as_deref(),
        Some("hedge.budget.name")
    );
    assert_eq!(
        doc("retry", "classifier = \"htp\"", "htp").as_deref(),
        Some("retry.classifier")
    );
    assert_eq!(
        doc("hedge", "trigger = \"p95\"", "p95").as_deref(),
        Some("hedge.trigger")
    );
    // Known names, and empty names (the defaults), pass.
    assert_eq!(
        doc(
            "retry",
            "budget = { name = \"user-service\" }\nclassifier = \"grpc\"",
            ""
        ),
        None
    );
    assert_eq!(doc("retry", "max_attempts = 2", ""), None);
    // The message lists the known names.
    let e = PolicyDocument::from_toml("[policies.\"a.b\".retry]\nclassifier = \"htp\"\n")
        .unwrap()
        .validate_with(&known)
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("known: http, grpc"), "{e}");
    // Unchecked by default.
    assert!(
        PolicyDocument::from_toml("[policies.\"a.b\".retry]\nclassifier = \"htp\"\n")
            .unwrap()
            .validate()
            .is_ok()
    );
}
