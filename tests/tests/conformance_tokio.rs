//! The runtime conformance suite on tokio: once on the real clock, once on
//! the paused clock (where the same assertions hold in virtual time and the
//! tests finish instantly).

use recourse_runtimes::TokioTimer;
use recourse_tests::conformance;

mod real_clock {
    use super::*;

    #[tokio::test]
    async fn backoff_really_sleeps() {
        conformance::backoff_really_sleeps(TokioTimer::new).await;
    }

    #[tokio::test]
    async fn hung_attempt_is_cut_and_retried() {
        conformance::hung_attempt_is_cut_and_retried(TokioTimer::new).await;
    }

    #[tokio::test]
    async fn overall_timeout_bounds_the_call() {
        conformance::overall_timeout_bounds_the_call(TokioTimer::new).await;
    }

    #[tokio::test]
    async fn dropping_the_call_cancels_the_attempt() {
        conformance::dropping_the_call_cancels_the_attempt(TokioTimer::new).await;
    }
}

mod paused_clock {
    use super::*;

    /// Runs `case` on the paused clock and checks it spent less real time
    /// than virtual time: on a running clock real time is never less than
    /// the time slept, on the paused one the sleeps take no real time.
    async fn instantly(case: impl core::future::Future<Output = ()>) {
        let real = std::time::Instant::now();
        let virtual_start = tokio::time::Instant::now();
        case.await;
        let (real, virt) = (real.elapsed(), virtual_start.elapsed());
        assert!(!virt.is_zero(), "the case slept on the paused clock");
        assert!(
            real < virt,
            "paused clock, yet {real:?} of real time passed for {virt:?} of virtual time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_really_sleeps() {
        instantly(conformance::backoff_really_sleeps(TokioTimer::new)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn hung_attempt_is_cut_and_retried() {
        instantly(conformance::hung_attempt_is_cut_and_retried(
            TokioTimer::new,
        ))
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn overall_timeout_bounds_the_call() {
        instantly(conformance::overall_timeout_bounds_the_call(
            TokioTimer::new,
        ))
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_call_cancels_the_attempt() {
        instantly(conformance::dropping_the_call_cancels_the_attempt(
            TokioTimer::new,
        ))
        .await;
    }
}
