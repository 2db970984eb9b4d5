//! Many hedged calls through the executor on a real runtime: counting what
//! the operations saw and what the executor reported, and checking
//! afterwards that every budget is back to its initial state. Shared by
//! `tests/hedging_tokio.rs` and `tests/cancellation_soak.rs`.
//!
//! - [`Attempt`] lives inside one attempt future: it counts the future
//!   in its call's [`CallCounts`] and in the run's [`Alive`] from the
//!   operation call that made it until it is dropped, and whether it was
//!   dropped unfinished (a hedge-race loser, or dropped with its call).
//! - [`Budgets`] holds the run's budgets and makes its executor: two keys,
//!   [`KEYS`]; hedges pass a [`Concurrency`] budget ([`HedgeProbe`]), first
//!   attempts and retries a [`TokenBucket`] (`svc.Get`) or a [`RetryRatio`]
//!   (`svc.List`), all registered with `register_shared` so the test keeps
//!   them.
//! - [`Watch`] is an [`Observer`] that counts records and budget decisions;
//!   [`Watch::check`] holds them against what the operations saw ([`Seen`]).
//! - [`Budgets::check`] asserts every budget is back to its initial state.
//!   Budgets never read a clock, so that is asked at instants after the
//!   run: a bucket full again exactly when its refill says, a ratio's
//!   window expired down to its reserve, and each admitting exactly what a
//!   fresh budget admits ([`admits`]).

use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::Arc;

use recourse::core_machine::budget::{Budget, BudgetRequest, Concurrency, RetryRatio, TokenBucket};
use recourse::observer::{
    AttemptId, AttemptKind, AttemptRecord, BudgetDecision, CallStart, CallSummary, Instant,
};
use recourse::{
    reason, AttemptInfo, BudgetRegistry, Executor, Observer, Outcome, Policy, PolicyKey,
    StaticProvider,
};

/// The keys of a run: `svc.Get`'s first attempts and retries pass the token
/// bucket, `svc.List`'s the retry ratio.
pub const KEYS: [&str; 2] = ["svc.Get", "svc.List"];
/// The name of the hedge budget.
pub const HEDGES: &str = "hedges";
/// The names of the retry budgets, by key.
pub const RETRY_BUDGETS: [&str; 2] = ["get-attempts", "list-retries"];

/// Adds one to `c`.
pub fn bump(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::SeqCst);
}

/// `c`'s value.
pub fn get(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------
// Attempt futures, counted
// ---------------------------------------------------------------------------

/// Attempt futures of a whole run not yet dropped, and the most at once.
#[derive(Debug, Default)]
pub struct Alive {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl Alive {
    /// Attempt futures not yet dropped.
    pub fn live(&self) -> usize {
        get(&self.live)
    }

    /// The most attempt futures alive at once.
    pub fn peak(&self) -> usize {
        get(&self.peak)
    }
}

/// One call's attempts, as its operation saw them.
#[derive(Debug, Default)]
pub struct CallCounts {
    live: AtomicUsize,
    primaries: AtomicUsize,
    hedges: AtomicUsize,
    primaries_dropped: AtomicUsize,
    hedges_dropped: AtomicUsize,
    dropped_ready: AtomicUsize,
}

impl CallCounts {
    /// Attempt futures of this call not yet dropped.
    pub fn live(&self) -> usize {
        get(&self.live)
    }

    /// First attempts and retries launched (the operation was called).
    pub fn primaries(&self) -> usize {
        get(&self.primaries)
    }

    /// Hedges launched.
    pub fn hedges(&self) -> usize {
        get(&self.hedges)
    }

    /// First attempts and retries dropped before they completed.
    pub fn primaries_dropped(&self) -> usize {
        get(&self.primaries_dropped)
    }

    /// Hedges dropped before they completed.
    pub fn hedges_dropped(&self) -> usize {
        get(&self.hedges_dropped)
    }

    /// Attempts dropped unfinished at or after the instant their result was
    /// due ([`Attempt::due_at`]): their timer had fired, but nobody polled
    /// them again to see it.
    pub fn dropped_ready(&self) -> usize {
        get(&self.dropped_ready)
    }
}

/// Lives inside one attempt future: counted live from the operation call
/// that made the future until the future is dropped, and counted as dropped
/// early unless the future ran to completion.
#[derive(Debug)]
pub struct Attempt {
    call: Arc<CallCounts>,
    alive: Arc<Alive>,
    is_hedge: bool,
    completed: bool,
    due: Option<std::time::Instant>,
}

impl Attempt {
    /// Counts one attempt of `call` (a hedge or not) as launched and alive.
    pub fn new(call: &Arc<CallCounts>, alive: &Arc<Alive>, is_hedge: bool) -> Self {
        bump(&call.live);
        let now_alive = alive.live.fetch_add(1, Ordering::SeqCst) + 1;
        alive.peak.fetch_max(now_alive, Ordering::SeqCst);
        bump(if is_hedge {
            &call.hedges
        } else {
            &call.primaries
        });
        Self {
            call: Arc::clone(call),
            alive: Arc::clone(alive),
            is_hedge,
            completed: false,
            due: None,
        }
    }

    /// The attempt's result is ready at `due` (its timer fires then).
    #[must_use]
    pub fn due_at(mut self, due: std::time::Instant) -> Self {
        self.due = Some(due);
        self
    }

    /// The future ran to completion. (A method, so that the async block
    /// captures the whole guard: assigning `attempt.completed` there would
    /// capture only that `bool`, and the guard would be dropped at once.)
    pub fn complete(&mut self) {
        self.completed = true;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.completed {
            bump(if self.is_hedge {
                &self.call.hedges_dropped
            } else {
                &self.call.primaries_dropped
            });
            if self.due.is_some_and(|due| std::time::Instant::now() >= due) {
                bump(&self.call.dropped_ready);
            }
        }
        self.call.live.fetch_sub(1, Ordering::SeqCst);
        self.alive.live.fetch_sub(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// What the executor reported
// ---------------------------------------------------------------------------

/// The counts a [`Watch`] keeps.
#[derive(Debug, Default)]
pub struct Watched {
    /// `on_start`s.
    pub starts: AtomicUsize,
    /// `on_success`es.
    pub successes: AtomicUsize,
    /// `on_failure`s.
    pub failures: AtomicUsize,
    /// Failures with reason `cancelled`.
    pub cancelled_calls: AtomicUsize,
    /// Records of attempts that ran (the budget allowed them).
    pub ran: AtomicUsize,
    /// Records of attempts a budget refused (they never ran).
    pub refused: AtomicUsize,
    /// Records of attempts recourse cut as hedge-race losers.
    pub cut_losers: AtomicUsize,
    /// Records of attempts cut because their call was dropped.
    pub cut_cancelled: AtomicUsize,
    /// Records of attempts cut for any other reason.
    pub cut_other: AtomicUsize,
    /// Decisions of the hedge budget on hedges: `[allowed, denied]`.
    pub hedges: [AtomicUsize; 2],
    /// Decisions of each retry budget on first attempts and retries:
    /// `[allowed, denied]`, in the order of [`RETRY_BUDGETS`].
    pub retries: [[AtomicUsize; 2]; 2],
    /// Decisions naming a budget or kind the run does not expect.
    pub other_decisions: AtomicUsize,
}

/// An observer counting every call's events; clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    /// The counts.
    pub counts: Arc<Watched>,
}

/// What the operations of a run saw, to hold a [`Watch`] against.
#[derive(Debug, Default)]
pub struct Seen {
    /// Calls polled at least once (a call never polled never starts).
    pub started: usize,
    /// Calls that returned `Ok`.
    pub ok: usize,
    /// Calls that started and were dropped before they returned.
    pub dropped: usize,
    /// Calls that returned `BudgetDenied`.
    pub budget_denied: usize,
    /// First attempts and retries launched, by key.
    pub primaries: [usize; 2],
    /// Hedges launched.
    pub hedges: usize,
    /// Attempts dropped unfinished in calls that returned (race losers).
    pub losers: usize,
    /// Attempts dropped unfinished with their call.
    pub cancelled_attempts: usize,
}

impl Watch {
    /// Denials of every budget, hedges included.
    pub fn denied(&self) -> usize {
        let w = &self.counts;
        get(&w.hedges[1]) + get(&w.retries[0][1]) + get(&w.retries[1][1])
    }

    /// Asserts the executor reported exactly what the operations saw: one
    /// start and one end per started call, one record per attempt that ran
    /// and per attempt refused, losers and attempts dropped with their call
    /// recorded as such, and one admission per launched attempt.
    pub fn check(&self, seen: &Seen) {
        let w = &self.counts;
        let launched = seen.primaries[0] + seen.primaries[1] + seen.hedges;
        assert_eq!(get(&w.starts), seen.started, "one start per call polled");
        assert_eq!(
            get(&w.successes) + get(&w.failures),
            seen.started,
            "one end per call started"
        );
        assert_eq!(get(&w.successes), seen.ok);
        assert_eq!(get(&w.cancelled_calls), seen.dropped);
        assert_eq!(get(&w.ran), launched, "one record per attempt that ran");
        assert_eq!(
            get(&w.cut_losers),
            seen.losers,
            "one hedge_loser record per loser"
        );
        assert_eq!(
            get(&w.cut_cancelled),
            seen.cancelled_attempts,
            "one cancelled record per attempt dropped with its call"
        );
        assert_eq!(
            get(&w.cut_other),
            0,
            "no attempt was cut for another reason"
        );
        assert_eq!(get(&w.other_decisions), 0);
        assert_eq!(get(&w.hedges[0]), seen.hedges, "every admitted hedge ran");
        assert_eq!(get(&w.retries[0][0]), seen.primaries[0]);
        assert_eq!(get(&w.retries[1][0]), seen.primaries[1]);
        assert_eq!(
            get(&w.refused),
            self.denied(),
            "one record per refused attempt"
        );
        assert_eq!(
            get(&w.retries[0][1]) + get(&w.retries[1][1]),
            seen.budget_denied
        );
    }
}

impl Observer for Watch {
    fn on_start(&self, _: PolicyKey<'_>, _: &CallStart) {
        bump(&self.counts.starts);
    }

    fn on_attempt(&self, _: PolicyKey<'_>, r: &AttemptRecord) {
        let w = &self.counts;
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
        bump(&self.counts.successes);
    }

    fn on_failure(&self, _: PolicyKey<'_>, s: &CallSummary) {
        bump(&self.counts.failures);
        if s.reason() == Some(reason::CANCELLED) {
            bump(&self.counts.cancelled_calls);
        }
    }

    fn on_budget_decision(&self, _: PolicyKey<'_>, d: &BudgetDecision<'_>) {
        let w = &self.counts;
        let pair = match d.kind {
            AttemptKind::Hedge if d.budget == HEDGES => &w.hedges,
            AttemptKind::Initial | AttemptKind::Retry => {
                match RETRY_BUDGETS.iter().position(|b| *b == d.budget) {
                    Some(i) => &w.retries[i],
                    None => return bump(&w.other_decisions),
                }
            }
            AttemptKind::Hedge => return bump(&w.other_decisions),
        };
        bump(&pair[usize::from(!d.allowed)]);
    }
}

// ---------------------------------------------------------------------------
// Budgets, probed directly
// ---------------------------------------------------------------------------

/// How many attempts of `kind` `budget` admits at `now`, one after another
/// with none settling (at most `max`); then settles them all.
pub fn admits(budget: &dyn Budget, kind: AttemptKind, now: Instant, max: u32) -> u32 {
    let is_hedge = kind == AttemptKind::Hedge;
    let mut held = Vec::new();
    for n in 0..max {
        let attempt = AttemptInfo {
            id: AttemptId(u16::try_from(n).unwrap_or(u16::MAX)),
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
    u32::try_from(admitted).unwrap_or(u32::MAX)
}

/// Whole milliseconds of `t` since the clock's epoch (budgets credit time
/// per whole millisecond).
pub fn whole_ms(t: Instant) -> u64 {
    t.as_nanos() / 1_000_000
}

/// A [`Concurrency`] budget that only hedges consult (first attempts and
/// retries go to a retry budget), so its active count is its extra count
/// and its limit is always its minimum; and what hedges saw of it.
#[derive(Debug)]
pub struct HedgeProbe {
    /// The budget, to register with `register_shared`.
    pub budget: Arc<Concurrency>,
    limit: u32,
    max_seen: AtomicUsize,
    saw_none: AtomicUsize,
}

impl HedgeProbe {
    /// A budget allowing `limit` hedges in flight.
    pub fn new(limit: u32) -> Self {
        Self {
            budget: Arc::new(Self::fresh(limit)),
            limit,
            max_seen: AtomicUsize::new(0),
            saw_none: AtomicUsize::new(0),
        }
    }

    fn fresh(limit: u32) -> Concurrency {
        Concurrency::new(200, limit)
    }

    /// Called by a hedge as its operation starts: the hedge holds a
    /// reservation, so the budget shows at least one hedge in flight.
    pub fn hedge_started(&self) {
        let in_flight = self.budget.extra_in_flight();
        self.max_seen.fetch_max(in_flight, Ordering::SeqCst);
        if in_flight == 0 {
            bump(&self.saw_none);
        }
    }

    /// The most hedges in flight a starting hedge saw.
    pub fn max_seen(&self) -> usize {
        get(&self.max_seen)
    }

    /// Asserts the limit was kept, every hedge held a reservation, nothing
    /// is in flight now, and the budget admits at `now` exactly what a
    /// fresh one admits.
    pub fn check(&self, now: Instant) {
        let (b, limit) = (&*self.budget, self.limit);
        let max_seen = self.max_seen();
        assert!(
            max_seen <= limit as usize,
            "{max_seen} hedges in flight, limit {limit}"
        );
        assert_eq!(
            get(&self.saw_none),
            0,
            "a hedge ran without its reservation"
        );
        assert_eq!(
            (b.active(), b.extra_in_flight()),
            (0, 0),
            "the hedge budget still counts attempts in flight"
        );
        let fresh = Self::fresh(limit);
        assert_eq!(b.limit(), fresh.limit());
        assert_eq!(admits(b, AttemptKind::Hedge, now, 1000), limit);
        assert_eq!(admits(&fresh, AttemptKind::Hedge, now, 1000), limit);
        assert_eq!((b.active(), b.extra_in_flight()), (0, 0));
    }
}

/// Checks a token bucket that `spent_tokens` attempts (one token each, all
/// of which ran) spent between `t_start` and `t_end`: every spend was for
/// good, and the bucket is full again — the same as a fresh one — exactly
/// when its refill says. Returns how many milliseconds after `t_end` that is.
pub fn check_bucket(
    bucket: &TokenBucket,
    spent_tokens: u64,
    t_start: Instant,
    t_end: Instant,
) -> u64 {
    let milli = |tokens: u64| tokens * 1000;
    let capacity = milli(u64::from(bucket.capacity()));
    let rate = u64::from(bucket.refill_per_second());
    let (start_ms, end_ms) = (whole_ms(t_start), whole_ms(t_end));
    let short = capacity - bucket.available_milli(t_end);
    let spent = milli(spent_tokens);
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
    let fresh = TokenBucket::new(bucket.capacity(), bucket.refill_per_second());
    for at in [full_at, full_at + Duration::from_secs(3600)] {
        assert_eq!(bucket.available_milli(at), fresh.available_milli(at));
    }
    to_full_ms
}

/// Checks a retry ratio made by `RetryRatio::new(ttl, reserve_per_sec,
/// permille)` (a `ttl` of whole seconds): one window after `t_end` every
/// deposit and withdrawal has expired, leaving the reserve alone, as in a
/// fresh budget, which admits exactly as many retries. Returns its balance
/// at `t_end` and one window later.
pub fn check_ratio(
    ratio: &RetryRatio,
    (ttl, reserve_per_sec, permille): (Duration, u32, u32),
    t_end: Instant,
) -> (i64, i64) {
    let reserve = i64::from(reserve_per_sec) * i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let in_use = ratio.balance(t_end);
    assert!(in_use > reserve, "the window held no deposits: {in_use}");
    let expired = t_end + ttl;
    let fresh = RetryRatio::new(ttl, reserve_per_sec, permille);
    let back = ratio.balance(expired);
    assert_eq!(back, reserve);
    assert_eq!(fresh.balance(expired), reserve);
    assert_eq!(
        admits(ratio, AttemptKind::Retry, expired, 1000),
        admits(&fresh, AttemptKind::Retry, expired, 1000),
    );
    (in_use, back)
}

/// The budgets of a run, kept by the test.
#[derive(Debug)]
pub struct Budgets {
    /// Hedges' budget.
    pub hedges: Arc<HedgeProbe>,
    /// `svc.Get`'s first attempts and retries.
    pub bucket: Arc<TokenBucket>,
    /// `svc.List`'s first attempts and retries.
    pub ratio: Arc<RetryRatio>,
    ratio_params: (Duration, u32, u32),
}

impl Budgets {
    /// `max_hedges_in_flight` hedges at once; a bucket of `(capacity,
    /// refill_per_second)`; a ratio of `(ttl, reserve_per_sec, permille)`.
    pub fn new(max_hedges_in_flight: u32, bucket: (u32, u32), ratio: (Duration, u32, u32)) -> Self {
        Self {
            hedges: Arc::new(HedgeProbe::new(max_hedges_in_flight)),
            bucket: Arc::new(TokenBucket::new(bucket.0, bucket.1)),
            ratio: Arc::new(RetryRatio::new(ratio.0, ratio.1, ratio.2)),
            ratio_params: ratio,
        }
    }

    /// An executor with these budgets, running `policies[i]` for `KEYS[i]`
    /// (each names its budgets: [`HEDGES`], [`RETRY_BUDGETS`]) with seeded
    /// jitter, and the [`Watch`] that hears it.
    pub fn executor(&self, policies: [Policy; 2], seed: u64) -> (Executor, Watch) {
        let mut budgets = BudgetRegistry::new();
        budgets.register_shared(HEDGES, self.hedges.budget.clone());
        budgets.register_shared(RETRY_BUDGETS[0], self.bucket.clone());
        budgets.register_shared(RETRY_BUDGETS[1], self.ratio.clone());
        let mut provider = StaticProvider::builder();
        for (key, policy) in KEYS.into_iter().zip(policies) {
            provider = provider.policy(key, policy).expect("a valid policy");
        }
        let watch = Watch::default();
        let exec = Executor::builder()
            .provider(provider.build())
            .budgets(budgets)
            .observer(watch.clone())
            .seed(seed)
            .build();
        (exec, watch)
    }

    /// Asserts every budget is back to its initial state after a run from
    /// `t_start` to `t_end` in which `svc.Get` launched `bucket_spent`
    /// first attempts and retries (see [`HedgeProbe::check`],
    /// [`check_bucket`], [`check_ratio`]); returns a line saying how far
    /// each was from it at `t_end`.
    pub fn check(&self, bucket_spent: u64, t_start: Instant, t_end: Instant) -> String {
        self.hedges.check(t_end);
        let to_full_ms = check_bucket(&self.bucket, bucket_spent, t_start, t_end);
        let (in_use, back) = check_ratio(&self.ratio, self.ratio_params, t_end);
        let (ttl, reserve_per_sec, _) = self.ratio_params;
        let reserve = u64::from(reserve_per_sec) * ttl.as_secs();
        format!(
            "hedges active {} extra {}; svc.Get bucket {}/{} tokens at the end, full {to_full_ms} \
             ms later; svc.List ratio balance {in_use} at the end, {back} one window later \
             (reserve {reserve})",
            self.hedges.budget.active(),
            self.hedges.budget.extra_in_flight(),
            self.bucket.available(t_end),
            self.bucket.capacity(),
        )
    }
}
