//! The std executor (`recourse::Executor`, public API only) on tokio's
//! paused clock under arbitrary policies and operations: attempts that
//! succeed, fail, hang or panic after arbitrary delays, calls dropped at
//! arbitrary points, hedging, per-attempt and overall timeouts, budgets
//! that refuse or panic, and a panicking observer beside a recording one.
//!
//! Checked for every call:
//!
//! - **observer order**: `on_start` first; every attempt the observer
//!   hears ended was launched before (`on_launch`), ends once, and each
//!   launch is followed by its end; exactly one end event (`on_success` or
//!   `on_failure`), last; a returned `Ok` is an `on_success`, an `Err` an
//!   `on_failure`; a dropped call ends `cancelled`;
//! - **the timeline equals the records**: the timeline's attempts are the
//!   records the observer heard, in order, and its verdict the end event's;
//! - **containment**: a panicking observer or budget never changes what
//!   the call returns (a budget's `decide` panic is a refusal,
//!   `panic_in_budget`);
//! - **missing pieces**: a budget the registry lacks refuses every first
//!   attempt and retry under `MissingBudgetMode::Deny` and lets them run
//!   under `AllowUnsafe`, each record saying `budget_not_found` and the
//!   timeline naming it; a key the provider lacks is refused (`no_policy`,
//!   nothing runs) under `MissingPolicyMode::Deny`, runs once under
//!   `Allow`, and under `Policy::DEFAULT` (at most 3 attempts, no hedge)
//!   under `Fallback`;
//! - **budgets back where they started**: every reservation of the ledger
//!   budget settled exactly once, and the concurrency budget counts no
//!   attempt, once every call has ended.
//!
//! Operation panics are not provoked: today they reach the observer as
//! `cancelled` (`known_defects.rs`).

#![allow(clippy::unwrap_used)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use recourse::budget::MissingBudgetMode;
use recourse::core_machine::budget::{BudgetRequest, Concurrency, Decision, Reservation};
use recourse::core_machine::policy::name;
use recourse::core_machine::Budget;
use recourse::observer::{AttemptRecord, CallStart, CallSummary};
use recourse::{
    AttemptInfo, BudgetRegistry, Executor, MissingPolicyMode, Observer, Policy, PolicyKey,
    StaticProvider,
};

const CASES: u32 = 2_000;
const SEED: u64 = 0xe8ec_0a11;

/// What one attempt does.
#[derive(Copy, Clone, Debug)]
enum Behaviour {
    Succeed(u64),
    Fail(u64),
    Hang,
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        3 => (0u64..80).prop_map(Behaviour::Succeed),
        5 => (0u64..80).prop_map(Behaviour::Fail),
        1 => Just(Behaviour::Hang),
    ]
}

#[derive(Clone, Debug)]
struct CallInput {
    /// Attempt `k` of the call behaves as `script[k % len]`.
    script: Vec<Behaviour>,
    /// Drop the call after this many milliseconds.
    drop_after: Option<u64>,
}

#[derive(Clone, Debug)]
struct Input {
    max_attempts: u32,
    per_attempt: Option<u64>,
    overall: Option<u64>,
    hedges: Option<(u32, u64)>,
    ledger_limit: u64,
    decide_panics_every: Option<u64>,
    settle_panics_every: Option<u64>,
    observer_panics: bool,
    /// `Some`: the ledger budget the policy names is not registered, and
    /// this mode decides.
    missing_budget: Option<MissingBudgetMode>,
    /// Every call whose index is a multiple of this asks for a key the
    /// provider lacks, under this mode.
    unknown_key: Option<(usize, MissingPolicyMode)>,
    calls: Vec<CallInput>,
}

fn input() -> impl Strategy<Value = Input> {
    let call = (
        prop::collection::vec(behaviour(), 1..6),
        prop::option::weighted(0.2, 0u64..200),
    )
        .prop_map(|(script, drop_after)| CallInput { script, drop_after });
    (
        1u32..5,
        prop::option::weighted(0.4, 5u64..100),
        prop::option::weighted(0.4, 20u64..400),
        prop::option::weighted(0.5, (1u32..4, 10u64..60)),
        prop_oneof![Just(u64::MAX), 0u64..20],
        prop::option::weighted(0.15, 1u64..6),
        prop::option::weighted(0.15, 1u64..6),
        prop::bool::weighted(0.3),
        prop::option::weighted(
            0.15,
            prop_oneof![
                Just(MissingBudgetMode::Deny),
                Just(MissingBudgetMode::AllowUnsafe)
            ],
        ),
        prop::option::weighted(
            0.2,
            (
                1usize..4,
                prop_oneof![
                    Just(MissingPolicyMode::Deny),
                    Just(MissingPolicyMode::Allow),
                    Just(MissingPolicyMode::Fallback)
                ],
            ),
        ),
        prop::collection::vec(call, 1..8),
    )
        .prop_map(
            |(
                max_attempts,
                per_attempt,
                overall,
                hedges,
                limit,
                dp,
                sp,
                op,
                missing_budget,
                unknown_key,
                calls,
            )| Input {
                max_attempts,
                per_attempt,
                overall,
                hedges,
                ledger_limit: limit,
                decide_panics_every: dp,
                settle_panics_every: sp,
                observer_panics: op,
                missing_budget,
                unknown_key,
                calls,
            },
        )
}

// ---------------------------------------------------------------------------
// Budgets
// ---------------------------------------------------------------------------

/// Allows `limit` attempts, one reservation each, and keeps the ledger;
/// `decide` or `settle` panic every so often (after their bookkeeping).
#[derive(Default)]
struct Ledger {
    limit: u64,
    decided: AtomicU64,
    settles: AtomicU64,
    decide_panics_every: Option<u64>,
    settle_panics_every: Option<u64>,
    /// Reservation → times settled.
    book: Mutex<HashMap<u64, u32>>,
}

impl Budget for Ledger {
    fn decide(&self, _: &BudgetRequest<'_>) -> Decision {
        let n = self.decided.fetch_add(1, Ordering::SeqCst);
        if self.decide_panics_every.is_some_and(|k| n % k == k - 1) {
            panic!("budget bug in decide");
        }
        if n >= self.limit {
            return Decision::DENY;
        }
        self.book.lock().unwrap().insert(n, 0);
        Decision::reserve(Reservation(n))
    }
    fn settle(&self, _: &AttemptRecord, r: Option<Reservation>, _: recourse::observer::Instant) {
        let r = r.expect("the ledger reserves for every allowed attempt").0;
        *self.book.lock().unwrap().entry(r).or_insert(100) += 1;
        let n = self.settles.fetch_add(1, Ordering::SeqCst);
        if self.settle_panics_every.is_some_and(|k| n % k == k - 1) {
            panic!("budget bug in settle");
        }
    }
}

struct ShareLedger(Arc<Ledger>);

impl Budget for ShareLedger {
    fn decide(&self, r: &BudgetRequest<'_>) -> Decision {
        self.0.decide(r)
    }
    fn settle(
        &self,
        rec: &AttemptRecord,
        res: Option<Reservation>,
        now: recourse::observer::Instant,
    ) {
        self.0.settle(rec, res, now);
    }
}

struct ShareConcurrency(Arc<Concurrency>);

impl Budget for ShareConcurrency {
    fn decide(&self, r: &BudgetRequest<'_>) -> Decision {
        self.0.decide(r)
    }
    fn settle(
        &self,
        rec: &AttemptRecord,
        res: Option<Reservation>,
        now: recourse::observer::Instant,
    ) {
        self.0.settle(rec, res, now);
    }
}

// ---------------------------------------------------------------------------
// Observers
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Heard {
    Start,
    Launch(AttemptInfo),
    Attempt(AttemptRecord),
    Success(CallSummary),
    Failure(CallSummary),
}

/// Records every event of the current call.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Heard>>>);

impl Recorder {
    fn take(&self) -> Vec<Heard> {
        core::mem::take(&mut *self.0.lock().unwrap())
    }
    fn push(&self, h: Heard) {
        self.0.lock().unwrap().push(h);
    }
}

impl Observer for Recorder {
    fn on_start(&self, _: PolicyKey<'_>, _: &CallStart) {
        self.push(Heard::Start);
    }
    fn on_launch(&self, _: PolicyKey<'_>, info: &AttemptInfo) {
        self.push(Heard::Launch(*info));
    }
    fn on_attempt(&self, _: PolicyKey<'_>, record: &AttemptRecord) {
        self.push(Heard::Attempt(*record));
    }
    fn on_success(&self, _: PolicyKey<'_>, s: &CallSummary) {
        self.push(Heard::Success(*s));
    }
    fn on_failure(&self, _: PolicyKey<'_>, s: &CallSummary) {
        self.push(Heard::Failure(*s));
    }
}

/// Panics on every event while `on` is set.
struct Panicky(Arc<AtomicBool>);

impl Panicky {
    fn maybe(&self) {
        assert!(!self.0.load(Ordering::SeqCst), "observer bug");
    }
}

impl Observer for Panicky {
    fn on_start(&self, _: PolicyKey<'_>, _: &CallStart) {
        self.maybe();
    }
    fn on_launch(&self, _: PolicyKey<'_>, _: &AttemptInfo) {
        self.maybe();
    }
    fn on_attempt(&self, _: PolicyKey<'_>, _: &AttemptRecord) {
        self.maybe();
    }
    fn on_success(&self, _: PolicyKey<'_>, _: &CallSummary) {
        self.maybe();
    }
    fn on_failure(&self, _: PolicyKey<'_>, _: &CallSummary) {
        self.maybe();
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

fn policy(i: &Input) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = i.max_attempts;
    p.retry.initial_backoff = Duration::from_millis(5);
    p.retry.timeout_per_attempt = i.per_attempt.map(Duration::from_millis);
    p.retry.overall_timeout = i.overall.map(Duration::from_millis);
    if let (Some(a), Some(o)) = (i.per_attempt, i.overall) {
        // Normalization keeps the per-attempt timeout within the overall.
        p.retry.timeout_per_attempt = Some(Duration::from_millis(a.min(o)));
    }
    p.retry.budget.name = name("retry.budget.name", "ledger").unwrap();
    if let Some((hedges, delay)) = i.hedges {
        p.hedge.enabled = true;
        p.hedge.max_hedges = hedges;
        p.hedge.hedge_delay = Duration::from_millis(delay);
        p.hedge.budget.name = name("hedge.budget.name", "hedges").unwrap();
    }
    p
}

/// Checks the events of one call; `returned`: `Some(ok)` when the call
/// returned, `None` when it was dropped.
fn check_events(heard: &[Heard], returned: Option<bool>) -> Result<(), String> {
    let Some(Heard::Start) = heard.first() else {
        return Err(format!("the first event is not on_start: {heard:?}"));
    };
    let ends: Vec<usize> = heard
        .iter()
        .enumerate()
        .filter(|(_, h)| matches!(h, Heard::Success(_) | Heard::Failure(_)))
        .map(|(i, _)| i)
        .collect();
    if ends != [heard.len() - 1] {
        return Err(format!("exactly one end event, last: {heard:?}"));
    }
    let mut launched: HashMap<u16, bool> = HashMap::new();
    for h in &heard[1..heard.len() - 1] {
        match h {
            Heard::Launch(info) => {
                if launched.insert(info.id.0, false).is_some() {
                    return Err(format!("attempt {:?} launched twice: {heard:?}", info.id));
                }
            }
            Heard::Attempt(r) => {
                // A refused attempt is recorded without a launch.
                if r.budget_allowed {
                    match launched.get_mut(&r.info.id.0) {
                        Some(ended @ false) => *ended = true,
                        _ => {
                            return Err(format!(
                                "attempt {:?} ended without a launch, or twice: {heard:?}",
                                r.info.id
                            ))
                        }
                    }
                }
            }
            _ => return Err(format!("an event between start and end: {h:?}")),
        }
    }
    if launched.values().any(|ended| !ended) {
        return Err(format!("a launched attempt never ended: {heard:?}"));
    }
    let end = &heard[heard.len() - 1];
    match (returned, end) {
        (Some(true), Heard::Success(_)) | (Some(false), Heard::Failure(_)) => Ok(()),
        (None, Heard::Failure(s)) if s.reason() == Some("cancelled") => Ok(()),
        _ => Err(format!(
            "returned {returned:?} (None: dropped), observer heard {end:?}"
        )),
    }
}

/// What the runs did, so that passing means something.
#[derive(Default, Debug)]
struct Stats {
    ok: u64,
    err: u64,
    dropped: u64,
    hedges: u64,
    refused: u64,
    panic_in_budget: u64,
    missing_budget: u64,
    missing_policy: u64,
}

/// What the missing-piece modes promise, for a call that returned.
fn check_modes(
    i: &Input,
    unknown: bool,
    heard: &[Heard],
    timeline: &recourse::Timeline,
) -> Result<(), String> {
    let launches: Vec<&AttemptInfo> = heard
        .iter()
        .filter_map(|h| match h {
            Heard::Launch(info) => Some(info),
            _ => None,
        })
        .collect();
    let records = || {
        heard.iter().filter_map(|h| match h {
            Heard::Attempt(r) => Some(r),
            _ => None,
        })
    };
    let end = match heard.last() {
        Some(Heard::Success(s) | Heard::Failure(s)) => *s,
        _ => return Err("no end event".into()),
    };
    if unknown {
        let mode = i.unknown_key.map(|(_, m)| m).unwrap_or_default();
        return match mode {
            MissingPolicyMode::Deny
                if !launches.is_empty() || end.reason() != Some("no_policy") =>
            {
                Err(format!("a missing policy with mode deny ran: {heard:?}"))
            }
            MissingPolicyMode::Allow if launches.len() > 1 => Err(format!(
                "a missing policy with mode allow runs the operation once: {heard:?}"
            )),
            MissingPolicyMode::Fallback
                if launches.len() > 3 || launches.iter().any(|l| l.is_hedge) =>
            {
                Err(format!(
                    "a missing policy with mode fallback runs Policy::DEFAULT: {heard:?}"
                ))
            }
            _ => Ok(()),
        };
    }
    match i.missing_budget {
        // Fail closed: no first attempt or retry runs.
        Some(MissingBudgetMode::Deny) if launches.iter().any(|l| !l.is_hedge) => Err(format!(
            "a missing budget with mode deny let an attempt run: {heard:?}"
        )),
        Some(mode) => {
            // Every first attempt and retry says the budget was missing,
            // and the timeline names the mode.
            let wrong =
                records().find(|r| !r.info.is_hedge && r.budget_reason != "budget_not_found");
            if let Some(r) = wrong {
                return Err(format!("{mode:?}: an attempt's budget reason is {r:?}"));
            }
            if timeline.attribute("budget_error") != Some("budget_not_found") {
                return Err(format!(
                    "{mode:?}: the timeline's attributes {:?} do not name the missing budget",
                    timeline.attributes
                ));
            }
            Ok(())
        }
        None => Ok(()),
    }
}

fn run(i: &Input, stats: &mut Stats) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let ledger = Arc::new(Ledger {
            limit: i.ledger_limit,
            decide_panics_every: i.decide_panics_every,
            settle_panics_every: i.settle_panics_every,
            ..Ledger::default()
        });
        let hedges = Arc::new(Concurrency::new(500, 2));
        let recorder = Recorder::default();
        let panicky = Arc::new(AtomicBool::new(false));
        let mut builder = Executor::builder()
            .provider(
                StaticProvider::builder()
                    .policy("svc.Get", policy(i))
                    .map_err(|e| e.to_string())?
                    .build(),
            )
            .budgets({
                let r = BudgetRegistry::new().with("hedges", ShareConcurrency(hedges.clone()));
                if i.missing_budget.is_some() {
                    r
                } else {
                    r.with("ledger", ShareLedger(ledger.clone()))
                }
            })
            .missing_budget_mode(i.missing_budget.unwrap_or_default())
            .missing_policy_mode(i.unknown_key.map_or_else(Default::default, |(_, m)| m))
            .observer(recorder.clone());
        if i.observer_panics {
            builder = builder.observer(Panicky(panicky.clone()));
        }
        let exec = builder.build();
        for (n, c) in i.calls.iter().enumerate() {
            panicky.store(n % 2 == 1, Ordering::SeqCst);
            let script = c.script.clone();
            let op = move |info: AttemptInfo| {
                let b = script[usize::from(info.id.0) % script.len()];
                async move {
                    match b {
                        Behaviour::Succeed(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Ok(info.id.0)
                        }
                        Behaviour::Fail(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Err("failed")
                        }
                        Behaviour::Hang => core::future::pending().await,
                    }
                }
            };
            let unknown = i.unknown_key.is_some_and(|(every, _)| n % every == 0);
            let key = if unknown { "svc.Unknown" } else { "svc.Get" };
            let call = exec.call_with_timeline(key, op);
            // A call whose attempts hang with no timeout is dropped after a
            // virtual minute.
            let drop_after = c.drop_after.unwrap_or(60_000);
            let returned = tokio::time::timeout(Duration::from_millis(drop_after), call)
                .await
                .ok();
            let heard = recorder.take();
            for h in &heard {
                match h {
                    Heard::Launch(info) if info.is_hedge => stats.hedges += 1,
                    Heard::Attempt(r) if !r.budget_allowed => {
                        stats.refused += 1;
                        if r.budget_reason == "panic_in_budget" {
                            stats.panic_in_budget += 1;
                        }
                    }
                    _ => {}
                }
            }
            let ctx = |e: String| format!("call {n}: {e}");
            let Some((result, timeline)) = returned else {
                // Dropped.
                stats.dropped += 1;
                check_events(&heard, None).map_err(ctx)?;
                continue;
            };
            check_events(&heard, Some(result.is_ok())).map_err(ctx)?;
            check_modes(i, unknown, &heard, &timeline).map_err(ctx)?;
            if unknown {
                stats.missing_policy += 1;
            } else if i.missing_budget.is_some() {
                stats.missing_budget += 1;
            }
            if result.is_ok() {
                stats.ok += 1;
            } else {
                stats.err += 1;
            }
            let records: Vec<AttemptRecord> = heard
                .iter()
                .filter_map(|h| match h {
                    Heard::Attempt(r) => Some(*r),
                    _ => None,
                })
                .collect();
            if timeline.attempts != records {
                return Err(ctx(format!(
                    "timeline attempts {:?} differ from the records heard {records:?}",
                    timeline.attempts
                )));
            }
            let summary = match heard.last() {
                Some(Heard::Success(s) | Heard::Failure(s)) => s,
                _ => unreachable!("checked above"),
            };
            if timeline.verdict != summary.verdict || summary.attempts as usize > records.len() {
                return Err(ctx(format!(
                    "timeline verdict {:?}, summary {summary:?}, {} records",
                    timeline.verdict,
                    records.len()
                )));
            }
        }
        // Every call has ended: the budgets are back where they started.
        let book = ledger.book.lock().unwrap();
        if let Some((r, n)) = book.iter().find(|(_, n)| **n != 1) {
            return Err(format!("ledger reservation {r} settled {n} times"));
        }
        if (hedges.active(), hedges.extra_in_flight()) != (0, 0) {
            return Err(format!(
                "the concurrency budget still counts {} active, {} extra",
                hedges.active(),
                hedges.extra_in_flight()
            ));
        }
        Ok(())
    })
}

#[test]
fn the_executor_keeps_its_contracts_on_a_virtual_clock() {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = CASES;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(SEED);
    }
    c.failure_persistence = None;
    let mut runner = TestRunner::new(c);
    // Contained panics print through the panic hook; keep the output short.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let stats = core::cell::RefCell::new(Stats::default());
    let result = runner.run(&input(), |i| {
        run(&i, &mut stats.borrow_mut()).map_err(TestCaseError::fail)
    });
    std::panic::set_hook(hook);
    if let Err(e) = result {
        panic!("{e}");
    }
    let s = stats.into_inner();
    eprintln!("{s:?}");
    assert!(
        s.ok > 100
            && s.err > 100
            && s.dropped > 50
            && s.hedges > 100
            && s.refused > 50
            && s.panic_in_budget > 10
            && s.missing_budget > 100
            && s.missing_policy > 100,
        "the runs must succeed, fail, drop, hedge, refuse, contain panics and meet missing \
         budgets and policies: {s:?}"
    );
}
