//! Per-call cost with two threads next to one (issue 16): successful calls
//! made back to back by tasks on a tokio multi-thread runtime with two
//! worker threads, one task (one thread busy) or two at once (both), on one
//! hot key and on 1,000 keys, for recourse, backon and `tower::retry`.
//!
//! `cargo run --release -p recourse-benches --example threads` prints a
//! markdown table (`bash benches/run.sh` puts it in BENCHMARKS.md).
//!
//! Each task counts the CPU time of its own thread
//! (`CLOCK_THREAD_CPUTIME_ID`) over its calls, so time the thread spent
//! descheduled on a busy machine is not counted, while what sharing costs
//! (a contended lock, a cache line bounced between cores) is. A call
//! completes in its first poll, so a task never yields and stays on its
//! worker. Per-call cost is that CPU time divided by the task's calls; with
//! two tasks, their mean. The median of `ROUNDS` rounds is reported. With
//! perfect scaling the two columns are equal.
//!
//! Sharing costs only while both threads run at the same instant, which a
//! busy machine (other processes on both cores) does not grant: the last
//! column says how much of the two-thread rounds the tasks really ran
//! side by side, from their CPU times and their wall-clock span
//! (`(cpu₁ + cpu₂ − span) ÷ min(cpu₁, cpu₂)`: 100 % both ran throughout,
//! 0 % one after the other). A ratio measured with little overlap says
//! little about sharing.

use core::future::{ready, Ready};
use core::time::Duration;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use backon::{ExponentialBuilder, Retryable};
use recourse::{Executor, Policy, StaticProvider};
use rustix::time::{clock_gettime, ClockId};
use tower::{Service, ServiceExt};

// tower's retry policy and success service, as the other benches use them.
#[path = "../shared/peers.rs"]
mod peers;

use peers::{Ok1, Retries};

/// Calls per task per round.
const CALLS: u64 = 200_000;
/// Rounds per measurement (the median is reported).
const ROUNDS: usize = 5;
/// The hot key.
const HOT: &str = "svc.Get";

#[derive(Copy, Clone, Debug)]
enum Variant {
    /// `recourse::do_value`, one key (no policy: the fallback).
    FacadeHot,
    /// `recourse::do_value`, 1,000 keys in turn.
    FacadeKeys,
    /// `Executor::call` with the circuit breaker on, one key: both threads
    /// use the key's breaker (a per-key lock).
    GuardedHot,
    /// `Executor::call` with the circuit breaker on, 1,000 keys.
    GuardedKeys,
    /// backon `Retryable` with `ExponentialBuilder`.
    Backon,
    /// `tower::retry::Retry`.
    Tower,
}

impl Variant {
    const ALL: [Self; 6] = [
        Self::FacadeHot,
        Self::FacadeKeys,
        Self::GuardedHot,
        Self::GuardedKeys,
        Self::Backon,
        Self::Tower,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::FacadeHot => "recourse `do_value`, one hot key",
            Self::FacadeKeys => "recourse `do_value`, 1,000 keys",
            Self::GuardedHot => "recourse `Executor::call`, breaker on, one hot key",
            Self::GuardedKeys => "recourse `Executor::call`, breaker on, 1,000 keys",
            Self::Backon => "backon `Retryable` + `ExponentialBuilder`",
            Self::Tower => "`tower::retry::Retry`",
        }
    }
}

struct Ctx {
    keys: Vec<String>,
    guarded: Executor,
}

fn ok<A>(_: A) -> Ready<Result<u32, &'static str>> {
    ready(Ok(1))
}

fn no_sleep(_: Duration) -> Ready<()> {
    ready(())
}

fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// `CALLS` calls of `variant`: the thread CPU nanoseconds they took, and
/// when they started and ended.
async fn calls(variant: Variant, ctx: &Ctx) -> (u64, Instant, Instant) {
    let mut good = 0u64;
    let began = Instant::now();
    let start = thread_cpu_ns();
    match variant {
        Variant::FacadeHot => {
            for _ in 0..CALLS {
                good += u64::from(recourse::do_value(HOT, ok).await.is_ok());
            }
        }
        Variant::FacadeKeys => {
            for i in 0..CALLS {
                let key = &ctx.keys[(i % 1_000) as usize];
                good += u64::from(recourse::do_value(key, ok).await.is_ok());
            }
        }
        Variant::GuardedHot => {
            for _ in 0..CALLS {
                good += u64::from(ctx.guarded.call(HOT, ok).await.is_ok());
            }
        }
        Variant::GuardedKeys => {
            for i in 0..CALLS {
                let key = &ctx.keys[(i % 1_000) as usize];
                good += u64::from(ctx.guarded.call(key, ok).await.is_ok());
            }
        }
        Variant::Backon => {
            let backoff = ExponentialBuilder::default()
                .with_min_delay(Duration::ZERO)
                .with_max_times(2);
            for _ in 0..CALLS {
                let call = (|| ready(Ok::<u32, &str>(1)))
                    .retry(backoff)
                    .sleep(no_sleep);
                good += u64::from(call.await.is_ok());
            }
        }
        Variant::Tower => {
            let mut svc = tower::retry::Retry::new(Retries(2), Ok1);
            for _ in 0..CALLS {
                let ok = match svc.ready().await {
                    Ok(s) => s.call(()).await.is_ok(),
                    Err(_) => false,
                };
                good += u64::from(ok);
            }
        }
    }
    let spent = thread_cpu_ns() - start;
    let ended = Instant::now();
    assert_eq!(good, CALLS, "{variant:?}: every call succeeded");
    (spent, began, ended)
}

/// Nanoseconds of CPU per call with `threads` tasks at once (median of
/// `ROUNDS` rounds of the tasks' mean), and that round's overlap (the share
/// of the time the tasks ran side by side; 1 for one task).
fn measure(
    rt: &tokio::runtime::Runtime,
    ctx: &Arc<Ctx>,
    variant: Variant,
    threads: usize,
) -> (f64, f64) {
    let mut rounds: Vec<(f64, f64)> = (0..ROUNDS)
        .map(|_| {
            let barrier = Arc::new(Barrier::new(threads));
            let tasks: Vec<_> = (0..threads)
                .map(|_| {
                    let (ctx, barrier) = (Arc::clone(ctx), Arc::clone(&barrier));
                    rt.spawn(async move {
                        // Both tasks start together, each on its worker
                        // (the barrier holds the first one's thread).
                        barrier.wait();
                        calls(variant, &ctx).await
                    })
                })
                .collect();
            let ran: Vec<(u64, Instant, Instant)> = tasks
                .into_iter()
                .map(|t| rt.block_on(t).expect("the task ran"))
                .collect();
            let spent: u64 = ran.iter().map(|r| r.0).sum();
            let least = ran.iter().map(|r| r.0).min().unwrap_or(0);
            let span = match (ran.iter().map(|r| r.1).min(), ran.iter().map(|r| r.2).max()) {
                (Some(a), Some(b)) => b.duration_since(a).as_nanos() as f64,
                _ => 0.0,
            };
            let overlap = if threads == 1 || least == 0 {
                1.0
            } else {
                ((spent as f64 - span) / least as f64).clamp(0.0, 1.0)
            };
            (spent as f64 / (threads as u64 * CALLS) as f64, overlap)
        })
        .collect();
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    rounds[ROUNDS / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let mut guarded = Policy::DEFAULT;
    guarded.circuit.enabled = true;
    let ctx = Arc::new(Ctx {
        keys: (0..1_000).map(|i| format!("svc.Op{i}")).collect(),
        guarded: Executor::builder()
            .provider(
                StaticProvider::builder()
                    .default_policy(guarded)
                    .expect("a valid policy")
                    .build(),
            )
            .build(),
    });
    println!(
        "| variant | ns/call, one thread | ns/call, two threads | two ÷ one | threads side by side |"
    );
    println!("|---|---:|---:|---:|---:|");
    for variant in Variant::ALL {
        // Warm-up: thread-locals, caches, the default executor.
        let _ = measure(&rt, &ctx, variant, 2);
        let (one, _) = measure(&rt, &ctx, variant, 1);
        let (two, overlap) = measure(&rt, &ctx, variant, 2);
        println!(
            "| {} | {one:.1} | {two:.1} | {:.2} | {:.0} % |",
            variant.label(),
            two / one,
            overlap * 100.0
        );
    }
}
