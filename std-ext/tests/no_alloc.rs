//! A call without a timeline, on an executor without an observer, does not
//! touch the heap.
//!
//! The timer here is a virtual clock whose sleeps complete at once (jumping
//! the clock to their deadline), so a whole call with retries completes in
//! one poll on this thread, where allocations are counted.

mod common;
use common::JumpClock;

use core::future::Future;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use recourse::{Error, Executor, Policy, StaticProvider};

fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = core::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn flaky_call(exec: &Executor<JumpClock>) -> Option<Result<u32, Error<&'static str>>> {
    let mut n = 0;
    poll_once(exec.call("svc.Flaky", |_| {
        n += 1;
        core::future::ready(if n < 3 { Err("reset") } else { Ok(n) })
    }))
}

#[test]
fn a_plain_call_does_not_allocate() {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 5;
    p.retry.timeout_per_attempt = Some(Duration::from_millis(50));
    // The counter counts: a timeline is allocated.
    let exec = Executor::builder().timer(JumpClock::default()).build();
    let info = allocation_counter::measure(|| {
        let _ =
            poll_once(exec.call_with_timeline("svc.A", |_| core::future::ready(Ok::<_, ()>(()))));
    });
    assert!(info.count_total > 0);

    for seed in [None, Some(7)] {
        let builder = Executor::builder()
            .provider(
                StaticProvider::builder()
                    .policy("svc.Flaky", p.clone())
                    .unwrap()
                    .build(),
            )
            .timer(JumpClock::default());
        let exec = match seed {
            Some(s) => builder.seed(s).build(),
            None => builder.build(),
        };
        // Warm up thread-locals (the entropy RNG) outside the count.
        assert_eq!(flaky_call(&exec), Some(Ok(3)));
        let mut result = None;
        let info = allocation_counter::measure(|| result = flaky_call(&exec));
        assert_eq!(result, Some(Ok(3)));
        assert_eq!(info.count_total, 0, "seed {seed:?}: {info:?}");
        // Missing policy (fallback) does not allocate either.
        let info = allocation_counter::measure(|| {
            let _ = poll_once(exec.call("svc.Other", |_| core::future::ready(Err::<(), _>(()))));
        });
        assert_eq!(info.count_total, 0, "fallback, seed {seed:?}: {info:?}");
    }
}

/// The primary attempt never answers; the hedge answers at once.
struct Hedged {
    is_hedge: bool,
}

impl Future for Hedged {
    type Output = Result<u32, ()>;
    fn poll(self: core::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<u32, ()>> {
        if self.is_hedge {
            Poll::Ready(Ok(2))
        } else {
            Poll::Pending
        }
    }
}

/// Issue 16: a hedged call (one hedge, the usual policy) holds its two
/// attempts in place: no allocation either, on a fixed delay or a `p95`
/// trigger (whose latency sketch, made by the first call of its key, is
/// kept with the key's answer).
#[test]
fn a_hedged_call_does_not_allocate() {
    let mut fixed = Policy::DEFAULT;
    fixed.retry.max_attempts = 1;
    fixed.hedge.enabled = true;
    fixed.hedge.max_hedges = 1;
    fixed.hedge.hedge_delay = Duration::from_millis(10);
    let mut p95 = fixed.clone();
    p95.hedge.trigger = "p95".try_into().expect("a trigger name");
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy("svc.Hedge", fixed)
                .unwrap()
                .policy("svc.HedgeP95", p95)
                .unwrap()
                .build(),
        )
        .timer(JumpClock::default())
        .build();
    for key in ["svc.Hedge", "svc.HedgeP95"] {
        let call = || {
            poll_once(exec.call(key, |attempt: recourse::AttemptInfo| Hedged {
                is_hedge: attempt.kind() == recourse::observer::AttemptKind::Hedge,
            }))
        };
        // Warm up: the key's answer and sketch, the thread's cache.
        assert_eq!(call(), Some(Ok(2)), "{key}");
        let mut result = None;
        let info = allocation_counter::measure(|| result = call());
        assert_eq!(result, Some(Ok(2)), "{key}");
        assert_eq!(info.count_total, 0, "{key}: {info:?}");
    }
}
