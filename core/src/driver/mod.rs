//! The generic async driver: runs one call's attempts inside the caller's
//! task, on any [`Timer`].
//!
//! [`Call`] is a hand-written future around the decisions of a
//! [`CallMachine`](crate::machine::CallMachine). Each poll
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
//! # One way to drive
//!
//! The call future holds the call's machine staged (`machine/staged.rs`,
//! crate-private): a compact stage that decides a call's attempts while
//! it cannot hedge and has no deadline to watch (ask the gate, launch,
//! wait, record, retry at once under a policy without backoff or after a
//! backoff it sleeps in a call without timeouts, finish) and grows into
//! the full machine (the [`CallMachine`](crate::machine::CallMachine)'s
//! decisions on a call's state, its settings read from the policy the
//! call holds rather than copied), in the state that machine would be in,
//! when the call needs one (a policy that hedges, a refusal, a backoff
//! with a deadline to check it against, a non-retryable failure, attempts
//! exhausted, a retry-after hint, a deadline, a cancel). The future drives it the one way the crate docs'
//! driver contract describes — feed an event, carry out the actions until
//! the machine must wait, poll the attempts, sleep — whichever stage it is
//! in: the machine decides every attempt, the future only carries out its
//! actions.
//!
//! Cost: a call that the compact stage decides (a first attempt that
//! succeeds, or retries that end in a success) never builds the full
//! machine. The retry after a backoff is launched where the driver
//! drains (one copy of the launch, not one at each place it feeds an
//! event). The compact stage is inlined into the future's poll and
//! growth is kept out of line (`#[cold]`), and the loop's first passes run
//! in a loop of their own after the compact stage's launches, so that the
//! compiler sees each launch, the poll of its attempt and the finish as
//! straight-line code.

use core::borrow::Borrow;
use core::future::{Future, IntoFuture};
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::Error;
use crate::gate::Gate;
use crate::key::PolicyKey;
pub use crate::machine::staged::{derive_seed, MachineOps};
use crate::machine::{Cause, Event, Limits, Next, Sink, Staged, Verdict};
use crate::observer::{CallEnd, Observer};
use crate::outcome::{Classifier, DefaultClassifier, OutcomeKind};
use crate::pinned::PinnedSlots;
use crate::policy::Policy;
use crate::record::{AttemptId, AttemptInfo, AttemptRecord};
use crate::time::{Instant, Timer};
use crate::verdict::reason;

mod builder;
mod conclusion;
mod future;

pub use builder::CallBuilder;
use builder::Common;
use conclusion::*;
pub use future::Call;

/// A call of `op` under `policy` (normalize it first), timed by `timer`,
/// with the default classifier, no observer and the open gate: configure it
/// with the builder methods, then await it.
///
/// `policy` is anything that [`Borrow`]s a [`Policy`]: usually a
/// reference, which the call holds until it ends (a `static` policy, or
/// one that outlives the await); an owned `Policy` or an `Arc<Policy>` for
/// a call that must be `'static`, such as one handed to a spawned task.
/// The call reads the policy where it holds it, whenever a decision needs
/// it, until it ends: making a call copies nothing from a borrowed policy,
/// and its full machine keeps no copy of the policy's numbers (an owned
/// `Policy` is held, 360 bytes, for the whole call: borrow it or share an
/// `Arc` for a small future).
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
            limits: Limits::DEFAULT,
            rng: None,
            timer,
            op,
        },
        width: core::marker::PhantomData,
        room: core::marker::PhantomData,
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
    type Machine<P: Borrow<Policy>>: MachineOps<P>;
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
    Self: sealed::Hedges,
{
    const SLOTS: usize = N;
    type Machine<P: Borrow<Policy>> =
        crate::machine::staged::Machine<N, <Self as sealed::Hedges>::Room>;
    type Attempts<F> = PinnedSlots<F, N>;
    type Ids = [Option<AttemptId>; N];
}

/// What a [`Call`] keeps of its key: the key itself ([`PolicyKey`]) once
/// it has an observer, which is told the key with every event, or nothing
/// ([`Unheard`]) without one: the key is told to nobody else (issue 16: a
/// call without an observer holds no key, 32 bytes off its future, and
/// does not borrow it). Chosen by the builder
/// ([`CallBuilder::observer`] keeps the key). Sealed: its items are the
/// driver's plumbing.
pub trait KeyRoom: sealed::Sealed + Copy {
    #[doc(hidden)]
    fn key(&self) -> PolicyKey<'_>;
}

impl sealed::Sealed for PolicyKey<'_> {}

impl KeyRoom for PolicyKey<'_> {
    #[inline(always)]
    fn key(&self) -> PolicyKey<'_> {
        *self
    }
}

/// The [`KeyRoom`] of a call without an observer: no key kept (the
/// no-op observer `()` is told the empty key, and ignores it).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Unheard;

impl sealed::Sealed for Unheard {}

impl From<PolicyKey<'_>> for Unheard {
    #[inline(always)]
    fn from(_: PolicyKey<'_>) -> Self {
        Self
    }
}

impl KeyRoom for Unheard {
    #[inline(always)]
    fn key(&self) -> PolicyKey<'_> {
        PolicyKey::new("", "")
    }
}

pub(crate) mod sealed {
    pub trait Sealed {}

    /// What a width's machine keeps of a group's hedging: nothing for one
    /// slot, which cannot hedge (issue 16: 16 bytes off the call future).
    /// For the widths [`Width`](super::Width) has (those whose ids have a
    /// `Default`, up to 32 slots).
    pub trait Hedges {
        type Room: crate::machine::HedgeRoom;
    }

    impl Hedges for super::InFlight<1> {
        type Room = crate::machine::NoHedging;
    }

    macro_rules! hedging {
        ($($n:literal)*) => {$(
            impl Hedges for super::InFlight<$n> {
                type Room = crate::machine::Hedging;
            }
        )*};
    }
    hedging!(0 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32);
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
