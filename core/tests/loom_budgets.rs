//! Model checking of every built-in budget with [loom]: two or three threads
//! share one budget, and loom runs the budgets' real code (their atomics are
//! loom's under `cfg(loom)`, see `core/src/sync.rs`) under every
//! interleaving and every memory-order outcome within the preemption bound.
//!
//! Each model checks, for every execution:
//! - linearizability: the decisions each thread got and the budget's final
//!   state are those of *some* sequential run of the same steps (each
//!   `decide` and each `settle` one indivisible step, in each thread's
//!   order), replayed on a fresh budget: no token created or lost, no state
//!   a sequential run could not reach. A budget with a clock of its own
//!   ([`RetryRatio`]'s latest slice, raised by a call before it acts) has
//!   each call's clock tick as a step of its own before the call's
//!   `decide` (a call that has begun at a later `now` moves the budget's
//!   clock for every call that acts after it);
//! - the budget's own conservation law, stated directly.
//!
//! Run (bounded; a separate target dir keeps the cfg out of normal builds;
//! the retry ratio's models across slices stay within one preemption,
//! [`RATIO_ACROSS_SLICES`]):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p recourse-core --release --test loom_budgets
//! ```
//!
//! [loom]: https://docs.rs/loom
#![cfg(loom)]
#![allow(clippy::unwrap_used, missing_docs)]

use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::collections::BTreeSet;
use std::sync::Mutex;

use loom::sync::Arc;
use loom::thread;
use recourse_core::budget::{
    AwsRetryQuota, Concurrency, GrpcThrottle, RetryRatio, TokenBucket, Unlimited,
};
use recourse_core::{
    reason, AttemptId, AttemptInfo, AttemptKind, AttemptRecord, Budget, BudgetRequest, Instant,
    Outcome, PolicyKey,
};

const INITIAL: AttemptKind = AttemptKind::Initial;
const RETRY: AttemptKind = AttemptKind::Retry;
const HEDGE: AttemptKind = AttemptKind::Hedge;
const OK: Outcome = Outcome::SUCCESS;
const FAILED: Outcome = Outcome::retryable(reason::RETRYABLE_ERROR);
const TIMED_OUT: Outcome = Outcome::retryable(reason::ATTEMPT_TIMEOUT);

/// One attempt a thread makes: asked at `at_ms`, then (if allowed) settled
/// as having run (`ran`) or not, with `outcome`.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    kind: AttemptKind,
    previous: Option<Outcome>,
    ran: bool,
    outcome: Outcome,
    at_ms: u64,
}

const fn attempt(kind: AttemptKind, outcome: Outcome, at_ms: u64) -> Attempt {
    Attempt {
        kind,
        previous: None,
        ran: true,
        outcome,
        at_ms,
    }
}

/// Allowed, but ended before it ran (dropped, deadline): gives back.
const fn never_ran(kind: AttemptKind, at_ms: u64) -> Attempt {
    Attempt {
        ran: false,
        ..attempt(kind, FAILED, at_ms)
    }
}

const fn after(previous: Outcome, a: Attempt) -> Attempt {
    Attempt {
        previous: Some(previous),
        ..a
    }
}

fn info(kind: AttemptKind) -> AttemptInfo {
    let (retry_index, hedge_index, is_hedge) = match kind {
        AttemptKind::Initial => (0, 0, false),
        AttemptKind::Retry => (1, 0, false),
        AttemptKind::Hedge => (0, 1, true),
    };
    AttemptInfo {
        id: AttemptId(0),
        retry_index,
        hedge_index,
        is_hedge,
        deadline: None,
    }
}

/// Asks `budget` about `a`; returns whether it was allowed and the
/// reservation to settle with.
fn decide<B: Budget>(budget: &B, a: &Attempt) -> (bool, Option<recourse_core::Reservation>) {
    let d = budget.decide(&BudgetRequest {
        key: PolicyKey::new("loom", "budget"),
        attempt: info(a.kind),
        kind: a.kind,
        budget: "loom",
        cost: 1,
        previous: a.previous,
        now: Instant::from_millis(a.at_ms),
    });
    (d.allowed, d.reservation)
}

fn settle<B: Budget>(budget: &B, a: &Attempt, reservation: Option<recourse_core::Reservation>) {
    let now = Instant::from_millis(a.at_ms);
    let record = AttemptRecord {
        info: info(a.kind),
        start: now,
        end: now,
        outcome: a.outcome,
        cancelled: !a.ran,
        backoff: Duration::ZERO,
        budget_allowed: a.ran,
        budget_reason: reason::ALLOWED,
    };
    budget.settle(&record, reservation, now);
}

/// What one execution ends with: each thread's decisions, and the budget's
/// observable state.
type Ending = (Vec<Vec<bool>>, Vec<i64>);

/// Reads a budget's observable state (loads every atomic it has).
type Observe<B> = fn(&B) -> Vec<i64>;

/// A budget's conservation law, checked after every execution: the budget,
/// each thread's decisions, the script.
type Law<B> = fn(&B, &[Vec<bool>], &[&[Attempt]]);

/// Moves a budget's own clock to an attempt's `now`, and nothing else.
type Tick<B> = fn(&B, &Attempt);

/// Every sequential interleaving of `script`'s steps, as the thread taking
/// each step (each attempt is `per_attempt` steps: decide, then settle if
/// allowed; with a clock, its tick first).
fn schedules(script: &[&[Attempt]], per_attempt: usize) -> Vec<Vec<usize>> {
    fn extend(left: &mut Vec<usize>, current: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if left.iter().all(|&n| n == 0) {
            out.push(current.clone());
            return;
        }
        for t in 0..left.len() {
            if left[t] > 0 {
                left[t] -= 1;
                current.push(t);
                extend(left, current, out);
                current.pop();
                left[t] += 1;
            }
        }
    }
    let mut all = Vec::new();
    let mut left: Vec<usize> = script.iter().map(|s| per_attempt * s.len()).collect();
    extend(&mut left, &mut Vec::new(), &mut all);
    all
}

/// The ending of each of `schedules`, replayed on a fresh budget each.
fn sequential_endings<B: Budget>(
    make: fn() -> B,
    observe: Observe<B>,
    script: &[&[Attempt]],
    tick: Option<Tick<B>>,
    schedules: &[Vec<usize>],
) -> BTreeSet<Ending> {
    let per_attempt = if tick.is_some() { 3 } else { 2 };
    let mut endings = BTreeSet::new();
    for schedule in schedules {
        let budget = make();
        // Creates every atomic first, as in the concurrent runs.
        let _ = observe(&budget);
        let mut step = vec![0usize; script.len()];
        let mut held = vec![None; script.len()];
        let mut decisions = vec![Vec::new(); script.len()];
        for &t in schedule {
            let a = &script[t][step[t] / per_attempt];
            // 1: tick, 2: decide, 3: settle.
            let phase = step[t] % per_attempt + 4 - per_attempt;
            if phase == 1 {
                if let Some(tick) = tick {
                    tick(&budget, a);
                }
            } else if phase == 2 {
                let (allowed, reservation) = decide(&budget, a);
                decisions[t].push(allowed);
                held[t] = allowed.then_some(reservation);
            } else if let Some(reservation) = held[t].take() {
                settle(&budget, a, reservation);
            }
            step[t] += 1;
        }
        endings.insert((decisions, observe(&budget)));
    }
    endings
}

/// Runs `script` (one slice of attempts per thread) on a budget shared by
/// its threads under loom, and checks each execution's ending against the
/// sequential ones and against `law`.
fn model<B: Budget + Send + Sync + 'static>(
    make: fn() -> B,
    observe: Observe<B>,
    law: Law<B>,
    script: &'static [&'static [Attempt]],
) {
    model_with_clock(make, observe, law, script, None, usize::MAX);
}

/// [`model`] for a budget with a clock of its own, which `tick` moves,
/// within at most `max_preemptions` preemptions.
fn model_with_clock<B: Budget + Send + Sync + 'static>(
    make: fn() -> B,
    observe: Observe<B>,
    law: Law<B>,
    script: &'static [&'static [Attempt]],
    tick: Option<Tick<B>>,
    max_preemptions: usize,
) {
    // The sequential endings, from a loom run of its own (loom's atomics
    // exist only inside one; a single thread, so a single execution).
    // A few schedules per run: loom's clocks count a thread's steps in 16
    // bits, which one run of thousands of schedules would overflow.
    let sequential: std::sync::Arc<Mutex<BTreeSet<Ending>>> = Default::default();
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 1_000_000;
    let per_attempt = if tick.is_some() { 3 } else { 2 };
    for chunk in schedules(script, per_attempt).chunks(32) {
        let chunk = std::sync::Arc::new(chunk.to_vec());
        let sequential = std::sync::Arc::clone(&sequential);
        builder.check(move || {
            let found = sequential_endings(make, observe, script, tick, &chunk);
            sequential.lock().unwrap().extend(found);
        });
    }
    let sequential = core::mem::take(&mut *sequential.lock().unwrap());
    assert!(!sequential.is_empty());
    let endings = sequential.len();
    builder.preemption_bound = Some(builder.preemption_bound.unwrap_or(3).min(max_preemptions));
    let executions: std::sync::Arc<AtomicUsize> = Default::default();
    let counted = std::sync::Arc::clone(&executions);
    builder.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        let budget = Arc::new(make());
        // Creates every atomic (with its initial value) before any thread
        // runs, as a constructor would.
        let _ = observe(&budget);
        let handles: Vec<_> = script
            .iter()
            .map(|attempts| {
                let budget = Arc::clone(&budget);
                thread::spawn(move || {
                    attempts
                        .iter()
                        .map(|a| {
                            let (allowed, reservation) = decide(&*budget, a);
                            if allowed {
                                settle(&*budget, a, reservation);
                            }
                            allowed
                        })
                        .collect::<Vec<bool>>()
                })
            })
            .collect();
        let decisions: Vec<Vec<bool>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ending = (decisions, observe(&budget));
        assert!(
            sequential.contains(&ending),
            "no sequential run ends like this execution: {ending:?}\nsequential endings: {sequential:?}"
        );
        law(&budget, &ending.0, script);
    });
    eprintln!(
        "{} executions, {} sequential endings",
        executions.load(Ordering::Relaxed),
        endings
    );
}

/// The attempts of `script` that were allowed, with their attempt.
fn allowed<'a>(
    decisions: &'a [Vec<bool>],
    script: &'a [&'a [Attempt]],
) -> impl Iterator<Item = &'a Attempt> + 'a {
    script
        .iter()
        .zip(decisions)
        .flat_map(|(attempts, d)| attempts.iter().zip(d).filter(|(_, &ok)| ok).map(|(a, _)| a))
}

// --- TokenBucket -----------------------------------------------------------

/// Three threads, two tokens, no refill: exactly the tokens of the attempts
/// that ran are spent, a give-back returns its token.
#[test]
fn token_bucket_three_threads_spend_exactly_what_ran() {
    static SCRIPT: &[&[Attempt]] = &[
        &[attempt(RETRY, OK, 0)],
        &[attempt(HEDGE, FAILED, 0)],
        &[never_ran(RETRY, 0)],
    ];
    model(
        || TokenBucket::new(2, 0),
        |b| vec![b.available_milli(Instant::ZERO) as i64],
        |b, decisions, script| {
            let ran = allowed(decisions, script).filter(|a| a.ran).count() as u64;
            assert_eq!(b.available_milli(Instant::ZERO), 2_000 - 1_000 * ran);
            // Two tokens: at most two attempts can have held one at once,
            // and at least two were allowed (one give-back at most).
            assert!(allowed(decisions, script).count() >= 2);
        },
        SCRIPT,
    );
}

/// Two threads whose clocks differ by a refill: the spent mark never lets
/// the bucket hold more than its capacity nor lose a refill.
#[test]
fn token_bucket_two_threads_with_refill_between_their_clocks() {
    static SCRIPT: &[&[Attempt]] = &[
        &[attempt(RETRY, OK, 0), attempt(RETRY, OK, 1)],
        &[attempt(RETRY, OK, 1), never_ran(HEDGE, 1)],
    ];
    model(
        // One token, one more per millisecond.
        || TokenBucket::new(1, 1_000),
        |b| vec![b.available_milli(Instant::from_millis(1)) as i64],
        |b, decisions, script| {
            let ran = allowed(decisions, script).filter(|a| a.ran).count() as u64;
            // Capacity 1 at 0 ms plus 1 refill by 1 ms: at most 2 ran.
            assert!(ran <= 2, "{ran} attempts ran on 2 tokens");
            assert!(b.available_milli(Instant::from_millis(1)) <= 1_000);
        },
        SCRIPT,
    );
}

// --- RetryRatio ------------------------------------------------------------

/// The preemption bound of the retry ratio's models across slices: a
/// withdrawal reads all ten slots and the latest slice, and loom lets each
/// read see any store it may see, so three threads across slices make
/// about 1.4 million executions within one preemption (minutes of CI) and
/// far more within two. One preemption is enough to show that a call's
/// clock raise is seen before its own step (an early version of these
/// models, without the tick step, failed there). The models in one slice
/// run within the bound CI sets (3).
const RATIO_ACROSS_SLICES: usize = 1;

/// A retry ratio's clock tick, for the sequential runs: a retry far too
/// costly for any balance in these models, denied, so it changes nothing
/// but the latest slice (a call a whole window late moves nothing).
fn ratio_tick(b: &RetryRatio, a: &Attempt) {
    let d = b.decide(&BudgetRequest {
        key: PolicyKey::new("loom", "tick"),
        attempt: info(RETRY),
        kind: RETRY,
        budget: "loom",
        cost: u32::MAX,
        previous: None,
        now: Instant::from_millis(a.at_ms),
    });
    assert!(!d.allowed, "a tick withdrew");
}

/// 100 %: each first attempt pays for one retry; no reserve. Two threads
/// in one slice race for the one retry a first attempt paid for.
#[test]
fn retry_ratio_two_threads_in_one_slice_never_overdraw() {
    static SCRIPT: &[&[Attempt]] = &[
        &[attempt(INITIAL, FAILED, 0), attempt(RETRY, OK, 0)],
        &[attempt(RETRY, OK, 0), never_ran(HEDGE, 0)],
    ];
    model_with_clock(
        || RetryRatio::new(Duration::from_secs(1), 0, 1_000),
        |b| vec![b.balance(Instant::ZERO)],
        |b, decisions, script| {
            let ran = allowed(decisions, script)
                .filter(|a| a.kind != INITIAL && a.ran)
                .count() as i64;
            // One deposit of one retry; every retry that ran withdrew it.
            assert_eq!(b.balance(Instant::ZERO), 1 - ran);
            assert!(b.balance(Instant::ZERO) >= 0, "overdrawn");
        },
        SCRIPT,
        Some(ratio_tick),
        usize::MAX,
    );
}

/// Two first attempts deposit at once while a third thread withdraws: no
/// deposit is lost, none counted twice.
#[test]
fn retry_ratio_three_threads_keep_every_deposit() {
    static SCRIPT: &[&[Attempt]] = &[
        &[attempt(INITIAL, FAILED, 0)],
        &[attempt(INITIAL, FAILED, 0)],
        &[attempt(RETRY, OK, 0), attempt(HEDGE, OK, 0)],
    ];
    model_with_clock(
        || RetryRatio::new(Duration::from_secs(1), 0, 1_000),
        |b| vec![b.balance(Instant::ZERO)],
        |b, decisions, _script| {
            let ran = decisions[2].iter().filter(|&&ok| ok).count() as i64;
            assert_eq!(b.balance(Instant::ZERO), 2 - ran, "{decisions:?}");
        },
        SCRIPT,
        Some(ratio_tick),
        usize::MAX,
    );
}

/// Three threads, one a slice (100 ms) ahead of the others: the window is
/// read across slots while another thread writes one.
///
/// A thread whose clock lags acts in the latest slice a call acted in, so
/// the one deposit pays for at most one retry, whoever asks first, and a
/// lagging clock reads the latest slice's balance (issue 17: a withdrawal
/// at slice 0 used not to count the slot slice 1 wrote, and spent the
/// deposit a second time).
#[test]
fn retry_ratio_three_threads_across_slices() {
    static SCRIPT: &[&[Attempt]] = &[
        &[attempt(INITIAL, FAILED, 0)],
        &[attempt(RETRY, OK, 0)],
        &[attempt(RETRY, OK, 100)],
    ];
    one_deposit_in_slice_zero(SCRIPT);
}

/// Two threads, one whose clock lags a slice behind the other's, each
/// crossing the slice boundary: the first deposits at 0 ms and retries at
/// 100 ms (slice 1), the second retries at 0 ms and hedges at 50 ms
/// (slice 0) while the first moves on. One deposit, no reserve: whatever
/// the interleaving, at most one of the three withdrawals is allowed, and
/// the balance at either clock is the deposit less it.
#[test]
fn retry_ratio_lagging_clock_across_a_slice_boundary() {
    static SCRIPT: &[&[Attempt]] = &[
        &[attempt(INITIAL, FAILED, 0), attempt(RETRY, OK, 100)],
        &[attempt(RETRY, OK, 0), attempt(HEDGE, OK, 50)],
    ];
    one_deposit_in_slice_zero(SCRIPT);
}

/// The law both models above share: a `RetryRatio` with no reserve and one
/// deposit in slice 0 (slices of 100 ms) allows at most one withdrawal,
/// whatever the interleaving, and its balance read in slice 0 or in slice 1
/// is the deposit less what was allowed.
fn one_deposit_in_slice_zero(script: &'static [&'static [Attempt]]) {
    model_with_clock(
        || RetryRatio::new(Duration::from_secs(1), 0, 1_000),
        |b| {
            vec![
                b.balance(Instant::ZERO),
                b.balance(Instant::from_millis(100)),
            ]
        },
        |b, decisions, script| {
            let ran = allowed(decisions, script)
                .filter(|a| a.kind != INITIAL)
                .count() as i64;
            assert!(ran <= 1, "one deposit paid for {ran} withdrawals");
            assert_eq!(b.balance(Instant::from_millis(100)), 1 - ran);
            assert_eq!(b.balance(Instant::ZERO), 1 - ran);
        },
        script,
        Some(ratio_tick),
        RATIO_ACROSS_SLICES,
    );
}

/// Three threads across a whole window (slices of 100 ms): a deposit at
/// 0 ms (slice 0), a retry at 950 ms (slice 9, whose window still holds
/// slice 0), and a deposit then a retry at 1000 ms (slice 10, whose window
/// no longer does). A call behind the latest slice acts there, one a whole
/// window behind is too late; every ending is a sequential one, and no
/// more retries are allowed than deposits were made.
#[test]
fn retry_ratio_three_threads_across_a_window() {
    static SCRIPT: &[&[Attempt]] = &[
        &[attempt(INITIAL, FAILED, 0)],
        &[attempt(RETRY, OK, 950)],
        &[attempt(INITIAL, FAILED, 1_000), attempt(RETRY, OK, 1_000)],
    ];
    model_with_clock(
        || RetryRatio::new(Duration::from_secs(1), 0, 1_000),
        |b| {
            vec![
                b.balance(Instant::from_millis(950)),
                b.balance(Instant::from_millis(1_000)),
            ]
        },
        |b, decisions, script| {
            let ran = allowed(decisions, script)
                .filter(|a| a.kind != INITIAL)
                .count() as i64;
            assert!(ran <= 2, "two deposits paid for {ran} retries");
            // Slice 10 is the latest slice: a clock at 950 ms reads it.
            assert_eq!(
                b.balance(Instant::from_millis(950)),
                b.balance(Instant::from_millis(1_000))
            );
        },
        SCRIPT,
        Some(ratio_tick),
        RATIO_ACROSS_SLICES,
    );
}

// --- GrpcThrottle ----------------------------------------------------------

/// Tokens 2 (threshold 1), ratio 1: failures and successes from three
/// threads move the count by exactly their sum, within [0, max].
#[test]
fn grpc_throttle_three_threads_count_every_outcome() {
    static SCRIPT: &[&[Attempt]] = &[
        &[attempt(INITIAL, FAILED, 0)],
        &[attempt(INITIAL, FAILED, 0)],
        &[attempt(RETRY, OK, 0)],
    ];
    model(
        || GrpcThrottle::new(2, 1_000),
        |b| vec![i64::from(b.tokens_milli())],
        |b, decisions, _script| {
            let tokens = b.tokens_milli();
            assert!(tokens <= b.max_tokens_milli());
            // Two failures take 2 000; the success (if the retry was
            // allowed) gives 1 000 back, unless it came first and was
            // clamped at the maximum. Never outside [0, max].
            let expected: &[u32] = if decisions[2][0] { &[0, 1_000] } else { &[0] };
            assert!(expected.contains(&tokens), "{tokens} after {decisions:?}");
        },
        SCRIPT,
    );
}

// --- AwsRetryQuota ---------------------------------------------------------

/// Quota 10: a retry costs 5, after a timeout 10; a retry that succeeds
/// refunds its cost, a first attempt that succeeds adds 1 (capped).
#[test]
fn aws_retry_quota_three_threads_neither_create_nor_lose_tokens() {
    static SCRIPT: &[&[Attempt]] = &[
        &[after(FAILED, attempt(RETRY, FAILED, 0))],
        &[after(TIMED_OUT, attempt(RETRY, OK, 0))],
        &[after(FAILED, never_ran(RETRY, 0))],
    ];
    model(
        || AwsRetryQuota::new(10, 5, 10, 1),
        |b| vec![i64::from(b.available())],
        |b, decisions, _script| {
            // Only the failed retry that ran keeps its 5 tokens.
            let expected = if decisions[0][0] { 5 } else { 10 };
            assert_eq!(b.available(), expected, "{decisions:?}");
        },
        SCRIPT,
    );
}

// --- Concurrency -----------------------------------------------------------

/// At most one retry or hedge in flight: three threads, every attempt
/// released exactly once whatever the interleaving.
#[test]
fn concurrency_three_threads_release_everything() {
    static SCRIPT: &[&[Attempt]] = &[
        &[attempt(INITIAL, FAILED, 0), attempt(RETRY, OK, 0)],
        &[attempt(HEDGE, OK, 0)],
        &[never_ran(RETRY, 0)],
    ];
    model(
        || Concurrency::new(0, 1),
        |b| vec![b.active() as i64, b.extra_in_flight() as i64],
        |b, _decisions, _script| {
            assert_eq!((b.active(), b.extra_in_flight()), (0, 0));
        },
        SCRIPT,
    );
}

// --- Unlimited -------------------------------------------------------------

/// No state: every attempt of every thread is allowed.
#[test]
fn unlimited_two_threads_allow_everything() {
    static SCRIPT: &[&[Attempt]] = &[&[attempt(RETRY, OK, 0)], &[attempt(HEDGE, FAILED, 0)]];
    model(
        || Unlimited,
        |_| Vec::new(),
        |_, decisions, _| assert!(decisions.iter().flatten().all(|&ok| ok)),
        SCRIPT,
    );
}
