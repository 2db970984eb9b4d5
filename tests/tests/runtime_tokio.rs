//! The driver on tokio, mostly on the paused clock: cancellation, timeouts,
//! classification, retry-after and observer order, with exact virtual
//! elapsed times (`tokio::time::Instant`). The last test runs a thousand
//! concurrent calls on the multi-thread runtime with real timers.
//!
//! On the paused clock, a [`TokioTimer`] made at the start of a test has its
//! epoch at the test's virtual start, so recorded instants are exact
//! milliseconds from it.

use core::cell::RefCell;
use core::future::IntoFuture;
use core::time::Duration;

use recourse_core::{
    call, reason, AttemptId, AttemptInfo, AttemptRecord, CallEnd, Cause, Error, Outcome, Policy,
    Verdict,
};
use recourse_runtimes::TokioTimer;
use recourse_tests::{at, hang, ms, policy, DropCounter, Recorder, Seen, KEY};
use tokio::time::{sleep, Instant as TokioInstant};

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------
// Cancellation before the first attempt
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn dropping_the_builder_never_calls_the_operation() {
    let attempts = DropCounter::new();
    let rec = Recorder::new();
    let builder = call(KEY, Policy::DEFAULT, TokioTimer::new(), |_: AttemptInfo| {
        attempts.wrap(async { Ok::<(), ()>(()) })
    })
    .observer(rec.clone());
    drop(builder);
    assert_eq!(attempts.created(), 0, "the operation was called");
    assert_eq!(rec.events(), []);
}

#[tokio::test(start_paused = true)]
async fn dropping_an_unpolled_call_future_never_calls_the_operation() {
    let attempts = DropCounter::new();
    let rec = Recorder::new();
    let fut = call(KEY, Policy::DEFAULT, TokioTimer::new(), |_: AttemptInfo| {
        attempts.wrap(async { Ok::<(), ()>(()) })
    })
    .observer(rec.clone())
    .into_future();
    drop(fut);
    assert_eq!(attempts.created(), 0, "the operation was called");
    assert_eq!(
        rec.events(),
        [],
        "a call that never started reports nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn aborting_a_spawned_call_before_it_runs_never_calls_the_operation() {
    let attempts = DropCounter::new();
    let rec = Recorder::new();
    let op_attempts = attempts.clone();
    let fut = call(
        KEY,
        Policy::DEFAULT,
        TokioTimer::new(),
        move |_: AttemptInfo| op_attempts.wrap(async { Ok::<(), ()>(()) }),
    )
    .observer(rec.clone())
    .into_future();
    // On the current-thread runtime the task cannot run before this task
    // yields, so it is aborted unpolled.
    let task = tokio::spawn(fut);
    task.abort();
    let err = task.await.expect_err("aborted before it ran");
    assert!(err.is_cancelled());
    assert_eq!(attempts.created(), 0, "the operation was called");
    assert_eq!(rec.events(), []);
}

// ---------------------------------------------------------------------------
// The policy a call holds
// ---------------------------------------------------------------------------

/// A call that owns its policy through an `Arc` is `'static`: it runs in a
/// spawned task after the caller's handle to the policy is gone, with that
/// policy's retries (three attempts, 10 ms of backoff each).
#[tokio::test(start_paused = true)]
async fn a_spawned_call_holds_an_arc_of_its_policy() {
    let policy = std::sync::Arc::new(policy(|r| {
        r.initial_backoff = ms(10);
        r.max_backoff = ms(10);
    }));
    let weak = std::sync::Arc::downgrade(&policy);
    let rec = Recorder::new();
    let mut failures = 2;
    let fut = call(KEY, policy, TokioTimer::new(), move |_: AttemptInfo| {
        let fail = failures > 0;
        failures -= 1;
        async move {
            if fail {
                Err("flaky")
            } else {
                Ok(7)
            }
        }
    })
    .observer(rec.clone())
    .into_future();
    assert!(weak.upgrade().is_some(), "the call holds the policy");
    let t0 = TokioInstant::now();
    assert_eq!(tokio::spawn(fut).await.expect("the task ran"), Ok(7));
    assert_eq!(t0.elapsed(), ms(20), "two backoffs of the policy's 10 ms");
    assert!(weak.upgrade().is_none(), "the finished call dropped it");
    assert_eq!(rec.attempts().len(), 3);
}

// ---------------------------------------------------------------------------
// Cancellation during a backoff sleep
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn cancel_during_a_backoff_sleep_returns_at_once() {
    let policy = policy(|r| {
        r.initial_backoff = secs(10);
        r.max_backoff = secs(10);
    });
    let attempts = DropCounter::new();
    let rec = Recorder::new();
    let t0 = TokioInstant::now();
    let fut = call(KEY, &policy, TokioTimer::new(), |_: AttemptInfo| {
        attempts.wrap(async { Err::<(), _>("down") })
    })
    .observer(rec.clone())
    .into_future();
    tokio::select! {
        biased;
        r = fut => panic!("the call finished during its backoff: {r:?}"),
        () = sleep(secs(5)) => {}
    }
    assert_eq!(
        t0.elapsed(),
        secs(5),
        "returned when the race fired, not after the backoff"
    );
    assert_eq!((attempts.created(), attempts.live()), (1, 0));
    assert_eq!(
        rec.lines(),
        [
            "start svc.Get @0",
            "attempt 0 retryable_error 0..0 backoff 0",
            "failure cancelled after 1 @5000",
        ]
    );
    rec.assert_contract();
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn per_attempt_timeout_cuts_a_hung_attempt_and_the_next_attempt_runs() {
    let policy = policy(|r| r.timeout_per_attempt = Some(secs(1)));
    let attempts = DropCounter::new();
    let live_at_retry = RefCell::new(None);
    let rec = Recorder::new();
    let t0 = TokioInstant::now();
    let result = call(KEY, &policy, TokioTimer::new(), |info: AttemptInfo| {
        if info.retry_index == 1 {
            *live_at_retry.borrow_mut() = Some(attempts.live());
        }
        let work = sleep(ms(5));
        attempts.wrap(async move {
            if info.retry_index == 0 {
                hang::<Result<&str, ()>>().await
            } else {
                work.await;
                Ok("second")
            }
        })
    })
    .observer(rec.clone())
    .await;

    assert_eq!(result, Ok("second"));
    assert_eq!(t0.elapsed(), ms(1000 + 10 + 5));
    assert_eq!(
        *live_at_retry.borrow(),
        Some(0),
        "the hung attempt was dropped"
    );
    assert_eq!((attempts.created(), attempts.live()), (2, 0));
    assert_eq!(
        rec.lines(),
        [
            "start svc.Get @0",
            "attempt 0 attempt_timeout 0..1000 backoff 0 cancelled",
            "attempt 1 success 1010..1015 backoff 10",
            "success after 2 @1015",
        ]
    );
    let r = rec.attempts();
    assert_eq!(r[0].outcome.reason, reason::ATTEMPT_TIMEOUT);
    assert!(r[0].cancelled);
    assert_eq!(r[0].info.deadline, Some(at(1000)));
    assert_eq!(r[1].outcome, Outcome::SUCCESS);
    assert!(!r[1].cancelled);
    assert_eq!(r[1].info.deadline, Some(at(2010)));
}

#[tokio::test(start_paused = true)]
async fn overall_timeout_stops_before_a_backoff_that_would_end_past_it() {
    // Attempts fail after 10 ms, a constant 40 ms backoff, 100 ms overall:
    // 0..10, 50..60, and 60 + 40 is the deadline itself, so stop at 60.
    let policy = policy(|r| {
        r.max_attempts = 10;
        r.initial_backoff = ms(40);
        r.backoff_multiplier = 1.0;
        r.overall_timeout = Some(ms(100));
    });
    let attempts = DropCounter::new();
    let rec = Recorder::new();
    let t0 = TokioInstant::now();
    let result = call(KEY, &policy, TokioTimer::new(), |info: AttemptInfo| {
        let work = sleep(ms(10));
        attempts.wrap(async move {
            work.await;
            Err::<(), _>(info.retry_index)
        })
    })
    .observer(rec.clone())
    .await;

    assert_eq!(result, Err(Error::DeadlineExceeded { last: Some(1) }));
    assert_eq!(t0.elapsed(), ms(60));
    assert_eq!((attempts.created(), attempts.live()), (2, 0));
    assert_eq!(
        rec.lines(),
        [
            "start svc.Get @0",
            "attempt 0 retryable_error 0..10 backoff 0",
            "attempt 1 retryable_error 50..60 backoff 40",
            "failure backoff_beyond_deadline after 2 @60",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn overall_timeout_cuts_the_attempt_in_flight_after_a_backoff() {
    // 0..30 fails, 20 ms backoff, the second attempt hangs from 50 and is
    // cut at the 100 ms deadline: the backoff counted against the deadline.
    let policy = policy(|r| {
        r.initial_backoff = ms(20);
        r.overall_timeout = Some(ms(100));
    });
    let attempts = DropCounter::new();
    let rec = Recorder::new();
    let t0 = TokioInstant::now();
    let result = call(KEY, &policy, TokioTimer::new(), |info: AttemptInfo| {
        let work = sleep(ms(30));
        attempts.wrap(async move {
            if info.retry_index == 0 {
                work.await;
                Err("first failed")
            } else {
                hang::<Result<(), &str>>().await
            }
        })
    })
    .observer(rec.clone())
    .await;

    assert_eq!(
        result,
        Err(Error::DeadlineExceeded {
            last: Some("first failed")
        })
    );
    assert_eq!(t0.elapsed(), ms(100));
    assert_eq!((attempts.created(), attempts.live()), (2, 0));
    assert_eq!(
        rec.lines(),
        [
            "start svc.Get @0",
            "attempt 0 retryable_error 0..30 backoff 0",
            "attempt 1 overall_timeout 50..100 backoff 20 cancelled",
            "failure deadline_exceeded after 2 @100",
        ]
    );
    assert_eq!(rec.attempts()[1].info.deadline, Some(at(100)));
}

// ---------------------------------------------------------------------------
// Classification and results
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn non_retryable_stops_after_one_attempt() {
    let attempts = DropCounter::new();
    let rec = Recorder::new();
    let t0 = TokioInstant::now();
    let result = call(KEY, Policy::DEFAULT, TokioTimer::new(), |_: AttemptInfo| {
        let work = sleep(ms(5));
        attempts.wrap(async move {
            work.await;
            Err::<(), _>("invalid")
        })
    })
    .classifier(|r: &Result<(), &str>| match r {
        Ok(()) => Outcome::SUCCESS,
        Err(_) => Outcome::non_retryable("invalid_argument"),
    })
    .observer(rec.clone())
    .await;

    assert_eq!(
        result,
        Err(Error::Operation {
            error: "invalid",
            cause: Cause::NonRetryable
        })
    );
    assert_eq!(t0.elapsed(), ms(5));
    assert_eq!((attempts.created(), attempts.live()), (1, 0));
    assert_eq!(
        rec.lines(),
        [
            "start svc.Get @0",
            "attempt 0 invalid_argument 0..5 backoff 0",
            "failure non_retryable after 1 @5",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn exhaustion_returns_the_last_attempts_error() {
    let attempts = DropCounter::new();
    let rec = Recorder::new();
    let t0 = TokioInstant::now();
    let result = call(
        KEY,
        Policy::DEFAULT,
        TokioTimer::new(),
        |info: AttemptInfo| {
            let work = sleep(ms(1));
            attempts.wrap(async move {
                work.await;
                Err::<(), _>(format!("error of attempt {}", info.id.0))
            })
        },
    )
    .observer(rec.clone())
    .await;

    assert_eq!(
        result,
        Err(Error::RetriesExhausted {
            last: Some("error of attempt 2".to_string()),
            attempts: 3
        })
    );
    // 1 ms attempts, 10 then 20 ms backoff.
    assert_eq!(t0.elapsed(), ms(1 + 10 + 1 + 20 + 1));
    assert_eq!((attempts.created(), attempts.live()), (3, 0));
    assert_eq!(
        rec.lines(),
        [
            "start svc.Get @0",
            "attempt 0 retryable_error 0..1 backoff 0",
            "attempt 1 retryable_error 11..12 backoff 10",
            "attempt 2 retryable_error 32..33 backoff 20",
            "failure retries_exhausted after 3 @33",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_hint_lengthens_the_next_delay() {
    let launched = RefCell::new(Vec::new());
    let rec = Recorder::new();
    let t0 = TokioInstant::now();
    let result = call(
        KEY,
        Policy::DEFAULT,
        TokioTimer::new(),
        |info: AttemptInfo| {
            launched.borrow_mut().push(TokioInstant::now());
            let work = sleep(ms(5));
            async move {
                work.await;
                if info.retry_index == 0 {
                    Err("busy")
                } else {
                    Ok(info.retry_index)
                }
            }
        },
    )
    .classifier(|r: &Result<u32, &str>| match r {
        Ok(_) => Outcome::SUCCESS,
        Err(_) => Outcome::retryable("x").with_retry_after(secs(2)),
    })
    .observer(rec.clone())
    .await;

    assert_eq!(result, Ok(1));
    let launched = launched.into_inner();
    assert_eq!(launched.len(), 2);
    let first_ended = launched[0] + ms(5);
    assert_eq!(
        launched[1] - first_ended,
        secs(2),
        "the hint (2 s) replaced the 10 ms backoff"
    );
    assert_eq!(t0.elapsed(), ms(5 + 2000 + 5));
    assert_eq!(
        rec.lines(),
        [
            "start svc.Get @0",
            "attempt 0 x 0..5 backoff 0",
            "attempt 1 success 2005..2010 backoff 2000",
            "success after 2 @2010",
        ]
    );
}

// ---------------------------------------------------------------------------
// Observer order
// ---------------------------------------------------------------------------

fn record(id: u16, start: u64, end: u64, backoff: u64, outcome: Outcome) -> AttemptRecord {
    AttemptRecord {
        info: AttemptInfo {
            id: AttemptId(id),
            retry_index: u32::from(id),
            hedge_index: 0,
            is_hedge: false,
            deadline: None,
        },
        start: at(start),
        end: at(end),
        outcome,
        cancelled: false,
        backoff: ms(backoff),
        budget_allowed: true,
        budget_reason: reason::NO_BUDGET,
    }
}

#[tokio::test(start_paused = true)]
async fn observer_sees_start_one_record_per_attempt_and_one_end_in_order() {
    let rec = Recorder::new();
    let result = call(
        KEY,
        Policy::DEFAULT,
        TokioTimer::new(),
        |info: AttemptInfo| {
            let work = sleep(ms(5));
            async move {
                work.await;
                if info.retry_index < 2 {
                    Err("flaky")
                } else {
                    Ok(7)
                }
            }
        },
    )
    .observer(rec.clone())
    .await;

    assert_eq!(result, Ok(7));
    let retryable = Outcome::retryable(reason::RETRYABLE_ERROR);
    assert_eq!(
        rec.events(),
        [
            Seen::Start("svc.Get".to_string(), at(0)),
            Seen::Attempt(record(0, 0, 5, 0, retryable)),
            Seen::Attempt(record(1, 15, 20, 10, retryable)),
            Seen::Attempt(record(2, 40, 45, 20, Outcome::SUCCESS)),
            Seen::Success(CallEnd {
                start: at(0),
                end: at(45),
                attempts: 3,
                verdict: Verdict::Success(AttemptId(2)),
            }),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn observer_order_holds_when_the_call_fails() {
    let rec = Recorder::new();
    let result = call(KEY, Policy::DEFAULT, TokioTimer::new(), |_: AttemptInfo| {
        let work = sleep(ms(5));
        async move {
            work.await;
            Err::<(), _>("down")
        }
    })
    .observer(rec.clone())
    .await;

    assert_eq!(
        result,
        Err(Error::RetriesExhausted {
            last: Some("down"),
            attempts: 3
        })
    );
    let retryable = Outcome::retryable(reason::RETRYABLE_ERROR);
    assert_eq!(
        rec.events(),
        [
            Seen::Start("svc.Get".to_string(), at(0)),
            Seen::Attempt(record(0, 0, 5, 0, retryable)),
            Seen::Attempt(record(1, 15, 20, 10, retryable)),
            Seen::Attempt(record(2, 40, 45, 20, retryable)),
            Seen::Failure(CallEnd {
                start: at(0),
                end: at(45),
                attempts: 3,
                verdict: Verdict::Failure {
                    cause: Cause::Exhausted,
                    last: Some(AttemptId(2)),
                },
            }),
        ]
    );
}

// ---------------------------------------------------------------------------
// Many concurrent calls on real timers
// ---------------------------------------------------------------------------

/// How one of the thousand calls behaves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Fails twice, then succeeds.
    Finishes,
    /// Its first attempt hangs: it is dropped with that attempt in flight.
    HangsAtOnce,
    /// Fails twice, then hangs: dropped in its third attempt, or earlier on
    /// a loaded machine.
    HangsLater,
}

impl Kind {
    fn of(i: usize) -> Self {
        match i % 4 {
            0 | 2 => Self::Finishes,
            1 => Self::HangsAtOnce,
            _ => Self::HangsLater,
        }
    }
}

/// 1,000 calls on the multi-thread runtime, real timers, 1 ms attempts and
/// 1–2 ms backoffs: half finish (two failures, then success); the other
/// half hang and are dropped by a 20 ms `tokio::time::timeout`. No attempt
/// future outlives its call, and every call's observer saw a complete,
/// ordered report with one record per launched attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_calls_leave_no_attempt_alive() {
    const CALLS: usize = 1000;
    let policy = policy(|r| {
        r.max_attempts = 3;
        r.initial_backoff = ms(1);
        r.max_backoff = ms(2);
    });
    let all = DropCounter::new();
    let mut tasks = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let kind = Kind::of(i);
        let mine = DropCounter::new();
        let rec = Recorder::new();
        let op = {
            let (all, mine) = (all.clone(), mine.clone());
            move |info: AttemptInfo| {
                let work = sleep(ms(1));
                all.wrap(mine.wrap(async move {
                    match (kind, info.retry_index) {
                        (Kind::HangsAtOnce, _) => hang().await,
                        (_, 0 | 1) => {
                            work.await;
                            Err(i)
                        }
                        (Kind::Finishes, _) => {
                            work.await;
                            Ok(i)
                        }
                        (Kind::HangsLater, _) => hang().await,
                    }
                }))
            }
        };
        let fut = call(KEY, policy.clone(), TokioTimer::new(), op)
            .observer(rec.clone())
            .into_future();
        let limit = match kind {
            Kind::Finishes => secs(30),
            Kind::HangsAtOnce | Kind::HangsLater => ms(20),
        };
        let task = tokio::spawn(tokio::time::timeout(limit, fut));
        tasks.push((i, kind, mine, rec, task));
    }

    for (i, kind, mine, rec, task) in tasks {
        let out = task.await.expect("the task completed");
        match kind {
            Kind::Finishes => {
                assert_eq!(out.ok(), Some(Ok(i)), "call {i}: {:?}", rec.lines());
                assert_eq!(mine.created(), 3, "call {i}");
            }
            Kind::HangsAtOnce | Kind::HangsLater => {
                assert!(out.is_err(), "call {i} should have been dropped: {out:?}");
                assert_eq!(rec.failure_cause(), Some(Cause::Cancelled), "call {i}");
            }
        }
        if kind == Kind::HangsAtOnce {
            // The timeout polls the call before its own timer, so the first
            // attempt was launched, and it never ends by itself.
            let r = rec.attempts();
            assert_eq!(r.len(), 1, "call {i}: {:?}", rec.lines());
            assert!(r[0].cancelled, "call {i}: {:?}", rec.lines());
            assert_eq!(r[0].outcome.reason, reason::CANCELLED);
        }
        assert_eq!(mine.live(), 0, "call {i} left an attempt alive");
        rec.assert_contract();
        assert_eq!(
            rec.attempts().len(),
            mine.created(),
            "call {i}: one record per launched attempt: {:?}",
            rec.lines()
        );
    }
    assert_eq!(all.live(), 0, "live attempt futures after every call ended");
    // 3 per finishing call, at least 1 per dropped one.
    assert!(all.created() >= CALLS / 2 * 3 + CALLS / 2);
}
