//! The executor on tokio's paused clock: policies per key, normalization and
//! missing-policy attributes, the provider asked once, seeded jitter, the
//! timeline table.

mod common;

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;
use std::sync::Arc;

use common::{attempts, ms, one, Counting};
use recourse::provider::{PolicyLookup, ProviderError};
use recourse::timer::{DefaultTimer, TimerSource};
use recourse::{
    AttemptInfo, Cause, Error, Executor, Jitter, MissingPolicyMode, Outcome, Policy, PolicyKey,
    PolicyProvider, StaticProvider,
};

/// An operation that always fails at once, counting its calls.
fn failing(
    calls: &AtomicU32,
) -> impl FnMut(AttemptInfo) -> core::future::Ready<Result<(), &'static str>> + '_ {
    move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        core::future::ready(Err("boom"))
    }
}

#[tokio::test(start_paused = true)]
async fn the_default_timer_is_tokios_inside_a_runtime() {
    assert!(DefaultTimer.timer().is_tokio());
}

#[test]
fn the_default_timer_is_async_ios_outside_a_runtime() {
    assert!(!DefaultTimer.timer().is_tokio());
}

#[tokio::test(start_paused = true)]
async fn per_key_policy_and_provider_default() {
    let provider = StaticProvider::builder()
        .policy("svc.A", attempts(2))
        .unwrap()
        .default_policy(attempts(4))
        .unwrap()
        .build();
    let exec = Executor::builder().provider(provider).build();

    let calls = AtomicU32::new(0);
    let (result, timeline) = exec.call_with_timeline("svc.A", failing(&calls)).await;
    assert_eq!(
        result,
        Err(Error::RetriesExhausted {
            last: Some("boom"),
            attempts: 2
        })
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(timeline.attribute("policy_source"), Some("static"));
    assert_eq!(timeline.attribute("missing_policy_mode"), None);

    let calls = AtomicU32::new(0);
    let (result, timeline) = exec.call_with_timeline("svc.B", failing(&calls)).await;
    assert!(matches!(
        result,
        Err(Error::RetriesExhausted { attempts: 4, .. })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(timeline.attribute("policy_source"), Some("default"));
    assert_eq!(timeline.attribute("missing_policy_mode"), None);
    assert_eq!(timeline.attribute("policy_error"), None);
}

#[tokio::test(start_paused = true)]
async fn normalization_is_visible_in_the_timeline() {
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy("svc.Clamped", attempts(50))
                .unwrap()
                .policy("svc.Plain", attempts(3))
                .unwrap()
                .build(),
        )
        .build();

    let calls = AtomicU32::new(0);
    let (result, timeline) = exec
        .call_with_timeline("svc.Clamped", failing(&calls))
        .await;
    assert!(matches!(
        result,
        Err(Error::RetriesExhausted { attempts: 10, .. })
    ));
    assert_eq!(timeline.attempts.len(), 10);
    assert_eq!(timeline.attribute("policy_normalized"), Some("true"));
    let clamped = timeline.attribute("policy_clamped_fields").unwrap();
    assert!(
        clamped.split(',').any(|f| f == "retry.max_attempts"),
        "{clamped}"
    );

    let (_, timeline) = exec.call_with_timeline("svc.Plain", failing(&calls)).await;
    assert_eq!(timeline.attribute("policy_normalized"), None);
    assert_eq!(timeline.attribute("policy_clamped_fields"), None);
}

#[tokio::test(start_paused = true)]
async fn deny_never_calls_the_operation() {
    let exec = Executor::builder()
        .missing_policy_mode(MissingPolicyMode::Deny)
        .build();
    let calls = AtomicU32::new(0);
    let (result, timeline) = exec
        .call_with_timeline("svc.Unknown", failing(&calls))
        .await;
    assert_eq!(result, Err(Error::NoPolicy));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(timeline.attempts.is_empty());
    assert_eq!(timeline.reason, Some("no_policy"));
    assert_eq!(timeline.verdict, None);
    assert_eq!(timeline.attribute("missing_policy_mode"), Some("deny"));
    assert!(timeline
        .attribute("policy_error")
        .unwrap()
        .starts_with("not_found"));
    assert_eq!(timeline.attribute("policy_source"), None);
    // Without a timeline too.
    assert_eq!(
        exec.call("svc.Unknown", failing(&calls)).await,
        Err(Error::NoPolicy)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn allow_makes_exactly_one_attempt() {
    let exec = Executor::builder()
        .missing_policy_mode(MissingPolicyMode::Allow)
        .build();
    let calls = AtomicU32::new(0);
    let (result, timeline) = exec
        .call_with_timeline("svc.Unknown", failing(&calls))
        .await;
    assert_eq!(
        result,
        Err(Error::RetriesExhausted {
            last: Some("boom"),
            attempts: 1
        })
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(timeline.attempts.len(), 1);
    assert_eq!(timeline.attribute("missing_policy_mode"), Some("allow"));
    assert!(timeline.attribute("policy_error").is_some());
}

#[tokio::test(start_paused = true)]
async fn fallback_is_the_default_mode_and_runs_the_default_policy() {
    let exec = Executor::new();
    assert_eq!(exec.missing_policy_mode(), MissingPolicyMode::Fallback);
    let calls = AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let (result, timeline) = exec
        .call_with_timeline("svc.Unknown", failing(&calls))
        .await;
    assert!(matches!(
        result,
        Err(Error::RetriesExhausted { attempts: 3, .. })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // 10 ms, then 20 ms of backoff, on the paused clock.
    assert_eq!(start.elapsed(), ms(30));
    assert_eq!(timeline.duration(), ms(30));
    assert_eq!(timeline.attribute("missing_policy_mode"), Some("fallback"));
    assert_eq!(timeline.attribute("policy_source"), Some("default"));
    assert!(timeline
        .attribute("policy_error")
        .unwrap()
        .starts_with("not_found"));
}

/// A provider that panics.
struct Panicking;

impl PolicyProvider for Panicking {
    fn policy(&self, _: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        panic!("provider bug")
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_provider_takes_the_missing_policy_path() {
    let exec = Executor::builder().provider(Panicking).build();
    let calls = AtomicU32::new(0);
    let (result, timeline) = exec.call_with_timeline("svc.A", failing(&calls)).await;
    assert!(matches!(
        result,
        Err(Error::RetriesExhausted { attempts: 3, .. })
    ));
    assert_eq!(timeline.attribute("missing_policy_mode"), Some("fallback"));
    assert!(timeline
        .attribute("policy_error")
        .unwrap()
        .starts_with("panic_in_provider"));
}

#[tokio::test(start_paused = true)]
async fn the_provider_is_asked_exactly_once_per_call() {
    for mode in [
        MissingPolicyMode::Deny,
        MissingPolicyMode::Allow,
        MissingPolicyMode::Fallback,
    ] {
        let provider = Arc::new(Counting::new(one("svc.A", attempts(5))));
        let exec = Executor::builder()
            .provider(Arc::clone(&provider))
            .missing_policy_mode(mode)
            .build();
        let calls = AtomicU32::new(0);
        let _ = exec.call("svc.A", failing(&calls)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert_eq!(provider.lookups(), 1, "{mode}");
        let _ = exec.call_with_timeline("svc.A", failing(&calls)).await;
        assert_eq!(provider.lookups(), 2, "{mode}");
        let _ = exec.call("svc.Missing", failing(&calls)).await;
        assert_eq!(provider.lookups(), 3, "{mode}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_jittered_backoffs() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 6;
    p.retry.initial_backoff = ms(100);
    p.retry.max_backoff = Duration::from_secs(5);
    p.retry.jitter = Jitter::Full;
    let backoffs = |seed: u64| {
        let exec = Executor::builder()
            .provider(one("svc.Jitter", p.clone()))
            .seed(seed)
            .build();
        async move {
            let calls = AtomicU32::new(0);
            let mut all = Vec::new();
            // Two calls each: the per-call seeds differ, deterministically.
            for _ in 0..2 {
                let (_, t) = exec.call_with_timeline("svc.Jitter", failing(&calls)).await;
                all.push(t.attempts.iter().map(|a| a.backoff).collect::<Vec<_>>());
            }
            all
        }
    };
    let a = backoffs(42).await;
    let b = backoffs(42).await;
    let c = backoffs(43).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a[0], a[1], "each call draws from its own stream");
    // Full jitter: every delay below its exponential base (100, 200, 400 ... ms).
    for (i, d) in a[0].iter().enumerate().skip(1) {
        assert!(*d < ms(100 << (i - 1)), "backoff {i} = {d:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_stops_on_non_retryable() {
    let exec = Executor::new();
    let calls = AtomicU32::new(0);
    let classify = |r: &Result<(), &'static str>| match r {
        Ok(()) => Outcome::SUCCESS,
        Err(_) => Outcome::non_retryable("invalid_argument"),
    };
    let (result, timeline) = exec
        .call_classified_with_timeline("svc.A", classify, failing(&calls))
        .await;
    assert_eq!(
        result,
        Err(Error::Operation {
            error: recourse::Failure::Error("boom"),
            cause: Cause::NonRetryable
        })
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(timeline.attempts[0].outcome.reason, "invalid_argument");
    assert_eq!(timeline.reason, Some("non_retryable"));
    let result = exec
        .call_classified("svc.A", classify, failing(&calls))
        .await;
    assert!(matches!(result, Err(Error::Operation { .. })));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn timeouts_cut_hanging_attempts_on_the_paused_clock() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 5;
    p.retry.timeout_per_attempt = Some(ms(50));
    p.retry.overall_timeout = Some(ms(180));
    let exec = Executor::builder().provider(one("svc.Hang", p)).build();
    let (result, timeline) = exec
        .call_with_timeline("svc.Hang", |_| core::future::pending::<Result<(), ()>>())
        .await;
    assert_eq!(result, Err(Error::DeadlineExceeded { last: None }));
    let reasons: Vec<_> = timeline.attempts.iter().map(|a| a.outcome.reason).collect();
    assert_eq!(
        reasons,
        ["attempt_timeout", "attempt_timeout", "overall_timeout"]
    );
    assert_eq!(timeline.duration(), ms(180));
}

#[tokio::test(start_paused = true)]
async fn the_timeline_table_has_one_row_per_attempt() {
    let exec = Executor::builder()
        .provider(one("svc.Flaky", attempts(3)))
        .build();
    let mut n = 0;
    let (result, timeline) = exec
        .call_with_timeline("svc.Flaky", |attempt| {
            n += 1;
            let fail = n < 3;
            async move {
                tokio::time::sleep(ms(2)).await;
                if fail {
                    Err("reset")
                } else {
                    Ok(attempt.retry_index)
                }
            }
        })
        .await;
    assert_eq!(result, Ok(2));
    assert_eq!(timeline.reason, None);
    assert_eq!(timeline.winner.map(|w| w.0), Some(2));
    assert_eq!(timeline.key, "svc.Flaky");
    let table = timeline.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines,
        [
            "svc.Flaky: ok, attempt 3 won after 3 attempts in 36.0 ms",
            "  policy_source=static",
            "  attempt  retry  hedge  start ms  duration ms  outcome        reason              backoff ms",
            "        1      0      -       0.0          2.0  retryable      retryable_error            0.0",
            "        2      1      -      12.0          2.0  retryable      retryable_error           10.0",
            "        3      2      -      34.0          2.0  success        success                   20.0",
        ],
        "\n{table}"
    );
}

#[tokio::test(start_paused = true)]
async fn call_futures_are_send() {
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    let exec = Arc::new(Executor::new());
    let e = Arc::clone(&exec);
    let handle =
        tokio::spawn(
            async move { assert_send(e.call("svc.A", |_| async { Ok::<_, ()>(1) })).await },
        );
    assert_eq!(handle.await.unwrap(), Ok(1));
}
