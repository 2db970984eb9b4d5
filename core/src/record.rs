//! Attempt handles and records: what the machine tells the driver and the
//! observers about each attempt.

use core::time::Duration;

use crate::outcome::Outcome;
use crate::time::Instant;

/// A small copyable handle of one attempt of one call: its launch order,
/// counted from 0 (hedges included).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptId(pub u16);

/// Why an attempt is launched; budgets decide what each kind costs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttemptKind {
    /// The first attempt of the call.
    Initial,
    /// The first attempt of a later retry group.
    Retry,
    /// An extra, concurrent attempt within a retry group.
    Hedge,
}

impl AttemptKind {
    /// The lowercase name used in timelines.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Retry => "retry",
            Self::Hedge => "hedge",
        }
    }
}

/// What the operation is told about the attempt it runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttemptInfo {
    /// The attempt's handle.
    pub id: AttemptId,
    /// The retry group, counted from 0.
    pub retry_index: u32,
    /// 0 for the group's primary, k for its k-th hedge.
    pub hedge_index: u32,
    /// Whether this attempt is a hedge.
    pub is_hedge: bool,
    /// When recourse will cut this attempt: its per-attempt deadline clipped
    /// to the overall one, on the call's timer. Useful to pass downstream.
    pub deadline: Option<Instant>,
}

impl AttemptInfo {
    /// The attempt's kind.
    pub const fn kind(&self) -> AttemptKind {
        if self.is_hedge {
            AttemptKind::Hedge
        } else if self.retry_index == 0 {
            AttemptKind::Initial
        } else {
            AttemptKind::Retry
        }
    }
}

/// One attempt, as it is kept in timelines and given to observers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttemptRecord {
    /// Which attempt.
    pub info: AttemptInfo,
    /// When it was launched (or refused).
    pub start: Instant,
    /// When it finished, was cut or was refused.
    pub end: Instant,
    /// How it ended. Attempts recourse ended itself carry `attempt_timeout`,
    /// `overall_timeout`, `cancelled` or `hedge_loser`.
    pub outcome: Outcome,
    /// Whether recourse dropped the attempt's future rather than seeing it
    /// complete.
    pub cancelled: bool,
    /// The sleep before this attempt: 0 for the first attempt and for hedges.
    pub backoff: Duration,
    /// Whether the budget let the attempt run.
    pub budget_allowed: bool,
    /// The budget's reason code (`no_budget`, `allowed`, `budget_denied` ...).
    pub budget_reason: &'static str,
}

impl AttemptRecord {
    /// `end - start`.
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }
}
