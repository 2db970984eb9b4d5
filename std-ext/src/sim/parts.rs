//! What one simulated call's gate works with: the scenario's budgets and
//! the run's breaker, latency sketch, amplification ledger and counts.

use core::cell::RefCell;
use core::time::Duration;

use recourse_core::amplification::AmplificationLedger;
use recourse_core::breaker::{CallResult, CircuitBreaker, Permit, Refusal};
use recourse_core::budget::{Budget, BudgetRequest, Decision, Reservation};
use recourse_core::policy::{AmplificationPolicy, CircuitPolicy};
use recourse_core::policy_gate::{BudgetEvent, GateParts};
use recourse_core::{AttemptKind, AttemptRecord, Instant, LatencySketch, PolicyKey};

use super::report::Tally;

/// What outlives one call: the key's breaker, its latencies, the counts.
pub(super) struct Shared {
    pub(super) breaker: Option<CircuitBreaker>,
    pub(super) sketch: LatencySketch,
    /// The key's amplification ledger (consulted when the policy sets
    /// `amplification.max_amplification`).
    pub(super) ledger: AmplificationLedger,
    pub(super) tally: Tally,
}

/// Where one call's [`PolicyGate`] finds its collaborators: the scenario's
/// budgets (by the attempt's kind; the simulated policy names them) and the
/// run's shared breaker and latency sketch, on the virtual clock.
///
/// [`PolicyGate`]: recourse_core::policy_gate::PolicyGate
#[derive(Copy, Clone)]
pub(super) struct SimParts<'a> {
    pub(super) retry: Option<&'a dyn Budget>,
    pub(super) hedge: Option<&'a dyn Budget>,
    pub(super) shared: &'a RefCell<Shared>,
    /// Whether the call is counted (past the warm-up).
    pub(super) measured: bool,
}

impl<'a> GateParts for SimParts<'a> {
    type Budget = &'a dyn Budget;
    type Permit = Permit;

    fn budget(&mut self, _: &str, kind: AttemptKind) -> Option<&'a dyn Budget> {
        match kind {
            AttemptKind::Hedge => self.hedge,
            AttemptKind::Initial | AttemptKind::Retry => self.retry,
        }
    }

    fn decide(&mut self, budget: &'a dyn Budget, request: &BudgetRequest<'_>) -> Decision {
        budget.decide(request)
    }

    fn settle(
        &mut self,
        budget: &'a dyn Budget,
        record: &AttemptRecord,
        reservation: Option<Reservation>,
        now: Instant,
    ) {
        budget.settle(record, reservation, now);
    }

    fn admit_call(
        &mut self,
        _: PolicyKey<'_>,
        _: &CircuitPolicy,
        now: Instant,
    ) -> Result<Option<Permit>, Refusal> {
        let mut shared = self.shared.borrow_mut();
        let shared = &mut *shared;
        let Some(breaker) = shared.breaker.as_mut() else {
            return Ok(None);
        };
        let before = breaker.state(now);
        let answer = breaker.admit(now);
        if self.measured {
            shared
                .tally
                .circuit(before, breaker.state(now), answer.is_err());
        }
        answer.map(Some)
    }

    fn is_probe(permit: &Permit) -> bool {
        permit.is_probe()
    }

    fn record_call(&mut self, _: PolicyKey<'_>, permit: Permit, result: CallResult, now: Instant) {
        let mut shared = self.shared.borrow_mut();
        let shared = &mut *shared;
        if let Some(breaker) = shared.breaker.as_mut() {
            let before = breaker.state(now);
            breaker.record(permit, result, now);
            if self.measured {
                shared.tally.circuit(before, breaker.state(now), false);
            }
        }
    }

    fn latency_quantile(
        &mut self,
        _: PolicyKey<'_>,
        q_permille: u32,
        now: Instant,
    ) -> Option<Duration> {
        // The same answer as `quantile`, from where the last one lay: a
        // record moves the rank by at most one sample, so this is usually
        // a multiplication, a division and a comparison (a scan of the
        // whole sketch was a tenth of a simulated call).
        self.shared
            .borrow_mut()
            .sketch
            .quantile_tracked(q_permille, now)
    }

    fn record_latency(&mut self, _: PolicyKey<'_>, latency: Duration, now: Instant) {
        self.shared.borrow_mut().sketch.record(latency, now);
    }

    // The two the gate calls, in nanoseconds as the sketch keeps them:
    // the same samples and answers as the two above, without a `Duration`
    // made and taken apart per call.
    #[inline(always)]
    fn latency_quantile_nanos(
        &mut self,
        _: PolicyKey<'_>,
        q_permille: u32,
        now: Instant,
    ) -> Option<u64> {
        self.shared
            .borrow_mut()
            .sketch
            .quantile_tracked_nanos(q_permille, now)
    }

    #[inline]
    fn record_latency_nanos(&mut self, _: PolicyKey<'_>, nanos: u64, now: Instant) {
        self.shared.borrow_mut().sketch.record_nanos(nanos, now);
    }

    fn amplification_allows(
        &mut self,
        _: PolicyKey<'_>,
        policy: &AmplificationPolicy,
        now: Instant,
    ) -> bool {
        self.shared.borrow().ledger.allows_extra(policy, now)
    }

    fn amplification_record(&mut self, _: PolicyKey<'_>, kind: AttemptKind, now: Instant) {
        self.shared.borrow_mut().ledger.record(kind, now);
    }

    fn budget_decided(&mut self, _: PolicyKey<'_>, event: &BudgetEvent<'_>) {
        if !event.allowed && self.measured {
            self.shared.borrow_mut().tally.denied(event.kind);
        }
    }
}
