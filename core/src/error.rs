//! The error of a call: which of the things that can end a call happened.

use core::fmt;

use crate::verdict::{reason, Cause};

/// Why a call returned an error.
///
/// Where recourse stopped because of the operation's own results, the
/// operation's last error is inside ([`Error::Operation`],
/// [`Error::RetriesExhausted`]); where recourse ended the call itself, the
/// last error is kept when there was one, also when a budget refused the
/// attempt after it ([`Error::BudgetDenied`]). A call whose last attempt was
/// cut at its per-attempt deadline ends [`Error::AttemptsTimedOut`].
///
/// A value the classifier rejected: this crate's driver keeps results as
/// the operation returned them, so a call that stops on a rejected `Ok`
/// value returns it as `Ok` (the observer and the timeline say why it
/// stopped). The std executor (`recourse`) turns every such value into the
/// call's error, so its callers and observers never disagree:
/// `call_classified` carries it as `Failure::Rejected`, `call_http` as
/// `HttpFailure::Response`, and `call` says [`Error::Rejected`].
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
    /// Every allowed attempt failed retryably, the last with an error.
    RetriesExhausted {
        /// The last attempt's error (a call whose last attempt was cut at
        /// its per-attempt deadline ends [`Error::AttemptsTimedOut`] instead,
        /// so this is `Some` from the executors and the driver).
        last: Option<E>,
        /// Attempts made.
        attempts: u32,
    },
    /// Every allowed attempt was used and the last was cut at its
    /// per-attempt deadline (`timeout_per_attempt`): retries ran out on
    /// timeouts. Its [`reason`](Error::reason) is `retries_exhausted`, the
    /// observer's too; the attempts' own reason is `attempt_timeout`.
    AttemptsTimedOut {
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
    /// The circuit breaker refused the call; the operation was not called
    /// (the breaker is asked before the first attempt only, so its refusal
    /// never follows an attempt whose result it could carry).
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
    /// The call ended on an `Ok` value the classifier did not accept, and
    /// the call method's error type has no room for the value: the std
    /// executor's `call` under a classifier the policy names (the default
    /// classifier accepts every `Ok`). The methods that take a classifier
    /// (`call_classified`, `call_http`) carry the value in their error
    /// instead. Its [`reason`](Error::reason) is the cause's, the
    /// observer's too.
    Rejected {
        /// Why recourse stopped on the rejected value (`retries_exhausted`,
        /// `non_retryable`, ...).
        cause: Cause,
    },
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
            Self::NoPolicy
            | Self::CircuitOpen { .. }
            | Self::AttemptsTimedOut { .. }
            | Self::OperationPanicked
            | Self::Rejected { .. } => None,
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
            Self::NoPolicy
            | Self::CircuitOpen { .. }
            | Self::AttemptsTimedOut { .. }
            | Self::OperationPanicked
            | Self::Rejected { .. } => None,
        }
    }

    /// The same error with the operation's error (where it carries one)
    /// mapped by `f`: the kind, reason and counts are kept.
    pub fn map_last<F>(self, f: impl FnOnce(E) -> F) -> Error<F> {
        match self {
            Self::Operation { error, cause } => Error::Operation {
                error: f(error),
                cause,
            },
            Self::RetriesExhausted { last, attempts } => Error::RetriesExhausted {
                last: last.map(f),
                attempts,
            },
            Self::AttemptsTimedOut { attempts } => Error::AttemptsTimedOut { attempts },
            Self::DeadlineExceeded { last } => Error::DeadlineExceeded { last: last.map(f) },
            Self::Cancelled { last } => Error::Cancelled { last: last.map(f) },
            Self::BudgetDenied { reason, last } => Error::BudgetDenied {
                reason,
                last: last.map(f),
            },
            Self::CircuitOpen { reason } => Error::CircuitOpen { reason },
            Self::NoPolicy => Error::NoPolicy,
            Self::OperationPanicked => Error::OperationPanicked,
            Self::Rejected { cause } => Error::Rejected { cause },
        }
    }

    /// A low-cardinality reason code for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Operation { cause, .. } => cause.as_str(),
            Self::RetriesExhausted { .. } | Self::AttemptsTimedOut { .. } => {
                Cause::Exhausted.as_str()
            }
            Self::DeadlineExceeded { .. } => Cause::DeadlineExceeded.as_str(),
            Self::Cancelled { .. } => Cause::Cancelled.as_str(),
            Self::BudgetDenied { reason, .. } | Self::CircuitOpen { reason } => reason,
            Self::Rejected { cause, .. } => cause.as_str(),
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
            Self::AttemptsTimedOut { attempts } => write!(
                f,
                "retries exhausted after {attempts} attempts; the last attempt timed out"
            ),
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
            Self::Rejected { cause } => write!(
                f,
                "the classifier rejected the last value ({})",
                cause.as_str()
            ),
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        self.last_error().map(|e| e as _)
    }
}
