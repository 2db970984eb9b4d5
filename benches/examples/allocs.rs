//! Heap allocations per call and the size of each call's future, for every
//! variant of `shared/peers.rs` (recourse, backon, tower).
//!
//! `cargo run --release -p recourse-benches --example allocs`
//!
//! Allocations are counted by `allocation-counter`, whose global allocator
//! this binary links: per thread, over [`CALLS`] calls made after a warm-up
//! of as many (the default executor, thread-locals and tokio's timer are set
//! up by then), including whatever the harness itself allocates (it
//! allocates nothing for the direct calls). The future size is
//! `size_of_val` of the call's future before its first poll — the executor's
//! hedged calls box their attempts, and that block is counted as an
//! allocation, not in the size.
//!
//! Prints one tab-separated line per variant: `path/lib`, allocations per
//! call, bytes allocated per call, future size in bytes, description.
//!
//! With `--check` it also fails (exit code 1) unless the calls that must not
//! allocate — the core driver on every path, the facade and
//! `Executor::call` without a timeline on the success and retry paths —
//! allocated nothing.

use core::future::IntoFuture;
use core::hint::black_box;
use core::mem::size_of_val;

#[path = "../shared/peers.rs"]
mod peers;

use peers::{Env, Harness, Lib, Path, Variant};

/// Calls counted per variant.
const CALLS: u64 = 10_000;

/// Measures each variant; collects the variants that allocated but must
/// not.
struct Allocs {
    failures: Vec<String>,
}

/// Whether `variant` must not allocate.
fn must_not_allocate(variant: Variant) -> bool {
    match variant.lib {
        Lib::Core => true,
        Lib::Facade
        | Lib::ExecVirtual
        | Lib::ExecTokio
        | Lib::ExecGuarded
        | Lib::ExecKey
        | Lib::FacadeKey => variant.path != Path::Hedge,
        Lib::Direct | Lib::Backon | Lib::Tower => false,
    }
}

impl Harness for Allocs {
    fn run<F, E>(&mut self, env: &Env, variant: Variant, mut make: impl FnMut() -> F)
    where
        F: IntoFuture<Output = Result<u32, E>>,
    {
        env.check(variant, &mut make);
        let path = variant.path;
        let (size, info) = env.session(path, || {
            let size = size_of_val(&make().into_future());
            for _ in 0..CALLS {
                black_box(env.call(path, &mut make));
            }
            let info = allocation_counter::measure(|| {
                for _ in 0..CALLS {
                    black_box(env.call(path, &mut make));
                }
            });
            (size, info)
        });
        println!(
            "{}\t{}\t{}\t{size}\t{}",
            variant.id(),
            per_call(info.count_total),
            per_call(info.bytes_total),
            variant.label()
        );
        if info.count_total > 0 && must_not_allocate(variant) {
            self.failures.push(format!(
                "{}: {} allocations per call",
                variant.id(),
                per_call(info.count_total)
            ));
        }
    }
}

/// `total / CALLS`, with two decimals unless whole.
fn per_call(total: u64) -> String {
    if total % CALLS == 0 {
        (total / CALLS).to_string()
    } else {
        format!("{:.2}", total as f64 / CALLS as f64)
    }
}

fn main() {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let env = Env::new();
    let mut allocs = Allocs {
        failures: Vec::new(),
    };
    println!("variant\tallocs/call\tbytes/call\tfuture bytes\tdescription");
    for &variant in peers::VARIANTS {
        peers::dispatch(&env, variant, &mut allocs);
    }
    if check {
        if allocs.failures.is_empty() {
            eprintln!("check: no allocation where none is allowed");
        } else {
            eprintln!("check failed: {}", allocs.failures.join("; "));
            std::process::exit(1);
        }
    }
}
