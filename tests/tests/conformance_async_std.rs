//! The runtime conformance suite on async-std: `async_std::task::block_on`
//! with [`AsyncStdTimer`].
//!
//! async-std is discontinued upstream (RUSTSEC-2025-0052); its timer is
//! async-io's, which is what [`AsyncStdTimer`] uses. This file checks that
//! existing async-std programs keep working.

use async_std::task::block_on;
use recourse_runtimes::AsyncStdTimer;
use recourse_tests::conformance;

#[test]
fn backoff_really_sleeps() {
    block_on(conformance::backoff_really_sleeps(AsyncStdTimer::new));
}

#[test]
fn hung_attempt_is_cut_and_retried() {
    block_on(conformance::hung_attempt_is_cut_and_retried(
        AsyncStdTimer::new,
    ));
}

#[test]
fn overall_timeout_bounds_the_call() {
    block_on(conformance::overall_timeout_bounds_the_call(
        AsyncStdTimer::new,
    ));
}

#[test]
fn dropping_the_call_cancels_the_attempt() {
    block_on(conformance::dropping_the_call_cancels_the_attempt(
        AsyncStdTimer::new,
    ));
}
