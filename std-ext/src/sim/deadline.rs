//! The deadline-bound workload: deadline 100 ms, a dependency with p50
//! 20 ms and p99 200 ms (log-normal), 30 % of attempts failing, 3
//! attempts, with deadline awareness (`retry.deadline_quantile_permille`)
//! off, at p50 and at p90; and the same against a dependency that slows
//! down with load ([`deadline_table_loaded`]).
//!
//! Against the first dependency no quantile is free: its latency ignores
//! load, so a retry not sent saves the others nothing, while a refused
//! retry still had its chance of finishing in the time left (the success
//! price grows with the quantile). Against the loaded one, the attempts
//! not sent are capacity given back: fewer attempts and more successes at
//! every quantile.

use core::fmt::Write as _;
use core::time::Duration;

use recourse_core::policy::Policy;

use super::{Arrivals, Backend, Brownout, Latency, Report, Scenario, SimError};

/// The workload with deadline awareness at `q_permille` (0: off).
pub fn deadline_bound(q_permille: u32) -> Scenario {
    deadline_bound_on(q_permille, None)
}

/// The workload against a dependency that slows down with load: past
/// `capacity` attempts in flight, each new attempt takes its drawn latency
/// times `in_flight / capacity` (a cancelled attempt keeps loading it until
/// it would have ended).
pub fn deadline_bound_loaded(q_permille: u32, capacity: u32) -> Scenario {
    deadline_bound_on(
        q_permille,
        Some(Brownout {
            window: None,
            capacity,
        }),
    )
}

fn deadline_bound_on(q_permille: u32, brownout: Option<Brownout>) -> Scenario {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 3;
    p.retry.overall_timeout = Some(Duration::from_millis(100));
    p.retry.deadline_quantile_permille = q_permille;
    let mut backend = Backend::new(Latency::LogNormal {
        median: Duration::from_millis(20),
        // e^(2.326 × 0.99) ≈ 10: p99 ≈ 200 ms.
        sigma: 0.99,
    })
    .error_rate(0.3);
    if let Some(b) = brownout {
        backend = backend.brownout(b);
    }
    Scenario::new(p, backend)
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
    let table = render(
        "deadline 100 ms, p50 20 ms / p99 200 ms, 30 % failing, 3 attempts, 20000 calls",
        &runs,
    );
    Ok((table, runs))
}

/// In flight attempts the loaded dependency serves at full speed: about
/// what the workload keeps in flight with deadline awareness off.
pub const LOADED_CAPACITY: u32 = 8;

/// The same workload against a dependency that slows down past
/// [`LOADED_CAPACITY`] attempts in flight ([`deadline_bound_loaded`]): off,
/// at p10, p50 and p90.
pub fn deadline_table_loaded() -> Result<(String, Vec<(u32, Report)>), SimError> {
    let mut runs = Vec::new();
    for q in [0, 100, 500, 900] {
        runs.push((q, deadline_bound_loaded(q, LOADED_CAPACITY).run()?));
    }
    let table = render(
        "the same, the dependency slowing down past 8 attempts in flight (latency x in_flight / 8)",
        &runs,
    );
    Ok((table, runs))
}

fn render(title: &str, runs: &[(u32, Report)]) -> String {
    let mut table = format!(
        "{title}\nawareness      attempts  successes  p50 time-to-error  deadline_unreachable\n"
    );
    for (q, r) in runs {
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
    table
}
