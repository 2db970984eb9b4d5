//! The std executor (`recourse::Executor`, public API only) on tokio's
//! paused clock under arbitrary policies and operations: attempts that
//! succeed, fail, hang or panic after arbitrary delays, calls dropped at
//! arbitrary points, hedging, per-attempt and overall timeouts, budgets
//! that refuse or panic, a panicking observer beside a recording one, and
//! missing policies, budgets, classifiers and triggers.
//!
//! The model and its checks (observer order, one end event, the timeline
//! against the records, containment, the missing-piece modes, budgets back
//! where they started) are `recourse_tests::executor_model`, shared with
//! the `executor` fuzz target; this file draws realistic inputs with
//! proptest and checks that the runs covered every path.

#![allow(clippy::unwrap_used)]

use core::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use recourse::budget::MissingBudgetMode;
use recourse::classify::MissingClassifierMode;
use recourse::hedging::MissingTriggerMode;
use recourse::{MissingPolicyMode, Policy};
use recourse_tests::executor_model::{run, Behaviour, CallInput, Input, Stats};

const CASES: u32 = 2_000;
const SEED: u64 = 0xe8ec_0a11;

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        3 => (0u64..80).prop_map(Behaviour::Succeed),
        5 => (0u64..80).prop_map(Behaviour::Fail),
        1 => Just(Behaviour::Hang),
        1 => (0u64..80).prop_map(Behaviour::Panic),
    ]
}

/// The policy of a proptest input: realistic values only (the fuzz target
/// draws any policy).
fn policy(
    max_attempts: u32,
    per_attempt: Option<u64>,
    overall: Option<u64>,
    hedges: Option<(u32, u64)>,
) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = max_attempts;
    p.retry.initial_backoff = Duration::from_millis(5);
    p.retry.timeout_per_attempt = per_attempt.map(Duration::from_millis);
    p.retry.overall_timeout = overall.map(Duration::from_millis);
    if let (Some(a), Some(o)) = (per_attempt, overall) {
        // Normalization keeps the per-attempt timeout within the overall.
        p.retry.timeout_per_attempt = Some(Duration::from_millis(a.min(o)));
    }
    if let Some((hedges, delay)) = hedges {
        p.hedge.enabled = true;
        p.hedge.max_hedges = hedges;
        p.hedge.hedge_delay = Duration::from_millis(delay);
    }
    p
}

fn input() -> impl Strategy<Value = Input> {
    let call = (
        prop::collection::vec(behaviour(), 1..6),
        prop::option::weighted(0.2, 0u64..200),
    )
        .prop_map(|(script, drop_after)| CallInput { script, drop_after });
    let policy = (
        1u32..5,
        prop::option::weighted(0.4, 5u64..100),
        prop::option::weighted(0.4, 20u64..400),
        prop::option::weighted(0.5, (1u32..4, 10u64..60)),
    )
        .prop_map(|(a, per, overall, hedges)| policy(a, per, overall, hedges));
    let missing = (
        prop::option::weighted(
            0.15,
            prop_oneof![
                Just(MissingBudgetMode::Deny),
                Just(MissingBudgetMode::AllowUnsafe)
            ],
        ),
        prop::option::weighted(
            0.2,
            (
                1usize..4,
                prop_oneof![
                    Just(MissingPolicyMode::Deny),
                    Just(MissingPolicyMode::Allow),
                    Just(MissingPolicyMode::Fallback)
                ],
            ),
        ),
        prop::option::weighted(
            0.1,
            prop_oneof![
                Just(MissingClassifierMode::Fallback),
                Just(MissingClassifierMode::Deny)
            ],
        ),
        prop::option::weighted(
            0.1,
            prop_oneof![
                Just(MissingTriggerMode::Fallback),
                Just(MissingTriggerMode::NoHedges)
            ],
        ),
    );
    (
        policy,
        prop_oneof![Just(u64::MAX), 0u64..20],
        prop::option::weighted(0.15, 1u64..6),
        prop::option::weighted(0.15, 1u64..6),
        prop::bool::weighted(0.3),
        missing,
        any::<u64>(),
        prop::collection::vec(call, 1..8),
    )
        .prop_map(
            |(
                policy,
                ledger_limit,
                decide_panics_every,
                settle_panics_every,
                observer_panics,
                (missing_budget, unknown_key, missing_classifier, missing_trigger),
                seed,
                calls,
            )| Input {
                policy,
                ledger_limit,
                decide_panics_every,
                settle_panics_every,
                observer_panics,
                missing_budget,
                unknown_key,
                missing_classifier,
                missing_trigger,
                seed,
                calls,
            },
        )
}

#[test]
fn the_executor_keeps_its_contracts_on_a_virtual_clock() {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = CASES;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(SEED);
    }
    c.failure_persistence = None;
    let mut runner = TestRunner::new(c);
    // `run` keeps the panics it provokes out of the output.
    let stats = core::cell::RefCell::new(Stats::default());
    let result = runner.run(&input(), |i| {
        run(&i, &mut stats.borrow_mut()).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let s = stats.into_inner();
    eprintln!("{s:?}");
    assert!(
        s.ok > 100
            && s.err > 100
            && s.dropped > 50
            && s.hedges > 100
            && s.refused > 50
            && s.panic_in_budget > 10
            && s.panic_in_operation > 100
            && s.observer_panics > 100
            && s.settle_panics > 50
            && s.missing_budget > 100
            && s.missing_policy > 100
            && s.missing_classifier > 100
            && s.missing_trigger > 50,
        "the runs must succeed, fail, drop, hedge, refuse, contain panics and meet missing \
         budgets, policies, classifiers and triggers: {s:?}"
    );
}
