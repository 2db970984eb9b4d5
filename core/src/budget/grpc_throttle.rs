//! [`GrpcThrottle`]: gRPC's retry throttling (gRFC A6).

use crate::sync::{AtomicU32, Ordering};

use super::{Budget, BudgetRequest, Decision, Reservation};
use crate::outcome::{Outcome, OutcomeKind};
use crate::record::{AttemptKind, AttemptRecord};
use crate::time::Instant;

/// Milli-tokens per token: A6 allows 3 decimal places.
const MILLI: u32 = 1_000;
/// A6: `maxTokens` must be in (0, 1000].
const MAX_TOKENS_MILLI: u32 = 1_000 * MILLI;

/// The reason recourse's gRPC classifier gives a retryable status whose
/// `grpc-retry-pushback-ms` says not to retry; A6 counts it as a failure.
pub const PUSHBACK_STOP: &str = crate::verdict::reason::GRPC_PUSHBACK_STOP;

/// Stops retries and hedges while the recent failure ratio is high.
///
/// Why: a ratio budget still retries a dependency that fails every request
/// at its ratio. This throttle instead turns retries and hedges off
/// altogether once failures clearly outnumber successes, and back on after
/// enough successes — cheap to keep (one counter, no time), and what every
/// gRPC client does when a service config has `retryThrottling`.
///
/// Reference: gRFC A6 "Throttling Retry Attempts and Hedged RPCs", with
/// grpc-java's `RetriableStream.Throttle` and grpc-core's
/// `RetryThrottler` for the arithmetic, in milli-tokens:
///
/// - `token_count` starts at `max_tokens` and stays within `0..=max_tokens`;
/// - every failed attempt takes 1 token (never below 0); every successful
///   one adds `token_ratio` (never above `max_tokens`);
/// - first attempts are always allowed; a retry or hedge is allowed only
///   while `token_count > max_tokens / 2` (the threshold, in milli-tokens,
///   rounded down as in grpc-java). A denial takes nothing; `cost` is not
///   used.
///
/// What counts as a failure (A6: "only RPCs that fail with a status code
/// that qualifies as retryable or non-fatal, or that receive a pushback
/// response indicating not to retry"): in recourse, an outcome whose kind is
/// [`OutcomeKind::Retryable`] — the classifier's `retryableStatusCodes` /
/// `nonFatalStatusCodes`, and `attempt_timeout`, an attempt recourse cut at
/// its per-attempt deadline (a `DEADLINE_EXCEEDED` at that attempt) — or a
/// non-retryable one with reason [`PUSHBACK_STOP`]. Not failures, so not
/// counted: other non-retryable outcomes (a malformed request says nothing
/// about the server's health), and aborts — the caller cancelling, a hedge
/// losing its race, the call's overall deadline, an attempt that never ran.
/// A6 counts per RPC; recourse settles per attempt, which is the same thing
/// for failures (gRPC counts every failed attempt too) and for successes
/// (the first success ends the call).
///
/// Units: `max_tokens` in tokens (A6: 0 < max ≤ 1000), `token_ratio` in
/// milli-tokens (0.1 token = 100; A6: > 0), both clamped to those ranges.
///
/// Available on every target with compare-and-swap (`cfg(target_has_atomic
/// = "32")`: microcontrollers included), and on those without it, such as
/// Cortex-M0 (`thumbv6m-none-eabi`), with the `critical-section` feature.
///
/// ```
/// use recourse_core::budget::GrpcThrottle;
///
/// // A6's example: "maxTokens": 10, "tokenRatio": 0.1.
/// static THROTTLE: GrpcThrottle = GrpcThrottle::new(10, 100);
/// assert_eq!(THROTTLE.tokens_milli(), 10_000);
/// assert!(THROTTLE.is_above_threshold());
/// ```
#[derive(Debug)]
pub struct GrpcThrottle {
    max_milli: u32,
    ratio_milli: u32,
    threshold_milli: u32,
    tokens_milli: AtomicU32,
}

impl GrpcThrottle {
    /// `"retryThrottling": {"maxTokens": max_tokens, "tokenRatio":
    /// token_ratio_milli / 1000}`.
    pub const fn new(max_tokens: u32, token_ratio_milli: u32) -> Self {
        Self::from_milli(max_tokens.saturating_mul(MILLI), token_ratio_milli)
    }

    /// The same with `maxTokens` in milli-tokens too (A6 allows 3 decimal
    /// places there as well): `from_milli(10_500, 100)` is 10.5 and 0.1.
    pub const fn from_milli(max_tokens_milli: u32, token_ratio_milli: u32) -> Self {
        let max = if max_tokens_milli == 0 {
            1
        } else if max_tokens_milli > MAX_TOKENS_MILLI {
            MAX_TOKENS_MILLI
        } else {
            max_tokens_milli
        };
        Self {
            max_milli: max,
            ratio_milli: if token_ratio_milli == 0 {
                1
            } else {
                token_ratio_milli
            },
            threshold_milli: max / 2,
            tokens_milli: AtomicU32::new(max),
        }
    }

    /// `token_count`, in milli-tokens.
    pub fn tokens_milli(&self) -> u32 {
        self.tokens_milli.load(Ordering::Relaxed)
    }

    /// `max_tokens`, in milli-tokens.
    pub const fn max_tokens_milli(&self) -> u32 {
        self.max_milli
    }

    /// `max_tokens / 2`, in milli-tokens: retries and hedges need more.
    pub const fn threshold_milli(&self) -> u32 {
        self.threshold_milli
    }

    /// Whether retries and hedges are allowed now.
    pub fn is_above_threshold(&self) -> bool {
        self.tokens_milli() > self.threshold_milli
    }

    /// Whether `outcome` counts as a failure for throttling.
    pub fn is_failure(outcome: &Outcome) -> bool {
        match outcome.kind {
            OutcomeKind::Retryable => true,
            OutcomeKind::NonRetryable => outcome.reason == PUSHBACK_STOP,
            OutcomeKind::Success | OutcomeKind::Abort => false,
        }
    }

    fn update(&self, f: impl Fn(u32) -> u32) {
        // One word, totally ordered read-modify-writes: Relaxed suffices.
        let _ = self
            .tokens_milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| Some(f(t)));
    }
}

impl Default for GrpcThrottle {
    /// A6's example: 10 tokens, ratio 0.1.
    fn default() -> Self {
        Self::new(10, 100)
    }
}

impl Budget for GrpcThrottle {
    fn decide(&self, request: &BudgetRequest<'_>) -> Decision {
        match request.kind {
            AttemptKind::Initial => Decision::ALLOW,
            AttemptKind::Retry | AttemptKind::Hedge if self.is_above_threshold() => Decision::ALLOW,
            AttemptKind::Retry | AttemptKind::Hedge => Decision::DENY,
        }
    }

    fn settle(&self, record: &AttemptRecord, _reservation: Option<Reservation>, _now: Instant) {
        if record.outcome.is_success() {
            self.update(|t| t.saturating_add(self.ratio_milli).min(self.max_milli));
        } else if Self::is_failure(&record.outcome) {
            self.update(|t| t.saturating_sub(MILLI));
        }
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::AtomicBool;

    use super::super::testing::{attempt, decide, ms, record, FAILED, HEDGE, INITIAL, RETRY};
    use super::*;
    use crate::outcome::reason;

    fn settle(t: &GrpcThrottle, outcome: Outcome) {
        t.settle(&record(RETRY, outcome, ms(0)), None, ms(0));
    }

    fn retry_allowed(t: &GrpcThrottle) -> bool {
        decide(t, RETRY, ms(0)).allowed
    }

    #[test]
    fn golden_a6_example() {
        // maxTokens 10, tokenRatio 0.1: 10 000 milli, threshold 5000.
        let t = GrpcThrottle::new(10, 100);
        assert_eq!((t.tokens_milli(), t.threshold_milli()), (10_000, 5_000));
        // Failures 1–4: 9, 8, 7, 6 tokens, each still above 5: retry.
        for expected in [9_000, 8_000, 7_000, 6_000] {
            settle(&t, FAILED);
            assert_eq!(t.tokens_milli(), expected);
            assert!(retry_allowed(&t));
        }
        // Failure 5: 5 tokens, not above the threshold: retries and hedges
        // denied (reason budget_denied), first attempts still allowed.
        settle(&t, FAILED);
        assert_eq!(t.tokens_milli(), 5_000);
        let d = decide(&t, RETRY, ms(0));
        assert_eq!((d.allowed, d.reason), (false, reason::BUDGET_DENIED));
        assert!(!decide(&t, HEDGE, ms(0)).allowed);
        assert_eq!(decide(&t, INITIAL, ms(0)), Decision::ALLOW);
        // One success: 5.1 > 5, retries resume.
        settle(&t, Outcome::SUCCESS);
        assert_eq!(t.tokens_milli(), 5_100);
        assert!(retry_allowed(&t));
        // A failure (4.1), then 9 successes reach exactly 5.0: still denied
        // (≤ threshold); the 10th makes 5.1.
        settle(&t, FAILED);
        for _ in 0..9 {
            settle(&t, Outcome::SUCCESS);
        }
        assert_eq!(t.tokens_milli(), 5_000);
        assert!(!retry_allowed(&t));
        settle(&t, Outcome::SUCCESS);
        assert!(retry_allowed(&t));
        // Failures floor at 0: 5.1 → 0.1 after 5, then 0, 0, …
        for _ in 0..10 {
            settle(&t, FAILED);
        }
        assert_eq!(t.tokens_milli(), 0);
        // 100 successes × 0.1 = 10 tokens: back to max, capped there.
        for _ in 0..101 {
            settle(&t, Outcome::SUCCESS);
        }
        assert_eq!(t.tokens_milli(), 10_000);
    }

    #[test]
    fn what_counts_as_a_failure() {
        let t = GrpcThrottle::new(10, 100);
        // Not failures: non-retryable statuses and everything recourse ended.
        for outcome in [
            Outcome::non_retryable("grpc_InvalidArgument"),
            Outcome::abort("context_canceled"),
            Outcome::abort(reason::HEDGE_LOSER),
            Outcome::abort(reason::CANCELLED),
            Outcome::abort(reason::OVERALL_TIMEOUT),
            Outcome::abort(reason::BUDGET_DENIED),
        ] {
            settle(&t, outcome);
            assert_eq!(t.tokens_milli(), 10_000, "{outcome:?}");
        }
        // Failures: retryable statuses, recourse's per-attempt timeout, and
        // a pushback that says stop.
        for (outcome, expected) in [
            (Outcome::retryable("grpc_Unavailable"), 9_000),
            (Outcome::retryable(reason::ATTEMPT_TIMEOUT), 8_000),
            (Outcome::non_retryable(PUSHBACK_STOP), 7_000),
        ] {
            settle(&t, outcome);
            assert_eq!(t.tokens_milli(), expected, "{outcome:?}");
        }
    }

    #[test]
    fn fractional_max_tokens_and_clamping() {
        // maxTokens 10.5: threshold 5.25.
        let t = GrpcThrottle::from_milli(10_500, 100);
        assert_eq!(t.threshold_milli(), 5_250);
        for _ in 0..5 {
            settle(&t, FAILED); // 10.5 → 5.5
        }
        assert!(t.is_above_threshold());
        settle(&t, FAILED); // 4.5
        assert!(!t.is_above_threshold());
        assert_eq!(GrpcThrottle::new(0, 0).max_tokens_milli(), 1);
        assert_eq!(GrpcThrottle::new(5_000, 1).max_tokens_milli(), 1_000_000);
        assert_eq!(GrpcThrottle::new(u32::MAX, 1).max_tokens_milli(), 1_000_000);
    }

    #[test]
    fn static_instance() {
        // 3 tokens, threshold 1.5.
        static THROTTLE: GrpcThrottle = GrpcThrottle::new(3, 500);
        assert!(attempt(&THROTTLE, INITIAL, FAILED, ms(0))); // 3 → 2
        assert!(attempt(&THROTTLE, RETRY, FAILED, ms(0))); // 2 > 1.5; 2 → 1
        assert!(!retry_allowed(&THROTTLE)); // 1 ≤ 1.5
        assert_eq!(THROTTLE.tokens_milli(), 1_000);
    }

    #[test]
    fn two_threads_neither_create_nor_lose_tokens() {
        // Start at 600 of 1000 tokens; each thread settles 100 failures and
        // 100 successes of 0.5 in some interleaving. Bounds are never hit
        // (400 ≤ count ≤ 700), so the end state is exact: 600 − 200 + 100.
        let t = GrpcThrottle::new(1_000, 500);
        for _ in 0..400 {
            settle(&t, FAILED);
        }
        let go = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !go.load(Ordering::Relaxed) {
                        core::hint::spin_loop();
                    }
                    for i in 0..200 {
                        settle(&t, if i % 2 == 0 { FAILED } else { Outcome::SUCCESS });
                    }
                });
            }
            go.store(true, Ordering::Relaxed);
        });
        assert_eq!(t.tokens_milli(), 500_000);
    }
}
