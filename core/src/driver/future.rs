//! The call future: [`Call`], its drop, and its poll loop — drain the
//! machine, poll the attempts, sleep until the machine's instant.

use core::ops::ControlFlow;

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
    // Before it, the fields that are usually word-aligned (the key, the
    // timer and its sleep, the closures, the gate, the attempts), then the
    // results and the small ones, so that little padding is left between
    // them.
    #[repr(C)]
    pub struct Call<P, Tm, Op, Fut, T, E, C = DefaultClassifier, O = (), G = (), W = InFlight<1>, K = Unheard>
    where
        P: Borrow<Policy>,
        Tm: Timer,
        O: Observer,
        G: Gate,
        W: Width,
        K: KeyRoom,
    {
        // The key, for the observer; none without one (see `KeyRoom`).
        pub(super) key: K,
        pub(super) sleep_at: Instant,
        pub(super) timer: Tm,
        #[pin]
        pub(super) sleep: Option<Tm::Sleep>,
        pub(super) op: Op,
        pub(super) classifier: C,
        pub(super) observer: O,
        pub(super) gate: G,
        #[pin]
        pub(super) attempts: W::Attempts<Fut>,
        // The result the call resolves to, kept with its attempt: the
        // winner's, or the latest failed attempt's, for the error. One room
        // for the two: a success ends the call, so no failure is kept after
        // it, and the failure it replaces is not needed. A non-retryable or
        // abort result is never replaced by a failure (the machine names it
        // as the call's last failure even when a later attempt of its group
        // fails retryably).
        pub(super) kept: Option<(AttemptId, Result<T, E>)>,
        // The attempt in each slot of `attempts`.
        pub(super) ids: W::Ids,
        pub(super) last_terminal: bool,
        // Nobody uses the call's instants (the machine, the gate, the
        // observer): its start was not read, and an attempt's end is read
        // only where the machine may sleep after it (issue 16).
        pub(super) unread: bool,
        // Debug builds: the latest clock read (zero-sized in release).
        pub(super) clock: ClockCheck,
        pub(super) state: Staged<P, W::Machine<P>>,
    }

    impl<P, Tm, Op, Fut, T, E, C, O, G, W, K> PinnedDrop for Call<P, Tm, Op, Fut, T, E, C, O, G, W, K>
    where
        P: Borrow<Policy>,
        Tm: Timer,
        O: Observer,
        G: Gate,
        W: Width,
        K: KeyRoom,
    {
        fn drop(this: Pin<&mut Self>) {
            // Never polled, or over (the usual drop, after the call's
            // result): one test, inlined where the call is dropped; only a
            // call cancelled while live winds up, out of line (issue 16:
            // the whole drop was a call of its own, 18 instructions a call).
            if this.state.is_live() {
                cancelled(this);
            }
        }
    }
}

/// [`Call`]'s drop while it is live: cancels the attempts in flight, tells
/// the gate and the observer, and finishes the machine.
#[cold]
#[inline(never)]
#[allow(clippy::type_complexity)]
fn cancelled<P, Tm, Op, Fut, T, E, C, O, G, W, K>(
    this: Pin<&mut Call<P, Tm, Op, Fut, T, E, C, O, G, W, K>>,
) where
    P: Borrow<Policy>,
    Tm: Timer,
    O: Observer,
    G: Gate,
    W: Width,
    K: KeyRoom,
{
    let mut this = this.project();
    // Stop the attempts before anyone hears about them.
    for i in 0..this.ids.as_ref().len() {
        this.attempts.as_mut().slot(i).set(None);
    }
    this.sleep.set(None);
    // Not checked: a drop may run while a panic unwinds, and a
    // second panic would abort.
    let now = this.timer.now();
    let mut sink = Records {
        key: this.key.key(),
        observer: this.observer,
        gate: this.gate,
    };
    let machine = this.state;
    // A cancelled machine only cancels, records and finishes.
    let verdict = machine.cancel(now, &mut sink);
    let end = call_end(machine, verdict);
    this.observer.on_failure(this.key.key(), &end);
    machine.set_done();
}

#[cfg(test)]
impl<P, Tm, Op, Fut, T, E, C, O, G, W, K> Call<P, Tm, Op, Fut, T, E, C, O, G, W, K>
where
    P: Borrow<Policy>,
    Tm: Timer,
    O: Observer,
    G: Gate,
    W: Width,
    K: KeyRoom,
{
    /// Test-only: `(field, offset, size)` of every field, by offset.
    pub(crate) fn layout(&self) -> std::vec::Vec<(&'static str, usize, usize)> {
        crate::machine::layout_of!(self; key, sleep_at, kept, timer, op, classifier,
            observer, gate, attempts, sleep, ids, last_terminal, unread, clock, state)
    }
}

impl<'k, P, Tm, Op, Fut, T, E, C, O, G, W, K> IntoFuture
    for CallBuilder<'k, P, Tm, Op, C, O, G, W, K>
where
    P: Borrow<Policy>,
    W: Width,
    K: KeyRoom + From<PolicyKey<'k>>,
    Tm: Timer,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
    O: Observer,
    G: Gate,
{
    type Output = Result<T, Error<E>>;
    type IntoFuture = Call<P, Tm, Op, Fut, T, E, C, O, G, W, K>;

    // Always inlined: made where it is awaited, the future is built in
    // place; out of line (as the executor's retried call's was once its
    // poll grew) it was built aside and copied (a memcpy of the whole
    // future, 117 instructions, and the call, 72).
    #[inline(always)]
    fn into_future(self) -> Self::IntoFuture {
        let Common {
            key,
            policy,
            limits,
            rng,
            timer,
            op,
        } = self.common;
        Call {
            key: K::from(key),
            state: Staged::new(policy, limits, rng),
            timer,
            op,
            classifier: self.classifier,
            observer: self.observer,
            gate: self.gate,
            ids: W::Ids::default(),
            sleep_at: Instant::ZERO,
            kept: None,
            last_terminal: false,
            unread: false,
            clock: ClockCheck::NEW,
            attempts: W::Attempts::default(),
            sleep: None,
        }
    }
}

impl<P, Tm, Op, Fut, T, E, C, O, G, W, K> Future for Call<P, Tm, Op, Fut, T, E, C, O, G, W, K>
where
    P: Borrow<Policy>,
    W: Width,
    K: KeyRoom,
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
    ///
    /// Inline-hinted: a call future is polled where it is awaited, in one
    /// place, so that the compiler inlining it there copies nothing, and
    /// sees the future's fields written when it was made (a core call
    /// whose first attempt succeeds: 128 instructions out of line, 77
    /// inlined). `#[inline(always)]` inlined it in a few more places of
    /// the Cortex-M3 example's call site (520 bytes more flash) and cost
    /// the executor's paths a few instructions.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The event the full machine is to take (after `Next::Feed`).
        let mut fed = None;
        // 1. Feed the event (the start, on the first poll); the machine
        //    carries out its actions until it must wait. A later poll
        //    drains it first: it may act on what changed since (a hedge
        //    trigger's answer).
        let mut next = if this.state.is_idle() {
            // A call whose instants nobody uses (the machine, the gate, the
            // observer) reads no clock at its start (issue 16): its start
            // is fed at the epoch, and an attempt's end is read only where
            // the machine may sleep after it (`Staged::may_back_off_after`).
            let unread = G::MAY_IGNORE_TIME
                && O::MAY_IGNORE_TIME
                && !(this.gate.uses_time()
                    || this.state.times_its_start()
                    || this.observer.uses_time());
            *this.unread = unread;
            let now = if unread {
                Instant::ZERO
            } else {
                this.timer.now()
            };
            this.observer.on_start(this.key.key(), now);
            let next = feed(&mut this, Event::Start { now }, &mut fed);
            if let Next::Launched(mut wait) = next {
                // The loop's first passes, peeled, after the compact
                // stage's launches: the compiler sees each launch and the
                // pass that polls its attempt as straight-line code, so a
                // first attempt that completes at once costs no jump on
                // `next`, and neither does a retry the compact stage
                // launches at once.
                loop {
                    match pass(&mut this, cx, wait, &mut fed) {
                        ControlFlow::Break(poll) => return poll,
                        // Finished here, not at the loop's top: the
                        // compact stage's success runs straight through
                        // from its launch to the result.
                        ControlFlow::Continue(Next::Finish(verdict)) => {
                            return Poll::Ready(finish(&mut this, verdict));
                        }
                        ControlFlow::Continue(Next::Launched(deadline)) => wait = deadline,
                        ControlFlow::Continue(next) => break next,
                    }
                }
            } else {
                next
            }
        } else if this.state.is_live() {
            this.state.resume()
        } else {
            panic!("`Call` polled after completion");
        };
        loop {
            let wait = match next {
                Next::Launched(wait) => wait,
                Next::Wait(until) => Some(until),
                Next::AwaitAttempts => None,
                Next::Finish(verdict) => return Poll::Ready(finish(&mut this, verdict)),
                // The full machine takes the event and its actions are
                // carried out here, the one place the driver drains it (a
                // drain at each place an event is fed would be a copy each
                // in flash). The compact stage's retry after a backoff is
                // launched here too (`Staged::relaunch`: one copy of its launch,
                // and only where the stage sleeps); when the gate refuses
                // it, the full machine takes over and drains.
                Next::Feed | Next::Drain | Next::Relaunch => {
                    let mut sink = sink!(this);
                    let relaunched = if crate::machine::staged::SLEEPS && next == Next::Relaunch {
                        this.state.relaunch(&mut sink)
                    } else {
                        Next::Drain
                    };
                    if let Next::Launched(wait) = relaunched {
                        wait
                    } else {
                        match this.state.drain(fed.take(), &mut sink) {
                            Next::Wait(until) => Some(until),
                            Next::Finish(verdict) => {
                                return Poll::Ready(finish(&mut this, verdict))
                            }
                            // A drain ends in a wait or the finish: no
                            // `Launched` (the compact stage's), no `Feed`,
                            // `Drain` or `Relaunch`.
                            _ => None,
                        }
                    }
                }
            };
            match pass(&mut this, cx, wait, &mut fed) {
                ControlFlow::Break(poll) => return poll,
                ControlFlow::Continue(fed) => next = fed,
            }
        }
    }
}

/// One pass of the call future's loop, after an event was fed and the
/// machine must wait (`wait`: until when, if a timer is due): poll the
/// attempts and feed the first that completes, else sleep and feed the
/// tick. Returns where the machine stopped, or the future's poll result.
#[inline(always)]
fn pass<P, Tm, Op, Fut, T, E, C, O, G, W, K>(
    this: &mut CallProj<'_, P, Tm, Op, Fut, T, E, C, O, G, W, K>,
    cx: &mut Context<'_>,
    wait: Option<Instant>,
    fed: &mut Option<Event>,
) -> ControlFlow<Poll<Result<T, Error<E>>>, Next>
where
    P: Borrow<Policy>,
    W: Width,
    K: KeyRoom,
    Tm: Timer,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
    O: Observer,
    G: Gate,
{
    // 2. Poll the attempts; feed the first that completes. An attempt
    //    that is ready wins over a deadline that is also due.
    let next =
        if let Some((id, result)) = poll_attempts(this.ids.as_mut(), this.attempts.as_mut(), cx) {
            // Read before the classifier runs (the attempt ended when it
            // completed); in a call whose instants nobody uses (see the
            // start), only where the machine may sleep after it, once the
            // classifier said how it ended, and else fed at the epoch. (A
            // call future whose gate or observer always uses time carries
            // none of the latter.)
            let (outcome, now) = if G::MAY_IGNORE_TIME && O::MAY_IGNORE_TIME && *this.unread {
                let outcome = this.classifier.classify(&result);
                let now = if this.state.may_back_off_after(&outcome) {
                    this.clock.read(this.timer, this.state.start())
                } else {
                    Instant::ZERO
                };
                (outcome, now)
            } else {
                let now = this.clock.read(this.timer, this.state.start());
                (this.classifier.classify(&result), now)
            };
            keep(id, outcome.kind, result, this.kept, this.last_terminal);
            feed(this, Event::AttemptFinished { id, outcome, now }, fed)
        } else {
            // 3. Nothing completed: sleep until the machine's instant.
            let Some(until) = wait else {
                return ControlFlow::Break(Poll::Pending);
            };
            if this.sleep.is_none() || *this.sleep_at != until {
                this.sleep.set(Some(this.timer.sleep_until(until)));
                *this.sleep_at = until;
            }
            if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                if sleep.poll(cx).is_pending() {
                    return ControlFlow::Break(Poll::Pending);
                }
            }
            this.sleep.set(None);
            // The timer says `until` has passed; trust it over a clock read
            // that rounds a hair earlier, or the machine would ask for the
            // same wait again.
            let now = this.clock.read(this.timer, this.state.start()).max(until);
            feed(this, Event::Tick { now }, fed)
        };
    ControlFlow::Continue(next)
}

/// The driver's [`Sink`] of a projected call.
macro_rules! sink {
    ($this:ident) => {
        Attempts {
            key: &*$this.key,
            gate: &mut *$this.gate,
            observer: &mut *$this.observer,
            ids: $this.ids.as_mut(),
            attempts: $this.attempts.as_mut(),
            op: &mut *$this.op,
        }
    };
}
use sink;

/// Feeds `event` to the call's machine, whose compact stage carries out
/// its actions until it must wait; keeps it in `fed` when the full machine
/// is to take it ([`Next::Feed`]).
#[inline(always)]
fn feed<P, Tm, Op, Fut, T, E, C, O, G, W, K>(
    this: &mut CallProj<'_, P, Tm, Op, Fut, T, E, C, O, G, W, K>,
    event: Event,
    fed: &mut Option<Event>,
) -> Next
where
    P: Borrow<Policy>,
    W: Width,
    K: KeyRoom,
    Tm: Timer,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    O: Observer,
    G: Gate,
{
    let mut sink = sink!(this);
    let next = this.state.feed(event, &mut sink);
    if next == Next::Feed {
        *fed = Some(event);
    }
    next
}

/// Ends the call with `verdict`: tells the observer, and the result.
#[inline(always)]
fn finish<P, Tm, Op, Fut, T, E, C, O, G, W, K>(
    this: &mut CallProj<'_, P, Tm, Op, Fut, T, E, C, O, G, W, K>,
    verdict: Verdict,
) -> Result<T, Error<E>>
where
    P: Borrow<Policy>,
    W: Width,
    K: KeyRoom,
    Tm: Timer,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    O: Observer,
    G: Gate,
{
    this.sleep.set(None);
    let machine = &mut *this.state;
    let end = call_end(machine, verdict);
    let refusal = machine.refusal();
    machine.set_done();
    match verdict {
        Verdict::Success(_) => this.observer.on_success(this.key.key(), &end),
        Verdict::Failure { .. } => this.observer.on_failure(this.key.key(), &end),
    }
    conclude(verdict, end.attempts, refusal, this.kept)
}

/// The driver's side of a cancelled machine's actions, once its attempts
/// are dropped: records to the observer.
struct Records<'a, 'k, O, G> {
    key: PolicyKey<'k>,
    observer: &'a mut O,
    gate: &'a mut G,
}

impl<O: Observer, G: Gate> Sink for Records<'_, '_, O, G> {
    type Gate = G;
    fn gate(&mut self) -> &mut G {
        self.gate
    }
    fn launch(&mut self, _: AttemptInfo) {
        // A cancelled machine only cancels, records and finishes.
    }
    fn cancel(&mut self, record: &AttemptRecord) {
        self.observer.on_attempt(self.key, record);
    }
    fn record(&mut self, record: &AttemptRecord) {
        self.observer.on_attempt(self.key, record);
    }
    fn hears_records(&self) -> bool {
        self.observer.hears_attempts()
    }
}

/// The driver's side of a machine's actions: launches into the call's
/// attempt slots, cancels out of them, records to the observer.
struct Attempts<'a, K, O, G, Ids: ?Sized, A, Op> {
    key: &'a K,
    gate: &'a mut G,
    observer: &'a mut O,
    ids: &'a mut Ids,
    attempts: Pin<&'a mut A>,
    op: &'a mut Op,
}

impl<K, O, G, Ids, A, Op, Fut> Sink for Attempts<'_, K, O, G, Ids, A, Op>
where
    K: KeyRoom,
    O: Observer,
    G: Gate,
    Ids: AsMut<[Option<AttemptId>]> + ?Sized,
    A: AttemptSlots<Fut>,
    Op: FnMut(AttemptInfo) -> Fut,
{
    type Gate = G;
    #[inline(always)]
    fn gate(&mut self) -> &mut G {
        self.gate
    }
    #[inline(always)]
    fn launch(&mut self, info: AttemptInfo) {
        let ids = self.ids.as_mut();
        // The machine launches only into a free slot. (No panic message:
        // its text is flash on a microcontroller.)
        let Some(free) = ids.iter().position(Option::is_none) else {
            unreachable!();
        };
        ids[free] = Some(info.id);
        self.observer.on_launch(self.key.key(), &info);
        self.attempts.as_mut().slot(free).set(Some((self.op)(info)));
    }

    #[inline(always)]
    fn cancel(&mut self, record: &AttemptRecord) {
        let id = Some(record.info.id);
        let ids = self.ids.as_mut();
        if let Some(i) = ids.iter().position(|s| *s == id) {
            ids[i] = None;
            self.attempts.as_mut().slot(i).set(None);
        }
        self.observer.on_attempt(self.key.key(), record);
    }

    #[inline(always)]
    fn record(&mut self, record: &AttemptRecord) {
        self.observer.on_attempt(self.key.key(), record);
    }

    #[inline(always)]
    fn hears_records(&self) -> bool {
        self.observer.hears_attempts()
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

/// Keeps a completed attempt's result: the winner's, or the one the
/// call's error will carry.
#[inline(always)]
pub(super) fn keep<T, E>(
    id: AttemptId,
    kind: OutcomeKind,
    result: Result<T, E>,
    kept: &mut Option<(AttemptId, Result<T, E>)>,
    last_terminal: &mut bool,
) {
    match kind {
        OutcomeKind::Success => *kept = Some((id, result)),
        kind => {
            if !*last_terminal {
                *last_terminal = kind != OutcomeKind::Retryable;
                *kept = Some((id, result));
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
