//! The core [`LatencySketch`]: `record` of one sample, and `quantile` (p99)
//! over a sketch holding two windows of samples.
//!
//! Samples come from a fixed, seeded mix: 99 % spread over 5–15 ms and 1 %
//! over 0.5–1.5 s (Tail at Scale's bimodal shape), so the buckets touched
//! and the length of a quantile's scan are those of a real service. Time
//! advances 1 µs per record with a window of 1 s, so `record` includes its
//! share of window rotations (one per million records).

use core::hint::black_box;
use core::time::Duration;

use criterion::{criterion_main, Criterion};
use recourse_core::{Instant, LatencySketch};

/// 4096 seeded latencies, 1 % of them slow (a xorshift generator: the
/// bench crate needs no RNG dependency for this).
fn samples() -> Vec<Duration> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..4096)
        .map(|_| {
            let ms = if next() % 100 == 0 { 1_000 } else { 10 };
            Duration::from_micros(ms * 500 + next() % (ms * 1_000))
        })
        .collect()
}

fn latency(c: &mut Criterion) {
    let samples = samples();
    let window = Duration::from_secs(1);

    let mut sketch = LatencySketch::new(window);
    let mut i = 0u64;
    c.bench_function("latency/record", |b| {
        b.iter(|| {
            i += 1;
            let latency = samples[(i % 4096) as usize];
            sketch.record(black_box(latency), black_box(Instant::from_micros(i)));
        })
    });

    // Both windows full: 100,000 samples each.
    let mut sketch = LatencySketch::new(window);
    for (n, latency) in samples.iter().cycle().take(200_000).enumerate() {
        let now = Instant::from_micros(n as u64 * 10);
        sketch.record(*latency, now);
    }
    let now = Instant::from_micros(1_999_999);
    assert_eq!(sketch.count(now), 200_000);
    for (name, q) in [("latency/quantile p50", 500), ("latency/quantile p99", 990)] {
        c.bench_function(name, |b| {
            b.iter(|| black_box(sketch.quantile(black_box(q), black_box(now))))
        });
    }
}

/// The benchmark group (what `criterion_group!` would write, with docs):
/// short runs, 1 s of measurement after 0.5 s of warm-up per benchmark.
fn benches() {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    latency(&mut c);
}

criterion_main!(benches);
