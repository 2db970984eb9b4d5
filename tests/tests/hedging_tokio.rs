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

#![allow(clippy::unwrap_used)]

use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::Arc;

use recourse::core_machine::budget::{Budget, BudgetRequest, Concurrency, RetryRatio, TokenBucket};
use recourse::core_machine::policy::name;
use recourse::{
    reason, AttemptId, AttemptInfo, AttemptKind, AttemptRecord, BudgetDecision, BudgetRegistry,
    CallStart, CallSummary, DefaultTimer, Error, Executor, Instant, Observer, Outcome, Policy,
    PolicyKey, StaticProvider, TimerSource,
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
const RATIO_TTL: Duration = Duration::from_secs(1);
const RATIO_RESERVE_PER_SEC: u32 = 10;
const RATIO_PERMILLE: u32 = 200;

const KEYS: [&str; 2] = ["svc.Get", "svc.List"];
const BUCKET: &str = "get-attempts";
const RATIO: &str = "list-retries";
const HEDGES: &str = "hedges";

// ---------------------------------------------------------------------------
// Attempt futures, counted
// ---------------------------------------------------------------------------

/// One call's attempts, as its operation saw them.
#[derive(Debug, Default)]
struct CallCounts {
    /// Attempt futures of this call not yet dropped.
    live: AtomicUsize,
    /// First attempts and retries launched (the operation was called).
    primaries: AtomicUsize,
    /// Hedges launched.
    hedges: AtomicUsize,
    /// First attempts and retries dropped before they completed.
    primaries_dropped: AtomicUsize,
    /// Hedges dropped before they completed.
    hedges_dropped: AtomicUsize,
}

/// Lives inside one attempt future: counted live from the operation call
/// that made the future until the future is dropped, and counted as dropped
/// early unless the future ran to completion.
struct Attempt {
    call: Arc<CallCounts>,
    all_live: Arc<AtomicUsize>,
    is_hedge: bool,
    completed: bool,
}

impl Attempt {
    fn new(call: &Arc<CallCounts>, all_live: &Arc<AtomicUsize>, is_hedge: bool) -> Self {
        call.live.fetch_add(1, Ordering::SeqCst);
        all_live.fetch_add(1, Ordering::SeqCst);
        let launched = if is_hedge {
            &call.hedges
        } else {
            &call.primaries
        };
        launched.fetch_add(1, Ordering::SeqCst);
        Self {
            call: Arc::clone(call),
            all_live: Arc::clone(all_live),
            is_hedge,
            completed: false,
        }
    }
}

impl Attempt {
    /// The future ran to completion. (A method, so that the async block
    /// captures the whole guard: assigning `attempt.completed` there would
    /// capture only that `bool`, and the guard would be dropped at once.)
    fn complete(&mut self) {
        self.completed = true;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.completed {
            let dropped = if self.is_hedge {
                &self.call.hedges_dropped
            } else {
                &self.call.primaries_dropped
            };
            dropped.fetch_add(1, Ordering::SeqCst);
        }
        self.call.live.fetch_sub(1, Ordering::SeqCst);
        self.all_live.fetch_sub(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// What the executor reported
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Watched {
    starts: AtomicUsize,
    successes: AtomicUsize,
    failures: AtomicUsize,
    /// Failures with reason `cancelled`.
    cancelled_calls: AtomicUsize,
    /// Records of attempts that ran (the budget allowed them).
    ran: AtomicUsize,
    /// Records of attempts a budget refused (they never ran).
    refused: AtomicUsize,
    /// Records of attempts recourse cut (`cancelled`), by reason.
    cut_losers: AtomicUsize,
    cut_cancelled: AtomicUsize,
    cut_other: AtomicUsize,
    /// Budget decisions: `[allowed, denied]` per budget.
    hedges: [AtomicUsize; 2],
    bucket: [AtomicUsize; 2],
    ratio: [AtomicUsize; 2],
    /// Decisions naming a budget this test does not expect.
    other_decisions: AtomicUsize,
}

#[derive(Clone, Debug, Default)]
struct Watch(Arc<Watched>);

fn bump(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::SeqCst);
}

fn get(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

impl Observer for Watch {
    fn on_start(&self, _: PolicyKey<'_>, _: &CallStart) {
        bump(&self.0.starts);
    }

    fn on_attempt(&self, _: PolicyKey<'_>, r: &AttemptRecord) {
        let w = &self.0;
        bump(if r.budget_allowed { &w.ran } else { &w.refused });
        if r.cancelled {
            bump(match r.outcome.reason {
                reason::HEDGE_LOSER => &w.cut_losers,
                reason::CANCELLED => &w.cut_cancelled,
                _ => &w.cut_other,
            });
        }
    }

    fn on_success(&self, _: PolicyKey<'_>, _: &CallSummary) {
        bump(&self.0.successes);
    }

    fn on_failure(&self, _: PolicyKey<'_>, s: &CallSummary) {
        bump(&self.0.failures);
        if s.reason() == Some(reason::CANCELLED) {
            bump(&self.0.cancelled_calls);
        }
    }

    fn on_budget_decision(&self, _: PolicyKey<'_>, d: &BudgetDecision<'_>) {
        let w = &self.0;
        let pair = match (d.budget, d.kind) {
            (HEDGES, AttemptKind::Hedge) => &w.hedges,
            (BUCKET, AttemptKind::Initial | AttemptKind::Retry) => &w.bucket,
            (RATIO, AttemptKind::Initial | AttemptKind::Retry) => &w.ratio,
            _ => return bump(&w.other_decisions),
        };
        bump(&pair[usize::from(!d.allowed)]);
    }
}

// ---------------------------------------------------------------------------
// Budgets, probed directly
// ---------------------------------------------------------------------------

/// How many attempts of `kind` `budget` admits at `now`, one after another
/// with none settling (at most `max`); then settles them all.
fn admits(budget: &dyn Budget, kind: AttemptKind, now: Instant, max: u32) -> u32 {
    let is_hedge = kind == AttemptKind::Hedge;
    let mut held = Vec::new();
    for n in 0..max {
        let attempt = AttemptInfo {
            id: AttemptId(u16::try_from(n).unwrap()),
            retry_index: u32::from(kind != AttemptKind::Initial && !is_hedge),
            hedge_index: u32::from(is_hedge),
            is_hedge,
            deadline: None,
        };
        let decision = budget.decide(&BudgetRequest {
            key: PolicyKey::new("probe", "Probe"),
            attempt,
            kind,
            budget: "probe",
            cost: 1,
            previous: None,
            now,
        });
        if !decision.allowed {
            break;
        }
        held.push((attempt, decision.reservation));
    }
    let admitted = held.len();
    for (info, reservation) in held {
        let record = AttemptRecord {
            info,
            start: now,
            end: now,
            outcome: Outcome::SUCCESS,
            cancelled: false,
            backoff: Duration::ZERO,
            budget_allowed: true,
            budget_reason: reason::ALLOWED,
        };
        budget.settle(&record, reservation, now);
    }
    u32::try_from(admitted).unwrap()
}

/// Whole milliseconds of `t` since the clock's epoch (budgets credit time
/// per whole millisecond).
fn whole_ms(t: Instant) -> u64 {
    t.as_nanos() / 1_000_000
}

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
    let hedge_budget = Arc::new(Concurrency::new(200, MAX_HEDGES_IN_FLIGHT));
    let bucket = Arc::new(TokenBucket::new(BUCKET_CAPACITY, BUCKET_REFILL_PER_SEC));
    let ratio = Arc::new(RetryRatio::new(
        RATIO_TTL,
        RATIO_RESERVE_PER_SEC,
        RATIO_PERMILLE,
    ));
    let mut budgets = BudgetRegistry::new();
    budgets.register_shared(HEDGES, hedge_budget.clone());
    budgets.register_shared(BUCKET, bucket.clone());
    budgets.register_shared(RATIO, ratio.clone());
    let provider = StaticProvider::builder()
        .policy(KEYS[0], policy(BUCKET))
        .unwrap()
        .policy(KEYS[1], policy(RATIO))
        .unwrap()
        .build();
    let watch = Watch::default();
    let exec = Arc::new(
        Executor::builder()
            .provider(provider)
            .budgets(budgets)
            .observer(watch.clone())
            .seed(0x5EED)
            .build(),
    );

    // The budgets' clock: the executor's shared one (tokio's, real time).
    let t_start = DefaultTimer.shared_now();
    let all_live = Arc::new(AtomicUsize::new(0));
    // The most hedges the budget showed in flight while a hedge started,
    // and how often it showed none (the starting hedge holds one).
    let max_hedges_seen = Arc::new(AtomicUsize::new(0));
    let hedge_saw_none = Arc::new(AtomicUsize::new(0));
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
            let (counts, all_live) = (counts.clone(), all_live.clone());
            let (budget, max_seen, saw_none) = (
                hedge_budget.clone(),
                max_hedges_seen.clone(),
                hedge_saw_none.clone(),
            );
            move |a: AttemptInfo| {
                let straggles = kind == Kind::Slow || rng.u32(0..1000) < 150;
                let latency = if straggles {
                    ms(rng.u64(20..=40))
                } else {
                    ms(rng.u64(1..=3))
                };
                let fails = rng.u32(0..100) < 8;
                if a.is_hedge {
                    let in_flight = budget.extra_in_flight();
                    max_seen.fetch_max(in_flight, Ordering::SeqCst);
                    if in_flight == 0 {
                        bump(&saw_none);
                    }
                }
                let mut attempt = Attempt::new(&counts, &all_live, a.is_hedge);
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
            (result, mine.live.load(Ordering::SeqCst))
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
        let primaries = get(&counts.primaries);
        let hedges = get(&counts.hedges);
        let (lost_p, lost_h) = (get(&counts.primaries_dropped), get(&counts.hedges_dropped));
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
    let w = &watch.0;
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
        get(&max_hedges_seen),
        get(&all_live),
    );

    // -- Futures -----------------------------------------------------------
    assert_eq!(get(&all_live), 0, "attempt futures outlived every call");
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
    assert_eq!(get(&w.starts), CALLS);
    assert_eq!(
        get(&w.successes) + get(&w.failures),
        CALLS,
        "one end per call"
    );
    assert_eq!(get(&w.successes), t.ok);
    assert_eq!(get(&w.cancelled_calls), t.dropped);
    assert_eq!(get(&w.ran), launched, "one record per attempt that ran");
    assert_eq!(
        get(&w.cut_losers),
        losers,
        "one hedge_loser record per loser"
    );
    assert_eq!(
        get(&w.cut_cancelled),
        t.cancelled_attempts,
        "one cancelled record per attempt dropped with its call"
    );
    assert_eq!(
        get(&w.cut_other),
        0,
        "no attempt was cut for another reason"
    );
    assert_eq!(get(&w.other_decisions), 0);
    assert_eq!(get(&w.hedges[0]), t.hedges, "every admitted hedge ran");
    assert_eq!(get(&w.bucket[0]), t.primaries[0]);
    assert_eq!(get(&w.ratio[0]), t.primaries[1]);
    let denied = get(&w.hedges[1]) + get(&w.bucket[1]) + get(&w.ratio[1]);
    assert_eq!(get(&w.refused), denied, "one record per refused attempt");
    assert_eq!(get(&w.bucket[1]) + get(&w.ratio[1]), t.budget_denied);

    // -- Hedge budget: nothing in flight, the same limit as a fresh one ------
    let max_seen = get(&max_hedges_seen);
    assert!(
        max_seen <= MAX_HEDGES_IN_FLIGHT as usize,
        "{max_seen} hedges in flight, limit {MAX_HEDGES_IN_FLIGHT}"
    );
    assert_eq!(
        get(&hedge_saw_none),
        0,
        "a hedge ran without its reservation"
    );
    assert_eq!(
        (hedge_budget.active(), hedge_budget.extra_in_flight()),
        (0, 0),
        "the hedge budget still counts attempts in flight"
    );
    let fresh = Concurrency::new(200, MAX_HEDGES_IN_FLIGHT);
    assert_eq!(hedge_budget.limit(), fresh.limit());
    assert_eq!(
        admits(&*hedge_budget, AttemptKind::Hedge, t_end, 1000),
        MAX_HEDGES_IN_FLIGHT
    );
    assert_eq!(
        admits(&fresh, AttemptKind::Hedge, t_end, 1000),
        MAX_HEDGES_IN_FLIGHT
    );
    assert_eq!(
        (hedge_budget.active(), hedge_budget.extra_in_flight()),
        (0, 0)
    );

    // -- Token bucket: every attempt that ran spent one token for good, and
    //    the bucket is full again exactly when its refill says so ------------
    let milli = |tokens: u64| tokens * 1000;
    let capacity = milli(u64::from(BUCKET_CAPACITY));
    let rate = u64::from(BUCKET_REFILL_PER_SEC);
    let (start_ms, end_ms) = (whole_ms(t_start), whole_ms(t_end));
    let short = capacity - bucket.available_milli(t_end);
    let spent = milli(t.primaries[0] as u64);
    // Each spend moves the bucket's spent mark up by one token from where
    // it was or from the refill clock, whichever is later: the shortfall now
    // is at most what was spent, and at least that less the refill since
    // the first spend.
    assert!(short <= spent, "short {short} > spent {spent} milli-tokens");
    let refilled = (end_ms - start_ms) * rate;
    assert!(
        short >= spent.saturating_sub(refilled),
        "short {short} milli-tokens, spent {spent}, refilled at most {refilled}"
    );
    let to_full_ms = short.div_ceil(rate);
    assert!(
        to_full_ms > 0,
        "the bucket refilled during the run: {short}"
    );
    let full_at = Instant::from_millis(end_ms + to_full_ms);
    assert_eq!(bucket.available_milli(full_at), capacity, "full again");
    assert!(bucket.available_milli(Instant::from_millis(end_ms + to_full_ms - 1)) < capacity);
    let fresh = TokenBucket::new(BUCKET_CAPACITY, BUCKET_REFILL_PER_SEC);
    for at in [full_at, full_at + Duration::from_secs(3600)] {
        assert_eq!(bucket.available_milli(at), fresh.available_milli(at));
    }

    // -- Retry ratio: one window after the last call, every deposit and
    //    withdrawal has expired: the reserve alone, as in a fresh budget ----
    let reserve = i64::from(RATIO_RESERVE_PER_SEC) * RATIO_TTL.as_secs() as i64;
    let in_use = ratio.balance(t_end);
    assert!(in_use > reserve, "the window held no deposits: {in_use}");
    let expired = t_end + RATIO_TTL;
    let fresh = RetryRatio::new(RATIO_TTL, RATIO_RESERVE_PER_SEC, RATIO_PERMILLE);
    let back = ratio.balance(expired);
    assert_eq!(back, reserve);
    assert_eq!(fresh.balance(expired), reserve);
    assert_eq!(
        admits(&*ratio, AttemptKind::Retry, expired, 1000),
        admits(&fresh, AttemptKind::Retry, expired, 1000),
    );
    println!(
        "  budgets: hedges active {} extra {}; svc.Get bucket {}/{} tokens at the end, full {} ms \
         later; svc.List ratio balance {in_use} at the end, {back} one window later (reserve {reserve})",
        hedge_budget.active(),
        hedge_budget.extra_in_flight(),
        bucket.available(t_end),
        BUCKET_CAPACITY,
        to_full_ms,
    );
    assert!(wall < Duration::from_secs(10), "took {wall:?}");
}
