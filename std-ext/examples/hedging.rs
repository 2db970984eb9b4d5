//! Hedged requests against "The Tail at Scale" backend, in the simulator.
//!
//! Most requests take about 10 ms; 1 % are stragglers of about a second
//! (a GC pause, a cold cache). The same 100,000 calls run with no hedging,
//! with a hedge after a fixed 50 ms, and with a hedge once an attempt has
//! outlived the key's recent 95th-percentile latency. Then a brownout: the
//! backend is uniformly slow, so every call would hedge, and a 5 % hedge
//! budget is what keeps the extra load at 5 %. Last, the simulator's own
//! speed.
//!
//! ```text
//! cargo run --release --example hedging
//! ```
//!
//! It exits with an error when p95 hedging misses its acceptance: p99.9 cut
//! at least 10× for at most 6 % extra load.

use core::time::Duration;
use std::process::ExitCode;
use std::time::Instant;

use recourse::budget::RetryRatio;
use recourse::policy::HedgePolicy;
use recourse::sim::{Arrivals, Backend, Latency, Report, Scenario};
use recourse::Policy;

fn hedging(trigger: &str, delay_ms: u64) -> Result<Policy, recourse::PolicyError> {
    let hedge = HedgePolicy::after(Duration::from_millis(delay_ms))
        .max_hedges(1)
        .trigger(trigger)?;
    Ok(Policy::once().hedge(hedge))
}

fn row(label: &str, r: &Report) {
    let ms = |q| r.quantile(q).as_secs_f64() * 1000.0;
    println!(
        "| {label:<28} | {:>8.1} | {:>8.1} | {:>8.1} | {:>9.1} % | {:>7} |",
        ms(500),
        ms(990),
        ms(999),
        r.extra_load() * 100.0,
        r.hedge_denials,
    );
}

fn header() {
    println!(
        "| {:<28} | {:>8} | {:>8} | {:>8} | {:>11} | {:>7} |",
        "policy", "p50 ms", "p99 ms", "p99.9 ms", "extra load", "denied"
    );
    println!(
        "|{:-<30}|{:->10}|{:->10}|{:->10}|{:->13}|{:->9}|",
        "", "", "", "", "", ""
    );
}

fn main() -> Result<ExitCode, Box<dyn core::error::Error>> {
    let tail = |policy: Policy| {
        Scenario::new(policy, Backend::new(Latency::tail_at_scale()))
            .arrivals(Arrivals::Poisson {
                per_second: 1_000.0,
            })
            .calls(100_000)
            .warmup(2_000)
            .seed(2013)
    };
    println!("The Tail at Scale: log-normal ~10 ms, 1 % stragglers 0.8-1.2 s; 100,000 calls at 1,000/s (after 2,000 warm-up), seed 2013\n");
    header();
    let plain = tail(Policy::DEFAULT).run()?;
    row("no hedging", &plain);
    let fixed = tail(hedging("", 50)?).run()?;
    row("hedge after 50 ms", &fixed);
    let p95 = tail(hedging("p95", 50)?).run()?;
    row("hedge after p95 (trigger)", &p95);
    let cut = plain.quantile(999).as_secs_f64() / p95.quantile(999).as_secs_f64();
    let met = cut >= 10.0 && p95.extra_load() <= 0.06;
    println!(
        "\np95 hedging: p99.9 cut {cut:.1}x for {:.1} % extra load (acceptance: >= 10x, <= 6 %): {}",
        p95.extra_load() * 100.0,
        if met { "met" } else { "MISSED" }
    );
    println!("\nThe p95 run in full:\n{p95}");

    println!(
        "Brownout: every request takes 300 ms (> the 50 ms hedge delay); 60,000 calls at 500/s\n"
    );
    let slow = || -> Result<Scenario, recourse::PolicyError> {
        // One budget for first attempts and hedges: the ratio budget
        // counts first attempts as deposits and hedges as withdrawals.
        let p = Policy::once().budget("ratio")?.hedge(
            HedgePolicy::after(Duration::from_millis(50))
                .max_hedges(1)
                .budget("ratio")?,
        );
        Ok(Scenario::new(
            p,
            Backend::new(Latency::Constant(Duration::from_millis(300))),
        )
        .arrivals(Arrivals::Uniform { per_second: 500.0 })
        .calls(60_000)
        .seed(7))
    };
    header();
    let unbounded = slow()?.run()?;
    row("hedge after 50 ms", &unbounded);
    let bounded = slow()?
        .budget(|| RetryRatio::new(Duration::from_secs(10), 1, 50))
        .run()?;
    row("... with a 5 % ratio budget", &bounded);

    let calls = 1_000_000;
    let started = Instant::now();
    let big = tail(hedging("p95", 50)?).calls(calls).warmup(0).run()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\nSimulator speed: {calls} p95-hedged calls ({} attempts) in {secs:.2} s: {:.2} M calls/s on one core",
        big.attempts,
        calls as f64 / secs / 1e6
    );
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
