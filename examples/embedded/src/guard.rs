//! The gate of the example's calls: a circuit breaker and a budget.

use recourse_core::budget::TokenBucket;
use recourse_core::{
    Admission, AdmitRequest, AttemptKind, AttemptRecord, BudgetGate, CallResult, CircuitBreaker,
    Gate, Instant, Permit, PolicyKey, Verdict,
};

/// Bursts of 10 attempts to the peripheral, 1 more per second: shared by
/// every call, in a `static` (it is `Sync`: its state is atomics).
pub static BUDGET: TokenBucket = TokenBucket::new(10, 1);

/// The gate of one call: the breaker before its first attempt, the budget
/// before every attempt; the breaker hears the call's verdict.
pub struct Guard<'a> {
    budget: BudgetGate<'a, TokenBucket>,
    breaker: &'a mut CircuitBreaker,
    permit: Option<Permit>,
}

impl<'a> Guard<'a> {
    /// The gate of one call with `key`, through `breaker` and [`BUDGET`].
    pub fn new(key: PolicyKey<'a>, breaker: &'a mut CircuitBreaker) -> Self {
        Self::with_budget(key, breaker, &BUDGET)
    }

    /// The gate of one call with `key`, through `breaker` and `budget`
    /// (the measuring binary's success-path loop has a budget of its own,
    /// so that every one of its calls is admitted).
    pub fn with_budget(
        key: PolicyKey<'a>,
        breaker: &'a mut CircuitBreaker,
        budget: &'a TokenBucket,
    ) -> Self {
        Self {
            budget: BudgetGate::new(budget, key, "peripheral", 1),
            breaker,
            permit: None,
        }
    }
}

impl Gate for Guard<'_> {
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        if request.attempt.kind() == AttemptKind::Initial && self.permit.is_none() {
            match self.breaker.admit(request.now) {
                Ok(permit) => self.permit = Some(permit),
                Err(refusal) => return Admission::circuit_open(refusal.reason),
            }
        }
        self.budget.admit(request)
    }

    fn attempt_ended(&mut self, record: &AttemptRecord) {
        self.budget.attempt_ended(record);
    }

    fn call_ended(&mut self, verdict: &Verdict, now: Instant) {
        self.budget.call_ended(verdict, now);
        if let Some(permit) = self.permit.take() {
            self.breaker
                .record(permit, CallResult::from_verdict(verdict), now);
        }
    }
}
