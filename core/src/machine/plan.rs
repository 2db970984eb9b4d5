//! What a machine takes from its policy ([`CallPlan`]), and the first
//! attempt's arithmetic shared with the compact stage
//! ([`Staged`](super::Staged)).

use core::time::Duration;

use super::Limits;
use crate::backoff::BackoffSpec;
use crate::policy::Policy;
use crate::record::{AttemptId, AttemptInfo};
use crate::time::Instant;

/// What a machine takes from its policy: the numbers, not the names. Small
/// and `Clone`: read a policy once, then make many machines from it
/// ([`CallMachine::with_plan`](super::CallMachine::with_plan)), or hold it instead of a machine until a
/// call needs one.
#[derive(Clone, Debug)]
pub struct CallPlan {
    pub(super) max_attempts: u32,
    pub(super) per_attempt: Option<Duration>,
    pub(super) overall: Option<Duration>,
    pub(super) backoff: BackoffSpec,
    /// No initial and no maximum backoff: every delay is zero.
    pub(super) zero_backoff: bool,
    /// Hedges per group the policy asks for; 0 when hedging is off.
    pub(super) hedges: u32,
    pub(super) hedge_delay: Duration,
    pub(super) cancel_on_first_terminal: bool,
}

impl CallPlan {
    /// The plan of `policy` (normalize it first; the machine only guards
    /// against values that would break its own invariants).
    #[inline]
    pub fn new(policy: &Policy) -> Self {
        let r = &policy.retry;
        let h = &policy.hedge;
        Self {
            max_attempts: r.max_attempts.max(1),
            per_attempt: per_attempt_timeout(policy),
            overall: overall_timeout(policy),
            backoff: BackoffSpec::new(r),
            zero_backoff: r.initial_backoff.is_zero() && r.max_backoff.is_zero(),
            hedges: policy_hedges(policy),
            hedge_delay: h.hedge_delay,
            cancel_on_first_terminal: h.cancel_on_first_terminal,
        }
    }

    /// Whether a machine of this plan ever draws from its random source:
    /// only the backoff before a retry does, so not under a policy of one
    /// attempt, nor one whose every delay is zero. A driver that makes a
    /// machine per call (the simulator) need not seed it otherwise.
    #[inline]
    pub fn draws(&self) -> bool {
        self.max_attempts > 1 && !self.zero_backoff
    }

    /// Hedges per retry group a machine with `slots` attempt slots runs:
    /// what the policy asks for, as far as the ceiling in `limits` and the
    /// slots allow (0 when hedging is off).
    #[inline]
    pub fn hedges_within(&self, limits: Limits, slots: usize) -> u32 {
        hedges_in(self.hedges, limits.max_hedges_ceiling, slots)
    }
}

/// The attempt a machine started at `now` under `policy` launches first
/// (when its gate admits it), which runs until it completes, or until its
/// deadline (clipped to the call's). When that deadline is `now` already
/// (the clock is so near its end that adding a timeout saturates), the
/// machine ends the call or cuts the attempt before it runs.
#[inline(always)]
pub(super) fn first_launch(policy: &Policy, now: Instant) -> AttemptInfo {
    launch(policy, now, 0, now)
}

/// The primary of retry group `group` (id `group`: every earlier group
/// launched one attempt) of a call started at `start` under `policy`,
/// launched at `at`: what a machine without hedges launches there.
#[inline(always)]
pub(super) fn launch(policy: &Policy, start: Instant, group: u16, at: Instant) -> AttemptInfo {
    let r = &policy.retry;
    // Most policies have neither timeout: two tests, not the zero checks
    // and the saturating sums (about 20 instructions on the first attempt).
    let deadline = if r.timeout_per_attempt.is_none() && r.overall_timeout.is_none() {
        None
    } else {
        let call = overall_timeout(policy).map(|d| start + d);
        attempt_deadline(per_attempt_timeout(policy).map(|d| at + d), call)
    };
    AttemptInfo {
        id: AttemptId(group),
        retry_index: u32::from(group),
        hedge_index: 0,
        is_hedge: false,
        deadline,
    }
}

/// The per-attempt timeout, if any (zero means none).
#[inline]
pub(crate) fn per_attempt_timeout(policy: &Policy) -> Option<Duration> {
    policy.retry.timeout_per_attempt.filter(|d| !d.is_zero())
}

/// The overall timeout, if any (zero means none).
#[inline]
pub(crate) fn overall_timeout(policy: &Policy) -> Option<Duration> {
    policy.retry.overall_timeout.filter(|d| !d.is_zero())
}

/// Hedges per group the policy asks for: 0 when hedging is off.
#[inline]
pub(crate) fn policy_hedges(policy: &Policy) -> u32 {
    if policy.hedge.enabled {
        policy.hedge.max_hedges
    } else {
        0
    }
}

/// Hedges per group: `asked`, as far as the `ceiling` (the limits'
/// `max_hedges_ceiling`) and the `slots` (primary included) allow.
#[inline]
pub(super) fn hedges_in(asked: u32, ceiling: u32, slots: usize) -> u32 {
    let room = u32::try_from(slots.saturating_sub(1)).unwrap_or(u32::MAX);
    asked.min(ceiling).min(room)
}

/// The deadline of an attempt: its own (launch time plus per-attempt
/// timeout), clipped to the call's.
#[inline(always)]
pub(super) fn attempt_deadline(own: Option<Instant>, call: Option<Instant>) -> Option<Instant> {
    match (own, call) {
        (Some(a), Some(d)) => Some(a.min(d)),
        (a, d) => a.or(d),
    }
}
