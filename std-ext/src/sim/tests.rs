use core::time::Duration;

use recourse_core::budget::RetryRatio;
use recourse_core::policy::{name, Policy};

use super::{Arrivals, Backend, Brownout, Latency, Scenario, Window};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn hedging(trigger: &str, delay: Duration) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 1;
    p.hedge.enabled = true;
    p.hedge.max_hedges = 1;
    p.hedge.hedge_delay = delay;
    p.hedge.trigger = name("hedge.trigger", trigger).unwrap();
    p
}

fn tail(policy: Policy) -> Scenario {
    Scenario::new(policy, Backend::new(Latency::tail_at_scale()))
        .arrivals(Arrivals::Poisson {
            per_second: 1_000.0,
        })
        .calls(50_000)
        .warmup(2_000)
        .seed(11)
}

#[test]
fn the_same_seed_gives_the_same_report_byte_for_byte() {
    let run = |seed| {
        tail(hedging("p95", ms(50)))
            .calls(5_000)
            .seed(seed)
            .run()
            .unwrap()
            .to_string()
    };
    let a = run(3);
    assert_eq!(a, run(3));
    assert_ne!(a, run(4));
    assert!(a.starts_with("calls 5000 (after 2000 warm-up)\n"), "{a}");
    assert!(a.contains("histogram"), "{a}");
}

#[test]
fn p95_hedging_cuts_the_tail_at_scale_for_a_few_percent_more_load() {
    let plain = tail(Policy::DEFAULT).run().unwrap();
    let p95 = tail(hedging("p95", ms(50))).run().unwrap();
    assert_eq!(plain.attempts, plain.calls, "no retries, no hedges");
    assert!(plain.quantile(999) >= ms(800), "{plain}");
    let cut = plain.quantile(999).as_secs_f64() / p95.quantile(999).as_secs_f64();
    assert!(cut >= 10.0, "p99.9 cut only {cut:.1}x\n{plain}\n{p95}");
    assert!(p95.extra_load() <= 0.06, "{p95}");
    assert!(p95.hedges > 0 && p95.successes() == p95.calls);
}

#[test]
fn a_hedge_budget_bounds_extra_load_in_a_brownout() {
    // Every request is slower than the hedge delay: unbudgeted hedging
    // doubles the load; a 5 % ratio budget keeps it near 5 %.
    let slow = || {
        let mut p = hedging("", ms(50));
        p.hedge.budget.name = name("hedge.budget.name", "ratio").unwrap();
        p.retry.budget.name = name("retry.budget.name", "ratio").unwrap();
        Scenario::new(p, Backend::new(Latency::Constant(ms(300))))
            .arrivals(Arrivals::Uniform { per_second: 500.0 })
            .calls(60_000)
            .seed(5)
    };
    let unbounded = slow().run().unwrap();
    assert!(unbounded.extra_load() > 0.99, "{unbounded}");
    let bounded = slow()
        .budget(|| RetryRatio::new(Duration::from_secs(10), 1, 50))
        .run()
        .unwrap();
    // 5 % of requests, plus the floor of 1/s × 10 s over a 120 s run.
    assert!(bounded.extra_load() <= 0.05 + 0.002, "{bounded}");
    assert!(bounded.extra_load() >= 0.045, "{bounded}");
    assert!(bounded.hedge_denials > 50_000, "{bounded}");
}

#[test]
fn a_load_sensitive_brownout_with_unbudgeted_hedges_feeds_itself() {
    // The backend serves 40 attempts at full speed; 500 calls/s × 60 ms
    // is 30 in flight. Hedging at 50 ms pushes it past capacity, which
    // makes more calls slow, which sends more hedges.
    let scenario = |p: Policy| {
        Scenario::new(
            p,
            Backend::new(Latency::Constant(ms(60))).brownout(Brownout {
                window: None,
                capacity: 40,
            }),
        )
        .arrivals(Arrivals::Uniform { per_second: 500.0 })
        .calls(20_000)
        .seed(9)
    };
    let plain = scenario(Policy::DEFAULT).run().unwrap();
    assert_eq!(plain.quantile(1000), ms(60), "under capacity: no queueing");
    let hedged = scenario(hedging("", ms(50))).run().unwrap();
    assert!(hedged.extra_load() > 0.9, "{hedged}");
    assert!(hedged.quantile(500) > ms(60), "{hedged}");
}

#[test]
fn retries_ride_out_errors_and_an_outage_is_counted() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 3;
    let report = Scenario::new(
        p,
        Backend::new(Latency::Constant(ms(5)))
            .error_rate(0.1)
            .outage(Window::new(ms(10_000), ms(12_000))),
    )
    .arrivals(Arrivals::Uniform { per_second: 100.0 })
    .calls(3_000)
    .run()
    .unwrap();
    // Outside the outage 0.1³ of calls fail; the 200 calls in it all do.
    let failed = report
        .outcomes
        .get("retries_exhausted")
        .copied()
        .unwrap_or(0);
    assert!((200..=215).contains(&failed), "{report}");
    assert!(report.retries > 600, "{report}");
    assert_eq!(report.successes() + failed, report.calls);
}

#[test]
fn bad_parameters_are_errors_that_name_them() {
    let err = |s: Scenario| s.run().unwrap_err().to_string();
    let base = || Scenario::new(Policy::DEFAULT, Backend::new(Latency::Constant(ms(1))));
    assert_eq!(err(base().calls(0)), "calls must be at least 1");
    assert_eq!(
        err(base().max_hedges_ceiling(11)),
        "max_hedges_ceiling must be in 1..=10"
    );
    assert_eq!(
        err(base().arrivals(Arrivals::Poisson {
            per_second: f64::NAN
        })),
        "arrivals.per_second must be a finite number > 0"
    );
    let mut p = Policy::DEFAULT;
    p.retry.backoff_multiplier = f64::INFINITY;
    assert_eq!(
        err(Scenario::new(p, Backend::new(Latency::Constant(ms(1))))),
        "retry.backoff_multiplier must be a finite number (allowed range 1 to 10)"
    );
}

/// A load-sensitive brownout from 10 s to 20 s: attempts slow down past
/// their 100 ms timeout as load builds, retries add load, the breaker opens
/// and sheds it, its probes find the backend fast again at low load, and it
/// closes; after the brownout it stays closed.
fn brownout_with_a_breaker() -> Scenario {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 3;
    p.retry.timeout_per_attempt = Some(ms(100));
    p.circuit.enabled = true;
    p.circuit.threshold = 5;
    p.circuit.cooldown = ms(1_000);
    Scenario::new(
        p,
        Backend::new(Latency::Constant(ms(50))).brownout(Brownout {
            window: Some(Window::new(ms(10_000), ms(20_000))),
            capacity: 2,
        }),
    )
    .arrivals(Arrivals::Uniform { per_second: 100.0 })
    .calls(4_000)
    .seed(3)
}

/// Compares `report` with the checked-in table `golden/<name>.txt`; with
/// `RECOURSE_BLESS=1` in the environment, rewrites the table instead.
fn golden(name: &str, report: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/sim/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("RECOURSE_BLESS").is_some() {
        std::fs::write(&path, report).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (RECOURSE_BLESS=1 writes it)", path.display()));
    assert_eq!(
        report,
        want,
        "the simulation of {name} changed; if that is intended, rerun with RECOURSE_BLESS=1 \
         and commit the diff of {}",
        path.display()
    );
}

#[test]
fn in_a_brownout_the_breaker_opens_sheds_load_and_closes() {
    let report = brownout_with_a_breaker().run().unwrap();
    // The breaker opened and closed again, and refused calls meanwhile.
    assert!(report.circuit_opened >= 1, "{report}");
    assert!(report.circuit_closed >= 1, "{report}");
    assert!(report.circuit_refusals > 0, "{report}");
    assert_eq!(
        report.outcomes.get("circuit_open").copied(),
        Some(report.circuit_refusals),
        "{report}"
    );
    // Outside the brownout (30 of the 40 s) every call succeeds.
    assert!(report.successes() >= 3_000, "{report}");
    golden("brownout", &report.to_string());
}

#[test]
fn the_amplification_ledger_bounds_retries_and_hedges_together() {
    // Every attempt is slower than the hedge delay and half of them fail:
    // 3 attempts and a hedge each would more than double the load.
    let run = |max_amplification: f64| {
        let mut p = hedging("", ms(50));
        p.retry.max_attempts = 3;
        p.amplification.max_amplification = max_amplification;
        Scenario::new(p, Backend::new(Latency::Constant(ms(300))).error_rate(0.5))
            .arrivals(Arrivals::Uniform { per_second: 500.0 })
            .calls(30_000)
            .seed(9)
            .run()
            .unwrap()
    };
    let unbounded = run(0.0);
    assert!(unbounded.extra_load() > 1.0, "{unbounded}");
    let bounded = run(1.1);
    // 10 % of first attempts, plus the floor of 1/s over a 60 s run
    // (60 of 30 000 calls: 0.2 %).
    assert!(bounded.extra_load() <= 0.103, "{bounded}");
    assert!(bounded.extra_load() >= 0.09, "the bound is used: {bounded}");
    assert!(bounded.hedges > 0 && bounded.attempts > bounded.hedges + bounded.calls);
}

#[test]
fn across_three_layers_layer_awareness_keeps_every_layer_within_the_bound() {
    use super::layers::{table, three_layer_runs, Shape};
    for (shape, name) in [
        (Shape::Retries, "three_layers"),
        (Shape::Hedged, "three_layers_hedged"),
    ] {
        let runs = three_layer_runs(shape, 2_000);
        let text = table(shape, 2_000, &runs);
        let [none, ledger, nwr, ledger_nwr, shared] = runs[..] else {
            panic!("five columns: {text}");
        };
        // No budget: the tree multiplies.
        if shape == Shape::Retries {
            assert_eq!(none, [3.0, 9.0, 27.0], "{text}");
            assert_eq!(nwr, [3.0, 5.0, 7.0], "{text}");
        } else {
            assert!(none[2] > 27.0, "{text}");
        }
        // A ledger per layer: 1.1x per layer, compounding.
        assert!(ledger[0] <= 1.1 && ledger[2] > 1.2, "{text}");
        assert!(ledger_nwr[2] < ledger[2] + 1e-9, "{text}");
        // Layer awareness with one shared allowance: the goal, at most
        // 1.1x at every layer and end to end.
        assert!(shared.iter().all(|x| *x <= 1.1), "{text}");
        assert!(shared[0] > 1.0, "the allowance is used: {text}");
        golden(name, &text);
    }
}

#[test]
fn deadline_awareness_sends_fewer_attempts_and_fails_earlier_at_a_price_in_successes() {
    let (table, runs) = super::deadline::deadline_table().unwrap();
    let (off, p50, p90) = (&runs[0].1, &runs[1].1, &runs[2].1);
    // At p50: fewer attempts for at most 1 % fewer successes.
    assert!(p50.attempts < off.attempts, "{table}");
    assert!(p50.successes() * 100 >= off.successes() * 99, "{table}");
    // At p90: about 9 % fewer attempts, and a failing call fails 30 % sooner,
    // but about 6 % fewer successes: a retry's chance is not nothing.
    assert!(p90.attempts * 100 <= off.attempts * 92, "{table}");
    assert!(
        p90.error_quantile(500) * 10 <= off.error_quantile(500) * 8,
        "{table}"
    );
    assert!(p90.successes() < off.successes(), "{table}");
    golden("deadline_bound", &table);
}

/// The fast run (queue keys, arrivals outside the queue, parked timers,
/// machines sized for the policy's hedges) against the plainest one (room
/// for ten hedges, every timer queued when set): the same report, field
/// for field, in scenarios with ties (constant latencies, even arrivals),
/// timers that move while attempts are out (per-attempt and overall
/// deadlines, retries, several hedges), budgets, the breaker, the ledger
/// and a brownout.
#[test]
fn the_fast_run_and_the_plainest_run_give_the_same_reports() {
    let mut retry = Policy::DEFAULT;
    retry.retry.max_attempts = 4;
    retry.retry.timeout_per_attempt = Some(ms(30));
    retry.retry.overall_timeout = Some(ms(200));
    let mut hedged_retries = hedging("p90", ms(20));
    hedged_retries.retry.max_attempts = 3;
    hedged_retries.retry.timeout_per_attempt = Some(ms(25));
    hedged_retries.hedge.max_hedges = 3;
    let mut many = hedging("", ms(10));
    many.hedge.max_hedges = 7;
    many.retry.overall_timeout = Some(ms(120));
    let mut breaker = retry.clone();
    breaker.circuit.enabled = true;
    breaker.circuit.threshold = 5;
    breaker.circuit.cooldown = ms(1_000);
    breaker.retry.deadline_quantile_permille = 500;
    let mut ledger = hedging("", ms(50));
    ledger.retry.max_attempts = 3;
    ledger.amplification.max_amplification = 1.1;
    let lognormal = |sigma| Latency::LogNormal {
        median: ms(15),
        sigma,
    };
    let scenarios = [
        tail(hedging("p95", ms(50))).calls(3_000).warmup(500),
        tail(Policy::DEFAULT).calls(2_000),
        Scenario::new(retry, Backend::new(lognormal(0.8)).error_rate(0.2))
            .arrivals(Arrivals::Uniform { per_second: 400.0 })
            .calls(2_000)
            .seed(1),
        Scenario::new(
            hedged_retries,
            Backend::new(Latency::bimodal(
                Latency::Constant(ms(10)),
                Latency::Constant(ms(40)),
                0.2,
            ))
            .error_rate(0.1),
        )
        .arrivals(Arrivals::Uniform { per_second: 500.0 })
        .calls(2_000)
        .seed(2),
        Scenario::new(many, Backend::new(lognormal(1.0)).error_rate(0.05))
            .arrivals(Arrivals::Poisson { per_second: 300.0 })
            .max_hedges_ceiling(10)
            .calls(2_000)
            .seed(3),
        brownout_with_a_breaker().calls(1_500),
        Scenario::new(
            breaker,
            Backend::new(Latency::Constant(ms(20))).outage(Window::new(ms(1_000), ms(2_000))),
        )
        .arrivals(Arrivals::Uniform { per_second: 200.0 })
        .calls(1_000)
        .seed(4),
        Scenario::new(
            ledger,
            Backend::new(Latency::Constant(ms(60)))
                .error_rate(0.3)
                .brownout(Brownout {
                    window: None,
                    capacity: 20,
                }),
        )
        .arrivals(Arrivals::Uniform { per_second: 500.0 })
        .calls(2_000)
        .seed(5)
        .budget(|| RetryRatio::new(Duration::from_secs(10), 1, 20)),
    ];
    for (i, s) in scenarios.iter().enumerate() {
        let fast = s.run().unwrap();
        let plain = s.run_reference().unwrap();
        assert_eq!(fast, plain, "scenario {i}:\n{fast}\n{plain}");
        assert_eq!(fast.to_string(), plain.to_string());
        assert!(fast.simulated() > Duration::ZERO);
    }
}

#[test]
fn against_a_dependency_that_slows_with_load_deadline_awareness_wins_on_every_count() {
    let (table, runs) = super::deadline::deadline_table_loaded().unwrap();
    let off = &runs[0].1;
    // Every quantile: fewer attempts, and at least as many successes (the
    // retries not sent leave the dependency's capacity to the others).
    for (q, r) in &runs[1..] {
        assert!(r.attempts < off.attempts, "p{}: {table}", q / 10);
        assert!(r.successes() >= off.successes(), "p{}: {table}", q / 10);
    }
    // p90: far fewer attempts, more successes, and failing calls fail at
    // least 15 % sooner.
    let p90 = &runs[3].1;
    assert!(p90.attempts * 100 <= off.attempts * 95, "{table}");
    assert!(p90.successes() * 100 >= off.successes() * 110, "{table}");
    assert!(
        p90.error_quantile(500) * 100 <= off.error_quantile(500) * 85,
        "{table}"
    );
    golden("deadline_bound_loaded", &table);
}

/// The scenarios `benches/examples/sim_speed.rs --reports` prints (the
/// Tail-at-Scale scenario with no hedging, fixed-delay, p95 and p99 hedges;
/// retries with errors and an outage; a breaker in a brownout with a
/// deadline quantile; a shared ratio budget; the amplification ledger),
/// against the table the simulator printed before its event queue became
/// a timing wheel and its draws nanoseconds (issue 16): the same bytes,
/// the simulated time included.
#[test]
fn the_benchmark_scenarios_report_what_they_reported_before_the_speed_work() {
    use core::fmt::Write as _;
    // The list `benches/examples/sim_speed.rs -- --reports` prints.
    let runs = super::scenarios::benchmark_set();
    let mut text = String::new();
    for (label, s) in runs {
        let r = s.run().unwrap();
        writeln!(text, "== {label} (simulated {:?})\n{r}", r.simulated()).unwrap();
    }
    golden("benchmark_reports", &text);
}

/// With the draws made on a helper thread (`Scenario::draw_thread`), the
/// benchmark scenarios report the same bytes as the golden table: the
/// backend's and the arrivals' draws come in the same order, across many
/// of the blocks the helper hands over.
#[test]
fn a_draw_thread_gives_the_same_reports_byte_for_byte() {
    use core::fmt::Write as _;
    let mut text = String::new();
    for (label, s) in super::scenarios::benchmark_set() {
        let r = s.draw_thread(true).run().unwrap();
        writeln!(text, "== {label} (simulated {:?})\n{r}", r.simulated()).unwrap();
    }
    golden("benchmark_reports", &text);
}

/// With the draw thread, the calls' latencies go to the helper thread in
/// blocks as they come (the sort's first pass): the same report when some
/// latencies no longer fit in 32 bits of nanoseconds (over 4.29 s) after
/// blocks went (the helper's buckets then join the wide list), and when
/// none does, whatever the seed.
#[test]
fn latencies_handed_to_the_draw_thread_give_the_same_report() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 1;
    p.retry.overall_timeout = None;
    p.retry.timeout_per_attempt = None;
    let mut wide = 0;
    for (seed, slow) in [(1, 0.001), (2, 0.001), (3, 0.0), (4, 0.01)] {
        let latency = Latency::bimodal(
            Latency::LogNormal {
                median: ms(10),
                sigma: 0.5,
            },
            Latency::Constant(Duration::from_secs(6)),
            slow,
        );
        let s = Scenario::new(p.clone(), Backend::new(latency))
            .arrivals(Arrivals::Poisson {
                per_second: 1_000.0,
            })
            .calls(20_000)
            .seed(seed);
        let one = s.run().unwrap();
        let s = s.draw_thread(true);
        let two = s.run().unwrap();
        assert_eq!(one.to_string(), two.to_string(), "seed {seed}");
        assert_eq!(one, two, "seed {seed}");
        assert_eq!(two.calls, 20_000);
        if two.quantile(1000) > Duration::from_secs(5) {
            wide += 1;
        }
    }
    assert_eq!(wide, 3, "the slow calls' latencies were not wide");
}
