//! A deterministic open-loop load run of the call machine against a
//! dependency, in virtual time: how many attempts a budget lets through.
//!
//! Calls arrive at a fixed rate; every attempt takes a fixed latency and
//! fails (retryably) with a given probability; each call runs the real
//! [`CallMachine`] behind a [`BudgetGate`]. Nothing sleeps: an event queue
//! jumps from one instant to the next, so a 10,000-call run takes
//! milliseconds and gives the same numbers every time.

use core::cmp::Reverse;
use core::time::Duration;
use std::collections::BinaryHeap;

use recourse_core::budget::{Budget, BudgetGate};
use recourse_core::{
    Action, CallMachine, Event, Instant, Limits, Outcome, Policy, PolicyKey, Verdict,
};

/// One load run's shape.
#[derive(Clone, Debug)]
pub struct Load {
    /// Calls in the run.
    pub calls: u32,
    /// Calls arriving per second (open loop: arrivals do not wait).
    pub rate_per_sec: u32,
    /// How long every attempt takes.
    pub latency: Duration,
    /// Probability that an attempt fails, in 0.0..=1.0.
    pub failure_rate: f64,
    /// The policy every call runs under.
    pub policy: Policy,
    /// Seeds the failures and the jitter.
    pub seed: u64,
}

impl Load {
    /// The outage of the budgets example: 10,000 calls at 1,000 calls/s,
    /// every attempt failing after 5 ms, 3 attempts per call (10 ms backoff,
    /// doubling).
    pub fn outage() -> Self {
        let mut policy = Policy::DEFAULT;
        policy.retry.max_attempts = 3;
        Self {
            calls: 10_000,
            rate_per_sec: 1_000,
            latency: Duration::from_millis(5),
            failure_rate: 1.0,
            policy,
            seed: 7,
        }
    }
}

/// What a load run did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Calls made.
    pub calls: u64,
    /// Attempts that reached the dependency.
    pub attempts: u64,
    /// Attempts a budget refused.
    pub denied: u64,
    /// Calls that succeeded.
    pub succeeded: u64,
}

impl LoadReport {
    /// Attempts per call: 1.0 means no extra load at all.
    pub fn amplification(&self) -> f64 {
        self.attempts as f64 / self.calls.max(1) as f64
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Arrive,
    Finish(u16, bool),
    Tick,
}

/// Runs `load` with every attempt gated by `budget` (none: no budget).
pub fn run_load(load: &Load, budget: Option<&dyn Budget>) -> LoadReport {
    let mut rng = fastrand::Rng::with_seed(load.seed);
    let gap = Duration::from_nanos(1_000_000_000 / u64::from(load.rate_per_sec.max(1)));
    let key = PolicyKey::new("load", "Call");
    let mut machines: Vec<CallMachine<1>> = Vec::with_capacity(load.calls as usize);
    let mut gates: Vec<Option<BudgetGate<'_, dyn Budget>>> =
        Vec::with_capacity(load.calls as usize);
    let mut queue = BinaryHeap::new();
    for i in 0..load.calls {
        queue.push(Reverse((Instant::ZERO + gap * i, i, Due::Arrive)));
    }
    let mut report = LoadReport {
        calls: u64::from(load.calls),
        ..LoadReport::default()
    };
    while let Some(Reverse((now, call, due))) = queue.pop() {
        let i = call as usize;
        match due {
            Due::Arrive => {
                machines.push(CallMachine::new(
                    &load.policy,
                    Limits::DEFAULT,
                    fastrand::Rng::with_seed(rng.u64(..)),
                ));
                machines[i].handle(Event::Start { now });
                gates.push(budget.map(|b| BudgetGate::new(b, key, "load", 1)));
            }
            Due::Finish(id, failed) => {
                let outcome = if failed {
                    Outcome::retryable("unavailable")
                } else {
                    Outcome::SUCCESS
                };
                let id = recourse_core::AttemptId(id);
                machines[i].handle(Event::AttemptFinished { id, outcome, now });
            }
            Due::Tick => machines[i].handle(Event::Tick { now }),
        }
        loop {
            let action = match &mut gates[i] {
                Some(gate) => machines[i].poll(gate),
                None => machines[i].poll(&mut ()),
            };
            match action {
                Action::Launch(info) => {
                    report.attempts += 1;
                    let failed = rng.f64() < load.failure_rate;
                    queue.push(Reverse((
                        now + load.latency,
                        call,
                        Due::Finish(info.id.0, failed),
                    )));
                }
                Action::Record(r) => report.denied += u64::from(!r.budget_allowed),
                Action::Cancel(_) => {}
                Action::Wait { until, .. } => {
                    queue.push(Reverse((until, call, Due::Tick)));
                    break;
                }
                Action::AwaitAttempts => break,
                Action::Finish(v) => {
                    report.succeeded += u64::from(matches!(v, Verdict::Success(_)));
                    break;
                }
            }
        }
    }
    report
}
