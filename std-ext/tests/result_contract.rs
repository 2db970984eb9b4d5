//! The result contract, per call method: a call that ends on a value the
//! classifier did not accept is an `Err` carrying the value (where the
//! method's error type has room for it) and the reason; the observer hears
//! the same verdict as the caller; a budget refusal after a failed attempt
//! still carries that attempt's value or error; a breaker refusal happens
//! before any attempt.

mod common;

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::Arc;

use common::{attempts, one, Recorder};
use recourse::core_machine::budget::{BudgetRequest, Decision};
use recourse::core_machine::Budget;
use recourse::observer::AttemptRecord;
use recourse::{
    BudgetRegistry, Cause, ClassifierRegistry, Error, Executor, Failure, Outcome, Policy, Timeline,
};

/// Allows the first `limit` attempts, then refuses every one.
struct Allow {
    limit: u64,
    decided: AtomicU64,
}

impl Budget for Allow {
    fn decide(&self, _: &BudgetRequest<'_>) -> Decision {
        if self.decided.fetch_add(1, Ordering::SeqCst) < self.limit {
            Decision::ALLOW
        } else {
            Decision::DENY
        }
    }
    fn settle(
        &self,
        _: &AttemptRecord,
        _: Option<recourse::core_machine::budget::Reservation>,
        _: recourse::observer::Instant,
    ) {
    }
}

/// `200` is accepted, `503` retryable, anything else non-retryable.
fn status(r: &Result<u16, String>) -> Outcome {
    match r {
        Ok(200) => Outcome::SUCCESS,
        Ok(503) | Err(_) => Outcome::retryable("unavailable"),
        Ok(_) => Outcome::non_retryable("bad_status"),
    }
}

fn named(mut p: Policy) -> Policy {
    p.retry.classifier =
        recourse::core_machine::policy::name("retry.classifier", "status").expect("a short name");
    p
}

fn with_budget(mut p: Policy) -> Policy {
    p.retry.budget.name =
        recourse::core_machine::policy::name("retry.budget.name", "one").expect("a short name");
    p
}

/// An executor whose key `svc.Get` has `policy`, with a budget `one` that
/// allows a single attempt, the classifier `status` registered, and a
/// recorder as its observer.
fn executor(policy: Policy) -> (Executor, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let exec = Executor::builder()
        .provider(one("svc.Get", policy))
        .budgets(BudgetRegistry::new().with(
            "one",
            Allow {
                limit: 1,
                decided: AtomicU64::new(0),
            },
        ))
        .classifiers(ClassifierRegistry::new().with("status", status))
        .observer(recorder.clone())
        .build();
    (exec, recorder)
}

/// The observer's last line: `success svc.Get` or `failure svc.Get <reason>`.
fn heard(recorder: &Recorder) -> String {
    recorder.events().last().cloned().unwrap_or_default()
}

/// What the caller got, in the observer's words.
fn told<T, E>(r: &Result<T, Error<E>>) -> String {
    match r {
        Ok(_) => "success svc.Get".to_owned(),
        // A budget's own code is in the error; the observer hears the cause.
        Err(Error::BudgetDenied { .. }) => "failure svc.Get budget_denied".to_owned(),
        Err(e) => format!("failure svc.Get {}", e.reason()),
    }
}

fn replies(
    values: &'static [Result<u16, &'static str>],
) -> impl FnMut(recourse::AttemptInfo) -> core::future::Ready<Result<u16, String>> {
    let mut n = 0;
    move |_| {
        let r = values[n.min(values.len() - 1)].map_err(str::to_owned);
        n += 1;
        core::future::ready(r)
    }
}

#[tokio::test(start_paused = true)]
async fn call_classified_carries_the_rejected_value_whatever_stopped_the_call() {
    // Success.
    let (exec, rec) = executor(attempts(3));
    let r = exec
        .call_classified("svc.Get", status, replies(&[Ok(503), Ok(200)]))
        .await;
    assert_eq!(r, Ok(200));
    assert_eq!(heard(&rec), told(&r));

    // Retries exhausted on a rejected value.
    let (exec, rec) = executor(attempts(3));
    let r = exec
        .call_classified("svc.Get", status, replies(&[Ok(503)]))
        .await;
    assert_eq!(
        r,
        Err(Error::RetriesExhausted {
            last: Some(Failure::Rejected(503)),
            attempts: 3
        })
    );
    assert_eq!(heard(&rec), "failure svc.Get retries_exhausted");
    assert_eq!(heard(&rec), told(&r));

    // A non-retryable value.
    let (exec, rec) = executor(attempts(3));
    let r = exec
        .call_classified("svc.Get", status, replies(&[Ok(404)]))
        .await;
    assert_eq!(
        r,
        Err(Error::Operation {
            error: Failure::Rejected(404),
            cause: Cause::NonRetryable
        })
    );
    assert_eq!(heard(&rec), told(&r));

    // A budget refusing the retry after a rejected value keeps the value.
    let (exec, rec) = executor(with_budget(attempts(3)));
    let r = exec
        .call_classified("svc.Get", status, replies(&[Ok(503)]))
        .await;
    assert_eq!(
        r,
        Err(Error::BudgetDenied {
            reason: "budget_denied",
            last: Some(Failure::Rejected(503))
        })
    );
    assert_eq!(heard(&rec), told(&r));

    // ... and an error.
    let (exec, rec) = executor(with_budget(attempts(3)));
    let r = exec
        .call_classified("svc.Get", status, replies(&[Err("reset")]))
        .await;
    assert_eq!(
        r,
        Err(Error::BudgetDenied {
            reason: "budget_denied",
            last: Some(Failure::Error("reset".to_owned()))
        })
    );
    assert_eq!(heard(&rec), told(&r));
}

#[tokio::test(start_paused = true)]
async fn call_classified_with_timeline_agrees_with_its_timeline_and_observer() {
    let (exec, rec) = executor(attempts(2));
    let (r, t): (_, Timeline) = exec
        .call_classified_with_timeline("svc.Get", status, replies(&[Ok(503)]))
        .await;
    assert_eq!(
        r,
        Err(Error::RetriesExhausted {
            last: Some(Failure::Rejected(503)),
            attempts: 2
        })
    );
    assert_eq!(t.reason, Some("retries_exhausted"));
    assert_eq!(t.attempts.len(), 2);
    assert_eq!(t.attempts[1].outcome.reason, "unavailable");
    assert_eq!(heard(&rec), told(&r));

    let (exec, rec) = executor(with_budget(attempts(3)));
    let (r, t) = exec
        .call_classified_with_timeline("svc.Get", status, replies(&[Ok(503)]))
        .await;
    assert_eq!(
        r.as_ref().err().and_then(Error::last_error),
        Some(&Failure::Rejected(503))
    );
    assert_eq!(t.reason, Some("budget_denied"));
    assert_eq!(heard(&rec), told(&r));
}

#[tokio::test(start_paused = true)]
async fn call_and_the_facade_keep_the_last_error_and_never_return_a_rejected_value() {
    // The default classifier: errors retryable, every `Ok` accepted.
    let (exec, rec) = executor(attempts(2));
    let r = exec.call("svc.Get", replies(&[Err("reset")])).await;
    assert_eq!(
        r,
        Err(Error::RetriesExhausted {
            last: Some("reset".to_owned()),
            attempts: 2
        })
    );
    assert_eq!(heard(&rec), told(&r));

    let (exec, rec) = executor(with_budget(attempts(3)));
    let r = recourse::do_value_with(&exec, "svc.Get", replies(&[Err("reset")])).await;
    assert_eq!(
        r,
        Err(Error::BudgetDenied {
            reason: "budget_denied",
            last: Some("reset".to_owned())
        })
    );
    assert_eq!(heard(&rec), told(&r));

    // A classifier the policy names rejects the value: `call`'s error has
    // no room for it, so it is `Error::Rejected` with the cause the
    // observer heard (never `Ok` beside an observer's failure).
    let (exec, rec) = executor(named(attempts(3)));
    let (r, t) = exec
        .call_with_timeline("svc.Get", replies(&[Ok(503)]))
        .await;
    assert_eq!(
        r,
        Err(Error::Rejected {
            cause: Cause::Exhausted
        })
    );
    assert_eq!(t.reason, Some("retries_exhausted"));
    assert_eq!(t.attempts.len(), 3);
    assert_eq!(heard(&rec), told(&r));

    let (exec, rec) = executor(named(attempts(3)));
    let (r, _) = recourse::do_value_with_timeline_with(&exec, "svc.Get", replies(&[Ok(404)])).await;
    assert_eq!(
        r,
        Err(Error::Rejected {
            cause: Cause::NonRetryable
        })
    );
    assert_eq!(heard(&rec), told(&r));

    // Accepted values stay `Ok`.
    let (exec, rec) = executor(named(attempts(3)));
    let r = exec.call("svc.Get", replies(&[Ok(503), Ok(200)])).await;
    assert_eq!(r, Ok(200));
    assert_eq!(heard(&rec), told(&r));
}

#[tokio::test(start_paused = true)]
async fn a_breaker_refuses_before_any_attempt_and_every_method_says_so() {
    let mut p = attempts(1);
    p.circuit.enabled = true;
    p.circuit.threshold = 1;
    p.circuit.cooldown = Duration::from_secs(10);
    let (exec, rec) = executor(p);
    let r = exec
        .call_classified("svc.Get", status, replies(&[Ok(503)]))
        .await;
    assert!(matches!(r, Err(Error::RetriesExhausted { .. })), "{r:?}");
    let r = exec
        .call_classified("svc.Get", status, replies(&[Ok(200)]))
        .await;
    assert_eq!(
        r,
        Err(Error::CircuitOpen {
            reason: "circuit_open"
        })
    );
    assert_eq!(heard(&rec), told(&r));
    let r = exec.call("svc.Get", replies(&[Ok(200)])).await;
    assert_eq!(
        r,
        Err(Error::CircuitOpen {
            reason: "circuit_open"
        })
    );
    assert_eq!(heard(&rec), told(&r));
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn call_http_carries_the_response_whatever_stopped_the_call() {
    use recourse::http::HttpFailure;

    fn respond(status: u16) -> Result<http::Response<&'static str>, String> {
        Ok(http::Response::builder()
            .status(status)
            .body("body")
            .expect("a valid response"))
    }
    let get = http::Method::GET;

    let (exec, rec) = executor(attempts(2));
    let r = exec
        .call_http("svc.Get", &get, |_| async { respond(503) })
        .await;
    match &r {
        Err(Error::RetriesExhausted {
            last: Some(HttpFailure::Response(resp)),
            attempts: 2,
        }) => assert_eq!(resp.status(), 503),
        other => panic!("{other:?}"),
    }
    assert_eq!(heard(&rec), told(&r));

    let (exec, rec) = executor(with_budget(attempts(3)));
    let (r, t) = exec
        .call_http_with_timeline("svc.Get", &get, |_| async { respond(503) })
        .await;
    match &r {
        Err(Error::BudgetDenied {
            last: Some(HttpFailure::Response(resp)),
            ..
        }) => assert_eq!(resp.status(), 503),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.reason, Some("budget_denied"));
    assert_eq!(heard(&rec), told(&r));

    let (exec, rec) = executor(attempts(2));
    let r = exec
        .call_http("svc.Get", &get, |_| async { respond(200) })
        .await;
    assert_eq!(
        r.as_ref().map(http::Response::status).ok(),
        Some(http::StatusCode::OK)
    );
    assert_eq!(heard(&rec), told(&r));
}
