//! `MetricsObserver` under `metrics-util`'s debugging recorder: calls,
//! attempts by kind/outcome/reason, budget denials, hedges spawned and won,
//! and the three histograms, each labelled by key.

#![allow(clippy::unwrap_used)]

use core::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use recourse::core_machine::budget::TokenBucket;
use recourse::core_machine::policy::name;
use recourse::observers::metrics::MetricsObserver;
use recourse::{AttemptInfo, BudgetRegistry, Executor, Policy, StaticProvider};

fn policy() -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 4;
    p.retry.initial_backoff = Duration::from_millis(10);
    p.retry.max_backoff = Duration::from_millis(10);
    p
}

/// One recorded metric: kind, name, sorted labels, value.
type Metric = (MetricKind, String, Vec<(String, String)>, DebugValue);

/// Runs `f`'s future on a paused-clock runtime with `recorder` installed.
fn run<F: core::future::Future>(recorder: &DebuggingRecorder, f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(recorder, || rt.block_on(f))
}

/// (kind, name, sorted labels) → value.
fn snapshot(s: &Snapshotter) -> Vec<Metric> {
    let mut v: Vec<_> = s
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, _, _, value)| {
            let (kind, key) = ck.into_parts();
            let mut labels: Vec<_> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            (kind, key.name().to_owned(), labels, value)
        })
        .collect();
    v.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
    v
}

fn counter(snap: &[Metric], name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut want: Vec<_> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    want.sort();
    snap.iter()
        .find(|(k, n, l, _)| *k == MetricKind::Counter && n == name && *l == want)
        .map(|(_, _, _, v)| match v {
            DebugValue::Counter(c) => *c,
            other => panic!("{other:?}"),
        })
        .unwrap_or(0)
}

fn histogram(snap: &[Metric], name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let mut want: Vec<_> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    want.sort();
    snap.iter()
        .find(|(k, n, l, _)| *k == MetricKind::Histogram && n == name && *l == want)
        .map(|(_, _, _, v)| match v {
            DebugValue::Histogram(h) => h.iter().map(|x| x.into_inner()).collect(),
            other => panic!("{other:?}"),
        })
        .unwrap_or_default()
}

#[test]
fn calls_attempts_and_histograms_by_key() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy("svc.Get", policy())
                .unwrap()
                .build(),
        )
        .observer(MetricsObserver::new())
        .build();
    run(&recorder, async {
        let mut failures = 2;
        let r = exec
            .call("svc.Get", |_| {
                let fail = failures > 0;
                failures -= 1;
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if fail {
                        Err("reset")
                    } else {
                        Ok(1)
                    }
                }
            })
            .await;
        assert_eq!(r, Ok(1));
        let r = exec
            .call("svc.Get", |_| async { Err::<u32, _>("down") })
            .await;
        assert!(r.is_err());
    });
    let snap = snapshot(&snapshotter);
    let k = ("key", "svc.Get");
    assert_eq!(
        counter(
            &snap,
            "recourse_calls_total",
            &[k, ("outcome", "success"), ("reason", "success")]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            "recourse_calls_total",
            &[k, ("outcome", "failure"), ("reason", "retries_exhausted")]
        ),
        1
    );
    let attempts = |kind, outcome, reason| {
        counter(
            &snap,
            "recourse_attempts_total",
            &[k, ("kind", kind), ("outcome", outcome), ("reason", reason)],
        )
    };
    assert_eq!(attempts("initial", "retryable", "retryable_error"), 2);
    assert_eq!(attempts("retry", "retryable", "retryable_error"), 4);
    assert_eq!(attempts("retry", "success", "success"), 1);
    assert_eq!(
        histogram(&snap, "recourse_attempts_per_call", &[k]),
        [3.0, 4.0]
    );
    let attempt_latency = histogram(
        &snap,
        "recourse_attempt_duration_seconds",
        &[k, ("outcome", "retryable")],
    );
    // Two 5 ms failures in the first call, four instant ones in the second.
    assert_eq!(attempt_latency, [0.005, 0.005, 0.0, 0.0, 0.0, 0.0]);
    let call_latency = histogram(
        &snap,
        "recourse_call_duration_seconds",
        &[k, ("outcome", "success")],
    );
    // Three 5 ms attempts and two 10 ms backoffs (jitter keeps each in (0, 10 ms]).
    assert_eq!(call_latency.len(), 1);
    assert!(
        call_latency[0] > 0.015 && call_latency[0] <= 0.035 + 1e-9,
        "{call_latency:?}"
    );
}

#[test]
fn amplification_denials_are_budget_denials_with_their_reason() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut p = policy();
    p.amplification.max_amplification = 1.0;
    p.amplification.min_per_sec = 0;
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy("svc.Amp", p)
                .unwrap()
                .build(),
        )
        .observer(MetricsObserver::new())
        .build();
    run(&recorder, async {
        for _ in 0..3 {
            let r = exec
                .call("svc.Amp", |_| async { Err::<u32, _>("down") })
                .await;
            assert!(
                matches!(
                    r,
                    Err(recourse::Error::BudgetDenied {
                        reason: "amplification_limit",
                        ..
                    })
                ),
                "{r:?}"
            );
        }
    });
    let snap = snapshot(&snapshotter);
    let labels = [
        ("key", "svc.Amp"),
        ("budget", "amplification"),
        ("reason", "amplification_limit"),
    ];
    assert_eq!(counter(&snap, "recourse_budget_denials_total", &labels), 3);
    assert_eq!(
        counter(
            &snap,
            "recourse_calls_total",
            &[
                ("key", "svc.Amp"),
                ("outcome", "failure"),
                ("reason", "budget_denied")
            ]
        ),
        3
    );
}

#[test]
fn budget_denials_and_hedges() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut budgeted = policy();
    budgeted.retry.budget.name = name("retry.budget.name", "retries").unwrap();
    let mut hedged = policy();
    hedged.hedge.enabled = true;
    hedged.hedge.max_hedges = 1;
    hedged.hedge.hedge_delay = Duration::from_millis(100);
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy("svc.Budgeted", budgeted)
                .unwrap()
                .policy("svc.Hedged", hedged)
                .unwrap()
                .build(),
        )
        .budgets(BudgetRegistry::new().with("retries", TokenBucket::new(1, 0)))
        .observer(MetricsObserver::new())
        .build();
    run(&recorder, async {
        let r = exec
            .call("svc.Budgeted", |_| async { Err::<u32, _>("down") })
            .await;
        assert!(
            matches!(r, Err(recourse::Error::BudgetDenied { .. })),
            "{r:?}"
        );
        let r = exec
            .call("svc.Hedged", |a: AttemptInfo| async move {
                let wait = if a.is_hedge { 10 } else { 1000 };
                tokio::time::sleep(Duration::from_millis(wait)).await;
                Ok::<_, ()>(a.hedge_index)
            })
            .await;
        assert_eq!(r, Ok(1));
    });
    let snap = snapshot(&snapshotter);
    assert_eq!(
        counter(
            &snap,
            "recourse_budget_denials_total",
            &[
                ("key", "svc.Budgeted"),
                ("budget", "retries"),
                ("reason", "budget_denied")
            ]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            "recourse_calls_total",
            &[
                ("key", "svc.Budgeted"),
                ("outcome", "failure"),
                ("reason", "budget_denied")
            ]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            "recourse_hedges_spawned_total",
            &[("key", "svc.Hedged")]
        ),
        1
    );
    assert_eq!(
        counter(&snap, "recourse_hedges_won_total", &[("key", "svc.Hedged")]),
        1
    );
    assert_eq!(
        counter(
            &snap,
            "recourse_attempts_total",
            &[
                ("key", "svc.Hedged"),
                ("kind", "initial"),
                ("outcome", "abort"),
                ("reason", "hedge_loser")
            ]
        ),
        1,
        "{snap:#?}"
    );
    let call = histogram(
        &snap,
        "recourse_call_duration_seconds",
        &[("key", "svc.Hedged"), ("outcome", "success")],
    );
    assert_eq!(call, [0.11]);
}

#[test]
fn handles_are_reused_and_a_long_key_is_counted_too() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let long = format!("svc.{}", "x".repeat(200));
    let exec = Executor::builder().observer(MetricsObserver::new()).build();
    run(&recorder, async {
        for key in ["svc.Get", "svc.Get", &long, &long, &long] {
            assert_eq!(exec.call(key, |_| async { Ok::<_, ()>(1) }).await, Ok(1));
        }
    });
    let snap = snapshot(&snapshotter);
    let calls = |key: &str| {
        snap.iter()
            .filter(|(_, n, l, _)| {
                n == "recourse_calls_total" && l.iter().any(|(k, v)| k == "key" && v == key)
            })
            .map(|(_, _, _, v)| match v {
                DebugValue::Counter(c) => *c,
                other => panic!("{other:?}"),
            })
            .sum::<u64>()
    };
    assert_eq!((calls("svc.Get"), calls(&long)), (2, 3));
}
