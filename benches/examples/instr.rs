//! Runs one variant of `shared/peers.rs` `K` times, for `benches/callgrind.sh`
//! to count its instructions per call.
//!
//! `cargo run --release -p recourse-benches --example instr -- success/backon 10000`
//!
//! The calls run after a warm-up (the same number of calls: thread-locals,
//! the default executor and tokio's timer wheel are set up by then) inside
//! [`instr_measured`], the one function whose instructions callgrind collects
//! (`--toggle-collect`); everything else — start-up, runtimes, the warm-up —
//! is left out. Without an argument it lists the variants.

use core::future::IntoFuture;
use core::hint::black_box;

#[path = "../shared/peers.rs"]
mod peers;

use peers::{Env, Harness, Path, Variant};

/// Runs the calls of the chosen variant.
struct Instr {
    calls: u64,
}

impl Harness for Instr {
    fn run<F, E>(&mut self, env: &Env, variant: Variant, mut make: impl FnMut() -> F)
    where
        F: IntoFuture<Output = Result<u32, E>>,
    {
        env.check(variant, &mut make);
        env.session(variant.path, || {
            warm_up(env, variant.path, self.calls, &mut make);
            // Checked after the call, which keeps it a real call: callgrind
            // would not see a tail call's jump enter the function.
            let ok = instr_measured(env, variant.path, self.calls, &mut make);
            assert_eq!(ok, self.calls, "every call returned Ok");
        });
    }
}

/// `calls` calls, not collected.
#[inline(never)]
fn warm_up<F, E>(env: &Env, path: Path, calls: u64, make: &mut impl FnMut() -> F)
where
    F: IntoFuture<Output = Result<u32, E>>,
{
    for _ in 0..calls {
        black_box(env.call(path, make));
    }
}

/// `calls` calls, returning how many returned `Ok`: callgrind collects only
/// inside this function (`--toggle-collect='*instr_measured*'`), so its
/// instructions divided by `calls` are one call's, with the loop's few.
#[inline(never)]
fn instr_measured<F, E>(env: &Env, path: Path, calls: u64, make: &mut impl FnMut() -> F) -> u64
where
    F: IntoFuture<Output = Result<u32, E>>,
{
    let mut ok = 0;
    for _ in 0..calls {
        ok += u64::from(black_box(env.call(path, make)));
    }
    ok
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(id) = args.next() else {
        for v in peers::VARIANTS {
            println!("{}\t{}", v.id(), v.label());
        }
        return;
    };
    let variant = peers::find(&id).unwrap_or_else(|| panic!("no variant {id}"));
    let calls = args
        .next()
        .map_or(10_000, |k| k.parse().expect("a number of calls"));
    let env = Env::new();
    peers::dispatch(&env, variant, &mut Instr { calls });
}
