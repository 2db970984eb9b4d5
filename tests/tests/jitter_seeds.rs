//! Concurrent calls through `recourse_core::call` without an explicit RNG
//! draw independent jitter.

use core::future::IntoFuture;
use std::collections::HashSet;

use futures_util::future::join_all;
use recourse_core::{call, AttemptInfo, Jitter};
use recourse_runtimes::TokioTimer;
use recourse_tests::{ms, policy, Recorder, KEY};

/// Concurrent calls must draw independent jitter, or clients that fail
/// together retry together — the herd jitter exists to break up
/// (`core/src/backoff.rs` module docs).
///
/// Regression: seeding from `timer.now()` alone gave fresh per-call timers
/// (whose clocks read about zero) a handful of distinct seeds, exactly one
/// on tokio's paused clock, which is why this runs paused.
#[tokio::test(start_paused = true)]
async fn concurrent_calls_draw_independent_jitter() {
    const CALLS: usize = 100;
    // Full jitter over [0, 100 ms) in nanoseconds: with independent seeds,
    // two equal draws among 100 are practically impossible.
    let policy = policy(|r| {
        r.max_attempts = 2;
        r.initial_backoff = ms(100);
        r.jitter = Jitter::Full;
    });
    let recorders: Vec<Recorder> = (0..CALLS).map(|_| Recorder::new()).collect();
    let calls = recorders.iter().map(|rec| {
        call(
            KEY,
            &policy,
            TokioTimer::new(),
            |info: AttemptInfo| async move {
                if info.retry_index == 0 {
                    Err(())
                } else {
                    Ok(())
                }
            },
        )
        .observer(rec.clone())
        .into_future()
    });
    let results = join_all(calls).await;
    assert!(results.iter().all(Result::is_ok));
    let backoffs: HashSet<_> = recorders.iter().map(|r| r.attempts()[1].backoff).collect();
    assert!(
        backoffs.len() >= CALLS * 9 / 10,
        "{CALLS} concurrent calls drew only {} distinct backoffs: {backoffs:?}",
        backoffs.len()
    );
}
