//! [`PolicyGate`]: the one gate the executor and the simulator run.
//!
//! Why one: a policy names a budget for retries and one for hedges, enables
//! a circuit breaker and picks a hedge trigger. Choosing the budget for an
//! attempt's kind, holding each reservation until the machine says the
//! attempt ended, asking the breaker before the first attempt and telling it
//! how the call ended, and feeding a latency source to a quantile trigger is
//! the same work wherever a call runs. Written once here (no_std, no
//! allocator), what the simulator shows is what the executor does.
//!
//! What differs between its users is where the collaborators live — a
//! registry of shared budgets and a store of breakers behind a lock, or a
//! simulator's own budgets and one breaker — and that is [`GateParts`].
//! Every method of both takes the machine's `now`: the gate reads no clock.

use core::fmt;
use core::time::Duration;

use crate::breaker::{CallResult, Refusal};
use crate::budget::{BudgetRequest, Decision, Reservation, MAX_HELD};
use crate::gate::{Admission, AdmitRequest, Gate};
use crate::hedge::{HedgeDecision, HedgeState, Trigger};
use crate::key::PolicyKey;
use crate::machine::Completed;
use crate::outcome::Outcome;
use crate::policy::{AmplificationPolicy, BudgetRef, CircuitPolicy, Policy};
use crate::record::{AttemptId, AttemptInfo, AttemptKind, AttemptRecord};
use crate::time::Instant;
use crate::verdict::{reason, Verdict};

/// What a [`PolicyGate`] consults: budgets by name, the circuit breaker, a
/// latency source, and where its decisions are reported. Every method is
/// given the machine's `now`.
pub trait GateParts {
    /// A handle of a budget (a reference, an index), held with the
    /// attempt's reservation until the attempt ends.
    type Budget: Copy;
    /// A circuit breaker's leave for one call, handed back when it ends.
    type Permit: Copy;

    /// The budget the policy names `name` (never empty) for an attempt of
    /// `kind`, or `None` when there is none by that name.
    fn budget(&mut self, name: &str, kind: AttemptKind) -> Option<Self::Budget>;

    /// Whether an attempt whose budget is not found runs anyway
    /// (`budget_not_found` either way). Default: it does not.
    fn missing_budget_allows(&self) -> bool {
        false
    }

    /// Asks `budget` about an attempt.
    fn decide(&mut self, budget: Self::Budget, request: &BudgetRequest<'_>) -> Decision;

    /// Gives `budget` back what it reserved for an attempt that ended.
    fn settle(
        &mut self,
        budget: Self::Budget,
        record: &AttemptRecord,
        reservation: Option<Reservation>,
        now: Instant,
    );

    /// Asks the circuit breaker for leave to run the call under `policy`
    /// (enabled): the permit to hand back, or the refusal. Default: no
    /// breaker, every call runs and nothing is recorded.
    fn admit_call(
        &mut self,
        key: PolicyKey<'_>,
        policy: &CircuitPolicy,
        now: Instant,
    ) -> Result<Option<Self::Permit>, Refusal> {
        let _ = (key, policy, now);
        Ok(None)
    }

    /// [`GateParts::admit_call`]'s answer when the breaker gives it at once
    /// without the key or the policy (a closed breaker the parts hold) and
    /// has nothing to report: the permit; `None`: nothing was decided, ask
    /// [`GateParts::admit_call`] (which decides the same). The gate's hot
    /// path, inlined into it. Default: `None`.
    #[inline(always)]
    fn admit_call_at_once(&mut self, now: Instant) -> Option<Self::Permit> {
        let _ = now;
        None
    }

    /// Whether `permit` admitted a half-open probe (which runs without
    /// hedges). Default: never.
    fn is_probe(permit: &Self::Permit) -> bool {
        let _ = permit;
        false
    }

    /// Hands the breaker's permit back with the call's result.
    fn record_call(
        &mut self,
        key: PolicyKey<'_>,
        permit: Self::Permit,
        result: CallResult,
        now: Instant,
    ) {
        let _ = (key, permit, result, now);
    }

    /// [`GateParts::record_call`] of a success, when the breaker takes it
    /// at once without the key (a closed breaker the parts hold, nothing
    /// to report): `true`, recorded; `false`: nothing was recorded, hand
    /// the permit to [`GateParts::record_call`]. The gate's hot path,
    /// inlined into it. Default: `false`.
    #[inline(always)]
    fn record_success_at_once(&mut self, permit: &Self::Permit, now: Instant) -> bool {
        let _ = (permit, now);
        false
    }

    /// The latency source's `q_permille` quantile, for a quantile trigger.
    /// Default: no samples.
    fn latency_quantile(
        &mut self,
        key: PolicyKey<'_>,
        q_permille: u32,
        now: Instant,
    ) -> Option<Duration> {
        let _ = (key, q_permille, now);
        None
    }

    /// [`GateParts::latency_quantile`] in whole nanoseconds (what
    /// [`nanos`](crate::time::nanos) makes of it): what the gate's
    /// quantile trigger asks on every hedge decision. Default: that
    /// quantile, converted; a source that keeps its answer in nanoseconds
    /// gives it as it is (the same answer).
    #[inline]
    fn latency_quantile_nanos(
        &mut self,
        key: PolicyKey<'_>,
        q_permille: u32,
        now: Instant,
    ) -> Option<u64> {
        self.latency_quantile(key, q_permille, now)
            .map(crate::time::nanos)
    }

    /// An attempt that ran to completion took `latency`.
    fn record_latency(&mut self, key: PolicyKey<'_>, latency: Duration, now: Instant) {
        let _ = (key, latency, now);
    }

    /// [`GateParts::record_latency`] of a latency of `nanos` nanoseconds
    /// (an attempt's end minus its start): what the gate calls. Default:
    /// [`GateParts::record_latency`] of that [`Duration`]; a source that
    /// counts nanoseconds records them as they are (the same sample).
    #[inline]
    fn record_latency_nanos(&mut self, key: PolicyKey<'_>, nanos: u64, now: Instant) {
        self.record_latency(key, Duration::from_nanos(nanos), now);
    }

    /// Whether one more retry or hedge of `key` at `now` stays within
    /// `policy` (enabled), by the key's
    /// [`AmplificationLedger`](crate::amplification::AmplificationLedger). Default:
    /// no ledger, always.
    fn amplification_allows(
        &mut self,
        key: PolicyKey<'_>,
        policy: &AmplificationPolicy,
        now: Instant,
    ) -> bool {
        let _ = (key, policy, now);
        true
    }

    /// An attempt of `kind` was admitted at `now`: the key's ledger counts
    /// it (a first attempt, or an extra one). Called for every admitted
    /// attempt while the policy's amplification bound is on. Default:
    /// nothing is counted.
    fn amplification_record(&mut self, key: PolicyKey<'_>, kind: AttemptKind, now: Instant) {
        let _ = (key, kind, now);
    }

    /// What the gate decided about a budget, as it happens.
    fn budget_decided(&mut self, key: PolicyKey<'_>, event: &BudgetEvent<'_>) {
        let _ = (key, event);
    }
}

/// One budget decision of a [`PolicyGate`], reported to
/// [`GateParts::budget_decided`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BudgetEvent<'a> {
    /// The attempt.
    pub attempt: AttemptInfo,
    /// Its kind.
    pub kind: AttemptKind,
    /// The budget's name, as the policy names it.
    pub budget: &'a str,
    /// What the attempt costs there.
    pub cost: u32,
    /// Whether a budget of that name was found (`false`: the answer is
    /// [`GateParts::missing_budget_allows`]', with `budget_not_found`).
    pub found: bool,
    /// Whether the attempt may run.
    pub allowed: bool,
    /// The budget's reason code.
    pub reason: &'static str,
    /// When.
    pub now: Instant,
}

pub use crate::verdict::reason::BUDGET_NOT_FOUND;

/// The budget name a [`BudgetEvent`] gives the amplification ledger when it
/// refuses an attempt (reason `amplification_limit`).
pub const AMPLIFICATION_BUDGET: &str = "amplification";

/// What a policy (with its hedge trigger) asks of its [`PolicyGate`]: which
/// attempt kinds name a budget, whether the breaker is on, whether attempts
/// feed a latency source, whether the amplification bound is on.
///
/// Worked out once per policy (the executor keeps it with each key's
/// resolved answer) so that a gate whose policy asks for nothing decides
/// each attempt with one test: a call pays only for the collaborators its
/// policy names (issue 16).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct GateNeeds(u8);

impl GateNeeds {
    /// Nothing to consult: every attempt is allowed (`no_budget`).
    pub const NOTHING: Self = Self(0);
    const RETRY_BUDGET: u8 = 1;
    const HEDGE_BUDGET: u8 = 1 << 1;
    const BREAKER: u8 = 1 << 2;
    const SAMPLES: u8 = 1 << 3;
    const AMPLIFICATION: u8 = 1 << 4;

    /// What `policy` asks of its gate, hedging by `trigger`.
    pub fn of(policy: &Policy, trigger: Option<Trigger>) -> Self {
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        let samples = trigger.is_some_and(|t| t.quantile().is_some())
            || policy.retry.deadline_quantile_permille > 0;
        Self(
            flag(!policy.retry.budget.name.is_empty(), Self::RETRY_BUDGET)
                | flag(!policy.hedge.budget.name.is_empty(), Self::HEDGE_BUDGET)
                | flag(policy.circuit.enabled, Self::BREAKER)
                | flag(samples, Self::SAMPLES)
                | flag(policy.amplification.is_enabled(), Self::AMPLIFICATION),
        )
    }

    /// Whether an attempt of `kind` has anything to consult (a budget for
    /// its kind, the breaker, the amplification bound).
    #[inline]
    pub const fn admits(self, kind: AttemptKind) -> bool {
        self.budget(kind) || self.0 & (Self::BREAKER | Self::AMPLIFICATION) != 0
    }

    /// Whether the policy names a budget for attempts of `kind`.
    #[inline]
    pub const fn budget(self, kind: AttemptKind) -> bool {
        let bit = match kind {
            AttemptKind::Hedge => Self::HEDGE_BUDGET,
            AttemptKind::Initial | AttemptKind::Retry => Self::RETRY_BUDGET,
        };
        self.0 & bit != 0
    }

    /// Whether an attempt's end has anything to do (a reservation that may
    /// be held, a latency sample to record).
    #[inline]
    pub const fn ends_attempts(self) -> bool {
        self.0 & (Self::RETRY_BUDGET | Self::HEDGE_BUDGET | Self::SAMPLES) != 0
    }

    /// Whether the end of an attempt, `cancelled` or not, has anything to
    /// do: a reservation that may be held, or the latency sample of an
    /// attempt that ran to completion (a cancelled attempt of a gate that
    /// holds nothing is not even handed over).
    #[inline]
    pub const fn ends(self, cancelled: bool) -> bool {
        let sample = if cancelled { 0 } else { Self::SAMPLES };
        self.0 & (Self::RETRY_BUDGET | Self::HEDGE_BUDGET | sample) != 0
    }

    /// Whether an attempt may hold a reservation (the policy names a
    /// budget for some kind).
    #[inline]
    pub const fn holds(self) -> bool {
        self.0 & (Self::RETRY_BUDGET | Self::HEDGE_BUDGET) != 0
    }

    /// Whether completed attempts feed the latency source.
    #[inline]
    pub const fn samples(self) -> bool {
        self.0 & Self::SAMPLES != 0
    }

    /// Whether an attempt of `kind` consults the breaker and nothing else
    /// (a first attempt, no budget for it, no amplification bound).
    #[inline]
    pub const fn breaker_alone(self, kind: AttemptKind) -> bool {
        matches!(kind, AttemptKind::Initial)
            && self.0 & (Self::RETRY_BUDGET | Self::BREAKER | Self::AMPLIFICATION) == Self::BREAKER
    }

    /// Whether the circuit breaker is on.
    #[inline]
    pub const fn breaker(self) -> bool {
        self.0 & Self::BREAKER != 0
    }

    /// Whether the amplification bound is on.
    #[inline]
    pub const fn amplification(self) -> bool {
        self.0 & Self::AMPLIFICATION != 0
    }

    /// Whether the gate uses the machine's instants: a budget (its refill
    /// and its settling), the breaker (its open interval), latency samples
    /// (attempt durations, the quantile's window) and the amplification
    /// ledger (its window) all do, so anything at all. A gate that needs
    /// nothing never consults its parts, and the call it guards reads no
    /// clock for it ([`Gate::uses_time`]).
    #[inline]
    pub const fn time(self) -> bool {
        self.0 != 0
    }
}

/// One attempt's reservation, held until the attempt ends.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Held<B> {
    /// The attempt.
    pub id: AttemptId,
    /// The budget that reserved.
    pub budget: B,
    /// What it reserved.
    pub reservation: Option<Reservation>,
}

/// Where a [`PolicyGate`] holds the reservations of attempts in flight
/// (at most one per attempt; the gate releases each exactly once).
pub trait Holder<B>: Default {
    /// Holds `held`, or gives it back when there is no room.
    fn hold(&mut self, held: Held<B>) -> Result<(), Held<B>>;
    /// Takes the reservation of attempt `id` out, if held.
    fn release(&mut self, id: AttemptId) -> Option<Held<B>>;
    /// Reservations held.
    fn len(&self) -> usize;
    /// Whether none is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Up to `N` reservations inline, no allocator.
pub struct Inline<B, const N: usize>(heapless::Vec<Held<B>, N>);

impl<B, const N: usize> Inline<B, N> {
    /// None held.
    pub const fn new() -> Self {
        Self(heapless::Vec::new())
    }
}

impl<B, const N: usize> Default for Inline<B, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: fmt::Debug, const N: usize> fmt::Debug for Inline<B, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl<B, const N: usize> Holder<B> for Inline<B, N> {
    #[inline]
    fn hold(&mut self, held: Held<B>) -> Result<(), Held<B>> {
        self.0.push(held)
    }
    #[inline]
    fn release(&mut self, id: AttemptId) -> Option<Held<B>> {
        let i = self.0.iter().position(|h| h.id == id)?;
        Some(self.0.swap_remove(i))
    }
    #[inline]
    fn len(&self) -> usize {
        self.0.as_slice().len()
    }
}

/// The gate of one call under one policy (see the [module docs](self)):
/// `retry.budget` for first attempts and retries, `hedge.budget` for
/// hedges, each reservation settled exactly once; the circuit breaker
/// before the first attempt when `circuit.enabled`, told how the call
/// ended; the policy's hedge trigger, reading
/// [`GateParts::latency_quantile`] (a half-open probe runs without hedges).
///
/// `R` holds the reservations of the attempts in flight: by default up to
/// [`MAX_HELD`] inline (the primary and the highest hedge ceiling's
/// hedges); an attempt past what it holds is refused with its reservation
/// given back at once. A std user may hold a few inline and spill the rest
/// to the heap.
#[derive(Debug)]
pub struct PolicyGate<'p, Pa: GateParts, R = Inline<<Pa as GateParts>::Budget, MAX_HELD>> {
    parts: Pa,
    key: PolicyKey<'p>,
    policy: &'p Policy,
    trigger: Option<Trigger>,
    /// What the policy asks for ([`GateNeeds::of`] the policy and trigger).
    needs: GateNeeds,
    held: R,
    /// The breaker's permit for this call.
    permit: Option<Pa::Permit>,
}

impl<'p, Pa: GateParts, R: Holder<Pa::Budget>> PolicyGate<'p, Pa, R> {
    /// The gate of one call with `key` under `policy` (normalized), with
    /// `trigger` deciding hedges (`None`: no hedges).
    pub fn new(
        key: PolicyKey<'p>,
        policy: &'p Policy,
        trigger: Option<Trigger>,
        parts: Pa,
    ) -> Self {
        let needs = GateNeeds::of(policy, trigger);
        Self::with_needs(key, policy, trigger, needs, parts)
    }

    /// [`PolicyGate::new`] with `needs` worked out before, once for many
    /// calls: it must be [`GateNeeds::of`] `policy` and `trigger` (checked
    /// in debug builds).
    #[inline]
    pub fn with_needs(
        key: PolicyKey<'p>,
        policy: &'p Policy,
        trigger: Option<Trigger>,
        needs: GateNeeds,
        parts: Pa,
    ) -> Self {
        debug_assert_eq!(needs, GateNeeds::of(policy, trigger), "stale gate needs");
        Self {
            parts,
            key,
            policy,
            trigger,
            needs,
            held: R::default(),
            permit: None,
        }
    }

    /// What the policy asks of this gate.
    pub fn needs(&self) -> GateNeeds {
        self.needs
    }

    /// The collaborators.
    pub fn parts(&self) -> &Pa {
        &self.parts
    }

    /// The collaborators, to change.
    pub fn parts_mut(&mut self) -> &mut Pa {
        &mut self.parts
    }

    /// The collaborators back, once the call is over.
    pub fn into_parts(self) -> Pa {
        self.parts
    }

    /// Whether the breaker admitted this call as a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.permit.as_ref().is_some_and(Pa::is_probe)
    }

    /// Reservations held for attempts in flight.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn budget_ref(&self, kind: AttemptKind) -> &'p BudgetRef {
        match kind {
            AttemptKind::Hedge => &self.policy.hedge.budget,
            AttemptKind::Initial | AttemptKind::Retry => &self.policy.retry.budget,
        }
    }
}

impl<Pa: GateParts, R: Holder<Pa::Budget>> Gate for PolicyGate<'_, Pa, R> {
    // Each hook: one inlined test of what the policy asks for, its work out
    // of line (a call whose policy asks for nothing pays the test alone).
    #[inline]
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        let kind = request.attempt.kind();
        if !self.needs.admits(kind) {
            // No budget for the kind, no breaker, no bound: what
            // `admit_budget` answers a budget the policy does not name.
            return Admission::NO_BUDGET;
        }
        // A first attempt that asks the breaker alone, answered at once:
        // what `admit_budget` answers once the breaker admitted it.
        if self.needs.breaker_alone(kind) && self.admit_at_once(request.now) {
            return Admission::NO_BUDGET;
        }
        // A copy for the work out of line: the caller's request is only
        // read here, never handed on by address, so once this is inlined
        // the machine need not build it in memory on the path above (a
        // retry of a policy that asks for nothing pays the test alone).
        let request = *request;
        self.admit_inner(&request)
    }

    #[inline]
    fn attempt_ended(&mut self, record: &AttemptRecord) {
        if self.needs.ends(record.cancelled) {
            self.attempt_ended_inner(record);
        }
    }

    /// [`Gate::attempt_ended`] of `completed`'s record (an admitted
    /// attempt that ran to completion), the same calls of the parts in the
    /// same order, with the record built only when a budget's reservation
    /// is settled with it: a policy that only feeds a latency sketch (a
    /// quantile hedge trigger's) reads the attempt's latency alone. What
    /// the simulator's [`ActionSink`](crate::machine::ActionSink) hands
    /// its gate, and the call future's full machine when no observer hears
    /// its records.
    #[inline(always)]
    fn attempt_completed(&mut self, completed: &Completed) {
        if !self.needs.ends(false) {
            return;
        }
        if self.needs.samples() {
            self.record_sample(completed.latency_nanos(), completed.end());
        }
        if self.needs.holds() {
            // The record built on this path only: `completed` handed on by
            // address had to be built in memory on every path (a simulated
            // call copied its slot there and back, about 20 instructions).
            self.settle_completed(&completed.record());
        }
    }

    /// An attempt's end matters to this gate only when the policy names a
    /// budget (a reservation to settle) or feeds a latency sketch: what
    /// [`attempt_ended`](Gate::attempt_ended) tests.
    #[inline]
    fn hears_attempts(&self) -> bool {
        self.needs.ends_attempts()
    }

    /// Whether the policy asks for anything ([`GateNeeds::time`]): a gate
    /// that consults no part uses no instant. (Its trigger's hedge
    /// decisions do, but only a call that hedges asks for them, and such a
    /// call reads its clock for the machine's own hedge delays: see
    /// [`Gate::uses_time`].)
    #[inline]
    fn uses_time(&self) -> bool {
        self.needs.time()
    }
    const MAY_IGNORE_TIME: bool = true;

    #[inline]
    fn call_ended(&mut self, verdict: &Verdict, now: Instant) {
        if self.permit.is_some() {
            self.call_ended_inner(verdict, now);
        }
    }

    // Always inlined: the machine's hedge check is its one caller, and
    // the fixed-delay trigger's decision there is a call and a test.
    #[inline(always)]
    fn hedge(&mut self, state: &HedgeState) -> HedgeDecision {
        self.hedge_inner(state)
    }

    /// `retry.deadline_quantile_permille` of the key's completed attempts,
    /// from the latency source (`None` when off or with too few samples).
    #[inline]
    fn expected_latency(&mut self, now: Instant) -> Option<Duration> {
        let q = self.policy.retry.deadline_quantile_permille;
        if q == 0 {
            return None;
        }
        self.parts.latency_quantile(self.key, q, now)
    }
}

impl<Pa: GateParts, R: Holder<Pa::Budget>> PolicyGate<'_, Pa, R> {
    /// Whether the breaker admitted a first attempt at once
    /// ([`GateParts::admit_call_at_once`]), its permit kept; `false`:
    /// nothing was decided. Returns a flag, not an admission: no frame,
    /// nothing through the stack.
    #[inline(never)]
    fn admit_at_once(&mut self, now: Instant) -> bool {
        if self.permit.is_some() {
            return false;
        }
        match self.parts.admit_call_at_once(now) {
            Some(permit) => {
                self.permit = Some(permit);
                true
            }
            None => false,
        }
    }

    /// The amplification bound (when on), then the breaker and the budget.
    #[inline(never)]
    fn admit_inner(&mut self, request: &AdmitRequest) -> Admission {
        if !self.needs.amplification() {
            return self.admit_budget(request);
        }
        self.admit_bounded(request)
    }

    /// [`PolicyGate::admit_inner`] under the amplification bound.
    #[inline(never)]
    fn admit_bounded(&mut self, request: &AdmitRequest) -> Admission {
        let amplification = &self.policy.amplification;
        let kind = request.attempt.kind();
        if kind != AttemptKind::Initial
            && !self
                .parts
                .amplification_allows(self.key, amplification, request.now)
        {
            let event = BudgetEvent {
                attempt: request.attempt,
                kind,
                budget: AMPLIFICATION_BUDGET,
                cost: 1,
                found: true,
                allowed: false,
                reason: reason::AMPLIFICATION_LIMIT,
                now: request.now,
            };
            self.parts.budget_decided(self.key, &event);
            return Admission::denied(reason::AMPLIFICATION_LIMIT);
        }
        let admission = self.admit_budget(request);
        if admission.allowed {
            self.parts.amplification_record(self.key, kind, request.now);
        }
        admission
    }

    /// The breaker before a first attempt, then the attempt's budget (out
    /// of line: a breaker-on call whose policy names no budget does not
    /// carry it).
    #[inline(always)]
    fn admit_budget(&mut self, request: &AdmitRequest) -> Admission {
        let kind = request.attempt.kind();
        if kind == AttemptKind::Initial && self.needs.breaker() && self.permit.is_none() {
            match self
                .parts
                .admit_call(self.key, &self.policy.circuit, request.now)
            {
                Ok(permit) => self.permit = permit,
                Err(refusal) => return refusal.admission(),
            }
        }
        if !self.needs.budget(kind) {
            return Admission::NO_BUDGET;
        }
        self.admit_by_budget(request)
    }

    /// The budget the policy names for the attempt's kind.
    #[inline(never)]
    fn admit_by_budget(&mut self, request: &AdmitRequest) -> Admission {
        let kind = request.attempt.kind();
        let now = request.now;
        let bref = self.budget_ref(kind);
        let cost = bref.cost.max(1);
        let mut event = BudgetEvent {
            attempt: request.attempt,
            kind,
            budget: bref.name.as_str(),
            cost,
            found: false,
            allowed: self.parts.missing_budget_allows(),
            reason: BUDGET_NOT_FOUND,
            now,
        };
        let Some(budget) = self.parts.budget(&bref.name, kind) else {
            self.parts.budget_decided(self.key, &event);
            return if event.allowed {
                Admission::allowed(BUDGET_NOT_FOUND)
            } else {
                Admission::denied(BUDGET_NOT_FOUND)
            };
        };
        let decision = self.parts.decide(
            budget,
            &BudgetRequest {
                key: self.key,
                attempt: request.attempt,
                kind,
                budget: &bref.name,
                cost,
                previous: request.previous,
                now,
            },
        );
        event.found = true;
        event.allowed = decision.allowed;
        event.reason = decision.reason;
        self.parts.budget_decided(self.key, &event);
        if !decision.allowed {
            return Admission::denied(decision.reason);
        }
        if let Err(Held {
            budget,
            reservation,
            ..
        }) = self.held.hold(Held {
            id: request.attempt.id,
            budget,
            reservation: decision.reservation,
        }) {
            // More attempts in flight than the gate holds: give the
            // reservation back at once rather than lose it.
            let record = AttemptRecord {
                info: request.attempt,
                start: now,
                end: now,
                outcome: Outcome::abort(reason::BUDGET_DENIED),
                cancelled: true,
                backoff: Duration::ZERO,
                budget_allowed: false,
                budget_reason: reason::BUDGET_DENIED,
            };
            self.parts.settle(budget, &record, reservation, now);
            return Admission::DENIED;
        }
        Admission::allowed(decision.reason)
    }

    #[inline(never)]
    fn attempt_ended_inner(&mut self, record: &AttemptRecord) {
        // Samples come from attempts that ran to completion: a budget
        // denial never gets here, and an attempt recourse cut or dropped
        // says only that it was slower than its cut.
        if !record.cancelled && self.needs.samples() {
            // `record.duration()`, in nanoseconds.
            let nanos = record
                .end
                .as_nanos()
                .saturating_sub(record.start.as_nanos());
            self.parts.record_latency_nanos(self.key, nanos, record.end);
        }
        if !self.needs.holds() {
            // No budget named: nothing was held.
            return;
        }
        self.settle_ended(record);
    }

    /// Settles the reservation attempt `record` held, if it held one.
    #[inline]
    fn settle_ended(&mut self, record: &AttemptRecord) {
        if let Some(Held {
            budget,
            reservation,
            ..
        }) = self.held.release(record.info.id)
        {
            self.parts.settle(budget, record, reservation, record.end);
        }
    }

    /// [`Gate::attempt_completed`]'s sample (inlined: its one
    /// caller is the simulator's loop).
    #[inline(always)]
    fn record_sample(&mut self, nanos: u64, end: Instant) {
        self.parts.record_latency_nanos(self.key, nanos, end);
    }

    /// [`Gate::attempt_completed`]'s settling, out of line.
    #[inline(never)]
    fn settle_completed(&mut self, record: &AttemptRecord) {
        self.settle_ended(record);
    }

    /// Hands the permit back: a success the breaker takes at once without
    /// a frame, anything else out of line (a tail call).
    #[inline(never)]
    fn call_ended_inner(&mut self, verdict: &Verdict, now: Instant) {
        let result = CallResult::from_verdict(verdict);
        if let Some(permit) = &self.permit {
            if result == CallResult::Success && self.parts.record_success_at_once(permit, now) {
                self.permit = None;
                return;
            }
        }
        if let Some(permit) = self.permit.take() {
            self.record_call(permit, result, now);
        }
    }

    /// [`PolicyGate::call_ended_inner`] past its fast path.
    #[inline(never)]
    fn record_call(&mut self, permit: Pa::Permit, result: CallResult, now: Instant) {
        self.parts.record_call(self.key, permit, result, now);
    }

    /// The policy's trigger, reading the latency source for a quantile; a
    /// half-open breaker's probe runs without hedges.
    #[inline(always)]
    fn hedge_inner(&mut self, state: &HedgeState) -> HedgeDecision {
        let trigger = match self.trigger {
            Some(t) if !self.is_probe() => t,
            _ => {
                return HedgeDecision {
                    spawn: false,
                    next_check: None,
                }
            }
        };
        let quantile = trigger.quantile().and_then(|q| {
            self.parts
                .latency_quantile_nanos(self.key, u32::from(q), state.now)
        });
        trigger.decide_nanos(state, quantile)
    }
}

#[cfg(test)]
mod tests;
