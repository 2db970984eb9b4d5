//! Amplification in the simulator: one bound for retries and hedges
//! together, and what reaches the bottom of three layers.
//!
//! 1. Three layers (client → A → B → C), each caller allowing 3 attempts,
//!    C failing every request: attempts reaching A, B and C per client
//!    request, with per-layer policies only, with each layer's
//!    amplification ledger at 1.1×, and with layers that tell each other
//!    (no retry of a request that is itself a retry; retry at one layer
//!    only).
//! 2. One layer with 3 attempts and a hedge each, half the attempts
//!    failing, every attempt slower than the hedge delay: the extra load
//!    with and without the ledger.
//! 3. A deadline-bound workload (deadline 100 ms, p50 20 ms / p99 200 ms,
//!    30 % failing): attempts, successes and the median time to error with
//!    deadline awareness off, at p50 and at p90.
//!
//! ```text
//! cargo run --release --example amplification --features recourse-rs/sim
//! ```
//!
//! It exits with an error unless: 27 attempts reach C with per-layer
//! policies only; at most 1.1 attempts per client request reach every layer
//! with the ledger and retries at one layer; and the ledger keeps retries
//! and hedges together within 10.3 % extra load (1.1× plus the floor of one
//! per second); and deadline awareness at p50 sends fewer attempts for at
//! most 1 % fewer successes, and at p90 cuts the median time to error by at
//! least 20 % (for about 6 % fewer successes: the table shows the price).

use core::time::Duration;
use std::process::ExitCode;

use recourse::policy::{AmplificationPolicy, HedgePolicy};
use recourse::sim::deadline::deadline_table;
use recourse::sim::layers::{three_layer_table, three_layers, Awareness};
use recourse::sim::{Arrivals, Backend, Latency, Scenario};
use recourse::Policy;

fn main() -> ExitCode {
    let mut failed = Vec::new();
    println!("Three layers, 3 attempts per caller, C failing 100 %, 2000 client requests:\n");
    print!("{}", three_layer_table(2_000));

    let plain = Policy::retries(2);
    if three_layers(&plain, Awareness::None, 2_000)[2] != 27.0 {
        failed.push("per-layer policies only should send 27 attempts to C");
    }
    let ledger = plain
        .clone()
        .amplification(AmplificationPolicy::at_most(1.1).min_per_sec(0));
    if three_layers(&ledger, Awareness::OneLayer, 2_000)
        .iter()
        .any(|x| *x > 1.1)
    {
        failed.push("ledger + retry at one layer: more than 1.1x at some layer");
    }

    println!("\nOne layer, 3 attempts and a hedge at 50 ms, 300 ms attempts, 50 % failing:\n");
    println!(
        "| {:<22} | {:>9} | {:>7} | {:>8} |",
        "", "attempts", "hedges", "extra"
    );
    println!("|{:-<24}|{:->11}|{:->9}|{:->10}|", "", "", "", "");
    for (label, max) in [("no ledger", 0.0), ("ledger at 1.1x", 1.1)] {
        let p = Policy::retries(2)
            .hedge(HedgePolicy::after(Duration::from_millis(50)).max_hedges(1))
            .amplification(AmplificationPolicy::at_most(max));
        let r = match Scenario::new(
            p,
            Backend::new(Latency::Constant(Duration::from_millis(300))).error_rate(0.5),
        )
        .arrivals(Arrivals::Uniform { per_second: 500.0 })
        .calls(30_000)
        .seed(9)
        .run()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "| {label:<22} | {:>9} | {:>7} | {:>6.1} % |",
            r.attempts,
            r.hedges,
            r.extra_load() * 100.0
        );
        if max > 0.0 && r.extra_load() > 0.103 {
            failed.push("the ledger let retries and hedges past 10.3 % extra load");
        }
    }
    println!();
    match deadline_table() {
        Ok((table, runs)) => {
            print!("{table}");
            let (off, p50, p90) = (&runs[0].1, &runs[1].1, &runs[2].1);
            if p50.attempts >= off.attempts || p50.successes() * 100 < off.successes() * 99 {
                failed.push(
                    "deadline awareness at p50: not fewer attempts within 1 % of the successes",
                );
            }
            if p90.error_quantile(500) * 10 > off.error_quantile(500) * 8 {
                failed.push(
                    "deadline awareness at p90: the median time to error is not 20 % shorter",
                );
            }
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    if failed.is_empty() {
        println!("\nall goals met");
        ExitCode::SUCCESS
    } else {
        for f in failed {
            eprintln!("goal missed: {f}");
        }
        ExitCode::FAILURE
    }
}
