//! The executor's gate keeps a closed circuit's permit with its key's kept
//! breaker (issue 16: the breaker's margin), and counts the call's success
//! through it without looking the breaker up again. What the breaker
//! decides is unchanged: a success counted that way resets the failure
//! count as a recorded one does, failures still trip the breaker at its
//! threshold, and a thread's first call (admitted under the breaker's
//! lock) keeps its permit the same way.

mod common;
use common::{poll_once, JumpClock};

use core::future::ready;

use recourse::{CallKey, Error, Executor, Policy, StaticProvider};

/// An executor whose every key runs one attempt under a breaker that
/// opens after `threshold` consecutive failures (no ratio rule).
fn guarded(threshold: u32) -> Executor<JumpClock> {
    let mut policy = Policy::DEFAULT;
    policy.retry.max_attempts = 1;
    policy.circuit.enabled = true;
    policy.circuit.threshold = threshold;
    policy.circuit.failure_ratio_permille = 0;
    let provider = StaticProvider::builder()
        .default_policy(policy)
        .expect("valid policy")
        .build();
    Executor::builder()
        .provider(provider)
        .timer(JumpClock::default())
        .build()
}

/// One call of `key` that ends `ok` or fails; what the caller got.
fn call(exec: &Executor<JumpClock>, key: &CallKey, ok: bool) -> Result<(), Error<&'static str>> {
    poll_once(exec.call_key(key, move |_| ready(if ok { Ok(()) } else { Err("down") })))
}

fn is_open(result: &Result<(), Error<&'static str>>) -> bool {
    matches!(result, Err(Error::CircuitOpen { .. }))
}

/// Runs `f` on a thread of its own (its first call takes the slow
/// admission: the thread holds no shard of the breaker yet).
fn on_fresh_thread(f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(f).join().expect("the thread's calls");
    });
}

#[test]
fn successes_counted_through_the_kept_permit_reset_the_failure_count() {
    let exec = guarded(2);
    let key = CallKey::new("svc.Reset");
    on_fresh_thread(|| {
        for round in 0..50 {
            // A failure, then a success: the success (counted at once or
            // under the lock) resets the count, so the next failure is
            // again the first.
            let failed = call(&exec, &key, false);
            assert!(
                matches!(
                    failed,
                    Err(Error::RetriesExhausted {
                        last: Some("down"),
                        attempts: 1
                    })
                ),
                "round {round}: {failed:?}"
            );
            assert_eq!(call(&exec, &key, true), Ok(()), "round {round}");
            // Quiet successes, each counted in the thread's shard.
            for _ in 0..3 {
                assert_eq!(call(&exec, &key, true), Ok(()), "round {round}");
            }
        }
        // Two failures in a row: open.
        assert!(!is_open(&call(&exec, &key, false)));
        assert!(!is_open(&call(&exec, &key, false)));
        assert!(is_open(&call(&exec, &key, true)), "the breaker opened");
    });
}

#[test]
fn a_threads_first_call_keeps_its_permit_and_its_success_counts() {
    let exec = guarded(3);
    let key = CallKey::new("svc.First");
    // Two failures on this thread (threshold 3: still closed).
    assert!(!is_open(&call(&exec, &key, false)));
    assert!(!is_open(&call(&exec, &key, false)));
    // Another thread's first call succeeds: admitted under the lock, its
    // permit kept with the breaker; its success resets the count.
    on_fresh_thread(|| assert_eq!(call(&exec, &key, true), Ok(())));
    // So two more failures leave it closed, and the third opens it.
    assert!(!is_open(&call(&exec, &key, false)));
    assert!(!is_open(&call(&exec, &key, false)));
    assert!(!is_open(&call(&exec, &key, false)));
    assert!(is_open(&call(&exec, &key, true)), "the breaker opened");
}
