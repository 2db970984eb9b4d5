//! [`Staged`]: the machine as a call future holds it — a compact stage
//! that decides a call without hedges, attempt after attempt, which grows
//! into the full machine when the call needs one.
//!
//! Most calls succeed at their first attempt, and most of the rest at a
//! retry. While a call cannot hedge, one attempt at most is in flight, and
//! nothing can happen while it runs but that attempt completing, a
//! deadline passing or the caller giving up, so the machine starts small:
//! it holds the policy as the caller gave it (a reference is one word),
//! asks the gate about the first attempt, launches it, waits for it and,
//! when it succeeds, records it and finishes. When it fails retryably with
//! attempts left and no retry-after hint, the stage records it, draws the
//! backoff (none for a policy without), checks it against the deadline
//! (with the gate's expected latency), sleeps and asks the gate about the
//! next group's primary, as the full machine does, keeping only the
//! attempt's index, the backoff and the backoff sequence's previous draw
//! (the sequence is made again from them for each draw). Anything else —
//! a policy that hedges, a deadline already due or passing, a refusal, a
//! non-retryable failure, attempts exhausted, a retry-after hint, a cancel
//! — grows it, at that point, into the full
//! [`CallMachine`](super::CallMachine) in exactly the state that machine
//! would be in had it decided from the start (a refusal is taken over by
//! the machine's own [`CallMachine::primary`](super::CallMachine::primary);
//! the rest is set by
//! [`CallMachine::take_over`](super::CallMachine::take_over) from a
//! [`Handover`]), and the event that grew it is fed to it; it decides the
//! rest.
//!
//! A staged machine is driven exactly as a full one (the crate docs'
//! driver contract; [`Staged::feed`] is one event and the compact stage's
//! drain after it, [`Staged::drain`] the full machine's)
//! and gives the same actions, records, gate calls and verdict for the same
//! events; only the cost differs. `tests/staged.rs` runs seeded random
//! calls both ways and compares everything a caller, an observer and a gate
//! see. The compact stage is written to be inlined into the call future's
//! poll (a few branches per action, no loop, nothing stored that the
//! success path does not need; the backoff's draw out of line), growth to
//! stay out of it (`#[cold]`).

use core::borrow::Borrow;
use core::ops::ControlFlow;

use super::plan::{first_launch, hedges_in, launch, overall_timeout};
use super::poll::Emit;
use super::{Action, Event, Limits, Slot};
use crate::backoff::BackoffSpec;
use crate::gate::{Admission, AdmitRequest, Gate};
use crate::outcome::{Outcome, OutcomeKind};
use crate::policy::Policy;
use crate::record::{AttemptId, AttemptInfo, AttemptRecord};
use crate::time::Instant;
use crate::verdict::Verdict;

/// The full machine a [`Staged`] grows into, for every width: the
/// operations the call future and the compact stage use.
#[doc(hidden)]
pub trait MachineOps {
    /// Attempts it runs at once.
    const SLOTS: usize;
    /// Whether a call starts in the compact stage (the crate's tests turn
    /// it off, to compare a staged machine with a full one).
    const COMPACT: bool = true;
    fn handle(&mut self, event: Event);
    /// Feeds `event`, if any, and carries out the actions due through
    /// `sink` until the machine must wait or has finished (see
    /// [`CallMachine::handle`](super::CallMachine::handle) and
    /// [`CallMachine::poll`](super::CallMachine::poll)); never returns
    /// [`Next::Drain`] or [`Next::Launched`]. One function for both: the
    /// machine's decisions compile once.
    fn feed<S: Sink>(&mut self, event: Option<Event>, sink: &mut S) -> Next;
    /// Winds up a call [`Event::Cancel`] was fed to: cancels what is in
    /// flight through `sink`, and finishes (see
    /// [`CallMachine::cancelled_with`](super::CallMachine::cancelled_with)).
    fn cancelled<S: Sink>(&mut self, sink: &mut S) -> Verdict;
    fn start(&self) -> Instant;
    fn now(&self) -> Instant;
    fn attempts(&self) -> u32;
    fn refusal(&self) -> Option<&'static str>;
    fn make(policy: &Policy, limits: Limits, rng: fastrand::Rng) -> Self;
    /// Takes over the gate's answer about the first primary (see
    /// [`CallMachine::primary`](super::CallMachine::primary)).
    fn primary(&mut self, info: AttemptInfo, admission: Admission) -> Action;
    /// Takes over the compact stage's call past its start (see
    /// [`CallMachine::take_over`](super::CallMachine::take_over)).
    fn take_over(&mut self, handover: Handover);
    /// Takes attempt `id`'s success at `now`, whose record the compact
    /// stage gave out already (and released at the gate): what
    /// [`handle`](Self::handle) does with that event, without the record
    /// (see [`CallMachine::succeeded`](super::CallMachine::succeeded)).
    fn succeeded(&mut self, id: AttemptId, now: Instant);
    /// Finishes a call the compact stage finished, whose end the gate has
    /// heard (see [`CallMachine::finish_told`](super::CallMachine::finish_told)).
    fn finish_told(&mut self);
}

/// What the compact stage hands the full machine it grows into, past the
/// call's start (see [`CallMachine::take_over`](super::CallMachine::take_over)).
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct Handover {
    /// Retry groups launched before the one running or due: one attempt
    /// each, the last of which failed retryably.
    pub(crate) group: u16,
    /// When the call started.
    pub(crate) start: Instant,
    /// The stage's clock: when the running attempt launched.
    pub(crate) at: Instant,
    /// The sleep before the running group, or before the group due.
    pub(crate) backoff: core::time::Duration,
    /// The backoff sequence, once the stage drew from it.
    pub(crate) drawn: Option<crate::backoff::Backoff>,
    /// Where the call is.
    pub(crate) state: Handed,
}

/// Where a call the compact stage hands over is (see [`Handover`]).
#[doc(hidden)]
#[derive(Copy, Clone, Debug)]
pub(crate) enum Handed {
    /// The group's attempt runs, admitted with this reason.
    Running(&'static str),
    /// The group's attempt is due (the gate not asked yet), after this
    /// failure.
    Due(Outcome),
    /// Backing off until the instant after this failure, not yet checked
    /// against the deadline with the gate's expected latency.
    Unchecked(Outcome, Instant),
    /// Backing off until the instant, after this failure.
    Backoff(Outcome, Instant),
    /// The backoff after this failure would end too late for an attempt
    /// to end in time (the gate's expected latency said so): the call
    /// ends.
    Unreachable(Outcome),
}

/// A call's machine, compact until the call needs the full one (see the
/// [module docs](self)).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
#[repr(u8)]
pub(crate) enum Staged<P, M> {
    /// The compact stage.
    First(First<P>),
    /// The full machine decides.
    Full(M),
    /// The call is over and its future has resolved (or been dropped).
    Done,
}

/// The compact stage: the attempts of a call that cannot hedge.
#[derive(Debug)]
pub(crate) struct First<P> {
    /// The caller's policy (borrowed, shared or owned), read when the call
    /// starts and when the machine grows: making a call copies none of a
    /// borrowed one.
    policy: P,
    limits: Limits,
    /// The caller's RNG; without one, a grown machine seeds its own from
    /// the call's start.
    rng: Option<fastrand::Rng>,
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
    /// retry is due or backs off, the reason of the retryable failure
    /// before it (the gate hears that failure when it is asked about the
    /// retry).
    budget_reason: &'static str,
    /// The backoff before the running (or due) retry group, in
    /// nanoseconds: its attempt's records carry it. While backing off,
    /// the stage's clock stays at the failure, so that it wakes at
    /// `now + delay`.
    delay: u64,
    /// The backoff sequence's previous delay (see
    /// [`Backoff::prev_nanos`](crate::backoff::Backoff::prev_nanos)), after
    /// `attempt` draws: the sequence is made again from the two for each
    /// draw.
    prev: u64,
}

/// Where the compact stage is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// Not started.
    Idle,
    /// An attempt is due (the gate not asked yet): the first, or a retry.
    Ready,
    /// A failure's record is being given out, before the backoff is
    /// checked against the deadline.
    Unchecked,
    /// Backing off before a retry.
    Backoff,
    /// An attempt runs.
    Running,
    /// It succeeded, and the gate and the observer are being told.
    Recorded,
    /// Finished.
    Finished,
}

impl<P: Borrow<Policy>, M: MachineOps> Staged<P, M> {
    /// A machine for one call under `policy` (normalize it first), with
    /// `limits` and the caller's RNG, if any.
    #[inline(always)]
    pub(crate) fn new(policy: P, limits: Limits, rng: Option<fastrand::Rng>) -> Self {
        Self::First(First {
            policy,
            limits,
            rng,
            step: Step::Idle,
            attempt: 0,
            timed: false,
            start: Instant::ZERO,
            now: Instant::ZERO,
            budget_reason: "",
            delay: 0,
            prev: 0,
        })
    }

    /// Not started: [`Event::Start`] not fed yet.
    #[inline(always)]
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self, Self::First(f) if f.step == Step::Idle)
    }

    /// Started, and its future not resolved yet.
    #[inline(always)]
    pub(crate) fn is_live(&self) -> bool {
        match self {
            Self::First(f) => f.step != Step::Idle,
            Self::Full(_) => true,
            Self::Done => false,
        }
    }

    /// When the call started.
    #[inline(always)]
    pub(crate) fn start(&self) -> Instant {
        match self {
            Self::First(f) => f.start,
            Self::Full(m) => m.start(),
            Self::Done => Instant::ZERO,
        }
    }

    /// The latest time the machine has seen.
    #[inline(always)]
    pub(crate) fn now(&self) -> Instant {
        match self {
            Self::First(f) => f.now,
            Self::Full(m) => m.now(),
            Self::Done => Instant::ZERO,
        }
    }

    /// Attempts launched so far (refused attempts not counted).
    #[inline(always)]
    pub(crate) fn attempts(&self) -> u32 {
        match self {
            Self::First(f) => u32::from(f.attempt) + u32::from(f.step >= Step::Running),
            Self::Full(m) => m.attempts(),
            Self::Done => 0,
        }
    }

    /// The reason the gate gave when it refused an attempt (which ended
    /// the call), if it did.
    #[inline(always)]
    pub(crate) fn refusal(&self) -> Option<&'static str> {
        match self {
            // A refusal grows the machine.
            Self::First(_) | Self::Done => None,
            Self::Full(m) => m.refusal(),
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
        let first = match self {
            Self::Full(_) => return Next::Feed,
            // A finished call takes no events (the call future is not
            // polled after it resolved). No message: a panic's text is
            // flash on a microcontroller.
            Self::Done => unreachable!(),
            Self::First(first) => first,
        };
        match (event, first.step) {
            (Event::Start { now }, Step::Idle) => {
                if let Some(info) = first.started::<M>(now) {
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
                    let record = first.slot(at).record(end, outcome, false, first.backoff());
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
                // A policy without backoff: the retry launches at once.
                if let Some(info) = first.at_once_retry(outcome, now) {
                    // Its record's makings, before the stage moves on.
                    let (failed, backoff) = (first.slot(first.now), first.backoff());
                    let end = first.now.max(now);
                    // Set before the gate and the observer hear of the
                    // failure: a panic in either leaves the retry due, as
                    // it leaves the full machine.
                    first.now = end;
                    first.attempt += 1;
                    first.budget_reason = outcome.reason;
                    first.step = Step::Ready;
                    if sink.gate().hears_attempts() || sink.hears_records() {
                        let record = failed.record(end, outcome, false, backoff);
                        sink.gate().attempt_ended(&record);
                        sink.record(&record);
                    }
                    return self.launch(info, Some(outcome), sink);
                }
                // A policy with backoff: the retry after a drawn one.
                if let Some(retry) = first.drawn_retry(outcome, now) {
                    // Its record's makings, before the stage moves on.
                    let (failed, backoff) = (first.slot(first.now), first.backoff());
                    let end = first.now.max(now);
                    // Set before the gate and the observer hear of the
                    // failure: a panic in either leaves the retry due (or
                    // the backoff unchecked), as it leaves the full machine.
                    first.now = end;
                    first.attempt += 1;
                    first.budget_reason = outcome.reason;
                    first.delay = retry.delay;
                    first.prev = retry.prev;
                    first.rng = retry.rng;
                    first.step = match retry.launch {
                        Some(_) => Step::Ready,
                        None => Step::Unchecked,
                    };
                    if sink.gate().hears_attempts() || sink.hears_records() {
                        let record = failed.record(end, outcome, false, backoff);
                        sink.gate().attempt_ended(&record);
                        sink.record(&record);
                    }
                    return match retry.launch {
                        Some(info) => self.launch(info, Some(outcome), sink),
                        None => self.back_off(retry.wake, sink),
                    };
                }
            }
            // The backoff is over: the retry is due (unless a deadline is
            // too, as in `First::at_once`: the full machine's).
            (Event::Tick { now }, Step::Backoff) if now >= first.wake() => {
                let at = first.now.max(now);
                let info = first.launch(first.attempt, at);
                if info.deadline.is_none_or(|d| d > at) {
                    return self.woke(at, info, sink);
                }
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
        let Self::Full(machine) = self else {
            unreachable!();
        };
        machine.feed(event, sink)
    }

    /// Cancels a live call at `now` (the caller dropped its future, whose
    /// attempts are dropped already): the machine cancels what is in
    /// flight through `sink`, and finishes with the verdict returned.
    /// Only what a cancelled machine does is compiled here (the call
    /// future's drop has a sink of its own, which launches nothing).
    pub(crate) fn cancel<S: Sink>(&mut self, now: Instant, sink: &mut S) -> Verdict {
        let event = Event::Cancel { now };
        match self {
            Self::Full(_) => {}
            // A finished compact stage only moves its clock (as `feed`).
            Self::First(first) if first.step == Step::Finished => {
                first.now = first.now.max(now);
                return first.success();
            }
            Self::First(_) => self.grow_for(now),
            // A call that is over is not cancelled.
            Self::Done => unreachable!(),
        }
        let Self::Full(machine) = self else {
            unreachable!();
        };
        machine.handle(event);
        machine.cancelled(sink)
    }

    /// What is due without a new event (what a driver does when it is
    /// polled again): the compact stage's wait or finish, or
    /// [`Next::Drain`].
    #[inline(always)]
    pub(crate) fn resume(&mut self) -> Next {
        match self {
            Self::Full(_) => Next::Drain,
            Self::First(first) => match first.step {
                Step::Running => match first.info(first.now).deadline {
                    Some(until) => Next::Wait(until),
                    None => Next::AwaitAttempts,
                },
                Step::Finished => Next::Finish(first.success()),
                Step::Backoff => Next::Wait(first.wake()),
                // An event in between stopped short (something it called
                // panicked): the full machine knows where it is (and, when
                // the record was out, tells the gate the call's end).
                Step::Idle | Step::Ready | Step::Unchecked | Step::Recorded => {
                    self.grow_now();
                    Next::Drain
                }
            },
            // A finished call is not resumed.
            Self::Done => unreachable!(),
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
        let Self::First(first) = self else {
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

    /// Launches the retry `info` due at `at`, its backoff over. (Inlined:
    /// a sink handed to a function out of line is made in memory on every
    /// path, the first attempt's included.)
    #[inline(always)]
    fn woke<S: Sink>(&mut self, at: Instant, info: AttemptInfo, sink: &mut S) -> Next {
        let Self::First(first) = self else {
            unreachable!();
        };
        first.now = at;
        first.step = Step::Ready;
        let last = Outcome::retryable(first.budget_reason);
        self.launch(info, Some(last), sink)
    }

    /// Backs off until `wake`, after the failure whose record is out: the
    /// full machine's check of the backoff against the call's deadline
    /// (with the gate's expected latency), then the wait. (Inlined, as
    /// [`woke`](Self::woke).)
    #[inline(always)]
    fn back_off<S: Sink>(&mut self, wake: Instant, sink: &mut S) -> Next {
        let Self::First(first) = self else {
            unreachable!();
        };
        if let Some(timeout) = overall_timeout(first.policy.borrow()) {
            let deadline = first.start + timeout;
            if sink
                .gate()
                .expected_latency(first.now)
                .is_some_and(|expected| wake.saturating_add(expected) >= deadline)
            {
                self.grow_unreachable();
                return Next::Drain;
            }
        }
        first.step = Step::Backoff;
        Next::Wait(wake)
    }

    /// Grows into the full machine, which ends the call: the backoff due
    /// ends too late for an attempt to end in time.
    #[cold]
    #[inline(never)]
    fn grow_unreachable(&mut self) {
        let start = self.start();
        self.grow_with(start, true);
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
        let machine = self.grow(start);
        // A refusal is recorded. (No message, and no `Debug` of the
        // action: its formatting costs kilobytes of flash.)
        match machine.primary(info, admission) {
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
    /// seeds its RNG when the caller gave none and the call has not
    /// started.
    fn grow(&mut self, now: Instant) -> &mut M {
        self.grow_with(now, false)
    }

    /// [`grow`](Self::grow); `unreachable`: the stage's backoff ends too
    /// late (see [`grow_unreachable`](Self::grow_unreachable)).
    fn grow_with(&mut self, now: Instant, unreachable: bool) -> &mut M {
        // A compact stage grows once.
        let Self::First(first) = core::mem::replace(self, Self::Done) else {
            unreachable!();
        };
        let seeded = if first.step == Step::Idle {
            now
        } else {
            first.start
        };
        // Without an RNG from the caller, the machine seeds one from the
        // call's start: no clock read for a seed that would be replaced.
        let rng = first
            .rng
            .clone()
            .unwrap_or_else(|| fastrand::Rng::with_seed(call_seed(seeded)));
        *self = Self::Full(M::make(first.policy.borrow(), first.limits, rng));
        // Just made.
        let Self::Full(machine) = self else {
            unreachable!();
        };
        if first.step == Step::Idle {
            return machine;
        }
        if first.step == Step::Ready && first.attempt == 0 {
            machine.handle(Event::Start { now: first.start });
            return machine;
        }
        // The failure before the group due was retryable, with no hint
        // (see `First::next_group`).
        let last = Outcome::retryable(first.budget_reason);
        let wake = first.wake();
        let state = match first.step {
            _ if unreachable => Handed::Unreachable(last),
            Step::Ready => Handed::Due(last),
            Step::Unchecked => Handed::Unchecked(last, wake),
            Step::Backoff => Handed::Backoff(last, wake),
            // Running, or its success recorded: launched at `now`. (Once
            // its success is recorded the launch time is gone, and the
            // machine's state does not show it.)
            _ => Handed::Running(first.budget_reason),
        };
        let policy = first.policy.borrow();
        let drawn = (first.attempt > 0 && has_backoff(policy))
            .then(|| BackoffSpec::new(&policy.retry).after(first.attempt, first.prev));
        machine.take_over(Handover {
            group: first.attempt,
            start: first.start,
            at: first.now,
            backoff: first.backoff(),
            drawn,
            state,
        });
        if first.step < Step::Recorded {
            return machine;
        }
        // Its record is out already (the outcome it carried does not
        // change the machine's state).
        machine.succeeded(AttemptId(first.attempt), first.now);
        if first.step == Step::Finished {
            machine.finish_told();
        }
        machine
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
    /// The compact stage launched the first attempt: wait until this
    /// instant, if any, or until the attempt completes. (What the full
    /// machine returns there as [`Next::Wait`] or [`Next::AwaitAttempts`];
    /// a variant of its own lets the driver's compiled code tell the
    /// compact stage's path from the full machine's without a test.)
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
}

#[cfg(test)]
impl<P, M> Staged<P, M> {
    /// Test-only: the compact stage's size and `(field, offset, size)` of
    /// its fields, by offset.
    pub(crate) fn first_layout(policy: P) -> (usize, std::vec::Vec<(&'static str, usize, usize)>) {
        let first = First {
            policy,
            limits: Limits::DEFAULT,
            rng: None,
            step: Step::Idle,
            attempt: 0,
            timed: false,
            start: Instant::ZERO,
            now: Instant::ZERO,
            budget_reason: "",
            delay: 0,
            prev: 0,
        };
        let fields = super::layout_of!(&first; policy, limits, rng, step, attempt, timed, start, now,
            budget_reason, delay, prev);
        (core::mem::size_of::<First<P>>(), fields)
    }
}

impl<P: Borrow<Policy>> First<P> {
    /// Starts the call at `now`: its first attempt, or `None` when the
    /// compact stage cannot decide the call (the policy hedges, or a
    /// deadline is due already).
    #[inline(always)]
    fn started<M: MachineOps>(&mut self, now: Instant) -> Option<AttemptInfo> {
        let policy = self.policy.borrow();
        if !M::COMPACT
            || policy.hedge.enabled && hedges_in(policy.hedge.max_hedges, self.limits, M::SLOTS) > 0
        {
            return None;
        }
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
    fn info(&self, at: Instant) -> AttemptInfo {
        self.launch(self.attempt, at)
    }

    /// The primary of retry group `group`, launched at `at`.
    #[inline(always)]
    fn launch(&self, group: u16, at: Instant) -> AttemptInfo {
        if self.timed {
            launch(self.policy.borrow(), self.start, group, at)
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
    fn slot(&self, at: Instant) -> Slot {
        Slot::new(self.info(at), at, self.budget_reason)
    }

    /// The verdict of a call the compact stage finished: its last attempt
    /// succeeded.
    #[inline(always)]
    fn success(&self) -> Verdict {
        Verdict::Success(AttemptId(self.attempt))
    }

    /// The backoff before the running (or due) group.
    #[inline(always)]
    fn backoff(&self) -> core::time::Duration {
        core::time::Duration::from_nanos(self.delay)
    }

    /// When a backoff started at `now` ends.
    #[inline(always)]
    fn wake(&self) -> Instant {
        self.now + self.backoff()
    }

    /// The next retry group, when the compact stage retries the running
    /// attempt's retryable failure `outcome` itself, as the full machine
    /// would: with attempts left, and no retry-after hint. It then draws
    /// the backoff (none for a policy without), and either launches the
    /// next group's primary at once or backs off, when the backoff (and the
    /// retry's deadline) ends before the call's deadline: under a policy
    /// without backoff [`at_once_retry`](Self::at_once_retry) (inlined),
    /// with one [`drawn_retry`](Self::drawn_retry). `None` from either when
    /// the full machine decides (the stage grows first, and the machine
    /// draws the same backoff): attempts exhausted, a deadline, a hint.
    #[inline(always)]
    fn next_group(&self, outcome: Outcome) -> Option<u16> {
        let r = &self.policy.borrow().retry;
        // One attempt per group: the next group's index is its id. Its
        // retry is the full machine's when ids run out (at `u16::MAX`).
        let next = self.attempt + 1;
        if outcome.retry_after.is_some()
            || u32::from(next) >= r.max_attempts.max(1)
            || next == u16::MAX
        {
            return None;
        }
        Some(next)
    }

    /// The next group's primary, launched at once, when the compact stage
    /// retries `outcome` at `now` under a policy without backoff (see
    /// [`next_group`](Self::next_group)).
    #[inline(always)]
    fn at_once_retry(&self, outcome: Outcome, now: Instant) -> Option<AttemptInfo> {
        if has_backoff(self.policy.borrow()) {
            return None;
        }
        let next = self.next_group(outcome)?;
        self.at_once(next, self.now.max(now))
    }

    /// How the compact stage retries `outcome` at `now` under a policy
    /// with backoff (see [`next_group`](Self::next_group)): it draws the
    /// backoff.
    #[inline(never)]
    fn drawn_retry(&mut self, outcome: Outcome, now: Instant) -> Option<Retry> {
        if !has_backoff(self.policy.borrow()) {
            return None;
        }
        let next = self.next_group(outcome)?;
        let end = self.now.max(now);
        // Without an RNG from the caller, the stage seeds the one the full
        // machine would have (from the call's start) and keeps it.
        let mut rng = match &self.rng {
            Some(rng) => rng.clone(),
            None => {
                let rng = fastrand::Rng::with_seed(call_seed(self.start));
                self.rng = Some(rng.clone());
                rng
            }
        };
        let policy = self.policy.borrow();
        let mut backoff = BackoffSpec::new(&policy.retry).after(self.attempt, self.prev);
        let delay = backoff.next_delay(&mut rng);
        let wake = if delay.is_zero() { end } else { end + delay };
        if overall_timeout(policy).is_some_and(|t| wake >= self.start + t) {
            return None;
        }
        let launch = if delay.is_zero() {
            Some(self.at_once(next, end)?)
        } else {
            None
        };
        Some(Retry {
            launch,
            wake,
            delay: crate::time::nanos(delay),
            prev: backoff.prev_nanos(),
            rng: Some(rng),
        })
    }

    /// Group `next`'s primary, launched at once at `end`, unless a
    /// deadline is due: the call's (the full machine ends the call) or the
    /// retry's own (saturated at the clock's end; it cuts the retry at
    /// once). The retry's is never after the call's.
    #[inline(always)]
    fn at_once(&self, next: u16, end: Instant) -> Option<AttemptInfo> {
        let info = self.launch(next, end);
        if info.deadline.is_some_and(|d| d <= end) {
            return None;
        }
        Some(info)
    }
}

/// How the compact stage retries a failure (see [`First::drawn_retry`]).
struct Retry {
    /// The next group's primary, when it launches at once.
    launch: Option<AttemptInfo>,
    /// When the backoff ends, when it does not.
    wake: Instant,
    /// The backoff, in nanoseconds.
    delay: u64,
    /// The backoff sequence's previous delay after the draw.
    prev: u64,
    /// The RNG after the draw.
    rng: Option<fastrand::Rng>,
}

/// Whether `policy` backs off (a policy with neither an initial nor a
/// maximum backoff never sleeps, and the full machine never draws).
#[inline(always)]
fn has_backoff(policy: &Policy) -> bool {
    !(policy.retry.initial_backoff.is_zero() && policy.retry.max_backoff.is_zero())
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
/// counter mixed with the time `now` the call started, so that calls that
/// start together draw independent jitter.
#[inline]
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

impl<const N: usize> MachineOps for super::CallMachine<N> {
    const SLOTS: usize = N;
    #[inline(always)]
    fn handle(&mut self, event: Event) {
        self.keep_event(event);
    }
    // Inlined into the driver's one drain (`Staged::drain`): the machine's
    // loop compiles once, in the call future's poll.
    #[inline(always)]
    fn feed<S: Sink>(&mut self, event: Option<Event>, sink: &mut S) -> Next {
        next(self.feed_with(event, &mut Carry(sink)))
    }
    fn cancelled<S: Sink>(&mut self, sink: &mut S) -> Verdict {
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
    fn make(policy: &Policy, limits: Limits, rng: fastrand::Rng) -> Self {
        super::CallMachine::new(policy, limits, rng)
    }
    fn primary(&mut self, info: AttemptInfo, admission: Admission) -> Action {
        super::CallMachine::primary(self, info, admission)
    }
    fn take_over(&mut self, handover: Handover) {
        super::CallMachine::take_over(self, handover);
    }
    fn succeeded(&mut self, id: AttemptId, now: Instant) {
        super::CallMachine::succeeded(self, id, now);
    }
    fn finish_told(&mut self) {
        super::CallMachine::finish_told(self);
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
