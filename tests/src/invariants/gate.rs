//! The world's gate: a script of refusals in front of a real, checked
//! budget, and a hedge trigger; every call the machine makes is logged for
//! the checker.
//!
//! Why log instead of assert here: whether a gate call is right depends on
//! what the machine did in the same `poll` (a `Launch` must follow an
//! allowed `admit` of that very attempt), which only the checker sees. The
//! budget keeps its own ledger, because reservations are a budget's
//! business: [`BudgetGate`] holds them, and only the budget can tell whether
//! each came back exactly once.

use core::cell::RefCell;
use core::time::Duration;
use std::rc::Rc;

use recourse_core::budget::{
    AwsRetryQuota, Concurrency, GrpcThrottle, RetryRatio, TokenBucket, Unlimited,
};
use recourse_core::hedge::{fixed_delay, HedgeDecision, HedgeState, Trigger};
use recourse_core::{
    Admission, AdmitRequest, AttemptRecord, Budget, BudgetGate, BudgetRequest, Decision, Gate,
    Instant, PolicyKey, Reservation, Verdict,
};

use super::conservation::Laws;
use super::input::{Answer, BudgetInput, ChaosAnswer, GateInput, TriggerInput};

/// One call the machine made on the gate, with the gate's answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum GateCall {
    Admit(AdmitRequest, Admission),
    AttemptEnded(AttemptRecord),
    CallEnded(Verdict, Instant),
    Hedge(HedgeState, HedgeDecision),
}

/// A built-in budget.
#[derive(Debug)]
pub(super) enum Inner {
    Unlimited(Unlimited),
    TokenBucket(TokenBucket),
    Concurrency(Concurrency),
    RetryRatio(RetryRatio),
    GrpcThrottle(GrpcThrottle),
    AwsRetryQuota(AwsRetryQuota),
}

impl Inner {
    pub(super) fn budget(&self) -> &dyn Budget {
        match self {
            Self::Unlimited(b) => b,
            Self::TokenBucket(b) => b,
            Self::Concurrency(b) => b,
            Self::RetryRatio(b) => b,
            Self::GrpcThrottle(b) => b,
            Self::AwsRetryQuota(b) => b,
        }
    }
}

/// One reservation a budget handed out: what it holds, and how often it
/// was settled.
#[derive(Copy, Clone, Debug)]
struct Held {
    reservation: Option<Reservation>,
    settled: u32,
}

/// A built-in budget that keeps a ledger of its decisions and settlements.
#[derive(Debug)]
pub(super) struct CheckedBudget {
    /// Shared by the calls of a shared run ([`CheckedBudget::share`]).
    inner: Rc<Inner>,
    /// Its conservation law, checked around every decision and settlement.
    laws: Rc<Laws>,
    /// Indexed by attempt id.
    ledger: RefCell<Vec<Option<Held>>>,
    /// Denials.
    denied: RefCell<u32>,
    /// Settlements that match no open reservation.
    strays: RefCell<Vec<String>>,
}

impl CheckedBudget {
    /// The budget `input` names, if any.
    pub(super) fn new(input: BudgetInput) -> Option<Self> {
        let inner = match input {
            BudgetInput::None => return None,
            BudgetInput::Unlimited => Inner::Unlimited(Unlimited),
            BudgetInput::TokenBucket {
                capacity,
                refill_per_second,
            } => Inner::TokenBucket(TokenBucket::new(capacity, refill_per_second)),
            BudgetInput::Concurrency { permille, min } => {
                Inner::Concurrency(Concurrency::new(permille, min))
            }
            BudgetInput::RetryRatio {
                ttl_secs,
                min_per_sec,
                permille,
            } => Inner::RetryRatio(RetryRatio::new(
                Duration::from_secs(ttl_secs.into()),
                min_per_sec,
                permille,
            )),
            BudgetInput::GrpcThrottle {
                max_tokens,
                ratio_milli,
            } => Inner::GrpcThrottle(GrpcThrottle::new(max_tokens, ratio_milli)),
            BudgetInput::AwsRetryQuota {
                capacity,
                retry_cost,
                timeout_cost,
                increment,
            } => Inner::AwsRetryQuota(AwsRetryQuota::new(
                capacity,
                retry_cost,
                timeout_cost,
                increment,
            )),
        };
        Some(Self {
            inner: Rc::new(inner),
            laws: Rc::new(Laws::new(input)),
            ledger: RefCell::new(Vec::new()),
            denied: RefCell::new(0),
            strays: RefCell::new(Vec::new()),
        })
    }

    /// The same budget for another call, with a ledger of its own.
    pub(super) fn share(&self) -> Self {
        Self {
            inner: Rc::clone(&self.inner),
            laws: Rc::clone(&self.laws),
            ledger: RefCell::new(Vec::new()),
            denied: RefCell::new(0),
            strays: RefCell::new(Vec::new()),
        }
    }

    /// What is wrong with the budget itself once every call sharing it has
    /// ended: a `Concurrency` budget still counting attempts.
    pub(super) fn audit_idle(&self) -> Result<(), String> {
        match &*self.inner {
            Inner::Concurrency(c) if (c.active(), c.extra_in_flight()) != (0, 0) => Err(format!(
                "Concurrency budget still counts {} active and {} extra attempts after every \
                 call ended",
                c.active(),
                c.extra_in_flight()
            )),
            _ => Ok(()),
        }
    }

    /// What is wrong with the ledger once every attempt has ended: a
    /// reservation not settled exactly once, a settlement of an attempt the
    /// budget never allowed, or a built-in's own counters not back where
    /// they started.
    pub(super) fn audit(&self) -> Result<(), String> {
        if let Some(stray) = self.strays.borrow().first() {
            return Err(format!("budget ledger: {stray}"));
        }
        for (id, held) in self.ledger.borrow().iter().enumerate() {
            if let Some(held) = held.filter(|h| h.settled != 1) {
                return Err(format!(
                    "budget reservation {:?} of attempt {id} settled {} times, not once",
                    held.reservation, held.settled
                ));
            }
        }
        if Rc::strong_count(&self.inner) == 1 {
            self.audit_idle()?;
        }
        match &*self.inner {
            Inner::AwsRetryQuota(q) if q.available() > q.capacity() => Err(format!(
                "AwsRetryQuota holds {} tokens, above its capacity {}",
                q.available(),
                q.capacity()
            )),
            _ => Ok(()),
        }
    }

    /// Reservations handed out and denials, for coverage.
    pub(super) fn counts(&self) -> (usize, u32) {
        let reserved = self.ledger.borrow().iter().flatten().count();
        (reserved, *self.denied.borrow())
    }
}

impl Budget for CheckedBudget {
    fn decide(&self, request: &BudgetRequest<'_>) -> Decision {
        let (decision, law) = self.laws.decide(&self.inner, request);
        if let Err(e) = law {
            self.strays.borrow_mut().push(e);
        }
        if decision.allowed {
            let id = usize::from(request.attempt.id.0);
            let mut ledger = self.ledger.borrow_mut();
            if ledger.len() <= id {
                ledger.resize(id + 1, None);
            }
            if ledger[id].is_some() {
                self.strays
                    .borrow_mut()
                    .push(format!("attempt {id} was allowed twice"));
            }
            ledger[id] = Some(Held {
                reservation: decision.reservation,
                settled: 0,
            });
        } else {
            *self.denied.borrow_mut() += 1;
        }
        decision
    }

    fn settle(&self, record: &AttemptRecord, reservation: Option<Reservation>, now: Instant) {
        let id = record.info.id;
        let mut ledger = self.ledger.borrow_mut();
        match ledger.get_mut(usize::from(id.0)).and_then(Option::as_mut) {
            Some(held) if held.settled > 0 => held.settled += 1,
            Some(held) if held.reservation == reservation => held.settled = 1,
            Some(held) => self.strays.borrow_mut().push(format!(
                "attempt {id:?} settled with reservation {reservation:?}, but holds {:?}",
                held.reservation
            )),
            None => self.strays.borrow_mut().push(format!(
                "attempt {id:?} settled, but the budget never allowed it"
            )),
        }
        drop(ledger);
        if let Err(e) = self.laws.settle(&self.inner, record, reservation, now) {
            self.strays.borrow_mut().push(e);
        }
    }
}

/// The world's gate.
#[derive(Debug)]
pub(super) struct WorldGate<'b> {
    script: Vec<Answer>,
    next_answer: usize,
    budget: Option<BudgetGate<'b, CheckedBudget>>,
    /// Hedges ask this one instead, when `hedges_apart`.
    hedge_budget: Option<BudgetGate<'b, CheckedBudget>>,
    hedges_apart: bool,
    trigger: TriggerInput,
    chaos_turn: usize,
    /// Every call since the checker last took the log.
    pub(super) log: Vec<GateCall>,
}

impl<'b> WorldGate<'b> {
    /// A gate charging `budget` for every attempt, or hedges to
    /// `hedge_budget` when `hedges_apart`.
    pub(super) fn new(
        input: &GateInput,
        budget: Option<&'b CheckedBudget>,
        hedge_budget: Option<&'b CheckedBudget>,
        hedges_apart: bool,
    ) -> Self {
        let key = PolicyKey::new("fuzz", "call");
        Self {
            script: input.script.clone(),
            next_answer: 0,
            budget: budget.map(|b| BudgetGate::new(b, key, "world", input.cost)),
            hedge_budget: hedge_budget.map(|b| BudgetGate::new(b, key, "hedges", input.cost)),
            hedges_apart,
            trigger: input.trigger.clone(),
            chaos_turn: 0,
            log: Vec::new(),
        }
    }
}

impl Gate for WorldGate<'_> {
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        let answer = self
            .script
            .get(self.next_answer)
            .copied()
            .unwrap_or(Answer::Pass);
        self.next_answer += 1;
        let budget = if self.hedges_apart && request.attempt.is_hedge {
            &mut self.hedge_budget
        } else {
            &mut self.budget
        };
        let admission = match (answer, budget) {
            (Answer::DenyBudget, _) => Admission::DENIED,
            (Answer::DenyCircuit, _) => Admission::circuit_open("circuit_open"),
            (Answer::Pass, Some(gate)) => gate.admit(request),
            (Answer::Pass, None) => Admission::NO_BUDGET,
        };
        self.log.push(GateCall::Admit(*request, admission));
        admission
    }

    fn attempt_ended(&mut self, record: &AttemptRecord) {
        self.log.push(GateCall::AttemptEnded(*record));
        // Each gate settles only the attempts it admitted.
        for gate in [&mut self.budget, &mut self.hedge_budget]
            .into_iter()
            .flatten()
        {
            gate.attempt_ended(record);
        }
    }

    fn call_ended(&mut self, verdict: &Verdict, now: Instant) {
        self.log.push(GateCall::CallEnded(*verdict, now));
        for gate in [&mut self.budget, &mut self.hedge_budget]
            .into_iter()
            .flatten()
        {
            gate.call_ended(verdict, now);
        }
    }

    fn hedge(&mut self, state: &HedgeState) -> HedgeDecision {
        let decision = match &self.trigger {
            TriggerInput::Fixed => fixed_delay(state),
            TriggerInput::Quantile { permille, latency } => Trigger::Quantile {
                permille: *permille,
            }
            .decide(state, latency.map(|d| d.0)),
            TriggerInput::Chaos(answers) => {
                let ChaosAnswer {
                    spawn,
                    next_check_ms,
                } = answers
                    .get(self.chaos_turn % answers.len().max(1))
                    .copied()
                    .unwrap_or(ChaosAnswer {
                        spawn: true,
                        next_check_ms: None,
                    });
                self.chaos_turn += 1;
                let next_check = next_check_ms.map(|ms| {
                    let d = Duration::from_millis(u64::from(ms.unsigned_abs()));
                    if ms < 0 {
                        state.now - d
                    } else {
                        state.now + d
                    }
                });
                HedgeDecision { spawn, next_check }
            }
        };
        self.log.push(GateCall::Hedge(*state, decision));
        decision
    }
}
