//! recourse's tower layer (`RecourseLayer`) next to tower's own layers,
//! over the same in-process service (no network: this measures the layers).
//!
//! - `success`: the service answers at once. `RecourseLayer` (retries and a
//!   per-attempt timeout of 1 s) next to `tower::retry::Retry` over
//!   `tower::timeout::Timeout` (two retries, 1 s per attempt), and the bare
//!   service (`direct`, the floor).
//! - `one_failure`: the first attempt fails, the second succeeds after a
//!   1 ms backoff on both sides (recourse's smallest normalized backoff;
//!   tower's retry policy sleeps `tokio::time::sleep(1 ms)`).
//! - `hedge`: the first attempt never answers, the second answers at once.
//!   `RecourseLayer` with one hedge after 10 ms (the smallest normalized
//!   hedge delay) next to `tower::hedge::Hedge` whose latency histogram is
//!   seeded with one 10 ms sample (`new_with_mock_latencies`, p50, a period
//!   of 2^30 s so that it never rotates): both hedge after 10 ms.
//!
//! Every call, for every variant, is `poll_ready` then `call`, run by
//! `block_on` of one current-thread tokio runtime whose clock is paused: the
//! timers (tower's `Sleep`s, recourse's tokio timer) are real tokio timers,
//! and a wait makes the runtime jump to the deadline instead of sleeping, so
//! a backoff or hedge delay costs the timer's work, not its duration.
//! Neither side has an observer, budget or breaker.
//!
//! `bash benches/tower_layers.sh` runs it and prints the table of
//! BENCHMARKS.md (also run by `bash benches/run.sh`).

use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::Arc;

use criterion::{criterion_main, Criterion};
use recourse::integrations::tower::RecourseLayer;
use recourse::{Executor, Jitter, Policy, StaticProvider};
use tokio::runtime::Runtime;
use tower::{BoxError, Layer, Service, ServiceExt};

/// What the backend does with a call's attempts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Path {
    /// Every attempt answers at once.
    Success,
    /// The first attempt fails at once, the next ones answer at once.
    OneFailure,
    /// The first attempt never answers, the next ones answer at once.
    Hedge,
}

impl Path {
    const ALL: [Self; 3] = [Self::Success, Self::OneFailure, Self::Hedge];

    fn id(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::OneFailure => "one_failure",
            Self::Hedge => "hedge",
        }
    }
}

/// The backend's error.
#[derive(Debug)]
struct Reset;

impl core::fmt::Display for Reset {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("connection reset")
    }
}

impl core::error::Error for Reset {}

/// The in-process service: counts the attempts of the current call (the
/// harness resets the count before each call; the services are cloned per
/// attempt, so they share it).
#[derive(Clone)]
struct Backend {
    path: Path,
    attempts: Arc<AtomicU32>,
}

/// An attempt's answer: `None` never completes.
struct Answer(Option<Result<u32, Reset>>);

impl Future for Answer {
    type Output = Result<u32, Reset>;
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.take() {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        }
    }
}

impl Service<u32> for Backend {
    type Response = u32;
    type Error = Reset;
    type Future = Answer;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Reset>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u32) -> Answer {
        let first = self.attempts.fetch_add(1, Ordering::Relaxed) == 0;
        Answer(match (self.path, first) {
            (Path::OneFailure, true) => Some(Err(Reset)),
            (Path::Hedge, true) => None,
            _ => Some(Ok(req)),
        })
    }
}

/// tower's retry policy: two retries of an error, each after a 1 ms tokio
/// sleep.
#[derive(Copy, Clone)]
struct Retries(u32);

impl tower::retry::Policy<u32, u32, BoxError> for Retries {
    type Future = tokio::time::Sleep;
    fn retry(
        &mut self,
        _: &mut u32,
        result: &mut Result<u32, BoxError>,
    ) -> Option<tokio::time::Sleep> {
        if result.is_err() && self.0 > 0 {
            self.0 -= 1;
            Some(tokio::time::sleep(BACKOFF))
        } else {
            None
        }
    }
    fn clone_request(&mut self, req: &u32) -> Option<u32> {
        Some(*req)
    }
}

/// tower's hedge policy: every request may be hedged.
#[derive(Copy, Clone)]
struct HedgeAll;

impl tower::hedge::Policy<u32> for HedgeAll {
    fn clone_request(&self, req: &u32) -> Option<u32> {
        Some(*req)
    }
    fn can_retry(&self, _: &u32) -> bool {
        true
    }
}

const KEY: &str = "svc.Get";
const KEY_HEDGE: &str = "svc.Hedge";
const BACKOFF: Duration = Duration::from_millis(1);
const TIMEOUT: Duration = Duration::from_secs(1);
const HEDGE_DELAY: Duration = Duration::from_millis(10);

fn executor() -> Arc<Executor> {
    let mut retry = Policy::DEFAULT;
    retry.retry.max_attempts = 3;
    retry.retry.initial_backoff = BACKOFF;
    retry.retry.max_backoff = BACKOFF;
    retry.retry.jitter = Jitter::None;
    retry.retry.timeout_per_attempt = Some(TIMEOUT);
    let mut hedge = Policy::DEFAULT;
    hedge.retry.max_attempts = 1;
    hedge.hedge.enabled = true;
    hedge.hedge.max_hedges = 1;
    hedge.hedge.hedge_delay = HEDGE_DELAY;
    let provider = StaticProvider::builder()
        .policy(KEY, retry)
        .and_then(|b| b.policy(KEY_HEDGE, hedge))
        .expect("valid policies")
        .build();
    Arc::new(Executor::builder().provider(provider).build())
}

/// One call: `poll_ready`, then `call`, driven to its end on `rt`; checks
/// the answer and the attempts the backend saw.
fn call<S>(rt: &Runtime, attempts: &AtomicU32, svc: &mut S, want_attempts: u32)
where
    S: Service<u32, Response = u32>,
    S::Error: core::fmt::Debug,
{
    attempts.store(0, Ordering::Relaxed);
    let out = rt.block_on(async {
        svc.ready().await.expect("ready");
        svc.call(7).await
    });
    assert_eq!(out.expect("the call succeeds"), 7);
    assert_eq!(attempts.load(Ordering::Relaxed), want_attempts);
}

fn tower_layers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a paused tokio runtime");
    let _context = rt.enter();
    let exec = executor();
    for path in Path::ALL {
        let attempts = Arc::new(AtomicU32::new(0));
        let backend = Backend {
            path,
            attempts: attempts.clone(),
        };
        let want = if path == Path::Success { 1 } else { 2 };
        let mut group = c.benchmark_group(format!("tower_layers/{}", path.id()));
        if path == Path::Success {
            let mut svc = backend.clone();
            group.bench_function("direct", |b| {
                b.iter(|| call(&rt, &attempts, &mut svc, 1));
            });
        }
        if path == Path::Hedge {
            let mut svc = RecourseLayer::new(exec.clone(), KEY_HEDGE).layer(backend.clone());
            group.bench_function("recourse", |b| {
                b.iter(|| call(&rt, &attempts, &mut svc, want));
            });
            let mut svc = tower::hedge::Hedge::new_with_mock_latencies(
                backend.clone(),
                HedgeAll,
                0,
                0.5,
                Duration::from_secs(1 << 30),
                &[HEDGE_DELAY.as_millis() as u64],
            );
            group.bench_function("tower", |b| {
                b.iter(|| call(&rt, &attempts, &mut svc, want));
            });
        } else {
            let mut svc = RecourseLayer::new(exec.clone(), KEY).layer(backend.clone());
            group.bench_function("recourse", |b| {
                b.iter(|| call(&rt, &attempts, &mut svc, want));
            });
            let mut svc = tower::ServiceBuilder::new()
                .layer(tower::retry::RetryLayer::new(Retries(2)))
                .layer(tower::timeout::TimeoutLayer::new(TIMEOUT))
                .service(backend.clone());
            group.bench_function("tower", |b| {
                b.iter(|| call(&rt, &attempts, &mut svc, want));
            });
        }
        group.finish();
    }
}

/// Short runs by default (command-line flags override them).
fn benches() {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    tower_layers(&mut c);
}

criterion_main!(benches);
