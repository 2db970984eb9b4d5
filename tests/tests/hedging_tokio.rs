//! 10,000 hedged calls through the executor on tokio's multi-thread runtime
//! with real timers (not the paused clock): every attempt future — winners,
//! losers of a hedge race, attempts of calls dropped mid-flight — is dropped
//! by the time its call returns, and every budget is back to its initial
//! state once the calls are over.
//!
//! Each attempt sleeps a seeded random 1–3 ms, or 20–40 ms for 15 % of them
//! (stragglers), and fails retryably 8 % of the time, so hedges launch (10 ms
//! hedge delay), win and lose, and retries run. One call in ten is wrapped
//! in a short `tokio::time::timeout` that drops it wherever it is: in an
//! attempt, in a hedge race, in a backoff. Half of those straggle on every
//! attempt, so they are dropped with two or three attempts in flight.
//!
//! Hedges pass a [`Concurrency`] budget; first attempts and retries pass a
//! [`TokenBucket`] (key `svc.Get`) or a [`RetryRatio`] (key `svc.List`).
//! An observer counts records and budget decisions, and every count is
//! checked against what the operation saw.
//!
//! [`Concurrency`]: recourse::core_machine::budget::Concurrency
//! [`TokenBucket`]: recourse::core_machine::budget::TokenBucket
//! [`RetryRatio`]: recourse::core_machine::budget::RetryRatio

#![allow(clippy::unwrap_used)]

use core::time::Duration;
use std::sync::Arc;

use recourse::core_machine::policy::name;
use recourse::timer::{DefaultTimer, TimerSource};
use recourse::{AttemptInfo, Error, Policy};
use recourse_tests::hedged::{
    get, Alive, Attempt, Budgets, CallCounts, Seen, HEDGES, KEYS, RETRY_BUDGETS,
};
use recourse_tests::ms;
use tokio::sync::Semaphore;

const CALLS: usize = 10_000;
/// Calls in flight at once.
const IN_FLIGHT: usize = 200;
const HEDGE_DELAY: Duration = ms(10);
/// Hedges in flight the [`Concurrency`] budget allows. Only hedges consult
/// it (first attempts and retries go to the retry budget), so its active
/// count is its extra count and the limit is always this minimum.
const MAX_HEDGES_IN_FLIGHT: u32 = 48;
/// The token bucket of `svc.Get`: large enough never to deny in this run,
/// refilled slowly enough that the run leaves it measurably short.
const BUCKET_CAPACITY: u32 = 10_000;
const BUCKET_REFILL_PER_SEC: u32 = 500;
/// The retry ratio of `svc.List`: 1 s window, 10 retries/s reserve, 20 %.
const RATIO: (Duration, u32, u32) = (Duration::from_secs(1), 10, 200);

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// How one call behaves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Random latencies, no timeout.
    Plain,
    /// Random latencies, dropped by a 1–15 ms timeout unless done by then.
    Timed,
    /// Every attempt straggles (so hedges launch at 10 and 20 ms and race),
    /// dropped by a 1–45 ms timeout unless done by then.
    Slow,
}

impl Kind {
    fn of(i: usize) -> Self {
        match (i / 2) % 20 {
            0 => Self::Slow,
            10 => Self::Timed,
            _ => Self::Plain,
        }
    }
}

fn policy(retry_budget: &str) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 3;
    p.retry.initial_backoff = ms(2);
    p.retry.max_backoff = ms(5);
    p.retry.budget.name = name("retry.budget.name", retry_budget).unwrap();
    p.hedge.enabled = true;
    p.hedge.max_hedges = 2;
    p.hedge.hedge_delay = HEDGE_DELAY;
    p.hedge.budget.name = name("hedge.budget.name", HEDGES).unwrap();
    p
}

/// Totals over every call, from what each call's operation saw.
#[derive(Debug, Default)]
struct Totals {
    ok: usize,
    exhausted: usize,
    budget_denied: usize,
    /// Calls a timeout dropped before they returned, and where: with no
    /// attempt in flight (a backoff), one, or a hedge race (two or more).
    dropped: usize,
    dropped_in_backoff: usize,
    dropped_in_attempt: usize,
    dropped_in_race: usize,
    /// Calls given a timeout that returned before it.
    beat_their_timeout: usize,
    primaries: [usize; 2],
    hedges: usize,
    /// Attempts dropped unfinished in calls that returned: hedge-race
    /// losers, a primary that lost to a hedge or a hedge that lost.
    lost_primaries: usize,
    lost_hedges: usize,
    /// Attempts dropped unfinished with their call.
    cancelled_attempts: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hedged_calls_drop_every_loser_and_leave_budgets_as_they_were() {
    let wall = std::time::Instant::now();
    let budgets = Budgets::new(
        MAX_HEDGES_IN_FLIGHT,
        (BUCKET_CAPACITY, BUCKET_REFILL_PER_SEC),
        RATIO,
    );
    let hedge_probe = budgets.hedges.clone();
    let (exec, watch) = budgets.executor(RETRY_BUDGETS.map(policy), 0x5EED);
    let exec = Arc::new(exec);

    // The budgets' clock: the executor's shared one (tokio's, real time).
    let t_start = DefaultTimer.shared_now();
    let alive = Arc::new(Alive::default());
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let kind = Kind::of(i);
        let key = i % 2;
        let counts = Arc::new(CallCounts::default());
        let mut rng = fastrand::Rng::with_seed(0xC0FF_EE00 + i as u64);
        let limit = match kind {
            Kind::Plain => None,
            Kind::Timed => Some(ms(rng.u64(1..=15))),
            Kind::Slow => Some(ms(rng.u64(1..=45))),
        };
        let op = {
            let (counts, alive, probe) = (counts.clone(), alive.clone(), hedge_probe.clone());
            move |a: AttemptInfo| {
                let straggles = kind == Kind::Slow || rng.u32(0..1000) < 150;
                let latency = if straggles {
                    ms(rng.u64(20..=40))
                } else {
                    ms(rng.u64(1..=3))
                };
                let fails = rng.u32(0..100) < 8;
                if a.is_hedge {
                    // The most hedges the budget shows in flight while a
                    // hedge starts, and whether it shows none (the
                    // starting hedge holds one).
                    probe.hedge_started();
                }
                let mut attempt = Attempt::new(&counts, &alive, a.is_hedge);
                async move {
                    tokio::time::sleep(latency).await;
                    attempt.complete();
                    if fails {
                        Err(a.retry_index)
                    } else {
                        Ok(a.hedge_index)
                    }
                }
            }
        };
        let (exec, gate, mine) = (exec.clone(), gate.clone(), counts.clone());
        let task = tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let call = exec.call(KEYS[key], op);
            let result = match limit {
                None => Some(call.await),
                Some(limit) => tokio::time::timeout(limit, call).await.ok(),
            };
            // The call future is gone (returned or dropped by the timeout):
            // none of its attempts may be alive.
            (result, mine.live())
        });
        tasks.push((i, kind, key, counts, task));
    }

    let mut t = Totals::default();
    for (i, kind, key, counts, task) in tasks {
        let (result, live_after) = task.await.expect("the call's task completed");
        assert_eq!(
            live_after, 0,
            "call {i} ({kind:?}) returned with attempt futures alive"
        );
        let primaries = counts.primaries();
        let hedges = counts.hedges();
        let (lost_p, lost_h) = (counts.primaries_dropped(), counts.hedges_dropped());
        t.primaries[key] += primaries;
        t.hedges += hedges;
        match result {
            None => {
                assert_ne!(kind, Kind::Plain, "call {i} had no timeout");
                t.dropped += 1;
                t.cancelled_attempts += lost_p + lost_h;
                match lost_p + lost_h {
                    0 => t.dropped_in_backoff += 1,
                    1 => t.dropped_in_attempt += 1,
                    _ => t.dropped_in_race += 1,
                }
                continue;
            }
            Some(Ok(winner)) => {
                // Losers are the attempts of the winning group still in
                // flight: at most two of its primary and two hedges. A
                // primary that lost, lost to a hedge.
                assert!(
                    lost_p <= 1 && lost_p + lost_h <= 2,
                    "call {i}: {lost_p} {lost_h}"
                );
                if lost_p == 1 {
                    assert!(winner >= 1, "call {i}: the primary lost to itself");
                }
                t.ok += 1;
            }
            Some(Err(e)) => {
                // A call fails only once nothing is in flight.
                assert_eq!((lost_p, lost_h), (0, 0), "call {i}: {e:?}");
                match e {
                    Error::RetriesExhausted { attempts, .. } => {
                        // Every attempt launched, hedges included.
                        assert_eq!(attempts as usize, primaries + hedges, "call {i}");
                        assert_eq!(primaries, 3, "call {i}: three retry groups");
                        t.exhausted += 1;
                    }
                    Error::BudgetDenied { .. } => t.budget_denied += 1,
                    e => panic!("call {i} ({kind:?}): unexpected {e:?}"),
                }
            }
        }
        if kind != Kind::Plain {
            t.beat_their_timeout += 1;
        }
        t.lost_primaries += lost_p;
        t.lost_hedges += lost_h;
    }
    let t_end = DefaultTimer.shared_now();
    let wall = wall.elapsed();
    let w = &watch.counts;
    let launched = t.primaries[0] + t.primaries[1] + t.hedges;
    let losers = t.lost_primaries + t.lost_hedges;

    println!("{CALLS} calls in {wall:.2?} ({IN_FLIGHT} at a time, 2 worker threads, real timers)");
    println!(
        "  returned: {} ok, {} retries exhausted, {} budget denied; dropped by a timeout: {} \
         ({} in a backoff, {} in an attempt, {} in a hedge race); {} beat their timeout",
        t.ok,
        t.exhausted,
        t.budget_denied,
        t.dropped,
        t.dropped_in_backoff,
        t.dropped_in_attempt,
        t.dropped_in_race,
        t.beat_their_timeout,
    );
    println!(
        "  attempts launched: {launched} ({} first/retry on svc.Get, {} on svc.List, {} hedges); \
         hedges refused: {}",
        t.primaries[0],
        t.primaries[1],
        t.hedges,
        get(&w.hedges[1]),
    );
    println!(
        "  losers dropped: {losers} ({} primaries beaten by a hedge, {} hedges beaten); \
         attempts dropped with their call: {}",
        t.lost_primaries, t.lost_hedges, t.cancelled_attempts,
    );
    println!(
        "  hedges in flight at most {} (limit {MAX_HEDGES_IN_FLIGHT}); live attempt futures now: {}",
        hedge_probe.max_seen(),
        alive.live(),
    );

    // -- Futures -----------------------------------------------------------
    assert_eq!(alive.live(), 0, "attempt futures outlived every call");
    assert!(t.hedges > 500, "too few hedges launched: {t:?}");
    assert!(losers > 500, "too few losers dropped: {t:?}");
    assert!(t.lost_primaries > 0 && t.lost_hedges > 0, "{t:?}");
    assert!(
        t.dropped_in_backoff > 0 && t.dropped_in_attempt > 0 && t.dropped_in_race > 0,
        "a cancellation path went unexercised: {t:?}"
    );
    assert!(
        t.primaries[0] + t.primaries[1] > CALLS + 100,
        "too few retries ran: {t:?}"
    );

    // -- What the executor reported matches what the operation saw ----------
    watch.check(&Seen {
        started: CALLS,
        ok: t.ok,
        dropped: t.dropped,
        budget_denied: t.budget_denied,
        primaries: t.primaries,
        hedges: t.hedges,
        losers,
        cancelled_attempts: t.cancelled_attempts,
    });

    // -- Budgets: the hedge budget has nothing in flight and admits as a
    //    fresh one does; the bucket has spent one token for good per attempt
    //    that ran, and is full again exactly when its refill says; the ratio
    //    is down to its reserve once a window has passed --------------------
    let line = budgets.check(t.primaries[0] as u64, t_start, t_end);
    println!("  budgets: {line}");
    assert!(wall < Duration::from_secs(10), "took {wall:?}");
}
