//! Rules for starting attempts: a primary or a hedge is launched (or
//! refused) right after one gate admission of exactly that attempt, within
//! the bounds, before the deadline, and with the records the model expects.

use core::time::Duration;

use recourse_core::hedge::{HedgeDecision, HedgeState};
use recourse_core::{
    Admission, AdmitRequest, AttemptId, AttemptInfo, AttemptRecord, Cause, Gatekeeper, Instant,
    Outcome, Verdict,
};

use super::{Attempt, Checker, Life};
use crate::invariants::coverage::Feature;
use crate::invariants::gate::GateCall;

impl Checker<'_> {
    /// The single `Admit` in `calls`, after an optional `Hedge` that said
    /// spawn; checks the hedge consultation.
    pub(super) fn admission(
        &mut self,
        calls: &[GateCall],
        hedge: bool,
    ) -> (AdmitRequest, Admission) {
        let (req, adm) = match (hedge, calls) {
            (false, [GateCall::Admit(req, adm)]) => (*req, *adm),
            (true, [GateCall::Hedge(state, decision), GateCall::Admit(req, adm)]) => {
                self.check_hedge_consultation(state, decision);
                ensure!(
                    self,
                    decision.spawn,
                    "a hedge was admitted although the trigger said {decision:?}"
                );
                (*req, *adm)
            }
            _ => self.fail(format_args!(
                "an attempt ({}) must be launched or refused right after one gate admit \
                 (a hedge after one trigger consultation), got gate calls {calls:?}",
                if hedge { "hedge" } else { "primary" }
            )),
        };
        ensure!(
            self,
            req.now == self.now,
            "admit asked at {:?}, the clock says {:?}",
            req.now,
            self.now
        );
        let next = self.attempts.len();
        ensure!(
            self,
            usize::from(req.attempt.id.0) == next,
            "attempt ids must be handed out in order: expected {next}, admit asked about {:?}",
            req.attempt.id
        );
        ensure!(
            self,
            self.deadline.is_none_or(|d| self.now < d),
            "the gate was asked about an attempt at {:?}, at or after the overall deadline {:?}",
            self.now,
            self.deadline
        );
        ensure!(
            self,
            self.expected.is_none() && self.ending.is_none(),
            "an attempt was started while the call was ending (expected {:?})",
            self.expected
        );
        ensure!(
            self,
            !self.cancel_fed,
            "an attempt was started after the caller cancelled"
        );
        (req, adm)
    }

    /// Rules for a primary about to be launched or refused; returns the
    /// sleep its record must report.
    pub(super) fn check_primary(&mut self, info: &AttemptInfo, req: &AdmitRequest) -> Duration {
        ensure!(
            self,
            !info.is_hedge && info.hedge_index == 0,
            "a primary must have hedge index 0: {info:?}"
        );
        ensure!(
            self,
            self.in_flight.is_empty(),
            "a primary started beside attempts in flight {:?}",
            self.in_flight
        );
        ensure!(
            self,
            info.retry_index == self.groups,
            "retry group {} started, expected {}",
            info.retry_index,
            self.groups
        );
        ensure!(
            self,
            self.groups < self.max_attempts,
            "retry group {} started, but max_attempts is {}",
            self.groups + 1,
            self.max_attempts
        );
        if self.groups == 0 {
            ensure!(
                self,
                req.previous.is_none(),
                "the first attempt's admit carried a previous outcome {:?}",
                req.previous
            );
            return Duration::ZERO;
        }
        let previous = self.last_failed.and_then(|id| self.failure_of(id));
        ensure!(
            self,
            req.previous == previous,
            "a retry's admit must carry the failure that led to it: {previous:?}, got {:?}",
            req.previous
        );
        let Some(end) = self.group_end.take() else {
            self.fail(format_args!(
                "retry group {} started although the previous one did not fail retryably",
                self.groups
            ));
        };
        let what = if end.hinted {
            "the server's retry-after hint (capped by the executor)"
        } else {
            "the backoff schedule (multiplier, cap and jitter drawn from the seeded RNG)"
        };
        match self.backoff_until.take() {
            // The wait itself was checked against `end.at + end.delay`.
            Some(until) => ensure!(
                self,
                self.now >= until,
                "retry started at {:?}, before its backoff ended at {until:?}",
                self.now
            ),
            // At the clock's end `at + delay` saturates to `at`: nothing to
            // wait for, the record still reports the sleep drawn.
            None => ensure!(
                self,
                end.delay.is_zero() || end.at + end.delay == end.at,
                "{what} fixes the sleep at {:?}, the machine launched the retry without one",
                end.delay
            ),
        }
        end.delay
    }

    /// Rules for a hedge about to be launched or refused.
    pub(super) fn check_hedge(&mut self, info: &AttemptInfo, req: &AdmitRequest) {
        ensure!(
            self,
            info.is_hedge && info.hedge_index == self.group_hedges + 1,
            "hedge index {} (is_hedge {}), expected {}",
            info.hedge_index,
            info.is_hedge,
            self.group_hedges + 1
        );
        ensure!(
            self,
            self.groups > 0 && info.retry_index == self.groups - 1,
            "a hedge of group {} while group {} runs",
            info.retry_index,
            self.groups.wrapping_sub(1)
        );
        ensure!(
            self,
            info.hedge_index <= self.max_hedges,
            "hedge {} in retry group {}, but at most {} hedges per group",
            info.hedge_index,
            info.retry_index,
            self.max_hedges
        );
        ensure!(
            self,
            req.previous.is_none(),
            "a hedge's admit carried a previous outcome {:?}",
            req.previous
        );
        self.group_hedges += 1;
    }

    pub(super) fn check_hedge_consultation(
        &mut self,
        state: &HedgeState,
        decision: &HedgeDecision,
    ) {
        ensure!(
            self,
            self.max_hedges > 0,
            "the hedge trigger was consulted although this machine may not hedge"
        );
        ensure!(
            self,
            !self.in_flight.is_empty() && self.in_flight.len() < self.n,
            "the hedge trigger was consulted with {} attempts in flight and {} slots",
            self.in_flight.len(),
            self.n
        );
        ensure!(
            self,
            self.group_hedges < self.max_hedges && !self.hedging_stopped,
            "the hedge trigger was consulted although the group may not hedge again \
             ({} of {} hedges, stopped {})",
            self.group_hedges,
            self.max_hedges,
            self.hedging_stopped
        );
        ensure!(
            self,
            self.group_terminal.is_none(),
            "the hedge trigger was consulted while a terminal outcome is held"
        );
        let want = HedgeState {
            retry_index: self.groups.wrapping_sub(1),
            group_start: self.group_start,
            now: self.now,
            hedges: self.group_hedges,
            max_hedges: self.max_hedges,
            hedge_delay: self.policy.hedge.hedge_delay,
        };
        ensure!(
            self,
            *state == want,
            "the hedge trigger was told {state:?}, expected {want:?}"
        );
        if let Some(gap) = self.hedge_gap {
            // Hedge `k` at `k × gap` after the group's primary; until then
            // the trigger asks to be consulted at that instant.
            let k = self.group_hedges.saturating_add(1);
            let due = self.group_start + gap.saturating_mul(k);
            let documented = if self.now >= due {
                HedgeDecision {
                    spawn: true,
                    next_check: None,
                }
            } else {
                HedgeDecision {
                    spawn: false,
                    next_check: Some(due),
                }
            };
            ensure!(
                self,
                *decision == documented,
                "the trigger answered {decision:?} for hedge {k} at {:?}, its docs say \
                 {documented:?} (hedge k at k × {gap:?} after the group's start {:?})",
                self.now,
                self.group_start
            );
        }
    }

    pub(super) fn on_launch(&mut self, info: AttemptInfo, calls: &[GateCall]) {
        let (req, adm) = self.admission(calls, info.is_hedge);
        ensure!(
            self,
            adm.allowed,
            "attempt {:?} launched although the gate said {adm:?}",
            info.id
        );
        ensure!(
            self,
            req.attempt == info,
            "launched {info:?}, but the gate admitted {:?}",
            req.attempt
        );
        let own = self.per_attempt.map(|d| self.now + d);
        let want = match (own, self.deadline) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        };
        ensure!(
            self,
            info.deadline == want,
            "attempt deadline {:?}, expected {want:?} (per-attempt timeout clipped to the \
             overall deadline)",
            info.deadline
        );
        // At the clock's end a timeout saturates to now: the machine then
        // launches the attempt and cuts it at once (the compact stage's first attempt).
        let saturated = self.now == Instant::MAX;
        if saturated && info.deadline == Some(self.now) {
            self.seen.mark(Feature::ClockSaturated);
        }
        ensure!(
            self,
            info.deadline.is_none_or(|d| d > self.now) || saturated,
            "attempt launched at {:?} with its deadline {:?} already due",
            self.now,
            info.deadline
        );
        ensure!(
            self,
            self.in_flight.len() < self.n,
            "attempt launched with {} already in flight and {} slots",
            self.in_flight.len(),
            self.n
        );
        let backoff = if info.is_hedge {
            self.check_hedge(&info, &req);
            ensure!(
                self,
                !self.hedging_stopped && self.group_terminal.is_none(),
                "hedge launched after the group stopped hedging or holds a terminal outcome"
            );
            self.seen.mark(Feature::Hedged);
            Duration::ZERO
        } else {
            let backoff = self.check_primary(&info, &req);
            if self.groups > 0 {
                self.seen.mark(Feature::Retried);
            }
            self.groups += 1;
            self.group_start = self.now;
            self.group_hedges = 0;
            self.hedging_stopped = false;
            self.group_terminal = None;
            backoff
        };
        self.attempts.push(Attempt {
            info,
            start: self.now,
            admission: adm,
            backoff,
            life: Life::InFlight,
            ended_calls: 0,
        });
        self.in_flight.push(info.id.0);
        self.launched += 1;
        ensure!(
            self,
            self.launched <= self.attempt_bound(),
            "{} attempts launched, above max_attempts × (1 + max_hedges) = {}",
            self.launched,
            self.attempt_bound()
        );
    }

    pub(super) fn on_refused(&mut self, r: AttemptRecord, calls: &[GateCall]) {
        let (req, adm) = self.admission(calls, r.info.is_hedge);
        ensure!(
            self,
            !adm.allowed,
            "a refusal was recorded although the gate said {adm:?}"
        );
        ensure!(
            self,
            r.info == req.attempt,
            "refusal record for {:?}, but the gate was asked about {:?}",
            r.info,
            req.attempt
        );
        let backoff = if r.info.is_hedge {
            self.check_hedge(&r.info, &req);
            self.hedging_stopped = true;
            self.seen.mark(Feature::HedgeRefused);
            Duration::ZERO
        } else {
            let backoff = self.check_primary(&r.info, &req);
            self.refused_by = Some(adm.by);
            self.expected = Some(Verdict::Failure {
                cause: match adm.by {
                    Gatekeeper::Budget => Cause::BudgetDenied,
                    Gatekeeper::Circuit => Cause::CircuitOpen,
                },
                last: self.last_failed.map(AttemptId),
            });
            backoff
        };
        let want = AttemptRecord {
            info: req.attempt,
            start: self.now,
            end: self.now,
            outcome: Outcome::abort(adm.reason),
            cancelled: false,
            backoff,
            budget_allowed: false,
            budget_reason: adm.reason,
        };
        ensure!(self, r == want, "refusal record {r:?}, expected {want:?}");
        self.attempts.push(Attempt {
            info: r.info,
            start: self.now,
            admission: adm,
            backoff,
            life: Life::Refused,
            ended_calls: 0,
        });
    }
}
