//! 10,000 calls against a dependency that fails every attempt: the extra
//! load budgets allow, in a deterministic virtual-time run of the real call
//! machine (`tests/examples/budgets.rs` prints the same table).

use core::time::Duration;

use recourse_core::budget::{GrpcThrottle, RetryRatio};
use recourse_tests::load::{run_load, Load, LoadReport};

fn outage() -> Load {
    Load::outage()
}

#[test]
fn without_a_budget_every_call_makes_every_attempt() {
    let r = run_load(&outage(), None);
    assert_eq!(
        r,
        LoadReport {
            calls: 10_000,
            attempts: 30_000,
            denied: 0,
            succeeded: 0
        }
    );
}

#[test]
fn a_retry_ratio_budget_keeps_amplification_at_or_below_1_1() {
    let ratio = RetryRatio::new(Duration::from_secs(10), 10, 50);
    let r = run_load(&outage(), Some(&ratio));
    assert!(r.amplification() <= 1.1, "{r:?}");
    // Retries were allowed (the reserve and 5 % of requests), not shut off.
    assert!(r.attempts > 10_500, "{r:?}");
}

#[test]
fn finagle_defaults_bound_retries_to_20_percent_plus_the_reserve() {
    let r = run_load(&outage(), Some(&RetryRatio::finagle()));
    let retries = r.attempts - 10_000;
    // 20 % of 10,000 requests plus 10/s over the 10 s run, and a little for
    // deposits made before the first expiry.
    assert!((2_000..=2_200).contains(&retries), "{r:?}");
}

#[test]
fn grpc_throttling_stops_retries_once_half_the_tokens_are_gone() {
    let r = run_load(&outage(), Some(&GrpcThrottle::new(100, 100)));
    // Each failure costs 1 token of 100; retries stop at or below 50.
    assert!(r.attempts - 10_000 <= 50, "{r:?}");
    assert!(r.amplification() <= 1.01, "{r:?}");
}

#[test]
fn runs_are_deterministic() {
    let ratio_a = RetryRatio::finagle();
    let ratio_b = RetryRatio::finagle();
    let mut load = outage();
    load.failure_rate = 0.5;
    assert_eq!(
        run_load(&load, Some(&ratio_a)),
        run_load(&load, Some(&ratio_b))
    );
}
