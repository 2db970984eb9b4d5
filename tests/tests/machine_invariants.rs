//! The call machine's invariants over thousands of arbitrary scenarios: the
//! checker in `recourse_tests::invariants`, the same one the `fuzz/` targets
//! run, here as a seeded property test in `cargo test`.
//!
//! Scenarios are decoded from random bytes, exactly as libFuzzer's are, so a
//! failing case shrinks to short bytes and the two harnesses share every
//! input. The runs must also *do* things — hedge, retry, hit deadlines, get
//! denied — or passing means nothing: each suite ends by asserting its
//! coverage table.
//!
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` override the case count and the
//! fixed seed (`PROPTEST_RNG_SEED=$RANDOM` explores new cases).

#![allow(clippy::unwrap_used)]

use core::cell::{Cell, RefCell};
use std::panic;
use std::sync::Once;

use arbitrary::{Arbitrary, Unstructured};
use core::time::Duration;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use recourse_core::policy::{BudgetRef, HedgePolicy, Jitter, Limits, Name, Policy, RetryPolicy};
use recourse_core::{reason, Outcome};
use recourse_tests::invariants::{
    check_machine, check_normalize, check_parse, check_shared, scenario_from_bytes,
    ArbitraryLimits, ArbitraryOptions, ArbitraryOutcome, ArbitraryPolicy, BudgetInput, Coverage,
    Dur, Feature, Finale, FinaleMode, GateInput, RunLimits, Scenario, SharedScenario, Step,
    TriggerInput, When, Width,
};

/// Cases per suite unless `PROPTEST_CASES` says otherwise.
const MACHINE_CASES: u32 = 10_000;
const NORMALIZE_CASES: u32 = 20_000;
const PARSE_CASES: u32 = 20_000;
const SHARED_CASES: u32 = 2_000;
/// The seed unless `PROPTEST_RNG_SEED` says otherwise.
const SEED: u64 = 0x5eed_ca11;

fn config(cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(SEED);
    }
    // The seed is fixed, so a failure reproduces without a regressions
    // file; the report prints the shrunk input.
    c.failure_persistence = None;
    c
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with panics on this thread unprinted: while proptest shrinks a
/// failure, each attempt panics with the checker's long report; the final
/// report (the shrunk case) is printed once, by the runner's error.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let out = f();
    QUIET.with(|q| q.set(false));
    out
}

#[test]
fn machine_invariants_hold_after_every_step() {
    let coverage = RefCell::new(Coverage::default());
    let mut runner = TestRunner::new(config(MACHINE_CASES));
    let result = quietly(|| {
        runner.run(&vec(any::<u8>(), 128..1_600), |bytes| {
            let scenario = scenario_from_bytes(&bytes);
            let c = check_machine(&scenario, RunLimits::TEST);
            coverage.borrow_mut().add(&c);
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let c = coverage.into_inner();
    println!("{c}");
    // Each of these in at least 2 % of the runs (most are far above).
    c.assert_each_at_least(
        0.02,
        &[
            Feature::RawPolicy,
            Feature::Hedged,
            Feature::Retried,
            Feature::HedgeRefused,
            Feature::AttemptTimedOut,
            Feature::HedgeLoserCancelled,
            Feature::BudgetReserved,
            Feature::BudgetDenied,
            Feature::StaleResult,
            Feature::BackwardsTick,
            Feature::WaitedBackoff,
            Feature::WaitedHedgeDelay,
            Feature::WaitedAttemptDeadline,
            Feature::WaitedCallDeadline,
            Feature::AwaitedAttempts,
            Feature::RetryAfterHint,
            Feature::EndedInSteps,
            Feature::Success,
            Feature::NonRetryable,
            Feature::Abort,
            Feature::Exhausted,
            Feature::DeadlineExceeded,
            Feature::Cancelled,
            Feature::VerdictBudgetDenied,
            Feature::CircuitOpen,
        ],
    );
    // Rarer endings, each still reached.
    c.assert_each_at_least(
        0.001,
        &[
            Feature::BackoffBeyondDeadline,
            Feature::RetryAfterBeyondDeadline,
            Feature::ClockSaturated,
        ],
    );
}

/// Two to four calls share their budgets (hedges charged apart a third of
/// the time), their steps interleaved: every budget's conservation law and
/// every call's invariants hold, and the budgets end idle.
#[test]
fn shared_budgets_keep_their_laws_across_calls() {
    let coverage = RefCell::new(Coverage::default());
    let mut runner = TestRunner::new(config(SHARED_CASES));
    let result = quietly(|| {
        runner.run(&vec(any::<u8>(), 256..3_200), |bytes| {
            let mut u = Unstructured::new(&bytes);
            let s = SharedScenario::arbitrary(&mut u).unwrap();
            let c = check_shared(&s, RunLimits::TEST);
            coverage.borrow_mut().add(&c);
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let c = coverage.into_inner();
    c.assert_each_at_least(
        0.02,
        &[
            Feature::Hedged,
            Feature::Retried,
            Feature::HedgeRefused,
            Feature::BudgetReserved,
            Feature::BudgetDenied,
            Feature::VerdictBudgetDenied,
        ],
    );
}

#[test]
fn normalization_follows_the_spec_table() {
    let (ok, rejected) = (Cell::new(0u32), Cell::new(0u32));
    let mut runner = TestRunner::new(config(NORMALIZE_CASES));
    let result = quietly(|| {
        runner.run(&vec(any::<u8>(), 0..200), |bytes| {
            let mut u = Unstructured::new(&bytes);
            let policy = ArbitraryPolicy::arbitrary(&mut u).unwrap();
            let limits = ArbitraryLimits::arbitrary(&mut u).unwrap();
            check_normalize(&policy.0, limits.0);
            let counter = if policy.0.retry.backoff_multiplier.is_finite() {
                &ok
            } else {
                &rejected
            };
            counter.set(counter.get() + 1);
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let cases = ok.get() + rejected.get();
    assert!(
        rejected.get() > cases / 200 && ok.get() > cases / 2,
        "{} normalized, {} rejected: both paths must be exercised",
        ok.get(),
        rejected.get()
    );
}

#[test]
fn parsers_follow_their_rules() {
    let mut runner = TestRunner::new(config(PARSE_CASES));
    let names = prop_oneof![
        any::<String>(),
        "p[0-9]{0,3}(\\.[0-9]{0,2})?",
        "max_extra_load:[0-9]{0,3}(\\.[0-9])?%?",
        "[ \\t]?(none|full|equal|decorrelated|NONE|Full|eQuAl|fixed|fixed_delay)[ \\t]?",
        "[ a-z.]{0,12}",
        "[ .\u{a0}\u{2003}]{0,3}[a-z]{0,3}[ .]{0,3}[a-z.]{0,4}[ ]{0,2}",
    ];
    let result = quietly(|| {
        runner.run(&names, |s| {
            check_parse(&s);
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Inputs the fuzzer once crashed on, replayed through the checker. Each is
/// written out as a scenario (the fuzzer's bytes decode differently once
/// the inputs' decoding changes) and must still reach what it once did.
#[test]
fn fuzz_regressions_stay_fixed() {
    // A raw policy whose call hands out every u16 attempt id: the machine
    // ends it exhausted rather than overflow or reuse an id.
    let coverage = check_machine(&ids_run_out(), RunLimits::FUZZ);
    assert!(
        coverage.attempts >= u64::from(u16::MAX),
        "the regression must hand out every attempt id, it launched {}",
        coverage.attempts
    );
}

/// The fuzzer's `machine-ids-run-out` input (found with the decoding of
/// commit c2d673f).
fn ids_run_out() -> Scenario {
    let policy = Policy {
        retry: RetryPolicy {
            max_attempts: 52_661,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::from_millis(1),
            backoff_multiplier: f64::INFINITY,
            jitter: Jitter::Full,
            timeout_per_attempt: Some(Duration::from_millis(40)),
            overall_timeout: None,
            budget: BudgetRef {
                name: Name::new(),
                cost: 8,
            },
            retry_non_idempotent: true,
            ..RetryPolicy::DEFAULT
        },
        hedge: HedgePolicy {
            enabled: true,
            max_hedges: u32::MAX,
            hedge_delay: Duration::ZERO,
            cancel_on_first_terminal: true,
            ..HedgePolicy::DEFAULT
        },
        ..Policy::DEFAULT
    };
    let retryable = Outcome::retryable(reason::RETRYABLE_ERROR)
        .with_retry_after(Duration::from_secs(96_758_377_893_310));
    Scenario {
        policy: ArbitraryPolicy(policy),
        normalize: Some(ArbitraryLimits(Limits {
            max_hedges_ceiling: 3,
            ..Limits::DEFAULT
        })),
        options: ArbitraryOptions(Limits {
            max_retry_after: Duration::MAX,
            max_hedges_ceiling: 49,
        }),
        width: Width::Eleven,
        seed: 77_709_170_341_600_525,
        gate: GateInput {
            script: Vec::new(),
            budget: BudgetInput::None,
            hedge_budget: None,
            cost: 0,
            trigger: TriggerInput::Fixed,
        },
        start: Dur(Duration::ZERO),
        before_start: Vec::new(),
        finale: Finale {
            mode: FinaleMode::Hang,
            seed: 178,
        },
        steps: vec![
            Step::Tick(When::After(Dur(Duration::from_millis(79)))),
            Step::Tick(When::After(Dur(Duration::from_millis(71)))),
            Step::Tick(When::Now),
            Step::Tick(When::Late(Dur(Duration::from_millis(21)))),
            Step::Finish {
                pick: 255,
                outcome: ArbitraryOutcome(retryable),
                when: When::Now,
            },
        ],
    }
}
