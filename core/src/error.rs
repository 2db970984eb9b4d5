//! The error of a call: which of the things that can end a call happened.

use core::fmt;

use crate::verdict::{reason, Cause};

/// Why a call returned an error.
///
/// Where recourse stopped because of the operation's own results, the
/// operation's last error is inside ([`Error::Operation`],
/// [`Error::RetriesExhausted`]); where recourse ended the call itself, the
/// last error is kept when there was one. When the last failure was an `Ok`
/// value a classifier rejected (an HTTP 503 response, say) and recourse
/// stopped because of it, the call returns that value as `Ok`: the caller sees
/// the response, the timeline says why it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error<E> {
    /// The operation failed and retrying would not help: the outcome was
    /// non-retryable or abort, or the server's retry-after hint reached past
    /// the overall deadline.
    Operation {
        /// The operation's last error.
        error: E,
        /// Why recourse stopped with it.
        cause: Cause,
    },
    /// Every allowed attempt failed retryably.
    RetriesExhausted {
        /// The last attempt's error; `None` when recourse cut the last
        /// attempt at its per-attempt deadline.
        last: Option<E>,
        /// Attempts made.
        attempts: u32,
    },
    /// The overall deadline passed, or the next backoff would have ended past
    /// it.
    DeadlineExceeded {
        /// The last attempt's error, if an attempt had failed.
        last: Option<E>,
    },
    /// The caller cancelled the call.
    Cancelled {
        /// The last attempt's error, if an attempt had failed.
        last: Option<E>,
    },
    /// A budget refused the next attempt.
    BudgetDenied {
        /// The budget's reason code.
        reason: &'static str,
        /// The last attempt's error, if an attempt had failed.
        last: Option<E>,
    },
    /// The circuit breaker refused the call; the operation was not called.
    CircuitOpen {
        /// `circuit_open` or `circuit_half_open_probe_limit`.
        reason: &'static str,
    },
    /// No policy was found for the key and the executor's missing-policy mode
    /// is `deny`.
    NoPolicy,
    /// The operation panicked and the executor contained the panic (std
    /// executors with panic containment on): the call stopped, its attempts
    /// were settled with their budgets, the process goes on. Reason
    /// `panic_in_operation`.
    OperationPanicked,
}

impl<E> Error<E> {
    /// The operation's last error, if the call got one.
    pub fn last_error(&self) -> Option<&E> {
        match self {
            Self::Operation { error, .. } => Some(error),
            Self::RetriesExhausted { last, .. }
            | Self::DeadlineExceeded { last }
            | Self::Cancelled { last }
            | Self::BudgetDenied { last, .. } => last.as_ref(),
            Self::NoPolicy | Self::CircuitOpen { .. } | Self::OperationPanicked => None,
        }
    }

    /// The operation's last error, if the call got one.
    pub fn into_last_error(self) -> Option<E> {
        match self {
            Self::Operation { error, .. } => Some(error),
            Self::RetriesExhausted { last, .. }
            | Self::DeadlineExceeded { last }
            | Self::Cancelled { last }
            | Self::BudgetDenied { last, .. } => last,
            Self::NoPolicy | Self::CircuitOpen { .. } | Self::OperationPanicked => None,
        }
    }

    /// A low-cardinality reason code for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Operation { cause, .. } => cause.as_str(),
            Self::RetriesExhausted { .. } => Cause::Exhausted.as_str(),
            Self::DeadlineExceeded { .. } => Cause::DeadlineExceeded.as_str(),
            Self::Cancelled { .. } => Cause::Cancelled.as_str(),
            Self::BudgetDenied { reason, .. } | Self::CircuitOpen { reason } => reason,
            Self::NoPolicy => reason::NO_POLICY,
            Self::OperationPanicked => reason::PANIC_IN_OPERATION,
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = |f: &mut fmt::Formatter<'_>, last: &Option<E>| match last {
            Some(e) => write!(f, "; last error: {e}"),
            None => Ok(()),
        };
        match self {
            Self::Operation { error, cause } => write!(f, "{error} ({})", cause.as_str()),
            Self::RetriesExhausted { last: l, attempts } => {
                write!(f, "retries exhausted after {attempts} attempts")?;
                match l {
                    Some(e) => write!(f, "; last error: {e}"),
                    None => f.write_str("; the last attempt timed out"),
                }
            }
            Self::DeadlineExceeded { last: l } => {
                f.write_str("overall deadline exceeded")?;
                last(f, l)
            }
            Self::Cancelled { last: l } => {
                f.write_str("call cancelled")?;
                last(f, l)
            }
            Self::BudgetDenied { reason, last: l } => {
                write!(f, "attempt refused by budget ({reason})")?;
                last(f, l)
            }
            Self::CircuitOpen { reason } => {
                write!(f, "call refused by the circuit breaker ({reason})")
            }
            Self::NoPolicy => f.write_str("no policy for this key and missing-policy mode is deny"),
            Self::OperationPanicked => f.write_str("the operation panicked (contained)"),
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        self.last_error().map(|e| e as _)
    }
}
