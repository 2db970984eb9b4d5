//! How often the driver reads its timer's clock (issue 16: at most one
//! read per attempt end). A call reads the clock once when it starts (its
//! first attempt's start), once when each attempt ends (the next attempt,
//! launched at once, starts at that instant), and once when a sleep ends
//! (a backoff, a hedge delay, a deadline), so that a timer that wakes late
//! never lets the machine launch at an instant already past.
//!
//! Unless nothing uses the instants: a call whose policy has no timeout
//! and does not hedge, whose gate and observer use no time
//! ([`Gate::uses_time`](crate::Gate::uses_time),
//! [`Observer::uses_time`]), reads no clock at its start nor at the end of
//! an attempt after which the machine cannot sleep (a success, a failure
//! that ends the call, a retry at once), whichever stage of the machine
//! decides it; it reads a retryable failure's end where a backoff or a
//! retry-after hint may follow (the sleep counts from it), and each
//! sleep's end.

use core::cell::Cell;
use core::future::IntoFuture;
use std::rc::Rc;

use super::driver::{VSleep, VTimer};
use super::{dur, ms};
use crate::call;
use crate::error::Error;
use crate::gate::{Admission, AdmitRequest, Gate};
use crate::key::PolicyKey;
use crate::observer::{CallEnd, Observer};
use crate::outcome::Outcome;
use crate::policy::Policy;
use crate::record::{AttemptInfo, AttemptRecord};
use crate::time::{Instant, Timer};

const KEY: PolicyKey<'static> = PolicyKey::new("svc", "Get");

/// A virtual clock that counts its reads.
#[derive(Clone, Default)]
struct Counted {
    inner: VTimer,
    reads: Rc<Cell<u32>>,
}

impl Counted {
    /// A clock that reads `epoch` (the default reads zero).
    fn starting_at(epoch: Instant) -> Self {
        Self {
            inner: VTimer::starting_at(epoch),
            reads: Rc::default(),
        }
    }
}

impl Timer for Counted {
    type Sleep = VSleep;
    fn now(&self) -> Instant {
        self.reads.set(self.reads.get() + 1);
        self.inner.now()
    }
    fn sleep_until(&self, until: Instant) -> VSleep {
        self.inner.sleep_until(until)
    }
}

/// Each attempt's `(start, end)` and the call's end, in ms.
#[derive(Default)]
struct Spans {
    attempts: std::vec::Vec<(u64, u64)>,
    end: Option<(u64, u64)>,
}

impl Observer for Spans {
    fn on_attempt(&mut self, _: PolicyKey<'_>, r: &AttemptRecord) {
        let ms = |i: Instant| i.as_nanos() / 1_000_000;
        self.attempts.push((ms(r.start), ms(r.end)));
    }
    fn on_success(&mut self, _: PolicyKey<'_>, end: &CallEnd) {
        let ms = |i: Instant| i.as_nanos() / 1_000_000;
        self.end = Some((ms(end.start), ms(end.end)));
    }
    fn on_failure(&mut self, _: PolicyKey<'_>, end: &CallEnd) {
        self.on_success(KEY, end);
    }
}

#[test]
fn a_first_attempt_that_succeeds_reads_the_clock_at_the_start_and_the_end() {
    let t = Counted::default();
    let mut spans = Spans::default();
    let fut = call(KEY, Policy::DEFAULT, t.clone(), |_: AttemptInfo| {
        t.inner.after(dur(5), Ok::<_, ()>(1))
    })
    .observer(&mut spans);
    assert_eq!(t.inner.run(fut.into_future()), Ok(1));
    assert_eq!(t.reads.get(), 2, "one read at the start, one at the end");
    assert_eq!(spans.attempts, [(0, 5)]);
    assert_eq!(spans.end, Some((0, 5)));
}

#[test]
fn an_attempt_that_completes_at_once_still_reads_once_at_its_end() {
    let t = Counted::default();
    // An observer that uses the instants (without one, nothing would:
    // see `a_call_whose_instants_nobody_uses_reads_no_clock_when_it_succeeds`).
    let mut spans = Spans::default();
    let fut = call(KEY, Policy::DEFAULT, t.clone(), |_: AttemptInfo| {
        core::future::ready(Ok::<_, ()>(1))
    })
    .observer(&mut spans);
    assert_eq!(
        futures_util::FutureExt::now_or_never(fut.into_future()),
        Some(Ok(1))
    );
    assert_eq!(t.reads.get(), 2);
    assert_eq!(spans.end, Some((0, 0)));
}

#[test]
fn each_retry_reads_once_at_its_attempts_end_and_once_after_its_backoff() {
    let t = Counted::default();
    let n = Cell::new(0);
    let mut spans = Spans::default();
    let fut = call(KEY, Policy::DEFAULT, t.clone(), |_: AttemptInfo| {
        n.set(n.get() + 1);
        let r = if n.get() < 3 { Err("flaky") } else { Ok(7) };
        t.inner.after(dur(5), r)
    })
    .observer(&mut spans);
    assert_eq!(t.inner.run(fut.into_future()), Ok(7));
    // The start, three attempt ends, two backoff ends: no read at an
    // attempt's launch (it starts at the instant of the event fed).
    assert_eq!(t.reads.get(), 1 + 3 + 2);
    assert_eq!(spans.attempts, [(0, 5), (15, 20), (40, 45)]);
    assert_eq!(spans.end, Some((0, 45)));
}

#[test]
fn an_attempt_timed_out_reads_once_at_its_deadline() {
    let t = Counted::default();
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 1;
    p.retry.timeout_per_attempt = Some(dur(30));
    let mut spans = Spans::default();
    let fut = call(KEY, &p, t.clone(), |_: AttemptInfo| {
        core::future::pending::<Result<u32, ()>>()
    })
    .observer(&mut spans);
    assert_eq!(
        t.inner.run(fut.into_future()),
        Err(Error::AttemptsTimedOut { attempts: 1 })
    );
    assert_eq!(t.reads.get(), 2, "the start and the deadline's end");
    assert_eq!(spans.attempts, [(0, 30)]);
    assert_eq!(t.inner.now(), ms(30));
}

/// An observer that hears every event but says it uses no instant.
#[derive(Default)]
struct Timeless {
    attempts: u32,
    ended: u32,
}

impl Observer for Timeless {
    fn on_attempt(&mut self, _: PolicyKey<'_>, _: &AttemptRecord) {
        self.attempts += 1;
    }
    fn uses_time(&self) -> bool {
        false
    }
    const MAY_IGNORE_TIME: bool = true;
    fn on_success(&mut self, _: PolicyKey<'_>, _: &CallEnd) {
        self.ended += 1;
    }
    fn on_failure(&mut self, _: PolicyKey<'_>, _: &CallEnd) {
        self.ended += 1;
    }
}

/// A gate that lets everything through, and uses time (the default) or
/// not.
struct Open {
    uses_time: bool,
}

impl Gate for Open {
    fn admit(&mut self, _: &AdmitRequest) -> Admission {
        Admission::NO_BUDGET
    }
    fn uses_time(&self) -> bool {
        self.uses_time
    }
    const MAY_IGNORE_TIME: bool = true;
}

/// [`Timeless`] without `MAY_IGNORE_TIME`: its `uses_time` is never asked.
#[derive(Default)]
struct Undeclared;

impl Observer for Undeclared {
    fn uses_time(&self) -> bool {
        false
    }
}

/// No backoff: a retryable failure is retried at once.
fn at_once(max_attempts: u32) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = max_attempts;
    p.retry.initial_backoff = dur(0);
    p.retry.max_backoff = dur(0);
    p
}

/// Fails the first `n` attempts (`"flaky"`), after 5 ms each, then
/// answers 7.
fn flaky(t: &Counted, n: u32) -> impl FnMut(AttemptInfo) -> VAfter + '_ {
    let mut left = n;
    move |_| {
        let r = if left > 0 { Err("flaky") } else { Ok(7) };
        left = left.saturating_sub(1);
        std::boxed::Box::pin(t.inner.after(dur(5), r))
    }
}

type VAfter =
    core::pin::Pin<std::boxed::Box<dyn core::future::Future<Output = Result<u32, &'static str>>>>;

#[test]
fn a_call_whose_instants_nobody_uses_reads_no_clock_when_it_succeeds() {
    let t = Counted::default();
    let fut = call(KEY, Policy::DEFAULT, t.clone(), |_: AttemptInfo| {
        t.inner.after(dur(5), Ok::<_, ()>(1))
    });
    assert_eq!(t.inner.run(fut.into_future()), Ok(1));
    assert_eq!(t.reads.get(), 0, "no gate, no observer, no timeout");
    // The attempt ran its 5 ms all the same.
    assert_eq!(t.inner.now(), ms(5));

    // An observer that hears every event but uses no instant: the same.
    let t = Counted::default();
    let mut quiet = Timeless::default();
    let fut = call(KEY, Policy::DEFAULT, t.clone(), |_: AttemptInfo| {
        core::future::ready(Ok::<_, ()>(1))
    })
    .observer(&mut quiet)
    .gate(Open { uses_time: false });
    assert_eq!(
        futures_util::FutureExt::now_or_never(fut.into_future()),
        Some(Ok(1))
    );
    assert_eq!(t.reads.get(), 0);
    assert_eq!((quiet.attempts, quiet.ended), (1, 1));

    // An observer type that does not declare it may ignore time is taken
    // to use it: its `uses_time` is not asked, and the clock is read.
    let t = Counted::default();
    let fut = call(KEY, Policy::DEFAULT, t.clone(), |_: AttemptInfo| {
        core::future::ready(Ok::<_, ()>(1))
    })
    .observer(Undeclared);
    assert_eq!(
        futures_util::FutureExt::now_or_never(fut.into_future()),
        Some(Ok(1))
    );
    assert_eq!(t.reads.get(), 2);
}

#[test]
fn a_gate_an_observer_or_a_timeout_that_uses_time_has_the_start_and_end_read() {
    // The gate uses time (the default answer).
    let t = Counted::default();
    let fut = call(KEY, Policy::DEFAULT, t.clone(), |_: AttemptInfo| {
        t.inner.after(dur(5), Ok::<_, ()>(1))
    })
    .gate(Open { uses_time: true });
    assert_eq!(t.inner.run(fut.into_future()), Ok(1));
    assert_eq!(t.reads.get(), 2, "the gate: the start and the end");

    // The observer uses time (an observer's default), the gate not.
    let t = Counted::default();
    let mut spans = Spans::default();
    let fut = call(KEY, Policy::DEFAULT, t.clone(), |_: AttemptInfo| {
        t.inner.after(dur(5), Ok::<_, ()>(1))
    })
    .gate(Open { uses_time: false })
    .observer(&mut spans);
    assert_eq!(t.inner.run(fut.into_future()), Ok(1));
    assert_eq!(t.reads.get(), 2, "the observer: the start and the end");
    assert_eq!(spans.attempts, [(0, 5)]);
    assert_eq!(spans.end, Some((0, 5)));

    // A timeout per attempt, or overall, with nobody listening: the
    // machine's deadlines count from the start.
    for overall in [false, true] {
        let mut p = Policy::DEFAULT;
        if overall {
            p.retry.overall_timeout = Some(dur(30));
        } else {
            p.retry.timeout_per_attempt = Some(dur(30));
        }
        let t = Counted::starting_at(ms(100));
        let fut = call(KEY, &p, t.clone(), |_: AttemptInfo| {
            t.inner.after(dur(5), Ok::<_, ()>(1))
        });
        assert_eq!(t.inner.run(fut.into_future()), Ok(1));
        assert_eq!(t.reads.get(), 2, "overall {overall}: the start and the end");
    }
}

#[test]
fn an_unobserved_timeout_still_cuts_the_attempt_at_its_deadline() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 1;
    p.retry.timeout_per_attempt = Some(dur(30));
    let t = Counted::starting_at(ms(100));
    let fut = call(KEY, &p, t.clone(), |_: AttemptInfo| {
        core::future::pending::<Result<u32, ()>>()
    });
    assert_eq!(
        t.inner.run(fut.into_future()),
        Err(Error::AttemptsTimedOut { attempts: 1 })
    );
    assert_eq!(t.reads.get(), 2, "the start and the deadline's end");
    assert_eq!(t.inner.now(), ms(130));
}

#[test]
fn an_unobserved_retry_at_once_reads_no_clock() {
    let t = Counted::default();
    let mut quiet = Timeless::default();
    let fut = call(KEY, at_once(3), t.clone(), flaky(&t, 2)).observer(&mut quiet);
    assert_eq!(t.inner.run(fut.into_future()), Ok(7));
    assert_eq!(t.reads.get(), 0);
    assert_eq!(quiet.attempts, 3);
    assert_eq!(t.inner.now(), ms(15));

    // Attempts exhausted, and a failure that is not retryable: the call
    // ends, and no sleep needs the time.
    let t = Counted::default();
    let fut = call(KEY, at_once(2), t.clone(), flaky(&t, 5));
    assert_eq!(
        t.inner.run(fut.into_future()),
        Err(Error::RetriesExhausted {
            last: Some("flaky"),
            attempts: 2
        })
    );
    assert_eq!(t.reads.get(), 0);
    let t = Counted::default();
    let fut = call(KEY, Policy::DEFAULT, t.clone(), flaky(&t, 5)).classifier(
        |r: &Result<u32, &'static str>| match r {
            Ok(_) => Outcome::SUCCESS,
            Err(_) => Outcome::non_retryable("fatal"),
        },
    );
    assert!(matches!(
        t.inner.run(fut.into_future()),
        Err(Error::Operation { error: "flaky", .. })
    ));
    assert_eq!(
        t.reads.get(),
        0,
        "a backoff policy, but nothing to back off"
    );
}

#[test]
fn an_unobserved_retry_reads_the_end_it_backs_off_from_and_sleeps_in_full() {
    // `Policy::DEFAULT` backs off 10 ms, then 20 ms (no jitter).
    let t = Counted::starting_at(ms(1_000));
    let fut = call(KEY, Policy::DEFAULT, t.clone(), flaky(&t, 2));
    assert_eq!(t.inner.run(fut.into_future()), Ok(7));
    // Each failure's end (a backoff follows) and each backoff's end; not
    // the start, nor the success's end. Two reads fewer than
    // `each_retry_reads_once_at_its_attempts_end_and_once_after_its_backoff`.
    assert_eq!(t.reads.get(), 2 + 2);
    // Both backoffs slept in full, from the failures' ends.
    assert_eq!(t.inner.now(), ms(1_000 + 5 + 10 + 5 + 20 + 5));

    // A retry-after hint under a policy without backoff: the same read.
    let t = Counted::starting_at(ms(1_000));
    let fut = call(KEY, at_once(3), t.clone(), flaky(&t, 1)).classifier(
        |r: &Result<u32, &'static str>| match r {
            Ok(_) => Outcome::SUCCESS,
            Err(_) => Outcome::retryable("busy").with_retry_after(dur(50)),
        },
    );
    assert_eq!(t.inner.run(fut.into_future()), Ok(7));
    assert_eq!(t.reads.get(), 1 + 1, "the failure and the hint's end");
    assert_eq!(t.inner.now(), ms(1_000 + 5 + 50 + 5));
}

#[test]
fn an_unobserved_hedging_call_reads_its_start_and_hedges_on_time() {
    let mut p = Policy::DEFAULT;
    p.hedge.enabled = true;
    p.hedge.max_hedges = 1;
    p.hedge.hedge_delay = dur(20);
    let t = Counted::starting_at(ms(1_000));
    let fut = call(KEY, &p, t.clone(), |a: AttemptInfo| {
        let late = if a.is_hedge { dur(5) } else { dur(100) };
        t.inner.after(late, Ok::<_, ()>(u32::from(a.is_hedge)))
    })
    .slots::<2>();
    assert_eq!(t.inner.run(fut.into_future()), Ok(1));
    // The start, the hedge delay's end, the hedge's end.
    assert_eq!(t.reads.get(), 3);
    assert_eq!(t.inner.now(), ms(1_000 + 20 + 5));
}
