//! What a breaker answers and is told: its state as callers see it, a
//! refusal, the permit a call runs under, and the call's result that is
//! handed back with the permit.

use core::fmt;

use crate::gate::Admission;
use crate::time::Instant;
use crate::verdict::{Cause, Verdict};

/// Where a breaker is, as callers see it.
///
/// `T` is the instant type: the breaker's own [`Instant`]; a std store
/// reports `std::time::Instant`s (see [`CircuitState::map_instant`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CircuitState<T = Instant> {
    /// Calls run; results are counted.
    Closed,
    /// Calls are refused until `until`.
    Open {
        /// When the cooldown ends and the next call becomes a probe.
        until: T,
    },
    /// Probe calls run, up to the policy's `half_open_max_probes` at once.
    HalfOpen,
}

impl<T> CircuitState<T> {
    /// The same state with its instant converted by `f`.
    pub fn map_instant<U>(self, f: impl FnOnce(T) -> U) -> CircuitState<U> {
        match self {
            Self::Closed => CircuitState::Closed,
            Self::Open { until } => CircuitState::Open { until: f(until) },
            Self::HalfOpen => CircuitState::HalfOpen,
        }
    }

    /// A low-cardinality name: `closed`, `open` or `half_open`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// The breaker refused a call; the operation must not be called.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Refusal<T = Instant> {
    /// [`CIRCUIT_OPEN`](super::CIRCUIT_OPEN) or
    /// [`HALF_OPEN_PROBE_LIMIT`](super::HALF_OPEN_PROBE_LIMIT).
    pub reason: &'static str,
    /// The state that refused: `Open { until }` or `HalfOpen`.
    pub state: CircuitState<T>,
}

impl<T> Refusal<T> {
    /// The same refusal with its instant converted by `f`.
    pub fn map_instant<U>(self, f: impl FnOnce(T) -> U) -> Refusal<U> {
        Refusal {
            reason: self.reason,
            state: self.state.map_instant(f),
        }
    }

    /// The gate's answer for this refusal: the call ends with
    /// [`Cause::CircuitOpen`] and this reason.
    pub const fn admission(&self) -> Admission {
        Admission::circuit_open(self.reason)
    }
}

impl<T> fmt::Display for Refusal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker refused the call: {} (state {})",
            self.reason,
            self.state.as_str()
        )
    }
}

impl<T: fmt::Debug> core::error::Error for Refusal<T> {}

/// Four bytes, as wide as the generation beside it: a [`Permit`] is eight
/// bytes with no padding, copied as one word (a std executor moves it
/// into its gate and back on every call).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub(super) enum PermitKind {
    /// The breaker was disabled: nothing to record.
    Bypass,
    /// An ordinary call of a closed circuit.
    Closed,
    /// A probe of a half-open circuit.
    Probe,
}

/// Leave to run one call, to be handed back to
/// [`CircuitBreaker::record`](super::CircuitBreaker::record) with the call's result, exactly once.
///
/// A permit remembers the breaker episode that issued it: the result of a
/// call admitted before the circuit last changed state is ignored (it says
/// nothing about the dependency *now*, and a probe slot it held was already
/// given back when the state changed).
///
/// Laid out as written (`repr(C)`: the kind first), so that a std
/// executor's gate can keep a permit of its own in the same bytes as a
/// store's permit that begins with this one (the kind's spare values tell
/// the two apart).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[must_use = "hand the permit back to `record` when the call ends, or a probe slot stays taken"]
#[repr(C)]
pub struct Permit {
    pub(super) kind: PermitKind,
    pub(super) generation: u32,
}

impl Permit {
    /// The permit of a breaker that is not consulted (its policy is
    /// disabled); recording it does nothing.
    pub const BYPASS: Self = Self {
        kind: PermitKind::Bypass,
        generation: 0,
    };

    /// The permit [`CircuitBreaker::admit`](super::CircuitBreaker::admit)
    /// gives an ordinary call of a closed circuit in episode `generation`
    /// (see [`CircuitBreaker::closed_generation`](super::CircuitBreaker::closed_generation)),
    /// for a breaker shared between threads that admits such calls without
    /// its lock.
    pub const fn closed(generation: u32) -> Self {
        Self {
            kind: PermitKind::Closed,
            generation,
        }
    }

    /// Whether this call is a half-open probe; a probe runs without hedges.
    pub const fn is_probe(&self) -> bool {
        matches!(self.kind, PermitKind::Probe)
    }

    /// Whether this is an ordinary call of a closed circuit.
    pub const fn is_closed(&self) -> bool {
        matches!(self.kind, PermitKind::Closed)
    }

    /// The episode (the breaker's count of state changes) that issued it.
    pub const fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether the breaker was disabled and did not count this call.
    pub const fn is_bypass(&self) -> bool {
        matches!(self.kind, PermitKind::Bypass)
    }
}

/// What a call's end says about the dependency.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CallResult {
    /// The dependency answered as it should: resets the consecutive-failure
    /// count; a probe's success counts towards closing.
    Success,
    /// The dependency failed: counts towards opening; a probe's failure
    /// reopens.
    Failure,
    /// The call ended without a verdict on the dependency (aborted,
    /// cancelled, dropped, refused): counts for nothing, and a probe's slot
    /// is freed.
    Neutral,
}

impl CallResult {
    /// What a call's verdict says about the dependency.
    ///
    /// | verdict | result | why |
    /// |---|---|---|
    /// | `Success` | Success | |
    /// | `Accepted` | Success | a classifier judged the error a success (a 404 from a healthy server) |
    /// | `NonRetryable` | Failure | the dependency answered with a failure |
    /// | `Exhausted` | Failure | every attempt failed |
    /// | `BackoffBeyondDeadline` | Failure | attempts failed; the call stopped before sleeping past its deadline |
    /// | `RetryAfterBeyondDeadline` | Failure | the dependency failed and asked to be left alone |
    /// | `DeadlineExceeded`, an attempt had failed (`last` is `Some`) | Failure | the deadline came after failed attempts |
    /// | `DeadlineExceeded`, no attempt had failed | Neutral | the caller's own deadline cut an attempt that had not failed |
    /// | `BudgetDenied`, an attempt had failed | Failure | a retry budget refused the retry of a failed attempt; counting it neutral would keep the circuit closed in exactly the outage that drains budgets |
    /// | `BudgetDenied`, no attempt had failed | Neutral | the operation never ran |
    /// | `Abort` | Neutral | the attempt was aborted (gRPC `CANCELLED`, a panicking classifier): not the dependency's verdict |
    /// | `Cancelled` (also a dropped call) | Neutral | the caller walked away |
    /// | `CircuitOpen` | Neutral | the operation never ran |
    ///
    /// A dependency that hangs trips the breaker through per-attempt
    /// timeouts: an attempt cut at `retry.timeout_per_attempt` is a failed
    /// attempt, one cut at the overall deadline is not. Set a per-attempt
    /// timeout shorter than the overall one where hangs must open the
    /// circuit.
    pub const fn from_verdict(verdict: &Verdict) -> Self {
        match *verdict {
            Verdict::Success(_) => Self::Success,
            Verdict::Failure { cause, last } => match cause {
                Cause::Accepted => Self::Success,
                Cause::NonRetryable
                | Cause::Exhausted
                | Cause::BackoffBeyondDeadline
                | Cause::RetryAfterBeyondDeadline
                | Cause::DeadlineUnreachable => Self::Failure,
                Cause::DeadlineExceeded | Cause::BudgetDenied => {
                    if last.is_some() {
                        Self::Failure
                    } else {
                        Self::Neutral
                    }
                }
                Cause::Abort | Cause::Cancelled | Cause::CircuitOpen => Self::Neutral,
            },
        }
    }
}

impl From<&Verdict> for CallResult {
    fn from(verdict: &Verdict) -> Self {
        Self::from_verdict(verdict)
    }
}
