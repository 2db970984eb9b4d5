//! # recourse-core
//!
//! The `#![no_std]`, sans-IO heart of [recourse](https://docs.rs/recourse-rs):
//! one state machine makes every decision of a resilient call — how many
//! attempts, how long to back off, when an attempt or the whole call has run
//! out of time — from clock and outcome events. It owns no clock, no timer,
//! no task and no allocator, so the same decisions are made on a tokio
//! server, a smol service, a microcontroller and in a simulator.
//!
//! ## The driver contract
//!
//! Anything that drives a [`CallMachine`] — the async driver [`call`], the
//! simulator, an embedded main loop — follows these five steps, and there is
//! no other way to drive it:
//!
//! 1. **Start.** Feed [`Event::Start`] with the clock's current [`Instant`].
//!    Until then [`CallMachine::poll`] returns [`Action::AwaitAttempts`] and
//!    decides nothing (no attempt, no gate call).
//! 2. **Drain after every event.** Call [`CallMachine::poll`] after each
//!    event, and keep calling it until it returns [`Action::Wait`],
//!    [`Action::AwaitAttempts`] or [`Action::Finish`], carrying out each
//!    action on the way: [`Action::Launch`] starts the operation for that
//!    attempt, [`Action::Cancel`] drops that attempt and reports its record,
//!    [`Action::Record`] reports a record. Feed no event while a drain is
//!    unfinished: a record would be lost. Both `poll` and [`Action`] are
//!    `#[must_use]`.
//! 3. **Feed what happens, with the time it happened.** An attempt's
//!    classified [`Outcome`] as [`Event::AttemptFinished`], with the clock
//!    read when it completed; then go back to 2.
//! 4. **After a wait, feed the instant waited for.** When the timer for
//!    `Wait { until, .. }` fires, feed [`Event::Tick`] with
//!    `max(clock.now(), until)`: a clock that reads a hair early would
//!    otherwise get the same `Wait` back. Every `Wait` is for an instant
//!    after the latest one fed, so a driver that does this never busy-loops.
//!    Times only go forward: an event earlier than the latest one seen is
//!    taken as the latest one (the driver's clock must be monotonic; the
//!    async driver `debug_assert`s it).
//! 5. **Cancel.** When the caller gives up, feed [`Event::Cancel`] and drain:
//!    the machine cancels every attempt in flight ([`Action::Cancel`], each
//!    told to the gate exactly once) and finishes with
//!    [`Cause::Cancelled`]. Cancelling before the start launches nothing.
//!    After [`Action::Finish`], `poll` keeps returning the same verdict.
//!
//! The gate passed to `poll` ([`Gate`]) is consulted before every launch and
//! told when every admitted attempt and the call end; the same events,
//! policy, seed and gate answers give the same actions.
//!
//! One exception to "the clock read" in steps 1 and 3, which changes no
//! decision: where nothing would use the instant, a driver may feed the
//! epoch ([`Instant::ZERO`]) instead of reading its clock, and the machine
//! takes the latest instant it saw. That is a call whose policy has no
//! timeout and does not hedge, and whose gate and observer use no time
//! ([`Gate::uses_time`], [`Observer::uses_time`]): its start, and the end of
//! an attempt after which the machine cannot sleep (a success, a failure
//! that ends the call, a retry at once). The end of a retryable failure
//! after which it may back off (the backoff counts from it) and the
//! instant after every wait are still read. [`call`] does this (issue 16:
//! a successful call of the executor on tokio's clock read it twice, about
//! 240 instructions).
//!
//! [`call`] is that loop as a future for any [`Timer`]: it polls the attempt
//! inside the caller's task (no spawn, no heap) and resolves to the value or
//! a typed [`Error`]. It holds the call's machine in two stages: a compact
//! one that decides the attempts of a call which cannot hedge (ask the
//! gate, launch, wait, record, retry at once under a policy without
//! backoff, finish; on a 64-bit target, also sleep a retry's backoff under
//! a policy without timeouts) and grows into the full [`CallMachine`], in
//! exactly the state that machine would be in, as soon as the call needs
//! more (a non-retryable failure, attempts exhausted, a retry-after hint,
//! a refusal, a deadline, a cancel, a policy that hedges, a backoff the
//! compact stage does not sleep). Both stages are driven by these five
//! steps and make the same decisions; a call the compact stage decides
//! never builds the full machine.
//!
//! ```
//! use core::time::Duration;
//! use recourse_core::{call, Action, CallMachine, Event, Instant, Outcome, Policy, PolicyKey, Timer};
//!
//! // The machine alone, with explicit instants:
//! let mut m: CallMachine = CallMachine::new(&Policy::DEFAULT, Default::default(), fastrand::Rng::with_seed(1));
//! m.handle(Event::Start { now: Instant::ZERO });
//! let Action::Launch(first) = m.poll(&mut ()) else { panic!() };
//! m.handle(Event::AttemptFinished { id: first.id, outcome: Outcome::retryable("boom"), now: Instant::from_millis(3) });
//! assert!(matches!(m.poll(&mut ()), Action::Record(_)));
//! // Default policy: 10 ms backoff, no jitter.
//! assert!(matches!(m.poll(&mut ()), Action::Wait { until, .. } if until == Instant::from_millis(13)));
//! ```
//!
//! ## Modules
//!
//! - [`time`] — [`Instant`], [`Timer`].
//! - [`counter`] — [`TickCounter`](counter::TickCounter), a wrapping hardware
//!   counter extended to an [`Instant`].
//! - [`key`] — [`PolicyKey`].
//! - [`policy`] — [`Policy`] and its normalization.
//! - [`backoff`] — exponential backoff and jitter.
//! - [`breaker`] — [`CircuitBreaker`], one circuit breaker.
//! - [`budget`] — [`Budget`], [`BudgetGate`] and the built-in budgets.
//! - [`verdict`] — [`Verdict`], [`Cause`] and every [`reason`] code.
//! - [`outcome`] — [`Outcome`], [`Classifier`].
//! - [`record`] — attempt handles and [`AttemptRecord`].
//! - [`gate`] — the budget/breaker hook, [`Gate`].
//! - [`policy_gate`] — [`PolicyGate`], the gate the executor and the
//!   simulator share.
//! - [`latency`] — [`LatencySketch`], recent latencies in fixed memory.
//! - [`hedge`] — hedge triggers, [`HedgeState`].
//! - [`machine`] — [`CallMachine`].
//! - [`observer`] — [`Observer`].
//! - [`driver`] — [`call`], the async driver.
//! - [`error`] — [`Error`].
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod amplification;
pub mod backoff;
pub mod breaker;
pub mod budget;
// embedded (issue 18): extending a wrapping hardware counter.
pub mod counter;
pub mod driver;
pub mod error;
pub mod gate;
pub mod hedge;
pub mod key;
pub mod latency;
pub mod limits;
pub mod machine;
pub mod observer;
pub mod outcome;
mod pinned;
pub mod policy;
pub mod policy_gate;
#[cfg(feature = "serde")]
pub mod policy_serde;
pub mod record;
// loom model checking (issue 17): the budgets' atomics.
mod sync;
pub mod time;
pub mod verdict;

pub use breaker::{CallResult, CircuitBreaker, CircuitState, Permit, Refusal};
pub use budget::{Budget, BudgetGate, BudgetRequest, Decision, Reservation};
pub use driver::{call, Call, CallBuilder};
pub use error::Error;
pub use gate::{Admission, AdmitRequest, Gate, Gatekeeper};
pub use hedge::{HedgeDecision, HedgeState, Trigger};
pub use key::PolicyKey;
pub use latency::{LatencySketch, TrackedAnswer};
pub use limits::Limits;
pub use machine::{Action, CallMachine, CallPlan, Event, WaitReason};
pub use observer::{CallEnd, Observer};
pub use outcome::{Classifier, DefaultClassifier, Outcome, OutcomeKind};
pub use policy::{Jitter, Policy, PolicyError};
pub use policy_gate::{GateParts, PolicyGate};
pub use record::{AttemptId, AttemptInfo, AttemptKind, AttemptRecord};
pub use time::{Instant, Timer};
pub use verdict::{reason, Cause, Verdict};

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests;
