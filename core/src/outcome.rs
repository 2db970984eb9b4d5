//! Outcomes and classifiers: what one attempt's result means for the call.
//!
//! Why a classifier and not "retry on `Err`": whether a failure is worth
//! retrying is protocol knowledge. An HTTP 503 on a GET is, a 400 is not, a
//! POST is not unless it is idempotent; a gRPC `CANCELLED` means stop now. A
//! classifier turns one attempt's `Result` into an [`Outcome`]: a kind the
//! machine acts on, a low-cardinality reason code for timelines and metrics,
//! and an optional server-requested delay.

use core::fmt;
use core::time::Duration;

/// What the machine does after an attempt.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// The call succeeded with this attempt's result.
    Success,
    /// The attempt failed in a way another attempt may fix.
    Retryable,
    /// The attempt failed in a way retrying will not fix; the call stops.
    NonRetryable,
    /// The call must stop at once (the caller or the server asked for it).
    Abort,
}

impl OutcomeKind {
    /// The lowercase name used in timelines.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Retryable => "retryable",
            Self::NonRetryable => "non_retryable",
            Self::Abort => "abort",
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason codes, re-exported from their home in [`crate::verdict::reason`].
pub use crate::verdict::reason;

/// A classified attempt result.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Outcome {
    /// What the machine does next.
    pub kind: OutcomeKind,
    /// A low-cardinality reason code, e.g. `retryable_error`, `http_503`.
    pub reason: &'static str,
    /// A delay the server asked for (HTTP `Retry-After`, gRPC pushback);
    /// it replaces the jittered backoff before the next attempt.
    pub retry_after: Option<Duration>,
}

impl Outcome {
    /// `success`.
    pub const SUCCESS: Self = Self::new(OutcomeKind::Success, reason::SUCCESS);

    /// An outcome without a retry-after hint.
    pub const fn new(kind: OutcomeKind, reason: &'static str) -> Self {
        Self {
            kind,
            reason,
            retry_after: None,
        }
    }

    /// A retryable failure with `reason`.
    pub const fn retryable(reason: &'static str) -> Self {
        Self::new(OutcomeKind::Retryable, reason)
    }

    /// A non-retryable failure with `reason`.
    pub const fn non_retryable(reason: &'static str) -> Self {
        Self::new(OutcomeKind::NonRetryable, reason)
    }

    /// An abort with `reason`.
    pub const fn abort(reason: &'static str) -> Self {
        Self::new(OutcomeKind::Abort, reason)
    }

    /// This outcome with a retry-after hint.
    pub const fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Whether the kind is [`OutcomeKind::Success`].
    pub const fn is_success(&self) -> bool {
        matches!(self.kind, OutcomeKind::Success)
    }
}

/// Turns one attempt's result into an [`Outcome`].
///
/// Implemented for every `Fn(&Result<T, E>) -> Outcome`, so a closure is a
/// classifier:
///
/// ```
/// use recourse_core::{Classifier, Outcome};
/// let c = |r: &Result<u16, ()>| match r {
///     Ok(200) => Outcome::SUCCESS,
///     Ok(503) | Err(_) => Outcome::retryable("unavailable"),
///     Ok(_) => Outcome::non_retryable("bad_status"),
/// };
/// assert_eq!(c.classify(&Ok(404)).reason, "bad_status");
/// ```
pub trait Classifier<T, E> {
    /// Classifies one attempt's result.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classifier<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// `Ok` is success; every `Err` is retryable (`retryable_error`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl<T, E> Classifier<T, E> for DefaultClassifier {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::SUCCESS,
            Err(_) => Outcome::retryable(reason::RETRYABLE_ERROR),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classifier() {
        let c = DefaultClassifier;
        assert_eq!(Classifier::<u8, ()>::classify(&c, &Ok(1)), Outcome::SUCCESS);
        let o = Classifier::<u8, ()>::classify(&c, &Err(()));
        assert_eq!(o.kind, OutcomeKind::Retryable);
        assert_eq!(o.reason, "retryable_error");
        assert_eq!(o.retry_after, None);
    }
}
