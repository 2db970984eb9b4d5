//! The per-call gate: the executor's budgets (and breakers) in front of the
//! core machine.
//!
//! For each attempt it picks the budget the policy names for the attempt's
//! kind (`retry.budget` for first attempts and retries, `hedge.budget` for
//! hedges), resolves it in the executor's [`BudgetRegistry`], asks it, tells
//! the observer, and keeps the reservation until the machine says the
//! attempt ended — then settles it exactly once. A panicking budget (with
//! panic containment on) is a refusal, `panic_in_budget`. Before a call's
//! first attempt it asks the key's circuit breaker (when the policy enables
//! one), and tells it how the call ended.

use core::panic::AssertUnwindSafe;

use recourse_core::budget::{BudgetRequest, Decision, Reservation};
use recourse_core::gate::{Admission, AdmitRequest, Gate};
use recourse_core::policy::{BudgetRef, Policy};
use recourse_core::{AttemptId, AttemptKind, AttemptRecord, PolicyKey};

use recourse_core::breaker::CallResult;
use recourse_core::{HedgeDecision, HedgeState, Trigger, Verdict};

use crate::breakers::{Breakers, Permit};
use crate::budgets::{BudgetRegistry, MissingBudgetMode, SharedBudget};
use crate::latency::LatencyTrackers;
use crate::observer::{BudgetDecision, Observer};
use crate::timer::TimerSource;

/// Reason: the policy names a budget the registry does not have.
pub const BUDGET_NOT_FOUND: &str = "budget_not_found";
/// Reason: the budget panicked (panic containment on).
pub const PANIC_IN_BUDGET: &str = "panic_in_budget";

/// One call's gate.
pub(crate) struct CallGate<'a, S> {
    /// Budgets see the executor's shared clock, not the call's timer.
    pub(crate) clock: &'a S,
    pub(crate) key: PolicyKey<'a>,
    pub(crate) policy: &'a Policy,
    pub(crate) budgets: &'a BudgetRegistry,
    pub(crate) missing_budget: MissingBudgetMode,
    pub(crate) contain_panics: bool,
    pub(crate) observer: Option<&'a dyn Observer>,
    pub(crate) held: Held<'a>,
    pub(crate) breakers: &'a Breakers,
    /// The breaker's permit for this call, once the first attempt was
    /// admitted; recorded when the call ends.
    pub(crate) circuit: Option<Permit>,
    /// The call's hedge trigger; `None`: no hedges.
    pub(crate) trigger: Option<Trigger>,
    /// Where a quantile trigger reads (and completed attempts write) the
    /// key's recent latencies.
    pub(crate) latency: &'a LatencyTrackers,
}

/// The budgets holding reservations for attempts in flight: inline for the
/// usual few, on the heap only past [`INLINE_HELD`] concurrent attempts
/// (hedging with a lifted ceiling).
#[derive(Default)]
pub(crate) struct Held<'a> {
    inline: heapless::Vec<(AttemptId, &'a SharedBudget, Option<Reservation>), INLINE_HELD>,
    spill: Vec<(AttemptId, &'a SharedBudget, Option<Reservation>)>,
}

/// Attempts in flight whose reservations are held without allocating: the
/// primary and the default ceiling of 3 hedges.
const INLINE_HELD: usize = 4;

impl<'a> Held<'a> {
    fn push(&mut self, entry: (AttemptId, &'a SharedBudget, Option<Reservation>)) {
        if let Err(entry) = self.inline.push(entry) {
            self.spill.push(entry);
        }
    }

    fn take(
        &mut self,
        id: AttemptId,
    ) -> Option<(AttemptId, &'a SharedBudget, Option<Reservation>)> {
        if let Some(i) = self.inline.iter().position(|(a, ..)| *a == id) {
            return Some(self.inline.swap_remove(i));
        }
        let i = self.spill.iter().position(|(a, ..)| *a == id)?;
        Some(self.spill.swap_remove(i))
    }
}

impl<'a, S: TimerSource> CallGate<'a, S> {
    fn budget_ref(&self, kind: AttemptKind) -> &'a BudgetRef {
        match kind {
            AttemptKind::Hedge => &self.policy.hedge.budget,
            AttemptKind::Initial | AttemptKind::Retry => &self.policy.retry.budget,
        }
    }

    fn decide(&self, budget: &SharedBudget, request: &BudgetRequest<'_>) -> Decision {
        if !self.contain_panics {
            return budget.decide(request);
        }
        std::panic::catch_unwind(AssertUnwindSafe(|| budget.decide(request))).unwrap_or(Decision {
            allowed: false,
            reason: PANIC_IN_BUDGET,
            reservation: None,
        })
    }

    fn tell(&self, event: &BudgetDecision<'_>) {
        if let Some(o) = self.observer {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                o.on_budget_decision(self.key, event)
            }));
        }
    }
}

impl<S: TimerSource> Gate for CallGate<'_, S> {
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        let kind = request.attempt.kind();
        if kind == AttemptKind::Initial && self.policy.circuit.enabled {
            let now = self.clock.shared_now();
            match self.breakers.admit_at(self.key, &self.policy.circuit, now) {
                Ok(permit) => self.circuit = Some(permit),
                Err(refusal) => return refusal.admission(),
            }
        }
        let bref = self.budget_ref(kind);
        if bref.name.is_empty() {
            return Admission::NO_BUDGET;
        }
        let event = |mode, allowed, reason| BudgetDecision {
            attempt: request.attempt,
            kind,
            budget: bref.name.as_str(),
            cost: bref.cost,
            mode,
            allowed,
            reason,
        };
        let Some(budget) = self.budgets.get(&bref.name) else {
            let allowed = self.missing_budget == MissingBudgetMode::AllowUnsafe;
            self.tell(&event(
                self.missing_budget.as_str(),
                allowed,
                BUDGET_NOT_FOUND,
            ));
            return if allowed {
                Admission::allowed(BUDGET_NOT_FOUND)
            } else {
                Admission::denied(BUDGET_NOT_FOUND)
            };
        };
        let decision = self.decide(
            budget,
            &BudgetRequest {
                key: self.key,
                attempt: request.attempt,
                kind,
                budget: &bref.name,
                cost: bref.cost.max(1),
                previous: request.previous,
                now: self.clock.shared_now(),
            },
        );
        self.tell(&event("standard", decision.allowed, decision.reason));
        if !decision.allowed {
            return Admission::denied(decision.reason);
        }
        self.held
            .push((request.attempt.id, budget, decision.reservation));
        Admission::allowed(decision.reason)
    }

    fn attempt_ended(&mut self, record: &AttemptRecord) {
        // Samples come from attempts that ran to completion: a budget
        // denial never gets here, and an attempt recourse cut or dropped
        // says only that it was slower than its cut.
        if !record.cancelled && self.trigger.is_some_and(|t| t.quantile().is_some()) {
            self.latency
                .record(self.key, record.duration(), self.clock.shared_now());
        }
        let Some((_, budget, reservation)) = self.held.take(record.info.id) else {
            return;
        };
        let now = self.clock.shared_now();
        let settle = || budget.settle(record, reservation, now);
        if self.contain_panics {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(settle));
        } else {
            settle();
        }
    }

    /// The policy's trigger, reading the key's recent latencies for a
    /// quantile; a half-open breaker's probe runs without hedges.
    fn hedge(&mut self, state: &HedgeState) -> HedgeDecision {
        let trigger = match self.trigger {
            Some(t) if !self.circuit.is_some_and(|p| p.is_probe()) => t,
            _ => {
                return HedgeDecision {
                    spawn: false,
                    next_check: None,
                }
            }
        };
        let quantile = trigger.quantile().and_then(|q| {
            self.latency
                .quantile(self.key, u32::from(q), self.clock.shared_now())
        });
        trigger.decide(state, quantile)
    }

    fn call_ended(&mut self, verdict: &Verdict, _: recourse_core::Instant) {
        if let Some(permit) = self.circuit.take() {
            let result = CallResult::from_verdict(verdict);
            self.breakers
                .record_at(self.key, permit, result, self.clock.shared_now());
        }
    }
}
