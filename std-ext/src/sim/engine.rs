//! The simulator's loop: events in virtual-time order, each call's
//! machine fed in place in its slot.
//!
//! What keeps a simulated call cheap (`bash benches/sim_speed.sh` measures
//! the Tail-at-Scale scenario; its section of BENCHMARKS.md says where the
//! instructions go):
//!
//! - the event queue ([`super::queue`]) orders events by one `u128` key on
//!   a timing wheel of millisecond spans (a binary heap beside it for
//!   events past its reach), and the next arrival waits outside it: one
//!   search of the wheel pops the first event or says the arrival comes
//!   first; each slot's list is in descending order (a pop takes its last
//!   entry, no search of it) and an entry is 24 bytes (the key's two words
//!   and the event packed in one, [`Ev`]: the call an event is for is told
//!   by its sequence number, [`SimCall::first_seq`], not by a generation
//!   carried in the event);
//! - a call, its machine and its gate are one [`Slot`], found once per
//!   event; the free slots are a stack linked through their calls;
//! - each event is fed to the call's machine with
//!   [`CallMachine::feed`], which carries out the launches and cancels
//!   through the simulator's sink ([`Carry`]) as it decides them, until
//!   the call waits or finishes: no [`Action`] copied out per step, no
//!   attempt's record kept between a `handle` and the next `poll`, the
//!   launch of a primary inlined into the machine's loop (the same gate
//!   calls and actions in the same order as `handle` then `poll`);
//! - the queue keeps its first event's key, so that the check whether an
//!   event comes before the next arrival is one comparison;
//! - a call's timer waits in the call ([`Parked`]) while one of its
//!   attempts ends first: most calls end before their hedge check or their
//!   deadline, and their timer never enters the queue;
//! - a call's machine, gate and list of live attempts have room for the
//!   attempts the policy can have in flight (the primary and its hedges),
//!   not for the highest hedge ceiling: `N` is 1, 2, 4 or [`SLOTS`], chosen
//!   per run;
//! - a call's machine is the finished call's in its slot, restarted in
//!   place as the one made from the policy once per run
//!   ([`CallMachine::restart`]: the settings kept, the per-call state
//!   reset; a copy of the whole fresh machine cost 170 instructions
//!   a call more, and a machine made per call and moved into the slot was
//!   copied three times); a finished call's gate is reused when no breaker
//!   is on (it holds nothing once its call has ended); its random source
//!   is seeded per call only when the plan draws from it
//!   ([`CallPlan::draws`]: only a retry's backoff does);
//! - the hedge trigger's quantile comes from the latency sketch's tracked
//!   cursor ([`LatencySketch::quantile_tracked`]: the same answer as a
//!   scan, usually without one);
//! - the backend's latency distribution is read once per run
//!   ([`Latency::draw`](super::backend::Latency::draw)), and draws become
//!   nanoseconds without a `Duration` in between (the same rounding); a
//!   backend with one error rate throughout decides a failure without the
//!   time of the launch;
//! - the backend's draws and the arrival gaps are made
//!   [`AHEAD`](draws::AHEAD) at a time, before they are needed
//!   ([`Ahead`]): one at a time, each draw's logarithm, cosine and
//!   exponential waited on each other and on nothing else, and the
//!   processor sat idle; in a batch, they overlap (about 13 % of the CPU
//!   time of a run, with the same instructions);
//! - with [`Scenario::draw_thread`](super::Scenario::draw_thread), those
//!   draws are made on a helper thread instead and handed over in blocks
//!   ([`draws`]: the same numbers in the same order, since no draw depends
//!   on what the calls do); the calls' latencies go to that thread in
//!   blocks as they come, and it puts them in buckets by their top digit
//!   (the report's sort's first pass) while the run goes on; the buckets
//!   are sorted on two threads at the end: the simulating thread keeps
//!   only the calls (about two thirds of its CPU time on one thread);
//! - the run's tally is the engine's for the run, out of the shared
//!   `RefCell` (the gates count the breaker's transitions and the budgets'
//!   denials in the shared one, added to it at the end): no borrow per
//!   finished call (17 instructions a simulated call with the layout the
//!   loop then compiled to);
//! - the report counts successes apart from the map of failure causes,
//!   keeps latencies in 32 bits while they fit, and sorts them with a
//!   radix sort by their top digit first, each bucket then in the cache.
//!
//! None of these changes a result: `N` is never below what the policy can
//! use (the machine's hedges per group are the same), the queue pops in the
//! same order as a `BinaryHeap` of `(instant, sequence number)` did, a
//! parked timer keeps the key it would have had in the queue, and the
//! draws are the same numbers (tests check them against
//! [`Latency::sample`](super::Latency::sample) and
//! `Duration::try_from_secs_f64`). The reference run
//! ([`Setup::reference`]: room for ten hedges, every timer queued when it
//! is set) gives the same reports, which a test checks, and so do the
//! golden tables.
//!
//! What the rest costs (`bash benches/sim_speed.sh`, about 1,320
//! instructions per call on the Tail-at-Scale scenario on one thread, at
//! three to four a cycle; 1,512 before issue 16's fourth round, 1,384
//! before its sixth): the call
//! machine with the gate and the latency sketch about 400 (a third), the
//! random draws about 450 (libm's logarithms, cosine and exponential,
//! fastrand, the conversion to nanoseconds), the loop with the queue, the
//! launches' and ends' bookkeeping and the tally about 420, the report's
//! sort about 70. With the draw thread, the simulating thread runs about
//! 805 instructions per call (1,000, then 872 before), half of them the
//! machine and the gate (`core`), which this module drives but does not
//! decide.
//!
//! [`LatencySketch::quantile_tracked`]: recourse_core::LatencySketch::quantile_tracked
//! [`CallMachine::restart`]: recourse_core::machine::CallMachine::restart

use core::cell::RefCell;
use std::sync::mpsc;

use recourse_core::budget::Budget;
use recourse_core::driver::derive_seed;
use recourse_core::hedge::Trigger;
use recourse_core::machine::{Action, ActionSink, CallMachine, CallPlan, Event, Limits};
use recourse_core::policy::Policy;
use recourse_core::policy_gate::{Inline, PolicyGate};
use recourse_core::{AttemptInfo, AttemptRecord, Instant, Outcome, PolicyKey};

use super::backend::{AttemptDraws, Draw, EPOCH};
use super::draws::{self, Ahead, Streams};
use super::parts::{Shared, SimParts};
use super::queue::{self, Key, Queue};
use super::report::{Launched, Tally};
use super::{Scenario, SLOTS};

/// What one run needs, set up by [`Scenario::run`](super::Scenario::run).
pub(super) struct Setup<'a> {
    pub(super) scenario: &'a Scenario,
    /// The simulated policy (normalized, naming the scenario's budgets).
    pub(super) policy: &'a Policy,
    pub(super) trigger: Trigger,
    pub(super) options: Limits,
    pub(super) retry_budget: Option<&'a dyn Budget>,
    pub(super) hedge_budget: Option<&'a dyn Budget>,
    pub(super) shared: &'a RefCell<Shared>,
    /// Runs the plainest way instead: every call with room for the highest
    /// hedge ceiling, every timer queued when it is set. The tests check
    /// that it gives the same reports.
    pub(super) reference: bool,
}

/// Runs every call of the scenario.
pub(super) fn run(setup: Setup<'_>) {
    if !setup.scenario.draw_thread {
        return run_with(setup, Ahead::local(), Ahead::local());
    }
    let seed = setup.scenario.seed;
    let streams = Streams {
        draw: setup.scenario.backend.latency.draw(),
        backend_rng: backend_rng(seed),
        arrivals: setup.scenario.arrivals,
        arrival_rng: arrival_rng(seed),
    };
    // The calls' latencies go to the helper thread in blocks as they come,
    // for the report's sort's first pass.
    let shared = setup.shared;
    let (latencies, blocks) = mpsc::channel();
    shared.borrow_mut().tally.stream_to(latencies);
    let mut setup = Some(setup);
    let helped = draws::with_helper(streams, blocks, |attempts, gaps| {
        if let Some(setup) = setup.take() {
            run_with(setup, attempts, gaps);
        }
        shared.borrow_mut().tally.end_stream();
    });
    match helped {
        Some(((), buckets)) => shared.borrow_mut().tally.streamed(buckets),
        None => {
            // No thread to be had: the latencies stay in the tally, and
            // the draws are made here (unless the run above did run).
            shared.borrow_mut().tally.end_stream();
            if let Some(setup) = setup {
                run_with(setup, Ahead::local(), Ahead::local());
            }
        }
    }
}

/// The backend's random source for a run with `seed`.
fn backend_rng(seed: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(derive_seed(seed, u64::MAX))
}

/// The arrivals' random source for a run with `seed`.
fn arrival_rng(seed: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(derive_seed(seed, u64::MAX - 1))
}

/// Runs every call with the draws from `attempts` and `gaps`.
fn run_with(setup: Setup<'_>, attempts: Ahead<AttemptDraws>, gaps: Ahead<u64>) {
    let plan = CallPlan::new(setup.policy);
    let hedges = plan.hedges_within(setup.options, SLOTS);
    if setup.reference {
        return Sim::<SLOTS>::new(setup, plan, attempts, gaps).run();
    }
    match hedges {
        0 => Sim::<1>::new(setup, plan, attempts, gaps).run(),
        1 => Sim::<2>::new(setup, plan, attempts, gaps).run(),
        2 | 3 => Sim::<4>::new(setup, plan, attempts, gaps).run(),
        _ => Sim::<SLOTS>::new(setup, plan, attempts, gaps).run(),
    }
}

/// What happens at an instant (the next arrival is kept outside the
/// queue), packed in a word ([`Ev::get`] unpacks it): the call's slot, the
/// attempt's id and whether it failed, or a timer. A queue entry is then 24
/// bytes (its key's two words and this one) where the enum made it 32, to
/// write at each push and read at each pop. Which call of the slot an event
/// is for is in its key: the call's events were all queued after it
/// arrived ([`SimCall::first_seq`]).
#[derive(Copy, Clone, Debug)]
struct Ev(u64);

/// An [`Ev`] unpacked.
#[derive(Copy, Clone, Debug)]
enum What {
    /// An attempt reaches its end at the backend.
    Done { slot: u32, id: u16, failed: bool },
    /// A wait a call asked for ends.
    Timer { slot: u32 },
}

impl Ev {
    const TIMER: u64 = 1 << 63;
    const FAILED: u64 = 1 << 62;

    #[inline(always)]
    fn done(slot: u32, id: u16, failed: bool) -> Self {
        let failed = if failed { Self::FAILED } else { 0 };
        Self(u64::from(slot) | (u64::from(id) << 32) | failed)
    }

    #[inline(always)]
    fn timer(slot: u32) -> Self {
        Self(Self::TIMER | u64::from(slot))
    }

    #[inline(always)]
    fn get(self) -> What {
        // The low half is the slot, the next 16 bits the attempt's id.
        let slot = self.0 as u32;
        if self.0 & Self::TIMER != 0 {
            What::Timer { slot }
        } else {
            What::Done {
                slot,
                id: (self.0 >> 32) as u16,
                failed: self.0 & Self::FAILED != 0,
            }
        }
    }
}

/// The reservations a call's gate holds: one per attempt in flight.
type Held<'a, const N: usize> = Inline<&'a dyn Budget, N>;

/// One call in flight, with room for `N` attempts at once.
struct SimCall<const N: usize> {
    /// Whether the call runs (the slot is free otherwise).
    alive: bool,
    /// The queue's last sequence number when the call arrived: the call's
    /// events have higher ones, the events of the slot's earlier calls
    /// (stale once their call ended) not higher ones.
    first_seq: u64,
    /// Whether the call is counted (past the warm-up).
    measured: bool,
    arrival: Instant,
    /// Attempts the call still waits for, with the keys of their ends.
    live: heapless::Vec<(u16, Key), N>,
    next_timer: Option<Instant>,
    /// A timer not in the queue yet, and the key of the end of one of the
    /// call's attempts that comes before it (see [`Parked`]).
    parked: Option<Parked>,
    /// Once the call has ended: the slot freed before this one
    /// ([`Sim::free`]).
    next_free: u32,
}

/// No slot: the end of the free slots' stack.
const NO_SLOT: u32 = u32::MAX;

/// A call's slot: the call, and what decides it, its machine and its gate
/// (fields apart, so that the sink the machine feeds holds the gate and the
/// call). One list of slots, not a list of calls beside a list of their
/// deciders: one bounds check and one address per event, not two.
struct Slot<'a, const N: usize> {
    call: SimCall<N>,
    machine: CallMachine<N>,
    /// The executor's gate: budgets, breaker and hedge trigger.
    gate: PolicyGate<'a, SimParts<'a>, Held<'a, N>>,
}

/// A call's timer kept out of the queue while one of the call's attempts
/// ends before it (its `guard`): most calls end before their hedge check or
/// their deadline, and their timer never needs to be queued, popped and
/// found stale. The timer keeps the key it was given when it was set, and
/// goes into the queue (or behind another attempt's end) when its guard's
/// end is popped, so the order of events is the same as if it had been
/// queued at once; when the call ends first, it goes with the call (in the
/// queue it would have been a stale event).
#[derive(Copy, Clone, Debug)]
struct Parked {
    timer: Key,
    /// The guard's attempt id (its end is the call's only event with it).
    guard: u16,
}

struct Sim<'a, const N: usize> {
    policy: &'a Policy,
    trigger: Trigger,
    retry_budget: Option<&'a dyn Budget>,
    hedge_budget: Option<&'a dyn Budget>,
    arrival_rng: fastrand::Rng,
    /// The gaps between arrivals in nanoseconds, drawn ahead.
    gaps: Ahead<u64>,
    /// A machine as [`CallMachine::with_plan`] makes it, but for its
    /// random source: each call's starts as a copy.
    fresh: CallMachine<N>,
    /// Call slots; a finished call's slot is reused by a later call.
    slots: Vec<Slot<'a, N>>,
    /// The last slot freed, [`NO_SLOT`] when none is free: the free slots
    /// are a stack linked through their calls ([`SimCall::next_free`]), the
    /// same order as a list of them pushed and popped, without the list's
    /// bounds and capacity.
    free: u32,
    /// Whether a finished call's gate is reused (no breaker: see
    /// [`Sim::arrive`]).
    reuse_gates: bool,
    /// Whether a call's machine draws from its random source
    /// ([`CallPlan::draws`]): if not, its source is not seeded per call.
    draws: bool,
    /// What a call's launches reach.
    w: World<'a>,
}

/// What a call's launches and cancels reach (see [`Carry`]).
struct World<'a> {
    scenario: &'a Scenario,
    shared: &'a RefCell<Shared>,
    /// The backend's latency, read once.
    draw: Draw,
    backend_rng: fastrand::Rng,
    /// The backend's draws, made ahead.
    attempts: Ahead<AttemptDraws>,
    queue: Queue<Ev>,
    /// Attempts at the backend (cancelled ones included until they end).
    in_flight: u32,
    /// Whether timers may be parked (not in the reference run).
    park: bool,
    /// The backend's error rate when it is the same throughout (no
    /// outage, burst or brownout): an attempt's failure is then its draw
    /// against it, read once per run.
    steady_error_rate: Option<f64>,
    /// The measured calls' launches, counted here (no borrow of the
    /// shared tally per launch) and added to the tally at the end.
    launched: Launched,
    /// The run's tally, taken out of the shared one for the run (no borrow
    /// of it per call: about 5 instructions a simulated call): the shared
    /// one counts only what the gates count (the breaker, the budgets'
    /// denials), added to this one at the end.
    tally: Tally,
}

const KEY: PolicyKey<'static> = PolicyKey::new("sim", "Call");

/// Parks `timer` behind the end of one of `call`'s live attempts that comes
/// before it, or queues it when none does or a timer is parked already
/// (one at a time: a second one is rare, the call's wait having changed
/// while an attempt was out).
// Inlined into its two callers (out of line, its call and arguments
// cost more than it does).
#[inline(always)]
fn unpark(
    live: &[(u16, Key)],
    parked: &mut Option<Parked>,
    timer: Key,
    ev: Ev,
    queue: &mut Queue<Ev>,
    park: bool,
) {
    let guard = live.iter().find(|l| l.1 < timer);
    match guard {
        Some(&(guard, _)) if park && parked.is_none() => {
            *parked = Some(Parked { timer, guard });
        }
        _ => queue.push_key(timer, ev),
    }
}

/// Where a call's machine carries out its launches and cancels as it
/// decides them ([`CallMachine::feed`]): the backend's draws, the queue,
/// the call's list of live attempts and the tally.
struct Carry<'s, 'a, const N: usize> {
    gate: &'s mut PolicyGate<'a, SimParts<'a>, Held<'a, N>>,
    call: &'s mut SimCall<N>,
    slot: u32,
    now: Instant,
    w: &'s mut World<'a>,
}

impl<'a, const N: usize> ActionSink for Carry<'_, 'a, N> {
    type Gate = PolicyGate<'a, SimParts<'a>, Held<'a, N>>;

    #[inline(always)]
    fn gate(&mut self) -> &mut Self::Gate {
        self.gate
    }

    #[inline(always)]
    fn launch(&mut self, info: AttemptInfo) {
        let (now, w) = (self.now, &mut *self.w);
        let at = now.as_nanos().saturating_sub(EPOCH.as_nanos());
        let (draw, backend_rng) = (&w.draw, &mut w.backend_rng);
        let draws = w.attempts.next(|| AttemptDraws::draw(draw, backend_rng));
        let (latency, failed) = match w.steady_error_rate {
            Some(rate) => draws.steady(rate),
            None => w.scenario.backend.attempt_from(draws, at, w.in_flight),
        };
        w.in_flight += 1;
        if self.call.measured {
            w.launched.count(&info);
        }
        let ev = Ev::done(self.slot, info.id.0, failed);
        let end = w.queue.push(
            Instant::from_nanos(now.as_nanos().saturating_add(latency)),
            ev,
        );
        // The machine never has more than `N` attempts in flight.
        let _ = self.call.live.push((info.id.0, end));
    }

    #[inline(always)]
    fn cancel(&mut self, record: &AttemptRecord) {
        let live = &mut self.call.live;
        if let Some(i) = live.iter().position(|l| l.0 == record.info.id.0) {
            live.swap_remove(i);
        }
    }

    #[inline(always)]
    fn record(&mut self, _: &AttemptRecord) {}

    #[inline(always)]
    fn hears_records(&self) -> bool {
        false
    }
}

impl<'a, const N: usize> Sim<'a, N> {
    fn new(
        setup: Setup<'a>,
        plan: CallPlan,
        attempts: Ahead<AttemptDraws>,
        gaps: Ahead<u64>,
    ) -> Self {
        let seed = setup.scenario.seed;
        Self {
            policy: setup.policy,
            trigger: setup.trigger,
            retry_budget: setup.retry_budget,
            hedge_budget: setup.hedge_budget,
            arrival_rng: arrival_rng(seed),
            gaps,
            fresh: CallMachine::with_plan(&plan, setup.options, fastrand::Rng::with_seed(0)),
            slots: Vec::new(),
            free: NO_SLOT,
            reuse_gates: !setup.policy.circuit.enabled,
            draws: plan.draws(),
            w: World {
                scenario: setup.scenario,
                shared: setup.shared,
                draw: setup.scenario.backend.latency.draw(),
                backend_rng: backend_rng(seed),
                attempts,
                queue: Queue::new(),
                in_flight: 0,
                park: !setup.reference,
                steady_error_rate: setup.scenario.backend.steady_error_rate(),
                launched: Launched::default(),
                tally: core::mem::replace(&mut setup.shared.borrow_mut().tally, Tally::new(0, 0)),
            },
        }
    }

    fn run(&mut self) {
        let total = self.w.scenario.warmup + self.w.scenario.calls;
        let mut arrived = 0;
        let mut last = EPOCH;
        // The next arrival, ordered with the queued events by its key (it
        // takes its sequence number when it is scheduled, as a queued
        // event would); `Key::MAX` once every call has arrived.
        let mut next_arrival = queue::key(EPOCH, self.w.queue.next_seq());
        loop {
            let Some((key, ev)) = self.w.queue.pop_before(next_arrival) else {
                if next_arrival == Key::MAX {
                    break;
                }
                let now = queue::instant(next_arrival);
                last = now;
                self.arrive(arrived, now);
                arrived += 1;
                next_arrival = if arrived < total {
                    let (arrivals, rng) = (&self.w.scenario.arrivals, &mut self.arrival_rng);
                    let gap = self.gaps.next(|| arrivals.gap_nanos(rng));
                    let at = Instant::from_nanos(now.as_nanos().saturating_add(gap));
                    queue::key(at, self.w.queue.next_seq())
                } else {
                    Key::MAX
                };
                continue;
            };
            let now = queue::instant(key);
            match ev.get() {
                What::Done { slot, id, failed } => {
                    last = now;
                    let Self { slots, free, w, .. } = self;
                    w.in_flight -= 1;
                    let Some(s) = own(slots, slot, key) else {
                        continue;
                    };
                    // The timer this end guarded goes back to the queue
                    // (or behind another end) once the end is handled, if
                    // the call still runs.
                    let released = s.call.parked.filter(|p| p.guard == id);
                    if released.is_some() {
                        s.call.parked = None;
                    }
                    if let Some(i) = s.call.live.iter().position(|l| l.0 == id) {
                        s.call.live.swap_remove(i);
                        let outcome = if failed {
                            Outcome::retryable("backend_error")
                        } else {
                            Outcome::SUCCESS
                        };
                        let id = recourse_core::AttemptId(id);
                        let event = Event::AttemptFinished { id, outcome, now };
                        feed(s, slot, free, w, now, event);
                    }
                    // The same call, if it still runs (no other call takes
                    // the slot before the next arrival).
                    if let (Some(parked), true) = (released, s.call.alive) {
                        let call = &mut s.call;
                        unpark(
                            &call.live,
                            &mut call.parked,
                            parked.timer,
                            Ev::timer(slot),
                            &mut w.queue,
                            w.park,
                        );
                    }
                }
                What::Timer { slot } => {
                    let Self { slots, free, w, .. } = self;
                    let Some(s) = own(slots, slot, key) else {
                        continue;
                    };
                    if s.call.next_timer != Some(now) {
                        continue;
                    }
                    last = now;
                    s.call.next_timer = None;
                    feed(s, slot, free, w, now, Event::Tick { now });
                }
            }
        }
        let mut shared = self.w.shared.borrow_mut();
        let tally = core::mem::replace(&mut self.w.tally, Tally::new(0, 0));
        let gates = core::mem::replace(&mut shared.tally, tally);
        shared.tally.add_counts(&gates);
        shared.tally.simulated = last - EPOCH;
        shared.tally.add_launched(&self.w.launched);
    }

    /// A new call's gate (made only for a new slot, or where a finished
    /// call's cannot be reused: out of line, its makings are not gathered
    /// per call).
    #[cold]
    #[inline(never)]
    fn gate(&self, measured: bool) -> PolicyGate<'a, SimParts<'a>, Held<'a, N>> {
        let parts = SimParts {
            retry: self.retry_budget,
            hedge: self.hedge_budget,
            shared: self.w.shared,
            measured,
        };
        PolicyGate::new(KEY, self.policy, Some(self.trigger), parts)
    }

    /// Puts a new gate in `slot` (see [`Sim::gate`]).
    #[cold]
    #[inline(never)]
    fn renew_gate(&mut self, slot: u32, measured: bool) {
        let gate = self.gate(measured);
        self.slots[slot as usize].gate = gate;
    }

    fn arrive(&mut self, index: u64, now: Instant) {
        // A machine that never draws (no backoff to jitter) is not seeded:
        // its source is never read (12 instructions a simulated call).
        let seed = if self.draws {
            derive_seed(self.w.scenario.seed, index)
        } else {
            0
        };
        let rng = fastrand::Rng::with_seed(seed);
        let measured = index >= self.w.scenario.warmup;
        if self.free == NO_SLOT {
            self.slots.push(Slot {
                call: SimCall {
                    alive: false,
                    first_seq: 0,
                    measured,
                    arrival: now,
                    live: heapless::Vec::new(),
                    next_timer: None,
                    parked: None,
                    next_free: NO_SLOT,
                },
                machine: self.fresh.clone(),
                gate: self.gate(measured),
            });
            self.free = u32::try_from(self.slots.len() - 1).unwrap_or(NO_SLOT);
        }
        let slot = self.free;
        // A finished call's gate holds nothing (each admitted attempt's
        // reservation was settled as it ended) and, with no breaker, never
        // held a permit: it is the gate a new one would be but for whether
        // the call is measured.
        let reuse_gate = self.reuse_gates;
        let first_seq = self.w.queue.last_seq();
        let Self { slots, free, w, .. } = self;
        let Some(s) = slots.get_mut(slot as usize) else {
            return;
        };
        // The next free slot (none when this one is new).
        *free = s.call.next_free;
        let call = &mut s.call;
        call.alive = true;
        call.first_seq = first_seq;
        call.measured = measured;
        call.arrival = now;
        call.live.clear();
        call.next_timer = None;
        call.parked = None;
        // Made in its slot: the finished call's machine is restarted as
        // the fresh one in place (a copy of the fresh one, or a machine
        // made by value and moved in, copied the whole machine). Its
        // settings are the fresh one's (every machine is a clone of it,
        // and a call never changes them): only the state is reset.
        s.machine.restart(rng);
        if reuse_gate && s.gate.held() == 0 {
            s.gate.parts_mut().measured = measured;
            feed(s, slot, free, w, now, Event::Start { now });
        } else {
            self.renew_gate(slot, measured);
            let Self { slots, free, w, .. } = self;
            feed(
                &mut slots[slot as usize],
                slot,
                free,
                w,
                now,
                Event::Start { now },
            );
        }
    }
}

/// The slot `slot` if its call still runs and the event of `key` is one of
/// its own (queued after the call arrived).
#[inline(always)]
fn own<'s, 'a, const N: usize>(
    slots: &'s mut [Slot<'a, N>],
    slot: u32,
    key: Key,
) -> Option<&'s mut Slot<'a, N>> {
    // The low half of the key is its sequence number.
    let seq = key as u64;
    slots
        .get_mut(slot as usize)
        .filter(|s| s.call.alive && seq > s.call.first_seq)
}

/// Feeds `event` to the machine of the call in `s` (slot number `slot`),
/// which carries out its launches and cancels as it decides them
/// ([`Carry`]), until the call waits or finishes (its slot then goes on
/// the `free` stack). The call stays in its slot (moving it out and back
/// in copied the whole machine twice per event), found once per event by
/// the caller.
// Inlined into its callers (an arrival, an attempt's end, a timer).
#[inline(always)]
fn feed<'a, const N: usize>(
    s: &mut Slot<'a, N>,
    slot: u32,
    free: &mut u32,
    w: &mut World<'a>,
    now: Instant,
    event: Event,
) {
    {
        let Slot {
            call,
            machine,
            gate,
        } = s;
        let mut carry = Carry {
            gate,
            call,
            slot,
            now,
            w,
        };
        let action = machine.feed(event, &mut carry);
        let Carry { call, w, .. } = carry;
        match action {
            Action::Wait { until, .. } => {
                if call.next_timer != Some(until) {
                    call.next_timer = Some(until);
                    let ev = Ev::timer(slot);
                    let timer = queue::key(until, w.queue.next_seq());
                    unpark(
                        &call.live,
                        &mut call.parked,
                        timer,
                        ev,
                        &mut w.queue,
                        w.park,
                    );
                }
            }
            Action::Finish(verdict) => {
                if call.measured {
                    w.tally.finished(
                        now.as_nanos().saturating_sub(call.arrival.as_nanos()),
                        &verdict,
                    );
                }
                call.alive = false;
                call.next_free = *free;
                *free = slot;
            }
            // A drain through a sink ends only in a wait or the finish
            // otherwise.
            Action::AwaitAttempts | Action::Launch(_) | Action::Cancel(_) | Action::Record(_) => {}
        }
    }
}
