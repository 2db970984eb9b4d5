//! A deterministic discrete-event simulator: the same [`CallMachine`] that
//! runs real calls, driven in virtual time against a modelled backend — the
//! tool to tune a policy before shipping it (feature `sim`).
//!
//! A [`Scenario`] is a policy, a [`Backend`] (a [`Latency`] distribution,
//! error injection, outage windows, error bursts, a load-sensitive
//! brownout), open-loop [`Arrivals`] and optional budgets for retries and
//! hedges. [`Scenario::run`] makes every call's decisions with the core
//! machine and the same hedge triggers the executor uses (a quantile
//! trigger reads a [`LatencySketch`] fed by completed attempts), and returns
//! a [`Report`]: latency percentiles, attempts and hedges per call, load
//! amplification, budget denials, outcomes and an ASCII histogram. The same
//! scenario and seed give a byte-identical report.
//!
//! ```
//! use core::time::Duration;
//! use recourse::sim::{Arrivals, Backend, Latency, Scenario};
//! use recourse::Policy;
//!
//! let mut hedged = Policy::DEFAULT;
//! hedged.hedge.enabled = true;
//! hedged.hedge.max_hedges = 1;
//! hedged.hedge.trigger = recourse::core_machine::policy::name("hedge.trigger", "p95")?;
//!
//! let scenario = |policy| {
//!     Scenario::new(policy, Backend::new(Latency::tail_at_scale()))
//!         .arrivals(Arrivals::Poisson { per_second: 1_000.0 })
//!         .calls(20_000)
//!         .warmup(1_000)
//!         .seed(7)
//! };
//! let plain = scenario(Policy::DEFAULT).run()?;
//! let p95 = scenario(hedged).run()?;
//! // 1 % stragglers of about a second: p99.9 is one of them without
//! // hedging, and a ~10 ms hedge with it.
//! assert!(plain.quantile(999) > Duration::from_millis(500));
//! assert!(p95.quantile(999) < Duration::from_millis(100));
//! assert!(p95.load_amplification() < 1.07);
//! println!("{p95}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The model
//!
//! - Calls arrive open-loop, whatever the backend does, as production
//!   traffic does (a closed loop would hide a brownout by slowing down).
//! - Each attempt draws its latency and failure when it launches; a failed
//!   attempt is retryable. A cancelled attempt (a hedge loser, an attempt
//!   cut at its deadline) stops counting for the call at once, but keeps
//!   loading the backend until it would have ended.
//! - Budgets see the virtual clock. Warm-up calls run (and teach the
//!   latency sketch) but are left out of the report.
//! - Every call goes through the executor's gate,
//!   [`PolicyGate`]: the budgets the
//!   scenario gives (the policy's names for them are the simulated
//!   policy's), the circuit breaker when the policy enables one (one
//!   breaker: every simulated call has the same key), and the hedge
//!   trigger reading a [`LatencySketch`] fed by completed attempts.

mod backend;
pub mod deadline;
pub mod layers;
mod report;

use core::cmp::Reverse;
use core::time::Duration;
use std::collections::BinaryHeap;

use core::cell::RefCell;

use recourse_core::amplification::AmplificationLedger;
use recourse_core::breaker::{CallResult, CircuitBreaker, Permit, Refusal};
use recourse_core::budget::{Budget, BudgetRequest, Decision, Reservation};
use recourse_core::driver::derive_seed;
use recourse_core::hedge::Trigger;
use recourse_core::machine::{Action, CallMachine, Event, Options};
use recourse_core::policy::{name, AmplificationPolicy, CircuitPolicy, Limits, Policy, Problem};
use recourse_core::policy_gate::{BudgetEvent, GateParts, PolicyGate};
use recourse_core::{
    AttemptKind, AttemptRecord, Instant, LatencySketch, Outcome, PolicyKey, Verdict,
};

pub use backend::{Arrivals, Backend, Brownout, Bursts, Latency, SimError, Window, MAX_LATENCY};
pub use report::Report;

use backend::EPOCH;
use report::Tally;

/// Attempts one simulated call may have in flight: the primary and the
/// highest hedge ceiling.
const SLOTS: usize = 1 + Limits::MAX_HEDGES_CEILING as usize;

/// Makes a fresh budget for each run, so that runs do not share state.
pub type BudgetFactory = Box<dyn Fn() -> Box<dyn Budget>>;

/// What to simulate (see the [module docs](self)).
pub struct Scenario {
    policy: Policy,
    backend: Backend,
    arrivals: Arrivals,
    calls: u64,
    warmup: u64,
    seed: u64,
    max_hedges_ceiling: u32,
    latency_window: Duration,
    retry_budget: Option<BudgetFactory>,
    hedge_budget: Option<BudgetFactory>,
    shared_budget: Option<BudgetFactory>,
}

impl core::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scenario")
            .field("policy", &self.policy)
            .field("backend", &self.backend)
            .field("arrivals", &self.arrivals)
            .field("calls", &self.calls)
            .field("warmup", &self.warmup)
            .field("seed", &self.seed)
            .field("retry_budget", &self.retry_budget.is_some())
            .field("hedge_budget", &self.hedge_budget.is_some())
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// `policy` against `backend`: 10,000 calls arriving as a Poisson
    /// process at 100 per second, no warm-up, seed 0, the default hedge
    /// ceiling (3), 10 s latency windows, no budgets.
    pub fn new(policy: Policy, backend: Backend) -> Self {
        Self {
            policy,
            backend,
            arrivals: Arrivals::Poisson { per_second: 100.0 },
            calls: 10_000,
            warmup: 0,
            seed: 0,
            max_hedges_ceiling: Limits::DEFAULT.max_hedges_ceiling,
            latency_window: Duration::from_secs(10),
            retry_budget: None,
            hedge_budget: None,
            shared_budget: None,
        }
    }

    /// How calls arrive.
    pub fn arrivals(mut self, arrivals: Arrivals) -> Self {
        self.arrivals = arrivals;
        self
    }

    /// Calls to report on (after the warm-up).
    pub fn calls(mut self, calls: u64) -> Self {
        self.calls = calls;
        self
    }

    /// Calls run first and left out of the report (they teach a quantile
    /// trigger the backend's latency).
    pub fn warmup(mut self, calls: u64) -> Self {
        self.warmup = calls;
        self
    }

    /// The seed of every random draw: arrivals, the backend, jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The executor's hedge ceiling (1..=10; default 3).
    pub fn max_hedges_ceiling(mut self, ceiling: u32) -> Self {
        self.max_hedges_ceiling = ceiling;
        self
    }

    /// The window of the latency sketch a quantile trigger reads.
    pub fn latency_window(mut self, window: Duration) -> Self {
        self.latency_window = window;
        self
    }

    /// Gates first attempts and retries with a budget `make` builds for
    /// each run.
    pub fn retry_budget<B: Budget + 'static>(mut self, make: impl Fn() -> B + 'static) -> Self {
        self.retry_budget = Some(Box::new(move || Box::new(make())));
        self
    }

    /// Gates hedges with a budget `make` builds for each run.
    pub fn hedge_budget<B: Budget + 'static>(mut self, make: impl Fn() -> B + 'static) -> Self {
        self.hedge_budget = Some(Box::new(move || Box::new(make())));
        self
    }

    /// Gates every attempt — first attempts, retries and hedges — with one
    /// budget `make` builds for each run, as a policy naming the same
    /// budget for `retry.budget` and `hedge.budget` does. This is how a
    /// ratio budget ([`RetryRatio`](recourse_core::budget::RetryRatio))
    /// bounds hedges: it needs to see the first attempts to know the
    /// request rate. Replaces [`Scenario::retry_budget`] and
    /// [`Scenario::hedge_budget`].
    pub fn budget<B: Budget + 'static>(mut self, make: impl Fn() -> B + 'static) -> Self {
        self.shared_budget = Some(Box::new(move || Box::new(make())));
        self
    }

    /// Runs the scenario.
    ///
    /// # Errors
    ///
    /// A parameter out of range, naming it: a policy value normalization
    /// cannot read (`retry.backoff_multiplier`), a probability outside
    /// 0..=1, a non-positive rate, a hedge ceiling outside 1..=10, a
    /// warm-up or call count of zero calls in all.
    pub fn run(&self) -> Result<Report, SimError> {
        self.backend.check()?;
        self.arrivals.check()?;
        if !(1..=Limits::MAX_HEDGES_CEILING).contains(&self.max_hedges_ceiling) {
            return Err(SimError::new("max_hedges_ceiling", "in 1..=10"));
        }
        if self.calls == 0 {
            return Err(SimError::new("calls", "at least 1"));
        }
        if self.warmup.checked_add(self.calls).is_none() {
            return Err(SimError::new("warmup", "at most u64::MAX - calls"));
        }
        let limits = Limits {
            max_hedges_ceiling: self.max_hedges_ceiling,
        };
        let normalized = self.policy.clone().normalize_with(limits).map_err(|e| {
            SimError::new(
                e.field,
                match e.problem {
                    Problem::UnknownJitter => "one of none, full, equal, decorrelated",
                    Problem::NameTooLong => "a shorter name",
                    Problem::OutOfRange => Problem::allowed(e.field),
                    _ => "a finite number (allowed range 1 to 10)",
                },
            )
        })?;
        let shared = self.shared_budget.as_ref().map(|make| make());
        let retry_budget = self.retry_budget.as_ref().map(|make| make());
        let hedge_budget = self.hedge_budget.as_ref().map(|make| make());
        let (retry_budget, hedge_budget) = match shared.as_deref() {
            Some(b) => (Some(b), Some(b)),
            None => (retry_budget.as_deref(), hedge_budget.as_deref()),
        };
        // The simulated policy names the budgets the scenario gives (so
        // the gate charges them whatever the policy calls them) and no
        // others.
        let mut policy = normalized.policy.clone();
        let budget_name = |given: bool, current: &str, field, default| {
            if !given {
                Ok(recourse_core::policy::Name::new())
            } else if current.is_empty() {
                name(field, default)
            } else {
                name(field, current)
            }
        };
        let names = (
            budget_name(
                retry_budget.is_some(),
                &policy.retry.budget.name,
                "retry.budget.name",
                "retry",
            ),
            budget_name(
                hedge_budget.is_some(),
                &policy.hedge.budget.name,
                "hedge.budget.name",
                "hedge",
            ),
        );
        if let (Ok(retry), Ok(hedge)) = names {
            policy.retry.budget.name = retry;
            policy.hedge.budget.name = hedge;
        }
        let shared = RefCell::new(Shared {
            breaker: policy
                .circuit
                .enabled
                .then(|| CircuitBreaker::new(policy.circuit.clone())),
            sketch: LatencySketch::new(self.latency_window),
            ledger: AmplificationLedger::new(),
            tally: Tally::new(self.warmup, self.calls),
        });
        let mut sim = Sim {
            scenario: self,
            policy: &policy,
            trigger: Trigger::parse(policy.hedge.trigger.as_str()).unwrap_or(Trigger::FixedDelay),
            options: Options {
                max_hedges_ceiling: self.max_hedges_ceiling,
                ..Options::DEFAULT
            },
            retry_budget,
            hedge_budget,
            shared: &shared,
            backend_rng: fastrand::Rng::with_seed(derive_seed(self.seed, u64::MAX)),
            arrival_rng: fastrand::Rng::with_seed(derive_seed(self.seed, u64::MAX - 1)),
            queue: BinaryHeap::new(),
            seq: 0,
            calls: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
        };
        sim.run();
        drop(sim);
        let mut report = shared.into_inner().tally.into_report();
        report.clamped = normalized.changed.to_string();
        Ok(report)
    }
}

/// What happens at an instant.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// The next call arrives.
    Arrival,
    /// An attempt reaches its end at the backend.
    Done {
        slot: u32,
        generation: u32,
        id: u16,
        failed: bool,
    },
    /// A wait a call asked for ends.
    Timer { slot: u32, generation: u32 },
}

/// One call in flight.
struct SimCall<'a> {
    machine: CallMachine<SLOTS>,
    generation: u32,
    index: u64,
    arrival: Instant,
    /// The executor's gate: budgets, breaker and hedge trigger.
    gate: PolicyGate<'a, SimParts<'a>>,
    /// Attempts the call still waits for.
    live: heapless::Vec<u16, SLOTS>,
    next_timer: Option<Instant>,
}

/// What outlives one call: the key's breaker, its latencies, the counts.
struct Shared {
    breaker: Option<CircuitBreaker>,
    sketch: LatencySketch,
    /// The key's amplification ledger (consulted when the policy sets
    /// `amplification.max_amplification`).
    ledger: AmplificationLedger,
    tally: Tally,
}

/// Where one call's [`PolicyGate`] finds its collaborators: the scenario's
/// budgets (by the attempt's kind; the simulated policy names them) and the
/// run's shared breaker and latency sketch, on the virtual clock.
struct SimParts<'a> {
    retry: Option<&'a dyn Budget>,
    hedge: Option<&'a dyn Budget>,
    shared: &'a RefCell<Shared>,
    /// Whether the call is counted (past the warm-up).
    measured: bool,
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
        self.shared.borrow().sketch.quantile(q_permille, now)
    }

    fn record_latency(&mut self, _: PolicyKey<'_>, latency: Duration, now: Instant) {
        self.shared.borrow_mut().sketch.record(latency, now);
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

struct Sim<'a> {
    scenario: &'a Scenario,
    policy: &'a Policy,
    trigger: Trigger,
    options: Options,
    retry_budget: Option<&'a dyn Budget>,
    hedge_budget: Option<&'a dyn Budget>,
    shared: &'a RefCell<Shared>,
    backend_rng: fastrand::Rng,
    arrival_rng: fastrand::Rng,
    queue: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    seq: u64,
    calls: Vec<Option<SimCall<'a>>>,
    free: Vec<u32>,
    /// Attempts at the backend (cancelled ones included until they end).
    in_flight: u32,
}

const KEY: PolicyKey<'static> = PolicyKey::new("sim", "Call");

impl<'a> Sim<'a> {
    fn push(&mut self, at: Instant, ev: Ev) {
        push(&mut self.queue, &mut self.seq, at, ev);
    }

    fn run(&mut self) {
        let total = self.scenario.warmup + self.scenario.calls;
        let mut arrived = 0;
        self.push(EPOCH, Ev::Arrival);
        while let Some(Reverse((now, _, ev))) = self.queue.pop() {
            match ev {
                Ev::Arrival => {
                    self.arrive(arrived, now);
                    arrived += 1;
                    if arrived < total {
                        let gap = self.scenario.arrivals.gap(&mut self.arrival_rng);
                        self.push(now + gap, Ev::Arrival);
                    }
                }
                Ev::Done {
                    slot,
                    generation,
                    id,
                    failed,
                } => {
                    self.in_flight -= 1;
                    let Some(call) = self.call(slot, generation) else {
                        continue;
                    };
                    let Some(i) = call.live.iter().position(|l| *l == id) else {
                        continue;
                    };
                    call.live.swap_remove(i);
                    let outcome = if failed {
                        Outcome::retryable("backend_error")
                    } else {
                        Outcome::SUCCESS
                    };
                    let id = recourse_core::AttemptId(id);
                    call.machine
                        .handle(Event::AttemptFinished { id, outcome, now });
                    self.drive(slot, now);
                }
                Ev::Timer { slot, generation } => {
                    let Some(call) = self.call(slot, generation) else {
                        continue;
                    };
                    if call.next_timer != Some(now) {
                        continue;
                    }
                    call.next_timer = None;
                    call.machine.handle(Event::Tick { now });
                    self.drive(slot, now);
                }
            }
        }
    }

    fn call(&mut self, slot: u32, generation: u32) -> Option<&mut SimCall<'a>> {
        self.calls[slot as usize]
            .as_mut()
            .filter(|c| c.generation == generation)
    }

    fn arrive(&mut self, index: u64, now: Instant) {
        let rng = fastrand::Rng::with_seed(derive_seed(self.scenario.seed, index));
        let mut machine = CallMachine::<SLOTS>::new(self.policy, self.options, rng);
        machine.handle(Event::Start { now });
        let parts = SimParts {
            retry: self.retry_budget,
            hedge: self.hedge_budget,
            shared: self.shared,
            measured: index >= self.scenario.warmup,
        };
        let generation = self.shared.borrow_mut().tally.next_generation();
        let call = SimCall {
            machine,
            generation,
            index,
            arrival: now,
            gate: PolicyGate::new(KEY, self.policy, Some(self.trigger), parts),
            live: heapless::Vec::new(),
            next_timer: None,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.calls[slot as usize] = Some(call);
                slot
            }
            None => {
                self.calls.push(Some(call));
                u32::try_from(self.calls.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.drive(slot, now);
    }

    /// Carries out the call's actions until it waits or finishes. The call
    /// stays in its slot (moving it out and back in copied the whole
    /// machine twice per event).
    fn drive(&mut self, slot: u32, now: Instant) {
        let Self {
            scenario,
            shared,
            backend_rng,
            queue,
            seq,
            calls,
            free,
            in_flight,
            ..
        } = self;
        let Some(call) = calls[slot as usize].as_mut() else {
            return;
        };
        let measured = call.index >= scenario.warmup;
        loop {
            match call.machine.poll(&mut call.gate) {
                Action::Launch(info) => {
                    let at = now - EPOCH;
                    let (latency, failed) = scenario.backend.attempt(at, *in_flight, backend_rng);
                    *in_flight += 1;
                    if measured {
                        shared.borrow_mut().tally.launched(&info);
                    }
                    // The machine never has more than `SLOTS` attempts in
                    // flight.
                    let _ = call.live.push(info.id.0);
                    let ev = Ev::Done {
                        slot,
                        generation: call.generation,
                        id: info.id.0,
                        failed,
                    };
                    push(queue, seq, now + latency, ev);
                }
                Action::Cancel(record) => {
                    if let Some(i) = call.live.iter().position(|l| *l == record.info.id.0) {
                        call.live.swap_remove(i);
                    }
                }
                Action::Record(_) => {}
                Action::Wait { until, .. } => {
                    if call.next_timer != Some(until) {
                        call.next_timer = Some(until);
                        let ev = Ev::Timer {
                            slot,
                            generation: call.generation,
                        };
                        push(queue, seq, until, ev);
                    }
                    break;
                }
                Action::AwaitAttempts => break,
                Action::Finish(verdict) => {
                    if measured {
                        shared
                            .borrow_mut()
                            .tally
                            .finished(now - call.arrival, &verdict);
                    }
                    calls[slot as usize] = None;
                    free.push(slot);
                    return;
                }
            }
        }
    }
}

/// Queues `ev` at `at`, after the events already queued for `at`.
fn push(queue: &mut BinaryHeap<Reverse<(Instant, u64, Ev)>>, seq: &mut u64, at: Instant, ev: Ev) {
    *seq += 1;
    queue.push(Reverse((at, *seq, ev)));
}

impl Tally {
    /// A fresh generation for a call slot, so that events of a finished
    /// call never reach the next call in the same slot.
    fn next_generation(&mut self) -> u32 {
        self.generations = self.generations.wrapping_add(1);
        self.generations
    }
}

/// The verdict's reason code for the outcome counts.
fn outcome_name(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Success(_) => "success",
        Verdict::Failure { cause, .. } => cause.as_str(),
    }
}

#[cfg(test)]
mod tests;
