//! How often the driver reads its timer's clock (issue 16: at most one
//! read per attempt end). A call reads the clock once when it starts (its
//! first attempt's start), once when each attempt ends (the next attempt,
//! launched at once, starts at that instant), and once when a sleep ends
//! (a backoff, a hedge delay, a deadline), so that a timer that wakes late
//! never lets the machine launch at an instant already past.

use core::cell::Cell;
use core::future::IntoFuture;
use std::rc::Rc;

use super::driver::{VSleep, VTimer};
use super::{dur, ms};
use crate::call;
use crate::error::Error;
use crate::key::PolicyKey;
use crate::observer::{CallEnd, Observer};
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
    let fut = call(KEY, Policy::DEFAULT, t.clone(), |_: AttemptInfo| {
        core::future::ready(Ok::<_, ()>(1))
    });
    assert_eq!(
        futures_util::FutureExt::now_or_never(fut.into_future()),
        Some(Ok(1))
    );
    assert_eq!(t.reads.get(), 2);
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
