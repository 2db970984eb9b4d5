//! # recourse-core
//!
//! The `#![no_std]`, sans-IO heart of [recourse](https://docs.rs/recourse):
//! one state machine makes every decision of a resilient call — how many
//! attempts, how long to back off, when an attempt or the whole call has run
//! out of time — from clock and outcome events. It owns no clock, no timer,
//! no task and no allocator, so the same decisions are made on a tokio
//! server, a smol service, a microcontroller and in a simulator.
//!
//! ## The driving loop
//!
//! 1. Feed [`Event::Start`] with the current [`Instant`].
//! 2. Drain [`CallMachine::poll`]: launch attempts ([`Action::Launch`]), drop
//!    them ([`Action::Cancel`]), report records ([`Action::Record`]), until
//!    it says [`Action::Wait`], [`Action::AwaitAttempts`] or
//!    [`Action::Finish`].
//! 3. Feed what happens next — an attempt's classified [`Outcome`]
//!    ([`Event::AttemptFinished`]), the passing of time ([`Event::Tick`]), the
//!    caller giving up ([`Event::Cancel`]) — and go back to 2.
//!
//! [`call`] is that loop as a future for any [`Timer`]: it polls the attempt
//! inside the caller's task (no spawn, no heap) and resolves to the value or
//! a typed [`Error`].
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
//! - [`key`] — [`PolicyKey`].
//! - [`policy`] — [`Policy`] and its normalization.
//! - [`backoff`] — exponential backoff and jitter.
//! - [`breaker`] — [`CircuitBreaker`], one circuit breaker.
//! - [`budget`] — [`Budget`], [`BudgetGate`] and the built-in budgets.
//! - [`outcome`] — [`Outcome`], [`Classifier`], reason codes.
//! - [`record`] — attempt handles and [`AttemptRecord`].
//! - [`gate`] — the budget/breaker hook, [`Gate`].
//! - [`latency`] — [`LatencySketch`], recent latencies in fixed memory.
//! - [`hedge`] — hedge triggers, [`HedgeState`].
//! - [`machine`] — [`CallMachine`].
//! - [`observer`] — [`Observer`].
//! - [`driver`] — [`call`], the async driver.
//! - [`error`] — [`Error`].
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod driver;
pub mod error;
pub mod gate;
pub mod hedge;
pub mod key;
pub mod latency;
pub mod machine;
pub mod observer;
pub mod outcome;
mod pinned;
pub mod policy;
#[cfg(feature = "serde")]
pub mod policy_serde;
pub mod record;
pub mod time;

pub use breaker::{CallResult, CircuitBreaker, CircuitState, Permit, Refusal};
pub use budget::{Budget, BudgetGate, BudgetRequest, Decision, Reservation};
pub use driver::{call, Call, CallBuilder};
pub use error::Error;
pub use gate::{Admission, AdmitRequest, Gate, Gatekeeper};
pub use hedge::{HedgeDecision, HedgeState, Trigger};
pub use key::PolicyKey;
pub use latency::LatencySketch;
pub use machine::{Action, CallMachine, CallPlan, Cause, Event, Options, Verdict, WaitReason};
pub use observer::{CallEnd, Observer};
pub use outcome::{reason, Classifier, DefaultClassifier, Outcome, OutcomeKind};
pub use policy::{Jitter, Policy, PolicyError};
pub use record::{AttemptId, AttemptInfo, AttemptKind, AttemptRecord};
pub use time::{Instant, Timer};

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests;
