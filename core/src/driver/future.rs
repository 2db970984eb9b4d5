//! The call future: [`Call`], its drop, and its poll loop — drain the
//! machine, poll the attempts, sleep until the machine's instant.

use super::*;

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
        pub(super) key: PolicyKey<'k>,
        pub(super) sleep_at: Instant,
        // The latest failed attempt's result, kept for the error; a
        // non-retryable or abort result is never replaced (the machine
        // names it as the call's last failure even when a later attempt of
        // its group fails retryably).
        pub(super) last: Option<(AttemptId, Result<T, E>)>,
        pub(super) winner: Option<Result<T, E>>,
        pub(super) timer: Tm,
        pub(super) op: Op,
        pub(super) classifier: C,
        pub(super) observer: O,
        pub(super) gate: G,
        #[pin]
        pub(super) attempts: W::Attempts<Fut>,
        #[pin]
        pub(super) sleep: Option<Tm::Sleep>,
        // The attempt in each slot of `attempts`.
        pub(super) ids: W::Ids,
        pub(super) last_terminal: bool,
        // Debug builds: the latest clock read (zero-sized in release).
        pub(super) clock: ClockCheck,
        pub(super) state: State<P, W::Machine>,
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

/// Polls every attempt in flight; takes the first that completes out of its
/// slot and returns it.
pub(super) fn poll_attempts<F, T, E, A>(
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
pub(super) fn settle<M: MachineOps, T, E>(
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
pub(super) struct ClockCheck {
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
    pub(super) fn read<Tm: Timer>(&mut self, timer: &Tm, start: Instant) -> Instant {
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
