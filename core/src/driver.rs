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

pin_project! {
    /// The future of one call: resolves to the operation's value or an
    /// [`Error`]. Made by [`call`] and its [`CallBuilder`].
    ///
    /// `P` is how it holds its policy ([`call`] says which to pick): a
    /// `&Policy`, a `Policy` or an `Arc<Policy>`.
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
    /// let policy = Policy::DEFAULT;
    /// let mut failures = 2;
    /// let call = call(PolicyKey::parse("svc.Get"), &policy, NoSleep, |_attempt| {
    ///     let fail = failures > 0;
    ///     failures -= 1;
    ///     async move { if fail { Err("flaky") } else { Ok(42) } }
    /// });
    /// let fut = core::future::IntoFuture::into_future(call);
    /// assert_eq!(futures_util::FutureExt::now_or_never(fut), Some(Ok(42)));
    /// ```
    #[must_use = "a call does nothing unless polled"]
    #[project = CallProj]
    // Fields in this order, the state last: the machine's room in the
    // state is uninitialized until a call needs one, and with nothing laid
    // out after it, making a call writes the few fields it sets and copies
    // none of that room (with the default layout, LLVM copied 328 bytes of
    // it into every new call future beside the key).
    #[repr(C)]
    pub struct Call<'k, P, Tm, Op, Fut, T, E, C = DefaultClassifier, O = (), G = (), W = InFlight<1>>
    where
        P: Borrow<Policy>,
        Tm: Timer,
        O: Observer,
        G: Gate,
        W: Width,
    {
        key: PolicyKey<'k>,
        sleep_at: Instant,
        // The latest failed attempt's result, kept for the error; a
        // non-retryable or abort result is never replaced (the machine
        // names it as the call's last failure even when a later attempt of
        // its group fails retryably).
        last: Option<(AttemptId, Result<T, E>)>,
        winner: Option<Result<T, E>>,
        timer: Tm,
        op: Op,
        classifier: C,
        observer: O,
        gate: G,
        #[pin]
        attempts: W::Attempts<Fut>,
        #[pin]
        sleep: Option<Tm::Sleep>,
        // The attempt in each slot of `attempts`.
        ids: W::Ids,
        last_terminal: bool,
        // Debug builds: the latest clock read (zero-sized in release).
        clock: ClockCheck,
        state: State<P, W::Machine>,
    }

    impl<'k, P, Tm, Op, Fut, T, E, C, O, G, W> PinnedDrop for Call<'k, P, Tm, Op, Fut, T, E, C, O, G, W>
    where
        P: Borrow<Policy>,
        Tm: Timer,
        O: Observer,
        G: Gate,
        W: Width,
    {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let express = match this.state {
                State::Running(_) => None,
                State::Idle(Planned { opened: Some(opened), .. }) => Some(*opened),
                // Never polled, or over.
                State::Idle(_) | State::Done => return,
            };
            // Stop the attempts before anyone hears about them.
            for i in 0..this.ids.as_ref().len() {
                this.attempts.as_mut().slot(i).set(None);
            }
            this.sleep.set(None);
            // Not checked: a drop may run while a panic unwinds, and a
            // second panic would abort.
            let now = this.timer.now();
            if let Some(opened) = express {
                // Dropped inside the express lane: something it called
                // panicked and unwinds through the call.
                if opened.released {
                    // After the gate heard that the attempt ended: only
                    // the call's end is left to tell.
                    *this.state = State::Done;
                    let start = opened.start;
                    let verdict = Verdict::Failure { cause: Cause::Cancelled, last: None };
                    this.gate.call_ended(&verdict, now);
                    let end = CallEnd { start, end: now.max(start), attempts: 1, verdict };
                    this.observer.on_failure(*this.key, &end);
                    return;
                }
                // The attempt ran: let the machine take it over and cancel it.
                if let Some(Action::Record(r)) = take_over(this.state, this.gate, now) {
                    this.observer.on_attempt(*this.key, &r);
                }
            }
            let State::Running(machine) = this.state else {
                unreachable!("a running call, or one the machine took over");
            };
            machine.handle(Event::Cancel { now });
            loop {
                match machine.poll(this.gate) {
                    Action::Record(r) | Action::Cancel(r) => this.observer.on_attempt(*this.key, &r),
                    Action::Finish(verdict) => {
                        let end = call_end(machine, verdict);
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

/// A call being configured; `.await` it (it is [`IntoFuture`]) or turn it
/// into a [`Call`] with [`IntoFuture::into_future`].
#[derive(Debug)]
#[must_use = "a call does nothing unless awaited"]
pub struct CallBuilder<'k, P, Tm, Op, C = DefaultClassifier, O = (), G = (), W: Width = InFlight<1>>
{
    common: Common<'k, P, Tm, Op>,
    width: core::marker::PhantomData<W>,
    classifier: C,
    observer: O,
    gate: G,
}

/// What every builder step carries over unchanged.
#[derive(Debug)]
struct Common<'k, P, Tm, Op> {
    key: PolicyKey<'k>,
    /// The machine is made from these when the call needs one (see the
    /// express lane): a builder step moves the policy as the caller gave
    /// it (a reference is one word) and a few more words, not a machine.
    policy: P,
    options: Options,
    rng: Option<fastrand::Rng>,
    timer: Tm,
    op: Op,
}

impl<'k, P, Tm, Op, C, O, G, W: Width> CallBuilder<'k, P, Tm, Op, C, O, G, W> {
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
    pub fn slots<const M: usize>(self) -> CallBuilder<'k, P, Tm, Op, C, O, G, InFlight<M>>
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
    pub fn classifier<C2>(self, classifier: C2) -> CallBuilder<'k, P, Tm, Op, C2, O, G, W> {
        CallBuilder {
            common: self.common,
            width: core::marker::PhantomData,
            classifier,
            observer: self.observer,
            gate: self.gate,
        }
    }

    /// Reports to `observer` (pass `&mut o` to read it after the call).
    pub fn observer<O2: Observer>(self, observer: O2) -> CallBuilder<'k, P, Tm, Op, C, O2, G, W> {
        CallBuilder {
            common: self.common,
            width: core::marker::PhantomData,
            classifier: self.classifier,
            observer,
            gate: self.gate,
        }
    }

    /// Consults `gate` before every attempt (pass `&mut g` to share one).
    pub fn gate<G2: Gate>(self, gate: G2) -> CallBuilder<'k, P, Tm, Op, C, O, G2, W> {
        CallBuilder {
            common: self.common,
            width: core::marker::PhantomData,
            classifier: self.classifier,
            observer: self.observer,
            gate,
        }
    }
}

impl<'k, P, Tm, Op, Fut, T, E, C, O, G, W> IntoFuture for CallBuilder<'k, P, Tm, Op, C, O, G, W>
where
    P: Borrow<Policy>,
    W: Width,
    Tm: Timer,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
    O: Observer,
    G: Gate,
{
    type Output = Result<T, Error<E>>;
    type IntoFuture = Call<'k, P, Tm, Op, Fut, T, E, C, O, G, W>;

    fn into_future(self) -> Self::IntoFuture {
        let Common {
            key,
            policy,
            options,
            rng,
            timer,
            op,
        } = self.common;
        Call {
            key,
            state: State::Idle(Planned {
                policy,
                options,
                rng,
                opened: None,
            }),
            timer,
            op,
            classifier: self.classifier,
            observer: self.observer,
            gate: self.gate,
            ids: W::Ids::default(),
            sleep_at: Instant::ZERO,
            last: None,
            last_terminal: false,
            clock: ClockCheck::NEW,
            winner: None,
            attempts: W::Attempts::default(),
            sleep: None,
        }
    }
}

impl<P, Tm, Op, Fut, T, E, C, O, G, W> Future for Call<'_, P, Tm, Op, Fut, T, E, C, O, G, W>
where
    P: Borrow<Policy>,
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
        // Whether the attempts were polled since the last event: a first
        // attempt pending in the express lane is not polled twice in a row.
        let mut polled = false;
        match this.state {
            State::Running(_) => {}
            State::Idle(planned) => {
                let now = this.timer.now();
                this.observer.on_start(*this.key, now);
                let express = hedges_within(planned.policy.borrow(), planned.options, W::SLOTS)
                    == 0
                    && express_lane_enabled();
                if !express {
                    if let Some(action) = take_over(this.state, this.gate, now) {
                        unreachable!("a machine just started acts only when polled: {action:?}");
                    }
                } else if let Some(out) = express_lane(&mut this, cx, now, &mut polled) {
                    return Poll::Ready(out);
                }
            }
            State::Done => panic!("`Call` polled after completion"),
        }
        let State::Running(machine) = this.state else {
            unreachable!("the call runs its machine once the express lane is left");
        };
        loop {
            // 1. Carry out the machine's actions until it waits.
            let wait = loop {
                match machine.poll(this.gate) {
                    Action::Record(record) => this.observer.on_attempt(*this.key, &record),
                    Action::Launch(info) => {
                        let ids = this.ids.as_mut();
                        let Some(free) = ids.iter().position(Option::is_none) else {
                            unreachable!("the machine launches only into a free slot");
                        };
                        ids[free] = Some(info.id);
                        this.observer.on_launch(*this.key, &info);
                        this.attempts.as_mut().slot(free).set(Some((this.op)(info)));
                        polled = false;
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
                        this.sleep.set(None);
                        let end = call_end(machine, verdict);
                        let refusal = machine.refusal();
                        *this.state = State::Done;
                        match verdict {
                            Verdict::Success(_) => this.observer.on_success(*this.key, &end),
                            Verdict::Failure { .. } => this.observer.on_failure(*this.key, &end),
                        }
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
            if !polled {
                if let Some((id, result)) =
                    poll_attempts(this.ids.as_mut(), this.attempts.as_mut(), cx)
                {
                    let now = this.clock.read(this.timer, machine.start());
                    let outcome = this.classifier.classify(&result);
                    settle(
                        machine,
                        id,
                        outcome,
                        now,
                        result,
                        this.winner,
                        this.last,
                        this.last_terminal,
                    );
                    continue;
                }
            }
            polled = false;
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
            let now = this.clock.read(this.timer, machine.start()).max(until);
            machine.handle(Event::Tick { now });
        }
    }
}

/// The express lane (see the [module docs](self)): launches the first
/// attempt without a machine and polls it once. Returns the call's result
/// when that attempt succeeded; otherwise the machine has taken over (the
/// call is [`State::Running`]), and `polled` says whether the attempt in
/// flight was just polled.
fn express_lane<P, Tm, Op, Fut, T, E, C, O, G, W>(
    this: &mut CallProj<'_, '_, P, Tm, Op, Fut, T, E, C, O, G, W>,
    cx: &mut Context<'_>,
    now: Instant,
    polled: &mut bool,
) -> Option<Result<T, Error<E>>>
where
    P: Borrow<Policy>,
    Tm: Timer,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
    O: Observer,
    G: Gate,
    W: Width,
{
    let State::Idle(planned) = &mut *this.state else {
        unreachable!("the express lane runs on the first poll");
    };
    let Some(info) = first_attempt(planned.policy.borrow(), now) else {
        // A deadline is due already: the machine knows what that means.
        take_over(this.state, this.gate, now);
        return None;
    };
    let admission = this.gate.admit(&AdmitRequest {
        attempt: info,
        previous: None,
        now,
    });
    let opened = planned.opened.insert(Opened {
        info,
        start: now,
        admission,
        released: false,
    });
    if !admission.allowed {
        // The machine records the refusal and ends the call.
        if let Some(Action::Record(r)) = take_over(this.state, this.gate, now) {
            this.observer.on_attempt(*this.key, &r);
        }
        return None;
    }
    this.ids.as_mut()[0] = Some(info.id);
    this.observer.on_launch(*this.key, &info);
    this.attempts.as_mut().slot(0).set(Some((this.op)(info)));
    let Some((id, result)) = poll_attempts(this.ids.as_mut(), this.attempts.as_mut(), cx) else {
        take_over(this.state, this.gate, now);
        *polled = true;
        return None;
    };
    let end = this.clock.read(this.timer, now).max(now);
    let outcome = this.classifier.classify(&result);
    if outcome.kind != OutcomeKind::Success {
        take_over(this.state, this.gate, now);
        let State::Running(machine) = this.state else {
            unreachable!("the machine took over");
        };
        settle(
            machine,
            id,
            outcome,
            end,
            result,
            this.winner,
            this.last,
            this.last_terminal,
        );
        return None;
    }
    let record = first_attempt_record(info, now, end, outcome, admission.reason);
    opened.released = true;
    this.gate.attempt_ended(&record);
    this.observer.on_attempt(*this.key, &record);
    let verdict = Verdict::Success(id);
    *this.state = State::Done;
    this.gate.call_ended(&verdict, end);
    let call = CallEnd {
        start: now,
        end,
        attempts: 1,
        verdict,
    };
    this.observer.on_success(*this.key, &call);
    Some(result.map_err(|error| Error::Operation {
        error,
        cause: Cause::Accepted,
    }))
}

/// Makes the call's machine and starts it at `now`: the call is
/// [`State::Running`] after this. When the express lane asked the gate
/// about the first attempt, the machine is handed that answer: it launches
/// the attempt already running (nothing to do), or returns the record of
/// its refusal, which this returns.
fn take_over<P: Borrow<Policy>, M: MachineOps, G: Gate>(
    state: &mut State<P, M>,
    gate: &mut G,
    now: Instant,
) -> Option<Action> {
    let State::Idle(planned) = core::mem::replace(state, State::Done) else {
        unreachable!("a machine is made once, for an idle call");
    };
    let Planned {
        policy,
        options,
        rng,
        opened,
    } = planned;
    // Without an RNG from the caller, the machine seeds one from the clock
    // now: no clock read for a seed that would be replaced.
    let rng = rng.unwrap_or_else(|| fastrand::Rng::with_seed(call_seed(now)));
    *state = State::Running(M::make(policy.borrow(), options, rng));
    #[cfg(test)]
    crate::tests::MACHINES_MADE.with(|n| n.set(n.get() + 1));
    let State::Running(machine) = state else {
        unreachable!("just made");
    };
    machine.handle(Event::Start { now });
    let opened = opened?;
    let first = machine.poll(&mut Replay {
        gate,
        admission: Some(opened.admission),
    });
    match first {
        Action::Launch(info) => {
            debug_assert_eq!(
                info, opened.info,
                "the machine launches the express lane's attempt"
            );
            None
        }
        refused => {
            debug_assert!(matches!(refused, Action::Record(r) if !r.budget_allowed));
            Some(refused)
        }
    }
}

/// A gate that answers its first admission with the answer the express
/// lane already had, and passes everything else to the call's gate.
struct Replay<'g, G> {
    gate: &'g mut G,
    admission: Option<Admission>,
}

impl<G: Gate> Gate for Replay<'_, G> {
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        match self.admission.take() {
            Some(admission) => admission,
            None => self.gate.admit(request),
        }
    }
    fn attempt_ended(&mut self, record: &AttemptRecord) {
        self.gate.attempt_ended(record);
    }
    fn call_ended(&mut self, verdict: &Verdict, now: Instant) {
        self.gate.call_ended(verdict, now);
    }
    fn hedge(&mut self, state: &crate::hedge::HedgeState) -> crate::hedge::HedgeDecision {
        self.gate.hedge(state)
    }
}

/// Whether the express lane may run: always, except in this crate's tests
/// that compare a call with and without it.
#[cfg(not(test))]
const fn express_lane_enabled() -> bool {
    true
}

#[cfg(test)]
fn express_lane_enabled() -> bool {
    !crate::tests::EXPRESS_OFF.with(core::cell::Cell::get)
}

/// Polls every attempt in flight; takes the first that completes out of its
/// slot and returns it.
fn poll_attempts<F, T, E, A>(
    ids: &mut [Option<AttemptId>],
    mut attempts: Pin<&mut A>,
    cx: &mut Context<'_>,
) -> Option<(AttemptId, Result<T, E>)>
where
    F: Future<Output = Result<T, E>>,
    A: AttemptSlots<F>,
{
    for (i, slot) in ids.iter_mut().enumerate() {
        let Some(id) = *slot else {
            continue;
        };
        let Some(attempt) = attempts.as_mut().slot(i).as_pin_mut() else {
            continue;
        };
        let Poll::Ready(result) = attempt.poll(cx) else {
            continue;
        };
        *slot = None;
        attempts.as_mut().slot(i).set(None);
        return Some((id, result));
    }
    None
}

/// Feeds a completed attempt to the machine and keeps its result: the
/// winner's, or the one the call's error will carry.
#[allow(clippy::too_many_arguments)]
fn settle<M: MachineOps, T, E>(
    machine: &mut M,
    id: AttemptId,
    outcome: Outcome,
    now: Instant,
    result: Result<T, E>,
    winner: &mut Option<Result<T, E>>,
    last: &mut Option<(AttemptId, Result<T, E>)>,
    last_terminal: &mut bool,
) {
    machine.handle(Event::AttemptFinished { id, outcome, now });
    match outcome.kind {
        OutcomeKind::Success => *winner = Some(result),
        kind => {
            if !*last_terminal {
                *last_terminal = kind != OutcomeKind::Retryable;
                *last = Some((id, result));
            }
        }
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
            reason: refusal.unwrap_or(reason::BUDGET_DENIED),
            last: last_err(last),
        }),
        Cause::CircuitOpen => Err(Error::CircuitOpen {
            reason: refusal.unwrap_or(reason::CIRCUIT_OPEN),
        }),
    }
}

/// Reads a [`Timer`]'s clock and, in debug builds, asserts that it never
/// goes back (the driver contract, crate docs step 4).
///
/// The machine clamps a `now` earlier than one it has seen (its contract,
/// which the invariant suites exercise), and a timer's sleep may end while
/// its clock reads a hair before the sleep's instant (the driver then feeds
/// the instant), so the check compares the clock with its own earlier
/// reads: in milliseconds since the call started, in a `u16` that fits in
/// the call future's padding (saturating, so past 65 s only a clock going
/// back before the call's start is caught). Zero-sized in release builds.
#[derive(Copy, Clone, Debug)]
struct ClockCheck {
    #[cfg(debug_assertions)]
    last_ms: u16,
}

impl ClockCheck {
    const NEW: Self = Self {
        #[cfg(debug_assertions)]
        last_ms: 0,
    };

    /// Reads `timer`'s clock; `start` is when the call started.
    #[inline(always)]
    fn read<Tm: Timer>(&mut self, timer: &Tm, start: Instant) -> Instant {
        let now = timer.now();
        #[cfg(debug_assertions)]
        {
            debug_assert!(
                now >= start,
                "the timer's clock went backwards: {now:?} before the call's start {start:?}"
            );
            let ms = u16::try_from((now - start).as_millis()).unwrap_or(u16::MAX);
            debug_assert!(
                ms >= self.last_ms,
                "the timer's clock went backwards: {ms} ms after the start, having read {} ms",
                self.last_ms
            );
            self.last_ms = ms;
        }
        #[cfg(not(debug_assertions))]
        let _ = start;
        now
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
