//! The simulator's speed on the Tail-at-Scale scenario (issue 16's target:
//! at least 5 M calls/s and 10,000× real time on one core).
//!
//! ```text
//! cargo run --release -p recourse-benches --example sim_speed            # 1,000,000 calls, best of 3
//! cargo run --release -p recourse-benches --example sim_speed -- 200000 1
//! ```
//!
//! The scenario is `recourse::sim::scenarios::tail_at_scale`, the one of
//! `std-ext/examples/hedging.rs`: a backend of log-normal ~10 ms latencies with 1 % stragglers of 0.8–1.2 s, calls arriving as a
//! Poisson process at 1,000/s, hedged once an attempt outlives the key's
//! recent p95 (seed 2013, no warm-up). Prints, tab-separated on one line
//! (for `benches/sim_speed.sh`): calls, attempts, simulated seconds, the
//! best wall-clock seconds of the runs, calls per second, the real-time
//! factor (simulated time over wall-clock time), an FNV-1a digest of the
//! report's text (which changes whenever any result does), then the same
//! by the thread's CPU time (Linux; `inf` elsewhere) — on a shared machine
//! the wall clock also counts the time other processes had the core.
//!
//! `--reports` prints the full reports of `recourse::sim::scenarios::
//! benchmark_set` (a few more scenarios: retries, an outage, the breaker,
//! budgets, the ledger, more hedges), to compare byte for byte before and
//! after a change to the simulator; a golden test of std-ext checks the
//! same list (`src/sim/golden/benchmark_reports.txt`).
//!
//! Under callgrind, only [`sim_measured`] is collected
//! (`--toggle-collect='*sim_measured*'`): its instructions over the calls
//! are one simulated call's.

use core::hint::black_box;
use std::time::Instant;

use recourse::sim::{scenarios, Report, Scenario};

/// One run, the only function callgrind collects.
#[inline(never)]
fn sim_measured(scenario: &Scenario) -> Report {
    black_box(scenario).run().expect("a valid scenario")
}

/// FNV-1a, 64 bits.
fn digest(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The text reports of the benchmark set (`recourse::sim::scenarios::
/// benchmark_set`: the measured scenario and a few more, with retries and
/// errors, an outage, a breaker in a brownout, budgets, the amplification
/// ledger, more hedges), to compare byte for byte before and after a change
/// to the simulator; a golden test of std-ext checks the same list.
fn reports() {
    for (label, s) in scenarios::benchmark_set() {
        let r = s.run().expect("a valid scenario");
        println!("== {label} (simulated {:?})\n{r}", r.simulated());
    }
}

/// CPU time this thread has run, in nanoseconds (Linux's schedstat):
/// unlike wall-clock time, it leaves out the time other processes had the
/// core, which on a shared machine is most of the difference between runs.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The best wall-clock and CPU seconds (of this thread) of `runs` runs of
/// `scenario` by `run`, and the last run's report.
fn best_of(
    runs: u32,
    scenario: &Scenario,
    run: fn(&Scenario) -> Report,
) -> (f64, f64, Option<Report>) {
    let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
    let mut report = None;
    for _ in 0..runs.max(1) {
        let cpu_started = thread_cpu_ns();
        let started = Instant::now();
        let r = run(scenario);
        wall = wall.min(started.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (cpu_started, thread_cpu_ns()) {
            cpu = cpu.min(b.saturating_sub(a) as f64 / 1e9);
        }
        report = Some(r);
    }
    (wall, cpu, report)
}

/// One run of a scenario that makes its draws on a helper thread
/// (`Scenario::draw_thread`); not collected under callgrind.
#[inline(never)]
fn with_draw_thread(scenario: &Scenario) -> Report {
    black_box(scenario).run().expect("a valid scenario")
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--reports") {
        return reports();
    }
    let mut args = std::env::args().skip(1);
    let calls: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("calls: a number"));
    let runs: u32 = args
        .next()
        .map_or(3, |a| a.parse().expect("runs: a number"));
    // `one`: one thread only (under callgrind); `two`: with the draw
    // thread only (to profile it); both otherwise.
    let mode = args.next().unwrap_or_default();
    let (one, two) = (mode != "two", mode != "one");
    let (wall, cpu, report) = if one {
        best_of(runs, &scenarios::tail_at_scale(calls), sim_measured)
    } else {
        (f64::NAN, f64::NAN, None)
    };
    // With the draw thread: the same report, byte for byte.
    let (wall2, cpu2, report2) = if two {
        best_of(
            runs,
            &scenarios::tail_at_scale(calls).draw_thread(true),
            with_draw_thread,
        )
    } else {
        (f64::NAN, f64::NAN, None)
    };
    let text = report.as_ref().or(report2.as_ref()).map(Report::to_string);
    if let (Some(one), Some(two)) = (&report, &report2) {
        assert_eq!(
            one.to_string(),
            two.to_string(),
            "the run with a draw thread reported something else"
        );
    }
    let report = report.or(report2).expect("a run");
    let text = text.expect("a run");
    let simulated = report.simulated().as_secs_f64();
    println!(
        "calls\tattempts\tsimulated_s\twall_s\tcalls_per_s\trealtime_x\tdigest\tcpu_s\tcalls_per_cpu_s\trealtime_cpu_x\t\
         dt_wall_s\tdt_calls_per_s\tdt_realtime_x\tdt_cpu_s\tdt_calls_per_cpu_s\tdt_realtime_cpu_x"
    );
    println!(
        "{calls}\t{}\t{simulated:.3}\t{wall:.4}\t{:.0}\t{:.0}\t{:016x}\t{cpu:.4}\t{:.0}\t{:.0}\t\
         {wall2:.4}\t{:.0}\t{:.0}\t{cpu2:.4}\t{:.0}\t{:.0}",
        report.attempts,
        calls as f64 / wall,
        simulated / wall,
        digest(&text),
        calls as f64 / cpu,
        simulated / cpu,
        calls as f64 / wall2,
        simulated / wall2,
        calls as f64 / cpu2,
        simulated / cpu2,
    );
}
