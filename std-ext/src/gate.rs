//! The per-call gate: core's [`PolicyGate`] in front of the machine, with
//! the executor's collaborators.
//!
//! Everything a gate decides — the budget for each attempt's kind
//! (`retry.budget` for first attempts and retries, `hedge.budget` for
//! hedges), holding each reservation until the machine says the attempt
//! ended, the key's circuit breaker before the first attempt and told how
//! the call ended, the hedge trigger reading the key's recent latencies —
//! is [`PolicyGate`]'s, the same gate the simulator runs. What is left here
//! is where the executor keeps things (`ExecParts`): budgets looked up in
//! its [`BudgetRegistry`](crate::BudgetRegistry), breakers in its
//! [`Breakers`](crate::Breakers), latencies in its
//! [`LatencyTrackers`](crate::latency::LatencyTrackers); panic containment (a panicking budget is a refusal,
//! `panic_in_budget`); and each budget decision told to the observer as it
//! happens.
//!
//! Time: every method is given the machine's `now`, on the call's timer.
//! Budgets, breakers and latency trackers outlive a call and need the
//! executor's shared clock ([`TimerSource::shared_now`]); the parts read it
//! once per call and carry the machine's instants over by the same offset.

use core::panic::AssertUnwindSafe;
use core::time::Duration;

use recourse_core::breaker::{CallResult, CircuitState, Refusal};
use recourse_core::budget::{BudgetRequest, Decision, Reservation};
use recourse_core::policy::{AmplificationPolicy, CircuitPolicy};
use recourse_core::policy_gate::{BudgetEvent, GateParts, Held, Holder, Inline, PolicyGate};
use recourse_core::{AttemptId, AttemptRecord, Instant, PolicyKey};

use crate::breakers::{EntryRef, Permit};
use crate::budget::{MissingBudgetMode, SharedBudget};
use crate::executor::Executor;
use crate::key_cache::Kept;
use crate::observer::{BudgetDecision, CircuitTransition};
use crate::timer::TimerSource;

/// Reason: the policy names a budget the registry does not have.
pub const BUDGET_NOT_FOUND: &str = recourse_core::reason::BUDGET_NOT_FOUND;
/// Reason: the budget panicked (panic containment on).
pub const PANIC_IN_BUDGET: &str = "panic_in_budget";
/// Timeline attribute: a budget's `settle` panicked and the panic was
/// contained (the call's result stands); the panic hook printed its message.
/// [`Executor::budget_settle_panics`](crate::Executor::budget_settle_panics)
/// counts the calls it happened in.
pub const PANIC_IN_BUDGET_SETTLE: &str = "panic_in_budget_settle";

/// One call's gate, holding `N` reservations inline.
pub(crate) type CallGate<'a, S, const N: usize = INLINE_HELD> =
    PolicyGate<'a, ExecParts<'a, S>, Spill<'a, N>>;

/// The reservations of the attempts in flight: inline for the usual few
/// (`N`: as many as the call has attempts in flight at once, so a call
/// without hedges holds one, issue 16), on the heap only past them
/// (hedging with a lifted ceiling).
#[derive(Default)]
// A boxed `Vec` on purpose: one word inline, the rare spill's two
// allocations are the price.
#[allow(clippy::box_collection)]
// In this order, the words a new `Spill` sets (the spill, the inline
// count) lie together ahead of the inline room, which is left unset
// rather than zeroed with them (10 instructions a call with four slots).
#[repr(C)]
pub(crate) struct Spill<'a, const N: usize = INLINE_HELD> {
    /// The rest, once there are more: one word in every call's future
    /// (a `Vec` inline took three), boxed on the first spill.
    spill: Option<Box<Vec<Held<&'a SharedBudget>>>>,
    inline: Inline<&'a SharedBudget, N>,
}

/// Attempts in flight whose reservations are held without allocating: the
/// primary and the default ceiling of 3 hedges.
pub(crate) const INLINE_HELD: usize = 4;

impl<'a, const N: usize> Holder<&'a SharedBudget> for Spill<'a, N> {
    fn hold(&mut self, held: Held<&'a SharedBudget>) -> Result<(), Held<&'a SharedBudget>> {
        if let Err(held) = self.inline.hold(held) {
            self.spill.get_or_insert_default().push(held);
        }
        Ok(())
    }

    fn release(&mut self, id: AttemptId) -> Option<Held<&'a SharedBudget>> {
        self.inline.release(id).or_else(|| {
            let spill = self.spill.as_deref_mut()?;
            let i = spill.iter().position(|h| h.id == id)?;
            Some(spill.swap_remove(i))
        })
    }

    fn len(&self) -> usize {
        self.inline.len() + self.spill.as_deref().map_or(0, Vec::len)
    }
}

/// Where one call's [`PolicyGate`] finds the executor's collaborators.
pub(crate) struct ExecParts<'a, S> {
    /// Where the budgets, breakers, latency trackers, observer, shared
    /// clock and panic containment are (one reference, not one per
    /// collaborator: the call's future holds it).
    pub(crate) exec: &'a Executor<S>,
    /// The key's breaker, sketch and amplification ledger, found when its
    /// answer was resolved (each `None`: look it up by key).
    pub(crate) kept: &'a Kept<'a>,
    /// Where a contained panic in a budget's `settle` leaves its first
    /// message, for the call's timeline.
    pub(crate) call_panics: &'a crate::report::CallPanics,
    /// The shared clock minus the machine's, in nanoseconds (wrapping),
    /// from the first instant the parts saw.
    pub(crate) offset: Option<u64>,
    /// What the policy does with the attempts made upstream: under a
    /// shared allowance the ledger leaves room for the callers above and
    /// may count the first attempt as an extra one.
    pub(crate) upstream: recourse_core::amplification::UpstreamEffect,
}

/// A call's breaker permit, as its gate keeps it: a closed circuit's
/// permit of the kept breaker with that breaker beside it, so that the
/// call's end counts a success without looking the breaker up in the
/// call's kept answer again (issue 16: the breaker's margin); any other
/// permit as the store gave it. As large as a [`Permit`] (checked in the
/// layout test): the kept one lies after the store permit's kind.
#[derive(Copy, Clone)]
pub(crate) enum GatePermit<'a> {
    /// A closed permit of the kept breaker.
    Kept(KeptPermit<'a>),
    /// Any other.
    Other(Permit),
}

/// A closed permit of episode `generation` from the kept `entry`. Packed
/// to four bytes' alignment, so that it fits after a store permit's kind
/// (fields are read by value: no reference to them is taken).
#[derive(Copy, Clone)]
#[repr(C, packed(4))]
pub(crate) struct KeptPermit<'a> {
    generation: u32,
    entry: EntryRef<'a>,
}

impl<'a> GatePermit<'a> {
    /// A closed permit of episode `generation` from `entry`.
    #[inline(always)]
    fn kept(generation: u32, entry: EntryRef<'a>) -> Self {
        Self::Kept(KeptPermit { generation, entry })
    }

    /// The store's permit.
    fn permit(self) -> Permit {
        match self {
            Self::Kept(KeptPermit { generation, entry }) => entry.permit(generation),
            Self::Other(permit) => permit,
        }
    }
}

impl<'a, S: TimerSource> ExecParts<'a, S> {
    /// The shared clock's time at the machine's `now`.
    fn shared(&mut self, now: Instant) -> Instant {
        let clock = &self.exec.timer;
        if clock.calls_share_its_clock() {
            // The machine's clock is the shared one: nothing to read.
            return now;
        }
        let offset = *self
            .offset
            .get_or_insert_with(|| clock.shared_now().as_nanos().wrapping_sub(now.as_nanos()));
        Instant::from_nanos(now.as_nanos().wrapping_add(offset))
    }

    /// [`ExecParts::shared`] when it reads no clock (the machine's clock
    /// is the shared one, or the offset is known); `None`: ask
    /// [`ExecParts::shared`].
    #[inline(always)]
    fn shared_at_once(&self, now: Instant) -> Option<Instant> {
        if self.exec.timer.calls_share_its_clock() {
            return Some(now);
        }
        let offset = self.offset?;
        Some(Instant::from_nanos(now.as_nanos().wrapping_add(offset)))
    }

    /// The machine's time at the shared clock's `t` (the inverse of
    /// [`ExecParts::shared`]).
    fn machine(&self, t: Instant) -> Instant {
        Instant::from_nanos(t.as_nanos().wrapping_sub(self.offset.unwrap_or(0)))
    }

    /// Tells the observer that `key`'s breaker went `from` → `to` at `at`
    /// (machine time); a panicking observer is contained.
    fn transition(&self, key: PolicyKey<'_>, from: CircuitState, to: CircuitState, at: Instant) {
        let Some(o) = self.exec.observer.as_deref() else {
            return;
        };
        let t = CircuitTransition { from, to, at };
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| o.on_circuit_transition(key, &t)));
    }

    /// [`GateParts::admit_call`] past its fast path: a breaker not kept,
    /// not closed, or a thread without a shard of its own.
    #[cold]
    #[inline(never)]
    fn admit_call_slow(
        &mut self,
        key: &PolicyKey<'_>,
        policy: &CircuitPolicy,
        now: Instant,
    ) -> Result<Option<GatePermit<'a>>, Refusal> {
        let key = *key;
        let machine_now = now;
        let now = self.shared(now);
        let kept = self.kept.breaker();
        let (answer, left_open) = match kept {
            Some(entry) => self.exec.breakers.admit_entry(entry, now),
            None => self.exec.breakers.admit_tracked(key, policy, now),
        };
        // A closed permit of the kept breaker is kept with it (its
        // success is then counted at once, as one `admit_call_at_once`
        // gave).
        let answer = answer.map(|permit| match (kept, permit.into_parts()) {
            (Some(entry), (p, _)) if p.is_closed() => GatePermit::kept(p.generation(), entry.get()),
            _ => GatePermit::Other(permit),
        });
        if let Some(until) = left_open {
            let from = CircuitState::Open {
                until: self.machine(until),
            };
            self.transition(key, from, CircuitState::HalfOpen, machine_now);
        }
        answer.map(Some)
    }

    /// [`GateParts::record_call`] past its fast path: anything but a
    /// success of a kept breaker that is quiet.
    #[cold]
    #[inline(never)]
    fn record_call_slow(
        &mut self,
        key: &PolicyKey<'_>,
        permit: recourse_core::breaker::Permit,
        entry: u64,
        result: CallResult,
        now: Instant,
    ) {
        let key = *key;
        let permit = Permit::from_parts(permit, entry);
        let machine_now = now;
        let now = self.shared(now);
        let to = match self.kept.breaker() {
            Some(entry) => self.exec.breakers.record_entry(entry, permit, result, now),
            None => self.exec.breakers.record_at(key, permit, result, now),
        };
        if let Some(to) = to {
            // The permit's episode is the state the result changed: a probe
            // was half-open, any other call closed.
            let from = if permit.is_probe() {
                CircuitState::HalfOpen
            } else {
                CircuitState::Closed
            };
            let to = to.map_instant(|t| self.machine(t));
            self.transition(key, from, to, machine_now);
        }
    }

    fn contained<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        if self.exec.contain_panics {
            std::panic::catch_unwind(AssertUnwindSafe(f)).ok()
        } else {
            Some(f())
        }
    }
}

impl<'a, S: TimerSource> GateParts for ExecParts<'a, S> {
    type Budget = &'a SharedBudget;
    type Permit = GatePermit<'a>;

    fn budget(&mut self, name: &str, _: recourse_core::AttemptKind) -> Option<&'a SharedBudget> {
        self.exec.budgets.get(name)
    }

    fn missing_budget_allows(&self) -> bool {
        self.exec.missing_budget == MissingBudgetMode::AllowUnsafe
    }

    fn decide(&mut self, budget: &'a SharedBudget, request: &BudgetRequest<'_>) -> Decision {
        let request = BudgetRequest {
            now: self.shared(request.now),
            ..*request
        };
        self.contained(|| budget.decide(&request))
            .unwrap_or(Decision {
                allowed: false,
                reason: PANIC_IN_BUDGET,
                reservation: None,
            })
    }

    fn settle(
        &mut self,
        budget: &'a SharedBudget,
        record: &AttemptRecord,
        reservation: Option<Reservation>,
        now: Instant,
    ) {
        let now = self.shared(now);
        if !self.exec.contain_panics {
            budget.settle(record, reservation, now);
            return;
        }
        // Contained, and never silent: the executor counts it and the call's
        // timeline carries the attribute `panic_in_budget_settle`.
        // Counted at the call's first such panic, also in a call being
        // dropped (its attempts settle as its future drops): no guard of
        // its own in every call's future (issue 16).
        if std::panic::catch_unwind(AssertUnwindSafe(|| budget.settle(record, reservation, now)))
            .is_err()
            && !self
                .call_panics
                .settle
                .swap(true, core::sync::atomic::Ordering::Relaxed)
        {
            self.exec
                .settle_panics
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn admit_call_at_once(&mut self, now: Instant) -> Option<GatePermit<'a>> {
        // A kept breaker that is closed: its permit, with no lock, no
        // transition to tell (inlined into the gate), once the shared
        // clock's offset is known. The breaker is kept with the permit.
        let entry = self.kept.breaker()?.get();
        let shared = self.shared_at_once(now)?;
        let generation = entry.admit_closed(&self.exec.breakers, shared)?;
        Some(GatePermit::kept(generation, entry))
    }

    fn admit_call(
        &mut self,
        key: PolicyKey<'_>,
        policy: &CircuitPolicy,
        now: Instant,
    ) -> Result<Option<GatePermit<'a>>, Refusal> {
        if let Some(entry) = self.kept.breaker() {
            let entry = entry.get();
            let shared = self.shared(now);
            if let Some(generation) = entry.admit_closed(&self.exec.breakers, shared) {
                return Ok(Some(GatePermit::kept(generation, entry)));
            }
        }
        self.admit_call_slow(&key, policy, now)
    }

    fn is_probe(permit: &GatePermit<'a>) -> bool {
        match permit {
            GatePermit::Kept(_) => false,
            GatePermit::Other(permit) => permit.is_probe(),
        }
    }

    #[inline(always)]
    fn record_success_at_once(&mut self, permit: &GatePermit<'a>, now: Instant) -> bool {
        // A success of a kept breaker that is quiet: counted in this
        // thread's shard, no state changes, no transition to tell (inlined
        // into the gate). The breaker is the permit's own: no look-up.
        let GatePermit::Kept(KeptPermit { generation, entry }) = *permit else {
            return false;
        };
        let Some(shared) = self.shared_at_once(now) else {
            return false;
        };
        entry.count_in_bucket(generation, shared)
    }

    fn record_call(
        &mut self,
        key: PolicyKey<'_>,
        permit: GatePermit<'a>,
        result: CallResult,
        now: Instant,
    ) {
        if result == CallResult::Success && self.record_success_at_once(&permit, now) {
            return;
        }
        let (permit, entry) = permit.permit().into_parts();
        self.record_call_slow(&key, permit, entry, result, now);
    }

    fn latency_quantile(
        &mut self,
        key: PolicyKey<'_>,
        q_permille: u32,
        now: Instant,
    ) -> Option<Duration> {
        let now = self.shared(now);
        match self.kept.latency() {
            Some(entry) => self.exec.latency.quantile_entry(entry, q_permille, now),
            None => self.exec.latency.quantile(key, q_permille, now),
        }
    }

    fn record_latency(&mut self, key: PolicyKey<'_>, latency: Duration, now: Instant) {
        let now = self.shared(now);
        match self.kept.latency() {
            Some(entry) => self.exec.latency.record_entry(entry, latency, now),
            None => self.exec.latency.record(key, latency, now),
        }
    }

    /// What the quantile trigger asks on every hedge decision: a kept
    /// sketch's published answer as it is kept, in nanoseconds (no
    /// [`Duration`] made and taken apart).
    fn latency_quantile_nanos(
        &mut self,
        key: PolicyKey<'_>,
        q_permille: u32,
        now: Instant,
    ) -> Option<u64> {
        let now = self.shared(now);
        match self.kept.latency() {
            Some(entry) => self
                .exec
                .latency
                .quantile_entry_nanos(entry, q_permille, now),
            None => self
                .exec
                .latency
                .quantile(key, q_permille, now)
                .map(recourse_core::time::nanos),
        }
    }

    /// What the gate records on every completed attempt: a kept sketch
    /// counts the nanoseconds as they are (inlined into the gate: one
    /// frame for the whole record).
    #[inline(always)]
    fn record_latency_nanos(&mut self, key: PolicyKey<'_>, nanos: u64, now: Instant) {
        let now = self.shared(now);
        match self.kept.latency() {
            Some(entry) => self.exec.latency.record_entry_nanos(entry, nanos, now),
            None => self
                .exec
                .latency
                .record(key, Duration::from_nanos(nanos), now),
        }
    }

    fn amplification_allows(
        &mut self,
        key: PolicyKey<'_>,
        policy: &AmplificationPolicy,
        now: Instant,
    ) -> bool {
        let now = self.shared(now);
        let ledgers = self.exec.budgets.amplification_ledgers();
        let reserve = self.upstream.reserve();
        match self.kept.ledger() {
            Some(entry) => ledgers.allows_extra_entry(entry, policy, now, reserve),
            None => ledgers.allows_extra_reserving(key, policy, now, reserve),
        }
    }

    fn amplification_record(
        &mut self,
        key: PolicyKey<'_>,
        kind: recourse_core::AttemptKind,
        now: Instant,
    ) {
        let now = self.shared(now);
        let kind = self.upstream.ledger_kind(kind);
        let ledgers = self.exec.budgets.amplification_ledgers();
        match self.kept.ledger() {
            Some(entry) => ledgers.record_entry(entry, kind, now),
            None => ledgers.record(key, kind, now),
        }
    }

    /// Tells the observer, as it happens (a panicking observer is
    /// contained).
    fn budget_decided(&mut self, key: PolicyKey<'_>, e: &BudgetEvent<'_>) {
        let Some(o) = self.exec.observer.as_deref() else {
            return;
        };
        let decision = BudgetDecision {
            attempt: e.attempt,
            kind: e.kind,
            budget: e.budget,
            cost: e.cost,
            mode: if e.found {
                "standard"
            } else {
                self.exec.missing_budget.as_str()
            },
            allowed: e.allowed,
            reason: e.reason,
        };
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| o.on_budget_decision(key, &decision)));
    }
}

#[cfg(test)]
mod spill_tests {
    use recourse_core::policy_gate::{Held, Holder};
    use recourse_core::AttemptId;

    use super::{Spill, INLINE_HELD};
    use crate::budget::SharedBudget;

    /// Past the inline room the reservations spill to the heap, and every
    /// one is released exactly once, in any order: with the room of a call
    /// without hedges (1), of one with a hedge (2), and the default (4).
    #[test]
    fn reservations_past_the_inline_room_spill_and_are_released_once() {
        spills_and_releases::<1>();
        spills_and_releases::<2>();
        spills_and_releases::<INLINE_HELD>();
    }

    fn spills_and_releases<const N: usize>() {
        let budget: SharedBudget = std::sync::Arc::new(recourse_core::budget::Unlimited);
        let mut spill = Spill::<'_, N>::default();
        let n = 7u16;
        assert!(usize::from(n) > N);
        for id in 0..n {
            let held = Held {
                id: AttemptId(id),
                budget: &budget,
                reservation: None,
            };
            assert!(spill.hold(held).is_ok());
        }
        assert_eq!(spill.len(), usize::from(n));
        assert!(spill.spill.is_some(), "spilled past the inline room");
        // A spilled one, an inline one, then the rest.
        for id in [n - 1, 0, n - 2, 1, 2, 3, 4] {
            let held = spill.release(AttemptId(id)).map(|h| h.id);
            assert_eq!(held, Some(AttemptId(id)));
            assert_eq!(spill.release(AttemptId(id)).map(|h| h.id), None);
        }
        assert_eq!(spill.len(), 0);
    }
}

/// Where a std call future's bytes go: the executor's parts, printed (run
/// `cargo test -p recourse-rs --lib std_call_layout -- --nocapture`) and
/// bounded where this file owns the layout (`Spill`, `Kept`).
#[cfg(test)]
mod layout {
    use core::future::IntoFuture;
    use core::mem::{size_of, size_of_val};

    use recourse_core::policy_gate::PolicyGate;
    use recourse_core::{AttemptInfo, Policy, PolicyKey};

    use super::{CallGate, ExecParts, Spill};
    use crate::classify::Contained;
    use crate::executor::Executor;
    use crate::key_cache::Kept;
    use crate::report::{CallPanics, Report};
    use crate::timer::{DefaultTimer, TimerSource};

    fn trivial(_: AttemptInfo) -> core::future::Ready<Result<u32, ()>> {
        core::future::ready(Ok(1))
    }

    #[test]
    fn std_call_layout() {
        let exec = Executor::new();
        let key = PolicyKey::new("svc", "Get");
        let policy = Policy::DEFAULT;
        let kept = Kept::Own {
            policy: None,
            breaker: None,
            latency: None,
            ledger: None,
        };
        let panics = CallPanics::default();
        let parts = || ExecParts {
            exec: &exec,
            kept: &kept,
            call_panics: &panics,
            offset: None,
            upstream: recourse_core::amplification::UpstreamEffect::None,
        };
        let report = || Report {
            call_panics: Some(&panics),
            ..Report::new(&exec, None, None, None)
        };
        let classifier = || Contained {
            inner: recourse_core::DefaultClassifier,
            contain: true,
            panicked: &panics.classifier,
        };
        // The core driver's future as `Executor::run` builds it (the
        // attempt future without its 8-byte panic watch).
        macro_rules! driver {
            ($held:expr) => {
                recourse_core::call(key, &policy, DefaultTimer.timer(), trivial)
                    .classifier(classifier())
                    .observer(report())
                    .limits(recourse_core::Limits::DEFAULT)
                    .gate::<CallGate<'_, DefaultTimer, { $held }>>(PolicyGate::new(
                        key,
                        &policy,
                        None,
                        parts(),
                    ))
            };
        }
        let one = driver!(1).into_future();
        let two = driver!(2).slots::<2>().into_future();
        let rows = [
            ("Spill (4 inline held reservations)", size_of::<Spill<'_>>()),
            (
                "Spill (1 inline held reservation)",
                size_of::<Spill<'_, 1>>(),
            ),
            (
                "Spill (2 inline held reservations)",
                size_of::<Spill<'_, 2>>(),
            ),
            ("Kept", size_of::<Kept<'_>>()),
            ("ExecParts", size_of::<ExecParts<'_, DefaultTimer>>()),
            (
                "CallGate (PolicyGate + ExecParts + Spill)",
                size_of::<CallGate<'_, DefaultTimer>>(),
            ),
            ("CallPanics", size_of::<CallPanics>()),
            (
                "Report (the observer)",
                size_of::<Report<'_, DefaultTimer>>(),
            ),
            ("Contained classifier", size_of_val(&classifier())),
            (
                "call timer (DefaultCallTimer)",
                size_of_val(&DefaultTimer.timer()),
            ),
            (
                "core driver future, executor's pieces, 1 slot",
                size_of_val(&one),
            ),
            (
                "core driver future, executor's pieces, 2 slots",
                size_of_val(&two),
            ),
            (
                "Executor::call future (async fn state)",
                size_of_val(&exec.call("svc.Get", trivial)),
            ),
            (
                "do_value future (async fn state)",
                size_of_val(&crate::do_value("svc.Get", trivial)),
            ),
        ];
        std::println!();
        for (name, size) in rows {
            std::println!("    {name:<50} {size:>5} B");
        }
        // 160 with its spill a `Vec` inline.
        assert!(size_of::<Spill<'_>>() <= 144, "Spill grew");
        assert!(size_of::<Kept<'_>>() <= 48, "Kept grew");
        // The permit the gate keeps with its breaker: no larger than the
        // store's permit it replaced in every breaker-on call's gate.
        assert!(
            size_of::<Option<super::GatePermit<'_>>>()
                <= size_of::<Option<crate::breakers::Permit>>(),
            "the gate's permit grew"
        );
    }
}
