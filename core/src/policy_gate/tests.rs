//! Tests of `policy_gate.rs`.

use core::cell::Cell;
use std::vec::Vec;

use super::*;
use crate::amplification::AmplificationLedger;
use crate::breaker::{CircuitBreaker, Permit};
use crate::budget::{Budget, TokenBucket};
use crate::machine::{Action, CallMachine, Event, Limits};
use crate::policy::name;
use crate::verdict::Cause;

const KEY: PolicyKey<'static> = PolicyKey::new("svc", "Gate");

fn ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

/// Budgets by name, one breaker, and what the gate told them.
#[derive(Default)]
struct Parts<'a> {
    budgets: Vec<(&'static str, &'a dyn Budget)>,
    missing_allows: bool,
    breaker: Option<CircuitBreaker>,
    events: Vec<(&'static str, bool, bool, &'static str)>,
    settled: Vec<(AttemptId, Instant)>,
    recorded: Vec<(CallResult, Instant)>,
    latencies: Vec<Duration>,
    quantile: Option<Duration>,
    ledger: AmplificationLedger,
}

impl<'a> GateParts for Parts<'a> {
    type Budget = &'a dyn Budget;
    type Permit = Permit;

    fn budget(&mut self, name: &str, _: AttemptKind) -> Option<&'a dyn Budget> {
        self.budgets
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
    }
    fn missing_budget_allows(&self) -> bool {
        self.missing_allows
    }
    fn decide(&mut self, budget: &'a dyn Budget, request: &BudgetRequest<'_>) -> Decision {
        budget.decide(request)
    }
    fn settle(
        &mut self,
        budget: &'a dyn Budget,
        record: &AttemptRecord,
        reservation: Option<Reservation>,
        now: Instant,
    ) {
        self.settled.push((record.info.id, now));
        budget.settle(record, reservation, now);
    }
    fn admit_call(
        &mut self,
        _: PolicyKey<'_>,
        _: &CircuitPolicy,
        now: Instant,
    ) -> Result<Option<Permit>, Refusal> {
        let Some(b) = self.breaker.as_mut() else {
            return Ok(None);
        };
        b.admit(now).map(Some)
    }
    fn is_probe(permit: &Permit) -> bool {
        permit.is_probe()
    }
    fn record_call(&mut self, _: PolicyKey<'_>, permit: Permit, result: CallResult, now: Instant) {
        self.recorded.push((result, now));
        if let Some(b) = self.breaker.as_mut() {
            b.record(permit, result, now);
        }
    }
    fn latency_quantile(&mut self, _: PolicyKey<'_>, _: u32, _: Instant) -> Option<Duration> {
        self.quantile
    }
    fn record_latency(&mut self, _: PolicyKey<'_>, latency: Duration, _: Instant) {
        self.latencies.push(latency);
    }
    fn amplification_allows(
        &mut self,
        _: PolicyKey<'_>,
        policy: &AmplificationPolicy,
        now: Instant,
    ) -> bool {
        self.ledger.allows_extra(policy, now)
    }
    fn amplification_record(&mut self, _: PolicyKey<'_>, kind: AttemptKind, now: Instant) {
        self.ledger.record(kind, now);
    }
    fn budget_decided(&mut self, _: PolicyKey<'_>, e: &BudgetEvent<'_>) {
        let budget = if e.budget == "r" { "r" } else { "other" };
        self.events.push((budget, e.found, e.allowed, e.reason));
    }
}

/// Counts decisions and settlements.
#[derive(Default)]
struct Counting {
    decided: Cell<u32>,
    settled: Cell<u32>,
}

impl Budget for Counting {
    fn decide(&self, _: &BudgetRequest<'_>) -> Decision {
        self.decided.set(self.decided.get() + 1);
        Decision::reserve(Reservation(7))
    }
    fn settle(&self, _: &AttemptRecord, reservation: Option<Reservation>, _: Instant) {
        assert_eq!(reservation, Some(Reservation(7)));
        self.settled.set(self.settled.get() + 1);
    }
}

fn hedged(retry: &str, hedge: &str) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.budget.name = name("retry.budget.name", retry).unwrap();
    p.hedge.enabled = true;
    p.hedge.max_hedges = 1;
    p.hedge.hedge_delay = Duration::from_millis(10);
    p.hedge.budget.name = name("hedge.budget.name", hedge).unwrap();
    p.normalize().unwrap().policy
}

/// Drains `m` and returns the actions up to the first wait or finish.
fn drain<G: Gate>(m: &mut CallMachine, gate: &mut G) -> Vec<Action> {
    let mut out = Vec::new();
    for _ in 0..32 {
        let a = m.poll(gate);
        out.push(a);
        if matches!(
            a,
            Action::Wait { .. } | Action::AwaitAttempts | Action::Finish(_)
        ) {
            return out;
        }
    }
    panic!("no wait in 32 actions: {out:?}");
}

fn machine(policy: &Policy) -> CallMachine {
    CallMachine::new(policy, Limits::DEFAULT, fastrand::Rng::with_seed(1))
}

#[test]
fn each_kind_charges_its_own_budget_and_every_reservation_is_settled_once() {
    let (r, h) = (Counting::default(), Counting::default());
    let policy = hedged("r", "h");
    let parts = Parts {
        budgets: std::vec![("r", &r as &dyn Budget), ("h", &h)],
        ..Parts::default()
    };
    let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, Trigger::parse(""), parts);
    let mut m = machine(&policy);
    m.handle(Event::Start { now: ms(0) });
    let a = drain(&mut m, &mut gate);
    assert!(
        matches!(a[0], Action::Launch(i) if i.id == AttemptId(0)),
        "{a:?}"
    );
    m.handle(Event::Tick { now: ms(10) });
    let a = drain(&mut m, &mut gate);
    assert!(matches!(a[0], Action::Launch(i) if i.is_hedge), "{a:?}");
    assert_eq!(gate.held(), 2);
    m.handle(Event::AttemptFinished {
        id: AttemptId(1),
        outcome: Outcome::SUCCESS,
        now: ms(14),
    });
    let a = drain(&mut m, &mut gate);
    assert!(matches!(
        a.last(),
        Some(Action::Finish(Verdict::Success(AttemptId(1))))
    ));
    assert_eq!((r.decided.get(), r.settled.get()), (1, 1));
    assert_eq!((h.decided.get(), h.settled.get()), (1, 1));
    assert_eq!(gate.held(), 0);
    let p = gate.parts();
    assert_eq!(
        p.events,
        [
            ("r", true, true, "allowed"),
            ("other", true, true, "allowed")
        ]
    );
    // Settled at the machine's instants: the winner at its end, the
    // loser when it was cancelled.
    assert_eq!(p.settled, [(AttemptId(1), ms(14)), (AttemptId(0), ms(14))]);
    // Only the attempt that ran to completion is a latency sample
    // (a fixed-delay trigger reads none, so none is recorded at all).
    assert!(p.latencies.is_empty());
}

#[test]
fn a_budget_that_is_not_there_is_reported_and_refused_unless_allowed() {
    let mut policy = Policy::DEFAULT;
    policy.retry.budget.name = name("retry.budget.name", "r").unwrap();
    for allows in [false, true] {
        let parts = Parts {
            missing_allows: allows,
            ..Parts::default()
        };
        let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, None, parts);
        let mut m = machine(&policy);
        m.handle(Event::Start { now: ms(0) });
        let a = drain(&mut m, &mut gate);
        assert_eq!(
            gate.parts().events,
            [("r", false, allows, BUDGET_NOT_FOUND)]
        );
        if allows {
            assert!(matches!(a[0], Action::Launch(_)), "{a:?}");
            assert_eq!(gate.held(), 0, "nothing reserved");
        } else {
            assert!(matches!(a[0], Action::Record(r) if r.budget_reason == BUDGET_NOT_FOUND));
            assert!(matches!(
                a.last(),
                Some(Action::Finish(Verdict::Failure {
                    cause: Cause::BudgetDenied,
                    ..
                }))
            ));
        }
    }
}

#[test]
fn the_breaker_refuses_an_open_circuit_hears_every_call_and_its_probe_never_hedges() {
    let mut policy = hedged("", "");
    policy.circuit.enabled = true;
    policy.circuit.threshold = 1;
    policy.circuit.cooldown = Duration::from_secs(1);
    let mut parts = Parts {
        breaker: Some(CircuitBreaker::new(policy.circuit.clone())),
        ..Parts::default()
    };
    // Call 1: non-retryable failure at 5 ms opens the circuit.
    let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, Trigger::parse(""), parts);
    let mut m = machine(&policy);
    m.handle(Event::Start { now: ms(0) });
    let _ = drain(&mut m, &mut gate);
    m.handle(Event::AttemptFinished {
        id: AttemptId(0),
        outcome: Outcome::non_retryable("boom"),
        now: ms(5),
    });
    let _ = drain(&mut m, &mut gate);
    parts = PolicyGate::into_parts(gate);
    assert_eq!(parts.recorded, [(CallResult::Failure, ms(5))]);
    // Call 2, at 100 ms: refused, the operation never runs.
    let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, Trigger::parse(""), parts);
    let mut m = machine(&policy);
    m.handle(Event::Start { now: ms(100) });
    let a = drain(&mut m, &mut gate);
    assert!(!a.iter().any(|a| matches!(a, Action::Launch(_))), "{a:?}");
    assert!(matches!(
        a.last(),
        Some(Action::Finish(Verdict::Failure {
            cause: Cause::CircuitOpen,
            ..
        }))
    ));
    parts = PolicyGate::into_parts(gate);
    assert_eq!(parts.recorded.len(), 1, "a refused call holds no permit");
    // Call 3, after the cooldown: a probe, which does not hedge at its
    // hedge delay; its success closes the circuit.
    let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, Trigger::parse(""), parts);
    let mut m = machine(&policy);
    m.handle(Event::Start { now: ms(1_005) });
    let _ = drain(&mut m, &mut gate);
    assert!(gate.is_probe());
    m.handle(Event::Tick { now: ms(1_015) });
    let a = drain(&mut m, &mut gate);
    assert!(!a.iter().any(|a| matches!(a, Action::Launch(_))), "{a:?}");
    m.handle(Event::AttemptFinished {
        id: AttemptId(0),
        outcome: Outcome::SUCCESS,
        now: ms(1_020),
    });
    let _ = drain(&mut m, &mut gate);
    let parts = PolicyGate::into_parts(gate);
    assert_eq!(parts.recorded[1], (CallResult::Success, ms(1_020)));
    let breaker = parts.breaker.unwrap();
    assert_eq!(
        breaker.state(ms(1_020)),
        crate::breaker::CircuitState::Closed
    );
}

#[test]
fn a_quantile_trigger_reads_the_latency_source_and_completed_attempts_feed_it() {
    let policy = {
        let mut p = hedged("", "");
        p.hedge.trigger = name("hedge.trigger", "p95").unwrap();
        p
    };
    let parts = Parts {
        quantile: Some(Duration::from_millis(3)),
        ..Parts::default()
    };
    let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, Trigger::parse("p95"), parts);
    let mut m = machine(&policy);
    m.handle(Event::Start { now: ms(0) });
    let a = drain(&mut m, &mut gate);
    // The hedge waits for the quantile (3 ms), not the 10 ms delay.
    assert!(
        matches!(a.last(), Some(Action::Wait { until, .. }) if *until <= ms(4)),
        "{a:?}"
    );
    m.handle(Event::AttemptFinished {
        id: AttemptId(0),
        outcome: Outcome::SUCCESS,
        now: ms(2),
    });
    let _ = drain(&mut m, &mut gate);
    assert_eq!(gate.parts().latencies, [Duration::from_millis(2)]);
}

/// The nanosecond hooks a quantile trigger uses answer what the
/// [`Duration`] ones do: a source that overrides only `latency_quantile`
/// and `record_latency` (the simulator's) sees the same samples and makes
/// the same decisions; a cancelled attempt of a gate that holds nothing
/// is not handed over at all.
#[test]
fn the_nanosecond_hooks_default_to_the_duration_ones() {
    let policy = {
        let mut p = hedged("", "");
        p.hedge.trigger = name("hedge.trigger", "p95").unwrap();
        p
    };
    for (quantile, hedge_at) in [
        (Some(Duration::from_micros(2_500)), 2_500_000),
        // Below the 1 ms floor of a quantile trigger's spacing.
        (Some(Duration::from_nanos(64)), 1_000_000),
        // Too few samples: the fixed delay (10 ms).
        (None, 10_000_000),
    ] {
        let mut parts = Parts {
            quantile,
            ..Parts::default()
        };
        assert_eq!(
            parts.latency_quantile_nanos(KEY, 950, ms(0)),
            quantile.map(crate::time::nanos)
        );
        parts.record_latency_nanos(KEY, 1_500_000_001, ms(0));
        assert_eq!(parts.latencies, [Duration::new(1, 500_000_001)]);
        parts.latencies.clear();

        let mut gate: PolicyGate<'_, _> =
            PolicyGate::new(KEY, &policy, Trigger::parse("p95"), parts);
        let state = HedgeState {
            retry_index: 0,
            group_start: ms(5),
            now: ms(5),
            hedges: 0,
            max_hedges: 1,
            hedge_delay: policy.hedge.hedge_delay,
        };
        let due = Instant::from_nanos(ms(5).as_nanos() + hedge_at);
        assert_eq!(
            gate.hedge(&state),
            HedgeDecision {
                spawn: false,
                next_check: Some(due)
            },
            "{quantile:?}"
        );
        assert_eq!(
            gate.hedge(&state),
            Trigger::parse("p95").unwrap().decide(&state, quantile)
        );
        assert!(gate.hedge(&HedgeState { now: due, ..state }).spawn);

        let info = AttemptInfo {
            id: AttemptId(0),
            retry_index: 0,
            hedge_index: 0,
            is_hedge: false,
            deadline: None,
        };
        let ended = |cancelled| AttemptRecord {
            info,
            start: ms(5),
            end: ms(9),
            outcome: Outcome::SUCCESS,
            cancelled,
            backoff: Duration::ZERO,
            budget_allowed: true,
            budget_reason: reason::NO_BUDGET,
        };
        gate.attempt_ended(&ended(true));
        assert!(gate.parts().latencies.is_empty(), "a cancelled attempt");
        gate.attempt_ended(&ended(false));
        assert_eq!(gate.parts().latencies, [Duration::from_millis(4)]);
    }
}

#[test]
fn token_bucket_through_the_gate() {
    // A built-in budget through the gate: one token, then refusal.
    let bucket = TokenBucket::new(1, 0);
    let mut policy = Policy::DEFAULT;
    policy.retry.budget.name = name("retry.budget.name", "r").unwrap();
    let parts = Parts {
        budgets: std::vec![("r", &bucket as &dyn Budget)],
        ..Parts::default()
    };
    let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, None, parts);
    let mut m = machine(&policy);
    m.handle(Event::Start { now: ms(0) });
    let _ = drain(&mut m, &mut gate);
    m.handle(Event::AttemptFinished {
        id: AttemptId(0),
        outcome: Outcome::retryable("boom"),
        now: ms(1),
    });
    let _ = drain(&mut m, &mut gate);
    m.handle(Event::Tick { now: ms(11) });
    let a = drain(&mut m, &mut gate);
    assert!(
        matches!(
            a.last(),
            Some(Action::Finish(Verdict::Failure {
                cause: Cause::BudgetDenied,
                ..
            }))
        ),
        "{a:?}"
    );
}

/// Runs one call whose attempts all fail, from `start`, through `gate`;
/// returns the attempts launched and the last record's budget reason.
fn failing_call<G: Gate>(policy: &Policy, gate: &mut G, start: u64) -> (u32, &'static str) {
    let mut m = machine(policy);
    m.handle(Event::Start { now: ms(start) });
    let (mut launched, mut last_reason) = (0, "");
    let mut now = start;
    for _ in 0..16 {
        let a = drain(&mut m, gate);
        for act in &a {
            match act {
                Action::Launch(_) => launched += 1,
                Action::Record(r) => last_reason = r.budget_reason,
                _ => {}
            }
        }
        match a.last() {
            Some(Action::Finish(_)) => return (launched, last_reason),
            Some(Action::Wait { until, .. }) => {
                now = until.as_nanos() / 1_000_000;
                m.handle(Event::Tick { now: *until });
            }
            _ => {
                now += 1;
                let id = a
                    .iter()
                    .rev()
                    .find_map(|x| match x {
                        Action::Launch(i) => Some(i.id),
                        _ => None,
                    })
                    .expect("an attempt in flight");
                m.handle(Event::AttemptFinished {
                    id,
                    outcome: Outcome::retryable("boom"),
                    now: ms(now),
                });
            }
        }
    }
    panic!("call did not finish in 16 steps");
}

#[test]
fn the_ledger_bounds_retries_of_every_call_of_the_key() {
    let mut policy = Policy::DEFAULT;
    policy.retry.max_attempts = 3;
    policy.amplification.max_amplification = 1.1;
    policy.amplification.min_per_sec = 0;
    let policy = policy.normalize().unwrap().policy;
    let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, None, Parts::default());
    let (mut attempts, mut denied) = (0, 0);
    for call in 0..100 {
        let (n, why) = failing_call(&policy, &mut gate, call * 20);
        attempts += n;
        if why == reason::AMPLIFICATION_LIMIT {
            denied += 1;
        }
    }
    // 100 first attempts earn 10 retries; without the ledger, 300.
    assert_eq!(attempts, 110);
    assert!(denied >= 90, "{denied}");
    let events = &gate.parts().events;
    assert!(events.contains(&("other", true, false, reason::AMPLIFICATION_LIMIT)));
    let t = gate.parts().ledger.totals(ms(2_000));
    assert_eq!((t.firsts, t.extras), (100, 10));
}

#[test]
fn hedges_and_retries_share_one_bound() {
    let mut policy = hedged("", "");
    policy.amplification.max_amplification = 1.0;
    policy.amplification.min_per_sec = 0;
    let mut gate: PolicyGate<'_, _> =
        PolicyGate::new(KEY, &policy, Trigger::parse(""), Parts::default());
    let mut m = machine(&policy);
    m.handle(Event::Start { now: ms(0) });
    let _ = drain(&mut m, &mut gate);
    m.handle(Event::Tick { now: ms(10) });
    let a = drain(&mut m, &mut gate);
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::Launch(i) if i.is_hedge)),
        "a hedge past 1.0x ran: {a:?}"
    );
    assert_eq!(
        gate.parts().events,
        [("other", true, false, reason::AMPLIFICATION_LIMIT)]
    );
    // Off: the same hedge runs.
    let policy = hedged("", "");
    let mut gate: PolicyGate<'_, _> =
        PolicyGate::new(KEY, &policy, Trigger::parse(""), Parts::default());
    let mut m = machine(&policy);
    m.handle(Event::Start { now: ms(0) });
    let _ = drain(&mut m, &mut gate);
    m.handle(Event::Tick { now: ms(10) });
    let a = drain(&mut m, &mut gate);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Launch(i) if i.is_hedge)));
}

#[test]
fn a_retry_that_cannot_finish_before_the_deadline_ends_the_call_at_once() {
    let mut policy = Policy::DEFAULT;
    policy.retry.max_attempts = 3;
    policy.retry.jitter = crate::policy::Jitter::None;
    policy.retry.overall_timeout = Some(Duration::from_millis(100));
    policy.retry.deadline_quantile_permille = 900;
    let policy = policy.normalize().unwrap().policy;
    // (p90 of completed attempts, what the machine does after the
    // first attempt fails at 20 ms; the backoff ends at 30 ms)
    for (p90, unreachable) in [
        (None, false),
        (Some(50), false),
        (Some(70), true),
        (Some(90), true),
    ] {
        let parts = Parts {
            quantile: p90.map(Duration::from_millis),
            ..Parts::default()
        };
        let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, None, parts);
        let mut m = machine(&policy);
        m.handle(Event::Start { now: ms(0) });
        let _ = drain(&mut m, &mut gate);
        m.handle(Event::AttemptFinished {
            id: AttemptId(0),
            outcome: Outcome::retryable("boom"),
            now: ms(20),
        });
        let a = drain(&mut m, &mut gate);
        if unreachable {
            assert!(
                matches!(
                    a.last(),
                    Some(Action::Finish(Verdict::Failure {
                        cause: Cause::DeadlineUnreachable,
                        last: Some(AttemptId(0)),
                    }))
                ),
                "{p90:?}: {a:?}"
            );
            assert_eq!(Cause::DeadlineUnreachable.as_str(), "deadline_unreachable");
        } else {
            assert!(
                matches!(a.last(), Some(Action::Wait { until, .. }) if *until == ms(30)),
                "{p90:?}: {a:?}"
            );
        }
        // The completed attempt fed the latency source.
        assert_eq!(gate.parts().latencies, [Duration::from_millis(20)]);
    }
    // Off: no quantile is read, whatever the source says.
    let mut off = policy.clone();
    off.retry.deadline_quantile_permille = 0;
    let parts = Parts {
        quantile: Some(Duration::from_secs(5)),
        ..Parts::default()
    };
    let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &off, None, parts);
    let mut m = machine(&off);
    m.handle(Event::Start { now: ms(0) });
    let _ = drain(&mut m, &mut gate);
    m.handle(Event::AttemptFinished {
        id: AttemptId(0),
        outcome: Outcome::retryable("boom"),
        now: ms(20),
    });
    let a = drain(&mut m, &mut gate);
    assert!(matches!(a.last(), Some(Action::Wait { .. })), "{a:?}");
}

#[test]
fn a_hedge_that_cannot_finish_before_the_deadline_is_not_launched() {
    let mut policy = hedged("", "");
    policy.retry.overall_timeout = Some(Duration::from_millis(100));
    policy.retry.deadline_quantile_permille = 900;
    for (p90, launched) in [(80, true), (95, false)] {
        let parts = Parts {
            quantile: Some(Duration::from_millis(p90)),
            ..Parts::default()
        };
        let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, Trigger::parse(""), parts);
        let mut m = machine(&policy);
        m.handle(Event::Start { now: ms(0) });
        let _ = drain(&mut m, &mut gate);
        m.handle(Event::Tick { now: ms(10) });
        let a = drain(&mut m, &mut gate);
        let hedge = a
            .iter()
            .any(|x| matches!(x, Action::Launch(i) if i.is_hedge));
        assert_eq!(hedge, launched, "p90 {p90} ms at 10 ms of 100: {a:?}");
    }
}

/// Collaborators that must never be consulted: each method panics.
struct Untouchable;

impl GateParts for Untouchable {
    type Budget = ();
    type Permit = ();
    fn budget(&mut self, name: &str, _: AttemptKind) -> Option<()> {
        panic!("budget {name:?} looked up for a policy that names none")
    }
    fn decide(&mut self, (): (), _: &BudgetRequest<'_>) -> Decision {
        panic!("a budget asked")
    }
    fn settle(&mut self, (): (), _: &AttemptRecord, _: Option<Reservation>, _: Instant) {
        panic!("a budget settled")
    }
    fn admit_call(
        &mut self,
        _: PolicyKey<'_>,
        _: &CircuitPolicy,
        _: Instant,
    ) -> Result<Option<()>, Refusal> {
        panic!("the breaker asked")
    }
    fn record_call(&mut self, _: PolicyKey<'_>, (): (), _: CallResult, _: Instant) {
        panic!("the breaker told")
    }
    fn latency_quantile(&mut self, _: PolicyKey<'_>, _: u32, _: Instant) -> Option<Duration> {
        panic!("the latency source asked")
    }
    fn record_latency(&mut self, _: PolicyKey<'_>, _: Duration, _: Instant) {
        panic!("a latency recorded")
    }
    fn amplification_allows(
        &mut self,
        _: PolicyKey<'_>,
        _: &AmplificationPolicy,
        _: Instant,
    ) -> bool {
        panic!("the ledger asked")
    }
    fn amplification_record(&mut self, _: PolicyKey<'_>, _: AttemptKind, _: Instant) {
        panic!("the ledger told")
    }
    fn budget_decided(&mut self, _: PolicyKey<'_>, _: &BudgetEvent<'_>) {
        panic!("a budget decision reported")
    }
}

/// What each policy section asks of the gate, bit by bit.
#[test]
fn gate_needs_follow_the_policy_and_trigger() {
    let p = Policy::DEFAULT;
    let none = GateNeeds::of(&p, None);
    assert_eq!(none, GateNeeds::NOTHING);
    for kind in [AttemptKind::Initial, AttemptKind::Retry, AttemptKind::Hedge] {
        assert!(!none.admits(kind));
        assert!(!none.budget(kind));
    }
    assert!(!none.ends_attempts());
    // A fixed-delay trigger samples nothing.
    assert_eq!(
        GateNeeds::of(&p, Some(Trigger::FixedDelay)),
        GateNeeds::NOTHING
    );

    let retry_only = GateNeeds::of(&hedged("r", ""), None);
    assert!(retry_only.budget(AttemptKind::Initial) && retry_only.budget(AttemptKind::Retry));
    assert!(!retry_only.budget(AttemptKind::Hedge) && !retry_only.admits(AttemptKind::Hedge));
    assert!(retry_only.ends_attempts() && !retry_only.samples());
    let hedge_only = GateNeeds::of(&hedged("", "h"), None);
    assert!(hedge_only.admits(AttemptKind::Hedge) && !hedge_only.admits(AttemptKind::Retry));

    let mut guarded = Policy::DEFAULT;
    guarded.circuit.enabled = true;
    let g = GateNeeds::of(&guarded, None);
    assert!(g.breaker() && g.admits(AttemptKind::Retry) && !g.budget(AttemptKind::Retry));
    assert!(!g.ends_attempts());

    let q = GateNeeds::of(&p, Trigger::parse("p95"));
    assert!(q.samples() && q.ends_attempts() && !q.admits(AttemptKind::Initial));
    // A quantile trigger hears attempts that completed, not cancelled
    // ones (it holds nothing); a budget hears both (its reservation).
    assert!(q.ends(false) && !q.ends(true));
    assert!(retry_only.ends(false) && retry_only.ends(true));
    assert!(!none.ends(false) && !none.ends(true));
    let mut deadline = Policy::DEFAULT;
    deadline.retry.deadline_quantile_permille = 990;
    assert!(GateNeeds::of(&deadline, None).samples());

    let mut bounded = Policy::DEFAULT;
    bounded.amplification.max_amplification = 1.5;
    let b = GateNeeds::of(&bounded, None);
    assert!(b.amplification() && b.admits(AttemptKind::Initial) && !b.ends_attempts());
}

/// A policy that asks for nothing never reaches its collaborators: a
/// failing call with retries runs to its end without one of them called.
#[test]
fn a_gate_whose_policy_asks_nothing_never_consults_its_parts() {
    let mut policy = Policy::DEFAULT;
    policy.retry.max_attempts = 3;
    let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, None, Untouchable);
    assert_eq!(gate.needs(), GateNeeds::NOTHING);
    let (attempts, reason) = failing_call(&policy, &mut gate, 0);
    assert_eq!(attempts, 3);
    assert_eq!(reason, reason::NO_BUDGET);
    assert_eq!(gate.held(), 0);
}

/// One request as a budget saw it: the attempt, its kind, the cost, the
/// failure before it, the instant.
type Request = (AttemptInfo, AttemptKind, u32, Option<Outcome>, Instant);

/// What a budget was asked, request by request.
#[derive(Default)]
struct Asked(core::cell::RefCell<Vec<Request>>);

impl Budget for Asked {
    fn decide(&self, r: &BudgetRequest<'_>) -> Decision {
        assert_eq!((r.key, r.budget), (KEY, "r"));
        self.0
            .borrow_mut()
            .push((r.attempt, r.kind, r.cost, r.previous, r.now));
        Decision::reserve(Reservation(1))
    }
    fn settle(&self, _: &AttemptRecord, _: Option<Reservation>, _: Instant) {}
}

/// The gate hands its out-of-line admission a copy of the machine's
/// request (so that a policy asking for nothing never has it built): a
/// budget still sees every attempt's request as the machine asked it —
/// the attempt, its kind, the cost, the failure that led to a retry and
/// the machine's instant.
#[test]
fn a_budget_sees_each_request_as_the_machine_asked_it() {
    let asked = Asked::default();
    let mut policy = Policy::DEFAULT;
    policy.retry.budget.name = name("retry.budget.name", "r").unwrap();
    policy.retry.budget.cost = 3;
    let policy = policy.normalize().unwrap().policy;
    let parts = Parts {
        budgets: std::vec![("r", &asked as &dyn Budget)],
        ..Parts::default()
    };
    let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &policy, None, parts);
    let (launched, _) = failing_call(&policy, &mut gate, 5);
    assert_eq!(launched, 3);
    assert_eq!(gate.held(), 0, "every reservation settled");
    drop(gate);
    let asked = asked.0.into_inner();
    let kinds: Vec<_> = asked
        .iter()
        .map(|a| (a.0.id, a.0.retry_index, a.1, a.2))
        .collect();
    assert_eq!(
        kinds,
        [
            (AttemptId(0), 0, AttemptKind::Initial, 3),
            (AttemptId(1), 1, AttemptKind::Retry, 3),
            (AttemptId(2), 2, AttemptKind::Retry, 3),
        ]
    );
    // The first attempt follows no failure; each retry follows the one
    // before it, asked at its wake (ends at 6 and 17, backoffs 10 and 20).
    assert_eq!(asked[0].3, None);
    assert_eq!(asked[1].3, Some(Outcome::retryable("boom")));
    assert_eq!(asked[2].3, Some(Outcome::retryable("boom")));
    let nows: Vec<_> = asked.iter().map(|a| a.4).collect();
    assert_eq!(nows, [ms(5), ms(16), ms(37)]);
}

/// Issue 16, lazy clock reads: a gate whose policy asks for nothing (no
/// budget, no breaker, no samples, no bound) and hedges never uses the
/// machine's instants, so a call it guards may leave its clock unread;
/// anything the policy asks for, or a trigger, uses them.
#[test]
fn a_gate_uses_time_exactly_when_its_policy_asks_for_something_or_it_hedges() {
    assert!(!GateNeeds::NOTHING.time());
    let plain = Policy::DEFAULT;
    assert!(!GateNeeds::of(&plain, None).time());
    let gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &plain, None, Parts::default());
    assert!(!Gate::uses_time(&gate));

    let mut budgeted = Policy::DEFAULT;
    budgeted.retry.budget.name = name("retry.budget.name", "retries").unwrap();
    let mut breaker = Policy::DEFAULT;
    breaker.circuit.enabled = true;
    let mut quantile = Policy::DEFAULT;
    quantile.retry.deadline_quantile_permille = 950;
    for (what, policy) in [
        ("a retry budget", &budgeted),
        ("the breaker", &breaker),
        ("latency samples", &quantile),
    ] {
        assert!(GateNeeds::of(policy, None).time(), "{what}");
        let gate: PolicyGate<'_, _> = PolicyGate::new(KEY, policy, None, Parts::default());
        assert!(Gate::uses_time(&gate), "{what}");
    }
    // A fixed-delay trigger alone is not counted (only a call that hedges
    // asks it, and such a call reads its clock for the machine: see
    // `Gate::uses_time`); a hedge budget is.
    let hedging = hedged("", "");
    assert!(!GateNeeds::of(&hedging, Trigger::parse("")).time());
    let hedge_budget = hedged("", "hedges");
    assert!(GateNeeds::of(&hedge_budget, None).time());
    // Through a reference, the same answers; the open gate uses none.
    let mut gate: PolicyGate<'_, _> = PolicyGate::new(KEY, &plain, None, Parts::default());
    assert!(!Gate::uses_time(&&mut gate));
    assert!(!Gate::uses_time(&()));
    // Its type says it may answer `false` (or the driver would not ask).
    const { assert!(<PolicyGate<'static, Parts<'static>> as Gate>::MAY_IGNORE_TIME) };
    const { assert!(<&mut PolicyGate<'static, Parts<'static>> as Gate>::MAY_IGNORE_TIME) };
}

/// [`Gate::attempt_completed`], what the simulator's sink hands its
/// gate for a completed attempt (no record built without a budget), does
/// what [`Gate::attempt_ended`] of that attempt's record does: the same
/// samples, the same reservations settled at the same instants, the same
/// launches, cancels and verdict, with and without budgets.
#[test]
fn attempt_completed_does_what_attempt_ended_of_the_record_does() {
    use crate::machine::{ActionSink, Completed};
    use std::format;

    struct Sink<'s, 'p, 'a> {
        gate: &'s mut PolicyGate<'p, Parts<'a>>,
        actions: Vec<Action>,
    }
    impl<'p, 'a> ActionSink for Sink<'_, 'p, 'a> {
        type Gate = PolicyGate<'p, Parts<'a>>;
        fn gate(&mut self) -> &mut Self::Gate {
            self.gate
        }
        fn launch(&mut self, info: AttemptInfo) {
            self.actions.push(Action::Launch(info));
        }
        fn cancel(&mut self, record: &AttemptRecord) {
            self.actions.push(Action::Cancel(*record));
        }
        fn record(&mut self, record: &AttemptRecord) {
            self.actions.push(Action::Record(*record));
        }
        fn hears_records(&self) -> bool {
            false
        }
        fn attempt_completed(&mut self, completed: &Completed) {
            self.gate.attempt_completed(completed);
        }
    }

    let events = [
        Event::Start { now: ms(0) },
        // A retryable failure before the hedge, then the retry's backoff.
        Event::AttemptFinished {
            id: AttemptId(0),
            outcome: Outcome::retryable(reason::RETRYABLE_ERROR),
            now: ms(2),
        },
        Event::Tick { now: ms(500) },
        // The retry's hedge (3 ms quantile), which wins.
        Event::Tick { now: ms(504) },
        Event::AttemptFinished {
            id: AttemptId(2),
            outcome: Outcome::SUCCESS,
            now: ms(507),
        },
        // Stale: its attempt was cancelled.
        Event::AttemptFinished {
            id: AttemptId(1),
            outcome: Outcome::SUCCESS,
            now: ms(508),
        },
    ];
    for (retry, hedge) in [("", ""), ("r", "h")] {
        let policy = {
            let mut p = hedged(retry, hedge);
            p.hedge.trigger = name("hedge.trigger", "p95").unwrap();
            p
        };
        let budgets = [Counting::default(), Counting::default()];
        let parts = || Parts {
            budgets: std::vec![("r", &budgets[0] as &dyn Budget), ("h", &budgets[1])],
            quantile: Some(Duration::from_millis(3)),
            ..Parts::default()
        };
        // By `handle` then `poll`: the gate hears every record.
        let mut by_record: PolicyGate<'_, _> =
            PolicyGate::new(KEY, &policy, Trigger::parse("p95"), parts());
        let mut m = machine(&policy);
        let mut want = Vec::new();
        for event in events {
            m.handle(event);
            want.extend(
                drain(&mut m, &mut by_record)
                    .into_iter()
                    .filter(|a| !matches!(a, Action::Record(r) if r.budget_allowed)),
            );
        }
        let settled_by_record = [budgets[0].settled.get(), budgets[1].settled.get()];
        // By `feed`, completed attempts through `attempt_completed`.
        let mut by_completed: PolicyGate<'_, _> =
            PolicyGate::new(KEY, &policy, Trigger::parse("p95"), parts());
        let mut m = machine(&policy);
        let mut got = Vec::new();
        for event in events {
            let mut sink = Sink {
                gate: &mut by_completed,
                actions: Vec::new(),
            };
            let last = m.feed(event, &mut sink);
            got.extend(sink.actions);
            got.push(last);
        }
        let what = format!("budgets {retry:?}/{hedge:?}");
        assert_eq!(format!("{got:?}"), format!("{want:?}"), "{what}");
        assert!(
            matches!(
                got.last(),
                Some(Action::Finish(Verdict::Success(AttemptId(2))))
            ),
            "{what}: {got:?}"
        );
        let (a, b) = (by_record.parts(), by_completed.parts());
        assert_eq!(
            a.latencies,
            [Duration::from_millis(2), Duration::from_millis(3)],
            "{what}"
        );
        assert_eq!(b.latencies, a.latencies, "{what}");
        assert_eq!(b.settled, a.settled, "{what}");
        assert_eq!(b.events, a.events, "{what}");
        // Each reservation settled once by each gate (none without budgets).
        let held = if retry.is_empty() { 0 } else { 3 };
        assert_eq!(a.settled.len(), held, "{what}");
        let settled = [budgets[0].settled.get(), budgets[1].settled.get()];
        assert_eq!(
            settled.iter().sum::<u32>(),
            2 * settled_by_record.iter().sum::<u32>(),
            "{what}"
        );
    }
}
