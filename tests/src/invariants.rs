//! The call machine's invariants, checked after every step of arbitrary
//! runs: the one checker behind the `machine_invariants` proptest suite and
//! the `fuzz/` targets.
//!
//! Why a model and not a handful of asserts: the machine's contracts are
//! about sequences — every launched attempt ends exactly once, no launch
//! after the deadline, the verdict agrees with what was fed — so the checker
//! follows the whole call. It sees every event fed, every action returned
//! and every call made on the gate, and panics at the first step that breaks
//! a rule, with the recent trace and the scenario.
//!
//! How to use it:
//!
//! 1. build a [`Scenario`] (a policy, executor options, a gate with a real
//!    budget, and what the world does) — from fuzzer bytes with
//!    [`Arbitrary`], or from any bytes with
//!    [`scenario_from_bytes`];
//! 2. [`check_machine`] runs it twice (the runs must agree action for action)
//!    and returns what it covered, for suites that must not pass vacuously;
//! 3. [`check_shared`] runs two to four such calls sharing their budgets,
//!    steps interleaved ([`SharedScenario`]);
//! 4. [`check_normalize`] and [`check_parse`] do the same for policy
//!    normalization and the name parsers.
//!
//! What is checked, after every step:
//!
//! - **bounded work**: retry groups ≤ `max_attempts`; hedges per group ≤ the
//!   machine's `max_hedges()`; attempts ≤ `max_attempts × (1 + max_hedges)`;
//!   in flight ≤ `N`; a primary never beside other attempts;
//! - **deadlines**: no launch (nor gate consultation) at or after the overall
//!   deadline; each attempt's deadline is its timeout clipped to the overall
//!   one and still ahead; every `Wait` is after now and never past a pending
//!   deadline; an attempt is cut only once its deadline is due;
//! - **ends once**: every launched attempt ends exactly once (reported,
//!   cut, or dropped with the call); the gate hears `attempt_ended` exactly
//!   once per admitted attempt and `call_ended` exactly once, last; every
//!   budget reservation is settled exactly once, and a `Concurrency` budget
//!   is back to zero;
//! - **budget conservation**: around every `decide` and `settle`, each
//!   built-in budget's tokens or balance change exactly as its docs say
//!   (never above capacity, an allowed attempt spends exactly its cost, a
//!   denial spends nothing and only when too little is left, refunds and
//!   success credits as documented); parameters and costs range over all
//!   of `u32` now and then; hedges are charged to a budget of their own
//!   a third of the time; several calls share budgets
//!   ([`check_shared`]);
//! - **after the end**: `Finish` again and again, and nothing else — no
//!   launch, no gate call; nothing starts after a cancellation;
//! - **time**: the machine's clock is the latest time fed (never back),
//!   up to [`Instant::MAX`](recourse_core::Instant::MAX), where timeouts
//!   and backoffs saturate to now (an attempt is launched and cut at once,
//!   an overall timeout ends the call at its start); records start at their
//!   launch and end at the clock;
//! - **verdicts**: `Success(id)` only for an attempt fed a success;
//!   `last` names an attempt that failed; each cause is explained by what was
//!   fed (non-retryable by a non-retryable result, `deadline_exceeded` by the
//!   clock reaching the deadline, `cancelled` by a cancel, `budget_denied` by
//!   a refusal); a held non-retryable result is never masked by a later
//!   retryable one; where the verdict is forced the model predicts it;
//! - **backoff**: a retry-after hint fixes the sleep (capped by the
//!   executor); otherwise the sleep is exactly the next delay of a reference
//!   schedule rebuilt from the docs (base × multiplier, capped; each jitter
//!   kind drawn from the same seeded RNG stream, and within its documented
//!   range); a delay reaching the deadline ends the call
//!   `backoff_beyond_deadline`; the record reports the sleep;
//! - **hedge timing**: the trigger is told the policy's `hedge_delay`; the
//!   fixed-delay and quantile triggers answer as documented (hedge `k` at
//!   `k ×` the delay, or the quantile but at least 1 ms, after the group's
//!   primary; until then "ask again at that instant"), and the machine
//!   hedges and waits by those answers;
//! - **liveness**: a driver that completes its attempts sees the call end
//!   within the attempt bound; a cancel ends it at once;
//! - **determinism**: the same scenario gives the same actions.

mod checker;
mod conservation;
mod coverage;
mod gate;
mod input;
mod normalize;
mod parse;
mod shared;
mod world;

use arbitrary::{Arbitrary, Unstructured};

pub use coverage::{Coverage, Feature};
pub use input::{
    Answer, ArbitraryLimits, ArbitraryOptions, ArbitraryOutcome, ArbitraryPolicy, BudgetInput,
    ChaosAnswer, Count, Dur, Finale, FinaleMode, GateInput, Scenario, Step, TriggerInput, When,
    Width, MAX_STEPS,
};
pub use normalize::check_normalize;
pub use parse::check_parse;
pub use shared::{check_shared, SharedScenario};
pub use world::{Avoid, RunLimits, HORIZON};

/// Runs `scenario` through the checker twice; panics at the first broken
/// invariant, or when the two runs differ. Returns what the run covered.
pub fn check_machine(scenario: &Scenario, limits: RunLimits) -> Coverage {
    let (coverage, first) = world::run(scenario, limits);
    let (_, second) = world::run(scenario, limits);
    assert_eq!(
        first, second,
        "determinism: the same scenario gave different actions\n{scenario:#?}"
    );
    coverage
}

/// The scenario `data` decodes to (all of it is used: the steps take what
/// the fixed fields leave).
pub fn scenario_from_bytes(data: &[u8]) -> Scenario {
    let mut u = Unstructured::new(data);
    // Every field reads a default once the bytes run out.
    Scenario::arbitrary(&mut u).expect("decoding a scenario cannot fail")
}
