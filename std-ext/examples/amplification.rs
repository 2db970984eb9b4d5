//! Amplification in the simulator: one bound for retries and hedges
//! together, and what reaches the bottom of three layers.
//!
//! 1. Three layers (client → A → B → C), each caller allowing 3 attempts,
//!    C failing every request: attempts reaching A, B and C per client
//!    request with no budget, with each layer's amplification ledger at
//!    1.1×, and with layers that know about each other through the
//!    upstream attempt count (`amplification.upstream_retry`:
//!    `not_when_retry`, and `shared_allowance` with the ledger); then the
//!    same with a hedge at every layer.
//! 2. One layer with 3 attempts and a hedge each, half the attempts
//!    failing, every attempt slower than the hedge delay: the extra load
//!    with and without the ledger.
//! 3. A deadline-bound workload (deadline 100 ms, p50 20 ms / p99 200 ms,
//!    30 % failing): attempts, successes and the median time to error with
//!    deadline awareness off, at p50 and at p90; then the same against a
//!    dependency that slows down with load (past 8 attempts in flight).
//!
//! ```text
//! cargo run --release --example amplification --features recourse-rs/sim
//! ```
//!
//! It exits with an error unless: 27 attempts reach C with no budget (216
//! with hedges); with the ledger and a shared allowance at most 1.1
//! attempts per client request reach every layer, with and without hedges;
//! the ledger keeps retries and hedges together within 10.3 % extra load
//! (1.1× plus the floor of one per second); and deadline awareness at p50
//! sends fewer attempts for at most 1 % fewer successes, and at p90 cuts
//! the median time to error by at least 20 % (for about 6 % fewer
//! successes: the table shows the price); and against the loaded
//! dependency every quantile sends fewer attempts for at least as many
//! successes, and p90 cuts the median time to error by at least 15 %.

use core::time::Duration;
use std::process::ExitCode;

use recourse::policy::{AmplificationPolicy, HedgePolicy};
use recourse::sim::deadline::{deadline_table, deadline_table_loaded};
use recourse::sim::layers::{table, three_layer_runs, Shape, COLUMNS};
use recourse::sim::{Arrivals, Backend, Latency, Scenario};
use recourse::upstream::UpstreamRetry;
use recourse::Policy;

fn main() -> ExitCode {
    let mut failed = Vec::new();
    for shape in [Shape::Retries, Shape::Hedged] {
        let runs = three_layer_runs(shape, 2_000);
        println!("Three layers, C failing 100 %:\n");
        print!("{}", table(shape, 2_000, &runs));
        println!();
        let no_budget = if shape == Shape::Retries { 27.0 } else { 216.0 };
        if runs[0][2] != no_budget {
            failed.push("with no budget, C should get 3 (or 6 with a hedge) per caller, cubed");
        }
        let shared = COLUMNS
            .iter()
            .position(|c| c.1 && c.2 == UpstreamRetry::SharedAllowance)
            .map(|i| runs[i]);
        if shared.is_none_or(|r| r.iter().any(|x| *x > 1.1)) {
            failed.push("ledger + shared allowance: more than 1.1x at some layer");
        }
    }
    println!("One layer, 3 attempts and a hedge at 50 ms, 300 ms attempts, 50 % failing:\n");
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
    println!();
    match deadline_table_loaded() {
        Ok((table, runs)) => {
            print!("{table}");
            let off = &runs[0].1;
            if runs[1..]
                .iter()
                .any(|(_, r)| r.attempts >= off.attempts || r.successes() < off.successes())
            {
                failed.push(
                    "loaded dependency: deadline awareness should send fewer attempts for at least as many successes",
                );
            }
            let p90 = &runs[3].1;
            if p90.error_quantile(500) * 100 > off.error_quantile(500) * 85 {
                failed
                    .push("loaded dependency: at p90 the median time to error is not 15 % shorter");
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
