//! The runtime conformance suite: what every [`Timer`] adapter must make
//! true of a real call.
//!
//! Each case takes a factory of the runtime's timer, runs one call through
//! [`recourse_core::call`] on it, and measures elapsed time with the timer's
//! own [`Timer::now`] — real time on a real runtime, virtual time on tokio's
//! paused clock — so the same assertions hold on both. Durations are real
//! but short (10–100 ms); lower bounds are exact (a timer may fire late,
//! never early), upper bounds leave [`SLACK`] for a loaded machine while
//! staying well below what a broken adapter would take.
//!
//! Every runtime's test file (`tests/conformance_*.rs`) runs every case,
//! each as its own test, inside that runtime's executor.

use core::cell::Cell;
use core::future::IntoFuture;
use core::pin::pin;

use futures_util::future::{select, Either};
use recourse_core::{call, reason, AttemptInfo, Cause, Error, Jitter, Policy, Timer};

use crate::{hang, ms, policy, DropCounter, Recorder, Seen, KEY};

/// How late a timer may fire on a busy machine, for upper bounds.
pub const SLACK: core::time::Duration = ms(50);

/// An upper bound no case comes near unless sleeps are broken.
pub const SANE: core::time::Duration = ms(1000);

/// Backoff really sleeps: 20 ms then 40 ms (multiplier 2, no jitter)
/// between three attempts, the first two failing.
pub async fn backoff_really_sleeps<Tm: Timer>(new_timer: impl Fn() -> Tm) {
    let timer = new_timer();
    let policy = policy(|r| {
        r.max_attempts = 3;
        r.initial_backoff = ms(20);
        r.backoff_multiplier = 2.0;
        r.jitter = Jitter::None;
    });
    let attempts = DropCounter::new();
    let rec = Recorder::new();
    let start = timer.now();
    let result = call(KEY, &policy, &timer, |info: AttemptInfo| {
        let n = info.retry_index;
        attempts.wrap(async move {
            if n < 2 {
                Err("flaky")
            } else {
                Ok(n)
            }
        })
    })
    .observer(rec.clone())
    .await;
    let elapsed = timer.now() - start;

    assert_eq!(result, Ok(2));
    assert!(elapsed >= ms(20 + 40), "backoff did not sleep: {elapsed:?}");
    assert!(elapsed < SANE, "backoff slept far too long: {elapsed:?}");
    assert_eq!((attempts.created(), attempts.live()), (3, 0));
    rec.assert_contract();
    let r = rec.attempts();
    assert_eq!(
        r.iter().map(|r| r.backoff).collect::<Vec<_>>(),
        [ms(0), ms(20), ms(40)]
    );
    assert!(r[1].start - r[0].end >= ms(20), "{:?}", rec.lines());
    assert!(r[2].start - r[1].end >= ms(40), "{:?}", rec.lines());
}

/// A hung attempt is cut at its 30 ms per-attempt deadline, dropped, and the
/// next attempt (after the 10 ms backoff) succeeds.
pub async fn hung_attempt_is_cut_and_retried<Tm: Timer>(new_timer: impl Fn() -> Tm) {
    let timer = new_timer();
    let policy = policy(|r| {
        r.max_attempts = 3;
        r.initial_backoff = ms(10);
        r.timeout_per_attempt = Some(ms(30));
    });
    let attempts = DropCounter::new();
    let live_at_retry = Cell::new(None);
    let rec = Recorder::new();
    let start = timer.now();
    let result = call(KEY, &policy, &timer, |info: AttemptInfo| {
        if info.retry_index == 1 {
            live_at_retry.set(Some(attempts.live()));
        }
        attempts.wrap(async move {
            if info.retry_index == 0 {
                hang::<Result<u32, &str>>().await
            } else {
                Ok(info.retry_index)
            }
        })
    })
    .observer(rec.clone())
    .await;
    let elapsed = timer.now() - start;

    assert_eq!(result, Ok(1));
    assert!(
        elapsed >= ms(30 + 10),
        "not cut at its deadline: {elapsed:?}"
    );
    assert!(elapsed < SANE, "{elapsed:?}");
    assert_eq!(
        live_at_retry.get(),
        Some(0),
        "the hung attempt was dropped before the retry launched"
    );
    assert_eq!((attempts.created(), attempts.live()), (2, 0));
    rec.assert_contract();
    let r = rec.attempts();
    assert_eq!(r.len(), 2, "{:?}", rec.lines());
    assert_eq!(r[0].outcome.reason, reason::ATTEMPT_TIMEOUT);
    assert!(r[0].cancelled);
    assert!(r[0].duration() >= ms(30), "{:?}", rec.lines());
    assert_eq!(r[1].outcome.reason, reason::SUCCESS);
    assert!(!r[1].cancelled);
}

/// The 100 ms overall timeout bounds the whole call, backoff included:
/// attempts fail after 10 ms, the backoff is a constant 40 ms, up to 10
/// attempts. Attempts run at 0..10 and 50..60; the next would start at 100,
/// the deadline, so the call stops at about 60 ms instead of sleeping into
/// it.
pub async fn overall_timeout_bounds_the_call<Tm: Timer>(new_timer: impl Fn() -> Tm) {
    let timer = new_timer();
    let policy = policy(|r| {
        r.max_attempts = 10;
        r.initial_backoff = ms(40);
        r.backoff_multiplier = 1.0;
        r.overall_timeout = Some(ms(100));
    });
    let attempts = DropCounter::new();
    let rec = Recorder::new();
    let start = timer.now();
    let result = call(KEY, &policy, &timer, |info: AttemptInfo| {
        let fail = timer.sleep_until(timer.now() + ms(10));
        attempts.wrap(async move {
            fail.await;
            Err::<(), _>(info.retry_index)
        })
    })
    .observer(rec.clone())
    .await;
    let elapsed = timer.now() - start;

    assert_eq!(
        result,
        Err(Error::DeadlineExceeded { last: Some(1) }),
        "{:?}",
        rec.lines()
    );
    // At most 3 by the brief; exactly 2 by the arithmetic above (a third
    // would need the second to end before 60 ms).
    assert_eq!(attempts.created(), 2, "{:?}", rec.lines());
    assert_eq!(attempts.live(), 0);
    assert!(elapsed >= ms(10 + 40 + 10), "{elapsed:?}");
    assert!(
        elapsed < ms(100) + SLACK,
        "overall timeout did not bound the call: {elapsed:?}"
    );
    rec.assert_contract();
    assert!(
        matches!(
            rec.failure_cause(),
            Some(Cause::BackoffBeyondDeadline | Cause::DeadlineExceeded)
        ),
        "{:?}",
        rec.lines()
    );
}

/// Dropping the call future while its attempt hangs drops the attempt, and
/// the observer hears: start, one cancelled record, failure (cancelled).
pub async fn dropping_the_call_cancels_the_attempt<Tm: Timer>(new_timer: impl Fn() -> Tm) {
    let timer = new_timer();
    let attempts = DropCounter::new();
    let rec = Recorder::new();
    let start = timer.now();
    let policy = Policy::DEFAULT;
    let fut = call(KEY, &policy, &timer, |_: AttemptInfo| {
        attempts.wrap(hang::<Result<(), ()>>())
    })
    .observer(rec.clone())
    .into_future();
    let give_up = pin!(timer.sleep_until(start + ms(20)));
    match select(Box::pin(fut), give_up).await {
        Either::Left((r, _)) => panic!("a hung call finished: {r:?}"),
        Either::Right(((), fut)) => {
            assert_eq!(attempts.live(), 1, "the attempt is in flight");
            assert!(
                matches!(rec.events()[..], [Seen::Start(..)]),
                "{:?}",
                rec.lines()
            );
            drop(fut);
        }
    }
    let elapsed = timer.now() - start;

    assert!(elapsed >= ms(20), "{elapsed:?}");
    assert!(elapsed < SANE, "{elapsed:?}");
    assert_eq!(
        (attempts.created(), attempts.live()),
        (1, 0),
        "dropping the call dropped the attempt"
    );
    rec.assert_contract();
    let events = rec.events();
    assert_eq!(events.len(), 3, "{:?}", rec.lines());
    let Seen::Attempt(r) = events[1] else {
        unreachable!("checked by assert_contract")
    };
    assert!(r.cancelled);
    assert_eq!(r.outcome.reason, reason::CANCELLED);
    assert_eq!(rec.failure_cause(), Some(Cause::Cancelled));
}
