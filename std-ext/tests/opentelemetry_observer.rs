//! `OtelMetricsObserver` through the OpenTelemetry SDK's in-memory exporter:
//! calls, attempts, budget denials, hedges and the histograms, by key.

#![allow(clippy::unwrap_used)]

use core::time::Duration;

use opentelemetry::metrics::MeterProvider;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use recourse::core_machine::budget::TokenBucket;
use recourse::core_machine::policy::name;
use recourse::observers::opentelemetry::OtelMetricsObserver;
use recourse::{AttemptInfo, BudgetRegistry, Executor, Policy, StaticProvider};

fn attrs(kv: &[(&'static str, &'static str)]) -> Vec<KeyValue> {
    let mut v: Vec<_> = kv.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect();
    v.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    v
}

fn sorted<'a>(it: impl Iterator<Item = &'a KeyValue>) -> Vec<KeyValue> {
    let mut v: Vec<_> = it.cloned().collect();
    v.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    v
}

/// A counter's value for exactly these attributes (0 when absent).
fn counter(m: &[ResourceMetrics], name: &str, kv: &[(&'static str, &'static str)]) -> u64 {
    let want = attrs(kv);
    m.iter()
        .flat_map(|r| r.scope_metrics())
        .flat_map(|s| s.metrics())
        .filter(|x| x.name() == name)
        .map(|x| match x.data() {
            AggregatedMetrics::U64(MetricData::Sum(sum)) => sum
                .data_points()
                .filter(|p| sorted(p.attributes()) == want)
                .map(|p| p.value())
                .sum::<u64>(),
            other => panic!("{name}: {other:?}"),
        })
        .sum()
}

/// A histogram's (count, sum) for these attributes.
fn histogram(m: &[ResourceMetrics], name: &str, kv: &[(&'static str, &'static str)]) -> (u64, f64) {
    let want = attrs(kv);
    for x in m
        .iter()
        .flat_map(|r| r.scope_metrics())
        .flat_map(|s| s.metrics())
    {
        if x.name() != name {
            continue;
        }
        match x.data() {
            AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                if let Some(p) = h.data_points().find(|p| sorted(p.attributes()) == want) {
                    return (p.count(), p.sum());
                }
            }
            AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                if let Some(p) = h.data_points().find(|p| sorted(p.attributes()) == want) {
                    return (p.count(), p.sum() as f64);
                }
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    (0, 0.0)
}

#[tokio::test(start_paused = true)]
async fn the_instruments_count_calls_attempts_denials_and_hedges() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let meter = provider.meter("recourse");

    let mut flaky = Policy::DEFAULT;
    flaky.retry.max_attempts = 4;
    flaky.retry.initial_backoff = Duration::from_millis(10);
    let mut budgeted = flaky.clone();
    budgeted.retry.budget.name = name("retry.budget.name", "retries").unwrap();
    let mut hedged = Policy::DEFAULT;
    hedged.hedge.enabled = true;
    hedged.hedge.max_hedges = 1;
    hedged.hedge.hedge_delay = Duration::from_millis(100);
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy("svc.Flaky", flaky)
                .unwrap()
                .policy("svc.Budgeted", budgeted)
                .unwrap()
                .policy("svc.Hedged", hedged)
                .unwrap()
                .build(),
        )
        .budgets(BudgetRegistry::new().with("retries", TokenBucket::new(1, 0)))
        .observer(OtelMetricsObserver::new(&meter))
        .build();

    let mut failures = 2;
    let r = exec
        .call("svc.Flaky", |_| {
            let fail = failures > 0;
            failures -= 1;
            async move {
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

    provider.force_flush().unwrap();
    let m = exporter.get_finished_metrics().unwrap();
    let flaky = ("recourse.key", "svc.Flaky");
    assert_eq!(
        counter(
            &m,
            "recourse.calls",
            &[
                flaky,
                ("recourse.outcome", "success"),
                ("recourse.reason", "success")
            ]
        ),
        1
    );
    let attempts = |kind, outcome, reason| {
        counter(
            &m,
            "recourse.attempts",
            &[
                flaky,
                ("recourse.attempt_kind", kind),
                ("recourse.outcome", outcome),
                ("recourse.reason", reason),
            ],
        )
    };
    assert_eq!(attempts("initial", "retryable", "retryable_error"), 1);
    assert_eq!(attempts("retry", "retryable", "retryable_error"), 1);
    assert_eq!(attempts("retry", "success", "success"), 1);
    assert_eq!(histogram(&m, "recourse.call.attempts", &[flaky]), (1, 3.0));
    assert_eq!(
        histogram(
            &m,
            "recourse.attempt.duration",
            &[flaky, ("recourse.outcome", "retryable")]
        )
        .0,
        2
    );

    let budgeted = ("recourse.key", "svc.Budgeted");
    assert_eq!(
        counter(
            &m,
            "recourse.budget.denials",
            &[
                budgeted,
                ("recourse.budget", "retries"),
                ("recourse.reason", "budget_denied")
            ]
        ),
        1
    );
    assert_eq!(
        counter(
            &m,
            "recourse.calls",
            &[
                budgeted,
                ("recourse.outcome", "failure"),
                ("recourse.reason", "budget_denied")
            ]
        ),
        1
    );

    let hedged = ("recourse.key", "svc.Hedged");
    assert_eq!(counter(&m, "recourse.hedges.spawned", &[hedged]), 1);
    assert_eq!(counter(&m, "recourse.hedges.won", &[hedged]), 1);
    let (n, sum) = histogram(
        &m,
        "recourse.call.duration",
        &[hedged, ("recourse.outcome", "success")],
    );
    assert_eq!(n, 1);
    assert!((sum - 0.11).abs() < 1e-9, "{sum}");
}
