//! How a call ends: the observer's [`CallEnd`] and the
//! result or typed [`Error`] it resolves to.

use super::*;

#[inline]
pub(super) fn call_end<P: Borrow<Policy>, M: MachineOps<P>>(
    machine: &Staged<P, M>,
    verdict: Verdict,
) -> CallEnd {
    CallEnd {
        start: machine.start(),
        end: machine.now(),
        attempts: machine.attempts(),
        verdict,
    }
}

/// The call's result from the verdict and the results the driver kept.
#[inline]
pub(super) fn conclude<T, E>(
    verdict: Verdict,
    attempts: u32,
    refusal: Option<&'static str>,
    kept: &mut Option<(AttemptId, Result<T, E>)>,
) -> Result<T, Error<E>> {
    let (cause, last_id) = match verdict {
        Verdict::Success(_winner) => {
            // The winner's result: the driver keeps it in the room of the
            // failures before it, and no failure after it (a success ends
            // the call).
            let kept = kept.take();
            debug_assert!(kept.as_ref().is_none_or(|(id, _)| *id == _winner));
            return match kept.map(|(_, r)| r) {
                Some(Ok(value)) => Ok(value),
                Some(Err(error)) => Err(Error::Operation {
                    error,
                    cause: Cause::Accepted,
                }),
                // The machine only declares the attempt the driver just
                // stored a winner.
                None => Err(Error::Cancelled { last: None }),
            };
        }
        Verdict::Failure { cause, last } => (cause, last),
    };
    // Only the result of the attempt the machine names as the last failure
    // is the call's last result; an attempt cut at its deadline has none.
    let last = kept
        .take()
        .filter(|(id, _)| Some(*id) == last_id)
        .map(|(_, r)| r);
    let last_err = |last: Option<Result<T, E>>| last.and_then(Result::err);
    match cause {
        Cause::NonRetryable | Cause::Abort | Cause::RetryAfterBeyondDeadline | Cause::Accepted => {
            match last {
                Some(Ok(value)) => Ok(value),
                Some(Err(error)) => Err(Error::Operation { error, cause }),
                None => Err(Error::DeadlineExceeded { last: None }),
            }
        }
        Cause::Exhausted => match last {
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => Err(Error::RetriesExhausted {
                last: Some(error),
                attempts,
            }),
            // The last attempt was cut at its per-attempt deadline.
            None => Err(Error::AttemptsTimedOut { attempts }),
        },
        Cause::DeadlineExceeded | Cause::BackoffBeyondDeadline | Cause::DeadlineUnreachable => {
            Err(Error::DeadlineExceeded {
                last: last_err(last),
            })
        }
        Cause::Cancelled => Err(Error::Cancelled {
            last: last_err(last),
        }),
        Cause::BudgetDenied => Err(Error::BudgetDenied {
            reason: refusal.unwrap_or(reason::BUDGET_DENIED),
            last: last_err(last),
        }),
        Cause::CircuitOpen => Err(Error::CircuitOpen {
            reason: refusal.unwrap_or(reason::CIRCUIT_OPEN),
        }),
    }
}
