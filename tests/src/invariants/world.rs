//! The world: drives one machine through a [`Scenario`] — events in, actions
//! drained after each, the checker watching every step — then brings the
//! call to its end with a well-behaved driver and audits what is left.

use core::hash::{Hash, Hasher};
use core::time::Duration;
use std::collections::hash_map::DefaultHasher;

use recourse_core::time::nanos;
use recourse_core::{
    reason, Action, AttemptId, CallMachine, Event, Instant, Limits, Outcome, Policy,
};

use super::checker::Checker;
use super::coverage::{Coverage, Feature};
use super::gate::{CheckedBudget, WorldGate};
use super::input::{FinaleMode, GateInput, Scenario, Step, TriggerInput, When, Width};

/// The latest instant the world's clock reaches: the end of the clock,
/// [`Instant::MAX`], about 584 years after the epoch.
///
/// At the end of the clock saturating arithmetic makes `now + d == now`:
/// timeouts and backoffs saturate to now, so an attempt is launched and cut
/// at once, a backoff is a sleep that never happened (its record still
/// reports it), and an overall timeout ends the call at its start. The
/// checker allows exactly these; everything else holds there as anywhere.
pub const HORIZON: Instant = Instant::MAX;

/// How much work one run may do, and which known machine defects the world
/// steers around.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RunLimits {
    /// Rounds the closing driver may take. When the policy allows more
    /// attempts than fit, the call is cancelled after this many rounds
    /// instead of being checked for ending on its own.
    pub max_closing_rounds: u32,
    /// Known defects the world does not provoke.
    pub avoid: Avoid,
}

impl RunLimits {
    /// For `cargo test`: a few thousand rounds; the known defects avoided.
    pub const TEST: Self = Self {
        max_closing_rounds: 4_000,
        avoid: Avoid::KNOWN,
    };
    /// For the fuzzer: ten thousand rounds (each is a few microseconds;
    /// more would let the rare raw policies with thousands of attempts
    /// dominate the run time); the known defects avoided.
    pub const FUZZ: Self = Self {
        max_closing_rounds: 10_000,
        avoid: Avoid::KNOWN,
    };
}

/// Known machine defects the world steers around, so that the suites stay
/// useful until they are fixed. Each flag names the defect; set all to
/// `false` ([`Avoid::NOTHING`]) to see whether they still are.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Avoid {
    /// `Event::Start` after a `Tick` with a later time sets the machine's
    /// clock back to the start (`handle` promises it never goes back).
    /// Avoided by starting no earlier than the latest time fed.
    pub start_before_events_seen: bool,
    /// Attempt ids are `u16`: a raw policy allowing more than 65,536
    /// attempts overflows the machine's launch counter (a panic with
    /// overflow checks, reused ids without). Avoided by giving the machine
    /// at most 65,535 / 11 retry groups.
    pub more_attempts_than_ids: bool,
    /// At [`Instant::MAX`], a trigger that asked to be consulted later got
    /// a `Wait` until now (`next_check.max(now + 1 ms)` saturated to now):
    /// a driver would busy-loop. Avoided by keeping the clock 1 ms short of
    /// its end when the scenario's trigger is a scripted one. Fixed: at the
    /// clock's end the machine schedules no later check.
    pub hedge_check_at_clock_end: bool,
}

impl Avoid {
    /// Every defect known today: none. The flags name defects the fuzzer
    /// found and the machine has since fixed (a start before earlier events
    /// now starts at the latest time seen; a call whose attempt ids run out
    /// ends `retries_exhausted`; a hedge check at the clock's end is not
    /// scheduled); they stay so that a defect found next can be steered
    /// around the same way.
    pub const KNOWN: Self = Self::NOTHING;
    /// None: the world feeds whatever the scenario says.
    pub const NOTHING: Self = Self {
        start_before_events_seen: false,
        more_attempts_than_ids: false,
        hedge_check_at_clock_end: false,
    };
}

/// The policy the machine gets: normalized when the scenario says so (a
/// policy normalization rejects is given raw, as a careless caller would).
pub(super) fn machine_policy(s: &Scenario, avoid: Avoid) -> Policy {
    let mut policy = match s.normalize {
        Some(limits) => s
            .policy
            .0
            .clone()
            .normalize_with(limits.0)
            .map_or_else(|_| s.policy.0.clone(), |n| n.policy),
        None => s.policy.0.clone(),
    };
    if avoid.more_attempts_than_ids {
        // At most 11 attempts per retry group (N ≤ 11).
        let most = u32::from(u16::MAX) / 11;
        policy.retry.max_attempts = policy.retry.max_attempts.min(most);
    }
    policy
}

/// Runs `s` at its width; returns what it did and a digest of every action.
pub(super) fn run(s: &Scenario, limits: RunLimits) -> (Coverage, u64) {
    match s.width {
        Width::One => run_n::<1>(s, limits),
        Width::Two => run_n::<2>(s, limits),
        Width::Four => run_n::<4>(s, limits),
        Width::Eleven => run_n::<11>(s, limits),
    }
}

fn run_n<const N: usize>(s: &Scenario, limits: RunLimits) -> (Coverage, u64) {
    let budgets = Budgets::new(&s.gate);
    let mut w = World::<N>::new(s, limits, &budgets);
    w.begin(s, limits);
    for step in &s.steps {
        w.step(step);
    }
    w.end(s, limits)
}

/// The budgets of one call: one for every attempt, or hedges apart.
pub(super) struct Budgets {
    retry: Option<CheckedBudget>,
    hedge: Option<CheckedBudget>,
    hedges_apart: bool,
}

impl Budgets {
    pub(super) fn new(g: &GateInput) -> Self {
        Self {
            retry: CheckedBudget::new(g.budget),
            hedge: g.hedge_budget.and_then(CheckedBudget::new),
            hedges_apart: g.hedge_budget.is_some(),
        }
    }

    /// The same budgets for another call (each with a ledger of its own).
    pub(super) fn share(&self) -> Self {
        Self {
            retry: self.retry.as_ref().map(CheckedBudget::share),
            hedge: self.hedge.as_ref().map(CheckedBudget::share),
            hedges_apart: self.hedges_apart,
        }
    }

    fn each(&self) -> impl Iterator<Item = &CheckedBudget> {
        self.retry.iter().chain(self.hedge.iter())
    }

    /// Once every call sharing them ended: what is wrong with them.
    pub(super) fn audit_idle(&self) -> Result<(), String> {
        self.each().try_for_each(CheckedBudget::audit_idle)
    }
}

impl<'s, 'b, const N: usize> World<'s, 'b, N> {
    /// A world for `s`, its gate charging `budgets`.
    pub(super) fn new(s: &'s Scenario, limits: RunLimits, budgets: &'b Budgets) -> Self {
        let policy = machine_policy(s, limits.avoid);
        let options: Limits = s.options.0;
        let mut w = World {
            m: CallMachine::<N>::new(&policy, options, fastrand::Rng::with_seed(s.seed)),
            gate: WorldGate::new(
                &s.gate,
                budgets.retry.as_ref(),
                budgets.hedge.as_ref(),
                budgets.hedges_apart,
            ),
            checker: Checker::new(s, &policy, options, N, s.seed),
            budgets,
            rest: Action::AwaitAttempts,
            digest: DefaultHasher::new(),
            audited: false,
            horizon: if limits.avoid.hedge_check_at_clock_end
                && matches!(s.gate.trigger, TriggerInput::Chaos(_))
            {
                HORIZON - Duration::from_millis(1)
            } else {
                HORIZON
            },
        };
        w.checker.set_trigger(&s.gate.trigger);
        if s.normalize.is_none() {
            w.checker.seen.mark(Feature::RawPolicy);
        }
        w
    }

    /// Whatever a careless driver feeds before `Start`, then `Start`.
    pub(super) fn begin(&mut self, s: &Scenario, limits: RunLimits) {
        // Before Start: idle, whatever a careless driver feeds.
        self.drain();
        for step in &s.before_start {
            self.step(step);
        }
        let mut start = Instant::ZERO + s.start.0;
        if limits.avoid.start_before_events_seen {
            start = start.max(self.checker.now);
        }
        self.feed(Event::Start { now: start });
    }

    /// Brings the call to its end and checks what is left; what it covered
    /// and a digest of every action.
    pub(super) fn end(mut self, s: &Scenario, limits: RunLimits) -> (Coverage, u64) {
        if self.checker.finished.is_some() {
            self.checker.seen.mark(Feature::EndedInSteps);
        }
        self.close(s, limits);
        // Once finished, the machine answers the same whatever comes.
        let now = self.checker.now;
        self.feed(Event::Tick {
            now: now + Duration::from_millis(1),
        });
        self.feed(Event::AttemptFinished {
            id: AttemptId(0),
            outcome: Outcome::SUCCESS,
            now,
        });
        self.feed(Event::Cancel { now });
        self.feed(Event::Start { now });
        self.checker.check_end();
        for b in self.budgets.each() {
            let (reserved, denied) = b.counts();
            if reserved > 0 {
                self.checker.seen.mark(Feature::BudgetReserved);
            }
            if denied > 0 {
                self.checker.seen.mark(Feature::BudgetDenied);
            }
        }
        let coverage = Coverage::one_run(&self.checker.seen.0, self.checker.launched());
        (coverage, self.digest.finish())
    }
}

pub(super) struct World<'s, 'b, const N: usize> {
    m: CallMachine<N>,
    gate: WorldGate<'b>,
    checker: Checker<'s>,
    budgets: &'b Budgets,
    /// The last action that asked the driver to wait (or finished).
    rest: Action,
    digest: DefaultHasher,
    audited: bool,
    /// The latest instant fed: [`HORIZON`], or 1 ms short of it.
    horizon: Instant,
}

impl<const N: usize> World<'_, '_, N> {
    /// Feeds `event` (at the horizon at the latest) and drains the
    /// machine.
    fn feed(&mut self, event: Event) {
        let event = match event {
            Event::Start { now } => Event::Start {
                now: now.min(self.horizon),
            },
            Event::Tick { now } => Event::Tick {
                now: now.min(self.horizon),
            },
            Event::Cancel { now } => Event::Cancel {
                now: now.min(self.horizon),
            },
            Event::AttemptFinished { id, outcome, now } => Event::AttemptFinished {
                id,
                outcome,
                now: now.min(self.horizon),
            },
        };
        self.checker.on_event(&event);
        self.m.handle(event);
        self.checker.sync(&self.m);
        self.drain();
    }

    /// Polls until the machine waits or finishes, checking every action.
    fn drain(&mut self) {
        // A launch and a cancel per slot, a record per slot, a refusal and
        // the finish: anything longer is the machine spinning.
        // At the clock's end a timeout saturates to now: every attempt is
        // launched and cut at once, so the call runs through all of them
        // (ids run out at 65,536) in one drain.
        let limit = 4 * N
            + 16
            + if self.checker.now == Instant::MAX {
                4 * usize::try_from(self.checker.attempt_bound().min(1 << 17)).unwrap_or(0)
            } else {
                0
            };
        for _ in 0..limit {
            let action = self.m.poll(&mut self.gate);
            let calls = core::mem::take(&mut self.gate.log);
            self.checker.on_poll(action, &calls);
            self.checker.sync(&self.m);
            hash_action(&action, &mut self.digest);
            if let Action::Finish(_) = action {
                self.audit();
            }
            if matches!(
                action,
                Action::Wait { .. } | Action::AwaitAttempts | Action::Finish(_)
            ) {
                self.rest = action;
                return;
            }
        }
        self.checker.fail(format_args!(
            "{limit} polls in a row without a Wait, AwaitAttempts or Finish: the machine spins"
        ));
    }

    /// Once the call finished: every reservation came back exactly once.
    fn audit(&mut self) {
        if self.audited {
            return;
        }
        self.audited = true;
        if let Err(e) = self.budgets.each().try_for_each(CheckedBudget::audit) {
            self.checker.fail(format_args!("{e}"));
        }
    }

    /// The instant `when` stands for.
    fn at(&self, when: When) -> Instant {
        let now = self.checker.now;
        let until = match self.rest {
            Action::Wait { until, .. } => Some(until),
            _ => None,
        };
        match when {
            When::Now => now,
            When::Toward(k) => match until {
                Some(u) => {
                    let span = u128::from(nanos(u - now)) * u128::from(k) / 256;
                    now + Duration::from_nanos(u64::try_from(span).unwrap_or(u64::MAX))
                }
                None => now + Duration::from_millis(k.into()),
            },
            When::Late(d) => until.unwrap_or(now) + d.0,
            When::After(d) => now + d.0,
        }
    }

    pub(super) fn step(&mut self, step: &Step) {
        match *step {
            Step::Finish {
                pick,
                outcome,
                when,
            } => {
                let now = self.at(when);
                if self.checker.in_flight.is_empty() {
                    self.feed(Event::Tick { now });
                } else {
                    let ids = &self.checker.in_flight;
                    let id = ids[usize::from(pick) % ids.len()];
                    self.feed(Event::AttemptFinished {
                        id: AttemptId(id),
                        outcome: outcome.0,
                        now,
                    });
                }
            }
            Step::FinishId { id, outcome, when } => {
                let now = self.at(when);
                self.feed(Event::AttemptFinished {
                    id: AttemptId(id),
                    outcome: outcome.0,
                    now,
                });
            }
            Step::Tick(when) => {
                let now = self.at(when);
                self.feed(Event::Tick { now });
            }
            Step::Backwards(d) => {
                let now = self.checker.now - d.0;
                self.feed(Event::Tick { now });
            }
            Step::Cancel(when) => {
                let now = self.at(when);
                self.feed(Event::Cancel { now });
            }
            Step::Restart(when) => {
                let now = self.at(when);
                self.feed(Event::Start { now });
            }
            Step::SetOptions(o) => {
                self.checker.note("set_options");
                self.m.set_limits(o.0);
                self.checker.set_options(o.0);
                self.checker.sync(&self.m);
                self.drain();
            }
            Step::Run { rounds, seed } => {
                self.checker.note("a well-behaved driver takes over");
                let mut rng = fastrand::Rng::with_seed(seed.into());
                for _ in 0..rounds {
                    if !self.round(&mut rng, FinaleMode::Mixed, false) {
                        break;
                    }
                }
                self.checker.note("the script resumes");
            }
        }
    }

    /// One round of a well-behaved driver: complete an attempt in flight
    /// before the pending wait ends (always when `eager`, else at random),
    /// or sleep until it ends. False when there is nothing left to do.
    fn round(&mut self, rng: &mut fastrand::Rng, mode: FinaleMode, eager: bool) -> bool {
        let now = self.checker.now;
        let until = match self.rest {
            Action::Finish(_) => return false,
            Action::Wait { until, .. } => Some(until),
            _ => None,
        };
        let complete = !self.checker.in_flight.is_empty()
            && mode != FinaleMode::Hang
            && (eager || until.is_none() || rng.bool());
        if !complete {
            match until {
                Some(until) if until <= self.horizon => {
                    self.feed(Event::Tick { now: until });
                    return true;
                }
                // Attempts hang and no timer is pending (or not before the
                // horizon): nothing more will happen.
                _ => return false,
            }
        }
        let ids = &self.checker.in_flight;
        let id = ids[rng.usize(..ids.len())];
        let at = match until {
            Some(u) => now + Duration::from_nanos(rng.u64(0..=nanos(u - now))),
            None => now + Duration::from_millis(rng.u64(0..50)),
        };
        let outcome = match mode {
            FinaleMode::AllFail => Outcome::retryable(reason::RETRYABLE_ERROR),
            _ => match rng.u8(0..20) {
                0..=4 => Outcome::SUCCESS,
                5..=13 => Outcome::retryable(reason::RETRYABLE_ERROR),
                14..=15 => Outcome::retryable(reason::RETRYABLE_ERROR)
                    .with_retry_after(Duration::from_millis(rng.u64(0..100))),
                16..=17 => Outcome::non_retryable(reason::NON_RETRYABLE_ERROR),
                _ => Outcome::abort(reason::ABORT),
            },
        };
        self.feed(Event::AttemptFinished {
            id: AttemptId(id),
            outcome,
            now: at,
        });
        true
    }

    /// Brings the call to its end: a driver that completes every attempt
    /// must see it finish within the policy's bound on attempts; one whose
    /// attempts hang, or a policy with too many attempts to run, gets a
    /// cancellation, which must end the call at once.
    fn close(&mut self, s: &Scenario, limits: RunLimits) {
        self.checker.note("closing: a well-behaved driver");
        let mut rng = fastrand::Rng::with_seed(s.finale.seed.into());
        // Each round completes an attempt or ends a backoff (Mixed,
        // AllFail); hedges are the only attempts a round can add.
        let bound = self
            .checker
            .attempt_bound()
            .saturating_add(u64::from(self.checker.max_attempts()))
            .saturating_add(8);
        let rounds = bound.min(u64::from(limits.max_closing_rounds));
        let mut stuck = false;
        for _ in 0..rounds {
            if !self.round(&mut rng, s.finale.mode, true) {
                stuck = true;
                break;
            }
        }
        if self.checker.finished.is_some() {
            return;
        }
        if !stuck && s.finale.mode != FinaleMode::Hang && rounds == bound {
            self.checker.fail(format_args!(
                "the call did not end after {bound} rounds of a driver that completes an \
                 attempt whenever one is in flight"
            ));
        }
        self.checker.note("closing: the caller cancels");
        let now = self.checker.now;
        self.feed(Event::Cancel { now });
        if self.checker.finished.is_none() {
            self.checker
                .fail(format_args!("a cancellation did not end the call at once"));
        }
    }
}

/// Folds `a` into a digest, so that two runs can be compared cheaply.
fn hash_action(a: &Action, h: &mut DefaultHasher) {
    match a {
        Action::Launch(info) => (0u8, info).hash(h),
        Action::Cancel(r) => (1u8, r).hash(h),
        Action::Record(r) => (2u8, r).hash(h),
        Action::Wait { until, reason } => (3u8, until, reason).hash(h),
        Action::AwaitAttempts => 4u8.hash(h),
        Action::Finish(v) => (5u8, v).hash(h),
    }
}
