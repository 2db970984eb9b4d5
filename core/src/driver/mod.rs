//! The generic async driver: runs one call's attempts inside the caller's
//! task, on any [`Timer`].
//!
//! [`Call`] is a hand-written future around a [`CallMachine`]. Each poll
//! polls the attempt in flight and the pending sleep, feeds what completed to
//! the machine, and carries out the machine's actions until it must wait. It
//! spawns nothing and allocates nothing: the attempt future and the sleep
//! future live inside the call future.
//!
//! Dropping a [`Call`] drops the attempt in flight and the pending sleep, and
//! tells the observer (a cancelled record for the attempt, then
//! `on_failure`) and the gate (the attempt ended) before it returns. A call
//! dropped before its first poll never calls the operation.
//!
//! # The express lane
//!
//! Most calls succeed at their first attempt. When a call cannot hedge
//! ([`CallPlan::hedges_within`](crate::CallPlan::hedges_within) is 0),
//! nothing can happen while its first attempt runs but that attempt
//! completing (a deadline only matters once the attempt is pending), so
//! the first poll launches that attempt itself — the gate's admission,
//! [`CallPlan::first_attempt`](crate::CallPlan::first_attempt)'s info, the
//! same observer calls in the same order — and polls it without making a
//! machine. When it succeeds there, the call ends without one. Otherwise
//! (the gate refused, the attempt is pending or failed) the driver makes
//! the machine, starts it at the same instant and hands it the gate's
//! answer again, so the machine launches the very attempt already running,
//! and from there on the machine decides everything. A call gives the same
//! records, gate calls, verdict and result either way; the driver's tests
//! run seeded scenarios both ways and compare them.

use core::borrow::Borrow;
use core::future::{Future, IntoFuture};
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::Error;
use crate::gate::{Admission, AdmitRequest, Gate};
use crate::key::PolicyKey;
use crate::machine::{
    first_attempt, first_attempt_record, hedges_within, Action, CallMachine, Cause, Event, Options,
    Verdict,
};
use crate::observer::{CallEnd, Observer};
use crate::outcome::{Classifier, DefaultClassifier, Outcome, OutcomeKind};
use crate::pinned::PinnedSlots;
use crate::policy::Policy;
use crate::record::{AttemptId, AttemptInfo, AttemptRecord};
use crate::time::{Instant, Timer};
use crate::verdict::reason;

mod builder;
mod conclusion;
mod express;
mod future;

pub use builder::CallBuilder;
use builder::Common;
pub use conclusion::derive_seed;
use conclusion::*;
use express::*;
pub use future::Call;
use future::*;

/// Where a call is.
///
/// The machine is stored inline, never boxed (the core has no allocator):
/// its variant is the big one, and the call future is as large with or
/// without the express lane.
///
/// An explicit one-byte tag: the first poll and the drop read it in one
/// compare, where a niche in the machine took several.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
#[repr(u8)]
enum State<P, M> {
    /// Not polled yet, or its first attempt runs in the express lane.
    Idle(Planned<P>),
    /// The machine decides.
    Running(M),
    /// Finished.
    Done,
}

/// What a call makes its machine from, kept until it needs one.
#[derive(Debug)]
struct Planned<P> {
    /// The caller's policy (borrowed, shared or owned), read when the call
    /// starts and when it makes its machine: making a call copies none of
    /// a borrowed one.
    policy: P,
    options: Options,
    /// The caller's RNG; without one, the machine seeds its own from the
    /// clock when it is made.
    rng: Option<fastrand::Rng>,
    /// The express lane's first attempt, once the gate was asked about it.
    opened: Option<Opened>,
}

/// The first attempt, launched by the express lane.
#[derive(Copy, Clone, Debug)]
struct Opened {
    info: AttemptInfo,
    start: Instant,
    admission: Admission,
    /// The gate was told that it ended.
    released: bool,
}

/// A call of `op` under `policy` (normalize it first), timed by `timer`,
/// with the default classifier, no observer and the open gate: configure it
/// with the builder methods, then await it.
///
/// `policy` is anything that [`Borrow`]s a [`Policy`]: usually a
/// reference, which the call holds until it ends (a `static` policy, or
/// one that outlives the await); an owned `Policy` or an `Arc<Policy>` for
/// a call that must be `'static`, such as one handed to a spawned task.
/// The call reads the policy when it starts and, when its first attempt
/// does not succeed at once, copies what it needs into its machine; making
/// a call copies nothing from a borrowed policy.
///
/// Jitter draws come from an RNG whose seed mixes a process-wide call counter
/// with the timer's current time, so concurrent calls draw independent
/// jitter even when each has a fresh timer whose clock reads about zero. Use
/// [`CallBuilder::rng`] for a seeded, reproducible one (std users get that
/// from the `recourse` executor).
pub fn call<'k, P: Borrow<Policy>, Tm: Timer, Op>(
    key: PolicyKey<'k>,
    policy: P,
    timer: Tm,
    op: Op,
) -> CallBuilder<'k, P, Tm, Op> {
    CallBuilder {
        common: Common {
            key,
            policy,
            options: Options::DEFAULT,
            rng: None,
            timer,
            op,
        },
        width: core::marker::PhantomData,
        classifier: DefaultClassifier,
        observer: (),
        gate: (),
    }
}

/// How many attempts a [`Call`] runs at once: [`InFlight<N>`], chosen with
/// [`CallBuilder::slots`].
///
/// A type rather than a `const` parameter because the future's pin
/// projection is generated by `pin-project-lite`, which takes types only.
/// Sealed: its items are the driver's plumbing.
pub trait Width: sealed::Sealed {
    /// Attempts at once.
    const SLOTS: usize;
    #[doc(hidden)]
    type Machine: MachineOps;
    #[doc(hidden)]
    type Attempts<F>: AttemptSlots<F>;
    #[doc(hidden)]
    type Ids: Default + AsRef<[Option<AttemptId>]> + AsMut<[Option<AttemptId>]>;
}

/// Room for `N` attempts at once: the primary and up to `N - 1` hedges.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct InFlight<const N: usize>;

impl<const N: usize> sealed::Sealed for InFlight<N> {}

impl<const N: usize> Width for InFlight<N>
where
    [Option<AttemptId>; N]: Default,
{
    const SLOTS: usize = N;
    type Machine = CallMachine<N>;
    type Attempts<F> = PinnedSlots<F, N>;
    type Ids = [Option<AttemptId>; N];
}

mod sealed {
    pub trait Sealed {}
}

/// The machine operations the driver uses, for every width.
#[doc(hidden)]
pub trait MachineOps {
    fn handle(&mut self, event: Event);
    fn poll<G: Gate + ?Sized>(&mut self, gate: &mut G) -> Action;
    fn start(&self) -> Instant;
    fn now(&self) -> Instant;
    fn attempts(&self) -> u32;
    fn refusal(&self) -> Option<&'static str>;
    fn make(policy: &Policy, options: Options, rng: fastrand::Rng) -> Self;
}

impl<const N: usize> MachineOps for CallMachine<N> {
    fn handle(&mut self, event: Event) {
        CallMachine::handle(self, event);
    }
    fn poll<G: Gate + ?Sized>(&mut self, gate: &mut G) -> Action {
        CallMachine::poll(self, gate)
    }
    fn start(&self) -> Instant {
        CallMachine::start(self)
    }
    fn now(&self) -> Instant {
        CallMachine::now(self)
    }
    fn attempts(&self) -> u32 {
        CallMachine::attempts(self)
    }
    fn refusal(&self) -> Option<&'static str> {
        CallMachine::refusal(self)
    }
    #[inline]
    fn make(policy: &Policy, options: Options, rng: fastrand::Rng) -> Self {
        CallMachine::new(policy, options, rng)
    }
}

/// Pinned attempt futures by slot, for every width.
#[doc(hidden)]
pub trait AttemptSlots<F>: Default {
    fn slot(self: Pin<&mut Self>, i: usize) -> Pin<&mut Option<F>>;
}

impl<F, const N: usize> AttemptSlots<F> for PinnedSlots<F, N> {
    fn slot(self: Pin<&mut Self>, i: usize) -> Pin<&mut Option<F>> {
        self.get(i)
    }
}
