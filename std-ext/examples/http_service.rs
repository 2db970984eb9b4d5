//! A service calling a flaky and a slow HTTP backend the way a Rust team
//! would: reqwest with recourse's middleware, a retry budget, hedging at
//! the key's p95, every attempt logged through `tracing_subscriber`, and the
//! metrics printed in Prometheus text format at the end.
//!
//! - `GET /flaky`: every third request answers `503`: retried, until the
//!   retry budget (20 % of first attempts) says no — the log shows
//!   `recourse.budget: denied` and the metrics count it.
//! - `GET /slow`: every fifth request stalls for 400 ms, the others take
//!   5 ms; once the key has latencies, a request slower than its p95 gets a
//!   hedge, which wins.
//!
//! Needs no setup; starts its own server on 127.0.0.1 and finishes in a
//! second or two: `cargo run -p recourse-rs --example http_service --features
//! reqwest,tracing,metrics,tokio` (or `--all-features`).

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use recourse::budget::RetryRatio;
use recourse::integrations::reqwest::RecourseMiddleware;
use recourse::observers::metrics::MetricsObserver;
use recourse::observers::tracing::TracingObserver;
use recourse::policy::HedgePolicy;
use recourse::{BudgetRegistry, Executor, Policy, StaticProvider};
use tracing_subscriber::fmt::format::FmtSpan;

type Fallible<T> = Result<T, Box<dyn core::error::Error + Send + Sync>>;

/// The backend: a flaky and a slow route on 127.0.0.1.
async fn start_backend() -> Fallible<String> {
    let flaky = Arc::new(AtomicU32::new(0));
    let slow = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route(
            "/flaky",
            get(move || {
                let n = flaky.fetch_add(1, Ordering::Relaxed);
                async move {
                    if n % 3 == 0 {
                        (StatusCode::SERVICE_UNAVAILABLE, "busy")
                    } else {
                        (StatusCode::OK, "ok")
                    }
                }
            }),
        )
        .route(
            "/slow",
            get(move || {
                let n = slow.fetch_add(1, Ordering::Relaxed);
                async move {
                    let ms = if n % 5 == 4 { 400 } else { 5 };
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "ok"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

fn policies() -> Fallible<StaticProvider> {
    let flaky = Policy::retries(2)
        .backoff(Duration::from_millis(5), Duration::from_millis(250))
        .overall_timeout(Duration::from_secs(2))
        .budget("retries")?;

    let slow = Policy::retries(2)
        .attempt_timeout(Duration::from_secs(1))
        .hedge(
            HedgePolicy::after(Duration::from_millis(50))
                .max_hedges(1)
                .trigger("p95")?,
        );

    Ok(StaticProvider::builder()
        .policy("backend.flaky", flaky)?
        .policy("backend.slow", slow)?
        .build())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Fallible<()> {
    // Each attempt's span is printed when it closes, with its fields.
    tracing_subscriber::fmt()
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .init();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;

    let base = start_backend().await?;
    let exec = Executor::builder()
        .provider(policies()?)
        // Retries may add at most 20 % to the first attempts of the last
        // 10 s (Finagle's retry budget, without its reserve).
        .budgets(
            BudgetRegistry::new().with("retries", RetryRatio::new(Duration::from_secs(10), 0, 200)),
        )
        .observer(TracingObserver::new())
        .observer(MetricsObserver::new())
        .seed(1)
        .try_build()?; // every budget and trigger the policies name exists

    // The two lines a reqwest user adds: the middleware, keyed by route.
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(
            RecourseMiddleware::new(Arc::new(exec))
                .key_fn(|r| format!("backend{}", r.url().path().replace('/', "."))),
        )
        .build();

    let (mut ok, mut failed) = (0, 0);
    for i in 0..30 {
        let route = if i % 2 == 0 { "flaky" } else { "slow" };
        match client.get(format!("{base}/{route}")).send().await {
            Ok(r) if r.status().is_success() => ok += 1,
            _ => failed += 1,
        }
    }
    println!("\n{ok} requests succeeded, {failed} failed\n");
    // Every slow request succeeds (hedged or not); flaky ones may be
    // refused by the budget.
    if ok < 15 {
        return Err(format!("only {ok} of 30 requests succeeded").into());
    }
    println!("{}", prometheus.render());
    Ok(())
}
