//! Test helpers shared by the built-in budgets' tests: requests and records
//! of each kind at explicit instants.

use core::time::Duration;

use super::{Budget, BudgetRequest, Decision};
use crate::key::PolicyKey;
use crate::outcome::{reason, Outcome};
use crate::record::{AttemptId, AttemptInfo, AttemptKind, AttemptRecord};
use crate::time::Instant;

pub(super) const INITIAL: AttemptKind = AttemptKind::Initial;
pub(super) const RETRY: AttemptKind = AttemptKind::Retry;
pub(super) const HEDGE: AttemptKind = AttemptKind::Hedge;

/// A retryable failure, as the default classifier reports an `Err`.
pub(super) const FAILED: Outcome = Outcome::retryable(reason::RETRYABLE_ERROR);

/// `ms` milliseconds after the epoch.
pub(super) const fn ms(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// An attempt of `kind` (the first of its kind in its call).
pub(super) const fn info(kind: AttemptKind) -> AttemptInfo {
    let (retry_index, hedge_index, is_hedge) = match kind {
        AttemptKind::Initial => (0, 0, false),
        AttemptKind::Retry => (1, 0, false),
        AttemptKind::Hedge => (0, 1, true),
    };
    AttemptInfo {
        id: AttemptId(0),
        retry_index,
        hedge_index,
        is_hedge,
        deadline: None,
    }
}

/// A request for an attempt of `kind` costing `cost`, after `previous`.
pub(super) fn request(
    kind: AttemptKind,
    cost: u32,
    previous: Option<Outcome>,
    now: Instant,
) -> BudgetRequest<'static> {
    BudgetRequest {
        key: PolicyKey::new("test", "budget"),
        attempt: info(kind),
        kind,
        budget: "test",
        cost,
        previous,
        now,
    }
}

/// The record of an allowed attempt of `kind` that ended with `outcome` at
/// `now`.
pub(super) fn record(kind: AttemptKind, outcome: Outcome, now: Instant) -> AttemptRecord {
    AttemptRecord {
        info: info(kind),
        start: now,
        end: now,
        outcome,
        cancelled: false,
        backoff: Duration::ZERO,
        budget_allowed: true,
        budget_reason: reason::ALLOWED,
    }
}

/// Asks `budget` about an attempt of `kind` (cost 1, no previous outcome).
pub(super) fn decide<B: Budget + ?Sized>(budget: &B, kind: AttemptKind, now: Instant) -> Decision {
    budget.decide(&request(kind, 1, None, now))
}

/// Asks, and if allowed settles at once with `outcome`: one whole attempt.
/// Returns whether it was allowed.
pub(super) fn attempt<B: Budget + ?Sized>(
    budget: &B,
    kind: AttemptKind,
    outcome: Outcome,
    now: Instant,
) -> bool {
    let d = decide(budget, kind, now);
    if d.allowed {
        budget.settle(&record(kind, outcome, now), d.reservation, now);
    }
    d.allowed
}
