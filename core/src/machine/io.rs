//! What goes in and out of the machine: the [`Event`]s a driver feeds and
//! the [`Action`]s it drains (the executor's [`Limits`](crate::Limits) are
//! the machine's to read, in `crate::limits`).

use crate::outcome::Outcome;
use crate::record::{AttemptId, AttemptInfo, AttemptRecord};
use crate::time::Instant;
use crate::verdict::Verdict;

/// Something that happened, with the time it happened.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The call starts.
    Start {
        /// When.
        now: Instant,
    },
    /// A launched attempt completed and was classified.
    AttemptFinished {
        /// Which attempt.
        id: AttemptId,
        /// Its classified result.
        outcome: Outcome,
        /// When.
        now: Instant,
    },
    /// Time has passed (a wait ended).
    Tick {
        /// The current time.
        now: Instant,
    },
    /// The caller gave up on the call.
    Cancel {
        /// When.
        now: Instant,
    },
}

/// Why the machine waits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum WaitReason {
    /// Backoff (or a retry-after hint) before the next retry group.
    Backoff,
    /// The per-attempt deadline of an attempt in flight.
    AttemptDeadline,
    /// The call's overall deadline.
    CallDeadline,
    /// The hedge trigger's next check.
    HedgeDelay,
}

/// What the driver must do next.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[must_use = "an action is the machine's decision: carry it out"]
pub enum Action {
    /// Start the operation for this attempt.
    Launch(AttemptInfo),
    /// Drop this attempt's future; its record says why.
    Cancel(AttemptRecord),
    /// An attempt ended (or was refused); report the record.
    Record(AttemptRecord),
    /// Nothing to do until `until` (or until an attempt completes).
    Wait {
        /// The instant to send [`Event::Tick`] at.
        until: Instant,
        /// What the instant is.
        reason: WaitReason,
    },
    /// Attempts are in flight and no timer is pending: wait for one to
    /// complete.
    AwaitAttempts,
    /// The call is over.
    Finish(Verdict),
}
