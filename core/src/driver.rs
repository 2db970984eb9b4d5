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
use crate::machine::{Action, CallMachine, Cause, Event, Options, Verdict};
use crate::observer::{CallEnd, Observer};
use crate::outcome::{Classifier, DefaultClassifier};
use crate::policy::Policy;
use crate::record::{AttemptId, AttemptInfo};
use crate::time::{Instant, Timer};

/// The machine the driver runs: one attempt in flight at a time.
type DriverMachine = CallMachine<1>;

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
    pub struct Call<'k, Tm, Op, Fut, T, E, C = DefaultClassifier, O = (), G = ()>
    where
        Tm: Timer,
        O: Observer,
        G: Gate,
    {
        key: PolicyKey<'k>,
        machine: DriverMachine,
        timer: Tm,
        op: Op,
        classifier: C,
        observer: O,
        gate: G,
        state: State,
        attempt_id: AttemptId,
        sleep_at: Instant,
        last: Option<(AttemptId, Result<T, E>)>,
        winner: Option<Result<T, E>>,
        #[pin]
        attempt: Option<Fut>,
        #[pin]
        sleep: Option<Tm::Sleep>,
    }

    impl<'k, Tm, Op, Fut, T, E, C, O, G> PinnedDrop for Call<'k, Tm, Op, Fut, T, E, C, O, G>
    where
        Tm: Timer,
        O: Observer,
        G: Gate,
    {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if *this.state != State::Running {
                return;
            }
            // Stop the attempt before anyone hears about it.
            this.attempt.set(None);
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
    let rng = fastrand::Rng::with_seed(call_seed(timer.now()));
    CallBuilder {
        key,
        machine: CallMachine::new(policy, Options::DEFAULT, rng),
        timer,
        op,
        classifier: DefaultClassifier,
        observer: (),
        gate: (),
    }
}

/// A call being configured; `.await` it (it is [`IntoFuture`]) or turn it
/// into a [`Call`] with [`IntoFuture::into_future`].
#[derive(Debug)]
#[must_use = "a call does nothing unless awaited"]
pub struct CallBuilder<'k, Tm, Op, C = DefaultClassifier, O = (), G = ()> {
    key: PolicyKey<'k>,
    machine: DriverMachine,
    timer: Tm,
    op: Op,
    classifier: C,
    observer: O,
    gate: G,
}

impl<'k, Tm, Op, C, O, G> CallBuilder<'k, Tm, Op, C, O, G> {
    /// Uses `rng` for jitter draws.
    pub fn rng(mut self, rng: fastrand::Rng) -> Self {
        self.machine.set_rng(rng);
        self
    }

    /// Uses executor-wide `options` (such as the retry-after ceiling).
    pub fn options(mut self, options: Options) -> Self {
        self.machine.set_options(options);
        self
    }

    /// Classifies results with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> CallBuilder<'k, Tm, Op, C2, O, G> {
        let Self {
            key,
            machine,
            timer,
            op,
            observer,
            gate,
            ..
        } = self;
        CallBuilder {
            key,
            machine,
            timer,
            op,
            classifier,
            observer,
            gate,
        }
    }

    /// Reports to `observer` (pass `&mut o` to read it after the call).
    pub fn observer<O2: Observer>(self, observer: O2) -> CallBuilder<'k, Tm, Op, C, O2, G> {
        let Self {
            key,
            machine,
            timer,
            op,
            classifier,
            gate,
            ..
        } = self;
        CallBuilder {
            key,
            machine,
            timer,
            op,
            classifier,
            observer,
            gate,
        }
    }

    /// Consults `gate` before every attempt (pass `&mut g` to share one).
    pub fn gate<G2: Gate>(self, gate: G2) -> CallBuilder<'k, Tm, Op, C, O, G2> {
        let Self {
            key,
            machine,
            timer,
            op,
            classifier,
            observer,
            ..
        } = self;
        CallBuilder {
            key,
            machine,
            timer,
            op,
            classifier,
            observer,
            gate,
        }
    }
}

impl<'k, Tm, Op, Fut, T, E, C, O, G> IntoFuture for CallBuilder<'k, Tm, Op, C, O, G>
where
    Tm: Timer,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
    O: Observer,
    G: Gate,
{
    type Output = Result<T, Error<E>>;
    type IntoFuture = Call<'k, Tm, Op, Fut, T, E, C, O, G>;

    fn into_future(self) -> Self::IntoFuture {
        Call {
            key: self.key,
            machine: self.machine,
            timer: self.timer,
            op: self.op,
            classifier: self.classifier,
            observer: self.observer,
            gate: self.gate,
            state: State::Idle,
            attempt_id: AttemptId(0),
            sleep_at: Instant::ZERO,
            last: None,
            winner: None,
            attempt: None,
            sleep: None,
        }
    }
}

impl<Tm, Op, Fut, T, E, C, O, G> Future for Call<'_, Tm, Op, Fut, T, E, C, O, G>
where
    Tm: Timer,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
    O: Observer,
    G: Gate,
{
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match *this.state {
            State::Idle => {
                let now = this.timer.now();
                this.machine.handle(Event::Start { now });
                this.observer.on_start(*this.key, now);
                *this.state = State::Running;
            }
            State::Running => {}
            State::Done => panic!("`Call` polled after completion"),
        }
        loop {
            if let Some(attempt) = this.attempt.as_mut().as_pin_mut() {
                if let Poll::Ready(result) = attempt.poll(cx) {
                    this.attempt.set(None);
                    let outcome = this.classifier.classify(&result);
                    let id = *this.attempt_id;
                    let now = this.timer.now();
                    this.machine
                        .handle(Event::AttemptFinished { id, outcome, now });
                    if outcome.is_success() {
                        *this.winner = Some(result);
                    } else {
                        *this.last = Some((id, result));
                    }
                }
            }
            match this.machine.poll(this.gate) {
                Action::Record(record) => this.observer.on_attempt(*this.key, &record),
                Action::Launch(info) => {
                    *this.attempt_id = info.id;
                    this.attempt.set(Some((this.op)(info)));
                }
                Action::Cancel(record) => {
                    debug_assert_eq!(record.info.id, *this.attempt_id);
                    this.attempt.set(None);
                    this.observer.on_attempt(*this.key, &record);
                }
                Action::Wait { until, .. } => {
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
                    // The timer says `until` has passed; trust it over a
                    // clock read that rounds a hair earlier, or the machine
                    // would ask for the same wait again.
                    let now = this.timer.now().max(until);
                    this.machine.handle(Event::Tick { now });
                }
                Action::AwaitAttempts => return Poll::Pending,
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
        }
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

fn call_end(machine: &DriverMachine, verdict: Verdict) -> CallEnd {
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
