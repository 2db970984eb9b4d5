//! One budget decision — `decide`, then `settle` when allowed — for each
//! built-in budget, on one thread and with two threads hammering the same
//! budget. Each iteration is one [`step`]: alternately a first attempt that
//! fails and a retry that succeeds, in virtual time, so every budget stays
//! in the state where it allows (see `recourse_benches`).
//!
//! In the two-thread group both threads run the same number of steps
//! against one budget, released together by a barrier; the time reported is
//! the measuring thread's, per step: the latency of one decision while
//! another thread contends for the same atomics.

use core::hint::black_box;
use core::time::Duration;
use std::sync::Barrier;
use std::time::Instant;

use criterion::{criterion_main, Criterion};
use recourse_benches::{
    aws_retry_quota, concurrency, grpc_throttle, retry_ratio, step, token_bucket, unlimited,
};
use recourse_core::budget::Budget;

/// Registers both benchmarks of one budget, made fresh by `make`.
fn bench<B: Budget + Sync>(c: &mut Criterion, name: &str, make: fn() -> B) {
    let budget = make();
    let mut i = 0u64;
    c.benchmark_group("decide+settle/1 thread")
        .bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                black_box(step(&budget, black_box(i)))
            })
        });

    let budget = make();
    // Virtual time goes on from one sample to the next (an earlier `now`
    // would only make the time-based budgets look emptier).
    let mut base = 0u64;
    c.benchmark_group("decide+settle/2 threads")
        .bench_function(name, |b| {
            b.iter_custom(|iters| {
                let steps = base..base + iters;
                base += iters;
                let barrier = Barrier::new(2);
                std::thread::scope(|s| {
                    s.spawn(|| {
                        barrier.wait();
                        for i in steps.clone() {
                            black_box(step(&budget, black_box(i)));
                        }
                    });
                    barrier.wait();
                    let start = Instant::now();
                    for i in steps.clone() {
                        black_box(step(&budget, black_box(i)));
                    }
                    start.elapsed()
                })
            })
        });
}

fn budgets(c: &mut Criterion) {
    bench(c, "unlimited", unlimited);
    bench(c, "token_bucket", token_bucket);
    bench(c, "retry_ratio", retry_ratio);
    bench(c, "grpc_throttle", grpc_throttle);
    bench(c, "aws_retry_quota", aws_retry_quota);
    bench(c, "concurrency", concurrency);
}

/// The benchmark group (what `criterion_group!` would write, with docs):
/// short runs, 1 s of measurement after 0.5 s of warm-up per benchmark.
fn benches() {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    budgets(&mut c);
}

criterion_main!(benches);
