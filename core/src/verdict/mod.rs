//! The verdict vocabulary: how a call ended ([`Verdict`]), why it failed
//! ([`Cause`]) and every reason code core produces ([`reason`]).
//!
//! Why a module of its own: the machine, the gate, the breaker, the budgets
//! and the error type all speak this vocabulary. Keeping it below all of
//! them (it depends only on the attempt handle) means none of them imports
//! another just to name a verdict.

pub mod reason;

use crate::record::AttemptId;

/// How a call ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// This attempt's result is the call's.
    Success(AttemptId),
    /// The call failed.
    Failure {
        /// Why.
        cause: Cause,
        /// The last attempt that reported a failure, if any; its result is
        /// the call's last error.
        last: Option<AttemptId>,
    },
}

/// Why a call failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// An attempt's outcome was non-retryable.
    NonRetryable,
    /// An attempt's outcome was abort.
    Abort,
    /// Every allowed attempt failed retryably.
    Exhausted,
    /// The overall deadline passed.
    DeadlineExceeded,
    /// The next backoff would end at or past the overall deadline, so the
    /// call stopped early rather than sleep into it.
    BackoffBeyondDeadline,
    /// The server's retry-after hint would end at or past the overall
    /// deadline.
    RetryAfterBeyondDeadline,
    /// The next retry would be expected to end past the overall deadline
    /// (its start plus the gate's [expected
    /// latency](crate::gate::Gate::expected_latency)), so the call stopped
    /// at once instead of sleeping into a failure.
    DeadlineUnreachable,
    /// The caller cancelled.
    Cancelled,
    /// A budget refused an attempt.
    BudgetDenied,
    /// The circuit breaker refused the call.
    CircuitOpen,
    /// Not produced by the machine: a classifier judged an `Err` a success,
    /// so the call stopped with that error without retrying.
    Accepted,
}

impl Cause {
    /// A low-cardinality reason code (one of [`reason`]'s).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NonRetryable => reason::NON_RETRYABLE,
            Self::Abort => reason::ABORT,
            Self::Exhausted => reason::RETRIES_EXHAUSTED,
            Self::DeadlineExceeded => reason::DEADLINE_EXCEEDED,
            Self::BackoffBeyondDeadline => reason::BACKOFF_BEYOND_DEADLINE,
            Self::RetryAfterBeyondDeadline => reason::RETRY_AFTER_BEYOND_DEADLINE,
            Self::DeadlineUnreachable => reason::DEADLINE_UNREACHABLE,
            Self::Cancelled => reason::CANCELLED,
            Self::BudgetDenied => reason::BUDGET_DENIED,
            Self::CircuitOpen => reason::CIRCUIT_OPEN,
            Self::Accepted => reason::ACCEPTED_ERROR,
        }
    }
}
