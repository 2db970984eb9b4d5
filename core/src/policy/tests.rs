//! Tests of `policy.rs`.

use super::*;
use std::string::ToString;

#[test]
fn jitter_parse() {
    assert_eq!("full".parse::<Jitter>(), Ok(Jitter::Full));
    assert_eq!(" Decorrelated ".parse::<Jitter>(), Ok(Jitter::Decorrelated));
    assert_eq!("".parse::<Jitter>(), Ok(Jitter::None));
    let e = "gaussian".parse::<Jitter>().unwrap_err();
    assert_eq!(e.field, "retry.jitter");
    assert_eq!(
        e.to_string(),
        "invalid policy field `retry.jitter`: unknown jitter kind; \
         expected one of none, full, equal, decorrelated"
    );
}

#[test]
fn builders_set_what_they_name_and_stay_const() {
    const P: Policy = Policy::retries(4)
        .backoff(Duration::from_millis(20), Duration::from_secs(1))
        .multiplier(3.0)
        .jitter(Jitter::Equal)
        .attempt_timeout(Duration::from_millis(300))
        .overall_timeout(Duration::from_secs(2))
        .retry_non_idempotent(true)
        .deadline_quantile_permille(900)
        .hedge(HedgePolicy::after(Duration::from_millis(50)).max_hedges(1))
        .circuit(
            CircuitPolicy::after_failures(3)
                .cooldown(Duration::from_secs(5))
                .failure_ratio(500, Duration::from_secs(20), 10)
                .half_open(2, 2),
        )
        .amplification(AmplificationPolicy::at_most(1.1).min_per_sec(0));
    let mut by_hand = Policy::DEFAULT;
    by_hand.retry.max_attempts = 5;
    by_hand.retry.initial_backoff = Duration::from_millis(20);
    by_hand.retry.max_backoff = Duration::from_secs(1);
    by_hand.retry.backoff_multiplier = 3.0;
    by_hand.retry.jitter = Jitter::Equal;
    by_hand.retry.timeout_per_attempt = Some(Duration::from_millis(300));
    by_hand.retry.overall_timeout = Some(Duration::from_secs(2));
    by_hand.retry.retry_non_idempotent = true;
    by_hand.retry.deadline_quantile_permille = 900;
    by_hand.hedge.enabled = true;
    by_hand.hedge.max_hedges = 1;
    by_hand.hedge.hedge_delay = Duration::from_millis(50);
    by_hand.circuit.enabled = true;
    by_hand.circuit.threshold = 3;
    by_hand.circuit.cooldown = Duration::from_secs(5);
    by_hand.circuit.failure_ratio_permille = 500;
    by_hand.circuit.window = Duration::from_secs(20);
    by_hand.circuit.min_calls = 10;
    by_hand.circuit.half_open_max_probes = 2;
    by_hand.circuit.half_open_successes = 2;
    by_hand.amplification.max_amplification = 1.1;
    by_hand.amplification.min_per_sec = 0;
    assert_eq!(P, by_hand);
    assert_eq!(Policy::once().retry.max_attempts, 1);
    assert_eq!(Policy::retries(u32::MAX).retry.max_attempts, u32::MAX);
    assert_eq!(Policy::DEFAULT.max_attempts(7).retry.max_attempts, 7);
    let mut retry = RetryPolicy::DEFAULT.budget_cost(2);
    retry.max_attempts = 2;
    assert_eq!(Policy::DEFAULT.retry(retry.clone()).retry, retry);
}

#[test]
fn name_setters_know_their_field() {
    let long = "x".repeat(NAME_CAPACITY + 1);
    let fits = "y".repeat(NAME_CAPACITY);
    let cases: [(Result<Policy, PolicyError>, &str); 4] = [
        (Policy::DEFAULT.budget(&long), "retry.budget.name"),
        (Policy::DEFAULT.classifier(&long), "retry.classifier"),
        (
            HedgePolicy::DEFAULT
                .trigger(&long)
                .map(|h| Policy::DEFAULT.hedge(h)),
            "hedge.trigger",
        ),
        (
            HedgePolicy::DEFAULT
                .budget(&long)
                .map(|h| Policy::DEFAULT.hedge(h)),
            "hedge.budget.name",
        ),
    ];
    for (result, field) in cases {
        assert_eq!(
            result,
            Err(PolicyError::new(field, Problem::NameTooLong)),
            "{field}"
        );
    }
    let p = Policy::DEFAULT
        .budget(&fits)
        .and_then(|p| p.classifier("status"))
        .unwrap();
    assert_eq!(p.retry.budget.name, fits.as_str());
    assert_eq!(p.retry.classifier.as_str(), "status");
    let h = HedgePolicy::DEFAULT
        .trigger("p95")
        .unwrap()
        .budget("h")
        .unwrap();
    assert_eq!((h.trigger.as_str(), h.budget.name.as_str()), ("p95", "h"));
}

#[test]
fn names_read_like_strings() {
    let n = Name::try_from("retries").unwrap();
    assert_eq!(n, "retries");
    assert_eq!(&*n, "retries");
    assert_eq!(n.to_string(), "retries");
    assert_eq!(std::format!("{n:?}"), "\"retries\"");
    assert!(Name::new().is_empty());
    assert_eq!(
        "ratio".parse::<Name>(),
        Ok(Name::try_from("ratio").unwrap())
    );
    let e = Name::try_from("x".repeat(33).as_str()).unwrap_err();
    assert_eq!(e, NameTooLong);
    assert_eq!(e.to_string(), "longer than 32 bytes");
}

#[test]
fn long_names_are_errors() {
    assert!(name("retry.budget.name", "ratio").is_ok());
    let e = name("retry.budget.name", &"x".repeat(33)).unwrap_err();
    assert_eq!(e.field, "retry.budget.name");
    assert_eq!(e.problem, Problem::NameTooLong);
}
