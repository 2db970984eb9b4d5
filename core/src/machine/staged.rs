//! [`Staged`]: the machine as a call future holds it — a compact stage
//! that decides a call's attempts while it cannot hedge and has no
//! deadline to watch, which grows into the full machine when the call
//! needs one.
//!
//! Most calls succeed at their first attempt. While a call cannot hedge,
//! one attempt at most is in flight, and nothing can happen while it runs
//! but that attempt completing, a deadline passing or the caller giving
//! up, so the machine starts small: it holds the policy as the caller gave
//! it (a reference is one word), asks the gate about the first attempt,
//! launches it, waits for it and, when it succeeds, records it and
//! finishes. When the attempt fails retryably under a policy without
//! backoff (no retry-after hint, attempts left, no deadline due), the
//! stage records the failure and asks the gate about the next group's
//! primary at once, as the full machine does, keeping only the attempt's
//! index. Under a policy with backoff and without timeouts (on a 64-bit
//! target, see [`SLEEPS`]) it sleeps the backoff itself: it draws the
//! delay the full machine would draw (from the same RNG, the sequence's
//! state following from the delays drawn), waits until the failure's end
//! plus it, and relaunches ([`Next::Relaunch`]), keeping only the delay
//! slept. Anything else — a policy that hedges, a deadline already due, a
//! refusal, a backoff with deadlines to check it against, a non-retryable
//! failure, attempts exhausted, a retry-after hint, a deadline passing, a
//! cancel — grows it, at that point, into
//! the full [`CallMachine`](super::CallMachine) in exactly the state that
//! machine would be in had it decided from the start (a refusal is taken
//! over by the machine's own
//! [`CallMachine::primary`](super::CallMachine::primary); a running
//! attempt is set in its slot by [`Core::launched`](super::Core::launched),
//! a retry due, or slept before, by
//! [`Core::retry_due`](super::Core::retry_due)), and the
//! event that grew it is fed to it; it decides the rest.
//!
//! A staged machine is driven exactly as a full one (the crate docs'
//! driver contract; [`Staged::feed`] is one event and the compact stage's
//! drain after it, [`Staged::drain`] the full machine's)
//! and gives the same actions, records, gate calls and verdict for the same
//! events; only the cost differs. `tests/staged.rs` runs seeded random
//! calls both ways and compares everything a caller, an observer and a gate
//! see. The compact stage is written to be inlined into the call future's
//! poll (a few branches per action, no loop, nothing stored that the
//! success path does not need), growth to stay out of it (`#[cold]`).

use core::borrow::Borrow;
use core::ops::ControlFlow;

use super::plan::{first_launch, hedges_in, launch};
use super::poll::Emit;
use super::{Action, Core, Event, HedgeRoom, Hedging, Limits, Settings, Slot, State};
use crate::backoff::BackoffSpec;
use crate::gate::{Admission, AdmitRequest, Gate};
use crate::outcome::{Outcome, OutcomeKind};
use crate::policy::Policy;
use crate::record::{AttemptId, AttemptInfo, AttemptRecord};
use crate::time::{nanos, Instant};
use crate::verdict::Verdict;
use core::time::Duration;

/// Whether the compact stage sleeps a call's backoffs itself (see
/// [`First::sleeps`]), rather than growing into the full machine at the
/// failure before one. Not on a 32-bit target: there the stage's sleep —
/// its draw, its wake at both places the driver feeds an attempt's end
/// and a tick, its relaunch in the drain — took the Cortex-M3 example's
/// call site from 11.5 KiB of flash to 12.3–13.9 KiB, past its 12 KiB
/// goal, for a path its policy (with timeouts) never takes; on a 64-bit
/// target it saves a retried call the growth and the full machine's
/// backoff (the executor's one-failure retry 1,483 → 1,328 instructions,
/// two failures 2,053 → 1,751). The same actions either way: only the
/// cost differs.
pub(crate) const SLEEPS: bool = cfg!(not(target_pointer_width = "32"));

/// The full machine a [`Staged`] grows into, for every width: the
/// operations the call future and the compact stage use. `P` is how the
/// call holds its policy: the staged machine keeps it, with the limits
/// ([`PolicySettings`]), and hands it to the full machine at each step.
#[doc(hidden)]
pub trait MachineOps<P> {
    /// Attempts it runs at once.
    const SLOTS: usize;
    /// Whether a call starts in the compact stage (the crate's tests turn
    /// it off, to compare a staged machine with a full one).
    const COMPACT: bool = true;
    fn handle(&mut self, cfg: &PolicySettings<P>, event: Event);
    /// Feeds `event`, if any, and carries out the actions due through
    /// `sink` until the machine must wait or has finished (see
    /// [`CallMachine::handle`](super::CallMachine::handle) and
    /// [`CallMachine::poll`](super::CallMachine::poll)); never returns
    /// [`Next::Drain`] or [`Next::Launched`]. One function for both: the
    /// machine's decisions compile once.
    fn feed<S: Sink>(
        &mut self,
        cfg: &PolicySettings<P>,
        event: Option<Event>,
        sink: &mut S,
    ) -> Next;
    /// Winds up a call [`Event::Cancel`] was fed to: cancels what is in
    /// flight through `sink`, and finishes (see
    /// [`CallMachine::cancelled_with`](super::CallMachine::cancelled_with)).
    fn cancelled<S: Sink>(&mut self, cfg: &PolicySettings<P>, sink: &mut S) -> Verdict;
    fn start(&self) -> Instant;
    fn now(&self) -> Instant;
    fn attempts(&self) -> u32;
    fn refusal(&self) -> Option<&'static str>;
    fn make(cfg: &PolicySettings<P>, rng: fastrand::Rng) -> Self;
    /// Takes over the gate's answer about the first primary (see
    /// [`CallMachine::primary`](super::CallMachine::primary)).
    fn primary(
        &mut self,
        cfg: &PolicySettings<P>,
        info: AttemptInfo,
        admission: Admission,
    ) -> Action;
    /// Takes over the compact stage's attempt of retry group `group`,
    /// launched at `at`, admitted and running, after the sleep and with
    /// the backoff sequence's state `backoff` (see
    /// [`Core::launched`](super::Core::launched)).
    fn launched(
        &mut self,
        cfg: &PolicySettings<P>,
        group: u16,
        start: Instant,
        at: Instant,
        budget_reason: &'static str,
        backoff: (Duration, u64),
    );
    /// Takes over the compact stage's call whose retry group `group` is
    /// due at `at` (or, sleeping, at `wake`) after the retryable failure
    /// `last` (see [`Core::retry_due`](super::Core::retry_due)).
    #[allow(clippy::too_many_arguments)]
    fn retry_due(
        &mut self,
        cfg: &PolicySettings<P>,
        group: u16,
        start: Instant,
        at: Instant,
        last: Outcome,
        backoff: (Duration, u64),
        wake: Option<Instant>,
    );
    /// Takes attempt `id`'s success at `now`, whose record the compact
    /// stage gave out already (and released at the gate): what
    /// [`handle`](Self::handle) does with that event, without the record
    /// (see [`Core::succeeded`](super::Core::succeeded)).
    fn succeeded(&mut self, cfg: &PolicySettings<P>, id: AttemptId, now: Instant);
    /// Finishes a call the compact stage finished, whose end the gate has
    /// heard (see [`CallMachine::finish_told`](super::CallMachine::finish_told)).
    fn finish_told(&mut self, cfg: &PolicySettings<P>);
}

/// The call future's machine's settings: the caller's policy as the call
/// holds it (borrowed, shared or owned: one word for a borrowed one), and
/// the two limits the machine reads.
#[derive(Clone, Debug)]
#[doc(hidden)]
pub struct PolicySettings<P> {
    policy: P,
    /// [`Limits::max_retry_after`], its whole seconds and nanoseconds
    /// apart: with the ceiling beside them, 16 bytes where a `Duration`
    /// (padded to 16) and the ceiling took 24, and as cheap to write and
    /// read back (no conversion).
    max_retry_after_secs: u64,
    max_retry_after_nanos: u32,
    max_hedges_ceiling: u32,
}

impl<P: Borrow<Policy>> PolicySettings<P> {
    /// `policy` under `limits`.
    #[inline]
    pub(crate) fn new(policy: P, limits: Limits) -> Self {
        Self {
            policy,
            max_retry_after_secs: limits.max_retry_after.as_secs(),
            max_retry_after_nanos: limits.max_retry_after.subsec_nanos(),
            max_hedges_ceiling: limits.max_hedges_ceiling,
        }
    }

    /// The limits.
    #[inline(always)]
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_retry_after: self.max_retry_after(),
            max_hedges_ceiling: self.max_hedges_ceiling,
        }
    }

    /// The policy.
    #[inline(always)]
    pub(crate) fn policy(&self) -> &Policy {
        self.policy.borrow()
    }

    #[inline(always)]
    fn retry(&self) -> &crate::policy::RetryPolicy {
        &self.policy.borrow().retry
    }
}

impl<P: Borrow<Policy>> Settings for PolicySettings<P> {
    #[inline(always)]
    fn max_attempts(&self) -> u32 {
        self.retry().max_attempts.max(1)
    }
    #[inline(always)]
    fn per_attempt(&self) -> u64 {
        super::per_attempt_timeout(self.policy.borrow()).map_or(0, nanos)
    }
    #[inline(always)]
    fn overall(&self) -> u64 {
        super::overall_timeout(self.policy.borrow()).map_or(0, nanos)
    }
    #[inline(always)]
    fn max_retry_after(&self) -> Duration {
        super::joined(self.max_retry_after_secs, self.max_retry_after_nanos)
    }
    #[inline(always)]
    fn next_delay(&self, state: &mut u64, milli: &mut u16, rng: &mut fastrand::Rng) -> Duration {
        let r = self.retry();
        if r.initial_backoff.is_zero() && r.max_backoff.is_zero() {
            return Duration::ZERO;
        }
        self.draw(state, milli, rng)
    }
    #[inline(always)]
    fn max_hedges(&self, slots: usize) -> u32 {
        hedges_in(
            super::policy_hedges(self.policy.borrow()),
            self.max_hedges_ceiling,
            slots,
        )
    }
    #[inline(always)]
    fn hedge_delay(&self) -> Duration {
        self.policy.borrow().hedge.hedge_delay
    }
    #[inline(always)]
    fn cancel_on_first_terminal(&self) -> bool {
        self.policy.borrow().hedge.cancel_on_first_terminal
    }
}

impl<P: Borrow<Policy>> PolicySettings<P> {
    /// The next delay of a policy with backoff (see
    /// [`Settings::next_delay`]).
    #[inline(always)]
    fn draw(&self, state: &mut u64, milli: &mut u16, rng: &mut fastrand::Rng) -> Duration {
        Duration::from_nanos(self.sequence(state, milli, (0, 0), Some(rng)))
    }

    /// The backoff sequence resumed from `state` (0: fresh), skipped past
    /// `skip`'s draws and last delay (the compact stage's, see
    /// [`Backoff::skip`](crate::backoff::Backoff)), and, with `rng`, its
    /// next delay drawn, in nanoseconds; `state` set to where it is left.
    /// One copy for the full machine's draws and the growth's state (no
    /// `rng`: no draw, 0 returned); the compact stage, which keeps only
    /// the delay, draws through [`BackoffSpec::delay_after`] inlined in
    /// [`First::back_off`], the same delay from the same RNG state.
    #[inline(never)]
    fn sequence(
        &self,
        state: &mut u64,
        milli: &mut u16,
        skip: (u16, u64),
        rng: Option<&mut fastrand::Rng>,
    ) -> u64 {
        let spec = BackoffSpec::new(self.retry());
        if *milli == 0 {
            // At most 10,000 (a multiplier of 10): fits, and is never 0.
            *milli = spec.multiplier_milli() as u16;
        }
        let mut backoff = spec.backoff_with(u64::from(*milli));
        backoff.resume(*state);
        backoff.skip(skip.0, skip.1);
        let delay = match rng {
            Some(rng) => backoff.next_nanos(rng),
            None => 0,
        };
        *state = backoff.state();
        delay
    }

    /// Whether the policy backs off between retry groups (see
    /// [`Settings::next_delay`]: without, every delay is zero).
    #[inline(always)]
    fn backs_off(&self) -> bool {
        let r = self.retry();
        !r.initial_backoff.is_zero() || !r.max_backoff.is_zero()
    }

    /// The backoff sequence's state ([`Settings::next_delay`]'s `state`)
    /// after the compact stage drew `draws` delays, the last `last`
    /// nanoseconds (0, not drawn from, before any draw, and under a
    /// policy without backoff): what a grown machine continues from.
    #[inline(always)]
    fn backoff_state(&self, draws: u16, last: u64) -> u64 {
        let mut state = 0;
        if SLEEPS && draws > 0 && self.backs_off() {
            self.sequence(&mut state, &mut 0, (draws, last), None);
        }
        state
    }
}

/// A call's machine, compact until the call needs the full one (see the
/// [module docs](self)).
#[derive(Debug)]
pub(crate) struct Staged<P, M> {
    /// The caller's policy (borrowed, shared or owned), read when the call
    /// starts, by the compact stage and by the full machine, which keeps
    /// no copy of its numbers: making a call copies none of a borrowed
    /// one. Beside the stages, not in each.
    cfg: PolicySettings<P>,
    stage: Stage<M>,
}

/// Where a [`Staged`] machine is.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
// An explicit tag: in a niche of the full machine's state it saved 8
// bytes of every call future but cost the Cortex-M3 example's call site
// 180 bytes of flash (a niche's tag is decoded at every match).
#[repr(u8)]
enum Stage<M> {
    /// The compact stage.
    First(First),
    /// The full machine decides.
    Full(M),
    /// The call is over and its future has resolved (or been dropped).
    Done,
}

/// The compact stage: the attempts of a call that cannot hedge, while
/// they need no deadline watched.
#[derive(Debug)]
pub(crate) struct First {
    /// The RNG's state, when `seeded`: the caller's RNG, or the one the
    /// stage seeded for a backoff's draw (as growth at that failure would
    /// have, see [`First::draw`]); without one, a grown machine seeds its
    /// own. (A state and a flag, not an `Option<fastrand::Rng>`: 8 bytes
    /// less, which `slept` takes, the compact stage kept within 56.)
    seed: u64,
    /// The sleep before the running (or due) attempt, in nanoseconds: the
    /// backoff its record carries, and, while it is slept
    /// ([`Step::Backoff`]), how long after `now` the attempt is due. Zero
    /// under a policy without backoff. (The backoff sequence's state is
    /// not kept: it follows from the delays drawn, see
    /// [`PolicySettings::backoff_state`].)
    slept: u64,
    seeded: bool,
    step: Step,
    /// The running attempt (or the next one, when it is due): its id and
    /// its retry group's index, one attempt per group.
    attempt: u16,
    /// Whether the policy has a timeout (per attempt or overall), so that
    /// attempts have deadlines: once started, none are read for a policy
    /// without.
    timed: bool,
    start: Instant,
    /// The latest time the stage has seen; while an attempt runs, when it
    /// launched (an event that moves the clock then either ends the
    /// attempt or grows the stage).
    now: Instant,
    /// While an attempt runs, the gate's reason for admitting it; while a
    /// retry is due (or slept before), the reason of the retryable failure
    /// before it (the gate hears that failure when it is asked about the
    /// retry).
    budget_reason: &'static str,
}

/// Where the compact stage is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// Not started.
    Idle,
    /// An attempt is due (the gate not asked yet): the first, or a retry.
    Ready,
    /// A retry is due once the backoff drawn after the failure before it
    /// is slept, at [`First::wake`] (a call without deadlines).
    Backoff,
    /// An attempt runs.
    Running,
    /// It succeeded, and the gate and the observer are being told.
    Recorded,
    /// Finished.
    Finished,
}

impl<P: Borrow<Policy>, M: MachineOps<P>> Staged<P, M> {
    /// A machine for one call under `policy` (normalize it first), with
    /// `limits` and the caller's RNG, if any.
    #[inline(always)]
    pub(crate) fn new(policy: P, limits: Limits, rng: Option<fastrand::Rng>) -> Self {
        Self {
            cfg: PolicySettings::new(policy, limits),
            stage: Stage::First(First {
                seed: rng.as_ref().map_or(0, fastrand::Rng::get_seed),
                slept: 0,
                seeded: rng.is_some(),
                step: Step::Idle,
                attempt: 0,
                timed: false,
                start: Instant::ZERO,
                now: Instant::ZERO,
                budget_reason: "",
            }),
        }
    }

    /// Whether the machine itself uses the call's start instant: the
    /// compact stage cannot decide the call (the policy hedges, on the
    /// hedge delay's clock), or attempts have deadlines (a timeout per
    /// attempt or overall). When it does not, and neither the gate nor the
    /// observer uses instants, the driver reads no clock at the start: it
    /// feeds the start at the epoch, and reads an attempt's end only where
    /// [`Staged::may_back_off_after`] says the machine needs it (issue 16).
    /// Asked before the start.
    #[inline(always)]
    pub(crate) fn times_its_start(&self) -> bool {
        let r = self.cfg.retry();
        // Hedging on, with room for a hedge (a test of the flag: a call
        // whose ceiling allows none reads the clock all the same).
        !M::COMPACT
            || (M::SLOTS > 1 && self.cfg.policy().hedge.enabled)
            || r.timeout_per_attempt.is_some()
            || r.overall_timeout.is_some()
    }

    /// Whether the machine may sleep after an attempt that ended with
    /// `outcome` (a retryable failure, with a backoff in the policy or a
    /// retry-after hint: the sleep's deadline counts from the attempt's
    /// end). What the driver asks of a call whose start it left unread
    /// ([`Staged::times_its_start`]), whichever stage decides it: its
    /// other ends (a success, a failure that ends the call, a retry at
    /// once) need no time, and are fed at the epoch (the machine takes the
    /// latest instant it saw).
    #[inline(always)]
    pub(crate) fn may_back_off_after(&self, outcome: &Outcome) -> bool {
        let r = self.cfg.retry();
        outcome.kind == OutcomeKind::Retryable
            && (!r.initial_backoff.is_zero()
                || !r.max_backoff.is_zero()
                || outcome.retry_after.is_some())
    }

    /// Over: its future has resolved (or been dropped).
    #[inline(always)]
    pub(crate) fn set_done(&mut self) {
        self.stage = Stage::Done;
    }

    /// Not started: [`Event::Start`] not fed yet.
    #[inline(always)]
    pub(crate) fn is_idle(&self) -> bool {
        matches!(&self.stage, Stage::First(f) if f.step == Step::Idle)
    }

    /// Started, and its future not resolved yet.
    #[inline(always)]
    pub(crate) fn is_live(&self) -> bool {
        match &self.stage {
            Stage::First(f) => f.step != Step::Idle,
            Stage::Full(_) => true,
            Stage::Done => false,
        }
    }

    /// When the call started.
    #[inline(always)]
    pub(crate) fn start(&self) -> Instant {
        match &self.stage {
            Stage::First(f) => f.start,
            Stage::Full(m) => m.start(),
            Stage::Done => Instant::ZERO,
        }
    }

    /// The latest time the machine has seen.
    #[inline(always)]
    pub(crate) fn now(&self) -> Instant {
        match &self.stage {
            Stage::First(f) => f.now,
            Stage::Full(m) => m.now(),
            Stage::Done => Instant::ZERO,
        }
    }

    /// Attempts launched so far (refused attempts not counted).
    #[inline(always)]
    pub(crate) fn attempts(&self) -> u32 {
        match &self.stage {
            Stage::First(f) => u32::from(f.attempt) + u32::from(f.step >= Step::Running),
            Stage::Full(m) => m.attempts(),
            Stage::Done => 0,
        }
    }

    /// The reason the gate gave when it refused an attempt (which ended
    /// the call), if it did.
    #[inline(always)]
    pub(crate) fn refusal(&self) -> Option<&'static str> {
        match &self.stage {
            // A refusal grows the machine.
            Stage::First(_) | Stage::Done => None,
            Stage::Full(m) => m.refusal(),
        }
    }

    /// Feeds one event; the compact stage carries out the actions it leads
    /// to through `sink` until it must wait or has finished. The full
    /// machine (the one it grew into, if the event grew it) is handed the
    /// event by the driver, in one place: [`Next::Feed`] says so, for
    /// [`drain`](Self::drain), which feeds it and carries out the actions
    /// (inlined at every place the driver feeds an event, the full
    /// machine's loop would be a copy each in flash). The driver
    /// contract's steps 2 and 3 (see
    /// [`CallMachine::handle`](super::CallMachine::handle) and
    /// [`CallMachine::poll`](super::CallMachine::poll)).
    #[inline(always)]
    pub(crate) fn feed<S: Sink>(&mut self, event: Event, sink: &mut S) -> Next {
        let first = match &mut self.stage {
            Stage::Full(_) => return Next::Feed,
            // A finished call takes no events (the call future is not
            // polled after it resolved). No message: a panic's text is
            // flash on a microcontroller.
            Stage::Done => unreachable!(),
            Stage::First(first) => first,
        };
        match (event, first.step) {
            (Event::Start { now }, Step::Idle) => {
                if let Some(info) = first.started::<P, M>(&self.cfg, now) {
                    return self.launch(info, None, sink);
                }
            }
            (Event::AttemptFinished { id, outcome, now }, Step::Running)
                if id.0 == first.attempt && outcome.kind == OutcomeKind::Success =>
            {
                let at = first.now;
                let end = first.now.max(now);
                // Set before the gate and the observer hear of it: a panic
                // in either leaves the machine where the full one would be.
                first.now = end;
                first.step = Step::Recorded;
                // Built only for a gate or an observer that hears it.
                if sink.gate().hears_attempts() || sink.hears_records() {
                    let record = first.slot(self.cfg.policy(), at).record(
                        end,
                        outcome,
                        false,
                        first.slept(),
                    );
                    sink.gate().attempt_ended(&record);
                    sink.record(&record);
                }
                let verdict = Verdict::Success(id);
                first.step = Step::Finished;
                sink.gate().call_ended(&verdict, end);
                return Next::Finish(verdict);
            }
            (Event::AttemptFinished { id, outcome, now }, Step::Running)
                if id.0 == first.attempt && outcome.kind == OutcomeKind::Retryable =>
            {
                if let Some(info) = first.retry(self.cfg.policy(), outcome, now) {
                    // Its record's makings, before the stage moves on.
                    let failed = first.slot(self.cfg.policy(), first.now);
                    let end = first.now.max(now);
                    // Set before the gate and the observer hear of the
                    // failure: a panic in either leaves the retry due, as
                    // it leaves the full machine.
                    first.now = end;
                    first.attempt = info.id.0;
                    first.budget_reason = outcome.reason;
                    first.step = Step::Ready;
                    if sink.gate().hears_attempts() || sink.hears_records() {
                        let record = failed.record(end, outcome, false, Duration::ZERO);
                        sink.gate().attempt_ended(&record);
                        sink.record(&record);
                    }
                    return self.launch(info, Some(outcome), sink);
                }
                // The sleep before the failed attempt, before the next
                // one's is drawn (in nanoseconds: turned into a `Duration`
                // only for a record that is heard).
                let slept = first.slept;
                if first.back_off(&self.cfg, outcome.retry_after.is_some(), now) {
                    // Its record's makings, before the stage moves on.
                    let failed = first.slot(self.cfg.policy(), first.now);
                    let end = first.now.max(now);
                    // Set before the gate and the observer hear of the
                    // failure: a panic in either leaves the backoff to
                    // sleep (or the retry due), as it leaves the full
                    // machine.
                    first.now = end;
                    first.attempt += 1;
                    first.budget_reason = outcome.reason;
                    let wake = first.wake();
                    first.step = if wake > end {
                        Step::Backoff
                    } else {
                        Step::Ready
                    };
                    if sink.gate().hears_attempts() || sink.hears_records() {
                        let record = failed.record(end, outcome, false, slept_for(slept));
                        sink.gate().attempt_ended(&record);
                        sink.record(&record);
                    }
                    // A zero delay drawn (or one past the clock's end):
                    // due at once.
                    return if wake > end {
                        Next::Wait(wake)
                    } else {
                        Next::Relaunch
                    };
                }
            }
            // The backoff slept: the retry is due. A tick before it grows
            // the stage (a driver feeds one only with a clock that reads
            // earlier than its timer).
            (Event::Tick { now }, Step::Backoff) if SLEEPS && now >= first.wake() => {
                first.now = now;
                first.step = Step::Ready;
                return Next::Relaunch;
            }
            // A finished machine only moves its clock.
            (
                Event::Tick { now } | Event::Cancel { now } | Event::AttemptFinished { now, .. },
                Step::Finished,
            ) => {
                first.now = first.now.max(now);
                return Next::Finish(first.success());
            }
            _ => {}
        }
        self.grow_for(event_time(event));
        Next::Feed
    }

    /// Feeds the full machine `event`, if any (the one fed when it said
    /// [`Next::Feed`]), and carries out its actions through `sink` until it
    /// must wait or has finished (never returns [`Next::Feed`] or
    /// [`Next::Drain`]): the record of
    /// an attempt the event ended goes straight to the gate and `sink`,
    /// never kept in the machine.
    #[inline(always)]
    pub(crate) fn drain<S: Sink>(&mut self, event: Option<Event>, sink: &mut S) -> Next {
        // Only the full machine asks for a drain.
        let Stage::Full(machine) = &mut self.stage else {
            unreachable!();
        };
        machine.feed(&self.cfg, event, sink)
    }

    /// Launches the compact stage's retry due after its backoff (slept,
    /// or drawn as zero: [`Next::Relaunch`]): [`Next::Launched`], or,
    /// refused, [`Next::Drain`] (grown: the full machine ends the call).
    /// The driver has one copy of it — the gate's admission and the
    /// operation's call inlined — where it matches on [`Next`], not one
    /// at each place it feeds a tick or an attempt's end.
    #[inline(always)]
    pub(crate) fn relaunch<S: Sink>(&mut self, sink: &mut S) -> Next {
        // Only the compact stage relaunches.
        let Stage::First(first) = &self.stage else {
            unreachable!();
        };
        let info = first.launch(self.cfg.policy(), first.attempt, first.now);
        // The failure before it was retryable, with no hint (see
        // `First::sleeps`).
        let previous = Outcome::retryable(first.budget_reason);
        self.launch(info, Some(previous), sink)
    }

    /// Cancels a live call at `now` (the caller dropped its future, whose
    /// attempts are dropped already): the machine cancels what is in
    /// flight through `sink`, and finishes with the verdict returned.
    /// Only what a cancelled machine does is compiled here (the call
    /// future's drop has a sink of its own, which launches nothing).
    pub(crate) fn cancel<S: Sink>(&mut self, now: Instant, sink: &mut S) -> Verdict {
        let event = Event::Cancel { now };
        match &mut self.stage {
            Stage::Full(_) => {}
            // A finished compact stage only moves its clock (as `feed`).
            Stage::First(first) if first.step == Step::Finished => {
                first.now = first.now.max(now);
                return first.success();
            }
            Stage::First(_) => self.grow_for(now),
            // A call that is over is not cancelled.
            Stage::Done => unreachable!(),
        }
        let Stage::Full(machine) = &mut self.stage else {
            unreachable!();
        };
        machine.handle(&self.cfg, event);
        machine.cancelled(&self.cfg, sink)
    }

    /// What is due without a new event (what a driver does when it is
    /// polled again): the compact stage's wait or finish, or
    /// [`Next::Drain`].
    #[inline(always)]
    pub(crate) fn resume(&mut self) -> Next {
        match &mut self.stage {
            Stage::Full(_) => Next::Drain,
            Stage::First(first) => match first.step {
                Step::Running => match first.info(self.cfg.policy(), first.now).deadline {
                    Some(until) => Next::Wait(until),
                    None => Next::AwaitAttempts,
                },
                Step::Backoff => Next::Wait(first.wake()),
                Step::Finished => Next::Finish(first.success()),
                // An event in between stopped short (something it called
                // panicked): the full machine knows where it is (and, when
                // the record was out, tells the gate the call's end).
                Step::Idle | Step::Ready | Step::Recorded => {
                    self.grow_now();
                    Next::Drain
                }
            },
            // A finished call is not resumed.
            Stage::Done => unreachable!(),
        }
    }

    /// Asks the gate about attempt `info`, due after the failure
    /// `previous` (none for the first), and launches it.
    #[inline(always)]
    fn launch<S: Sink>(
        &mut self,
        info: AttemptInfo,
        previous: Option<Outcome>,
        sink: &mut S,
    ) -> Next {
        // Only the compact stage launches here.
        let Stage::First(first) = &mut self.stage else {
            unreachable!();
        };
        let admission = sink.gate().admit(&AdmitRequest {
            attempt: info,
            previous,
            now: first.now,
        });
        if !admission.allowed {
            let refused = self.grow_refused(info, admission);
            sink.record(&refused);
            return Next::Drain;
        }
        first.budget_reason = admission.reason;
        first.step = Step::Running;
        sink.launch(info);
        Next::Launched(info.deadline)
    }

    /// Grows into the full machine, in the state the compact stage is in,
    /// for an event at `at` (which the caller feeds it next; only its time
    /// is passed, so that the event need not be in memory). Out of line, and
    /// given no sink: the driver's sink stays in registers on the compact
    /// path.
    #[cold]
    #[inline(never)]
    fn grow_for(&mut self, at: Instant) {
        self.grow(at);
    }

    /// Grows into the full machine, which takes over the gate's refusal of
    /// the attempt due: the refusal's record.
    #[cold]
    #[inline(never)]
    fn grow_refused(&mut self, info: AttemptInfo, admission: Admission) -> AttemptRecord {
        let start = self.start();
        // The machine asks the gate itself from here on: grow from `Ready`.
        self.grow(start);
        // A refusal is recorded. (No message, and no `Debug` of the
        // action: its formatting costs kilobytes of flash.)
        let Self { cfg, stage } = self;
        let Stage::Full(machine) = stage else {
            unreachable!();
        };
        match machine.primary(cfg, info, admission) {
            Action::Record(record) => record,
            _ => unreachable!(),
        }
    }

    /// Grows into the full machine at the call's start.
    #[cold]
    #[inline(never)]
    fn grow_now(&mut self) {
        let start = self.start();
        self.grow(start);
    }

    /// Makes the full machine in the state the compact stage is in; `now`
    /// (the instant it grows at) seeds its RNG when the caller gave none.
    fn grow(&mut self, now: Instant) {
        // A compact stage grows once.
        let Stage::First(first) = core::mem::replace(&mut self.stage, Stage::Done) else {
            unreachable!();
        };
        // Without an RNG from the caller, the machine seeds one from the
        // instant it grows at (the call's start, or the event that grew
        // it): no clock read for a seed that would be replaced, and none
        // of a start that was not read (a call whose instants nobody
        // uses, see `Staged::times_its_start`, grows at a failure's end,
        // read when it may back off).
        let rng = first.rng(now);
        let cfg = &self.cfg;
        self.stage = Stage::Full(M::make(cfg, rng));
        if first.step != Step::Idle {
            self.take_over(&first);
        }
    }

    /// The full machine just made takes over the compact stage's call
    /// `first`, started (out of line: a call that grows at its start, as
    /// a hedged one does, runs none of it).
    #[inline(never)]
    fn take_over(&mut self, first: &First) {
        let cfg = &self.cfg;
        let Stage::Full(machine) = &mut self.stage else {
            unreachable!();
        };
        // The running (or due) group's sleep, and the sequence's state
        // after the earlier groups' draws (one each, under a policy with
        // backoff).
        let backoff = (first.slept(), cfg.backoff_state(first.attempt, first.slept));
        if first.step <= Step::Backoff {
            if first.attempt == 0 {
                machine.handle(cfg, Event::Start { now: first.start });
            } else {
                // The failure before it was retryable, with no hint (see
                // `First::retry` and `First::sleeps`); sleeping, the retry
                // is due at its wake.
                let last = Outcome::retryable(first.budget_reason);
                let wake = (first.step == Step::Backoff).then(|| first.wake());
                let (start, at) = (first.start, first.now);
                machine.retry_due(cfg, first.attempt, start, at, last, backoff, wake);
            }
            return;
        }
        // Running: launched at `now`. (Once its success is recorded, the
        // launch time is gone, and the machine's state does not show it.)
        machine.launched(
            cfg,
            first.attempt,
            first.start,
            first.now,
            first.budget_reason,
            backoff,
        );
        if first.step == Step::Running {
            return;
        }
        // Its record is out already (the outcome it carried does not
        // change the machine's state).
        machine.succeeded(cfg, AttemptId(first.attempt), first.now);
        if first.step == Step::Finished {
            machine.finish_told(cfg);
        }
    }
}

/// What the driver does with a machine's actions (the call future's
/// attempts and observer).
#[doc(hidden)]
pub trait Sink {
    /// The call's gate.
    type Gate: Gate + ?Sized;
    /// The call's gate.
    fn gate(&mut self) -> &mut Self::Gate;
    /// [`Action::Launch`].
    fn launch(&mut self, info: AttemptInfo);
    /// [`Action::Cancel`].
    fn cancel(&mut self, record: &AttemptRecord);
    /// [`Action::Record`].
    fn record(&mut self, record: &AttemptRecord);
    /// Whether [`record`](Self::record) does anything (see
    /// [`Observer::hears_attempts`](crate::Observer::hears_attempts)).
    #[inline(always)]
    fn hears_records(&self) -> bool {
        true
    }
}

/// Where a machine stops after [`Staged::feed`]: the driver's next step.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
// An explicit tag (no niche): each path's variant is a constant the
// compiler can thread the driver's match through.
#[repr(u8)]
#[doc(hidden)]
pub enum Next {
    /// The compact stage launched an attempt: wait until this instant, if
    /// any, or until the attempt completes. (What the full machine returns
    /// there as [`Next::Wait`] or [`Next::AwaitAttempts`]; a variant of
    /// its own lets the driver's compiled code tell the compact stage's
    /// path from the full machine's without a test.)
    Launched(Option<Instant>),
    /// Wait until this instant (or until an attempt completes).
    Wait(Instant),
    /// Wait for an attempt to complete.
    AwaitAttempts,
    /// The call is over.
    Finish(Verdict),
    /// The full machine is to take the event just fed, and its actions are
    /// due ([`Staged::drain`]; the driver keeps the event, so that this
    /// stays a tag).
    Feed,
    /// The full machine's actions are due ([`Staged::drain`], no event).
    Drain,
    /// The compact stage's retry after a backoff is due: the driver
    /// launches it ([`Staged::relaunch`]).
    Relaunch,
}

#[cfg(test)]
impl<P, M> Staged<P, M> {
    /// Test-only: `(field, offset, size)` of its fields, by offset.
    pub(crate) fn layout(&self) -> std::vec::Vec<(&'static str, usize, usize)> {
        super::layout_of!(self; cfg, stage)
    }

    /// Test-only: the compact stage's size and `(field, offset, size)` of
    /// its fields, by offset.
    pub(crate) fn first_layout() -> (usize, std::vec::Vec<(&'static str, usize, usize)>) {
        let first = First {
            seed: 0,
            slept: 0,
            seeded: false,
            step: Step::Idle,
            attempt: 0,
            timed: false,
            start: Instant::ZERO,
            now: Instant::ZERO,
            budget_reason: "",
        };
        let fields = super::layout_of!(&first; seed, slept, seeded, step, attempt, timed,
            start, now, budget_reason);
        (core::mem::size_of::<First>(), fields)
    }
}

impl First {
    /// Starts the call at `now`: its first attempt, or `None` when the
    /// compact stage cannot decide the call (the policy hedges, or a
    /// deadline is due already).
    #[inline(always)]
    fn started<P: Borrow<Policy>, M: MachineOps<P>>(
        &mut self,
        cfg: &PolicySettings<P>,
        now: Instant,
    ) -> Option<AttemptInfo> {
        if !M::COMPACT || cfg.max_hedges(M::SLOTS) > 0 {
            return None;
        }
        let policy = cfg.policy();
        let info = first_launch(policy, now);
        if info.deadline.is_some_and(|d| d <= now) {
            return None;
        }
        self.timed = info.deadline.is_some();
        // Zero already: written, so that the compiler sees the attempt's
        // id where the driver polls it.
        self.attempt = 0;
        self.start = now;
        self.now = now;
        self.step = Step::Ready;
        Some(info)
    }

    /// The running attempt, launched at `at` (read from the policy again
    /// rather than kept: the success path does not need it stored).
    #[inline(always)]
    fn info(&self, policy: &Policy, at: Instant) -> AttemptInfo {
        self.launch(policy, self.attempt, at)
    }

    /// The primary of retry group `group`, launched at `at`.
    #[inline(always)]
    fn launch(&self, policy: &Policy, group: u16, at: Instant) -> AttemptInfo {
        if self.timed {
            launch(policy, self.start, group, at)
        } else {
            AttemptInfo {
                id: AttemptId(group),
                retry_index: u32::from(group),
                hedge_index: 0,
                is_hedge: false,
                deadline: None,
            }
        }
    }

    /// The running attempt's slot, launched at `at`.
    #[inline(always)]
    fn slot(&self, policy: &Policy, at: Instant) -> Slot {
        Slot::new(self.info(policy, at), at, self.budget_reason)
    }

    /// The stage's RNG: the caller's, or the one seeded for a backoff's
    /// draw; without one, one seeded as a machine made at `now` seeds its
    /// own.
    #[inline(always)]
    fn rng(&self, now: Instant) -> fastrand::Rng {
        fastrand::Rng::with_seed(if self.seeded {
            self.seed
        } else {
            call_seed(now)
        })
    }

    /// The sleep before the running (or due) attempt.
    #[inline(always)]
    fn slept(&self) -> Duration {
        slept_for(self.slept)
    }

    /// When the retry due after a backoff is ([`Step::Backoff`]): the
    /// full machine's wake, the failure's end plus the delay (the clock's
    /// end at the latest).
    #[inline(always)]
    fn wake(&self) -> Instant {
        self.now.plus_nanos(self.slept)
    }

    /// Whether the compact stage sleeps a backoff after the running
    /// attempt's retryable failure `outcome` itself (the at-once retries
    /// of [`First::retry`] aside): the full machine's backoff, when the
    /// failure has no retry-after hint, attempts are left and the call has
    /// no deadline (so no deadline to check the wake against, and no
    /// gate's expected latency to ask: `timed` off) under a policy with
    /// backoff. `false` when the full machine decides (it grows first,
    /// before any draw).
    /// (`hinted`: the failure carries a retry-after hint.)
    #[inline(always)]
    fn sleeps<P: Borrow<Policy>>(&self, cfg: &PolicySettings<P>, hinted: bool) -> bool {
        let next = self.attempt + 1;
        SLEEPS
            && !self.timed
            && cfg.backs_off()
            && !hinted
            && u32::from(next) < cfg.max_attempts()
            && next != u16::MAX
    }

    /// When the stage [`sleeps`](Self::sleeps) after the running
    /// attempt's failure, fed at `now`: draws the backoff into
    /// `slept` as the full machine draws it when the
    /// failure is fed, before anyone hears of it, had the stage grown at
    /// that event — from the caller's RNG, or one seeded as growth there
    /// would seed it (and kept, for the next draw or a growth), the
    /// sequence's state following from the earlier groups' draws (one
    /// each). Out of line: a retry after a sleep is off the success
    /// path, and inlined it would be a copy at each place the driver
    /// feeds an attempt's end.
    #[inline(never)]
    fn back_off<P: Borrow<Policy>>(
        &mut self,
        cfg: &PolicySettings<P>,
        hinted: bool,
        now: Instant,
    ) -> bool {
        if !self.sleeps(cfg, hinted) {
            return false;
        }
        let mut rng = self.rng(now);
        // (A policy with backoff: `next_delay`'s draw, from the state the
        // earlier groups' draws, one each, left; inlined here, where only
        // the delay is kept, rather than `PolicySettings::sequence`'s one
        // copy with its state handed back: 124 → 72 instructions for a
        // first retry's draw.)
        let spec = BackoffSpec::new(cfg.retry());
        self.slept = spec.delay_after(self.attempt, self.slept, &mut rng);
        self.seed = rng.get_seed();
        self.seeded = true;
        true
    }

    /// The verdict of a call the compact stage finished: its last attempt
    /// succeeded.
    #[inline(always)]
    fn success(&self) -> Verdict {
        Verdict::Success(AttemptId(self.attempt))
    }

    /// The next retry group's primary, when the compact stage retries the
    /// running attempt's retryable failure `outcome` at `now` itself: at
    /// once, which the full machine does when the policy has no backoff
    /// and the failure no retry-after hint, attempts are left, and the
    /// call's deadline (and so the retry's) is after `now`. `None` when
    /// the full machine decides (it grows first) — attempts exhausted, a
    /// deadline, a hint — or for a backoff (see [`First::sleeps`]).
    #[inline(always)]
    fn retry(&self, policy: &Policy, outcome: Outcome, now: Instant) -> Option<AttemptInfo> {
        let r = &policy.retry;
        // One attempt per group: the next group's index is its id. Its
        // retry is the full machine's when ids run out (at `u16::MAX`).
        let next = self.attempt + 1;
        if outcome.retry_after.is_some()
            || !r.initial_backoff.is_zero()
            || !r.max_backoff.is_zero()
            || u32::from(next) >= r.max_attempts.max(1)
            || next == u16::MAX
        {
            return None;
        }
        let end = self.now.max(now);
        let info = self.launch(policy, next, end);
        // A deadline due: the call's (the full machine ends the call) or
        // the retry's own (saturated at the clock's end; it cuts the
        // retry at once). The retry's is never after the call's.
        if info.deadline.is_some_and(|d| d <= end) {
            return None;
        }
        Some(info)
    }
}

/// A sleep of `nanos` nanoseconds (a [`First::slept`]) as a `Duration`.
#[inline(always)]
fn slept_for(nanos: u64) -> Duration {
    if SLEEPS {
        from_nanos(nanos)
    } else {
        // Never slept (nor the call's start, nor a delay drawn).
        Duration::ZERO
    }
}

/// `Duration::from_nanos`: out of line on a 32-bit target, where its
/// division is a library call and a few registers' setup (as
/// [`nanos`](crate::time::nanos), its inverse).
#[cfg_attr(target_pointer_width = "32", inline(never))]
fn from_nanos(nanos: u64) -> Duration {
    Duration::from_nanos(nanos)
}

/// When `event` happened.
#[inline(always)]
fn event_time(event: Event) -> Instant {
    match event {
        Event::Start { now }
        | Event::Tick { now }
        | Event::Cancel { now }
        | Event::AttemptFinished { now, .. } => now,
    }
}

/// The seed of a call's RNG when its caller gave none: a process-wide call
/// counter mixed with the time `now` its machine is made at, so that calls
/// that start together draw independent jitter. (Out of line on a 32-bit
/// target: the growth and the compact stage's draw share it.)
#[cfg_attr(target_pointer_width = "32", inline(never))]
#[cfg_attr(not(target_pointer_width = "32"), inline)]
fn call_seed(now: Instant) -> u64 {
    #[cfg(target_has_atomic = "32")]
    let n = {
        use core::sync::atomic::{AtomicU32, Ordering};
        static CALLS: AtomicU32 = AtomicU32::new(0);
        u64::from(CALLS.fetch_add(1, Ordering::Relaxed))
    };
    #[cfg(not(target_has_atomic = "32"))]
    let n = 0;
    derive_seed(now.as_nanos(), n)
}

/// A seed derived from `seed` and a counter `n` (SplitMix64's finalizer):
/// distinct `n` give unrelated seeds.
#[inline]
pub const fn derive_seed(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A [`Sink`] as the full machine's [`Emit`]: carries out every action.
struct Carry<'a, S>(&'a mut S);

impl<S: Sink> Emit for Carry<'_, S> {
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
            // A drain ends at these itself.
            Action::Wait { .. } | Action::AwaitAttempts | Action::Finish(_) => {
                return ControlFlow::Break(action)
            }
        }
        ControlFlow::Continue(())
    }
    #[inline(always)]
    fn record(&mut self, record: &AttemptRecord) -> ControlFlow<Action> {
        self.0.record(record);
        ControlFlow::Continue(())
    }
    #[inline(always)]
    fn hears_records(&self) -> bool {
        self.0.hears_records()
    }
}

/// Where a drained machine stopped: what the driver does next.
#[inline(always)]
fn next(action: Action) -> Next {
    match action {
        Action::Wait { until, .. } => Next::Wait(until),
        Action::Finish(verdict) => Next::Finish(verdict),
        // A drain through a sink ends only in a wait or the finish.
        _ => Next::AwaitAttempts,
    }
}

/// The call future's full machine: a call's [`State`], its settings the
/// policy the staged machine keeps (the machine keeps no copy of its
/// numbers). `H`: its hedging room, none for one slot (see
/// [`InFlight`](crate::driver::InFlight)'s width).
#[derive(Debug)]
pub struct Machine<const N: usize, H: HedgeRoom = Hedging>(State<N, H>);

impl<const N: usize, H: HedgeRoom> Machine<N, H> {
    /// The machine at work under `cfg`.
    #[inline(always)]
    fn run<'a, P: Borrow<Policy>>(
        &'a mut self,
        cfg: &'a PolicySettings<P>,
    ) -> Core<'a, PolicySettings<P>, N, H> {
        Core::new(cfg, &mut self.0)
    }
}

impl<P: Borrow<Policy>, const N: usize, H: HedgeRoom> MachineOps<P> for Machine<N, H> {
    const SLOTS: usize = N;
    #[inline(always)]
    fn handle(&mut self, cfg: &PolicySettings<P>, event: Event) {
        self.run(cfg).keep_event(event);
    }
    // Inlined into the driver's one drain (`Staged::drain`): the machine's
    // loop compiles once, in the call future's poll.
    #[inline(always)]
    fn feed<S: Sink>(
        &mut self,
        cfg: &PolicySettings<P>,
        event: Option<Event>,
        sink: &mut S,
    ) -> Next {
        next(self.run(cfg).feed_with(event, &mut Carry(sink)))
    }
    fn cancelled<S: Sink>(&mut self, cfg: &PolicySettings<P>, sink: &mut S) -> Verdict {
        self.run(cfg).cancelled_with(&mut Carry(sink))
    }
    fn start(&self) -> Instant {
        self.0.start()
    }
    fn now(&self) -> Instant {
        self.0.now()
    }
    fn attempts(&self) -> u32 {
        self.0.attempts()
    }
    fn refusal(&self) -> Option<&'static str> {
        self.0.refusal()
    }
    #[inline(always)]
    fn make(_: &PolicySettings<P>, rng: fastrand::Rng) -> Self {
        Self(State::new(rng))
    }
    fn primary(
        &mut self,
        cfg: &PolicySettings<P>,
        info: AttemptInfo,
        admission: Admission,
    ) -> Action {
        self.run(cfg).primary(info, admission)
    }
    fn launched(
        &mut self,
        cfg: &PolicySettings<P>,
        group: u16,
        start: Instant,
        at: Instant,
        budget_reason: &'static str,
        backoff: (Duration, u64),
    ) {
        self.run(cfg)
            .launched(group, start, at, budget_reason, backoff);
    }
    fn retry_due(
        &mut self,
        cfg: &PolicySettings<P>,
        group: u16,
        start: Instant,
        at: Instant,
        last: Outcome,
        backoff: (Duration, u64),
        wake: Option<Instant>,
    ) {
        self.run(cfg)
            .retry_due(group, start, at, last, backoff, wake);
    }
    fn succeeded(&mut self, cfg: &PolicySettings<P>, id: AttemptId, now: Instant) {
        self.run(cfg).succeeded(id, now);
    }
    fn finish_told(&mut self, cfg: &PolicySettings<P>) {
        self.run(cfg).finish_told();
    }
}

/// The public machine, for any way of holding the policy, whose numbers
/// it copies when it is made (the crate's tests grow into it, to compare
/// it with the call future's).
impl<P: Borrow<Policy>, const N: usize> MachineOps<P> for super::CallMachine<N> {
    const SLOTS: usize = N;
    #[inline(always)]
    fn handle(&mut self, _: &PolicySettings<P>, event: Event) {
        super::CallMachine::handle(self, event);
    }
    #[inline(always)]
    fn feed<S: Sink>(&mut self, _: &PolicySettings<P>, event: Option<Event>, sink: &mut S) -> Next {
        if let Some(event) = event {
            super::CallMachine::handle(self, event);
        }
        let ended = self.pending.take();
        next(self.run().drain_with(ended, &mut Carry(sink)))
    }
    fn cancelled<S: Sink>(&mut self, _: &PolicySettings<P>, sink: &mut S) -> Verdict {
        self.cancelled_with(&mut Carry(sink))
    }
    fn start(&self) -> Instant {
        super::CallMachine::start(self)
    }
    fn now(&self) -> Instant {
        super::CallMachine::now(self)
    }
    fn attempts(&self) -> u32 {
        super::CallMachine::attempts(self)
    }
    fn refusal(&self) -> Option<&'static str> {
        super::CallMachine::refusal(self)
    }
    #[inline]
    fn make(cfg: &PolicySettings<P>, rng: fastrand::Rng) -> Self {
        super::CallMachine::new(cfg.policy(), cfg.limits(), rng)
    }
    fn primary(
        &mut self,
        _: &PolicySettings<P>,
        info: AttemptInfo,
        admission: Admission,
    ) -> Action {
        self.run().primary(info, admission)
    }
    fn launched(
        &mut self,
        _: &PolicySettings<P>,
        group: u16,
        start: Instant,
        at: Instant,
        budget_reason: &'static str,
        backoff: (Duration, u64),
    ) {
        self.run()
            .launched(group, start, at, budget_reason, backoff);
    }
    fn retry_due(
        &mut self,
        _: &PolicySettings<P>,
        group: u16,
        start: Instant,
        at: Instant,
        last: Outcome,
        backoff: (Duration, u64),
        wake: Option<Instant>,
    ) {
        self.run().retry_due(group, start, at, last, backoff, wake);
    }
    fn succeeded(&mut self, _: &PolicySettings<P>, id: AttemptId, now: Instant) {
        self.run().succeeded(id, now);
    }
    fn finish_told(&mut self, _: &PolicySettings<P>) {
        self.run().finish_told();
    }
}

#[cfg(test)]
mod tests {
    use super::derive_seed;

    #[test]
    fn derived_seeds_are_deterministic_and_distinct() {
        assert_eq!(derive_seed(7, 0), derive_seed(7, 0));
        assert_ne!(derive_seed(7, 0), derive_seed(7, 1));
        assert_ne!(derive_seed(7, 0), derive_seed(8, 0));
        assert_ne!(derive_seed(0, 0), 0);
    }
}
