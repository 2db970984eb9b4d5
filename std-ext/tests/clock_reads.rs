//! The executor's clock reads (issue 16): a call that nobody times — no
//! observer, no timeline, a policy whose gate uses no time, no timeout, no
//! hedge — reads no clock on its success path; whenever someone can see an
//! instant (an observer, a timeline, a breaker, a budget), the call reads
//! the clock where it did and every elapsed time is exact, on tokio's
//! paused clock too.

mod common;

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Arc, Mutex, PoisonError};

use common::{attempts, ms, one};
use recourse::observer::{AttemptRecord, CallStart, CallSummary, Instant};
use recourse::{Executor, Observer, PolicyKey};

/// A virtual clock that counts its reads; its sleeps complete at once
/// (the clock jumps to their deadline), and an attempt moves it by what
/// the operation says.
#[derive(Clone, Default)]
struct Counted {
    now: Arc<AtomicU64>,
    reads: Arc<AtomicU32>,
}

impl Counted {
    fn reads(&self) -> u32 {
        self.reads.load(Ordering::SeqCst)
    }
    fn advance(&self, d: Duration) {
        self.now.fetch_add(
            u64::try_from(d.as_nanos()).expect("a short delay"),
            Ordering::SeqCst,
        );
    }
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst) / 1_000_000
    }
}

impl recourse::core_machine::Timer for Counted {
    type Sleep = core::future::Ready<()>;
    fn now(&self) -> Instant {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Instant::from_nanos(self.now.load(Ordering::SeqCst))
    }
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        self.now.fetch_max(deadline.as_nanos(), Ordering::SeqCst);
        core::future::ready(())
    }
}

/// Every instant the executor's observer is given, in ms.
#[derive(Default)]
struct Times(Mutex<Vec<(&'static str, u64, u64)>>);

impl Times {
    fn push(&self, what: &'static str, a: Instant, b: Instant) {
        let ms = |i: Instant| i.as_nanos() / 1_000_000;
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((what, ms(a), ms(b)));
    }
    fn get(&self) -> Vec<(&'static str, u64, u64)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Observer for Times {
    fn on_start(&self, _: PolicyKey<'_>, start: &CallStart) {
        self.push("start", start.start, start.start);
    }
    fn on_attempt(&self, _: PolicyKey<'_>, r: &AttemptRecord) {
        self.push("attempt", r.start, r.end);
    }
    fn on_success(&self, _: PolicyKey<'_>, s: &CallSummary) {
        self.push("success", s.start, s.end);
    }
    fn on_failure(&self, _: PolicyKey<'_>, s: &CallSummary) {
        self.push("failure", s.start, s.end);
    }
}

/// One attempt that takes 5 ms of the counted clock and succeeds.
async fn five_ms(clock: &Counted) -> Result<u32, &'static str> {
    clock.advance(ms(5));
    Ok(1)
}

#[test]
fn an_executor_call_nobody_times_reads_no_clock_and_one_observed_reads_two() {
    let clock = Counted::default();
    clock.advance(ms(1_000));
    let quiet = Executor::builder()
        .provider(one("svc.A", attempts(3)))
        .timer(clock.clone())
        .build();
    let result = common::poll_once(quiet.call("svc.A", |_| five_ms(&clock)));
    assert_eq!(result, Ok(1));
    assert_eq!(clock.reads(), 0, "no observer, no timeline, nothing timed");

    // A timeline: the start and the end, exact.
    let (result, timeline) =
        common::poll_once(quiet.call_with_timeline("svc.A", |_| five_ms(&clock)));
    assert_eq!(result, Ok(1));
    assert_eq!(clock.reads(), 2);
    assert_eq!(timeline.duration(), ms(5));
    assert_eq!(timeline.attempts[0].duration(), ms(5));

    // An observer: the same.
    let times = Arc::new(Times::default());
    let observed = Executor::builder()
        .provider(one("svc.A", attempts(3)))
        .observer(Arc::clone(&times))
        .timer(clock.clone())
        .build();
    let before = clock.reads();
    let t0 = clock.now_ms();
    let result = common::poll_once(observed.call("svc.A", |_| five_ms(&clock)));
    assert_eq!(result, Ok(1));
    assert_eq!(clock.reads() - before, 2);
    assert_eq!(
        times.get(),
        [
            ("start", t0, t0),
            ("attempt", t0, t0 + 5),
            ("success", t0, t0 + 5)
        ]
    );
}

#[test]
fn a_breaker_or_a_timeout_has_the_clock_read_without_an_observer() {
    let clock = Counted::default();
    let mut guarded = attempts(3);
    guarded.circuit.enabled = true;
    let mut timed = attempts(3);
    timed.retry.timeout_per_attempt = Some(ms(50));
    for (what, policy) in [("breaker", guarded), ("timeout", timed)] {
        let exec = Executor::builder()
            .provider(one("svc.A", policy))
            .timer(clock.clone())
            .build();
        let before = clock.reads();
        let result = common::poll_once(exec.call("svc.A", |_| five_ms(&clock)));
        assert_eq!(result, Ok(1), "{what}");
        assert_eq!(clock.reads() - before, 2, "{what}: the start and the end");
    }
}

#[test]
fn an_unobserved_retry_reads_the_failure_it_backs_off_from() {
    let clock = Counted::default();
    let exec = Executor::builder()
        .provider(one("svc.A", attempts(3)))
        .timer(clock.clone())
        .build();
    let mut n = 0;
    let result = common::poll_once(exec.call("svc.A", |_| {
        n += 1;
        let fail = n == 1;
        let clock = &clock;
        async move {
            clock.advance(ms(5));
            if fail {
                Err("flaky")
            } else {
                Ok(2)
            }
        }
    }));
    assert_eq!(result, Ok(2));
    // The failure's end and the backoff's end (not the start, nor the
    // success's end).
    assert_eq!(clock.reads(), 2);
    // 5 ms, the 10 ms backoff in full, 5 ms.
    assert_eq!(clock.now_ms(), 20);

    // (An executor's policy always backs off: normalized to at least
    // 1 ms, so its retries always read the failure's end.)
}

/// On tokio's paused clock, through the default timer: what an observer
/// and a timeline see is exact, and a call nobody times still backs off
/// in full.
#[tokio::test(start_paused = true)]
async fn elapsed_times_are_exact_on_the_paused_clock_when_observed() {
    let times = Arc::new(Times::default());
    let exec = Executor::builder()
        .provider(one("svc.A", attempts(3)))
        .observer(Arc::clone(&times))
        .build();
    let mut n = 0;
    let result = exec
        .call("svc.A", |_| {
            n += 1;
            let (took, r) = if n == 1 {
                (5, Err("flaky"))
            } else {
                (7, Ok(1))
            };
            async move {
                tokio::time::sleep(ms(took)).await;
                r
            }
        })
        .await;
    assert_eq!(result, Ok(1));
    let t = times.get();
    let t0 = t[0].1;
    let rel: Vec<_> = t.iter().map(|(w, a, b)| (*w, a - t0, b - t0)).collect();
    // The 10 ms backoff between the attempts.
    assert_eq!(
        rel,
        [
            ("start", 0, 0),
            ("attempt", 0, 5),
            ("attempt", 15, 22),
            ("success", 0, 22)
        ]
    );

    // A timeline on an executor without an observer.
    let quiet = Executor::builder()
        .provider(one("svc.A", attempts(3)))
        .build();
    let (result, timeline) = quiet
        .call_with_timeline("svc.A", |_| async {
            tokio::time::sleep(ms(5)).await;
            Ok::<_, ()>(1)
        })
        .await;
    assert_eq!(result, Ok(1));
    assert_eq!(timeline.duration(), ms(5));
    assert_eq!(timeline.attempts[0].duration(), ms(5));

    // Nobody times it: the backoffs are slept in full all the same.
    let started = tokio::time::Instant::now();
    let mut n = 0;
    let result = quiet
        .call("svc.A", |_| {
            n += 1;
            let r = if n < 3 { Err("flaky") } else { Ok(3) };
            async move {
                tokio::time::sleep(ms(5)).await;
                r
            }
        })
        .await;
    assert_eq!(result, Ok(3));
    assert_eq!(started.elapsed(), ms(5 + 10 + 5 + 20 + 5));
}
