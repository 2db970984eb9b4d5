//! [`AwsRetryQuota`]: the AWS SDKs' retry quota (standard retry mode).

use crate::sync::{AtomicU32, Ordering};

use super::{Budget, BudgetRequest, Decision, Reservation};
use crate::outcome::reason;
use crate::record::{AttemptKind, AttemptRecord};
use crate::time::Instant;

/// The reasons of a previous failure that make a retry cost
/// `timeout_retry_cost`: recourse's `attempt_timeout` (it cut the attempt
/// at its per-attempt deadline, the SDKs' read timeout) and
/// `context_deadline_exceeded` (a deadline reported by the operation, as
/// the Go original and recourse's gRPC classifier name it).
pub const DEFAULT_TIMEOUT_REASONS: &[&str] =
    &[reason::ATTEMPT_TIMEOUT, "context_deadline_exceeded"];

/// A quota of retry tokens: failures that lead to retries drain it,
/// successes refill it, and an empty quota stops retrying.
///
/// Why: a retry ratio spends in proportion to traffic; a quota spends in
/// proportion to *failures*, so a client whose dependency keeps failing
/// stops retrying after a bounded number of retries (100 by default) and
/// resumes only as successes come back — a circuit breaker for retries
/// alone, with one counter and no time.
///
/// Reference: the AWS SDKs' "standard" retry mode (botocore's
/// `RetryQuotaChecker`, aws-sdk-go-v2's `retry.Standard` with
/// `ratelimit.TokenRateLimit`), classic costs — [`standard`]:
///
/// - the quota starts full at 500 tokens and never exceeds it;
/// - a retry takes 5 tokens, or 10 when the attempt before it failed with
///   a timeout (`request.previous`'s reason in the timeout reasons,
///   [`DEFAULT_TIMEOUT_REASONS`] unless replaced); with fewer tokens left
///   it is denied and takes nothing. The reservation records what it took;
/// - when an attempt succeeds: a retry gives back what it took (only the
///   successful retry's own cost: earlier failed retries stay spent); a
///   first attempt adds 1 (`NoRetryIncrement`). Failed attempts give
///   nothing back;
/// - first attempts are always allowed.
///
/// Hedges (the SDKs have none) pay and get back like retries; a policy's
/// `cost` multiplies the retry's cost (1, the default, is AWS's). An
/// attempt that was allowed but never ran gets its tokens back. (The SDKs'
/// opt-in 2026 retry behaviour, 14 tokens per transient retry and 5 per
/// throttling retry, is [`new`](Self::new) with other costs and reasons.)
///
/// Units: every number is in tokens.
///
/// Available on every target with compare-and-swap (`cfg(target_has_atomic
/// = "32")`: microcontrollers included), and on those without it, such as
/// Cortex-M0 (`thumbv6m-none-eabi`), with the `critical-section` feature.
///
/// ```
/// use recourse_core::budget::AwsRetryQuota;
///
/// static QUOTA: AwsRetryQuota = AwsRetryQuota::standard();
/// assert_eq!(QUOTA.available(), 500);
/// ```
///
/// [`standard`]: Self::standard
#[derive(Debug)]
pub struct AwsRetryQuota {
    capacity: u32,
    retry_cost: u32,
    timeout_retry_cost: u32,
    no_retry_increment: u32,
    timeout_reasons: &'static [&'static str],
    available: AtomicU32,
}

impl AwsRetryQuota {
    /// The SDKs' defaults: 500 tokens, retry 5, retry after a timeout 10,
    /// success without retry +1.
    pub const fn standard() -> Self {
        Self::new(500, 5, 10, 1)
    }

    /// A full quota of `capacity` tokens with these costs, in tokens.
    pub const fn new(
        capacity: u32,
        retry_cost: u32,
        timeout_retry_cost: u32,
        no_retry_increment: u32,
    ) -> Self {
        Self {
            capacity,
            retry_cost,
            timeout_retry_cost,
            no_retry_increment,
            timeout_reasons: DEFAULT_TIMEOUT_REASONS,
            available: AtomicU32::new(capacity),
        }
    }

    /// This quota, charging `timeout_retry_cost` for retries after a
    /// failure with one of `reasons` instead of [`DEFAULT_TIMEOUT_REASONS`].
    pub const fn with_timeout_reasons(mut self, reasons: &'static [&'static str]) -> Self {
        self.timeout_reasons = reasons;
        self
    }

    /// Tokens left.
    pub fn available(&self) -> u32 {
        self.available.load(Ordering::Relaxed)
    }

    /// The most tokens the quota holds.
    pub const fn capacity(&self) -> u32 {
        self.capacity
    }

    /// What a retry after `request.previous` costs, in tokens.
    fn cost(&self, request: &BudgetRequest<'_>) -> u32 {
        let timed_out = request
            .previous
            .is_some_and(|o| self.timeout_reasons.contains(&o.reason));
        let base = if timed_out {
            self.timeout_retry_cost
        } else {
            self.retry_cost
        };
        base.saturating_mul(request.cost.max(1))
    }

    fn add(&self, tokens: u32) {
        // One word, totally ordered read-modify-writes: Relaxed suffices.
        let _ = self
            .available
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                Some(a.saturating_add(tokens).min(self.capacity))
            });
    }
}

impl Default for AwsRetryQuota {
    /// [`AwsRetryQuota::standard`].
    fn default() -> Self {
        Self::standard()
    }
}

impl Budget for AwsRetryQuota {
    fn decide(&self, request: &BudgetRequest<'_>) -> Decision {
        if let AttemptKind::Initial = request.kind {
            return Decision::ALLOW;
        }
        let cost = self.cost(request);
        let taken = self
            .available
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                a.checked_sub(cost)
            });
        match taken {
            Ok(_) => Decision::reserve(Reservation(u64::from(cost))),
            Err(_) => Decision::DENY,
        }
    }

    fn settle(&self, record: &AttemptRecord, reservation: Option<Reservation>, _now: Instant) {
        let taken = reservation.map_or(0, |Reservation(t)| u32::try_from(t).unwrap_or(u32::MAX));
        if !record.budget_allowed {
            // Allowed but never ran: give back what it took.
            self.add(taken);
        } else if record.outcome.is_success() {
            match record.info.kind() {
                AttemptKind::Initial => self.add(self.no_retry_increment),
                AttemptKind::Retry | AttemptKind::Hedge => self.add(taken),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::AtomicBool;

    use super::super::testing::{
        attempt, decide, ms, record, request, FAILED, HEDGE, INITIAL, RETRY,
    };
    use super::*;
    use crate::outcome::Outcome;

    const TIMEOUT: Outcome = Outcome::retryable(reason::ATTEMPT_TIMEOUT);

    /// Asks for a retry after `previous`.
    fn retry_after(q: &AwsRetryQuota, previous: Outcome) -> Decision {
        q.decide(&request(RETRY, 1, Some(previous), ms(0)))
    }

    fn settle(q: &AwsRetryQuota, kind: AttemptKind, outcome: Outcome, d: Decision) {
        q.settle(&record(kind, outcome, ms(0)), d.reservation, ms(0));
    }

    #[test]
    fn golden_timeouts_exhaust_500_after_50() {
        // 100 retries after timeouts at 10 tokens each: the first 50 take
        // 500 → 0, the other 50 are denied and take nothing.
        let q = AwsRetryQuota::standard();
        for i in 0..100 {
            let d = retry_after(&q, TIMEOUT);
            if i < 50 {
                assert_eq!(d, Decision::reserve(Reservation(10)), "retry {i}");
                settle(&q, RETRY, FAILED, d);
                assert_eq!(q.available(), 490 - 10 * i);
            } else {
                assert_eq!((d.allowed, d.reason), (false, reason::BUDGET_DENIED));
                assert_eq!(q.available(), 0);
            }
        }
        // First attempts are still allowed; a successful one adds 1, not
        // enough for a retry (5).
        let d = decide(&q, INITIAL, ms(0));
        assert_eq!(d, Decision::ALLOW);
        settle(&q, INITIAL, Outcome::SUCCESS, d);
        assert_eq!(q.available(), 1);
        assert!(!retry_after(&q, FAILED).allowed);
        // Four more successful first attempts: 5, one retry.
        for _ in 0..4 {
            assert!(attempt(&q, INITIAL, Outcome::SUCCESS, ms(0)));
        }
        assert_eq!(retry_after(&q, FAILED), Decision::reserve(Reservation(5)));
        assert_eq!(q.available(), 0);
    }

    #[test]
    fn golden_plain_retries_exhaust_500_after_100() {
        let q = AwsRetryQuota::standard();
        for i in 0..100 {
            let d = retry_after(&q, FAILED);
            assert_eq!(d, Decision::reserve(Reservation(5)), "retry {i}");
            settle(&q, RETRY, FAILED, d);
        }
        assert_eq!(q.available(), 0);
        assert!(!retry_after(&q, FAILED).allowed);
        // Hedges pay like retries.
        assert!(!decide(&q, HEDGE, ms(0)).allowed);
    }

    #[test]
    fn golden_call_with_retries_then_success() {
        // botocore's release_retry_quota: a successful retry gives back the
        // cost of the last acquisition only.
        let q = AwsRetryQuota::standard();
        let first = decide(&q, INITIAL, ms(0));
        settle(&q, INITIAL, TIMEOUT, first); // no change: 500
        let r1 = retry_after(&q, TIMEOUT); // 10: 490
        settle(&q, RETRY, FAILED, r1); // no refund: 490
        let r2 = retry_after(&q, FAILED); // 5: 485
        assert_eq!(q.available(), 485);
        settle(&q, RETRY, Outcome::SUCCESS, r2); // +5: 490
        assert_eq!(q.available(), 490);
        // The next call succeeds at once: +1.
        assert!(attempt(&q, INITIAL, Outcome::SUCCESS, ms(0)));
        assert_eq!(q.available(), 491);
        // A retry after a timeout that succeeds gives its 10 back.
        let r = retry_after(&q, TIMEOUT);
        settle(&q, RETRY, Outcome::SUCCESS, r);
        assert_eq!(q.available(), 491);
        // Successes never push the quota above 500.
        for _ in 0..100 {
            assert!(attempt(&q, INITIAL, Outcome::SUCCESS, ms(0)));
        }
        assert_eq!(q.available(), 500);
        // Not a success, no refund: non-retryable, abort (hedge loser).
        for outcome in [
            Outcome::non_retryable("http_400"),
            Outcome::abort(reason::HEDGE_LOSER),
        ] {
            let d = retry_after(&q, FAILED);
            settle(&q, RETRY, outcome, d);
        }
        assert_eq!(q.available(), 490);
    }

    #[test]
    fn cost_reasons_and_never_ran() {
        let q = AwsRetryQuota::standard();
        // context_deadline_exceeded is a timeout too; overall cost × 2.
        let d = q.decide(&request(
            RETRY,
            2,
            Some(Outcome::retryable("context_deadline_exceeded")),
            ms(0),
        ));
        assert_eq!(d, Decision::reserve(Reservation(20)));
        // Allowed but never ran: given back.
        let mut never_ran = record(RETRY, Outcome::abort(reason::BUDGET_DENIED), ms(0));
        never_ran.budget_allowed = false;
        q.settle(&never_ran, d.reservation, ms(0));
        assert_eq!(q.available(), 500);
        // Custom timeout reasons (and the 2026 costs: 14 transient, 5
        // throttling, as "timeout" reasons).
        static THROTTLED: &[&str] = &["http_429"];
        let q = AwsRetryQuota::new(500, 14, 5, 1).with_timeout_reasons(THROTTLED);
        assert_eq!(
            retry_after(&q, Outcome::retryable("http_503")).reservation,
            Some(Reservation(14))
        );
        assert_eq!(
            retry_after(&q, Outcome::retryable("http_429")).reservation,
            Some(Reservation(5))
        );
        assert_eq!(retry_after(&q, TIMEOUT).reservation, Some(Reservation(14)));
        assert_eq!(q.available(), 467);
    }

    #[test]
    fn static_instance() {
        static QUOTA: AwsRetryQuota = AwsRetryQuota::standard();
        let d = retry_after(&QUOTA, FAILED);
        assert_eq!(QUOTA.available(), 495);
        settle(&QUOTA, RETRY, Outcome::SUCCESS, d);
        assert_eq!(QUOTA.available(), 500);
        // The builder is const too.
        static CUSTOM: AwsRetryQuota =
            AwsRetryQuota::new(20, 5, 10, 1).with_timeout_reasons(&["http_504"]);
        assert_eq!(
            retry_after(&CUSTOM, Outcome::retryable("http_504")).reservation,
            Some(Reservation(10))
        );
        assert_eq!(CUSTOM.available(), 10);
    }

    #[test]
    fn two_threads_neither_create_nor_lose_tokens() {
        // Each thread: 2000 retries that succeed (take 5, give 5 back) and
        // 40 that fail (take 5 for good). At most 400 are ever out, so none
        // is denied and the cap is never hit: exactly 500 − 80 × 5 = 100.
        // (Under Miri, 4 rounds of 51 instead of 40: 500 − 8 × 5 = 460.)
        const ROUNDS: u32 = if cfg!(miri) { 4 } else { 40 };
        let q = AwsRetryQuota::standard();
        let go = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !go.load(Ordering::Relaxed) {
                        core::hint::spin_loop();
                    }
                    for i in 0..51 * ROUNDS {
                        let d = retry_after(&q, FAILED);
                        assert!(d.allowed);
                        let outcome = if i % 51 == 50 {
                            FAILED
                        } else {
                            Outcome::SUCCESS
                        };
                        settle(&q, RETRY, outcome, d);
                    }
                });
            }
            go.store(true, Ordering::Relaxed);
        });
        assert_eq!(q.available(), 500 - 2 * ROUNDS * 5);
    }
}
