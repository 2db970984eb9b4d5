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
//! - Circuit-breaker sections of the policy are not simulated.

mod backend;
mod report;

use core::cmp::Reverse;
use core::time::Duration;
use std::collections::BinaryHeap;

use recourse_core::budget::{Budget, BudgetGate};
use recourse_core::driver::derive_seed;
use recourse_core::gate::{Admission, AdmitRequest, Gate};
use recourse_core::hedge::{HedgeDecision, HedgeState, Trigger};
use recourse_core::machine::{Action, CallMachine, Event, Options};
use recourse_core::policy::{Limits, Policy, Problem};
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
        let mut sim = Sim {
            scenario: self,
            policy: &normalized.policy,
            trigger: Trigger::parse(normalized.policy.hedge.trigger.as_str())
                .unwrap_or(Trigger::FixedDelay),
            options: Options {
                max_hedges_ceiling: self.max_hedges_ceiling,
                ..Options::DEFAULT
            },
            retry_budget,
            hedge_budget,
            sketch: LatencySketch::new(self.latency_window),
            backend_rng: fastrand::Rng::with_seed(derive_seed(self.seed, u64::MAX)),
            arrival_rng: fastrand::Rng::with_seed(derive_seed(self.seed, u64::MAX - 1)),
            queue: BinaryHeap::new(),
            seq: 0,
            calls: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            tally: Tally::new(self.warmup, self.calls),
        };
        sim.run();
        let mut report = sim.tally.into_report();
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
    budgets: CallBudgets<'a>,
    /// Attempts the call still waits for.
    live: heapless::Vec<u16, SLOTS>,
    next_timer: Option<Instant>,
}

/// A call's budget gates: retries (and first attempts) and hedges.
struct CallBudgets<'a> {
    retry: Option<BudgetGate<'a, dyn Budget + 'a>>,
    hedge: Option<BudgetGate<'a, dyn Budget + 'a>>,
}

/// The gate one call's machine sees at one step.
struct SimGate<'s, 'a> {
    budgets: &'s mut CallBudgets<'a>,
    sketch: &'s mut LatencySketch,
    trigger: Trigger,
    tally: &'s mut Tally,
    measured: bool,
}

impl Gate for SimGate<'_, '_> {
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        let kind = request.attempt.kind();
        let gate = match kind {
            AttemptKind::Hedge => self.budgets.hedge.as_mut(),
            AttemptKind::Initial | AttemptKind::Retry => self.budgets.retry.as_mut(),
        };
        let admission = gate.map_or(Admission::NO_BUDGET, |g| g.admit(request));
        if !admission.allowed && self.measured {
            self.tally.denied(kind);
        }
        admission
    }

    fn attempt_ended(&mut self, record: &AttemptRecord) {
        if !record.cancelled {
            self.sketch.record(record.duration(), record.end);
        }
        let gate = match record.info.kind() {
            AttemptKind::Hedge => self.budgets.hedge.as_mut(),
            AttemptKind::Initial | AttemptKind::Retry => self.budgets.retry.as_mut(),
        };
        if let Some(g) = gate {
            g.attempt_ended(record);
        }
    }

    fn hedge(&mut self, state: &HedgeState) -> HedgeDecision {
        let quantile = self
            .trigger
            .quantile()
            .and_then(|q| self.sketch.quantile(u32::from(q), state.now));
        self.trigger.decide(state, quantile)
    }
}

struct Sim<'a> {
    scenario: &'a Scenario,
    policy: &'a Policy,
    trigger: Trigger,
    options: Options,
    retry_budget: Option<&'a dyn Budget>,
    hedge_budget: Option<&'a dyn Budget>,
    sketch: LatencySketch,
    backend_rng: fastrand::Rng,
    arrival_rng: fastrand::Rng,
    queue: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    seq: u64,
    calls: Vec<Option<SimCall<'a>>>,
    free: Vec<u32>,
    /// Attempts at the backend (cancelled ones included until they end).
    in_flight: u32,
    tally: Tally,
}

const KEY: PolicyKey<'static> = PolicyKey::new("sim", "Call");

impl<'a> Sim<'a> {
    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
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
        let gate = |budget: Option<&'a dyn Budget>, name: &'a str, cost: u32| {
            budget.map(|b| BudgetGate::new(b, KEY, name, cost))
        };
        let p = self.policy;
        let call = SimCall {
            machine,
            generation: 0,
            index,
            arrival: now,
            budgets: CallBudgets {
                retry: gate(
                    self.retry_budget,
                    p.retry.budget.name.as_str(),
                    p.retry.budget.cost,
                ),
                hedge: gate(
                    self.hedge_budget,
                    p.hedge.budget.name.as_str(),
                    p.hedge.budget.cost,
                ),
            },
            live: heapless::Vec::new(),
            next_timer: None,
        };
        let call = SimCall {
            generation: self.tally.next_generation(),
            ..call
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

    /// Carries out the call's actions until it waits or finishes.
    fn drive(&mut self, slot: u32, now: Instant) {
        let Some(mut call) = self.calls[slot as usize].take() else {
            return;
        };
        let measured = call.index >= self.scenario.warmup;
        loop {
            let mut gate = SimGate {
                budgets: &mut call.budgets,
                sketch: &mut self.sketch,
                trigger: self.trigger,
                tally: &mut self.tally,
                measured,
            };
            match call.machine.poll(&mut gate) {
                Action::Launch(info) => {
                    let at = now - EPOCH;
                    let (latency, failed) =
                        self.scenario
                            .backend
                            .attempt(at, self.in_flight, &mut self.backend_rng);
                    self.in_flight += 1;
                    if measured {
                        self.tally.launched(&info);
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
                    self.push(now + latency, ev);
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
                        self.push(until, ev);
                    }
                    break;
                }
                Action::AwaitAttempts => break,
                Action::Finish(verdict) => {
                    if measured {
                        self.tally.finished(now - call.arrival, &verdict);
                    }
                    self.free.push(slot);
                    return;
                }
            }
        }
        self.calls[slot as usize] = Some(call);
    }
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
