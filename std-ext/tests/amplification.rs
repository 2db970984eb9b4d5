//! The amplification bound in the executor: one ledger per key, shared by
//! every call of the key, refusing retries past `max_amplification` with
//! `amplification_limit`, told to observers; and deadline-aware retries.

mod common;

use core::time::Duration;
use std::sync::{Arc, Mutex};

use common::{attempts, one};
use recourse::latency::LatencyTrackers;
use recourse::observer::BudgetDecision;
use recourse::{Error, Executor, Observer, PolicyKey};

/// A budget decision: attempt number, allowed, reason.
type Seen = (u16, bool, &'static str);

/// Every budget decision's attempt number and reason.
#[derive(Default, Clone)]
struct Decisions(Arc<Mutex<Vec<Seen>>>);

impl Observer for Decisions {
    fn on_budget_decision(&self, _: PolicyKey<'_>, d: &BudgetDecision<'_>) {
        self.0
            .lock()
            .expect("test")
            .push((d.attempt.id.0, d.allowed, d.reason));
    }
}

#[tokio::test(start_paused = true)]
async fn retries_past_the_bound_are_refused_for_every_call_of_the_key() {
    let mut p = attempts(3);
    p.amplification.max_amplification = 1.5;
    p.amplification.min_per_sec = 0;
    let decisions = Decisions::default();
    let exec = Executor::builder()
        .provider(one("svc.Get", p))
        .observer(decisions.clone())
        .build();
    let mut ran = 0;
    let mut refused = 0;
    for _ in 0..10 {
        let mut n = 0;
        let r = exec
            .call("svc.Get", |_| {
                n += 1;
                async { Err::<(), _>("down") }
            })
            .await;
        ran += n;
        match r {
            Err(Error::BudgetDenied { reason, .. }) => {
                assert_eq!(reason, "amplification_limit");
                refused += 1;
            }
            Err(Error::RetriesExhausted { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    // 10 first attempts earn 5 extra attempts; 3 attempts each would be 30.
    assert_eq!(ran, 15);
    assert!(refused >= 5, "{refused}");
    let d = decisions.0.lock().expect("test").clone();
    let limited = d
        .iter()
        .filter(|(_, allowed, why)| !allowed && *why == "amplification_limit")
        .count();
    assert_eq!(limited, refused);
    assert!(
        d.iter().all(|(id, _, _)| *id > 0),
        "first attempts are never refused: {d:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn off_by_default() {
    let exec = Executor::builder()
        .provider(one("svc.Get", attempts(3)))
        .build();
    let mut ran = 0;
    for _ in 0..5 {
        let _ = exec
            .call("svc.Get", |_| {
                ran += 1;
                async { Err::<(), _>("down") }
            })
            .await;
    }
    assert_eq!(ran, 15);
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_cannot_finish_in_time_is_not_slept_for() {
    let mut p = attempts(3);
    p.retry.overall_timeout = Some(Duration::from_millis(100));
    p.retry.deadline_quantile_permille = 900;
    let exec = Executor::builder()
        .provider(one("svc.Get", p))
        .latency_trackers(LatencyTrackers::default().with_min_samples(1))
        .build();
    // Before any sample: the retry runs as before.
    let mut n = 0;
    let start = tokio::time::Instant::now();
    let r = exec
        .call("svc.Get", |a| {
            n += 1;
            async move {
                let wait = if a.id.0 == 0 { 20 } else { 70 };
                tokio::time::sleep(Duration::from_millis(wait)).await;
                if a.id.0 == 0 {
                    Err("down")
                } else {
                    Ok(())
                }
            }
        })
        .await;
    assert_eq!(r, Ok(()));
    assert_eq!(n, 2);
    assert!(start.elapsed() >= Duration::from_millis(90));
    // Now p90 is 70 ms: a failure at 20 ms leaves a retry at 30 ms + 70 ms,
    // which cannot end before the 100 ms deadline; the call ends at 20 ms.
    let mut n = 0;
    let start = tokio::time::Instant::now();
    let r = exec
        .call("svc.Get", |_| {
            n += 1;
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err::<(), _>("down")
            }
        })
        .await;
    assert!(
        matches!(r, Err(Error::DeadlineExceeded { last: Some("down") })),
        "{r:?}"
    );
    assert_eq!(n, 1);
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}

/// A call made inside `upstream::scope(n)` (what `UpstreamLayer` does for a
/// request that carried `n`): `not_when_retry` makes one attempt and no
/// hedge, `shared_allowance` counts the first attempt as an extra one in
/// the key's ledger; the timeline says which.
#[tokio::test(start_paused = true)]
async fn the_upstream_count_decides_what_a_call_may_retry() {
    use recourse::upstream::{self, UpstreamRetry};

    let mut p = attempts(3);
    p.amplification.upstream_retry = UpstreamRetry::NotWhenRetry;
    let exec = Executor::builder().provider(one("svc.Get", p)).build();
    let failing = |n: &mut u32| {
        *n += 1;
        async { Err::<(), _>("down") }
    };
    for (upstream, want, effect) in [
        (None, 3, None),
        (Some(0), 3, None),
        (Some(1), 1, Some("single_attempt")),
        (Some(7), 1, Some("single_attempt")),
    ] {
        let mut n = 0;
        let (r, t) = upstream::scope(
            upstream,
            exec.call_with_timeline("svc.Get", |_| failing(&mut n)),
        )
        .await;
        assert!(r.is_err());
        assert_eq!(n, want, "{upstream:?}");
        let count = upstream.map(|u| u.to_string());
        assert_eq!(t.attribute("upstream_attempts"), count.as_deref());
        assert_eq!(t.attribute("upstream_effect"), effect, "{upstream:?}");
    }

    let mut p = attempts(3);
    p.amplification.max_amplification = 2.0;
    p.amplification.min_per_sec = 0;
    p.amplification.upstream_retry = UpstreamRetry::SharedAllowance;
    let exec = Executor::builder().provider(one("svc.Get", p)).build();
    // A retry upstream: its first attempt counts as extra, and with no
    // first attempt in the ledger there is no room to retry it.
    let mut n = 0;
    let (_, t) = upstream::scope(
        Some(2),
        exec.call_with_timeline("svc.Get", |_| failing(&mut n)),
    )
    .await;
    assert_eq!(n, 1);
    assert_eq!(
        t.attribute("upstream_effect"),
        Some("shared_first_is_extra")
    );
    // Two first requests (ledger: 1 then 2 firsts, 1 extra): at 2x there
    // would be room for a retry in the second, but one extra attempt is
    // left for the callers above.
    for _ in 0..2 {
        let mut n = 0;
        let (_, t) = upstream::scope(
            Some(0),
            exec.call_with_timeline("svc.Get", |_| failing(&mut n)),
        )
        .await;
        assert_eq!(t.attribute("upstream_effect"), Some("shared"));
        assert_eq!(n, 1, "no room left below the callers' share");
    }
    // At the edge (no count) nothing is reserved: 3 firsts earn 3 extras,
    // 1 spent, so both retries run.
    let mut n = 0;
    let _ = exec.call("svc.Get", |_| failing(&mut n)).await;
    assert_eq!(n, 3);
}
