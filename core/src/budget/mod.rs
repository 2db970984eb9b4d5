//! Budgets: what keeps retries and hedges from turning a brownout into an
//! outage.
//!
//! Why budgets and not just `max_attempts`: three attempts per call triples
//! the load on a dependency exactly when it is least able to take it. A
//! budget bounds the *extra* load across all calls — retries at most 20 % of
//! recent requests, say — so a failing dependency sees at most a little more
//! traffic than it would without retries.
//!
//! A [`Budget`] is consulted before every attempt with its kind (initial,
//! retry or hedge) and the policy's cost; it answers with a [`Decision`],
//! optionally holding a [`Reservation`]. Whatever ends the attempt — success,
//! failure, a deadline, losing a hedge race, the call being dropped —
//! [`Budget::settle`] is called exactly once for every allowed attempt, with
//! its record and its reservation. Budgets are shared (`&self`) between calls
//! and threads, so the built-ins keep their state in atomics and can live in
//! a `static`.
//!
//! ## Built-in budgets
//!
//! Each reproduces a published design; pick the one whose question matches
//! yours.
//!
//! | budget | question it answers | reference | state |
//! | --- | --- | --- | --- |
//! | [`Unlimited`] | none: allow everything, but record decisions | Finagle `RetryBudget.Infinite` | none |
//! | [`TokenBucket`] | at most this many attempts per second, with bursts | recourse (Go) `TokenBucketBudget` | 64-bit atomics |
//! | [`RetryRatio`] | retries at most a share of recent requests, plus a floor | Finagle `RetryBudget` | 64-bit atomics |
//! | [`GrpcThrottle`] | stop retrying while the failure ratio is high | gRPC retry throttling (gRFC A6) | 32-bit atomics |
//! | [`AwsRetryQuota`] | a retry quota drained by failures, refilled by successes | AWS SDKs, standard retry mode | 32-bit atomics |
//! | [`Concurrency`] | extra attempts in flight at most a share of active ones | Envoy retry budget | pointer-sized atomics |
//!
//! Every budget is available on every target with compare-and-swap
//! (`cfg(target_has_atomic = "32")`), microcontrollers included: the
//! atomics are [`portable_atomic`]'s, native where the target has them. A
//! 32-bit target without 64-bit atomics (Cortex-M3/M4/M7:
//! `thumbv7m-none-eabi`, `thumbv7em-none-eabihf`) gets them from
//! portable-atomic's fallback: by default a seqlock over a global lock
//! table (about 2 KiB of RAM on Cortex-M3); a single-core program enables
//! portable-atomic's `unsafe-assume-single-core` feature to mask interrupts
//! instead, which costs no RAM and is what a budget shared with an interrupt
//! handler needs (`examples/embedded` does that).
//! A target with no compare-and-swap at all (Cortex-M0/M0+:
//! `thumbv6m-none-eabi`) gets the budgets with this crate's
//! `critical-section` feature; the program then links one
//! [critical-section](https://docs.rs/critical-section) implementation,
//! usually its HAL's or `cortex-m`'s `critical-section-single-core`.
//! Without either, the call machine, the breaker and [`Unlimited`] still
//! work there.
//!
//! Common rules: every budget answers with reason `allowed` or
//! `budget_denied`; a denial never takes anything; the decision and the
//! state change are one atomic step (a compare-and-swap loop), so
//! two threads can never both spend the last token; time is only ever the
//! `now` passed in. An attempt that was allowed but never ran (settled with
//! `budget_allowed == false`, as [`BudgetGate`] does when it cannot hold a
//! reservation) gets back what it took.

use crate::gate::{Admission, AdmitRequest, Gate};
use crate::key::PolicyKey;
use crate::outcome::{reason, Outcome};
use crate::record::{AttemptId, AttemptInfo, AttemptKind, AttemptRecord};
use crate::time::Instant;

#[cfg(any(target_has_atomic = "32", feature = "critical-section"))]
mod aws_retry_quota;
#[cfg(any(target_has_atomic = "32", feature = "critical-section"))]
mod concurrency;
#[cfg(any(target_has_atomic = "32", feature = "critical-section"))]
mod grpc_throttle;
#[cfg(any(target_has_atomic = "32", feature = "critical-section"))]
mod retry_ratio;
#[cfg(test)]
mod testing;
#[cfg(any(target_has_atomic = "32", feature = "critical-section"))]
mod token_bucket;
mod unlimited;

#[cfg(any(target_has_atomic = "32", feature = "critical-section"))]
pub use aws_retry_quota::{AwsRetryQuota, DEFAULT_TIMEOUT_REASONS};
#[cfg(any(target_has_atomic = "32", feature = "critical-section"))]
pub use concurrency::Concurrency;
#[cfg(any(target_has_atomic = "32", feature = "critical-section"))]
pub use grpc_throttle::{GrpcThrottle, PUSHBACK_STOP};
#[cfg(any(target_has_atomic = "32", feature = "critical-section"))]
pub use retry_ratio::RetryRatio;
#[cfg(any(target_has_atomic = "32", feature = "critical-section"))]
pub use token_bucket::{TokenBucket, MAX_REFILL_PER_SECOND};
pub use unlimited::Unlimited;

/// What a budget is asked about one attempt.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BudgetRequest<'a> {
    /// The call's policy key.
    pub key: PolicyKey<'a>,
    /// The attempt.
    pub attempt: AttemptInfo,
    /// Its kind (`attempt.kind()`).
    pub kind: AttemptKind,
    /// The budget's name, as the policy referenced it.
    pub budget: &'a str,
    /// Units this attempt costs (the policy's `budget.cost`, at least 1).
    pub cost: u32,
    /// For a retry, the outcome of the failure that led to it.
    pub previous: Option<Outcome>,
    /// When.
    pub now: Instant,
}

/// Something a budget took for an attempt and gets back in
/// [`Budget::settle`]; its meaning is the budget's (a cost, a slot).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reservation(pub u64);

/// A budget's answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Whether the attempt may run.
    pub allowed: bool,
    /// Why: `allowed`, `budget_denied`, or a budget's own code.
    pub reason: &'static str,
    /// What was taken, to be given back in [`Budget::settle`].
    pub reservation: Option<Reservation>,
}

impl Decision {
    /// Allowed, nothing reserved.
    pub const ALLOW: Self = Self {
        allowed: true,
        reason: reason::ALLOWED,
        reservation: None,
    };
    /// Denied.
    pub const DENY: Self = Self {
        allowed: false,
        reason: reason::BUDGET_DENIED,
        reservation: None,
    };

    /// Allowed, holding `reservation` until the attempt ends.
    pub const fn reserve(reservation: Reservation) -> Self {
        Self {
            allowed: true,
            reason: reason::ALLOWED,
            reservation: Some(reservation),
        }
    }
}

/// Bounds the attempts calls may make.
pub trait Budget {
    /// Whether this attempt may run; a denied attempt never calls the
    /// operation and ends the call.
    fn decide(&self, request: &BudgetRequest<'_>) -> Decision;

    /// An attempt this budget allowed has ended, however it ended; called
    /// exactly once per allowed attempt, with the decision's reservation.
    fn settle(&self, record: &AttemptRecord, reservation: Option<Reservation>, now: Instant) {
        let _ = (record, reservation, now);
    }
}

impl<B: Budget + ?Sized> Budget for &B {
    fn decide(&self, request: &BudgetRequest<'_>) -> Decision {
        (**self).decide(request)
    }
    fn settle(&self, record: &AttemptRecord, reservation: Option<Reservation>, now: Instant) {
        (**self).settle(record, reservation, now)
    }
}

/// Attempts held per call by [`BudgetGate`] (the primary and up to the
/// highest hedge ceiling).
pub const MAX_HELD: usize = 11;

/// A [`Gate`] that consults one budget for every attempt of a call and
/// settles each allowed attempt exactly once — the no_std way to put a
/// (`static`) budget in front of [`call`](crate::call).
#[derive(Debug)]
pub struct BudgetGate<'a, B: ?Sized> {
    budget: &'a B,
    key: PolicyKey<'a>,
    name: &'a str,
    cost: u32,
    held: heapless::Vec<(AttemptId, Option<Reservation>), MAX_HELD>,
}

impl<'a, B: Budget + ?Sized> BudgetGate<'a, B> {
    /// A gate for one call with `key`, charging `cost` per attempt to
    /// `budget` (named `name` in records and requests).
    pub fn new(budget: &'a B, key: PolicyKey<'a>, name: &'a str, cost: u32) -> Self {
        Self {
            budget,
            key,
            name,
            cost: cost.max(1),
            held: heapless::Vec::new(),
        }
    }
}

impl<B: Budget + ?Sized> Gate for BudgetGate<'_, B> {
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        let decision = self.budget.decide(&BudgetRequest {
            key: self.key,
            attempt: request.attempt,
            kind: request.attempt.kind(),
            budget: self.name,
            cost: self.cost,
            previous: request.previous,
            now: request.now,
        });
        if !decision.allowed {
            return Admission::denied(decision.reason);
        }
        if self
            .held
            .push((request.attempt.id, decision.reservation))
            .is_err()
        {
            // More attempts in flight than any policy allows: give the
            // reservation back at once rather than lose it.
            let record = AttemptRecord {
                info: request.attempt,
                start: request.now,
                end: request.now,
                outcome: Outcome::abort(reason::BUDGET_DENIED),
                cancelled: true,
                backoff: core::time::Duration::ZERO,
                budget_allowed: false,
                budget_reason: reason::BUDGET_DENIED,
            };
            self.budget
                .settle(&record, decision.reservation, request.now);
            return Admission::DENIED;
        }
        Admission::allowed(decision.reason)
    }

    fn attempt_ended(&mut self, record: &AttemptRecord) {
        if let Some(i) = self.held.iter().position(|(id, _)| *id == record.info.id) {
            // `swap_remove` by hand: heapless's moves the last element with
            // `ptr::copy`, which pulls in `memmove` (1.6 KiB on a
            // Cortex-M); these are plain `Copy` assignments.
            let (_, reservation) = self.held[i];
            if let Some(last) = self.held.pop() {
                if i < self.held.len() {
                    self.held[i] = last;
                }
            }
            self.budget.settle(record, reservation, record.end);
        }
    }
}

#[cfg(test)]
mod far_clock_tests {
    //! A shared clock may count from an epoch long ago (std-ext's counts
    //! from a century before first use): every built-in must work there
    //! exactly as near its epoch.

    use core::time::Duration;

    use super::testing::{record, request, FAILED, INITIAL, RETRY};
    use super::*;

    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);

    fn fresh_budget_allows_a_first_attempt_and_a_retry(b: &dyn Budget) {
        for epoch in [Instant::ZERO, Instant::ZERO + CENTURY] {
            let now = epoch + Duration::from_millis(1);
            let first = b.decide(&request(INITIAL, 1, None, now));
            assert!(first.allowed, "first attempt at {now:?}");
            b.settle(&record(INITIAL, FAILED, now), first.reservation, now);
            let retry = b.decide(&request(RETRY, 1, Some(FAILED), now));
            assert!(retry.allowed, "retry at {now:?}");
            b.settle(&record(RETRY, FAILED, now), retry.reservation, now);
        }
    }

    #[test]
    fn every_built_in_works_far_from_its_epoch() {
        fresh_budget_allows_a_first_attempt_and_a_retry(&Unlimited);
        fresh_budget_allows_a_first_attempt_and_a_retry(&GrpcThrottle::new(100, 100));
        fresh_budget_allows_a_first_attempt_and_a_retry(&AwsRetryQuota::standard());
        fresh_budget_allows_a_first_attempt_and_a_retry(&Concurrency::envoy());
        #[cfg(any(target_has_atomic = "32", feature = "critical-section"))]
        {
            fresh_budget_allows_a_first_attempt_and_a_retry(&RetryRatio::finagle());
            fresh_budget_allows_a_first_attempt_and_a_retry(&TokenBucket::new(10, 1));
        }
    }
}
