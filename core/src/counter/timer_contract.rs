//! Tests of `counter.rs`: the timer contract.

use core::cell::{Cell, RefCell};
use core::future::{Future, IntoFuture};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::vec::Vec;

use super::TickCounter;
use crate::{call, AttemptInfo, AttemptRecord, Error, Instant, Observer, Policy, PolicyKey, Timer};

/// Keeps every attempt record.
#[derive(Default)]
struct Records(Vec<AttemptRecord>);

impl Observer for Records {
    fn on_attempt(&mut self, _: PolicyKey<'_>, record: &AttemptRecord) {
        self.0.push(*record);
    }
}

/// A 16-bit counter at 1 kHz behind a [`TickCounter`]; every read of
/// the clock advances the raw counter by `step` ticks (wrapping).
struct Counter16 {
    raw: Cell<u16>,
    step: u16,
    ext: RefCell<TickCounter>,
    sleeps: RefCell<Vec<Instant>>,
}

impl Counter16 {
    fn new(start: u16, step: u16) -> Self {
        Self {
            raw: Cell::new(start),
            step,
            ext: RefCell::new(TickCounter::new(16, 1000).unwrap()),
            sleeps: RefCell::new(Vec::new()),
        }
    }
}

struct Sleep<'a> {
    timer: &'a Counter16,
    deadline: Instant,
}

impl Future for Sleep<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.timer.now() >= self.deadline {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl<'a> Timer for &'a Counter16 {
    type Sleep = Sleep<'a>;
    fn now(&self) -> Instant {
        let raw = self.raw.get();
        self.raw.set(raw.wrapping_add(self.step));
        self.ext.borrow_mut().observe(u32::from(raw))
    }
    fn sleep_until(&self, deadline: Instant) -> Sleep<'a> {
        self.sleeps.borrow_mut().push(deadline);
        Sleep {
            timer: self,
            deadline,
        }
    }
}

/// Polls `fut` until it is ready, at most `polls` times.
fn run<F: IntoFuture>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = core::pin::pin!(fut.into_future());
    let mut cx = Context::from_waker(Waker::noop());
    (0..polls).find_map(|_| match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    })
}

fn policy(max_attempts: u32) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = max_attempts;
    p.retry.initial_backoff = Duration::from_millis(10);
    p.retry.backoff_multiplier = 1.0;
    p
}

/// Fails the first `n` attempts.
fn flaky(n: u32) -> impl FnMut(AttemptInfo) -> core::future::Ready<Result<u32, &'static str>> {
    let mut left = n;
    move |_| {
        let fail = left > 0;
        left = left.saturating_sub(1);
        core::future::ready(if fail { Err("flaky") } else { Ok(7) })
    }
}

#[test]
fn a_counter_wrapping_during_a_call_gives_exact_times() {
    // 16 bits at 1 kHz wrap every 65.536 s; the call starts 5 ms before.
    let timer = Counter16::new(65_531, 1);
    let mut records = Records::default();
    let p = policy(3);
    let out = run(
        call(PolicyKey::parse("svc.Get"), &p, &timer, flaky(2)).observer(&mut records),
        1000,
    );
    assert_eq!(out, Some(Ok(7)));
    let r = &records.0;
    assert_eq!(r.len(), 3);
    for pair in r.windows(2) {
        // Each retry starts its backoff after the previous attempt
        // ended, on the same (extended) clock: 10 ms, not -65 s.
        assert!(pair[1].start >= pair[0].end + Duration::from_millis(10));
        assert!(pair[1].start - pair[0].end < Duration::from_millis(20));
    }
    assert!(r[0].start < Instant::from_millis(65_536));
    assert!(r[2].end > Instant::from_millis(65_536));
    assert!(r[2].end - r[0].start < Duration::from_millis(60));
}

/// A clock that reads each scripted instant once, then the last forever.
struct Script {
    times: RefCell<Vec<Instant>>,
    sleeps: Cell<u32>,
}

impl Timer for &Script {
    type Sleep = core::future::Ready<()>;
    fn now(&self) -> Instant {
        let mut t = self.times.borrow_mut();
        if t.len() > 1 {
            t.remove(0)
        } else {
            t[0]
        }
    }
    fn sleep_until(&self, _: Instant) -> Self::Sleep {
        self.sleeps.set(self.sleeps.get() + 1);
        core::future::ready(())
    }
}

/// In debug builds the async driver asserts the timer's clock is
/// monotonic (crate docs, driver contract step 4): a timer that breaks
/// the contract is caught where it is written.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "clock went backwards")]
fn a_clock_going_backwards_is_caught_in_debug_builds() {
    let timer = Script {
        times: RefCell::new([900, 800, 700].map(Instant::from_millis).to_vec()),
        sleeps: Cell::new(0),
    };
    let p = policy(3);
    let _ = run(
        call(PolicyKey::parse("svc.Get"), &p, &timer, flaky(2)),
        1000,
    );
}

/// In release builds (no assertion) the machine holds its clock: CI
/// runs this with `cargo test -p recourse-core --release --lib counter`.
#[test]
#[cfg(not(debug_assertions))]
fn a_clock_going_backwards_never_moves_the_machine_back() {
    let ms = Instant::from_millis;
    let timer = Script {
        // Each read earlier than the one before.
        times: RefCell::new(
            [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
                .map(ms)
                .to_vec(),
        ),
        sleeps: Cell::new(0),
    };
    let mut records = Records::default();
    let p = policy(3);
    let out = run(
        call(PolicyKey::parse("svc.Get"), &p, &timer, flaky(2)).observer(&mut records),
        1000,
    );
    assert_eq!(out, Some(Ok(7)));
    let r = &records.0;
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].start, ms(900));
    let mut latest = Instant::ZERO;
    for rec in r {
        assert!(rec.start >= latest, "{r:?}");
        assert!(rec.end >= rec.start, "{r:?}");
        latest = rec.end;
    }
    // Both backoffs are slept in full on the machine's clock.
    assert_eq!(r[1].backoff, Duration::from_millis(10));
    assert_eq!(r[1].start, r[0].end + Duration::from_millis(10));
    assert_eq!(r[2].start, r[1].end + Duration::from_millis(10));
    assert_eq!(timer.sleeps.get(), 2);
}

#[test]
fn a_deadline_already_past_wakes_at_once() {
    // Every read of the clock moves it 1 s: each backoff deadline is
    // past by the time the driver sleeps on it.
    let timer = Counter16::new(0, 1000);
    let p = policy(3);
    // Ready in a single poll: no sleep stays pending.
    let out = run(call(PolicyKey::parse("svc.Get"), &p, &timer, flaky(2)), 1);
    assert_eq!(out, Some(Ok(7)));
    // Each backoff was asked for at most once (a driver may also skip
    // a sleep whose deadline it sees is past).
    assert!(timer.sleeps.borrow().len() <= 2);
}

#[test]
fn a_policy_with_zero_attempts() {
    // Normalizing takes the default and names the field.
    let n = policy(0).normalize().unwrap();
    assert_eq!(n.policy.retry.max_attempts, 3);
    assert_eq!(std::format!("{}", n.changed), "retry.max_attempts");
    // Unnormalized, the call still makes its first attempt.
    let timer = Counter16::new(0, 1);
    let p = policy(0);
    let mut records = Records::default();
    let out = run(
        call(PolicyKey::parse("svc.Get"), &p, &timer, flaky(1)).observer(&mut records),
        1000,
    );
    assert!(
        matches!(out, Some(Err(Error::RetriesExhausted { attempts: 1, .. }))),
        "{out:?}"
    );
    assert_eq!(records.0.len(), 1);
}
