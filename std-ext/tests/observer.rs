//! Observer order on tokio's paused clock: start, one event per attempt,
//! exactly one end — also for denied calls and calls dropped midway.

mod common;

use core::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::{attempts, ms, one, Recorder};
use recourse::observer::{AttemptRecord, CallSummary};
use recourse::{Executor, MissingPolicyMode, MultiObserver, Observer, Policy, PolicyKey};

fn recorded(provider_policy: Policy) -> (Executor, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let exec = Executor::builder()
        .provider(one("svc.A", provider_policy))
        .observer(Arc::clone(&recorder))
        .build();
    (exec, recorder)
}

#[tokio::test(start_paused = true)]
async fn success_after_retries() {
    let (exec, recorder) = recorded(attempts(3));
    let mut n = 0;
    let result = exec
        .call("svc.A", |_| {
            n += 1;
            let fail = n < 3;
            async move {
                if fail {
                    Err(())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(result, Ok(3));
    assert_eq!(
        recorder.events(),
        [
            "start svc.A",
            "attempt 0 retryable_error",
            "attempt 1 retryable_error",
            "attempt 2 success",
            "success svc.A",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn failure_after_exhaustion() {
    let (exec, recorder) = recorded(attempts(2));
    let result = exec.call("svc.A", |_| async { Err::<(), _>("boom") }).await;
    assert!(result.is_err());
    assert_eq!(
        recorder.events(),
        [
            "start svc.A",
            "attempt 0 retryable_error",
            "attempt 1 retryable_error",
            "failure svc.A retries_exhausted",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_denied_call_still_starts_and_fails() {
    let recorder = Arc::new(Recorder::default());
    let exec = Executor::builder()
        .observer(Arc::clone(&recorder))
        .missing_policy_mode(MissingPolicyMode::Deny)
        .build();
    let result = exec.call("svc.Unknown", |_| async { Ok::<_, ()>(1) }).await;
    assert!(result.is_err());
    assert_eq!(
        recorder.events(),
        ["start svc.Unknown", "failure svc.Unknown no_policy"]
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_call_mid_backoff_reports_one_failure() {
    let mut p = attempts(5);
    p.retry.initial_backoff = ms(100);
    let (exec, recorder) = recorded(p);
    let calls = AtomicU32::new(0);
    let call = exec.call("svc.A", |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>("boom") }
    });
    // The first attempt fails at once; the call is dropped 50 ms into its
    // 100 ms backoff.
    let timed_out = tokio::time::timeout(ms(50), call).await;
    assert!(timed_out.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        recorder.events(),
        [
            "start svc.A",
            "attempt 0 retryable_error",
            "failure svc.A cancelled",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_call_mid_attempt_records_the_cancelled_attempt() {
    let (exec, recorder) = recorded(attempts(3));
    let call = exec.call("svc.A", |_| core::future::pending::<Result<(), ()>>());
    assert!(tokio::time::timeout(ms(5), call).await.is_err());
    assert_eq!(
        recorder.events(),
        [
            "start svc.A",
            "attempt 0 cancelled",
            "failure svc.A cancelled"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_before_its_first_poll_reports_nothing() {
    let (exec, recorder) = recorded(attempts(3));
    let calls = AtomicU32::new(0);
    drop(exec.call("svc.A", |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, ()>(()) }
    }));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(recorder.events().is_empty());
}

/// Records into a shared log with a tag.
struct Tagged(&'static str, Arc<Recorder>);

impl Observer for Tagged {
    fn on_start(&self, key: PolicyKey<'_>, start: &recourse::observer::CallStart) {
        self.1.on_start(PolicyKey::new(self.0, key.name), start);
    }
    fn on_attempt(&self, key: PolicyKey<'_>, record: &AttemptRecord) {
        self.1.on_attempt(key, record);
    }
    fn on_success(&self, key: PolicyKey<'_>, summary: &CallSummary) {
        self.1.on_success(PolicyKey::new(self.0, key.name), summary);
    }
}

#[tokio::test(start_paused = true)]
async fn several_observers_hear_every_event_in_the_order_added() {
    let log = Arc::new(Recorder::default());
    let exec = Executor::builder()
        .provider(one("svc.A", attempts(1)))
        .observer(Tagged("first", Arc::clone(&log)))
        .observer(MultiObserver::new().with(Tagged("second", Arc::clone(&log))))
        .build();
    exec.call("svc.A", |_| async { Ok::<_, ()>(()) })
        .await
        .unwrap();
    assert_eq!(
        log.events(),
        [
            "start first.A",
            "start second.A",
            "attempt 0 success",
            "attempt 0 success",
            "success first.A",
            "success second.A",
        ]
    );
}

/// An observer that panics on every attempt.
struct Panicky;

impl Observer for Panicky {
    fn on_attempt(&self, _: PolicyKey<'_>, _: &AttemptRecord) {
        panic!("observer bug");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_observer_does_not_end_the_call() {
    let log = Arc::new(Recorder::default());
    let exec = Executor::builder()
        .provider(one("svc.A", attempts(2)))
        .observer(Panicky)
        .observer(Arc::clone(&log))
        .build();
    let mut n = 0;
    let result = exec
        .call("svc.A", |_| {
            n += 1;
            let fail = n < 2;
            async move {
                if fail {
                    Err(())
                } else {
                    Ok(())
                }
            }
        })
        .await;
    assert_eq!(result, Ok(()));
    // The other observer heard everything.
    assert_eq!(
        log.events(),
        [
            "start svc.A",
            "attempt 0 retryable_error",
            "attempt 1 success",
            "success svc.A"
        ]
    );
}
