//! The deadline-bound workload: deadline 100 ms, a dependency with p50
//! 20 ms and p99 200 ms (log-normal), 30 % of attempts failing, 3
//! attempts, with deadline awareness (`retry.deadline_quantile_permille`)
//! off, at p50 and at p90.

use core::fmt::Write as _;
use core::time::Duration;

use recourse_core::policy::Policy;

use super::{Arrivals, Backend, Latency, Report, Scenario, SimError};

/// The workload with deadline awareness at `q_permille` (0: off).
pub fn deadline_bound(q_permille: u32) -> Scenario {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 3;
    p.retry.overall_timeout = Some(Duration::from_millis(100));
    p.retry.deadline_quantile_permille = q_permille;
    Scenario::new(
        p,
        Backend::new(Latency::LogNormal {
            median: Duration::from_millis(20),
            // e^(2.326 × 0.99) ≈ 10: p99 ≈ 200 ms.
            sigma: 0.99,
        })
        .error_rate(0.3),
    )
    .arrivals(Arrivals::Poisson { per_second: 200.0 })
    .calls(20_000)
    .warmup(1_000)
    .seed(13)
}

/// The runs off, at p50 and at p90, and their table: attempts sent,
/// successes, the median time to error, calls ended `deadline_unreachable`.
pub fn deadline_table() -> Result<(String, Vec<(u32, Report)>), SimError> {
    let mut runs = Vec::new();
    for q in [0, 500, 900] {
        runs.push((q, deadline_bound(q).run()?));
    }
    let mut table = String::from(
        "deadline 100 ms, p50 20 ms / p99 200 ms, 30 % failing, 3 attempts, 20000 calls\n\
         awareness      attempts  successes  p50 time-to-error  deadline_unreachable\n",
    );
    for (q, r) in &runs {
        let label = if *q == 0 {
            "off".to_owned()
        } else {
            format!("p{}", q / 10)
        };
        let _ = writeln!(
            table,
            "{label:<14} {:>8}  {:>9}  {:>17}  {:>20}",
            r.attempts,
            r.successes(),
            format!("{:.1} ms", r.error_quantile(500).as_secs_f64() * 1e3),
            r.outcomes.get("deadline_unreachable").copied().unwrap_or(0),
        );
    }
    Ok((table, runs))
}
