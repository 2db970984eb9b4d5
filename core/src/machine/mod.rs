//! The call state machine: every decision of one call, from clock and outcome
//! events.
//!
//! The machine owns no clock, no timer, no task and no allocator. A driver
//! feeds it [`Event`]s and drains [`Action`]s:
//!
//! 1. [`Event::Start`] when the call starts;
//! 2. [`CallMachine::poll`] until it returns [`Action::Wait`],
//!    [`Action::AwaitAttempts`] or [`Action::Finish`], carrying out
//!    [`Action::Launch`] (start the operation), [`Action::Cancel`] (drop an
//!    attempt) and [`Action::Record`] (tell the observers) on the way;
//! 3. when an attempt completes, [`Event::AttemptFinished`]; when a wait ends,
//!    [`Event::Tick`]; when the caller gives up, [`Event::Cancel`]; then back
//!    to 2.
//!
//! Anything already due is acted on before a `Wait` is returned, and every
//! `Wait` is for an instant after the last one seen, so a driver cannot
//! busy-loop. The same events, policy and seed give the same actions.
//!
//! The attempt loop, per retry group: the overall deadline → the gate (budget;
//! the breaker sees the initial kind) → launch with the per-attempt deadline
//! clipped to the overall one → outcome: success finishes; non-retryable and
//! abort finish at once; retryable backs off (or waits the server's
//! retry-after hint) unless that was the last attempt or the wait would end at
//! or past the overall deadline.
//!
//! The rooms: this file holds the machine's state and how events change it
//! ([`CallMachine::handle`]); `poll.rs` turns that state into the next
//! action ([`CallMachine::poll`]: the gate, launches, hedges, cancels,
//! waits); `io.rs` the events and actions; `plan.rs` the policy read once
//! into a [`CallPlan`] and the first attempt's plan; `staged.rs` the
//! machine as the call future holds it — a compact stage that decides the
//! attempts of a call which cannot hedge while no deadline is to be
//! watched (a first attempt, retries at once under a policy without
//! backoff, retries after a backoff in a call without timeouts) and
//! grows into the full machine when the call needs it (crate-private, with
//! the `MachineOps` it grows into).

use core::time::Duration;

use crate::backoff::Backoff;
use crate::outcome::{Outcome, OutcomeKind};
use crate::policy::Policy;
use crate::record::{AttemptId, AttemptInfo, AttemptRecord};
use crate::time::{nanos, Instant};
use crate::verdict::reason;
pub use crate::verdict::{Cause, Verdict};

mod io;
mod plan;
mod poll;
pub(crate) mod staged;

pub use crate::limits::Limits;
pub use io::{Action, Event, WaitReason};
use plan::hedges_in;
pub use plan::CallPlan;
pub(crate) use plan::{overall_timeout, per_attempt_timeout, policy_hedges};
pub use poll::ActionSink;
pub(crate) use staged::{Next, Sink, Staged};

/// Test-only: `(field, offset, size)` of each named field of `*$v` (a
/// reference), by offset: what the layout test (`tests/layout.rs`) prints.
#[cfg(test)]
macro_rules! layout_of {
    ($v:expr; $($f:ident),* $(,)?) => {{
        let v = $v;
        let base = core::ptr::addr_of!(*v) as usize;
        fn size<T>(_: *const T) -> usize {
            core::mem::size_of::<T>()
        }
        let mut fields = std::vec![$((
            stringify!($f),
            core::ptr::addr_of!(v.$f) as usize - base,
            size(core::ptr::addr_of!(v.$f)),
        )),*];
        fields.sort_by_key(|f| f.1);
        fields
    }};
}
#[cfg(test)]
pub(crate) use layout_of;

/// Test-only: the sizes of the machine's private parts, by name.
#[cfg(test)]
pub(crate) fn part_sizes() -> std::vec::Vec<(&'static str, usize)> {
    use core::mem::size_of;
    std::vec![
        ("Slot", size_of::<Slot>()),
        ("Option<Slot>", size_of::<Option<Slot>>()),
        ("Phase", size_of::<Phase>()),
        ("Plan (CallMachine's settings)", size_of::<Plan>()),
        ("State<1> (CallMachine's)", size_of::<State<1>>()),
        ("State<1, NoHedging>", size_of::<State<1, NoHedging>>()),
        ("State<2>", size_of::<State<2>>()),
        ("Hedging", size_of::<Hedging>()),
        ("Last", size_of::<Last>()),
    ]
}

/// An admitted attempt that ended, whose record is yet to be handed out:
/// its slot, outcome, end and backoff.
type Ended = (Slot, Outcome, Instant, Duration);

impl Slot {
    /// Attempt `info`, launched at `start`, with the gate's
    /// `budget_reason`.
    #[inline(always)]
    fn new(info: AttemptInfo, start: Instant, budget_reason: &'static str) -> Self {
        Self {
            budget_reason,
            start,
            deadline: match info.deadline {
                Some(deadline) => {
                    debug_assert!(deadline != Instant::ZERO, "a deadline after the epoch");
                    deadline
                }
                None => Instant::ZERO,
            },
            id: info.id,
            // Both are below the attempt ids' `u16` bound (a group's
            // primary and each hedge take an id).
            retry_index: info.retry_index as u16,
            hedge_index: info.hedge_index as u16,
        }
    }

    /// The attempt's info.
    #[inline(always)]
    fn info(&self) -> AttemptInfo {
        AttemptInfo {
            id: self.id,
            retry_index: u32::from(self.retry_index),
            hedge_index: u32::from(self.hedge_index),
            is_hedge: self.hedge_index > 0,
            deadline: self.deadline(),
        }
    }

    /// The attempt's deadline, if any.
    #[inline(always)]
    fn deadline(&self) -> Option<Instant> {
        (self.deadline != Instant::ZERO).then_some(self.deadline)
    }

    /// The attempt's record, ended at `end`, after a sleep of `backoff`.
    fn record(
        &self,
        end: Instant,
        outcome: Outcome,
        cancelled: bool,
        backoff: Duration,
    ) -> AttemptRecord {
        AttemptRecord {
            info: self.info(),
            start: self.start,
            end,
            outcome,
            cancelled,
            backoff,
            budget_allowed: true,
            budget_reason: self.budget_reason,
        }
    }
}

/// An admitted attempt that ran to completion, as the machine has it when
/// the attempt's end is fed: the makings of its [`AttemptRecord`], which
/// [`Completed::record`] builds (128 bytes) only for whoever needs all of
/// it. Handed to [`ActionSink::attempt_completed`] and
/// [`Gate::attempt_completed`](crate::Gate::attempt_completed): a gate
/// that needs only the attempt's latency (a latency sketch's sample) reads
/// that alone.
#[derive(Copy, Clone, Debug)]
pub struct Completed {
    slot: Slot,
    outcome: Outcome,
    end: Instant,
    backoff: Duration,
}

impl Completed {
    /// Which attempt.
    #[inline(always)]
    pub fn id(&self) -> AttemptId {
        self.slot.id
    }

    /// When it was launched.
    #[inline(always)]
    pub fn start(&self) -> Instant {
        self.slot.start
    }

    /// When it completed.
    #[inline(always)]
    pub fn end(&self) -> Instant {
        self.end
    }

    /// How it ended.
    #[inline(always)]
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// `end − start` in nanoseconds: [`AttemptRecord::duration`] of its
    /// record, in nanoseconds (0 for an end before the start).
    #[inline(always)]
    pub fn latency_nanos(&self) -> u64 {
        self.end
            .as_nanos()
            .saturating_sub(self.slot.start.as_nanos())
    }

    /// Its record: what [`Action::Record`] carries for it (not cancelled).
    #[inline(always)]
    pub fn record(&self) -> AttemptRecord {
        self.slot
            .record(self.end, self.outcome, false, self.backoff)
    }
}

#[derive(Copy, Clone, Debug)]
enum Phase {
    /// Not started.
    Idle,
    /// The next retry group's primary is due.
    Ready,
    /// Attempts are in flight; the running group's primary launched at
    /// this instant (what the hedge trigger is told).
    Running(Instant),
    /// Sleeping until the next retry group.
    Backoff(Instant),
    /// About to sleep until the next retry group, not yet checked against
    /// the deadline with the gate's expected latency.
    BackoffUnchecked(Instant),
    /// Cancelling whatever is in flight (records carry the verdict's
    /// [`cut_reason`]), then finishing with the verdict.
    Ending(Verdict),
    /// Finished.
    Done(Verdict),
}

impl Last {
    /// An attempt failed with `outcome`.
    #[inline(always)]
    fn outcome(outcome: Outcome) -> Self {
        Self::Outcome(outcome)
    }

    /// The gate refused a primary for `reason`.
    #[inline(always)]
    fn refused(reason: &'static str) -> Self {
        Self::Refused(reason)
    }

    /// The failed attempt's outcome, if that is what it holds.
    #[inline(always)]
    fn failed(&self) -> Option<Outcome> {
        match *self {
            Self::Outcome(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// The refusal's reason, if that is what it holds.
    #[inline(always)]
    fn refusal(&self) -> Option<&'static str> {
        match *self {
            Self::Refused(reason) => Some(reason),
            _ => None,
        }
    }
}

/// What a machine reads of its policy and limits, wherever it keeps them:
/// the public [`CallMachine`] a copy of the numbers ([`Plan`]), the call
/// future's machine the caller's policy itself (`PolicySettings`), read
/// again where a decision needs it (the future keeps no copy).
pub(crate) trait Settings {
    /// Retry groups at most (at least 1).
    fn max_attempts(&self) -> u32;
    /// The per-attempt timeout in nanoseconds; 0: none.
    fn per_attempt(&self) -> u64;
    /// Whether attempts may have a timeout of their own: with none and no
    /// overall deadline, no attempt has a deadline, and the machine skips
    /// its scans of the slots for one (see `Core::attempts_timed`).
    /// Default: `true`, always scan.
    #[inline(always)]
    fn timed_attempts(&self) -> bool {
        true
    }
    /// The overall timeout in nanoseconds; 0: none.
    fn overall(&self) -> u64;
    /// The longest retry-after hint honoured ([`Limits::max_retry_after`]).
    fn max_retry_after(&self) -> Duration;
    /// The next backoff delay of the sequence whose state is `state`
    /// ([`Backoff::state`]; 0 before the first draw), drawn from `rng`;
    /// zero without a draw when every delay is zero (no initial and no
    /// maximum backoff). `milli` keeps the multiplier's fixed-point
    /// conversion for settings that do not (0: not converted yet).
    fn next_delay(&self, state: &mut u64, milli: &mut u16, rng: &mut fastrand::Rng) -> Duration;
    /// Hedges per group a machine of `slots` slots runs (0 when hedging is
    /// off, or when the slots have no room).
    fn max_hedges(&self, slots: usize) -> u32;
    /// The hedge delay as the policy gives it: the trigger is told it as
    /// it is (an unnormalized policy's may be past what nanoseconds in a
    /// `u64` hold).
    fn hedge_delay(&self) -> Duration;
    /// Whether a group's first terminal outcome cancels its other attempts.
    fn cancel_on_first_terminal(&self) -> bool;
}

/// The public machine's settings: the numbers of a [`CallPlan`], copied
/// (the simulator restarts machines from one).
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    max_attempts: u32,
    /// In nanoseconds; 0: none (a policy's zero timeout means none).
    per_attempt: u64,
    overall: u64,
    max_retry_after: Duration,
    /// Converted once, when the machine is made.
    backoff: Option<Backoff>,
    /// Hedges per group: 0 when off (or when `N` has no room).
    max_hedges: u32,
    /// The hedges per group the policy asks for (0 when hedging is off),
    /// before `N` limits them.
    policy_hedges: u32,
    hedge_delay: Duration,
    cancel_on_first_terminal: bool,
}

impl Plan {
    /// The settings of `plan` under `limits`, for a machine of `slots`
    /// slots.
    #[inline]
    fn new(plan: &CallPlan, limits: Limits, slots: usize) -> Self {
        Self {
            max_attempts: plan.max_attempts,
            per_attempt: plan.per_attempt.map_or(0, nanos),
            overall: plan.overall.map_or(0, nanos),
            max_retry_after: limits.max_retry_after,
            backoff: (!plan.zero_backoff).then(|| plan.backoff.backoff()),
            max_hedges: hedges_in(plan.hedges, limits.max_hedges_ceiling, slots),
            policy_hedges: plan.hedges,
            hedge_delay: plan.hedge_delay,
            cancel_on_first_terminal: plan.cancel_on_first_terminal,
        }
    }
}

impl Settings for Plan {
    #[inline(always)]
    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    #[inline(always)]
    fn per_attempt(&self) -> u64 {
        self.per_attempt
    }
    #[inline(always)]
    fn timed_attempts(&self) -> bool {
        self.per_attempt != 0
    }
    #[inline(always)]
    fn overall(&self) -> u64 {
        self.overall
    }
    #[inline(always)]
    fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }
    #[inline(always)]
    fn next_delay(&self, state: &mut u64, _: &mut u16, rng: &mut fastrand::Rng) -> Duration {
        match &self.backoff {
            None => Duration::ZERO,
            Some(backoff) => draw(backoff.clone(), state, rng),
        }
    }
    #[inline(always)]
    fn max_hedges(&self, _: usize) -> u32 {
        self.max_hedges
    }
    #[inline(always)]
    fn hedge_delay(&self) -> Duration {
        self.hedge_delay
    }
    #[inline(always)]
    fn cancel_on_first_terminal(&self) -> bool {
        self.cancel_on_first_terminal
    }
}

/// The state machine of one call.
///
/// `N` is the number of attempts that can be in flight at once (the primary
/// plus hedges); the default 4 fits the default hedge ceiling of 3.
#[derive(Clone, Debug)]
pub struct CallMachine<const N: usize = 4> {
    plan: Plan,
    core: State<N>,
    /// A record produced by an event (an admitted attempt's, which the
    /// gate must release), emitted by the next `poll`: kept as its slot,
    /// outcome, end and backoff (not a 128-byte record and flag). Only
    /// [`poll`](Self::poll), which hands out one action at a time, needs
    /// it: the call future's machine (a [`Core`]) hands the record out as
    /// the event comes.
    pending: Option<Ended>,
}

/// The state of one call: what [`CallMachine`] holds beside its settings,
/// and what the call future holds beside its policy (see [`Core`]).
///
/// `H` keeps the running group's hedging: [`Hedging`], or, in the call
/// future of one slot (which cannot hedge), [`NoHedging`] (issue 16: 16
/// bytes off that future).
#[derive(Clone, Debug)]
// Fields in this order (no padding on 64-bit targets: the words, the
// phase, the slots and the last outcome, then the small ones), the last
// outcome not first: built at the machine's growth from a constant, at
// the front it was copied in with the stage's tag as one unaligned block,
// byte by byte on a Cortex-M3 (200 instructions a growth).
#[repr(C)]
pub(crate) struct State<const N: usize, H: HedgeRoom = Hedging> {
    rng: fastrand::Rng,
    now: Instant,
    start: Instant,
    /// The overall deadline; [`Instant::ZERO`]: none (see
    /// [`Self::deadline`]).
    deadline_at: Instant,
    /// The backoff sequence's state ([`Backoff::state`]; 0: not drawn
    /// from), its parameters read from the settings when a delay is drawn.
    backoff: u64,
    /// The sleep before the running group's primary (its hedges have
    /// none): the backoff of its attempts' records; once the group has
    /// failed retryably, the sleep before the next group's (one room for
    /// the two: the record of the attempt that failed the group takes its
    /// backoff before, see [`Core::finished`]). Its whole seconds and
    /// nanoseconds apart (see [`State::group_backoff`]): the nanoseconds
    /// beside the counters, 8 bytes where a `Duration` (padded to 16) took
    /// 16, and as cheap to write and read back (no conversion).
    group_backoff_secs: u64,
    phase: Phase,
    /// The attempts in flight and the last attempt that failed, and how
    /// (see [`Last`]): in one room when the machine has one slot.
    slots: H::Slots<N>,
    /// The running group's hedging (see [`HedgeRoom`]). When its primary
    /// launched is kept in the phase ([`Phase::Running`]).
    hedge: H,
    group_backoff_nanos: u32,
    last_failure: Option<AttemptId>,
    /// Retry groups launched. (This, `ran` and the group's hedges count
    /// attempts launched, at most the `u16` ids' bound.)
    groups: u16,
    /// Attempts launched (ids are handed out in this order).
    launched: u16,
    /// The backoff multiplier in fixed point, once converted (0: not yet;
    /// see [`Settings::next_delay`]).
    multiplier_milli: u16,
    /// Attempts that ran (launched), hedges included.
    ran: u16,
}

/// The running group's hedging room (see [`HedgeRoom`]): private, its
/// items public only for the driver's widths, which name them.
mod room {
    use super::{AttemptId, Cause, Instant, Outcome, OutcomeKind};
    /// An attempt in flight: its [`AttemptInfo`], launch time and budget
    /// reason, packed (40 bytes on a 64-bit target, not 72: the group and
    /// hedge indices 16 bits, as the attempt ids bound them; no backoff, which
    /// only its group's primary has and the machine keeps once for the group,
    /// see [`Core::backoff_of`]; the deadline an instant, the epoch for none,
    /// which no deadline is — a flag beside the counters instead saved the
    /// same and cost about 80 instructions per retried call in conversions).
    #[derive(Copy, Clone, Debug)]
    #[doc(hidden)]
    pub struct Slot {
        pub(super) budget_reason: &'static str,
        pub(super) start: Instant,
        /// The attempt's deadline; [`Instant::ZERO`]: none (a deadline is a
        /// launch time plus a timeout that is not zero, so never the epoch).
        pub(super) deadline: Instant,
        pub(super) id: AttemptId,
        /// At most the attempts launched (`u16` ids).
        pub(super) retry_index: u16,
        /// At most the attempts launched (`u16` ids).
        pub(super) hedge_index: u16,
    }

    /// How the call's last failed attempt ended, or the reason the gate gave
    /// for refusing a primary (which ends the call, so no later admission asks
    /// for the last outcome): one room for the two (40 bytes; 56 as two
    /// fields), the refusal's tag in the outcome kind's niche. (Repacked into
    /// 32 bytes — the hint's seconds and nanoseconds apart, the kind beside
    /// them — it saved 8 bytes of the machine but cost the Cortex-M3
    /// example's successful call about 200 instructions, in code the call
    /// future's poll no longer kept apart.)
    #[derive(Copy, Clone, Debug, PartialEq)]
    #[doc(hidden)]
    pub enum Last {
        None,
        Outcome(Outcome),
        Refused(&'static str),
    }

    /// Where a machine keeps its attempts in flight and its last failure
    /// (or refusal, see [`Last`]): side by side ([`Both`]), or, in a
    /// machine of one slot, in one room ([`Shared`]).
    #[doc(hidden)]
    pub trait SlotRoom: Copy + core::fmt::Debug {
        /// No attempt in flight, nothing failed. (A function, not a
        /// constant: a constant `None` of [`Shared`] was copied in whole,
        /// 32 bytes of zeros on a Cortex-M3 with a `memcpy`, where a
        /// `None` made in place writes its null word.)
        fn new() -> Self;
        /// A free slot, if any.
        fn free(&self) -> Option<usize>;
        /// Puts `slot` in the free slot `i`.
        fn put(&mut self, i: usize, slot: Slot);
        /// Attempts in flight.
        fn in_flight(&self) -> usize;
        /// The earliest deadline of the attempts in flight.
        fn first_deadline(&self) -> Option<Instant>;
        /// Takes the first slot in flight that `pick` picks.
        fn take_where(&mut self, pick: impl FnMut(&Slot) -> bool) -> Option<Slot>;
        /// The last failure (or refusal) kept.
        fn last(&self) -> Last;
        /// Keeps `last`.
        fn set_last(&mut self, last: Last);
    }

    /// The slots and the last failure side by side: a machine that may
    /// hedge reads the last failure while attempts run.
    #[derive(Copy, Clone, Debug)]
    #[repr(C)]
    #[doc(hidden)]
    pub struct Both<const N: usize> {
        slots: [Option<Slot>; N],
        last: Last,
    }

    impl<const N: usize> SlotRoom for Both<N> {
        #[inline(always)]
        fn new() -> Self {
            Self {
                slots: [None; N],
                last: Last::None,
            }
        }
        #[inline(always)]
        fn free(&self) -> Option<usize> {
            self.slots.iter().position(Option::is_none)
        }
        #[inline(always)]
        fn put(&mut self, i: usize, slot: Slot) {
            self.slots[i] = Some(slot);
        }
        #[inline(always)]
        fn in_flight(&self) -> usize {
            self.slots.iter().flatten().count()
        }
        #[inline(always)]
        fn first_deadline(&self) -> Option<Instant> {
            self.slots.iter().flatten().filter_map(Slot::deadline).min()
        }
        #[inline(always)]
        fn take_where(&mut self, mut pick: impl FnMut(&Slot) -> bool) -> Option<Slot> {
            self.slots
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(&mut pick))?
                .take()
        }
        #[inline(always)]
        fn last(&self) -> Last {
            self.last
        }
        #[inline(always)]
        fn set_last(&mut self, last: Last) {
            self.last = last;
        }
    }

    /// The slot and the last failure of a machine of one slot, in one
    /// room (issue 16: 40 bytes off the call future): the last failure is
    /// read only to admit the next group's primary and for the call's end,
    /// with nothing in flight (a launch replaces it, and the attempt's end
    /// keeps its own). `None`: nothing in flight, nothing failed (a new
    /// room is one word to write, where a struct's every field was, which
    /// the Cortex-M3 example's growth copied from a constant with a
    /// `memcpy`, 744 bytes of flash).
    #[derive(Copy, Clone, Debug)]
    #[doc(hidden)]
    pub struct Shared {
        /// The slot's budget reason; the failure's or the refusal's reason.
        text: &'static str,
        /// The slot's start in nanoseconds; the failure's retry-after
        /// hint's whole seconds.
        a: u64,
        /// The slot's deadline in nanoseconds; the hint's nanoseconds.
        b: u64,
        id: AttemptId,
        retry_index: u16,
        hedge_index: u16,
        /// What the fields hold: [`Shared::BUSY`], [`Shared::REFUSED`], or
        /// [`Shared::FAILED`] plus the failed attempt's kind (see
        /// [`Shared::kind`]) times two, plus one with a hint. A byte, not
        /// an enum: with a niche of its own, `None` was told by it, and the
        /// Cortex-M3 example's growth wrote a new room with a `memset` and
        /// a `memcpy` (744 bytes of flash); told by `text`'s null pointer,
        /// it is one word.
        tag: u8,
    }

    impl Shared {
        const BUSY: u8 = 0;
        const REFUSED: u8 = 1;
        const FAILED: u8 = 2;

        /// `kind`'s number in [`Shared::tag`].
        #[inline(always)]
        fn kind(kind: OutcomeKind) -> u8 {
            match kind {
                OutcomeKind::Success => 0,
                OutcomeKind::Retryable => 1,
                OutcomeKind::NonRetryable => 2,
                OutcomeKind::Abort => 3,
            }
        }

        /// The kind numbered `n` by [`Shared::kind`].
        #[inline(always)]
        fn kind_of(n: u8) -> OutcomeKind {
            match n {
                0 => OutcomeKind::Success,
                1 => OutcomeKind::Retryable,
                2 => OutcomeKind::NonRetryable,
                _ => OutcomeKind::Abort,
            }
        }

        /// The room of `last`, which is not [`Last::None`].
        #[inline(always)]
        fn of(last: Last) -> Option<Self> {
            let (text, a, b, tag) = match last {
                Last::None => return None,
                Last::Refused(reason) => (reason, 0, 0, Self::REFUSED),
                Last::Outcome(outcome) => {
                    let (a, b) = match outcome.retry_after {
                        Some(hint) => (hint.as_secs(), u64::from(hint.subsec_nanos())),
                        None => (0, 0),
                    };
                    let tag = Self::FAILED
                        + Self::kind(outcome.kind) * 2
                        + u8::from(outcome.retry_after.is_some());
                    (outcome.reason, a, b, tag)
                }
            };
            Some(Self {
                text,
                a,
                b,
                id: AttemptId(0),
                retry_index: 0,
                hedge_index: 0,
                tag,
            })
        }
    }

    impl SlotRoom for Option<Shared> {
        #[inline(always)]
        fn new() -> Self {
            None
        }
        #[inline(always)]
        fn free(&self) -> Option<usize> {
            match self {
                Some(Shared {
                    tag: Shared::BUSY, ..
                }) => None,
                _ => Some(0),
            }
        }
        #[inline(always)]
        fn put(&mut self, i: usize, slot: Slot) {
            debug_assert!(i == 0 && self.free().is_some(), "one slot");
            *self = Some(Shared {
                text: slot.budget_reason,
                a: slot.start.as_nanos(),
                b: slot.deadline.as_nanos(),
                id: slot.id,
                retry_index: slot.retry_index,
                hedge_index: slot.hedge_index,
                tag: Shared::BUSY,
            });
        }
        #[inline(always)]
        fn in_flight(&self) -> usize {
            usize::from(self.free().is_none())
        }
        #[inline(always)]
        fn first_deadline(&self) -> Option<Instant> {
            self.slot().and_then(|s| s.deadline())
        }
        #[inline(always)]
        fn take_where(&mut self, mut pick: impl FnMut(&Slot) -> bool) -> Option<Slot> {
            let slot = self.slot().filter(|s| pick(s))?;
            *self = None;
            Some(slot)
        }
        #[inline(always)]
        fn last(&self) -> Last {
            let Some(room) = self else {
                return Last::None;
            };
            match room.tag {
                Shared::BUSY => Last::None,
                Shared::REFUSED => Last::Refused(room.text),
                tag => Last::Outcome(Outcome {
                    kind: Shared::kind_of((tag - Shared::FAILED) >> 1),
                    reason: room.text,
                    retry_after: (tag & 1 != 0).then(|| super::joined(room.a, room.b as u32)),
                }),
            }
        }
        #[inline(always)]
        fn set_last(&mut self, last: Last) {
            debug_assert!(
                self.free().is_some(),
                "a failure kept with an attempt in flight"
            );
            *self = Shared::of(last);
        }
    }

    /// The slot in flight of a [`Shared`] room, if any.
    trait InFlightSlot {
        fn slot(&self) -> Option<Slot>;
    }

    impl InFlightSlot for Option<Shared> {
        #[inline(always)]
        fn slot(&self) -> Option<Slot> {
            match *self {
                Some(Shared {
                    text,
                    a,
                    b,
                    id,
                    retry_index,
                    hedge_index,
                    tag: Shared::BUSY,
                }) => Some(Slot {
                    budget_reason: text,
                    start: Instant::from_nanos(a),
                    deadline: Instant::from_nanos(b),
                    id,
                    retry_index,
                    hedge_index,
                }),
                _ => None,
            }
        }
    }

    /// What a machine keeps of its running group's hedging: [`Hedging`], or
    /// nothing for a machine of one slot, which never hedges and never holds
    /// a terminal outcome while another attempt runs ([`NoHedging`]).
    #[doc(hidden)]
    pub trait HedgeRoom: Copy + core::fmt::Debug {
        /// Where the machine keeps its `N` slots and its last failure:
        /// side by side, or, with one slot, in one room.
        type Slots<const N: usize>: SlotRoom;
        /// A group's start: no hedge launched, none refused, no check asked
        /// for, no terminal outcome held.
        const NEW: Self;
        /// Hedges the group launched.
        fn hedges(&self) -> u16;
        /// The group launched one more hedge.
        fn add_hedge(&mut self);
        /// Whether the group hedges no more (a hedge was refused, or could
        /// not end in time).
        fn stopped(&self) -> bool;
        /// The group hedges no more.
        fn stop(&mut self);
        /// When the trigger asked to be consulted again; [`Instant::ZERO`]:
        /// it did not.
        fn check_at(&self) -> Instant;
        /// Sets when the trigger is consulted again ([`Instant::ZERO`]: not).
        fn set_check_at(&mut self, at: Instant);
        /// The terminal outcome held, if any.
        fn terminal(&self) -> Option<(AttemptId, Cause)>;
        /// Takes the terminal outcome held, if any.
        fn take_terminal(&mut self) -> Option<(AttemptId, Cause)>;
        /// Holds attempt `id`'s terminal outcome `cause`, unless one is held.
        fn hold_terminal(&mut self, id: AttemptId, cause: Cause);
    }

    /// The running group's hedging, for a machine that may hedge.
    #[derive(Copy, Clone, Debug)]
    #[doc(hidden)]
    pub struct Hedging {
        /// Hedges launched (at most the attempts launched, the `u16` ids'
        /// bound), and whether the group may launch more (a refused hedge
        /// stops hedging for it).
        group_hedges: u16,
        hedging_stopped: bool,
        /// When the trigger asked to be consulted again; [`Instant::ZERO`]:
        /// it did not (see `State::next_hedge_check`).
        hedge_check_at: Instant,
        /// A non-retryable or abort outcome held while other attempts of the
        /// group still run (without cancel-on-first-terminal): it is the group's
        /// result unless one of them succeeds.
        terminal: Option<(AttemptId, Cause)>,
    }

    impl HedgeRoom for Hedging {
        type Slots<const N: usize> = Both<N>;
        const NEW: Self = Self {
            group_hedges: 0,
            hedging_stopped: false,
            hedge_check_at: Instant::ZERO,
            terminal: None,
        };
        #[inline(always)]
        fn hedges(&self) -> u16 {
            self.group_hedges
        }
        #[inline(always)]
        fn add_hedge(&mut self) {
            self.group_hedges += 1;
        }
        #[inline(always)]
        fn stopped(&self) -> bool {
            self.hedging_stopped
        }
        #[inline(always)]
        fn stop(&mut self) {
            self.hedging_stopped = true;
        }
        #[inline(always)]
        fn check_at(&self) -> Instant {
            self.hedge_check_at
        }
        #[inline(always)]
        fn set_check_at(&mut self, at: Instant) {
            self.hedge_check_at = at;
        }
        #[inline(always)]
        fn terminal(&self) -> Option<(AttemptId, Cause)> {
            self.terminal
        }
        #[inline(always)]
        fn take_terminal(&mut self) -> Option<(AttemptId, Cause)> {
            self.terminal.take()
        }
        #[inline(always)]
        fn hold_terminal(&mut self, id: AttemptId, cause: Cause) {
            self.terminal.get_or_insert((id, cause));
        }
    }

    /// No hedging: the room of a machine of one slot (zero-sized). It
    /// launches no hedge (`Core::maybe_hedge` returns before it asks), so it
    /// asks the trigger nothing, and a failure leaves nothing in flight, so
    /// it holds no terminal outcome (a group's terminal failure is the
    /// call's at once).
    #[derive(Copy, Clone, Debug)]
    #[doc(hidden)]
    pub struct NoHedging;

    impl HedgeRoom for NoHedging {
        type Slots<const N: usize> = Option<Shared>;
        const NEW: Self = Self;
        #[inline(always)]
        fn hedges(&self) -> u16 {
            0
        }
        #[inline(always)]
        fn add_hedge(&mut self) {
            debug_assert!(false, "a machine of one slot hedges");
        }
        #[inline(always)]
        fn stopped(&self) -> bool {
            false
        }
        #[inline(always)]
        fn stop(&mut self) {}
        #[inline(always)]
        fn check_at(&self) -> Instant {
            Instant::ZERO
        }
        #[inline(always)]
        fn set_check_at(&mut self, at: Instant) {
            debug_assert!(at == Instant::ZERO, "a machine of one slot hedges");
        }
        #[inline(always)]
        fn terminal(&self) -> Option<(AttemptId, Cause)> {
            None
        }
        #[inline(always)]
        fn take_terminal(&mut self) -> Option<(AttemptId, Cause)> {
            None
        }
        #[inline(always)]
        fn hold_terminal(&mut self, _: AttemptId, _: Cause) {
            debug_assert!(false, "a terminal outcome held with nothing in flight");
        }
    }
}
pub(crate) use room::{HedgeRoom, Hedging, NoHedging};
use room::{Last, Slot, SlotRoom};

#[cfg(test)]
impl<const N: usize> CallMachine<N> {
    /// Test-only: `(field, offset, size)` of every field, by offset.
    pub(crate) fn layout(&self) -> std::vec::Vec<(&'static str, usize, usize)> {
        layout_of!(self; plan, core, pending)
    }

    /// Test-only: the core's layout.
    pub(crate) fn core_layout(&self) -> std::vec::Vec<(&'static str, usize, usize)> {
        self.core.layout()
    }
}

#[cfg(test)]
impl<const N: usize, H: HedgeRoom> State<N, H> {
    /// Test-only: `(field, offset, size)` of every field, by offset.
    pub(crate) fn layout(&self) -> std::vec::Vec<(&'static str, usize, usize)> {
        layout_of!(self; rng, phase, now, start, deadline_at, groups, launched,
            backoff, multiplier_milli, group_backoff_secs, group_backoff_nanos,
            last_failure, slots, hedge, ran)
    }
}

impl<const N: usize> CallMachine<N> {
    /// A machine for one call under `policy` (normalize it first; the
    /// machine only guards against values that would break its own
    /// invariants).
    #[inline]
    pub fn new(policy: &Policy, limits: Limits, rng: fastrand::Rng) -> Self {
        Self::with_plan(&CallPlan::new(policy), limits, rng)
    }

    /// A machine for one call under `plan` (what [`CallMachine::new`]
    /// reads from a policy, read once).
    #[inline]
    pub fn with_plan(plan: &CallPlan, limits: Limits, rng: fastrand::Rng) -> Self {
        Self {
            plan: Plan::new(plan, limits, N),
            core: State::new(rng),
            pending: None,
        }
    }

    /// Hedges each retry group may launch: the policy's, as far as the
    /// ceiling in [`Limits`] and `N` allow (0 when hedging is off).
    pub fn max_hedges(&self) -> u32 {
        self.plan.max_hedges
    }

    /// When the call started.
    pub fn start(&self) -> Instant {
        self.core.start
    }

    /// The latest time the machine has seen.
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// The overall deadline, once started.
    pub fn deadline(&self) -> Option<Instant> {
        self.core.deadline()
    }

    /// Attempts launched so far (refused attempts not counted).
    pub fn attempts(&self) -> u32 {
        self.core.attempts()
    }

    /// The reason the gate gave when it refused an attempt (which ended the
    /// call), if it did.
    pub fn refusal(&self) -> Option<&'static str> {
        self.core.refusal()
    }

    /// Replaces the random source (jitter draws come from it).
    pub fn set_rng(&mut self, rng: fastrand::Rng) {
        self.core.rng = rng;
    }

    /// Makes this machine what `fresh.clone()` with its random source
    /// replaced by `rng` is, for a `fresh` machine that has not started
    /// (no event fed yet): the settings are copied from it and the state a
    /// call changes is reset in place. Cheaper than `clone_from` (which
    /// builds a whole copy and moves it in) for a driver that runs one
    /// call after another in the same machine, as the simulator does.
    pub fn restart_from(&mut self, fresh: &Self, rng: fastrand::Rng) {
        debug_assert!(fresh.pending.is_none(), "a machine that has not started");
        self.plan.clone_from(&fresh.plan);
        self.core.restart_from(&fresh.core, rng);
        self.pending = None;
    }

    /// Makes this machine what it was when it was made (by
    /// [`CallMachine::new`], [`CallMachine::with_plan`] or a clone of
    /// such a machine), with its limits as last set and its random source
    /// replaced by `rng`: [`restart_from`](Self::restart_from) of a fresh
    /// machine with this one's settings, without copying them (a call
    /// never changes them). What the simulator does between calls in the
    /// same machine.
    #[inline]
    pub fn restart(&mut self, rng: fastrand::Rng) {
        self.core.restart_from_new(rng);
        self.pending = None;
    }

    /// Replaces the executor-wide limits.
    pub fn set_limits(&mut self, limits: Limits) {
        let cfg = &mut self.plan;
        cfg.max_retry_after = limits.max_retry_after;
        cfg.max_hedges = hedges_in(cfg.policy_hedges, limits.max_hedges_ceiling, N);
    }

    /// Whether the machine has returned [`Action::Finish`].
    pub fn is_finished(&self) -> bool {
        self.core.is_finished()
    }

    /// Feeds one event. Times earlier than the latest one seen are taken as
    /// the latest one (the machine's clock never goes back).
    #[inline(always)]
    pub fn handle(&mut self, event: Event) {
        if let Some((slot, outcome, backoff)) = self.run().take_event(event) {
            debug_assert!(self.pending.is_none(), "poll after every event");
            self.pending = Some((slot, outcome, self.core.now, backoff));
        }
    }

    /// The machine at work: its state with its settings.
    #[inline(always)]
    pub(crate) fn run(&mut self) -> Core<'_, Plan, N> {
        Core {
            cfg: &self.plan,
            st: &mut self.core,
        }
    }
}

/// The machine at work: a call's [`State`] with its settings `C` (see
/// [`Settings`]), borrowed for one step. The decisions are its methods;
/// the state's fields read through it.
pub(crate) struct Core<'a, C, const N: usize, H: HedgeRoom = Hedging> {
    cfg: &'a C,
    st: &'a mut State<N, H>,
}

impl<'a, C, const N: usize, H: HedgeRoom> Core<'a, C, N, H> {
    /// `st` with its settings `cfg`.
    #[inline(always)]
    pub(crate) fn new(cfg: &'a C, st: &'a mut State<N, H>) -> Self {
        Self { cfg, st }
    }

    /// The view again, by value, for a method out of line that takes it so.
    #[inline(always)]
    fn by_value(&mut self) -> Core<'_, C, N, H> {
        Core {
            cfg: self.cfg,
            st: &mut *self.st,
        }
    }
}

impl<C, const N: usize, H: HedgeRoom> core::ops::Deref for Core<'_, C, N, H> {
    type Target = State<N, H>;
    #[inline(always)]
    fn deref(&self) -> &State<N, H> {
        self.st
    }
}

impl<C, const N: usize, H: HedgeRoom> core::ops::DerefMut for Core<'_, C, N, H> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut State<N, H> {
        self.st
    }
}

impl<const N: usize, H: HedgeRoom> State<N, H> {
    /// The state of a call not started, drawing from `rng`.
    #[inline]
    pub(crate) fn new(rng: fastrand::Rng) -> Self {
        Self {
            rng,
            phase: Phase::Idle,
            now: Instant::ZERO,
            start: Instant::ZERO,
            deadline_at: Instant::ZERO,
            groups: 0,
            launched: 0,
            backoff: 0,
            multiplier_milli: 0,
            group_backoff_secs: 0,
            group_backoff_nanos: 0,
            last_failure: None,
            slots: <H::Slots<N> as SlotRoom>::new(),
            hedge: H::NEW,
            ran: 0,
        }
    }

    /// When the call started.
    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// The latest time the machine has seen.
    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// The overall deadline, once started.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        (self.deadline_at != Instant::ZERO).then_some(self.deadline_at)
    }

    /// When the trigger asked to be consulted again, if it did.
    #[inline]
    fn next_hedge_check(&self) -> Option<Instant> {
        let at = self.hedge.check_at();
        (at != Instant::ZERO).then_some(at)
    }

    /// Sets (or clears) when the trigger is consulted again.
    #[inline]
    fn set_next_hedge_check(&mut self, at: Option<Instant>) {
        debug_assert!(at != Some(Instant::ZERO), "a check after the epoch");
        self.hedge.set_check_at(at.unwrap_or(Instant::ZERO));
    }

    /// The sleep before the running group's primary, or, once the group
    /// failed retryably, before the next group's (see
    /// [`group_backoff_secs`](Self::group_backoff_secs)).
    #[inline(always)]
    fn group_backoff(&self) -> Duration {
        joined(self.group_backoff_secs, self.group_backoff_nanos)
    }

    /// Sets [`group_backoff`](Self::group_backoff).
    #[inline(always)]
    fn set_group_backoff(&mut self, backoff: Duration) {
        self.group_backoff_secs = backoff.as_secs();
        self.group_backoff_nanos = backoff.subsec_nanos();
    }

    /// Attempts launched so far (refused attempts not counted).
    pub(crate) fn attempts(&self) -> u32 {
        u32::from(self.ran)
    }

    /// The reason the gate gave when it refused an attempt (which ended the
    /// call), if it did.
    pub(crate) fn refusal(&self) -> Option<&'static str> {
        self.slots.last().refusal()
    }

    /// How the last attempt that failed ended, for the gate's next
    /// admission.
    #[inline]
    fn last_outcome(&self) -> Option<Outcome> {
        self.slots.last().failed()
    }

    /// [`CallMachine::restart_from`]: makes this machine `fresh` (which has
    /// not started) with its random source replaced by `rng`, in place.
    ///
    /// A machine that has not started is [`State::new`] of its random
    /// source, whatever it was made from (nothing but
    /// [`CallMachine::set_rng`] changes its state before its first event):
    /// so this writes that state, constants and all, rather than copying
    /// `fresh`'s field by field (a load and a store each, 37 instructions
    /// of a simulated call); a new field is reset by [`State::new`].
    #[inline]
    pub(crate) fn restart_from(&mut self, fresh: &Self, rng: fastrand::Rng) {
        debug_assert!(fresh.is_fresh(), "a machine that has not started");
        self.restart_from_new(rng);
    }

    /// [`State::new`] of `rng`, in place.
    #[inline]
    pub(crate) fn restart_from_new(&mut self, rng: fastrand::Rng) {
        *self = Self::new(rng);
    }

    /// Whether this is [`State::new`] of its random source: a machine
    /// that has not started.
    fn is_fresh(&self) -> bool {
        let Self {
            rng: _,
            phase,
            now,
            start,
            deadline_at,
            groups,
            launched,
            backoff,
            multiplier_milli,
            group_backoff_secs,
            group_backoff_nanos,
            last_failure,
            slots,
            hedge,
            ran,
        } = self;
        matches!(phase, Phase::Idle)
            && [*now, *start, *deadline_at, hedge.check_at()] == [Instant::ZERO; 4]
            && [*groups, *launched, *multiplier_milli, hedge.hedges(), *ran] == [0; 5]
            && *backoff == 0
            && (*group_backoff_secs, *group_backoff_nanos) == (0, 0)
            && last_failure.is_none()
            && matches!(slots.last(), Last::None)
            && slots.in_flight() == 0
            && !hedge.stopped()
            && hedge.terminal().is_none()
    }

    /// Whether the machine has returned [`Action::Finish`].
    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done(_))
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn fail(&mut self, cause: Cause) {
        self.end(Verdict::Failure {
            cause,
            last: self.last_failure,
        });
    }

    fn end(&mut self, verdict: Verdict) {
        self.phase = Phase::Ending(verdict);
    }
}

impl<C: Settings, const N: usize, H: HedgeRoom> Core<'_, C, N, H> {
    /// Hedges each retry group may launch.
    #[inline(always)]
    fn max_hedges(&self) -> u32 {
        self.cfg.max_hedges(N)
    }

    /// Sets the overall deadline of a call started at `start`.
    #[inline]
    fn set_deadline(&mut self, start: Instant) {
        let overall = self.cfg.overall();
        // A deadline is after the epoch (a start plus a timeout that is not
        // zero): the epoch stands for none.
        self.deadline_at = if overall != 0 {
            start.plus_nanos(overall)
        } else {
            Instant::ZERO
        };
    }

    /// The next backoff delay (zero without a draw, for settings without
    /// backoff).
    #[inline(always)]
    fn next_delay(&mut self) -> Duration {
        let st = &mut *self.st;
        self.cfg
            .next_delay(&mut st.backoff, &mut st.multiplier_milli, &mut st.rng)
    }

    /// A machine just made takes over the compact stage's call at retry
    /// group `group`, launched (its primary, id `group`) at `at` with the
    /// gate's `budget_reason`, in a call started at `start` whose earlier
    /// groups (one attempt each, ids `0..group`) failed retryably with no
    /// backoff: the state [`Event::Start`] at `start`, the gate's
    /// admissions and those failures would leave it in, set directly
    /// (growth is off the compact path; the crate's tests compare staged
    /// and full machines). The attempt is the one the machine would have
    /// launched (its deadline from the machine's own timeouts, which are
    /// the policy's the compact stage read). The earlier failure's outcome
    /// is not kept: the machine reads it only to admit the next group,
    /// after this group's own failure has replaced it. Inlined into the
    /// growth (its one caller): the state just made is written once.
    ///
    /// `backoff` is the compact stage's backoff (none under a policy
    /// without one): the sleep before this group's primary, and the
    /// backoff sequence's state after the earlier groups' draws.
    #[inline(always)]
    pub(crate) fn launched(
        &mut self,
        group: u16,
        start: Instant,
        at: Instant,
        budget_reason: &'static str,
        backoff: (Duration, u64),
    ) {
        self.took_over(group, start, at, backoff);
        self.phase = Phase::Running(at);
        self.groups += 1;
        self.launched += 1;
        self.ran += 1;
        let info = AttemptInfo {
            id: AttemptId(group),
            retry_index: u32::from(group),
            hedge_index: 0,
            is_hedge: false,
            deadline: self.attempt_deadline(),
        };
        self.slots.put(0, Slot::new(info, at, budget_reason));
    }

    /// A machine just made takes over the compact stage's call whose
    /// retry group `group` (> 0) is due at `at` after the previous group's
    /// retryable failure `last`, the sleep before it and the backoff
    /// sequence's state `backoff` (see [`launched`](Self::launched)) —
    /// or, while that sleep runs (a call without deadlines: nothing to
    /// check the wake against), due at `wake`: the gate not asked yet.
    pub(crate) fn retry_due(
        &mut self,
        group: u16,
        start: Instant,
        at: Instant,
        last: Outcome,
        backoff: (Duration, u64),
        wake: Option<Instant>,
    ) {
        self.took_over(group, start, at, backoff);
        self.phase = match wake {
            Some(wake) => Phase::Backoff(wake),
            None => Phase::Ready,
        };
        self.slots.set_last(Last::outcome(last));
    }

    /// What [`launched`](Self::launched) and
    /// [`retry_due`](Self::retry_due) share: `group` groups launched, at
    /// `at`, each of one attempt, the last of which failed; the running
    /// (or due) group's sleep and the backoff sequence where `backoff`
    /// says (its multiplier converted again at the next draw).
    #[inline(always)]
    fn took_over(&mut self, group: u16, start: Instant, at: Instant, backoff: (Duration, u64)) {
        debug_assert!(matches!(self.phase, Phase::Idle), "a machine just made");
        self.now = at;
        self.start = start;
        self.set_deadline(start);
        self.groups = group;
        self.launched = group;
        self.ran = group;
        self.set_group_backoff(backoff.0);
        self.backoff = backoff.1;
        self.last_failure = group.checked_sub(1).map(AttemptId);
    }

    /// Takes the success of the compact stage's attempt `id` at `now`,
    /// whose record the compact stage gave out already: the state
    /// [`handle`](Self::handle) of that event leaves, its record dropped.
    pub(crate) fn succeeded(&mut self, id: AttemptId, now: Instant) {
        let _ = self.take_event(Event::AttemptFinished {
            id,
            outcome: Outcome::SUCCESS,
            now,
        });
    }

    /// Finishes a call whose last attempt succeeded and whose end the gate
    /// has heard (the compact stage told it): what [`poll`](Self::poll)
    /// does there — no slot to cancel, the phase done — without a gate to
    /// tell again. (A `poll` through a gate that ignores the call's end
    /// would compile the machine's `poll` a second time.)
    pub(crate) fn finish_told(&mut self) {
        debug_assert!(self.slots.in_flight() == 0);
        if let Phase::Ending(verdict) = self.phase {
            self.phase = Phase::Done(verdict);
        }
        debug_assert!(
            matches!(self.phase, Phase::Done(Verdict::Success(_))),
            "the compact stage's success"
        );
    }

    /// Feeds an event that ends no attempt (the call future's growth and
    /// drop feed the start and the cancel), inlined: it compiles to those
    /// events' arms only.
    #[inline(always)]
    pub(crate) fn keep_event(&mut self, event: Event) {
        let ended = self.take_event(event);
        debug_assert!(ended.is_none(), "an event that ends no attempt");
    }

    /// Feeds one event; returns the slot, outcome and backoff of the
    /// admitted attempt it ended (at the machine's `now`), if any, whose
    /// record the
    /// gate and the observers have not heard of yet
    /// ([`CallMachine::handle`] keeps it for the next
    /// [`CallMachine::poll`]; the call future's drain hands it out at once).
    #[inline(always)]
    fn take_event(&mut self, event: Event) -> Option<(Slot, Outcome, Duration)> {
        match event {
            Event::Start { now } => {
                if !matches!(self.phase, Phase::Idle) {
                    return None;
                }
                // An event fed before the start may have moved the clock;
                // it never goes back.
                let now = self.now.max(now);
                self.now = now;
                self.start = now;
                self.set_deadline(now);
                self.phase = Phase::Ready;
                None
            }
            Event::Tick { now } => {
                self.advance(now);
                None
            }
            Event::Cancel { now } => {
                self.advance(now);
                if !matches!(self.phase, Phase::Done(_)) {
                    let v = Verdict::Failure {
                        cause: Cause::Cancelled,
                        last: self.last_failure,
                    };
                    self.phase = Phase::Ending(v);
                }
                None
            }
            Event::AttemptFinished { id, outcome, now } => {
                self.advance(now);
                self.finished(id, outcome)
            }
        }
    }

    /// Feeds `event`, if any, and carries out the actions due through
    /// `out` (what [`CallMachine::handle`], then [`CallMachine::poll`]
    /// until the machine must wait, do, without keeping the event's record
    /// in between); without an event, what is due.
    #[inline(always)]
    pub(crate) fn feed_with<E: poll::Emit>(&mut self, event: Option<Event>, out: &mut E) -> Action {
        let ended = match event {
            Some(event) => self
                .take_event(event)
                .map(|(slot, outcome, backoff)| (slot, outcome, self.now, backoff)),
            None => None,
        };
        self.drain_with(ended, out)
    }

    /// Hands out the record of the attempt `ended` (its slot, outcome,
    /// end and backoff), if any, then carries out the actions due through
    /// `out`.
    #[inline(always)]
    fn drain_with<E: poll::Emit>(&mut self, ended: Option<Ended>, out: &mut E) -> Action {
        // Built only for a gate or an observer that hears it (one that
        // ignores records says so, and the building compiles away).
        if let Some((slot, outcome, end, backoff)) =
            ended.filter(|_| crate::gate::Gate::hears_attempts(out.gate()) || out.hears_records())
        {
            let completed = Completed {
                slot,
                outcome,
                end,
                backoff,
            };
            if let core::ops::ControlFlow::Break(action) = out.completed(&completed) {
                return action;
            }
        }
        self.run_with(out)
    }

    /// An admitted attempt completed: its slot, outcome and backoff (its
    /// record's makings, ended now), unless its result is stale. The
    /// backoff is read before the failure is taken, which may replace it
    /// with the next group's (see [`State::group_backoff`]).
    #[inline(always)]
    fn finished(&mut self, id: AttemptId, outcome: Outcome) -> Option<(Slot, Outcome, Duration)> {
        if !matches!(self.phase, Phase::Running(_)) {
            // The attempt was already cut or cancelled; its result is stale.
            return None;
        }
        let slot = self.take_slot(id)?;
        let backoff = self.backoff_of(&slot);
        match outcome.kind {
            OutcomeKind::Success => self.end(Verdict::Success(id)),
            _ => self.attempt_failed(id, outcome),
        }
        Some((slot, outcome, backoff))
    }

    /// An attempt of the running group failed (or was cut).
    #[inline]
    fn attempt_failed(&mut self, id: AttemptId, outcome: Outcome) {
        self.last_failure = Some(id);
        self.slots.set_last(Last::outcome(outcome));
        let cause = match outcome.kind {
            OutcomeKind::Abort => Cause::Abort,
            OutcomeKind::NonRetryable => Cause::NonRetryable,
            OutcomeKind::Success | OutcomeKind::Retryable => {
                if self.in_flight() == 0 {
                    self.by_value().group_done(outcome.retry_after);
                }
                return;
            }
        };
        if self.cfg.cancel_on_first_terminal() || self.in_flight() == 0 {
            // The group's first terminal outcome is the call's, as in
            // `group_done` (and its result is the one the driver keeps).
            if let Some((first, first_cause)) = self.hedge.take_terminal() {
                self.last_failure = Some(first);
                return self.fail(first_cause);
            }
            return self.fail(cause);
        }
        // Other attempts may still succeed; a later retryable failure must
        // not mask this one.
        self.hedge.hold_terminal(id, cause);
    }

    /// Every attempt of the group has reported: its held terminal outcome
    /// ends the call, otherwise back off (or stop).
    // By value (the view's two pointers in registers): out of line, a view
    // passed by reference would be kept in memory by its callers and read
    // through twice.
    fn group_done(mut self, hint: Option<Duration>) {
        match self.hedge.take_terminal() {
            // A terminal outcome ends the call, so the retry-only
            // last outcome need not be restored.
            Some((id, cause)) => {
                self.last_failure = Some(id);
                self.fail(cause);
            }
            None => self.group_failed(hint),
        }
    }

    /// The current retry group failed retryably: back off, or stop.
    fn group_failed(&mut self, hint: Option<Duration>) {
        if u32::from(self.groups) >= self.cfg.max_attempts() {
            return self.fail(Cause::Exhausted);
        }
        let drawn = self.next_delay();
        let (delay, beyond) = match hint {
            Some(h) => (
                h.min(self.cfg.max_retry_after()),
                Cause::RetryAfterBeyondDeadline,
            ),
            None => (drawn, Cause::BackoffBeyondDeadline),
        };
        // A zero delay (no backoff) wakes now: no duration arithmetic.
        let wake = if delay.is_zero() {
            self.now
        } else {
            self.now + delay
        };
        if self.deadline().is_some_and(|d| wake >= d) {
            return self.fail(beyond);
        }
        self.set_group_backoff(delay);
        self.phase = if delay.is_zero() {
            Phase::Ready
        } else {
            Phase::BackoffUnchecked(wake)
        };
    }
}

/// A [`Duration`] kept as its seconds and its sub-second nanoseconds apart
/// (a `u64` and a `u32` pack with a struct's other small fields, where a
/// `Duration` takes 16 aligned bytes), read back. The nanoseconds are below
/// a second's, as [`Duration::subsec_nanos`] gave them: the `min` tells the
/// compiler so (no carry, no overflow check, no panic message in flash).
#[inline(always)]
pub(crate) fn joined(secs: u64, subsec_nanos: u32) -> Duration {
    Duration::new(secs, subsec_nanos.min(999_999_999))
}

/// The next delay of `backoff` (fresh), resumed from `state`, which it
/// advances.
#[inline]
pub(crate) fn draw(mut backoff: Backoff, state: &mut u64, rng: &mut fastrand::Rng) -> Duration {
    backoff.resume(*state);
    let delay = backoff.next_delay(rng);
    *state = backoff.state();
    delay
}

/// The reason the records of attempts cut when a call ends with `verdict`
/// carry: a function of the verdict, so that [`Phase::Ending`] keeps no
/// string (16 bytes of every machine).
fn cut_reason(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Failure {
            cause: Cause::DeadlineExceeded,
            ..
        } => reason::OVERALL_TIMEOUT,
        Verdict::Failure {
            cause: Cause::Cancelled,
            ..
        } => reason::CANCELLED,
        _ => reason::HEDGE_LOSER,
    }
}

#[cfg(test)]
mod shared_room {
    use super::room::Shared;
    use super::*;

    fn slot(id: u16, deadline: u64) -> Slot {
        Slot {
            budget_reason: "admitted",
            start: Instant::from_nanos(5),
            deadline: Instant::from_nanos(deadline),
            id: AttemptId(id),
            retry_index: id,
            hedge_index: 0,
        }
    }

    #[test]
    fn the_one_room_keeps_what_both_keep() {
        let lasts = [
            Last::None,
            Last::Refused("budget"),
            Last::Outcome(Outcome::retryable("flaky")),
            Last::Outcome(Outcome {
                kind: OutcomeKind::Retryable,
                reason: "http_503",
                retry_after: Some(Duration::new(3, 999_999_999)),
            }),
            Last::Outcome(Outcome::new(OutcomeKind::NonRetryable, "bad")),
            Last::Outcome(Outcome {
                kind: OutcomeKind::Abort,
                reason: "stop",
                retry_after: Some(Duration::ZERO),
            }),
            Last::Outcome(Outcome::SUCCESS),
        ];
        for last in lasts {
            let mut one = <Option<Shared> as SlotRoom>::new();
            let mut both = <Both1 as SlotRoom>::new();
            assert_eq!(one.last(), Last::None);
            one.set_last(last);
            both.set_last(last);
            assert_eq!(one.last(), both.last());
            assert_eq!(one.last(), last);
            assert_eq!((one.free(), one.in_flight()), (Some(0), 0));
            assert_eq!(one.first_deadline(), None);
            // A launch replaces the last failure; its slot is read back
            // whole, and taken only when picked.
            one.put(0, slot(2, 40));
            assert_eq!((one.free(), one.in_flight()), (None, 1));
            assert_eq!(one.first_deadline(), Some(Instant::from_nanos(40)));
            assert!(one.take_where(|s| s.id == AttemptId(1)).is_none());
            let taken = one.take_where(|s| s.id == AttemptId(2)).unwrap();
            assert_eq!(taken.info(), slot(2, 40).info());
            assert_eq!(
                (taken.start, taken.budget_reason),
                (Instant::from_nanos(5), "admitted")
            );
            assert_eq!((one.free(), one.in_flight()), (Some(0), 0));
            assert_eq!(one.last(), Last::None);
        }
    }

    type Both1 = <Hedging as HedgeRoom>::Slots<1>;
}
