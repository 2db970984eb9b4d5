//! How a call ends: its RNG seed, the observer's [`CallEnd`] and the
//! result or typed [`Error`] it resolves to.

use super::*;

/// A distinct seed per call: a process-wide call counter (where the target
/// has 32-bit atomics) mixed with the clock.
#[inline]
pub(super) fn call_seed(now: Instant) -> u64 {
    #[cfg(target_has_atomic = "32")]
    let n = {
        use core::sync::atomic::{AtomicU32, Ordering};
        static CALLS: AtomicU32 = AtomicU32::new(0);
        u64::from(CALLS.fetch_add(1, Ordering::Relaxed))
    };
    #[cfg(not(target_has_atomic = "32"))]
    let n = 0;
    derive_seed(now.as_nanos(), n)
}

/// The `n`-th seed derived from `seed`: SplitMix64's `n`-th output, so that
/// neighbouring `n` (and neighbouring seeds) give unrelated streams. Use it
/// to give each call of a seeded program its own reproducible RNG.
#[inline]
pub const fn derive_seed(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline]
pub(super) fn call_end<M: MachineOps>(machine: &M, verdict: Verdict) -> CallEnd {
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
    winner: &mut Option<Result<T, E>>,
    last: &mut Option<(AttemptId, Result<T, E>)>,
) -> Result<T, Error<E>> {
    let (cause, last_id) = match verdict {
        Verdict::Success(_) => {
            return match winner.take() {
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
    let last = last
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

#[cfg(test)]
mod tests {
    use super::derive_seed;

    #[test]
    fn derived_seeds_are_deterministic_and_distinct() {
        assert_eq!(derive_seed(7, 0), derive_seed(7, 0));
        assert_ne!(derive_seed(7, 0), derive_seed(7, 1));
        assert_ne!(derive_seed(7, 0), derive_seed(8, 0));
        assert_ne!(derive_seed(0, 0), 0);
    }
}
