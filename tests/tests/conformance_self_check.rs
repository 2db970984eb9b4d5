//! The conformance suite can fail: a timer whose sleeps end at once (it
//! reads the real clock but never waits) must fail every case.
//!
//! Without this, a suite that asserted nothing about time would pass for
//! every adapter, broken or not.

use core::future::Future;
use core::panic::AssertUnwindSafe;
use std::panic::catch_unwind;

use recourse_core::{Instant, Timer};
use recourse_runtimes::AsyncIoTimer;
use recourse_tests::conformance;

/// A broken adapter: a real clock, and sleeps that complete immediately.
#[derive(Clone, Copy, Default)]
struct NoSleepTimer(AsyncIoTimer);

impl Timer for NoSleepTimer {
    type Sleep = core::future::Ready<()>;
    fn now(&self) -> Instant {
        self.0.now()
    }
    fn sleep_until(&self, _deadline: Instant) -> Self::Sleep {
        core::future::ready(())
    }
}

fn fails(case: impl Future<Output = ()>) -> bool {
    catch_unwind(AssertUnwindSafe(|| smol::block_on(case))).is_err()
}

#[test]
fn backoff_really_sleeps_catches_a_timer_that_does_not_sleep() {
    assert!(fails(conformance::backoff_really_sleeps(
        NoSleepTimer::default
    )));
}

#[test]
fn hung_attempt_case_catches_a_timer_that_does_not_sleep() {
    assert!(fails(conformance::hung_attempt_is_cut_and_retried(
        NoSleepTimer::default
    )));
}

#[test]
fn overall_timeout_case_catches_a_timer_that_does_not_sleep() {
    assert!(fails(conformance::overall_timeout_bounds_the_call(
        NoSleepTimer::default
    )));
}

#[test]
fn dropping_case_catches_a_timer_that_does_not_sleep() {
    assert!(fails(conformance::dropping_the_call_cancels_the_attempt(
        NoSleepTimer::default
    )));
}
