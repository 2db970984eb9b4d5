//! recourse next to backon and tower: time per call on three paths,
//! measured in one run so that the ratios compare like with like.
//!
//! - `success`: the operation succeeds at once — a direct call, the
//!   recourse-core driver with a no-op timer, the recourse facade on tokio's
//!   timer, a recourse executor on a virtual clock, backon, `tower::retry`;
//! - `retry`: two failures then a success, zero backoff — a hand-written
//!   loop, recourse (core driver, executor on a virtual clock), backon,
//!   `tower::retry`;
//! - `hedge`: the primary never answers, the hedge answers at once — a
//!   hand-written select, recourse (core driver, executor on a virtual
//!   clock, executor on tokio's paused clock), `tower::hedge`.
//!
//! Every variant is defined once, in `shared/peers.rs` (which also says how
//! each call is driven); `examples/allocs.rs` counts the same calls' heap
//! allocations and `examples/instr.rs` their instructions. BENCHMARKS.md has
//! the results; `bash benches/run.sh` regenerates them.

use core::future::IntoFuture;
use core::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_main, BenchmarkGroup, Criterion};

#[path = "../shared/peers.rs"]
mod peers;

use peers::{Env, Harness, Path, Variant};

/// Registers each variant of a path in its criterion group.
struct Group<'a, 'c> {
    group: &'a mut BenchmarkGroup<'c, WallTime>,
}

impl Harness for Group<'_, '_> {
    fn run<F, E>(&mut self, env: &Env, variant: Variant, mut make: impl FnMut() -> F)
    where
        F: IntoFuture<Output = Result<u32, E>>,
    {
        env.check(variant, &mut make);
        env.session(variant.path, || {
            self.group.bench_function(variant.lib.id(), |b| {
                b.iter(|| env.call(variant.path, &mut make))
            });
        });
    }
}

fn peers(c: &mut Criterion) {
    let env = Env::new();
    for path in Path::ALL {
        let mut group = c.benchmark_group(path.id());
        for &variant in peers::VARIANTS.iter().filter(|v| v.path == path) {
            peers::dispatch(&env, variant, &mut Group { group: &mut group });
        }
        group.finish();
    }
}

/// The benchmark group (what `criterion_group!` would write, with docs):
/// short runs, 1 s of measurement after 0.5 s of warm-up per benchmark
/// (command-line flags such as `--measurement-time` override them).
fn benches() {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    peers(&mut c);
}

criterion_main!(benches);
