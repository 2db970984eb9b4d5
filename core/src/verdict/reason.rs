//! Every reason code core produces, in one place. Reasons are
//! `&'static str` so that they stay low-cardinality by construction; the
//! names are the reference's where it has one.
//!
//! This module imports nothing, so every other module may use it.

// Attempt outcomes.

/// The attempt succeeded.
pub const SUCCESS: &str = "success";
/// The default classifier's reason for any `Err`.
pub const RETRYABLE_ERROR: &str = "retryable_error";
/// A failure a classifier judged not worth retrying.
pub const NON_RETRYABLE_ERROR: &str = "non_retryable_error";
/// A failure that stops the call at once.
pub const ABORT: &str = "abort";
/// recourse cut the attempt at its per-attempt deadline (retryable).
pub const ATTEMPT_TIMEOUT: &str = "attempt_timeout";
/// recourse cut the attempt at the call's overall deadline.
pub const OVERALL_TIMEOUT: &str = "overall_timeout";
/// The caller cancelled the call while the attempt ran.
pub const CANCELLED: &str = "cancelled";
/// The operation panicked and the executor contained the panic (std
/// executors with panic containment on).
pub const PANIC_IN_OPERATION: &str = "panic_in_operation";
/// Another attempt of the group won; this one was dropped.
pub const HEDGE_LOSER: &str = "hedge_loser";
/// The reason recourse's gRPC classifier gives a retryable status whose
/// `grpc-retry-pushback-ms` says not to retry; gRPC A6 counts it as a
/// failure.
pub const GRPC_PUSHBACK_STOP: &str = "grpc_pushback_stop";

// Gate answers.

/// The attempt was refused by its budget and never ran.
pub const BUDGET_DENIED: &str = "budget_denied";
/// The gate allowed the attempt.
pub const ALLOWED: &str = "allowed";
/// No budget is configured for the attempt.
pub const NO_BUDGET: &str = "no_budget";
/// The policy names a budget that is not there (the missing-budget mode
/// decides whether the attempt runs).
pub const BUDGET_NOT_FOUND: &str = "budget_not_found";
/// The call stopped before a retry whose expected completion (now plus a
/// latency quantile of the key's completed attempts) lies past the overall
/// deadline.
pub const DEADLINE_UNREACHABLE: &str = "deadline_unreachable";
/// A retry or hedge refused because the key's attempts would exceed
/// `amplification.max_amplification` times its first attempts.
pub const AMPLIFICATION_LIMIT: &str = "amplification_limit";
/// A refusal by an open circuit.
pub const CIRCUIT_OPEN: &str = "circuit_open";
/// A refusal by a half-open circuit whose probe slots are all taken.
pub const HALF_OPEN_PROBE_LIMIT: &str = "circuit_half_open_probe_limit";

// Call causes (what [`Cause::as_str`](crate::verdict::Cause::as_str) says).

/// An attempt's outcome was non-retryable.
pub const NON_RETRYABLE: &str = "non_retryable";
/// Every allowed attempt failed retryably.
pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
/// The overall deadline passed.
pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
/// The next backoff would end at or past the overall deadline.
pub const BACKOFF_BEYOND_DEADLINE: &str = "backoff_beyond_deadline";
/// The server's retry-after hint would end at or past the overall deadline.
pub const RETRY_AFTER_BEYOND_DEADLINE: &str = "retry_after_beyond_deadline";
/// A classifier judged an `Err` a success.
pub const ACCEPTED_ERROR: &str = "accepted_error";

// Executor answers.

/// No policy was found for the key and the missing-policy mode is deny.
pub const NO_POLICY: &str = "no_policy";
