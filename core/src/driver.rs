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

use core::future::{Future, IntoFuture};
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::Error;
use crate::gate::Gate;
use crate::key::PolicyKey;
use crate::machine::{Action, CallMachine, CallPlan, Cause, Event, Options, Verdict};
use crate::observer::{CallEnd, Observer};
use crate::outcome::{Classifier, DefaultClassifier, OutcomeKind};
use crate::pinned::PinnedSlots;
use crate::policy::Policy;
use crate::record::{AttemptId, AttemptInfo};
use crate::time::{Instant, Timer};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Running,
    Done,
}

pin_project! {
    /// The future of one call: resolves to the operation's value or an
    /// [`Error`]. Made by [`call`] and its [`CallBuilder`].
    ///
    /// `N` is the number of attempts it can run at once: 1 (the default)
    /// runs no hedges and keeps the future small; [`CallBuilder::slots`]
    /// makes room for the primary and up to `N - 1` hedges, each attempt's
    /// future stored inside this one.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use recourse_core::{call, Instant, Policy, PolicyKey, Timer};
    /// # struct NoSleep;
    /// # impl Timer for NoSleep {
    /// #     type Sleep = core::future::Ready<()>;
    /// #     fn now(&self) -> Instant { Instant::ZERO }
    /// #     fn sleep_until(&self, _: Instant) -> Self::Sleep { core::future::ready(()) }
    /// # }
    /// let mut failures = 2;
    /// let call = call(PolicyKey::parse("svc.Get"), &Policy::DEFAULT, NoSleep, |_attempt| {
    ///     let fail = failures > 0;
    ///     failures -= 1;
    ///     async move { if fail { Err("flaky") } else { Ok(42) } }
    /// });
    /// let fut = core::future::IntoFuture::into_future(call);
    /// assert_eq!(futures_util::FutureExt::now_or_never(fut), Some(Ok(42)));
    /// ```
    #[must_use = "a call does nothing unless polled"]
    #[project = CallProj]
    pub struct Call<'k, Tm, Op, Fut, T, E, C = DefaultClassifier, O = (), G = (), W = InFlight<1>>
    where
        Tm: Timer,
        O: Observer,
        G: Gate,
        W: Width,
    {
        key: PolicyKey<'k>,
        machine: W::Machine,
        timer: Tm,
        op: Op,
        classifier: C,
        observer: O,
        gate: G,
        state: State,
        seeded: bool,
        // The attempt in each slot of `attempts`.
        ids: W::Ids,
        sleep_at: Instant,
        // The latest failed attempt's result, kept for the error; a
        // non-retryable or abort result is never replaced (the machine
        // names it as the call's last failure even when a later attempt of
        // its group fails retryably).
        last: Option<(AttemptId, Result<T, E>)>,
        last_terminal: bool,
        winner: Option<Result<T, E>>,
        #[pin]
        attempts: W::Attempts<Fut>,
        #[pin]
        sleep: Option<Tm::Sleep>,
    }

    impl<'k, Tm, Op, Fut, T, E, C, O, G, W> PinnedDrop for Call<'k, Tm, Op, Fut, T, E, C, O, G, W>
    where
        Tm: Timer,
        O: Observer,
        G: Gate,
        W: Width,
    {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if *this.state != State::Running {
                return;
            }
            // Stop the attempts before anyone hears about them.
            for i in 0..this.ids.as_ref().len() {
                this.attempts.as_mut().slot(i).set(None);
            }
            this.sleep.set(None);
            this.machine.handle(Event::Cancel { now: this.timer.now() });
            loop {
                match this.machine.poll(this.gate) {
                    Action::Record(r) | Action::Cancel(r) => this.observer.on_attempt(*this.key, &r),
                    Action::Finish(verdict) => {
                        let end = call_end(this.machine, verdict);
                        this.observer.on_failure(*this.key, &end);
                        break;
                    }
                    // A cancelled machine only cancels, records and finishes.
                    Action::Launch(_) | Action::Wait { .. } | Action::AwaitAttempts => break,
                }
            }
            *this.state = State::Done;
        }
    }
}

/// A call of `op` under `policy` (normalize it first), timed by `timer`,
/// with the default classifier, no observer and the open gate: configure it
/// with the builder methods, then await it.
///
/// Jitter draws come from an RNG whose seed mixes a process-wide call counter
/// with the timer's current time, so concurrent calls draw independent
/// jitter even when each has a fresh timer whose clock reads about zero. Use
/// [`CallBuilder::rng`] for a seeded, reproducible one (std users get that
/// from the `recourse` executor).
pub fn call<'k, Tm: Timer, Op>(
    key: PolicyKey<'k>,
    policy: &Policy,
    timer: Tm,
    op: Op,
) -> CallBuilder<'k, Tm, Op> {
    CallBuilder {
        common: Common {
            key,
            plan: CallPlan::new(policy),
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

/// A call being configured; `.await` it (it is [`IntoFuture`]) or turn it
/// into a [`Call`] with [`IntoFuture::into_future`].
#[derive(Debug)]
#[must_use = "a call does nothing unless awaited"]
pub struct CallBuilder<'k, Tm, Op, C = DefaultClassifier, O = (), G = (), W: Width = InFlight<1>> {
    common: Common<'k, Tm, Op>,
    width: core::marker::PhantomData<W>,
    classifier: C,
    observer: O,
    gate: G,
}

/// What every builder step carries over unchanged.
#[derive(Debug)]
struct Common<'k, Tm, Op> {
    key: PolicyKey<'k>,
    /// The machine is made from these when the call future is: a builder
    /// step moves a few words, not a machine.
    plan: CallPlan,
    options: Options,
    rng: Option<fastrand::Rng>,
    timer: Tm,
    op: Op,
}

impl<'k, Tm, Op, C, O, G, W: Width> CallBuilder<'k, Tm, Op, C, O, G, W> {
    /// Makes room for `M` attempts at once: the primary and up to `M - 1`
    /// hedges of the same retry group (when the policy enables hedging). The
    /// call future then holds `M` attempt futures; the default, 1, hedges
    /// never. `M = 1 + policy.hedge.max_hedges` runs every hedge the policy
    /// asks for.
    ///
    /// ```
    /// # use core::time::Duration;
    /// use recourse_core::{call, AttemptInfo, Policy, PolicyKey};
    /// # use recourse_core::{Instant, Timer};
    /// # struct NoSleep;
    /// # impl Timer for NoSleep {
    /// #     type Sleep = core::future::Ready<()>;
    /// #     fn now(&self) -> Instant { Instant::ZERO }
    /// #     fn sleep_until(&self, _: Instant) -> Self::Sleep { core::future::ready(()) }
    /// # }
    /// let mut policy = Policy::DEFAULT;
    /// policy.hedge.enabled = true;
    /// // The primary hangs; the hedge, launched after `hedge_delay`, answers.
    /// let call = call(PolicyKey::parse("svc.Get"), &policy, NoSleep, |attempt: AttemptInfo| async move {
    ///     if attempt.is_hedge {
    ///         Ok::<_, ()>("from the hedge")
    ///     } else {
    ///         core::future::pending::<Result<&str, ()>>().await
    ///     }
    /// })
    /// .slots::<3>();
    /// let fut = core::future::IntoFuture::into_future(call);
    /// assert_eq!(futures_util::FutureExt::now_or_never(fut), Some(Ok("from the hedge")));
    /// ```
    pub fn slots<const M: usize>(self) -> CallBuilder<'k, Tm, Op, C, O, G, InFlight<M>>
    where
        InFlight<M>: Width,
    {
        CallBuilder {
            common: self.common,
            width: core::marker::PhantomData,
            classifier: self.classifier,
            observer: self.observer,
            gate: self.gate,
        }
    }

    /// Uses `rng` for jitter draws.
    pub fn rng(mut self, rng: fastrand::Rng) -> Self {
        self.common.rng = Some(rng);
        self
    }

    /// Uses executor-wide `options` (such as the retry-after ceiling).
    pub fn options(mut self, options: Options) -> Self {
        self.common.options = options;
        self
    }

    /// Classifies results with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> CallBuilder<'k, Tm, Op, C2, O, G, W> {
        CallBuilder {
            common: self.common,
            width: core::marker::PhantomData,
            classifier,
            observer: self.observer,
            gate: self.gate,
        }
    }

    /// Reports to `observer` (pass `&mut o` to read it after the call).
    pub fn observer<O2: Observer>(self, observer: O2) -> CallBuilder<'k, Tm, Op, C, O2, G, W> {
        CallBuilder {
            common: self.common,
            width: core::marker::PhantomData,
            classifier: self.classifier,
            observer,
            gate: self.gate,
        }
    }

    /// Consults `gate` before every attempt (pass `&mut g` to share one).
    pub fn gate<G2: Gate>(self, gate: G2) -> CallBuilder<'k, Tm, Op, C, O, G2, W> {
        CallBuilder {
            common: self.common,
            width: core::marker::PhantomData,
            classifier: self.classifier,
            observer: self.observer,
            gate,
        }
    }
}

impl<'k, Tm, Op, Fut, T, E, C, O, G, W> IntoFuture for CallBuilder<'k, Tm, Op, C, O, G, W>
where
    W: Width,
    Tm: Timer,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
    O: Observer,
    G: Gate,
{
    type Output = Result<T, Error<E>>;
    type IntoFuture = Call<'k, Tm, Op, Fut, T, E, C, O, G, W>;

    fn into_future(self) -> Self::IntoFuture {
        let Common {
            key,
            plan,
            options,
            rng,
            timer,
            op,
        } = self.common;
        // Without an RNG from the caller, the call seeds one from the clock
        // when it starts: no clock read for a seed that would be replaced.
        let seeded = rng.is_some();
        let rng = rng.unwrap_or_else(|| fastrand::Rng::with_seed(0));
        Call {
            key,
            machine: W::Machine::make(&plan, options, rng),
            timer,
            op,
            seeded,
            classifier: self.classifier,
            observer: self.observer,
            gate: self.gate,
            state: State::Idle,
            ids: W::Ids::default(),
            sleep_at: Instant::ZERO,
            last: None,
            last_terminal: false,
            winner: None,
            attempts: W::Attempts::default(),
            sleep: None,
        }
    }
}

impl<Tm, Op, Fut, T, E, C, O, G, W> Future for Call<'_, Tm, Op, Fut, T, E, C, O, G, W>
where
    W: Width,
    Tm: Timer,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
    O: Observer,
    G: Gate,
{
    type Output = Result<T, Error<E>>;

    /// Drains the machine until it must wait, then polls every attempt in
    /// flight; the first to complete is fed to the machine and the loop
    /// starts over (so attempts launched on the way are polled before this
    /// returns `Pending`, and each event is drained before the next).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match *this.state {
            State::Idle => {
                let now = this.timer.now();
                if !*this.seeded {
                    this.machine
                        .set_rng(fastrand::Rng::with_seed(call_seed(now)));
                }
                this.machine.handle(Event::Start { now });
                this.observer.on_start(*this.key, now);
                *this.state = State::Running;
            }
            State::Running => {}
            State::Done => panic!("`Call` polled after completion"),
        }
        loop {
            // 1. Carry out the machine's actions until it waits.
            let wait = loop {
                match this.machine.poll(this.gate) {
                    Action::Record(record) => this.observer.on_attempt(*this.key, &record),
                    Action::Launch(info) => {
                        let ids = this.ids.as_mut();
                        let Some(free) = ids.iter().position(Option::is_none) else {
                            unreachable!("the machine launches only into a free slot");
                        };
                        ids[free] = Some(info.id);
                        this.observer.on_launch(*this.key, &info);
                        this.attempts.as_mut().slot(free).set(Some((this.op)(info)));
                    }
                    Action::Cancel(record) => {
                        let id = Some(record.info.id);
                        let ids = this.ids.as_mut();
                        if let Some(i) = ids.iter().position(|s| *s == id) {
                            ids[i] = None;
                            this.attempts.as_mut().slot(i).set(None);
                        }
                        this.observer.on_attempt(*this.key, &record);
                    }
                    Action::Wait { until, .. } => break Some(until),
                    Action::AwaitAttempts => break None,
                    Action::Finish(verdict) => {
                        *this.state = State::Done;
                        this.sleep.set(None);
                        let end = call_end(this.machine, verdict);
                        match verdict {
                            Verdict::Success(_) => this.observer.on_success(*this.key, &end),
                            Verdict::Failure { .. } => this.observer.on_failure(*this.key, &end),
                        }
                        let refusal = this.machine.refusal();
                        return Poll::Ready(conclude(
                            verdict,
                            end.attempts,
                            refusal,
                            this.winner,
                            this.last,
                        ));
                    }
                }
            };
            // 2. Poll the attempts; feed the first that completes. An attempt
            //    that is ready wins over a deadline that is also due.
            if poll_attempts(&mut this, cx) {
                continue;
            }
            // 3. Nothing completed: sleep until the machine's instant.
            let Some(until) = wait else {
                return Poll::Pending;
            };
            if this.sleep.is_none() || *this.sleep_at != until {
                this.sleep.set(Some(this.timer.sleep_until(until)));
                *this.sleep_at = until;
            }
            if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                if sleep.poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            this.sleep.set(None);
            // The timer says `until` has passed; trust it over a clock read
            // that rounds a hair earlier, or the machine would ask for the
            // same wait again.
            let now = this.timer.now().max(until);
            this.machine.handle(Event::Tick { now });
        }
    }
}

/// Polls every attempt in flight; feeds the first that completes to the
/// machine and says whether one did.
fn poll_attempts<Tm, Op, Fut, T, E, C, O, G, W>(
    this: &mut CallProj<'_, '_, Tm, Op, Fut, T, E, C, O, G, W>,
    cx: &mut Context<'_>,
) -> bool
where
    Tm: Timer,
    Fut: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
    O: Observer,
    G: Gate,
    W: Width,
{
    for i in 0..this.ids.as_ref().len() {
        let Some(id) = this.ids.as_ref()[i] else {
            continue;
        };
        let Some(attempt) = this.attempts.as_mut().slot(i).as_pin_mut() else {
            continue;
        };
        let Poll::Ready(result) = attempt.poll(cx) else {
            continue;
        };
        this.ids.as_mut()[i] = None;
        this.attempts.as_mut().slot(i).set(None);
        let outcome = this.classifier.classify(&result);
        let now = this.timer.now();
        this.machine
            .handle(Event::AttemptFinished { id, outcome, now });
        match outcome.kind {
            OutcomeKind::Success => *this.winner = Some(result),
            kind => {
                if !*this.last_terminal {
                    *this.last_terminal = kind != OutcomeKind::Retryable;
                    *this.last = Some((id, result));
                }
            }
        }
        return true;
    }
    false
}

/// How many attempts a [`Call`] runs at once: [`InFlight<N>`], chosen with
/// [`CallBuilder::slots`].
///
/// A type rather than a `const` parameter because the future's pin
/// projection is generated by `pin-project-lite`, which takes types only.
/// Sealed: its items are the driver's plumbing.
pub trait Width: sealed::Sealed {
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
    fn set_rng(&mut self, rng: fastrand::Rng);
    fn make(plan: &CallPlan, options: Options, rng: fastrand::Rng) -> Self;
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
    fn set_rng(&mut self, rng: fastrand::Rng) {
        CallMachine::set_rng(self, rng);
    }
    fn make(plan: &CallPlan, options: Options, rng: fastrand::Rng) -> Self {
        CallMachine::with_plan(plan, options, rng)
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

/// A distinct seed per call: a process-wide call counter (where the target
/// has 32-bit atomics) mixed with the clock.
fn call_seed(now: Instant) -> u64 {
    #[cfg(target_has_atomic = "32")]
    let n = {
        use core::sync::atomic::{AtomicU32, Ordering};
        static CALLS: AtomicU32 = AtomicU32::new(0);
        u64::from(CALLS.fetch_add(1, Ordering::Relaxed))
    };
    #[cfg(not(target_has_atomic = "32"))]
    let n = 0;
    derive_seed(now.as_nanos(), n)
}

/// The `n`-th seed derived from `seed`: SplitMix64's `n`-th output, so that
/// neighbouring `n` (and neighbouring seeds) give unrelated streams. Use it
/// to give each call of a seeded program its own reproducible RNG.
pub const fn derive_seed(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn call_end<M: MachineOps>(machine: &M, verdict: Verdict) -> CallEnd {
    CallEnd {
        start: machine.start(),
        end: machine.now(),
        attempts: machine.attempts(),
        verdict,
    }
}

/// The call's result from the verdict and the results the driver kept.
fn conclude<T, E>(
    verdict: Verdict,
    attempts: u32,
    refusal: Option<&'static str>,
    winner: &mut Option<Result<T, E>>,
    last: &mut Option<(AttemptId, Result<T, E>)>,
) -> Result<T, Error<E>> {
    let (cause, last_id) = match verdict {
        Verdict::Success(_) => {
            return match winner.take() {
                Some(Ok(value)) => Ok(value),
                Some(Err(error)) => Err(Error::Operation {
                    error,
                    cause: Cause::Accepted,
                }),
                // The machine only declares the attempt the driver just
                // stored a winner.
                None => Err(Error::Cancelled { last: None }),
            };
        }
        Verdict::Failure { cause, last } => (cause, last),
    };
    // Only the result of the attempt the machine names as the last failure
    // is the call's last result; an attempt cut at its deadline has none.
    let last = last
        .take()
        .filter(|(id, _)| Some(*id) == last_id)
        .map(|(_, r)| r);
    let last_err = |last: Option<Result<T, E>>| last.and_then(Result::err);
    match cause {
        Cause::NonRetryable | Cause::Abort | Cause::RetryAfterBeyondDeadline | Cause::Accepted => {
            match last {
                Some(Ok(value)) => Ok(value),
                Some(Err(error)) => Err(Error::Operation { error, cause }),
                None => Err(Error::DeadlineExceeded { last: None }),
            }
        }
        Cause::Exhausted => match last {
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => Err(Error::RetriesExhausted {
                last: Some(error),
                attempts,
            }),
            None => Err(Error::RetriesExhausted {
                last: None,
                attempts,
            }),
        },
        Cause::DeadlineExceeded | Cause::BackoffBeyondDeadline => Err(Error::DeadlineExceeded {
            last: last_err(last),
        }),
        Cause::Cancelled => Err(Error::Cancelled {
            last: last_err(last),
        }),
        Cause::BudgetDenied => Err(Error::BudgetDenied {
            reason: refusal.unwrap_or(crate::outcome::reason::BUDGET_DENIED),
            last: last_err(last),
        }),
        Cause::CircuitOpen => Err(Error::CircuitOpen {
            reason: refusal.unwrap_or("circuit_open"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::derive_seed;

    #[test]
    fn derived_seeds_are_deterministic_and_distinct() {
        assert_eq!(derive_seed(7, 0), derive_seed(7, 0));
        assert_ne!(derive_seed(7, 0), derive_seed(7, 1));
        assert_ne!(derive_seed(7, 0), derive_seed(8, 0));
        assert_ne!(derive_seed(0, 0), 0);
    }
}
