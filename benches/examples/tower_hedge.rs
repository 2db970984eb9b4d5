//! Hedging in recourse next to `tower::hedge`, on tokio's paused clock, for
//! one heavy-tail backend ("The Tail at Scale").
//!
//! Run it with
//! `cargo run --release -p recourse-benches --example tower_hedge`.
//!
//! The backend answers 99 % of attempts in about 10 ms (log-normal, median
//! 10 ms, sigma 0.25) and 1 % in 800..=1200 ms (uniform), independently per
//! attempt, from a seeded RNG. Calls arrive open loop, one per millisecond
//! of virtual time, each in its own task. Every configuration sees the same
//! seed (hedges draw extra samples, so the sequences part after the first
//! hedge).
//!
//! Warm-up: both libraries estimate the latency quantile from recent
//! samples. recourse's `LatencyTrackers` (10 s windows) count the current
//! and the previous window, so a key answers after
//! `LatencySketch::DEFAULT_MIN_SAMPLES` (20) samples. tower's
//! `RotatingHistogram` only reads the *previous* full period, so with the
//! same 10 s period it has no data (and `min_data_points` keeps it from
//! hedging) for the first 10 s. The first [`WARMUP`] calls (12 s) are
//! therefore left out of the statistics, so that both estimators are warm.
//! A last row shows tower with a 1 s period, which warms up within 2 s.

use core::convert::Infallible;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::{Arc, Mutex};
use std::time::Instant as WallInstant;

use recourse::core_machine::policy::name;
use recourse::latency::LatencyTrackers;
use recourse::{AttemptInfo, Executor, Policy, StaticProvider};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// Calls per configuration.
const CALLS: usize = 100_000;
/// Calls left out of the statistics: the first 12 s of virtual time.
const WARMUP: usize = 12_000;
/// Time between two arrivals.
const ARRIVAL_GAP: Duration = Duration::from_millis(1);
/// The backend's RNG seed, the same for every configuration.
const SEED: u64 = 0x7A11_A75C_A1E0;
/// The policy key of the calls.
const KEY: &str = "svc.Get";
/// The window of both libraries' latency estimators.
const WINDOW: Duration = Duration::from_secs(10);
/// recourse's `LatencySketch::DEFAULT_MIN_SAMPLES`: tower gets the same.
const MIN_SAMPLES: u64 = 20;

/// One attempt as the backend sees it.
#[derive(Clone)]
struct Req {
    /// When the call arrived.
    arrival: Instant,
    /// Whether this is a hedge (a copy of the call's first attempt).
    hedge: bool,
    /// Attempts sent for this call so far.
    attempts: Arc<AtomicU32>,
}

/// The heavy-tail backend: counts every attempt sent to it and picks its
/// latency.
#[derive(Clone)]
struct Backend {
    rng: Arc<Mutex<fastrand::Rng>>,
    sent: Arc<AtomicU64>,
    /// (call arrival, hedge launch offset) of every hedge.
    hedges: Arc<Mutex<Vec<(Instant, Duration)>>>,
}

impl Backend {
    fn new() -> Self {
        Self {
            rng: Arc::new(Mutex::new(fastrand::Rng::with_seed(SEED))),
            sent: Arc::new(AtomicU64::new(0)),
            hedges: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Accepts one attempt: counts it and returns how long it takes.
    fn accept(&self, req: &Req) -> Duration {
        self.sent.fetch_add(1, Ordering::Relaxed);
        req.attempts.fetch_add(1, Ordering::Relaxed);
        if req.hedge {
            let now = Instant::now();
            self.hedges
                .lock()
                .expect("hedge log lock")
                .push((req.arrival, now - req.arrival));
        }
        latency(&mut self.rng.lock().expect("backend rng lock"))
    }

    async fn serve(self, req: Req) -> Result<(), Infallible> {
        let d = self.accept(&req);
        tokio::time::sleep(d).await;
        Ok(())
    }
}

/// 99 %: log-normal with median 10 ms and sigma 0.25; 1 %: uniform
/// 800..=1200 ms.
fn latency(rng: &mut fastrand::Rng) -> Duration {
    if rng.f64() < 0.01 {
        Duration::from_micros(rng.u64(800_000..=1_200_000))
    } else {
        // Box-Muller: one standard normal from two uniforms.
        let u1 = 1.0 - rng.f64(); // (0, 1]
        let u2 = rng.f64();
        let z = (-2.0 * u1.ln()).sqrt() * (core::f64::consts::TAU * u2).cos();
        Duration::from_secs_f64(0.010 * (0.25 * z).exp())
    }
}

impl Service<Req> for Backend {
    type Response = ();
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        Box::pin(self.clone().serve(req))
    }
}

/// tower's hedge policy: every request may be hedged, and the copy is
/// marked as a hedge.
#[derive(Clone)]
struct HedgeAll;

impl tower::hedge::Policy<Req> for HedgeAll {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(Req {
            hedge: true,
            ..req.clone()
        })
    }

    fn can_retry(&self, _req: &Req) -> bool {
        true
    }
}

/// A configuration of the comparison.
#[derive(Clone, Copy)]
enum Config {
    /// Straight to the backend.
    Plain,
    /// recourse with this `hedge.trigger` (`""`: fixed delay).
    Recourse(&'static str),
    /// tower::hedge at p95 with this histogram period.
    Tower(Duration),
}

impl Config {
    fn label(self) -> String {
        match self {
            Self::Plain => "no hedging".to_owned(),
            Self::Recourse("") => "recourse, fixed delay 50 ms".to_owned(),
            Self::Recourse(t) => format!("recourse, trigger {t}"),
            Self::Tower(p) => format!(
                "tower::hedge p95, period {} s, min_data_points {MIN_SAMPLES}",
                p.as_secs()
            ),
        }
    }
}

/// What one configuration measured.
struct Run {
    /// Latency of every call, by arrival index.
    latencies: Vec<Duration>,
    /// Attempts of every call, by arrival index.
    attempts: Vec<u32>,
    /// Attempts the backend counted in all.
    sent: u64,
    /// (call arrival, hedge launch offset) of every hedge.
    hedges: Vec<(Instant, Duration)>,
    /// When the first call arrived.
    start: Instant,
}

fn recourse_executor(trigger: &str) -> Executor {
    let mut p = Policy::DEFAULT;
    // Only hedging adds load: no retries.
    p.retry.max_attempts = 1;
    p.hedge.enabled = true;
    p.hedge.max_hedges = 1;
    // The fixed delay, and the quantile trigger's fallback for a cold key.
    p.hedge.hedge_delay = Duration::from_millis(50);
    p.hedge.trigger = name("hedge.trigger", trigger).expect("a valid trigger name");
    let provider = StaticProvider::builder()
        .policy(KEY, p)
        .expect("a valid policy")
        .build();
    Executor::builder()
        .provider(provider)
        // The defaults, spelled out: 1024 keys, 10 s windows, 20 samples.
        .latency_trackers(LatencyTrackers::new(1024, WINDOW))
        .build()
}

async fn run(config: Config) -> Run {
    let backend = Backend::new();
    let exec = match config {
        Config::Recourse(trigger) => Some(Arc::new(recourse_executor(trigger))),
        _ => None,
    };
    let mut tower_hedge = match config {
        Config::Tower(period) => Some(tower::hedge::Hedge::new(
            backend.clone(),
            HedgeAll,
            MIN_SAMPLES,
            0.95,
            period,
        )),
        _ => None,
    };

    let start = Instant::now();
    let mut tasks = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let arrival = start + ARRIVAL_GAP * u32::try_from(i).expect("few calls");
        tokio::time::sleep_until(arrival).await;
        let attempts = Arc::new(AtomicU32::new(0));
        let req = Req {
            arrival,
            hedge: false,
            attempts: attempts.clone(),
        };
        let task = match (&exec, &mut tower_hedge) {
            (Some(exec), _) => {
                let (exec, backend) = (exec.clone(), backend.clone());
                tokio::spawn(async move {
                    exec.call(KEY, |a: AttemptInfo| {
                        let req = Req {
                            hedge: a.is_hedge,
                            ..req.clone()
                        };
                        backend.clone().serve(req)
                    })
                    .await
                    .expect("the backend never fails");
                    arrival.elapsed()
                })
            }
            (None, Some(hedge)) => {
                let fut = hedge
                    .ready()
                    .await
                    .expect("tower's hedge is always ready")
                    .call(req);
                tokio::spawn(async move {
                    fut.await.expect("the backend never fails");
                    arrival.elapsed()
                })
            }
            (None, None) => {
                let backend = backend.clone();
                tokio::spawn(async move {
                    backend.serve(req).await.expect("the backend never fails");
                    arrival.elapsed()
                })
            }
        };
        tasks.push((task, attempts));
    }
    let mut latencies = Vec::with_capacity(CALLS);
    let mut per_call = Vec::with_capacity(CALLS);
    for (task, attempts) in tasks {
        latencies.push(task.await.expect("a call task panicked"));
        per_call.push(attempts.load(Ordering::Relaxed));
    }
    let hedges = core::mem::take(&mut *backend.hedges.lock().expect("hedge log lock"));
    Run {
        latencies,
        attempts: per_call,
        sent: backend.sent.load(Ordering::Relaxed),
        hedges,
        start,
    }
}

/// Nearest-rank quantile of sorted `xs`, in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

/// One row of the table.
struct Row {
    label: String,
    p50: f64,
    p99: f64,
    p999: f64,
    extra_load: f64,
    hedge_delay_p50: Option<f64>,
    first_hedge: Option<Duration>,
    warmup_hedges: usize,
    total_extra_load: f64,
}

fn row(config: Config, run: &Run) -> Row {
    let mut measured = run.latencies[WARMUP..].to_vec();
    measured.sort_unstable();
    let calls = measured.len() as f64;
    let attempts: u64 = run.attempts[WARMUP..].iter().map(|&a| u64::from(a)).sum();
    let warmup_end = run.start + ARRIVAL_GAP * u32::try_from(WARMUP).expect("few calls");
    let mut delays: Vec<Duration> = run
        .hedges
        .iter()
        .filter(|(arrival, _)| *arrival >= warmup_end)
        .map(|&(_, d)| d)
        .collect();
    delays.sort_unstable();
    Row {
        label: config.label(),
        p50: quantile_ms(&measured, 0.50),
        p99: quantile_ms(&measured, 0.99),
        p999: quantile_ms(&measured, 0.999),
        extra_load: (attempts as f64 / calls - 1.0) * 100.0,
        hedge_delay_p50: (!delays.is_empty()).then(|| quantile_ms(&delays, 0.5)),
        first_hedge: run
            .hedges
            .iter()
            .map(|(arrival, _)| *arrival - run.start)
            .min(),
        warmup_hedges: run
            .hedges
            .iter()
            .filter(|(arrival, _)| *arrival < warmup_end)
            .count(),
        total_extra_load: (run.sent as f64 / CALLS as f64 - 1.0) * 100.0,
    }
}

fn main() {
    let configs = [
        Config::Plain,
        Config::Recourse(""),
        Config::Recourse("p95"),
        Config::Tower(WINDOW),
        Config::Tower(Duration::from_secs(1)),
    ];
    println!(
        "Tail at Scale backend: 99% log-normal (median 10 ms, sigma 0.25), 1% uniform \
         800..=1200 ms; seed {SEED:#x}."
    );
    println!(
        "{CALLS} calls, one per {} ms of virtual time (tokio paused clock); \
         the first {WARMUP} calls ({} s) are warm-up and excluded from the statistics.",
        ARRIVAL_GAP.as_millis(),
        (ARRIVAL_GAP * u32::try_from(WARMUP).expect("few calls")).as_secs()
    );
    println!(
        "Hedging: max 1 hedge per call, no retries; quantile estimators over 10 s \
         windows, {MIN_SAMPLES} samples minimum.\n"
    );
    let wall = WallInstant::now();
    let mut rows = Vec::new();
    for config in configs {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a tokio runtime");
        let started = WallInstant::now();
        let run = rt.block_on(run(config));
        let r = row(config, &run);
        eprintln!(
            "{}: {:.2} s wall, first hedge at {}, {} hedges during warm-up, \
             extra load over all {CALLS} calls {:.2} %",
            r.label,
            started.elapsed().as_secs_f64(),
            r.first_hedge
                .map_or("never".to_owned(), |d| format!("{:.3} s", d.as_secs_f64())),
            r.warmup_hedges,
            r.total_extra_load,
        );
        rows.push(r);
    }
    println!(
        "| configuration | p50 ms | p99 ms | p99.9 ms | extra load % | median hedge delay ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.2} | {} |",
            r.label,
            r.p50,
            r.p99,
            r.p999,
            r.extra_load,
            r.hedge_delay_p50
                .map_or("-".to_owned(), |d| format!("{d:.1}")),
        );
    }
    println!(
        "\nextra load = attempts sent / calls - 1, over the {} measured calls; \
         hedge delay = time from arrival to the hedge's launch.",
        CALLS - WARMUP
    );
    let (plain, p95) = (&rows[0], &rows[2]);
    let cut = plain.p999 / p95.p999;
    println!(
        "recourse p95: p99.9 cut {cut:.1}x (goal >= 10x), extra load {:.2} % (goal <= 6 %): {}",
        p95.extra_load,
        if cut >= 10.0 && p95.extra_load <= 6.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("wall time {:.2} s", wall.elapsed().as_secs_f64());
}
