//! Hedged calls through the executor on tokio's paused clock: the fixed
//! and quantile triggers, the hedge budget, the hedge ceiling and the
//! missing-trigger mode, each read from the timeline.

#![allow(clippy::unwrap_used)]

use core::time::Duration;
use std::sync::Arc;

use recourse::core_machine::budget::TokenBucket;
use recourse::core_machine::policy::name;
use recourse::hedging::MissingTriggerMode;
use recourse::latency::LatencyTrackers;
use recourse::{AttemptInfo, BudgetRegistry, Executor, Policy, StaticProvider, Timeline};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn hedging(trigger: &str, max_hedges: u32) -> Policy {
    let mut p = Policy::DEFAULT;
    p.hedge.enabled = true;
    p.hedge.max_hedges = max_hedges;
    p.hedge.hedge_delay = ms(100);
    p.hedge.trigger = name("hedge.trigger", trigger).unwrap();
    p
}

fn executor(policy: Policy) -> recourse::ExecutorBuilder {
    Executor::builder().provider(
        StaticProvider::builder()
            .policy("svc.Get", policy)
            .unwrap()
            .build(),
    )
}

/// The primary takes `primary`, every hedge `hedge`.
async fn op(attempt: AttemptInfo, primary: Duration, hedge: Duration) -> Result<u32, ()> {
    tokio::time::sleep(if attempt.is_hedge { hedge } else { primary }).await;
    Ok(attempt.hedge_index)
}

fn started(t: &Timeline) -> Vec<(u32, Duration)> {
    t.attempts
        .iter()
        .map(|a| (a.info.hedge_index, a.start - t.start))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_fixed_delay_hedge_wins_and_the_timeline_says_so() {
    let exec = executor(hedging("", 2)).build();
    let (result, t) = exec
        .call_with_timeline("svc.Get", |a| op(a, ms(1_000), ms(30)))
        .await;
    assert_eq!(result, Ok(1));
    assert_eq!(t.duration(), ms(130));
    let winner = t.winner.expect("a winner");
    let won = t.attempts.iter().find(|a| a.info.id == winner).unwrap();
    assert!(won.info.is_hedge && won.info.hedge_index == 1);
    let lost = t.attempts.iter().find(|a| !a.info.is_hedge).unwrap();
    assert!(lost.cancelled);
    assert_eq!(lost.outcome.reason, "hedge_loser");
    assert_eq!(t.attribute("hedge_trigger"), Some("fixed_delay"));
    let table = t.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines,
        [
            "svc.Get: ok, attempt 2 won after 2 attempts in 130.0 ms",
            "  hedge_trigger=fixed_delay policy_source=static",
            "  attempt  retry  hedge  start ms  duration ms  outcome        reason              backoff ms",
            "        2      0      1     100.0         30.0  success        success                    0.0",
            "        1      0      -       0.0        130.0  abort          hedge_loser                0.0",
        ],
        "\n{table}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_quantile_trigger_hedges_at_the_keys_p95_once_it_has_samples() {
    let exec = executor(hedging("p95", 1))
        .latency_trackers(LatencyTrackers::new(16, Duration::from_secs(10)))
        .build();
    // Cold key: the fixed delay (100 ms) applies.
    let (_, t) = exec
        .call_with_timeline("svc.Get", |a| op(a, ms(1_000), ms(5)))
        .await;
    assert_eq!(started(&t)[0], (1, ms(100)));
    // 200 calls of 8..=27 ms teach the tracker the key's latency.
    for i in 0..200 {
        let d = ms(8 + i % 20);
        exec.call("svc.Get", |_| async move {
            tokio::time::sleep(d).await;
            Ok::<_, ()>(0)
        })
        .await
        .unwrap();
    }
    let (result, t) = exec
        .call_with_timeline("svc.Get", |a| op(a, ms(1_000), ms(5)))
        .await;
    assert_eq!(result, Ok(1));
    let (_, hedge_start) = started(&t)[0];
    // p95 of 8..=27 ms is 26 ms, within the sketch's 1/16.
    assert!(
        hedge_start >= ms(24) && hedge_start <= ms(28),
        "{hedge_start:?}"
    );
    assert_eq!(t.attribute("hedge_trigger"), Some("p95"));
}

#[tokio::test(start_paused = true)]
async fn a_refused_hedge_is_recorded_and_the_primary_keeps_running() {
    let mut p = hedging("", 1);
    p.hedge.budget.name = name("hedge.budget.name", "hedges").unwrap();
    // One token and no refill: the first call's hedge spends it.
    let bucket = Arc::new(TokenBucket::new(1, 0));
    let mut budgets = BudgetRegistry::new();
    budgets.register_shared("hedges", bucket.clone());
    let exec = executor(p).budgets(budgets).build();
    let (first, t1) = exec
        .call_with_timeline("svc.Get", |a| op(a, ms(300), ms(10)))
        .await;
    assert_eq!(first, Ok(1));
    assert_eq!(t1.duration(), ms(110));
    let (second, t2) = exec
        .call_with_timeline("svc.Get", |a| op(a, ms(300), ms(10)))
        .await;
    assert_eq!(second, Ok(0), "the primary won");
    assert_eq!(t2.duration(), ms(300));
    let refused = t2.attempts.iter().find(|a| a.info.is_hedge).unwrap();
    assert!(!refused.budget_allowed);
    assert_eq!(refused.budget_reason, "budget_denied");
    assert_eq!(refused.start - t2.start, ms(100));
}

#[tokio::test(start_paused = true)]
async fn the_executor_ceiling_bounds_hedges_and_can_be_lifted() {
    let hung = |a: AttemptInfo| op(a, ms(10_000), ms(10_000));
    let mut p = hedging("", 7);
    p.retry.overall_timeout = Some(ms(2_000));
    p.retry.max_attempts = 1;
    let exec = executor(p.clone()).build();
    let (_, t) = exec.call_with_timeline("svc.Get", hung).await;
    assert_eq!(t.attempts.len(), 4, "primary and the default ceiling of 3");
    assert_eq!(
        t.attribute("policy_clamped_fields"),
        Some("hedge.max_hedges")
    );

    let exec = executor(p).max_hedges_ceiling(10).build();
    let (_, t) = exec.call_with_timeline("svc.Get", hung).await;
    assert_eq!(t.attempts.len(), 8, "primary and 7 hedges");
    assert_eq!(t.attribute("policy_clamped_fields"), None);
    let starts: Vec<_> = started(&t).into_iter().map(|(_, s)| s).collect();
    assert_eq!(starts, (0..8).map(|k| ms(100 * k)).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn an_unknown_trigger_falls_back_or_turns_hedging_off() {
    let p = hedging("p95-ish", 1);
    let exec = executor(p.clone()).build();
    let (result, t) = exec
        .call_with_timeline("svc.Get", |a| op(a, ms(1_000), ms(10)))
        .await;
    assert_eq!(result, Ok(1), "fixed delay");
    assert_eq!(
        t.attribute("hedge_trigger_error"),
        Some("trigger_not_found")
    );
    assert_eq!(t.attribute("missing_trigger_mode"), Some("fallback"));

    let exec = executor(p)
        .missing_trigger_mode(MissingTriggerMode::NoHedges)
        .build();
    let (result, t) = exec
        .call_with_timeline("svc.Get", |a| op(a, ms(1_000), ms(10)))
        .await;
    assert_eq!(result, Ok(0), "no hedge ran");
    assert_eq!(t.attempts.len(), 1);
    assert_eq!(t.attribute("missing_trigger_mode"), Some("no_hedges"));
}

/// Logs observer events as lines.
#[derive(Default)]
struct Log(std::sync::Mutex<Vec<String>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

impl recourse::Observer for Log {
    fn on_start(&self, _: recourse::PolicyKey<'_>, _: &recourse::observer::CallStart) {
        self.push("start".into());
    }
    fn on_launch(&self, _: recourse::PolicyKey<'_>, info: &AttemptInfo) {
        self.push(format!("launch {} hedge {}", info.id.0, info.is_hedge));
    }
    fn on_budget_decision(
        &self,
        _: recourse::PolicyKey<'_>,
        d: &recourse::observer::BudgetDecision<'_>,
    ) {
        self.push(format!("budget {} {}", d.attempt.id.0, d.reason));
    }
    fn on_attempt(&self, _: recourse::PolicyKey<'_>, r: &recourse::observer::AttemptRecord) {
        self.push(format!("attempt {} {}", r.info.id.0, r.outcome.reason));
    }
    fn on_success(&self, _: recourse::PolicyKey<'_>, _: &recourse::observer::CallSummary) {
        self.push("success".into());
    }
}

#[tokio::test(start_paused = true)]
async fn observers_hear_the_hedge_spawn_and_the_losers_cancellation_in_order() {
    let mut p = hedging("", 1);
    p.hedge.budget.name = name("hedge.budget.name", "hedges").unwrap();
    let log = Arc::new(Log::default());
    let exec = executor(p)
        .budgets(BudgetRegistry::new().with("hedges", TokenBucket::new(10, 0)))
        .observer(Arc::clone(&log))
        .build();
    let result = exec.call("svc.Get", |a| op(a, ms(500), ms(20))).await;
    assert_eq!(result, Ok(1));
    assert_eq!(
        *log.0.lock().unwrap(),
        [
            "start",
            "launch 0 hedge false",
            "budget 1 allowed",
            "launch 1 hedge true",
            "attempt 1 success",
            "attempt 0 hedge_loser",
            "success",
        ]
    );
}
