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
//!
//! [`CallMachine`]: recourse_core::machine::CallMachine
//! [`PolicyGate`]: recourse_core::policy_gate::PolicyGate

mod backend;
pub mod deadline;
mod draws;
mod engine;
pub mod layers;
mod parts;
mod queue;
mod report;
pub mod scenarios;

use core::cell::RefCell;
use core::time::Duration;

use recourse_core::amplification::AmplificationLedger;
use recourse_core::breaker::CircuitBreaker;
use recourse_core::budget::Budget;
use recourse_core::hedge::Trigger;
use recourse_core::policy::{name, Limits, Policy, Problem};
use recourse_core::{LatencySketch, Verdict};

pub use backend::{Arrivals, Backend, Brownout, Bursts, Latency, SimError, Window, MAX_LATENCY};
pub use report::Report;

use parts::Shared;
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
    draw_thread: bool,
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
            .field("draw_thread", &self.draw_thread)
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
            draw_thread: false,
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

    /// Makes the random draws — each attempt's latency and failure, the
    /// gaps between arrivals — on a second thread, ahead of their use,
    /// handed over in blocks in the order they were made: the same report
    /// byte for byte, in less wall-clock time where a second core is free
    /// (on the Tail-at-Scale scenario the draws are about a quarter of the
    /// work; the calls themselves stay on the thread that runs the
    /// scenario); the calls' latencies go to that thread too, in blocks as
    /// they come (the first pass of the report's sort), and are sorted on
    /// two threads at the end. Off by default: everything runs on the
    /// calling thread. Where no thread can be started, the run does that
    /// work itself.
    pub fn draw_thread(mut self, on: bool) -> Self {
        self.draw_thread = on;
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
        self.run_in(false)
    }

    /// [`Scenario::run`] the plainest way (see `engine::Setup::reference`),
    /// to check that the fast way gives the same report.
    #[cfg(test)]
    pub(crate) fn run_reference(&self) -> Result<Report, SimError> {
        self.run_in(true)
    }

    fn run_in(&self, reference: bool) -> Result<Report, SimError> {
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
            ..Limits::DEFAULT
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
        engine::run(engine::Setup {
            scenario: self,
            policy: &policy,
            trigger: Trigger::parse(policy.hedge.trigger.as_str()).unwrap_or(Trigger::FixedDelay),
            options: Limits {
                max_hedges_ceiling: self.max_hedges_ceiling,
                ..Limits::DEFAULT
            },
            retry_budget,
            hedge_budget,
            shared: &shared,
            reference,
        });
        let mut report = shared.into_inner().tally.into_report(self.draw_thread);
        report.clamped = normalized.changed.to_string();
        Ok(report)
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
