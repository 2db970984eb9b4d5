//! Rules for attempts ending and the call's verdict: each record is the one
//! the model expects, each cancellation has its reason, and the verdict is
//! the predicted one and consistent with what was fed.

use recourse_core::{
    reason, AttemptId, AttemptRecord, Cause, Gatekeeper, Outcome, OutcomeKind, Verdict,
};

use super::{Checker, Life};
use crate::invariants::coverage::Feature;
use crate::invariants::gate::GateCall;

impl Checker<'_> {
    /// The record an attempt in flight ends with, as far as the model
    /// knows it.
    pub(super) fn expected_record(
        &self,
        id: u16,
        outcome: Outcome,
        cancelled: bool,
    ) -> AttemptRecord {
        let a = &self.attempts[usize::from(id)];
        AttemptRecord {
            info: a.info,
            start: a.start,
            end: self.now,
            outcome,
            cancelled,
            backoff: a.backoff,
            budget_allowed: true,
            budget_reason: a.admission.reason,
        }
    }

    pub(super) fn on_result_record(&mut self, r: AttemptRecord, calls: &[GateCall]) {
        let id = r.info.id.0;
        ensure!(
            self,
            self.expect_record == Some(id),
            "attempt {id} reported a result nobody fed (or twice): {r:?}"
        );
        self.expect_record = None;
        let Life::Finished(outcome) = self.attempts[usize::from(id)].life else {
            self.fail(format_args!("attempt {id} reported while not finished"));
        };
        let want = self.expected_record(id, outcome, false);
        ensure!(self, r == want, "result record {r:?}, expected {want:?}");
        ensure!(
            self,
            calls == [GateCall::AttemptEnded(r)],
            "a result record must come with exactly one attempt_ended for it, got {calls:?}"
        );
    }

    pub(super) fn on_cancel(&mut self, r: AttemptRecord, calls: &[GateCall]) {
        let id = r.info.id.0;
        ensure!(
            self,
            self.in_flight.contains(&id),
            "cancelled attempt {id}, which is not in flight {:?}",
            self.in_flight
        );
        ensure!(
            self,
            calls == [GateCall::AttemptEnded(r)],
            "a cancellation must come with exactly one attempt_ended for it, got {calls:?}"
        );
        let why = r.outcome.reason;
        let outcome = if why == reason::ATTEMPT_TIMEOUT {
            Outcome::retryable(why)
        } else {
            Outcome::abort(why)
        };
        let want = self.expected_record(id, outcome, true);
        ensure!(self, r == want, "cancel record {r:?}, expected {want:?}");
        self.in_flight.retain(|i| *i != id);
        if why == reason::ATTEMPT_TIMEOUT {
            let deadline = self.attempts[usize::from(id)].info.deadline;
            ensure!(
                self,
                deadline.is_some_and(|d| self.now >= d),
                "attempt {id} cut for attempt_timeout at {:?}, before its deadline {deadline:?}",
                self.now
            );
            ensure!(
                self,
                self.expected.is_none() && self.ending.is_none(),
                "attempt {id} cut at its deadline while the call was ending (expected {:?})",
                self.expected
            );
            self.attempts[usize::from(id)].life = Life::TimedOut;
            self.seen.mark(Feature::AttemptTimedOut);
            self.last_failed = Some(id);
            if self.in_flight.is_empty() {
                self.group_failed(None);
            }
            return;
        }
        self.attempts[usize::from(id)].life = Life::Dropped;
        let expected_cause = match self.expected {
            Some(Verdict::Failure { cause, .. }) => Some(cause),
            _ => None,
        };
        match why {
            reason::OVERALL_TIMEOUT => ensure!(
                self,
                expected_cause == Some(Cause::DeadlineExceeded),
                "attempt {id} dropped for overall_timeout at {:?}, deadline {:?}, expected {:?}",
                self.now,
                self.deadline,
                self.expected
            ),
            reason::CANCELLED => ensure!(
                self,
                self.cancel_fed && expected_cause == Some(Cause::Cancelled),
                "attempt {id} dropped as cancelled, but the caller did not cancel"
            ),
            reason::HEDGE_LOSER => {
                ensure!(
                    self,
                    self.expected.is_some()
                        && !matches!(
                            expected_cause,
                            Some(Cause::DeadlineExceeded | Cause::Cancelled)
                        ),
                    "attempt {id} dropped as a hedge loser, but no other attempt decided the \
                     call (expected {:?})",
                    self.expected
                );
                self.seen.mark(Feature::HedgeLoserCancelled);
            }
            other => self.fail(format_args!(
                "attempt {id} cancelled with unknown reason {other:?}"
            )),
        }
        let ending = *self.ending.get_or_insert(why);
        ensure!(
            self,
            ending == why,
            "attempts of one ending call dropped for different reasons: {ending} and {why}"
        );
    }

    pub(super) fn on_finish(&mut self, v: Verdict, calls: &[GateCall]) {
        ensure!(
            self,
            calls == [GateCall::CallEnded(v, self.now)],
            "the first Finish must come with exactly one call_ended({v:?}, now), got {calls:?}"
        );
        self.call_ended_calls += 1;
        ensure!(
            self,
            self.in_flight.is_empty(),
            "Finish with attempts still in flight {:?}",
            self.in_flight
        );
        match self.expected {
            Some(e) => ensure!(self, v == e, "the call must end with {e:?}, got {v:?}"),
            None => {
                let last = self.last_failed.map(AttemptId);
                // Attempt ids are u16: a call that has handed out every id
                // ends exhausted rather than reuse one.
                let out_of_ids = Verdict::Failure {
                    cause: Cause::Exhausted,
                    last,
                };
                ensure!(
                    self,
                    v == out_of_ids && self.attempts.len() >= usize::from(u16::MAX),
                    "the call ended with {v:?}, which nothing fed explains"
                );
            }
        }
        self.check_verdict(v);
        self.finished = Some(v);
        for (i, a) in self.attempts.iter().enumerate() {
            let ended = if a.life == Life::Refused { 0 } else { 1 };
            ensure!(
                self,
                a.ended_calls == ended && a.life != Life::InFlight,
                "attempt {i} ({:?}) ended {} times at the gate, expected {ended}",
                a.life,
                a.ended_calls
            );
        }
    }

    /// The failure attempt `id` ended with, if it failed.
    pub(super) fn failure_of(&self, id: u16) -> Option<Outcome> {
        match self.attempts.get(usize::from(id))?.life {
            Life::Finished(o) if !o.is_success() => Some(o),
            Life::TimedOut => Some(Outcome::retryable(reason::ATTEMPT_TIMEOUT)),
            _ => None,
        }
    }

    /// The verdict agrees with what was fed, whatever the model predicted.
    pub(super) fn check_verdict(&mut self, v: Verdict) {
        let (cause, last) = match v {
            Verdict::Success(id) => {
                let life = self.attempts.get(usize::from(id.0)).map(|a| a.life);
                ensure!(
                    self,
                    matches!(life, Some(Life::Finished(o)) if o.is_success()),
                    "Success({id:?}), but that attempt was not fed a success ({life:?})"
                );
                self.seen.mark(Feature::Success);
                return;
            }
            Verdict::Failure { cause, last } => (cause, last),
        };
        let failure = last.and_then(|id| self.failure_of(id.0));
        ensure!(
            self,
            last.is_none() || failure.is_some(),
            "the verdict names {last:?} as the last failure, but that attempt did not fail"
        );
        let kind = failure.map(|o| o.kind);
        let (ok, feature) = match cause {
            Cause::NonRetryable => (
                kind == Some(OutcomeKind::NonRetryable),
                Feature::NonRetryable,
            ),
            Cause::Abort => (kind == Some(OutcomeKind::Abort), Feature::Abort),
            Cause::Exhausted => (
                (self.groups == self.max_attempts || self.attempts.len() >= usize::from(u16::MAX))
                    && kind == Some(OutcomeKind::Retryable),
                Feature::Exhausted,
            ),
            Cause::DeadlineExceeded => (
                self.deadline.is_some_and(|d| self.now >= d),
                Feature::DeadlineExceeded,
            ),
            Cause::BackoffBeyondDeadline => (
                self.deadline.is_some() && kind == Some(OutcomeKind::Retryable),
                Feature::BackoffBeyondDeadline,
            ),
            Cause::RetryAfterBeyondDeadline => (
                self.deadline.is_some() && failure.is_some_and(|o| o.retry_after.is_some()),
                Feature::RetryAfterBeyondDeadline,
            ),
            Cause::Cancelled => (self.cancel_fed, Feature::Cancelled),
            Cause::BudgetDenied => (
                self.refused_by == Some(Gatekeeper::Budget),
                Feature::VerdictBudgetDenied,
            ),
            Cause::CircuitOpen => (
                self.refused_by == Some(Gatekeeper::Circuit),
                Feature::CircuitOpen,
            ),
            _ => (false, Feature::EndedInSteps),
        };
        ensure!(
            self,
            ok,
            "{cause:?} is not consistent with what was fed (last failure {last:?}: {failure:?})"
        );
        self.seen.mark(feature);
    }
}
