//! The result contract of calls with a classifier of yours: a value the
//! classifier did not accept is the call's error.
//!
//! The core driver keeps results as the operation returned them, so a call
//! that stops on a rejected `Ok` value (retries ran out on it, it was
//! non-retryable, a budget refused the retry after it) would hand the value
//! back as `Ok`, or drop it, while the observer hears a failure. The
//! executor's [`call_classified`](crate::Executor::call_classified) methods
//! therefore classify each attempt's result as it completes and move a
//! rejected value to the error side ([`Failure::Rejected`]), carrying the
//! classifier's outcome with it, so that the driver decides on exactly the
//! outcome the classifier gave (the classifier runs once per attempt) and
//! every way a call can fail keeps the last value or error.

use core::any::Any;
use core::cell::Cell;
use core::fmt;
use core::future::Future;
use core::panic::AssertUnwindSafe;
use core::pin::Pin;
use core::task::{Context, Poll};

use recourse_core::{AttemptInfo, Classifier, Outcome, OutcomeKind};

use crate::classify::PANIC_IN_CLASSIFIER;

/// Why a call with your classifier failed, inside its
/// [`Error`](crate::Error): the last value the classifier did not accept,
/// or the operation's last error.
///
/// [`Executor::call_classified`](crate::Executor::call_classified) returns
/// `Result<T, Error<Failure<T, E>>>`: `Ok` always means the classifier
/// accepted the value, and a call that ends on a value it rejected is an
/// `Err` carrying that value, whatever stopped the call (retries exhausted,
/// a non-retryable verdict, a budget or the breaker refusing the retry, the
/// deadline).
///
/// ```
/// use recourse::{Error, Executor, Failure, Outcome};
///
/// let exec = Executor::new();
/// let status = |r: &Result<u16, String>| match r {
///     Ok(200) => Outcome::SUCCESS,
///     Ok(_) | Err(_) => Outcome::retryable("unavailable"),
/// };
/// let r = async_io::block_on(exec.call_classified("svc.Get", status, |_| async {
///     Ok::<u16, String>(503)
/// }));
/// assert_eq!(
///     r,
///     Err(Error::RetriesExhausted { last: Some(Failure::Rejected(503)), attempts: 3 })
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure<T, E> {
    /// A value the classifier did not accept.
    Rejected(T),
    /// The operation's error.
    Error(E),
}

impl<T, E> Failure<T, E> {
    /// The rejected value, when the failure is one.
    pub fn rejected(&self) -> Option<&T> {
        match self {
            Self::Rejected(v) => Some(v),
            Self::Error(_) => None,
        }
    }

    /// The rejected value, when the failure is one.
    pub fn into_rejected(self) -> Option<T> {
        match self {
            Self::Rejected(v) => Some(v),
            Self::Error(_) => None,
        }
    }

    /// The operation's error, when the failure is one.
    pub fn error(&self) -> Option<&E> {
        match self {
            Self::Rejected(_) => None,
            Self::Error(e) => Some(e),
        }
    }

    /// The operation's error, when the failure is one.
    pub fn into_error(self) -> Option<E> {
        match self {
            Self::Rejected(_) => None,
            Self::Error(e) => Some(e),
        }
    }
}

impl<T, E: fmt::Display> fmt::Display for Failure<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(_) => f.write_str("value rejected by the classifier"),
            Self::Error(e) => e.fmt(f),
        }
    }
}

impl<T: fmt::Debug, E: core::error::Error + 'static> core::error::Error for Failure<T, E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        self.error().map(|e| e as _)
    }
}

/// An accepted value with the outcome the classifier gave it.
pub(crate) struct Accepted<T> {
    pub(crate) value: T,
    outcome: Outcome,
}

/// A rejected value or an error, with the outcome the classifier gave it
/// (or the panic it raised, for the call's contained classifier to take).
pub(crate) struct Split<T, E> {
    pub(crate) failure: Failure<T, E>,
    outcome: Outcome,
    panic: Cell<Option<Box<dyn Any + Send>>>,
}

/// Classifies each attempt's result as it completes, splitting it into
/// [`Accepted`] and [`Split`].
pub(crate) fn split_op<'c, T, E, C, Op, Fut>(
    classifier: &'c C,
    mut op: Op,
) -> impl FnMut(AttemptInfo) -> SplitAttempt<'c, Fut, C>
where
    C: Classifier<T, E>,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    move |info| SplitAttempt {
        inner: op(info),
        classifier,
    }
}

pin_project_lite::pin_project! {
    /// One attempt whose result is split by the classifier's verdict.
    pub(crate) struct SplitAttempt<'c, F, C> {
        #[pin]
        inner: F,
        classifier: &'c C,
    }
}

impl<T, E, F, C> Future for SplitAttempt<'_, F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
{
    type Output = Result<Accepted<T>, Split<T, E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => return Poll::Pending,
        };
        let classifier = *this.classifier;
        // A panicking classifier is the call's contained classifier's
        // business (`Carried` raises it again there), not the operation's.
        let (outcome, panic) =
            match std::panic::catch_unwind(AssertUnwindSafe(|| classifier.classify(&result))) {
                Ok(outcome) => (outcome, None),
                Err(payload) => (Outcome::abort(PANIC_IN_CLASSIFIER), Some(payload)),
            };
        Poll::Ready(match result {
            Ok(value) if outcome.kind == OutcomeKind::Success && panic.is_none() => {
                Ok(Accepted { value, outcome })
            }
            Ok(value) => Err(Split {
                failure: Failure::Rejected(value),
                outcome,
                panic: Cell::new(panic),
            }),
            Err(error) => Err(Split {
                failure: Failure::Error(error),
                outcome,
                panic: Cell::new(panic),
            }),
        })
    }
}

/// The classifier the driver sees: the outcome the attempt carries.
pub(crate) struct Carried;

impl<T, E> Classifier<Accepted<T>, Split<T, E>> for Carried {
    fn classify(&self, result: &Result<Accepted<T>, Split<T, E>>) -> Outcome {
        match result {
            Ok(a) => a.outcome,
            Err(s) => {
                if let Some(payload) = s.panic.take() {
                    std::panic::resume_unwind(payload);
                }
                s.outcome
            }
        }
    }
}
