//! What goes in and out of the machine: the executor's [`Options`], the
//! [`Event`]s a driver feeds, and the [`Action`]s it drains.

use core::time::Duration;

use crate::outcome::Outcome;
use crate::policy::Limits;
use crate::record::{AttemptId, AttemptInfo, AttemptRecord};
use crate::time::Instant;
use crate::verdict::Verdict;

/// Call-wide settings that are the executor's, not the policy's.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Upper bound of a server's retry-after hint. A longer hint is cut to
    /// this; a hint that would end at or past the overall deadline stops the
    /// call. Default 60 s.
    pub max_retry_after: Duration,
    /// The most hedges a retry group may launch, whatever the policy asks:
    /// default 3 ([`Limits::DEFAULT`]); an executor may lift it to
    /// [`Limits::MAX_HEDGES_CEILING`] (10).
    pub max_hedges_ceiling: u32,
}

impl Options {
    /// The defaults.
    pub const DEFAULT: Self = Self {
        max_retry_after: Duration::from_secs(60),
        max_hedges_ceiling: Limits::DEFAULT.max_hedges_ceiling,
    };
}

impl Default for Options {
    fn default() -> Self {
        Self::DEFAULT
    }
}

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
