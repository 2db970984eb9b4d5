//! # recourse-benches
//!
//! Benchmarks of recourse's built-in budgets (not published). Run them with
//! `cargo bench -p recourse-benches`; `benches/budgets.rs` measures one
//! budget decision — [`Budget::decide`] and, when allowed,
//! [`Budget::settle`] — for each built-in, on one thread and with two
//! threads contending for the same budget.
//!
//! This library holds what the benchmark and its tests share: [`step`], the
//! attempt each iteration makes, chosen so that every built-in stays in a
//! steady state where attempts are allowed (the path worth timing), and one
//! constructor per built-in for the configuration measured ([`unlimited`],
//! [`token_bucket`], [`retry_ratio`], [`grpc_throttle`],
//! [`aws_retry_quota`], [`concurrency`]).

use core::time::Duration;

use recourse_core::budget::{
    AwsRetryQuota, Budget, BudgetRequest, Concurrency, GrpcThrottle, RetryRatio, TokenBucket,
    Unlimited,
};
use recourse_core::{
    reason, AttemptId, AttemptInfo, AttemptKind, AttemptRecord, Instant, Outcome, PolicyKey,
};

/// The failure the first attempt of each simulated call ends with.
const FAILED: Outcome = Outcome::retryable(reason::RETRYABLE_ERROR);

/// Virtual time per step, in microseconds: 100 steps per millisecond per
/// thread.
pub const STEP_MICROS: u64 = 10;

/// Step `i` of a stream of calls that each fail once and succeed on their
/// retry: even steps are first attempts that fail, odd steps retries (after
/// that failure) that succeed, at `i × STEP_MICROS` µs. Returns whether the
/// budget allowed the attempt; if it did, the attempt is settled at once.
pub fn step<B: Budget + ?Sized>(budget: &B, i: u64) -> bool {
    let now = Instant::from_micros(i * STEP_MICROS);
    let (kind, previous, outcome) = if i % 2 == 0 {
        (AttemptKind::Initial, None, FAILED)
    } else {
        (AttemptKind::Retry, Some(FAILED), Outcome::SUCCESS)
    };
    let info = AttemptInfo {
        id: AttemptId(0),
        retry_index: u32::from(kind != AttemptKind::Initial),
        hedge_index: 0,
        is_hedge: false,
        deadline: None,
    };
    let decision = budget.decide(&BudgetRequest {
        key: PolicyKey::new("bench", "budget"),
        attempt: info,
        kind,
        budget: "bench",
        cost: 1,
        previous,
        now,
    });
    if decision.allowed {
        let record = AttemptRecord {
            info,
            start: now,
            end: now,
            outcome,
            cancelled: false,
            backoff: Duration::ZERO,
            budget_allowed: true,
            budget_reason: decision.reason,
        };
        budget.settle(&record, decision.reservation, now);
    }
    decision.allowed
}

/// [`Unlimited`].
pub const fn unlimited() -> Unlimited {
    Unlimited
}

/// A bucket that refills faster than two threads spend: 10 000 tokens,
/// 1 000 000 per second (1000 per ms against at most 200 spent per ms).
pub const fn token_bucket() -> TokenBucket {
    TokenBucket::new(10_000, 1_000_000)
}

/// Finagle's budget at 100 %: each first attempt pays for one retry.
pub const fn retry_ratio() -> RetryRatio {
    RetryRatio::new(Duration::from_secs(10), 10, 1_000)
}

/// A6 throttling with ratio 1: a success repays a failure.
pub const fn grpc_throttle() -> GrpcThrottle {
    GrpcThrottle::new(10, 1_000)
}

/// The AWS quota with its defaults (successful retries are refunded).
pub const fn aws_retry_quota() -> AwsRetryQuota {
    AwsRetryQuota::standard()
}

/// Envoy's defaults.
pub const fn concurrency() -> Concurrency {
    Concurrency::envoy()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady<B: Budget>(budget: &B) {
        for i in 0..100_000 {
            assert!(step(budget, i), "step {i}");
        }
    }

    #[test]
    fn every_benchmarked_budget_stays_allowing() {
        steady(&unlimited());
        steady(&token_bucket());
        steady(&retry_ratio());
        steady(&grpc_throttle());
        steady(&aws_retry_quota());
        steady(&concurrency());
    }
}
