//! [`CallMachine::poll`]: the next action, from the phase the events left
//! the machine in — launches (after the gate), hedges, cuts at deadlines,
//! cancels, waits and the finish.

use core::ops::ControlFlow;
use core::time::Duration;

use super::plan::attempt_deadline;
use super::{
    cut_reason, Action, CallMachine, Cause, Completed, Core, Event, HedgeRoom, Last, Phase,
    Settings, Slot, SlotRoom, Verdict, WaitReason,
};
use crate::gate::{Admission, AdmitRequest, Gate, Gatekeeper};
use crate::hedge::HedgeState;
use crate::outcome::Outcome;
use crate::record::{AttemptId, AttemptInfo, AttemptRecord};
use crate::time::Instant;
use crate::verdict::reason;

/// Where a drain's actions go: [`CallMachine::poll`] hands each to its
/// caller, one per call; the call future carries them out as they come
/// (`staged.rs`).
pub(crate) trait Emit {
    /// The call's gate.
    type Gate: Gate + ?Sized;
    /// The call's gate.
    fn gate(&mut self) -> &mut Self::Gate;
    /// A launch, a cancel or a record: `Break` ends the drain with it,
    /// `Continue` goes on (it was carried out).
    fn emit(&mut self, action: Action) -> ControlFlow<Action>;
    /// [`emit`](Self::emit) of [`Action::Record`] with `record`, which a
    /// driver that carries records out in place reads where it was built
    /// (no copy of its 128 bytes into an action).
    #[inline(always)]
    fn record(&mut self, record: &AttemptRecord) -> ControlFlow<Action> {
        self.emit(Action::Record(*record))
    }
    /// Whether [`record`](Self::record) does anything: `false` when the
    /// driver's observer ignores records ([`poll`](CallMachine::poll)'s
    /// caller always gets them).
    #[inline(always)]
    fn hears_records(&self) -> bool {
        true
    }
    /// An admitted attempt ran to completion: for a driver that hears
    /// records, its record, built, goes to the gate
    /// ([`Gate::attempt_ended`]) then to [`record`](Self::record); one
    /// that hears none tells the gate from the makings
    /// ([`Gate::attempt_completed`]: a policy whose gate only samples
    /// latencies, a quantile hedge trigger's, builds no record).
    #[inline(always)]
    fn completed(&mut self, completed: &Completed) -> ControlFlow<Action> {
        if self.hears_records() {
            let record = completed.record();
            self.gate().attempt_ended(&record);
            self.record(&record)
        } else {
            self.gate().attempt_completed(completed);
            ControlFlow::Continue(())
        }
    }
    /// Whether the drain inlines its launch of a retry group's primary
    /// ([`Core::launch_primary`]): a driver whose loop is the machine, as
    /// the simulator's ([`CallMachine::feed`]), saves its call (about 40
    /// instructions a simulated call); the call future keeps it as it was
    /// (forced inline there, it cost the executor's success path 12
    /// instructions and the embedded call site 220 bytes of flash).
    const INLINE_LAUNCH: bool = false;
}

/// Hands `$action` to `$out`, and returns it when `$out` stops there.
macro_rules! emit {
    ($out:expr, $action:expr) => {
        if let ::core::ops::ControlFlow::Break(action) = $out.emit($action) {
            return action;
        }
    };
}

/// The body of [`Core::launch_primary`] and its inlined twin: the next
/// retry group's primary, asked of the gate and launched.
macro_rules! launch_primary {
    ($core:ident, $gate:ident) => {{
        let previous = if $core.groups == 0 {
            None
        } else {
            $core.last_outcome()
        };
        let info = $core.next_attempt(u32::from($core.groups), 0);
        let admission = $gate.admit(&AdmitRequest {
            attempt: info,
            previous,
            now: $core.now,
        });
        $core.primary(info, admission)
    }};
}

/// [`CallMachine::poll`]'s [`Emit`]: stops at every action.
struct OneAction<'a, G: ?Sized>(&'a mut G);

impl<G: Gate + ?Sized> Emit for OneAction<'_, G> {
    type Gate = G;
    #[inline(always)]
    fn gate(&mut self) -> &mut G {
        self.0
    }
    #[inline(always)]
    fn emit(&mut self, action: Action) -> ControlFlow<Action> {
        ControlFlow::Break(action)
    }
}

/// Where [`CallMachine::feed`] carries out a call's actions as the
/// machine decides them: launches, cancels and records, each in place
/// (no [`Action`] is copied out per step), with the call's gate beside
/// them. The same decisions, in the same order, as [`CallMachine::handle`]
/// then [`CallMachine::poll`] until it waits, carrying out each action
/// as it is returned.
pub trait ActionSink {
    /// The call's gate.
    type Gate: Gate + ?Sized;
    /// The call's gate (consulted before every launch, told when each
    /// admitted attempt ends).
    fn gate(&mut self) -> &mut Self::Gate;
    /// [`Action::Launch`]: start the operation for this attempt.
    fn launch(&mut self, info: AttemptInfo);
    /// [`Action::Cancel`]: drop this attempt; its record says why.
    fn cancel(&mut self, record: &AttemptRecord);
    /// [`Action::Record`]: an attempt ended (or was refused).
    fn record(&mut self, record: &AttemptRecord);
    /// Whether [`record`](Self::record) wants the records of admitted
    /// attempts' ends: `false` leaves them out (the gate still hears every
    /// end; a refused attempt's record still comes), and the machine then
    /// builds one only for a gate that hears attempts.
    #[inline(always)]
    fn hears_records(&self) -> bool {
        true
    }
    /// An admitted attempt ran to completion, for a sink that hears no
    /// records ([`hears_records`](Self::hears_records) `false`; one that
    /// does gets [`Gate::attempt_ended`] then [`record`](Self::record) of
    /// its record instead): tells the gate, from the makings
    /// ([`Gate::attempt_completed`]: a [`PolicyGate`](crate::policy_gate::PolicyGate)
    /// builds the record only when the policy names a budget).
    #[inline(always)]
    fn attempt_completed(&mut self, completed: &Completed) {
        self.gate().attempt_completed(completed);
    }
}

/// [`CallMachine::feed`]'s [`Emit`]: carries every action out through an
/// [`ActionSink`].
struct Through<'a, S: ?Sized>(&'a mut S);

impl<S: ActionSink + ?Sized> Emit for Through<'_, S> {
    type Gate = S::Gate;
    #[inline(always)]
    fn gate(&mut self) -> &mut S::Gate {
        self.0.gate()
    }
    #[inline(always)]
    fn emit(&mut self, action: Action) -> ControlFlow<Action> {
        match action {
            Action::Launch(info) => self.0.launch(info),
            Action::Cancel(record) => self.0.cancel(&record),
            Action::Record(record) => self.0.record(&record),
            // A drain returns these itself.
            Action::Wait { .. } | Action::AwaitAttempts | Action::Finish(_) => {
                return ControlFlow::Break(action)
            }
        }
        ControlFlow::Continue(())
    }
    #[inline(always)]
    fn record(&mut self, record: &AttemptRecord) -> ControlFlow<Action> {
        // Built for the gate when the sink hears none.
        if self.0.hears_records() {
            self.0.record(record);
        }
        ControlFlow::Continue(())
    }
    #[inline(always)]
    fn hears_records(&self) -> bool {
        self.0.hears_records()
    }
    #[inline(always)]
    fn completed(&mut self, completed: &Completed) -> ControlFlow<Action> {
        if self.0.hears_records() {
            let record = completed.record();
            self.0.gate().attempt_ended(&record);
            self.0.record(&record);
        } else {
            self.0.attempt_completed(completed);
        }
        ControlFlow::Continue(())
    }
    const INLINE_LAUNCH: bool = true;
}

impl<const N: usize> CallMachine<N> {
    /// The next action. `gate` is consulted before every launch and told
    /// when each admitted attempt ends.
    ///
    /// What changes the answer: events fed since the last call; nothing else.
    #[must_use = "drain poll until Wait, AwaitAttempts or Finish and carry out each action"]
    #[inline(always)]
    pub fn poll<G: Gate + ?Sized>(&mut self, gate: &mut G) -> Action {
        // Read in place, not `take`n: a `take` copies the whole option out
        // before it tests it.
        let ended = match self.pending {
            Some(pending) => {
                self.pending = None;
                Some(pending)
            }
            None => None,
        };
        self.run().drain_with(ended, &mut OneAction(gate))
    }

    /// Feeds `event` and carries out the actions due through `sink`
    /// until the machine must wait or has finished: returns that last
    /// action, [`Action::Wait`], [`Action::AwaitAttempts`] or
    /// [`Action::Finish`]. The same gate calls and actions, in the same
    /// order, as [`handle`](Self::handle) then [`poll`](Self::poll) until
    /// one of those three, without a per-action round trip (a record the
    /// event produced is handed to the gate and `sink` at once, not kept
    /// for the next poll). An event handled before and not polled yet
    /// has its actions carried out first.
    #[inline(always)]
    pub fn feed<S: ActionSink + ?Sized>(&mut self, event: Event, sink: &mut S) -> Action {
        if self.pending.is_some() {
            self.flush_pending(sink);
        }
        self.run().feed_with(Some(event), &mut Through(sink))
    }

    /// [`feed`](Self::feed)'s rare case: an event [`handle`](Self::handle)d
    /// and not polled yet, whose actions come before the next event's.
    #[cold]
    fn flush_pending<S: ActionSink + ?Sized>(&mut self, sink: &mut S) {
        let ended = self.pending.take();
        let _ = self.run().drain_with(ended, &mut Through(sink));
    }

    /// [`Core::cancelled_with`], the record an event kept handed out
    /// first.
    pub(crate) fn cancelled_with<E: Emit>(&mut self, out: &mut E) -> Verdict {
        if let Some((slot, outcome, end, backoff)) = self.pending.take() {
            let record = slot.record(end, outcome, false, backoff);
            out.gate().attempt_ended(&record);
            let _ = out.emit(Action::Record(record));
        }
        self.run().cancelled_with(out)
    }
}

impl<C: Settings, const N: usize, H: HedgeRoom> Core<'_, C, N, H> {
    /// Carries out the actions due through `out` until the machine must
    /// wait or has finished, or `out` stops at one: [`poll`](Self::poll)
    /// stops at every action, the call future's drain at none (one
    /// decision path, written once, whichever way it is drained). A record
    /// an event produced is handed out first, by
    /// [`feed_with`](Self::feed_with).
    #[inline(always)]
    pub(super) fn run_with<E: Emit>(&mut self, out: &mut E) -> Action {
        loop {
            match self.phase {
                Phase::Idle => return Action::AwaitAttempts,
                Phase::Done(v) => return Action::Finish(v),
                Phase::Ending(v) => match self.ending(out.gate(), v) {
                    Some(cancel) => emit!(out, cancel),
                    None => return Action::Finish(v),
                },
                Phase::BackoffUnchecked(until) => {
                    if self.unreachable(out.gate(), until) {
                        self.fail(Cause::DeadlineUnreachable);
                    } else {
                        self.phase = Phase::Backoff(until);
                    }
                }
                Phase::Backoff(until) => {
                    if self.now < until {
                        return Action::Wait {
                            until,
                            reason: WaitReason::Backoff,
                        };
                    }
                    self.phase = Phase::Ready;
                }
                Phase::Ready => {
                    if self.deadline_passed() {
                        self.fail(Cause::DeadlineExceeded);
                        continue;
                    }
                    if self.launched == u16::MAX {
                        // Attempt ids ran out (only an unnormalized policy
                        // allows this many): ids must stay unique.
                        self.fail(Cause::Exhausted);
                        continue;
                    }
                    let action = if E::INLINE_LAUNCH {
                        self.by_value().launch_primary_inlined(out.gate())
                    } else {
                        self.by_value().launch_primary(out.gate())
                    };
                    emit!(out, action);
                }
                Phase::Running(_) => {
                    if self.deadline_passed() {
                        self.fail(Cause::DeadlineExceeded);
                        continue;
                    }
                    if let Some(slot) = self.take_expired_slot_if_timed() {
                        let outcome = Outcome::retryable(reason::ATTEMPT_TIMEOUT);
                        let record = self.record(&slot, outcome, true);
                        out.gate().attempt_ended(&record);
                        self.attempt_failed(slot.id, outcome);
                        emit!(out, Action::Cancel(record));
                        continue;
                    }
                    if let Some(action) = self.by_value().maybe_hedge(out.gate()) {
                        emit!(out, action);
                        continue;
                    }
                    return self.wait_running();
                }
            }
        }
    }

    /// Winds up a cancelled call (after [`Event::Cancel`]): carries out
    /// the cancels of the attempts still in flight through `out`, and
    /// finishes. What [`run_with`](Self::run_with) does in the phases
    /// a cancel leaves, without the rest of its loop: the call future's
    /// drop, whose sink launches nothing, compiles only this.
    pub(crate) fn cancelled_with<E: Emit>(&mut self, out: &mut E) -> Verdict {
        loop {
            match self.phase {
                Phase::Ending(v) => match self.ending(out.gate(), v) {
                    Some(cancel) => {
                        let _ = out.emit(cancel);
                    }
                    None => return v,
                },
                Phase::Done(v) => return v,
                // A cancel leaves the machine ending or done.
                _ => unreachable!(),
            }
        }
    }

    /// The ending phase's next step: the cancel of an attempt still in
    /// flight (its record, with the verdict's [`cut_reason`]), or, with
    /// none left, the finish with `verdict` (`None`; the gate told).
    #[inline(always)]
    fn ending<G: Gate + ?Sized>(&mut self, gate: &mut G, verdict: Verdict) -> Option<Action> {
        if let Some(slot) = self.take_any_slot() {
            let record = self.record(&slot, Outcome::abort(cut_reason(verdict)), true);
            gate.attempt_ended(&record);
            return Some(Action::Cancel(record));
        }
        self.phase = Phase::Done(verdict);
        gate.call_ended(&verdict, self.now);
        None
    }

    #[inline]
    // By value, as `group_done`.
    pub(super) fn launch_primary<G: Gate + ?Sized>(mut self, gate: &mut G) -> Action {
        launch_primary!(self, gate)
    }

    /// [`launch_primary`](Self::launch_primary), inlined where it is
    /// called (see [`Emit::INLINE_LAUNCH`]; one body, written once in
    /// [`launch_primary!`], so that `launch_primary` compiles as it did for
    /// the call future).
    #[inline(always)]
    fn launch_primary_inlined<G: Gate + ?Sized>(mut self, gate: &mut G) -> Action {
        launch_primary!(self, gate)
    }

    /// The next retry group's primary `info`, once the gate answered
    /// `admission`: its launch, or the record of its refusal (which ends
    /// the call).
    ///
    /// The call future's compact stage asks the gate about a call's first
    /// primary itself; when the call then needs a full machine, this takes
    /// the answer over (see [`Staged`](super::Staged)).
    #[inline(always)]
    pub(crate) fn primary(&mut self, info: AttemptInfo, admission: Admission) -> Action {
        let slot = match self.slot(info, admission) {
            Ok(slot) => slot,
            Err((slot, by)) => {
                self.fail(match by {
                    Gatekeeper::Budget => Cause::BudgetDenied,
                    Gatekeeper::Circuit => Cause::CircuitOpen,
                });
                self.slots.set_last(Last::refused(slot.budget_reason));
                return Action::Record(self.refused(&slot));
            }
        };
        self.groups += 1;
        self.hedge = H::NEW;
        self.phase = Phase::Running(self.now);
        // A primary launches only with no attempt in flight. (No panic
        // message: its text is flash on a microcontroller.)
        match self.slots.free() {
            Some(free) => self.run(free, slot),
            None => unreachable!(),
        }
    }

    /// The next attempt's info: retry group `retry_index`, hedge
    /// `hedge_index` (0 for the primary).
    fn next_attempt(&self, retry_index: u32, hedge_index: u32) -> AttemptInfo {
        AttemptInfo {
            id: AttemptId(self.launched),
            retry_index,
            hedge_index,
            is_hedge: hedge_index > 0,
            deadline: self.attempt_deadline(),
        }
    }

    /// Asks the gate about the next attempt: its slot when admitted, else
    /// the refused attempt's slot and who refused.
    pub(super) fn admit<G: Gate + ?Sized>(
        &mut self,
        gate: &mut G,
        retry_index: u32,
        hedge_index: u32,
        previous: Option<Outcome>,
    ) -> Result<Slot, (Slot, Gatekeeper)> {
        let info = self.next_attempt(retry_index, hedge_index);
        let admission = gate.admit(&AdmitRequest {
            attempt: info,
            previous,
            now: self.now,
        });
        self.slot(info, admission)
    }

    /// The slot of attempt `info`, which the gate answered with
    /// `admission`: `Err` with who refused when it did.
    fn slot(
        &mut self,
        info: AttemptInfo,
        admission: Admission,
    ) -> Result<Slot, (Slot, Gatekeeper)> {
        self.launched += 1;
        let slot = Slot::new(info, self.now, admission.reason);
        if admission.allowed {
            Ok(slot)
        } else {
            Err((slot, admission.by))
        }
    }

    /// The record of an attempt the gate refused: it never ran.
    pub(super) fn refused(&self, slot: &Slot) -> AttemptRecord {
        let mut record = self.record(slot, Outcome::abort(slot.budget_reason), false);
        record.budget_allowed = false;
        record
    }

    /// Puts an admitted attempt in slot `free` and launches it.
    pub(super) fn run(&mut self, free: usize, slot: Slot) -> Action {
        let info = slot.info();
        self.slots.put(free, slot);
        self.ran += 1;
        Action::Launch(info)
    }

    /// Consults the trigger while the group may hedge; launches (or records
    /// the refusal of) a hedge when it says so.
    // By value, as `group_done`; inlined into the drain, its one caller
    // (out of line, its call cost the simulator 12 instructions a call and
    // the hedged call future more).
    #[inline(always)]
    pub(super) fn maybe_hedge<G: Gate + ?Sized>(mut self, gate: &mut G) -> Option<Action> {
        self.set_next_hedge_check(None);
        // One slot has no room for a hedge: a 1-slot machine compiles
        // without the trigger.
        if N == 1 {
            return None;
        }
        if self.hedge.stopped()
            || u32::from(self.hedge.hedges()) >= self.max_hedges()
            || self.hedge.terminal().is_some()
            || self.launched == u16::MAX
        {
            return None;
        }
        let free = self.slots.free()?;
        let decision = gate.hedge(&HedgeState {
            retry_index: u32::from(self.groups) - 1,
            group_start: self.group_start(),
            now: self.now,
            hedges: u32::from(self.hedge.hedges()),
            max_hedges: self.max_hedges(),
            hedge_delay: self.cfg.hedge_delay(),
        });
        if !decision.spawn {
            // Never sooner than 1 ms from now: a trigger cannot make the
            // machine spin. At the clock's end (`Instant::MAX`) no instant
            // comes later, so there is no check to wait for.
            let floor = self.now + Duration::from_millis(1);
            let next = decision
                .next_check
                .filter(|_| floor > self.now)
                .map(|t| t.max(floor));
            self.set_next_hedge_check(next);
            return None;
        }
        if self.unreachable(gate, self.now) {
            // A hedge that cannot end in time only adds load.
            self.hedge.stop();
            return None;
        }
        self.hedge.add_hedge();
        let retry_index = u32::from(self.groups) - 1;
        match self.admit(gate, retry_index, u32::from(self.hedge.hedges()), None) {
            Ok(slot) => Some(self.run(free, slot)),
            Err((slot, _)) => {
                // The primary keeps running; this group hedges no more.
                self.hedge.stop();
                Some(Action::Record(self.refused(&slot)))
            }
        }
    }

    /// When the running group's primary launched (see
    /// [`Phase::Running`]).
    #[inline(always)]
    fn group_start(&self) -> Instant {
        match self.phase {
            Phase::Running(start) => start,
            _ => Instant::ZERO,
        }
    }

    // One caller, the drain's loop: inlined there.
    #[inline(always)]
    pub(super) fn wait_running(&self) -> Action {
        let attempt = if self.attempts_timed() {
            self.slots.first_deadline()
        } else {
            None
        };
        if let Some(h) = self.next_hedge_check() {
            if attempt.is_none_or(|a| h < a) && self.deadline().is_none_or(|d| h < d) {
                return Action::Wait {
                    until: h,
                    reason: WaitReason::HedgeDelay,
                };
            }
        }
        match (attempt, self.deadline()) {
            (Some(a), Some(d)) if a < d => Action::Wait {
                until: a,
                reason: WaitReason::AttemptDeadline,
            },
            (_, Some(d)) => Action::Wait {
                until: d,
                reason: WaitReason::CallDeadline,
            },
            (Some(a), None) => Action::Wait {
                until: a,
                reason: WaitReason::AttemptDeadline,
            },
            (None, None) => Action::AwaitAttempts,
        }
    }

    /// Whether an attempt launched at `start` is expected (by the gate's
    /// expected latency) to end at or past the overall deadline.
    #[inline]
    pub(super) fn unreachable<G: Gate + ?Sized>(&self, gate: &mut G, start: Instant) -> bool {
        let Some(deadline) = self.deadline() else {
            return false;
        };
        gate.expected_latency(self.now)
            .is_some_and(|expected| start.saturating_add(expected) >= deadline)
    }

    pub(super) fn deadline_passed(&self) -> bool {
        self.deadline().is_some_and(|d| self.now >= d)
    }

    pub(super) fn attempt_deadline(&self) -> Option<Instant> {
        let per_attempt = self.cfg.per_attempt();
        let own = (per_attempt != 0).then(|| self.now.plus_nanos(per_attempt));
        attempt_deadline(own, self.deadline())
    }

    pub(super) fn in_flight(&self) -> usize {
        self.slots.in_flight()
    }

    pub(super) fn take_slot(&mut self, id: AttemptId) -> Option<Slot> {
        self.slots.take_where(|s| s.id == id)
    }

    pub(super) fn take_any_slot(&mut self) -> Option<Slot> {
        self.slots.take_where(|_| true)
    }

    /// Whether an attempt in flight may have a deadline: none has without
    /// a per-attempt timeout and an overall deadline (most policies have
    /// neither), and then its slots need no scan for one (a simulated
    /// call's two scans cost about 30 instructions). The public machine's
    /// settings tell with a load ([`Settings::timed_attempts`]); the call
    /// future's always scan (skipping there too took the core hedge
    /// 1,799 -> 1,747 and the executor's 2,654 -> 2,619, but its `p95`
    /// hedge only 2,917 -> 2,883, past 1.1 times the fixed one).
    #[inline(always)]
    fn attempts_timed(&self) -> bool {
        self.deadline_at != Instant::ZERO || self.cfg.timed_attempts()
    }

    /// [`take_expired_slot`](Self::take_expired_slot), when an attempt
    /// may have a deadline.
    #[inline(always)]
    fn take_expired_slot_if_timed(&mut self) -> Option<Slot> {
        if !self.attempts_timed() {
            return None;
        }
        self.take_expired_slot()
    }

    pub(super) fn take_expired_slot(&mut self) -> Option<Slot> {
        let now = self.now;
        self.slots
            .take_where(|s| s.deadline().is_some_and(|d| now >= d))
    }

    pub(super) fn record(&self, slot: &Slot, outcome: Outcome, cancelled: bool) -> AttemptRecord {
        slot.record(self.now, outcome, cancelled, self.backoff_of(slot))
    }

    /// The sleep before `slot`'s attempt: its group's backoff for the
    /// group's primary, none for a hedge. (A group starts with no attempt
    /// in flight, so every slot is of the running group.)
    #[inline]
    pub(super) fn backoff_of(&self, slot: &Slot) -> Duration {
        if slot.hedge_index == 0 {
            self.group_backoff()
        } else {
            Duration::ZERO
        }
    }
}
