//! Typos caught early: a policy naming a budget, classifier or trigger the
//! executor does not have is an error when the executor is built (or the
//! policy checked), naming the key, the field and the missing name; the
//! strict missing-policy mode makes an unknown key an error; every fallback
//! to a default policy is counted and shown in the timeline.

use core::time::Duration;

use recourse::names::NameKind;
use recourse::provider::{PolicyLookup, ProviderError};
use recourse::providers::{Layered, PolicyFn};
use recourse::{
    BudgetRegistry, ClassifierRegistry, Error, Executor, HedgePolicy, MissingPolicyMode, Outcome,
    Policy, PolicyKey, PolicyProvider, StaticProvider, UnknownName,
};

fn ratio() -> recourse::budget::RetryRatio {
    recourse::budget::RetryRatio::finagle()
}

/// A control plane that is down.
struct Down;

impl PolicyProvider for Down {
    fn policy(&self, _: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        Err(ProviderError::Unavailable("control plane down".to_owned()))
    }
}

fn registries() -> (BudgetRegistry, ClassifierRegistry) {
    (
        BudgetRegistry::new().with("retries", ratio()),
        ClassifierRegistry::new().with("status", |r: &Result<u16, ()>| match r {
            Ok(200) => Outcome::SUCCESS,
            _ => Outcome::retryable("unavailable"),
        }),
    )
}

fn build(provider: StaticProvider) -> Result<Executor, UnknownName> {
    let (budgets, classifiers) = registries();
    Executor::builder()
        .provider(provider)
        .budgets(budgets)
        .classifiers(classifiers)
        .try_build()
}

fn one(key: &str, policy: Policy) -> StaticProvider {
    StaticProvider::builder()
        .policy(key, policy)
        .expect("a valid policy")
        .build()
}

#[test]
fn every_name_a_policy_refers_to_must_exist_when_the_executor_is_built() {
    let ok = Policy::retries(2)
        .budget("retries")
        .and_then(|p| p.classifier("status"))
        .expect("short names")
        .hedge(
            HedgePolicy::after(Duration::from_millis(50))
                .trigger("p95")
                .and_then(|h| h.budget("retries"))
                .expect("short names"),
        );
    assert!(build(one("svc.Get", ok.clone())).is_ok());

    let cases: [(Policy, &str, &str, NameKind); 4] = [
        (
            ok.clone().budget("retires").expect("short"),
            "retry.budget.name",
            "retires",
            NameKind::Budget,
        ),
        (
            ok.clone().classifier("stauts").expect("short"),
            "retry.classifier",
            "stauts",
            NameKind::Classifier,
        ),
        (
            ok.clone().hedge(
                HedgePolicy::after(Duration::from_millis(50))
                    .trigger("p955")
                    .expect("short"),
            ),
            "hedge.trigger",
            "p955",
            NameKind::Trigger,
        ),
        (
            ok.clone().hedge(
                HedgePolicy::after(Duration::from_millis(50))
                    .budget("hedges")
                    .expect("short"),
            ),
            "hedge.budget.name",
            "hedges",
            NameKind::Budget,
        ),
    ];
    for (policy, field, name, kind) in cases {
        let e = build(one("svc.Get", policy)).expect_err(field);
        assert_eq!(
            (e.key.as_str(), e.field, e.name.as_str(), e.kind),
            ("svc.Get", field, name, kind)
        );
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "policy `svc.Get`: field `{field}` names {} `{name}`",
                kind.as_str()
            )),
            "{text}"
        );
    }

    // The known names are in the message.
    let e = build(one(
        "svc.Get",
        Policy::retries(1).budget("ratio").expect("short"),
    ))
    .expect_err("unknown budget");
    assert_eq!(e.known, ["retries"]);
    assert!(e.to_string().ends_with("(known: retries)"), "{e}");

    // A provider's default policy is checked too, under the key `default`.
    let provider = StaticProvider::builder()
        .default_policy(Policy::retries(1).classifier("nope").expect("short"))
        .expect("valid")
        .build();
    let e = build(provider).expect_err("unknown classifier in the default");
    assert_eq!((e.key.as_str(), e.field), ("default", "retry.classifier"));

    // A disabled hedge section is not checked.
    let mut off = Policy::retries(1);
    off.hedge = HedgePolicy::DEFAULT.trigger("p955").expect("short");
    assert!(build(one("svc.Get", off)).is_ok());
}

#[test]
fn layered_providers_list_every_layer_and_check_policy_checks_one() {
    let (budgets, classifiers) = registries();
    let top = one("svc.Get", Policy::retries(1));
    let bottom = one("svc.Put", Policy::retries(1).budget("nope").expect("short"));
    let e = Executor::builder()
        .provider(Layered::new().layer(top).layer(bottom))
        .budgets(budgets)
        .classifiers(classifiers)
        .try_build()
        .expect_err("the bottom layer's typo");
    assert_eq!((e.key.as_str(), e.field), ("svc.Put", "retry.budget.name"));

    // A provider that cannot list its policies (a function) is not checked
    // at build time; a control plane checks a policy before handing it over.
    let exec = Executor::builder()
        .provider(PolicyFn::new(|_| None))
        .try_build()
        .expect("nothing to list");
    let e = exec
        .check_policy(
            "svc.Get",
            &Policy::retries(1).budget("nope").expect("short"),
        )
        .expect_err("no budgets registered");
    assert_eq!(
        (e.key.as_str(), e.field, e.kind),
        ("svc.Get", "retry.budget.name", NameKind::Budget)
    );
    assert!(exec.check_policy("svc.Get", &Policy::retries(1)).is_ok());
}

#[tokio::test(start_paused = true)]
async fn strict_mode_makes_an_unknown_key_an_error_and_an_outage_a_fallback() {
    let exec = Executor::builder()
        .provider(one("svc.Get", Policy::retries(1)))
        .missing_policy_mode(MissingPolicyMode::Strict)
        .build();
    let mut calls = 0;
    let (r, t) = exec
        .call_with_timeline("svc.Gte", |_| {
            calls += 1;
            async { Ok::<_, ()>(1) }
        })
        .await;
    assert_eq!(r, Err(Error::NoPolicy));
    assert_eq!(calls, 0, "an unknown key runs nothing");
    assert_eq!(t.attribute("missing_policy_mode"), Some("strict"));
    assert_eq!(exec.policy_fallbacks(), 0);
    assert_eq!(
        exec.call("svc.Get", |_| async { Ok::<_, ()>(1) }).await,
        Ok(1)
    );

    // A provider that cannot answer: the default policy, counted.
    let exec = Executor::builder()
        .provider(Down)
        .missing_policy_mode(MissingPolicyMode::Strict)
        .build();
    let (r, t) = exec
        .call_with_timeline("svc.Get", |_| async { Err::<u32, _>("down") })
        .await;
    assert!(
        matches!(r, Err(Error::RetriesExhausted { attempts: 3, .. })),
        "{r:?}"
    );
    assert_eq!(t.attribute("policy_fallback"), Some("true"));
    assert_eq!(exec.policy_fallbacks(), 1);
}

#[tokio::test(start_paused = true)]
async fn every_fallback_to_a_default_policy_is_counted_and_in_the_timeline() {
    let provider = StaticProvider::builder()
        .policy("svc.Get", Policy::retries(1))
        .and_then(|b| b.default_policy(Policy::once()))
        .expect("valid")
        .build();
    let exec = Executor::builder().provider(provider).build();
    let (_, t) = exec
        .call_with_timeline("svc.Get", |_| async { Ok::<_, ()>(1) })
        .await;
    assert_eq!(t.attribute("policy_fallback"), None);
    assert_eq!(exec.policy_fallbacks(), 0);
    // The provider's default policy.
    let (_, t) = exec
        .call_with_timeline("svc.Other", |_| async { Ok::<_, ()>(1) })
        .await;
    assert_eq!(t.attribute("policy_fallback"), Some("true"));
    assert_eq!(t.attribute("policy_source"), Some("default"));
    // Without a timeline, still counted.
    let _ = exec.call("svc.Other", |_| async { Ok::<_, ()>(1) }).await;
    assert_eq!(exec.policy_fallbacks(), 2);

    // The missing-policy mode's fallback (the facade's situation).
    let exec = Executor::new();
    let (_, t) = exec
        .call_with_timeline("svc.Get", |_| async { Ok::<_, ()>(1) })
        .await;
    assert_eq!(t.attribute("policy_fallback"), Some("true"));
    assert_eq!(t.attribute("missing_policy_mode"), Some("fallback"));
    assert_eq!(exec.policy_fallbacks(), 1);
}

#[tokio::test(start_paused = true)]
async fn each_registry_carries_its_own_missing_mode() {
    use recourse::budget::MissingBudgetMode;
    use recourse::classify::MissingClassifierMode;

    let policy = Policy::retries(2)
        .budget("nope")
        .and_then(|p| p.classifier("nope"))
        .expect("short names");
    // Defaults: a missing budget denies (nothing runs).
    let exec = Executor::builder()
        .provider(one("svc.Get", policy.clone()))
        .build();
    let r = exec.call("svc.Get", |_| async { Err::<u32, _>("x") }).await;
    assert!(
        matches!(
            r,
            Err(Error::BudgetDenied {
                reason: "budget_not_found",
                last: None
            })
        ),
        "{r:?}"
    );

    // The registries' own modes: a missing budget lets attempts run, a
    // missing classifier fails closed (one attempt, non-retryable).
    let exec = Executor::builder()
        .provider(one("svc.Get", policy))
        .budgets(BudgetRegistry::new().on_missing(MissingBudgetMode::AllowUnsafe))
        .classifiers(ClassifierRegistry::new().on_missing(MissingClassifierMode::Deny))
        .build();
    let mut calls = 0;
    let r = exec
        .call("svc.Get", |_| {
            calls += 1;
            async { Err::<u32, _>("x") }
        })
        .await;
    assert!(
        matches!(r, Err(Error::Operation { error: "x", .. })),
        "{r:?}"
    );
    assert_eq!(calls, 1);
}

/// A policy file: the first document is checked by `try_build`, and every
/// reload against the executor's registries, naming the file, key and field.
#[cfg(feature = "file")]
#[test]
fn a_policy_file_with_a_misspelt_budget_is_rejected_on_load_and_on_reload() {
    use recourse::providers::{FileProvider, Watch};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("policies.toml");
    let doc = |budget: &str| {
        format!(
            "[policies.\"svc.Get\".retry]\nmax_attempts = 2\nbudget = {{ name = \"{budget}\" }}\n"
        )
    };

    // The first document, found by `try_build` through the provider's listing.
    std::fs::write(&path, doc("retires")).expect("write");
    let file = FileProvider::builder(&path)
        .watch(Watch::Off)
        .build()
        .expect("a valid document");
    let builder = Executor::builder().budgets(BudgetRegistry::new().with("retries", ratio()));
    let e = builder
        .provider(file)
        .try_build()
        .expect_err("a misspelt budget in the file");
    assert_eq!(
        (e.key.as_str(), e.field, e.name.as_str()),
        ("svc.Get", "retry.budget.name", "retires")
    );

    // With the executor's names, the provider rejects such a document itself,
    // on load and on every reload (the last good one stays).
    let builder = Executor::builder().budgets(BudgetRegistry::new().with("retries", ratio()));
    let err = FileProvider::builder(&path)
        .watch(Watch::Off)
        .known_names(builder.known_names())
        .build()
        .expect_err("the provider checks the names");
    let text = err.to_string();
    assert!(text.contains("policies.toml"), "{text}");
    assert!(
        text.contains("policy `svc.Get`: field `retry.budget.name`"),
        "{text}"
    );
    assert!(text.contains("retires"), "{text}");

    std::fs::write(&path, doc("retries")).expect("write");
    let file = FileProvider::builder(&path)
        .watch(Watch::Off)
        .known_names(builder.known_names())
        .build()
        .expect("a valid document");
    std::fs::write(&path, doc("retires")).expect("write");
    assert!(
        file.reload().is_err(),
        "a reload naming a missing budget is rejected"
    );
    assert!(
        builder.provider(file).try_build().is_ok(),
        "the last good document stays"
    );
}
