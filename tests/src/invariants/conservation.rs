//! The conservation law of every built-in budget, checked around each
//! `decide` and `settle` the machine causes: the budget's observable state
//! (tokens, balance) is read before and after, and the change must be the
//! one its docs promise.
//!
//! - [`TokenBucket`]: never above its capacity; an allowed attempt spends
//!   exactly `max(cost, 1)` tokens and reserves them; a denial happens only
//!   when fewer are left, and spends nothing; settling an attempt that ran
//!   changes nothing, one that never ran gets its tokens back (capped);
//! - [`GrpcThrottle`]: tokens within `0..=max_tokens`, `max_tokens` and the
//!   threshold as documented; deciding never changes the tokens; first
//!   attempts always allowed, retries and hedges exactly while above the
//!   threshold; a success adds `token_ratio` (capped), a failure takes one
//!   token (floored at 0), anything else nothing;
//! - [`RetryRatio`]: first attempts always allowed and never lower the
//!   balance; a retry or hedge is allowed only when the balance covers its
//!   cost and lowers it by exactly that; a denial changes nothing and
//!   happens with the balance covering the cost only where the docs allow
//!   it (a clock a whole window behind the latest instant the budget was
//!   asked about, a withdrawal too large for a slot);
//!   settling an attempt that ran changes nothing;
//! - [`AwsRetryQuota`]: never above its capacity; first attempts always
//!   allowed and free; a retry or hedge costs the retry (or timeout-retry)
//!   cost × `max(cost, 1)`, is allowed exactly when that many are left, and
//!   reserves what it took; a denial takes nothing; a success gives back
//!   what the retry took (a first attempt: the increment), capped; a failure
//!   gives nothing back; an attempt that never ran gets its tokens back;
//! - [`Concurrency`]: a first attempt is always allowed and counts as
//!   active; a retry or hedge is allowed exactly while the extra attempts
//!   in flight are below `max(min, ⌊active × permille / 1000⌋)`, and counts
//!   as active and extra; a denial counts nothing; settling takes back
//!   exactly what the attempt added;
//! - [`Unlimited`]: allows everything.
//!
//! [`TokenBucket`]: recourse_core::budget::TokenBucket
//! [`GrpcThrottle`]: recourse_core::budget::GrpcThrottle
//! [`RetryRatio`]: recourse_core::budget::RetryRatio
//! [`AwsRetryQuota`]: recourse_core::budget::AwsRetryQuota
//! [`Concurrency`]: recourse_core::budget::Concurrency
//! [`Unlimited`]: recourse_core::budget::Unlimited

use core::cell::Cell;

use recourse_core::budget::{GrpcThrottle, DEFAULT_TIMEOUT_REASONS};
use recourse_core::{AttemptKind, AttemptRecord, BudgetRequest, Decision, Instant, Reservation};

use super::gate::Inner;
use super::input::BudgetInput;

const MILLI: u64 = 1000;

/// What a budget looked like, as far as its public API shows.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Seen {
    Nothing,
    Milli(u64),
    Tokens(u32),
    Balance(i64),
    /// Active and extra attempts.
    InFlight(usize, usize),
}

fn look(inner: &Inner, now: Instant) -> Seen {
    match inner {
        Inner::TokenBucket(b) => Seen::Milli(b.available_milli(now)),
        Inner::GrpcThrottle(t) => Seen::Tokens(t.tokens_milli()),
        Inner::RetryRatio(r) => Seen::Balance(r.balance(now)),
        Inner::AwsRetryQuota(q) => Seen::Tokens(q.available()),
        Inner::Concurrency(c) => Seen::InFlight(c.active(), c.extra_in_flight()),
        Inner::Unlimited(_) => Seen::Nothing,
    }
}

/// The laws of one budget, with what they need to remember.
#[derive(Debug)]
pub(super) struct Laws {
    input: BudgetInput,
    /// The latest instant the budget was asked about.
    latest: Cell<Option<Instant>>,
}

impl Laws {
    pub(super) fn new(input: BudgetInput) -> Self {
        Self {
            input,
            latest: Cell::new(None),
        }
    }

    /// Whether `now` is earlier than an instant already seen (budgets
    /// shared by calls on different clocks); remembers it.
    fn went_back(&self, now: Instant) -> bool {
        let back = self.latest.get().is_some_and(|l| now < l);
        self.latest
            .set(Some(self.latest.get().map_or(now, |l| l.max(now))));
        back
    }

    /// Runs `inner`'s `decide`, checking its law.
    pub(super) fn decide(
        &self,
        inner: &Inner,
        request: &BudgetRequest<'_>,
    ) -> (Decision, Result<(), String>) {
        let now = request.now;
        let too_late = self.ratio_too_late(now);
        let back = self.went_back(now);
        let before = look(inner, now);
        let d = inner.budget().decide(request);
        let after = look(inner, now);
        let fail = |what: String| {
            Err(format!(
                "{:?} broke its law deciding {:?} (cost {}, at {now:?}): {what}; before {before:?}, \
                 after {after:?}, decision {d:?}",
                self.input, request.kind, request.cost
            ))
        };
        let cost = request.cost.max(1);
        let initial = request.kind == AttemptKind::Initial;
        let verdict = match (inner, before, after) {
            (Inner::Unlimited(_), _, _) if !d.allowed => fail("Unlimited denied".into()),
            (Inner::TokenBucket(b), Seen::Milli(x), Seen::Milli(y)) => {
                let cap = u64::from(b.capacity()) * MILLI;
                let c = u64::from(cost) * MILLI;
                if x > cap || y > cap {
                    fail(format!("more than the capacity {cap} milli-tokens"))
                } else if d.allowed && (x < c || y != x - c) {
                    fail(format!(
                        "allowed, but did not spend exactly {c} milli-tokens"
                    ))
                } else if d.allowed && d.reservation != Some(Reservation(u64::from(cost))) {
                    fail(format!("allowed without reserving the {cost} tokens spent"))
                } else if !d.allowed && (x >= c || y != x) {
                    fail(format!(
                        "denied {c} milli-tokens although it held them, or spent"
                    ))
                } else {
                    Ok(())
                }
            }
            (Inner::GrpcThrottle(t), Seen::Tokens(x), Seen::Tokens(y)) => {
                let allowed = initial || x > t.threshold_milli();
                if y != x {
                    fail("deciding changed the tokens".into())
                } else if d.allowed != allowed {
                    fail(format!(
                        "allowed must be {allowed} (threshold {})",
                        t.threshold_milli()
                    ))
                } else {
                    self.grpc_bounds(t)
                }
            }
            (Inner::RetryRatio(_), Seen::Balance(x), Seen::Balance(y)) => {
                let c = i64::from(cost);
                if initial && (!d.allowed || y < x) {
                    fail("a first attempt must be allowed and deposit".into())
                } else if initial {
                    Ok(())
                } else if d.allowed && (x < c || y != x - c) {
                    fail(format!(
                        "allowed, but the balance did not cover and lose {c}"
                    ))
                } else if !d.allowed && y != x {
                    fail("a denial changed the balance".into())
                } else if !d.allowed && x >= c && !too_late && !self.ratio_slot_may_overflow(cost) {
                    fail(format!(
                        "denied although the balance covers {c} (went back: {back})"
                    ))
                } else {
                    Ok(())
                }
            }
            (Inner::AwsRetryQuota(q), Seen::Tokens(x), Seen::Tokens(y)) => {
                let cap = q.capacity();
                let c = self.aws_cost(request);
                if x > cap || y > cap {
                    fail(format!("more than the capacity {cap}"))
                } else if initial && (!d.allowed || y != x) {
                    fail("a first attempt must be allowed for free".into())
                } else if initial {
                    Ok(())
                } else if d.allowed
                    && (x < c || y != x - c || d.reservation != Some(Reservation(u64::from(c))))
                {
                    fail(format!("allowed, but did not take and reserve exactly {c}"))
                } else if !d.allowed && (x >= c || y != x) {
                    fail(format!("denied although {c} were left, or took tokens"))
                } else {
                    Ok(())
                }
            }
            (Inner::Concurrency(_), Seen::InFlight(a, e), Seen::InFlight(a2, e2)) => {
                let BudgetInput::Concurrency { permille, min } = self.input else {
                    return (d, Ok(()));
                };
                let limit = usize::try_from((a as u64).saturating_mul(u64::from(permille)) / MILLI)
                    .unwrap_or(usize::MAX)
                    .max(min as usize);
                let allowed = initial || e < limit;
                let want = match (d.allowed, initial) {
                    (false, _) => (a, e),
                    (true, true) => (a + 1, e),
                    (true, false) => (a + 1, e + 1),
                };
                if d.allowed != allowed {
                    fail(format!("allowed must be {allowed} (limit {limit})"))
                } else if (a2, e2) != want {
                    fail(format!("expected (active, extra) {want:?}"))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        };
        (d, verdict)
    }

    /// Runs `inner`'s `settle`, checking its law.
    pub(super) fn settle(
        &self,
        inner: &Inner,
        record: &AttemptRecord,
        reservation: Option<Reservation>,
        now: Instant,
    ) -> Result<(), String> {
        self.went_back(now);
        let before = look(inner, now);
        inner.budget().settle(record, reservation, now);
        let after = look(inner, now);
        let fail = |what: String| {
            Err(format!(
                "{:?} broke its law settling {:?} ({:?}, ran {}, reservation {reservation:?}, at \
                 {now:?}): {what}; before {before:?}, after {after:?}",
                self.input,
                record.info.kind(),
                record.outcome,
                record.budget_allowed
            ))
        };
        let ran = record.budget_allowed;
        let held = reservation.map_or(0, |Reservation(r)| r);
        match (inner, before, after) {
            (Inner::TokenBucket(b), Seen::Milli(x), Seen::Milli(y)) => {
                let cap = u64::from(b.capacity()) * MILLI;
                let want = if ran {
                    x
                } else {
                    x.saturating_add(held.saturating_mul(MILLI)).min(cap)
                };
                if y == want {
                    Ok(())
                } else {
                    fail(format!("expected {want} milli-tokens"))
                }
            }
            (Inner::GrpcThrottle(t), Seen::Tokens(x), Seen::Tokens(y)) => {
                let want = if record.outcome.is_success() {
                    x.saturating_add(self.grpc_ratio())
                        .min(t.max_tokens_milli())
                } else if GrpcThrottle::is_failure(&record.outcome) {
                    x.saturating_sub(1000)
                } else {
                    x
                };
                if y == want {
                    self.grpc_bounds(t)
                } else {
                    fail(format!("expected {want} milli-tokens"))
                }
            }
            (Inner::RetryRatio(_), Seen::Balance(x), Seen::Balance(y)) => {
                if ran && y != x {
                    fail("settling an attempt that ran changed the balance".into())
                } else if !ran && y < x {
                    fail("giving back lowered the balance".into())
                } else {
                    Ok(())
                }
            }
            (Inner::AwsRetryQuota(q), Seen::Tokens(x), Seen::Tokens(y)) => {
                let taken = u32::try_from(held).unwrap_or(u32::MAX);
                let back = if !ran {
                    taken
                } else if record.outcome.is_success() {
                    match record.info.kind() {
                        AttemptKind::Initial => match self.input {
                            BudgetInput::AwsRetryQuota { increment, .. } => increment,
                            _ => 0,
                        },
                        AttemptKind::Retry | AttemptKind::Hedge => taken,
                    }
                } else {
                    0
                };
                let want = x.saturating_add(back).min(q.capacity());
                if y == want {
                    Ok(())
                } else {
                    fail(format!("expected {want} tokens"))
                }
            }
            (Inner::Concurrency(_), Seen::InFlight(a, e), Seen::InFlight(a2, e2)) => {
                let want = match (reservation, record.info.kind()) {
                    (None, _) => (a, e),
                    (Some(_), AttemptKind::Initial) => (a.wrapping_sub(1), e),
                    (Some(_), AttemptKind::Retry | AttemptKind::Hedge) => {
                        (a.wrapping_sub(1), e.wrapping_sub(1))
                    }
                };
                if (a2, e2) == want {
                    Ok(())
                } else {
                    fail(format!("expected (active, extra) {want:?}"))
                }
            }
            _ => Ok(()),
        }
    }

    /// `token_ratio`, in milli-tokens, as documented (0 reads as 1).
    fn grpc_ratio(&self) -> u32 {
        match self.input {
            BudgetInput::GrpcThrottle { ratio_milli, .. } => ratio_milli.max(1),
            _ => 0,
        }
    }

    /// `max_tokens` is the parameter in milli-tokens clamped to
    /// `1..=1_000_000`, the threshold half of it, the tokens within both.
    fn grpc_bounds(&self, t: &GrpcThrottle) -> Result<(), String> {
        let BudgetInput::GrpcThrottle { max_tokens, .. } = self.input else {
            return Ok(());
        };
        let max = max_tokens.saturating_mul(1000).clamp(1, 1_000_000);
        if t.max_tokens_milli() != max || t.threshold_milli() != max / 2 {
            return Err(format!(
                "GrpcThrottle max {} and threshold {}, documented {max} and {}",
                t.max_tokens_milli(),
                t.threshold_milli(),
                max / 2
            ));
        }
        if t.tokens_milli() > max {
            return Err(format!(
                "GrpcThrottle holds {} milli-tokens, above its max {max}",
                t.tokens_milli()
            ));
        }
        Ok(())
    }

    /// What a retry costs an AWS quota, as documented.
    fn aws_cost(&self, request: &BudgetRequest<'_>) -> u32 {
        let BudgetInput::AwsRetryQuota {
            retry_cost,
            timeout_cost,
            ..
        } = self.input
        else {
            return 0;
        };
        let timed_out = request
            .previous
            .is_some_and(|o| DEFAULT_TIMEOUT_REASONS.contains(&o.reason));
        let base = if timed_out { timeout_cost } else { retry_cost };
        base.saturating_mul(request.cost.max(1))
    }

    /// Whether `now` is a whole window (ten slices of `ttl / 10`) behind the
    /// latest instant the retry ratio was asked about: the one case, besides
    /// a withdrawal too large for a slot, where its docs let it deny a
    /// retry its balance covers (a call less than a window behind acts in
    /// the latest slice, and the balance at its `now` is that slice's).
    fn ratio_too_late(&self, now: Instant) -> bool {
        let BudgetInput::RetryRatio { ttl_secs, .. } = self.input else {
            return false;
        };
        let slice_ms = (u64::from(ttl_secs) * 1_000).clamp(1_000, 60_000) / 10;
        let slice = |t: Instant| t.as_nanos() / 1_000_000 / slice_ms;
        self.latest
            .get()
            .is_some_and(|l| slice(now).saturating_add(10) <= slice(l))
    }

    /// Whether a withdrawal of `cost` retries may not fit one slot of a
    /// retry ratio (its docs: "a withdrawal that would not fit is
    /// denied"): a slot holds an `i32`, and the reserve (up to
    /// `min_retries_per_sec × 60 s × withdrawal` units) can let a slot's sum
    /// go that far below zero.
    fn ratio_slot_may_overflow(&self, cost: u32) -> bool {
        let BudgetInput::RetryRatio {
            min_per_sec,
            permille,
            ..
        } = self.input
        else {
            return false;
        };
        // The withdrawal in units before reduction bounds the reduced one.
        let withdrawal = if permille == 0 {
            1
        } else {
            1_000_000 / u64::from(permille.min(1_000_000))
        };
        let units = withdrawal.saturating_mul(u64::from(cost));
        let reserve = u64::from(min_per_sec)
            .saturating_mul(60)
            .saturating_mul(withdrawal);
        units.saturating_add(reserve) > (i32::MAX as u64) / 2
    }
}
