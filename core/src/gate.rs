//! The gate: the synchronous collaborator the machine consults before each
//! attempt (budgets) and before the first (the circuit breaker).
//!
//! Why a per-call argument and not a field: budgets and breakers are shared
//! between calls and threads, while a machine belongs to one call. Passing the
//! gate to [`CallMachine::poll`](crate::CallMachine::poll) keeps the machine
//! free of `Arc`s and lets a `static` budget serve a no_std program.

use crate::outcome::{reason, OutcomeKind};
use crate::record::AttemptInfo;
use crate::time::Instant;

/// The gate's answer for one attempt.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Admission {
    /// Whether the attempt may run.
    pub allowed: bool,
    /// Why, as a low-cardinality reason code (`allowed`, `no_budget`,
    /// `budget_denied` ...).
    pub reason: &'static str,
}

impl Admission {
    /// Allowed because there is nothing to consult.
    pub const NO_BUDGET: Self = Self {
        allowed: true,
        reason: reason::NO_BUDGET,
    };
    /// Allowed by the budget.
    pub const ALLOWED: Self = Self {
        allowed: true,
        reason: reason::ALLOWED,
    };
    /// Refused by the budget.
    pub const DENIED: Self = Self {
        allowed: false,
        reason: reason::BUDGET_DENIED,
    };
}

/// Consulted by the machine before every attempt, told when each admitted
/// attempt ends.
///
/// The machine calls [`Gate::attempt_ended`] exactly once for every attempt
/// [`Gate::admit`] allowed — whether it finished, was cut at a deadline, lost
/// a hedge race or was dropped with the call — which is what makes
/// release-exactly-once reservations possible.
pub trait Gate {
    /// Whether `attempt` (its kind is `attempt.kind()`) may run now.
    fn admit(&mut self, attempt: &AttemptInfo, now: Instant) -> Admission;

    /// An admitted attempt ended; `kind` is `None` when it was dropped
    /// without an outcome of its own (cancelled or cut).
    fn attempt_ended(&mut self, attempt: &AttemptInfo, kind: Option<OutcomeKind>, now: Instant) {
        let _ = (attempt, kind, now);
    }
}

/// The open gate: every attempt allowed with `no_budget`.
impl Gate for () {
    fn admit(&mut self, _: &AttemptInfo, _: Instant) -> Admission {
        Admission::NO_BUDGET
    }
}

impl<G: Gate + ?Sized> Gate for &mut G {
    fn admit(&mut self, attempt: &AttemptInfo, now: Instant) -> Admission {
        (**self).admit(attempt, now)
    }
    fn attempt_ended(&mut self, attempt: &AttemptInfo, kind: Option<OutcomeKind>, now: Instant) {
        (**self).attempt_ended(attempt, kind, now)
    }
}
