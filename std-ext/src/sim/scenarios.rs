//! The scenarios the simulator's speed is measured on
//! (`benches/examples/sim_speed.rs`) and whose reports a golden test keeps
//! byte for byte (`src/sim/golden/benchmark_reports.txt`): one list, so
//! that what the benchmark compares before and after a change and what the
//! test checks cannot drift apart.

use core::time::Duration;

use recourse_core::budget::RetryRatio;
use recourse_core::policy::{name, Policy};

use super::{Arrivals, Backend, Brownout, Latency, Scenario, Window};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A policy of one attempt hedged up to `hedges` times after `delay`, or
/// when the attempt outlives the key's recent `trigger` quantile (`"p95"`;
/// `""`: the fixed delay).
fn hedged(trigger: &str, hedges: u32, delay: Duration) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 1;
    p.hedge.enabled = true;
    p.hedge.max_hedges = hedges;
    p.hedge.hedge_delay = delay;
    // A trigger name from this module's own short list: valid.
    p.hedge.trigger = name("hedge.trigger", trigger).unwrap_or_default();
    p
}

/// `policy` against [`Latency::tail_at_scale`], calls arriving as a
/// Poisson process at 1,000 per second, seed 2013.
fn tail(policy: Policy, calls: u64, warmup: u64) -> Scenario {
    Scenario::new(policy, Backend::new(Latency::tail_at_scale()))
        .arrivals(Arrivals::Poisson {
            per_second: 1_000.0,
        })
        .calls(calls)
        .warmup(warmup)
        .seed(2013)
}

/// The Tail-at-Scale scenario the simulator's speed is measured on
/// (`std-ext/examples/hedging.rs`'s): log-normal ~10 ms latencies with
/// 1 % stragglers of 0.8–1.2 s, `calls` calls arriving as a Poisson
/// process at 1,000 per second, one attempt hedged once when it outlives
/// the key's recent p95 (at least 50 ms otherwise), seed 2013, no warm-up.
pub fn tail_at_scale(calls: u64) -> Scenario {
    tail(hedged("p95", 1, ms(50)), calls, 0)
}

/// Labelled scenarios that between them use every part of the simulator:
/// the Tail-at-Scale backend unhedged and hedged three ways (the p95 one is
/// [`tail_at_scale`] with 100,000 calls), retries against errors and an
/// outage, a breaker in a brownout with a deadline quantile, a shared
/// retry ratio budget, and the amplification ledger. Their reports, each
/// under a line `== label (simulated ...)`, are a golden table of the
/// tests and what `benches/examples/sim_speed.rs -- --reports` prints.
pub fn benchmark_set() -> Vec<(&'static str, Scenario)> {
    let mut retry = Policy::DEFAULT;
    retry.retry.max_attempts = 4;
    retry.retry.timeout_per_attempt = Some(ms(30));
    retry.retry.overall_timeout = Some(ms(200));
    let mut breaker = retry.clone();
    breaker.circuit.enabled = true;
    breaker.circuit.threshold = 5;
    breaker.circuit.cooldown = ms(1_000);
    breaker.retry.deadline_quantile_permille = 900;
    let mut budgeted = hedged("", 1, ms(20));
    budgeted.retry.max_attempts = 3;
    // Names of the built-in budgets: valid.
    budgeted.retry.budget.name = name("retry.budget.name", "ratio").unwrap_or_default();
    budgeted.hedge.budget.name = name("hedge.budget.name", "ratio").unwrap_or_default();
    let mut ledger = budgeted.clone();
    ledger.amplification.max_amplification = 1.1;
    vec![
        ("tail, no hedging", tail(Policy::DEFAULT, 100_000, 2_000)),
        (
            "tail, fixed 20 ms, 3 hedges",
            tail(hedged("", 3, ms(20)), 100_000, 2_000),
        ),
        ("tail, p95", tail_at_scale(100_000)),
        (
            "tail, p99, 2 hedges",
            tail(hedged("p99", 2, ms(20)), 100_000, 2_000),
        ),
        (
            "retries, errors, outage",
            Scenario::new(
                retry,
                Backend::new(Latency::LogNormal {
                    median: ms(10),
                    sigma: 0.8,
                })
                .error_rate(0.1)
                .outage(Window::new(ms(10_000), ms(12_000))),
            )
            .arrivals(Arrivals::Poisson { per_second: 500.0 })
            .calls(30_000)
            .seed(5),
        ),
        (
            "breaker in a brownout, deadline quantile",
            Scenario::new(
                breaker,
                Backend::new(Latency::Constant(ms(50))).brownout(Brownout {
                    window: Some(Window::new(ms(10_000), ms(20_000))),
                    capacity: 2,
                }),
            )
            .arrivals(Arrivals::Uniform { per_second: 100.0 })
            .calls(4_000)
            .seed(3),
        ),
        (
            "shared ratio budget",
            Scenario::new(
                budgeted,
                Backend::new(Latency::Constant(ms(300))).error_rate(0.2),
            )
            .arrivals(Arrivals::Uniform { per_second: 500.0 })
            .calls(20_000)
            .seed(7)
            .budget(|| RetryRatio::new(Duration::from_secs(10), 1, 50)),
        ),
        (
            "amplification ledger",
            Scenario::new(
                ledger,
                Backend::new(Latency::Constant(ms(300))).error_rate(0.5),
            )
            .arrivals(Arrivals::Uniform { per_second: 500.0 })
            .calls(20_000)
            .seed(9),
        ),
    ]
}
