//! The runtime conformance suite on smol: `smol::block_on` with
//! [`AsyncIoTimer`].

use recourse_runtimes::AsyncIoTimer;
use recourse_tests::conformance;

#[test]
fn backoff_really_sleeps() {
    smol::block_on(conformance::backoff_really_sleeps(AsyncIoTimer::new));
}

#[test]
fn hung_attempt_is_cut_and_retried() {
    smol::block_on(conformance::hung_attempt_is_cut_and_retried(
        AsyncIoTimer::new,
    ));
}

#[test]
fn overall_timeout_bounds_the_call() {
    smol::block_on(conformance::overall_timeout_bounds_the_call(
        AsyncIoTimer::new,
    ));
}

#[test]
fn dropping_the_call_cancels_the_attempt() {
    smol::block_on(conformance::dropping_the_call_cancels_the_attempt(
        AsyncIoTimer::new,
    ));
}
