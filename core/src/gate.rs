//! The gate: the synchronous collaborator the machine consults before each
//! attempt (budgets; the circuit breaker before the first) and tells when
//! each admitted attempt and the call end.
//!
//! Why a per-call argument and not a field: budgets and breakers are shared
//! between calls and threads, while a machine belongs to one call. Passing the
//! gate to [`CallMachine::poll`](crate::CallMachine::poll) keeps the machine
//! free of `Arc`s and lets a `static` budget serve a no_std program.

use crate::hedge::{HedgeDecision, HedgeState};
use crate::machine::Completed;
use crate::outcome::Outcome;
use crate::record::{AttemptInfo, AttemptRecord};
use crate::time::Instant;
use crate::verdict::{reason, Verdict};
use core::time::Duration;

/// Who refused (or allowed) an attempt.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Gatekeeper {
    /// A budget: a refusal ends the call with
    /// [`Cause::BudgetDenied`](crate::Cause::BudgetDenied).
    Budget,
    /// The circuit breaker: a refusal ends the call with
    /// [`Cause::CircuitOpen`](crate::Cause::CircuitOpen).
    Circuit,
}

/// The gate's answer for one attempt.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Admission {
    /// Whether the attempt may run.
    pub allowed: bool,
    /// Why, as a low-cardinality reason code (`allowed`, `no_budget`,
    /// `budget_denied`, `circuit_open` ...).
    pub reason: &'static str,
    /// Who decided.
    pub by: Gatekeeper,
}

impl Admission {
    /// Allowed because there is nothing to consult.
    pub const NO_BUDGET: Self = Self::allowed(reason::NO_BUDGET);
    /// Allowed by the budget.
    pub const ALLOWED: Self = Self::allowed(reason::ALLOWED);
    /// Refused by the budget.
    pub const DENIED: Self = Self::denied(reason::BUDGET_DENIED);

    /// Allowed, with `reason`.
    pub const fn allowed(reason: &'static str) -> Self {
        Self {
            allowed: true,
            reason,
            by: Gatekeeper::Budget,
        }
    }

    /// Refused by a budget, with `reason`.
    pub const fn denied(reason: &'static str) -> Self {
        Self {
            allowed: false,
            reason,
            by: Gatekeeper::Budget,
        }
    }

    /// Refused by the circuit breaker, with `reason` (`circuit_open`,
    /// `circuit_half_open_probe_limit`).
    pub const fn circuit_open(reason: &'static str) -> Self {
        Self {
            allowed: false,
            reason,
            by: Gatekeeper::Circuit,
        }
    }
}

/// What the gate is asked about one attempt.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AdmitRequest {
    /// The attempt (its kind is `attempt.kind()`).
    pub attempt: AttemptInfo,
    /// For a retry, the outcome of the failure that led to it (a budget may
    /// charge a timeout retry more).
    pub previous: Option<Outcome>,
    /// When.
    pub now: Instant,
}

/// Consulted by the machine before every attempt, told when each admitted
/// attempt ends and when the call ends.
///
/// The machine calls [`Gate::attempt_ended`] exactly once for every attempt
/// [`Gate::admit`] allowed — whether it finished, was cut at a deadline, lost
/// a hedge race or was dropped with the call — which is what makes
/// release-exactly-once reservations possible; and [`Gate::call_ended`]
/// exactly once per started call, after every `attempt_ended`.
pub trait Gate {
    /// Whether the attempt may run now.
    fn admit(&mut self, request: &AdmitRequest) -> Admission;

    /// An admitted attempt ended; `record.cancelled` says whether recourse
    /// dropped it rather than seeing it complete.
    fn attempt_ended(&mut self, record: &AttemptRecord) {
        let _ = record;
    }

    /// An admitted attempt ran to completion (not cancelled), told from
    /// its makings: when no observer hears the call's records, the driver
    /// calls this instead of [`attempt_ended`](Self::attempt_ended), so a
    /// gate that needs less than the whole record (a latency sample: the
    /// attempt's start and end) need not have it built. The default builds
    /// the record ([`Completed::record`]) and hands it to `attempt_ended`;
    /// an override must have the same effect.
    #[inline]
    fn attempt_completed(&mut self, completed: &Completed) {
        self.attempt_ended(&completed.record());
    }

    /// Whether [`attempt_ended`](Self::attempt_ended) does anything for
    /// this call: `false` (for a gate whose `attempt_ended` is a no-op) lets
    /// the call future skip building an ended attempt's record when the
    /// observer does not hear records either. The default, `true`, is
    /// always correct; answer `false` only when `attempt_ended` does
    /// nothing.
    #[inline]
    fn hears_attempts(&self) -> bool {
        true
    }

    /// Whether this gate uses the instants it is given for this call (the
    /// requests' and records' times, `call_ended`'s `now`,
    /// `expected_latency`'s): `false` lets a call whose observer and
    /// policy use no time either skip the clock reads nobody would use
    /// (the call's start, a successful attempt's end; issue 16). Asked when
    /// the call starts: answer the same for the whole call. The default,
    /// `true`, is always correct; answer `false` only when no hook but
    /// [`hedge`](Self::hedge) reads an instant (the instants it is then
    /// given are the latest the call's machine saw, not the clock's). The
    /// hedge state's instants are always read: only a call that hedges
    /// asks, and the machine times its hedges on the clock.
    #[inline]
    fn uses_time(&self) -> bool {
        true
    }

    /// Whether [`uses_time`](Self::uses_time) may answer `false` for a
    /// call with a gate of this type. `false` (the default) says it never
    /// does, and a call future compiled for this type carries no code for
    /// calls that leave their clock unread (on a microcontroller, about
    /// 130 bytes of flash); set it `true` when you override `uses_time`
    /// (left `false`, the override is never asked and the clock is read).
    const MAY_IGNORE_TIME: bool = false;

    /// The call ended with `verdict` (also when it was dropped).
    fn call_ended(&mut self, verdict: &Verdict, now: Instant) {
        let _ = (verdict, now);
    }

    /// Whether to launch a hedge now, and when to ask again; consulted only
    /// when the policy enables hedging and the group may launch another.
    /// The default is the [fixed-delay trigger](crate::hedge::fixed_delay).
    fn hedge(&mut self, state: &HedgeState) -> HedgeDecision {
        crate::hedge::fixed_delay(state)
    }

    /// How long an attempt launched at `now` is expected to take (a
    /// latency quantile of the key's completed attempts), when the policy
    /// asks the machine not to launch a retry or hedge that would end past
    /// the overall deadline (`retry.deadline_quantile_permille`). `None`
    /// (the default, and while there are too few samples): no such check.
    fn expected_latency(&mut self, now: Instant) -> Option<Duration> {
        let _ = now;
        None
    }
}

/// The open gate: every attempt allowed with `no_budget`.
impl Gate for () {
    fn admit(&mut self, _: &AdmitRequest) -> Admission {
        Admission::NO_BUDGET
    }
    #[inline]
    fn hears_attempts(&self) -> bool {
        false
    }
    #[inline]
    fn uses_time(&self) -> bool {
        false
    }
    const MAY_IGNORE_TIME: bool = true;
}

impl<G: Gate + ?Sized> Gate for &mut G {
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        (**self).admit(request)
    }
    fn attempt_ended(&mut self, record: &AttemptRecord) {
        (**self).attempt_ended(record)
    }
    #[inline(always)]
    fn attempt_completed(&mut self, completed: &Completed) {
        (**self).attempt_completed(completed)
    }
    #[inline]
    fn hears_attempts(&self) -> bool {
        (**self).hears_attempts()
    }
    #[inline]
    fn uses_time(&self) -> bool {
        (**self).uses_time()
    }
    const MAY_IGNORE_TIME: bool = G::MAY_IGNORE_TIME;
    fn call_ended(&mut self, verdict: &Verdict, now: Instant) {
        (**self).call_ended(verdict, now)
    }
    fn hedge(&mut self, state: &HedgeState) -> HedgeDecision {
        (**self).hedge(state)
    }
    fn expected_latency(&mut self, now: Instant) -> Option<Duration> {
        (**self).expected_latency(now)
    }
}
