//! Cancellation soak: 100,000 hedged, retried, budgeted calls through the
//! executor on tokio's multi-thread runtime (2 workers, real timers, 500
//! calls in flight), each dropped at a seeded random point or left to
//! finish. Afterwards no attempt future is alive, every budget is back to
//! its initial state, and the heap has not grown.
//!
//! Each call draws, from an RNG seeded with its index, how it ends:
//!
//! | share | how | where it is dropped |
//! | --- | --- | --- |
//! | 8 % | the call future is made and dropped | before its first poll |
//! | 30 % | `tokio::time::timeout` of 0–15 ms | anywhere: in an attempt (a 0 ms timeout: right after the first poll), a hedge race, a backoff |
//! | 30 % | `tokio::select!` (biased) against a sleep of 0–45 ms | anywhere, later too; a sleep due with the call's timer drops it |
//! | 7 % | `select!` against the first attempt's own deadline | at the instant that attempt's result is ready, before the call sees it |
//! | 25 % | awaited | not dropped: it returns |
//!
//! Attempts sleep 1–3 ms, or 20–40 ms for 20 % of them (stragglers; every
//! attempt of one call in six straggles), and fail retryably 12 % of the
//! time. Policies: 3 attempts, backoff 2 ms doubling to 6 ms (equal
//! jitter); 2 hedges, 10 ms apart on `svc.Get` (the policy floor), at p75
//! of recent latencies on `svc.List`; `svc.Get` also has a circuit breaker
//! (enabled, never tripping). Hedges pass a [`Concurrency`] budget (32 in
//! flight); first attempts and retries pass a [`TokenBucket`] (`svc.Get`)
//! or a [`RetryRatio`] (`svc.List`), all registered with `register_shared`
//! so the test keeps them. Each dropped call is put in the phase it was
//! dropped in by what its attempts saw (see [`Phase`]).
//!
//! [`Concurrency`]: recourse::core_machine::budget::Concurrency
//! [`TokenBucket`]: recourse::core_machine::budget::TokenBucket
//! [`RetryRatio`]: recourse::core_machine::budget::RetryRatio
//!
//! ## Memory
//!
//! A counting global allocator keeps the live heap bytes and blocks of this
//! test binary (every thread). They are read with nothing in flight (every
//! worker task joined, timers settled) after a warm-up batch of 10,000
//! calls of the same mix, and again after the 100,000: the second reading
//! may exceed the first by at most [`HEAP_GROWTH_BOUND`] bytes and
//! [`BLOCK_GROWTH_BOUND`] blocks. Why those bounds: what may legitimately
//! grow is sized by keys and by concurrency, not by calls — one latency
//! sketch (1,824 bytes; `svc.List` has the only quantile trigger), one
//! circuit breaker (`svc.Get`), the executor's fallback policies, tokio's
//! queues and timer wheel — and the warm-up runs the same keys at the same
//! concurrency, so all of it has its size before the first reading (the
//! runs so far grew by exactly 0 bytes). The margin allows a few of those
//! buffers to double once more should the main batch reach a higher peak
//! than the warm-up did. A leak, however small, is per call: the smallest
//! allocation (8 bytes) leaked by one call in ten adds 80,000 bytes and
//! 10,000 blocks over the 100,000 calls, and any allocation leaked by one
//! call in 1,600 already passes the block bound. Nothing is printed between
//! the readings: the test harness keeps printed output in a growing buffer.

#![allow(clippy::unwrap_used)]

use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::{Arc, OnceLock};

use recourse::core_machine::policy::name;
use recourse::timer::{DefaultTimer, TimerSource};
use recourse::{AttemptInfo, Error, Executor, Jitter, Policy};
use recourse_tests::hedged::{
    bump, get, Alive, Attempt, Budgets, CallCounts, HedgeProbe, Seen, HEDGES, KEYS, RETRY_BUDGETS,
};
use recourse_tests::ms;
use tokio::sync::Notify;

/// Calls measured after the warm-up.
const CALLS: usize = 100_000;
/// Calls of the same mix run first, so that everything sized by keys or by
/// concurrency has reached its size before the heap is read.
const WARMUP: usize = 10_000;
/// Calls in flight at once (worker tasks, each running calls one by one).
const IN_FLIGHT: usize = 500;
const SEED: u64 = 0x50A4_0000;
/// Hedges the [`HedgeProbe`]'s budget lets run at once.
const MAX_HEDGES_IN_FLIGHT: u32 = 32;
/// `svc.Get`'s token bucket: never empty in this run, refilled slowly
/// enough that the run leaves it measurably short.
const BUCKET_CAPACITY: u32 = 200_000;
const BUCKET_REFILL_PER_SEC: u32 = 5_000;
/// `svc.List`'s retry ratio: 1 s window, 10 retries/s reserve, 20 %.
const RATIO: (Duration, u32, u32) = (Duration::from_secs(1), 10, 200);
/// How far the live heap may grow from after the warm-up to after the
/// 100,000 calls, in bytes and in blocks (see the module docs).
const HEAP_GROWTH_BOUND: u64 = 16 * 1024;
const BLOCK_GROWTH_BOUND: u64 = 64;
const WALL_LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Live heap bytes
// ---------------------------------------------------------------------------

mod heap {
    //! The system allocator, counting bytes allocated and freed by every
    //! thread of this test binary.
    // A `GlobalAlloc` is an `unsafe` trait: this wrapper only forwards to
    // `System` and counts.
    #![allow(unsafe_code)]

    use core::alloc::{GlobalAlloc, Layout};
    use core::sync::atomic::{AtomicU64, Ordering};
    use std::alloc::System;

    static ALLOCATED: AtomicU64 = AtomicU64::new(0);
    static FREED: AtomicU64 = AtomicU64::new(0);
    static LIVE_BLOCKS: AtomicU64 = AtomicU64::new(0);

    struct Counting;

    #[global_allocator]
    static COUNTING: Counting = Counting;

    fn grew(bytes: usize) {
        ALLOCATED.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn shrank(bytes: usize) {
        FREED.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    // SAFETY: every method forwards its arguments unchanged to `System`,
    // which upholds `GlobalAlloc`'s contract; the counting touches only
    // atomics (it never allocates).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc(layout);
            if !p.is_null() {
                grew(layout.size());
                LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc_zeroed(layout);
            if !p.is_null() {
                grew(layout.size());
                LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout);
            shrank(layout.size());
            LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = System.realloc(ptr, layout, new_size);
            if !p.is_null() {
                if new_size >= layout.size() {
                    grew(new_size - layout.size());
                } else {
                    shrank(layout.size() - new_size);
                }
            }
            p
        }
    }

    /// Bytes and blocks allocated and not yet freed.
    pub(crate) fn live() -> (u64, u64) {
        let freed = FREED.load(Ordering::SeqCst);
        let allocated = ALLOCATED.load(Ordering::SeqCst);
        (
            allocated.saturating_sub(freed),
            LIVE_BLOCKS.load(Ordering::SeqCst),
        )
    }
}

// ---------------------------------------------------------------------------
// One call
// ---------------------------------------------------------------------------

/// How a call ends, drawn from its seeded RNG.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Plan {
    /// The call future is made and dropped without a poll.
    Unpolled,
    /// Wrapped in `tokio::time::timeout` (which polls the call first).
    Timeout(Duration),
    /// Raced in a biased `select!` against a sleep (polled first, so a
    /// sleep due in the same timer tick as an attempt wins).
    Race(Duration),
    /// Raced against the first attempt's own deadline: dropped in the tick
    /// that attempt's result is ready, before the call polls it.
    AtReady,
    /// Awaited to the end.
    Finish,
}

impl Plan {
    fn draw(rng: &mut fastrand::Rng) -> Self {
        match rng.u32(0..100) {
            0..=7 => Self::Unpolled,
            8..=37 => Self::Timeout(ms(rng.u64(0..=15))),
            38..=67 => Self::Race(ms(rng.u64(0..=45))),
            68..=74 => Self::AtReady,
            _ => Self::Finish,
        }
    }
}

/// Where a dropped call was, told by what its attempts saw.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// No attempt launched: the call was never polled (a polled call
    /// launches its first attempt at once, and a refused one returns).
    BeforeFirstPoll,
    /// An attempt whose result was due (its timer had fired) was dropped
    /// unfinished: the call was dropped before it saw the result.
    ResultReady,
    /// One attempt in flight.
    Attempt,
    /// A primary and hedges in flight.
    HedgeRace,
    /// Every launched attempt had finished: between a failure and a retry.
    Backoff,
}

impl Phase {
    const ALL: [Self; 5] = [
        Self::BeforeFirstPoll,
        Self::ResultReady,
        Self::Attempt,
        Self::HedgeRace,
        Self::Backoff,
    ];

    fn of(c: &CallCounts) -> Self {
        let unfinished = c.primaries_dropped() + c.hedges_dropped();
        match (c.primaries() + c.hedges(), c.dropped_ready(), unfinished) {
            (0, ..) => Self::BeforeFirstPoll,
            (_, 1.., _) => Self::ResultReady,
            (.., 0) => Self::Backoff,
            (.., 1) => Self::Attempt,
            _ => Self::HedgeRace,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::BeforeFirstPoll => "before first poll",
            Self::ResultReady => "with a result ready",
            Self::Attempt => "mid-attempt",
            Self::HedgeRace => "mid-hedge-race",
            Self::Backoff => "mid-backoff",
        }
    }
}

/// Counts over every call, from what each call's operation saw; shared by
/// the worker tasks.
#[derive(Debug, Default)]
struct Totals {
    calls: AtomicUsize,
    ok: AtomicUsize,
    exhausted: AtomicUsize,
    budget_denied: AtomicUsize,
    /// Dropped calls, by [`Phase`] (in the order of [`Phase::ALL`]).
    dropped: [AtomicUsize; 5],
    /// First attempts and retries launched, per key.
    primaries: [AtomicUsize; 2],
    hedges: AtomicUsize,
    /// Attempts dropped unfinished in calls that returned: hedge-race
    /// losers.
    losers: AtomicUsize,
    /// Attempts dropped unfinished with their call.
    cancelled_attempts: AtomicUsize,
    /// Calls whose attempt futures outlived them.
    leaked: AtomicUsize,
}

impl Totals {
    fn dropped(&self, phase: Phase) -> usize {
        get(&self.dropped[phase as usize])
    }

    fn all_dropped(&self) -> usize {
        Phase::ALL.iter().map(|p| self.dropped(*p)).sum()
    }
}

/// What every call shares.
struct Run {
    exec: Executor,
    alive: Arc<Alive>,
    hedges: Arc<HedgeProbe>,
    totals: Totals,
}

fn policy(key: usize) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 3;
    p.retry.initial_backoff = ms(2);
    p.retry.max_backoff = ms(6);
    p.retry.jitter = Jitter::Equal;
    p.retry.budget.name = name("retry.budget.name", RETRY_BUDGETS[key]).unwrap();
    p.hedge.enabled = true;
    p.hedge.max_hedges = 2;
    p.hedge.hedge_delay = ms(10);
    p.hedge.trigger = name("hedge.trigger", ["fixed_delay", "p75"][key]).unwrap();
    p.hedge.budget.name = name("hedge.budget.name", HEDGES).unwrap();
    if key == 0 {
        p.circuit.enabled = true;
        p.circuit.threshold = 1_000_000;
    }
    let n = p.clone().normalize().unwrap();
    assert!(n.changed.is_empty(), "{}", n.changed);
    p
}

/// Runs call `i` as its plan says and counts what happened.
async fn one_call(run: &Run, i: usize) {
    let mut rng = fastrand::Rng::with_seed(SEED + i as u64);
    let key = i % 2;
    let plan = Plan::draw(&mut rng);
    let slow = rng.u32(0..6) == 0;
    let counts = Arc::new(CallCounts::default());
    // When the first attempt's result is due, for `Plan::AtReady`.
    let first_due = Arc::new(OnceLock::<tokio::time::Instant>::new());
    let first_launched = Arc::new(Notify::new());
    let op = {
        let (counts, alive, hedges) = (counts.clone(), run.alive.clone(), run.hedges.clone());
        let (first_due, first_launched) = (first_due.clone(), first_launched.clone());
        move |a: AttemptInfo| {
            let straggles = slow || rng.u32(0..100) < 20;
            let latency = if straggles {
                ms(rng.u64(20..=40))
            } else {
                ms(rng.u64(1..=3))
            };
            let fails = rng.u32(0..100) < 12;
            if a.is_hedge {
                hedges.hedge_started();
            }
            let due = tokio::time::Instant::now() + latency;
            if first_due.set(due).is_ok() {
                first_launched.notify_one();
            }
            let mut attempt = Attempt::new(&counts, &alive, a.is_hedge).due_at(due.into_std());
            async move {
                tokio::time::sleep_until(due).await;
                attempt.complete();
                if fails {
                    Err(a.retry_index)
                } else {
                    Ok(a.hedge_index)
                }
            }
        }
    };
    let call = run.exec.call(KEYS[key], op);
    let result = match plan {
        Plan::Unpolled => {
            drop(call);
            None
        }
        Plan::Timeout(limit) => tokio::time::timeout(limit, call).await.ok(),
        Plan::Race(after) => tokio::select! {
            biased;
            () = tokio::time::sleep(after) => None,
            r = call => Some(r),
        },
        Plan::AtReady => {
            let ready = async {
                first_launched.notified().await;
                tokio::time::sleep_until(*first_due.get().unwrap()).await;
            };
            tokio::select! {
                biased;
                () = ready => None,
                r = call => Some(r),
            }
        }
        Plan::Finish => Some(call.await),
    };

    // The call future is gone, returned or dropped: so are its attempts.
    let t = &run.totals;
    bump(&t.calls);
    if counts.live() != 0 {
        bump(&t.leaked);
    }
    let (lost_p, lost_h) = (counts.primaries_dropped(), counts.hedges_dropped());
    t.primaries[key].fetch_add(counts.primaries(), Ordering::SeqCst);
    t.hedges.fetch_add(counts.hedges(), Ordering::SeqCst);
    let Some(result) = result else {
        let phase = Phase::of(&counts);
        if plan == Plan::Unpolled {
            assert_eq!(phase, Phase::BeforeFirstPoll, "call {i}");
        }
        bump(&t.dropped[phase as usize]);
        t.cancelled_attempts
            .fetch_add(lost_p + lost_h, Ordering::SeqCst);
        return;
    };
    match result {
        Ok(winner) => {
            // Losers are the winning group's attempts still in flight: at
            // most its primary and two hedges, less the winner. A primary
            // that lost, lost to a hedge.
            assert!(
                lost_p <= 1 && lost_p + lost_h <= 2,
                "call {i}: {lost_p} {lost_h}"
            );
            assert!(
                lost_p == 0 || winner >= 1,
                "call {i}: the primary lost to itself"
            );
            bump(&t.ok);
        }
        Err(e) => {
            // A call fails only once nothing is in flight.
            assert_eq!((lost_p, lost_h), (0, 0), "call {i}: {e:?}");
            match e {
                Error::RetriesExhausted { attempts, .. } => {
                    let launched = counts.primaries() + counts.hedges();
                    assert_eq!(attempts as usize, launched, "call {i}");
                    assert_eq!(counts.primaries(), 3, "call {i}: three retry groups");
                    bump(&t.exhausted);
                }
                Error::BudgetDenied { .. } => bump(&t.budget_denied),
                e => panic!("call {i} ({plan:?}): unexpected {e:?}"),
            }
        }
    }
    t.losers.fetch_add(lost_p + lost_h, Ordering::SeqCst);
}

/// Runs calls `range` on [`IN_FLIGHT`] tasks, each taking the next call
/// when its last one is over; returns once every task has ended.
async fn batch(run: &Arc<Run>, range: core::ops::Range<usize>) {
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut tasks = Vec::with_capacity(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        let (run, next, end) = (run.clone(), next.clone(), range.end);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= end {
                    break;
                }
                one_call(&run, i).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Live heap bytes and blocks once the runtime has settled (task cells and
/// timer entries freed after their last wake-up).
async fn settled_heap() -> (u64, u64) {
    tokio::time::sleep(ms(50)).await;
    heap::live()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_calls_dropped_anywhere_leave_no_future_budget_or_heap_behind() {
    let wall = std::time::Instant::now();
    let budgets = Budgets::new(
        MAX_HEDGES_IN_FLIGHT,
        (BUCKET_CAPACITY, BUCKET_REFILL_PER_SEC),
        RATIO,
    );
    let hedges = budgets.hedges.clone();
    let (exec, watch) = budgets.executor([policy(0), policy(1)], SEED);
    let run = Arc::new(Run {
        exec,
        alive: Arc::default(),
        hedges: hedges.clone(),
        totals: Totals::default(),
    });

    // The budgets' clock: the executor's shared one (tokio's, real time).
    let t_start = DefaultTimer.shared_now();
    let heap_start = settled_heap().await;
    batch(&run, 0..WARMUP).await;
    let heap_warm = settled_heap().await;
    let warm_wall = wall.elapsed();
    batch(&run, WARMUP..WARMUP + CALLS).await;
    let heap_end = settled_heap().await;
    let t_end = DefaultTimer.shared_now();
    let wall = wall.elapsed();

    let t = &run.totals;
    let w = &watch.counts;
    let all = WARMUP + CALLS;
    let launched = get(&t.primaries[0]) + get(&t.primaries[1]) + get(&t.hedges);
    let dropped = t.all_dropped();
    let unpolled = t.dropped(Phase::BeforeFirstPoll);
    let growth = heap_end.0.saturating_sub(heap_warm.0);
    let block_growth = heap_end.1.saturating_sub(heap_warm.1);
    println!(
        "{CALLS} calls after {WARMUP} warm-up calls in {wall:.2?} (warm-up {warm_wall:.2?}; \
         {IN_FLIGHT} in flight, 2 worker threads, real timers); counts cover all {all}"
    );
    println!(
        "  returned: {} ok, {} retries exhausted, {} budget denied",
        get(&t.ok),
        get(&t.exhausted),
        get(&t.budget_denied),
    );
    let phases: Vec<String> = Phase::ALL
        .iter()
        .map(|p| format!("{} {}", t.dropped(*p), p.name()))
        .collect();
    println!("  dropped: {dropped} ({})", phases.join(", "));
    println!(
        "  attempts launched: {launched} ({} first/retry on svc.Get, {} on svc.List, {} hedges); \
         hedges refused: {}; hedge-race losers dropped: {}; attempts dropped with their call: {}",
        get(&t.primaries[0]),
        get(&t.primaries[1]),
        get(&t.hedges),
        get(&w.hedges[1]),
        get(&t.losers),
        get(&t.cancelled_attempts),
    );
    println!(
        "  live attempt futures: peak {}, now {}; hedges in flight at most {} (limit \
         {MAX_HEDGES_IN_FLIGHT})",
        run.alive.peak(),
        run.alive.live(),
        hedges.max_seen(),
    );
    println!(
        "  live heap: {} bytes in {} blocks before the warm-up, {} bytes in {} blocks after it, \
         {} bytes in {} blocks after the {CALLS} calls: grew {growth} bytes (bound \
         {HEAP_GROWTH_BOUND}), {block_growth} blocks (bound {BLOCK_GROWTH_BOUND})",
        heap_start.0, heap_start.1, heap_warm.0, heap_warm.1, heap_end.0, heap_end.1,
    );

    // -- Futures: none outlived its call, every drop phase ran ---------------
    assert_eq!(get(&t.calls), all);
    assert_eq!(
        get(&t.leaked),
        0,
        "calls whose attempt futures outlived them"
    );
    assert_eq!(run.alive.live(), 0, "attempt futures outlived every call");
    for phase in Phase::ALL {
        assert!(
            t.dropped(phase) >= 100,
            "too few calls dropped {}: {t:?}",
            phase.name()
        );
    }
    assert!(get(&t.hedges) > 1_000, "too few hedges: {t:?}");
    assert!(get(&t.losers) > 200, "too few hedge-race losers: {t:?}");
    assert_eq!(
        get(&t.ok) + get(&t.exhausted) + get(&t.budget_denied) + dropped,
        all
    );

    // -- What the executor reported matches what the operations saw --------
    watch.check(&Seen {
        started: all - unpolled,
        ok: get(&t.ok),
        dropped: dropped - unpolled,
        budget_denied: get(&t.budget_denied),
        primaries: [get(&t.primaries[0]), get(&t.primaries[1])],
        hedges: get(&t.hedges),
        losers: get(&t.losers),
        cancelled_attempts: get(&t.cancelled_attempts),
    });

    // -- Budgets: back to their initial state (asked after the run) --------
    let line = budgets.check(get(&t.primaries[0]) as u64, t_start, t_end);
    println!("  budgets: {line}");

    // -- Memory and time --------------------------------------------------------
    assert!(
        growth <= HEAP_GROWTH_BOUND,
        "the live heap grew {growth} bytes over {CALLS} calls"
    );
    assert!(
        block_growth <= BLOCK_GROWTH_BOUND,
        "the live heap grew {block_growth} blocks over {CALLS} calls"
    );
    assert!(wall < WALL_LIMIT, "took {wall:?}");
}
