//! The reqwest middleware against a real axum server on 127.0.0.1 that
//! fails, stalls and sends `Retry-After` (seconds, dates, garbage, the far
//! future); bodies that cannot be cloned; keys; typed errors.

#![allow(clippy::unwrap_used)]

mod flaky_server;

use core::time::Duration;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use flaky_server::{closed_port, Server};
use recourse::integrations::reqwest::{RecourseError, RecourseMiddleware, REQUEST_NOT_CLONEABLE};
use recourse::observer::AttemptRecord;
use recourse::{Error, Executor, Jitter, Observer, Policy, PolicyKey, StaticProvider};
use reqwest_middleware::ClientWithMiddleware;

/// Every attempt: (key, backoff before it, reason).
#[derive(Default)]
struct Attempts(Mutex<Vec<(String, Duration, &'static str)>>);

impl Observer for Attempts {
    fn on_attempt(&self, key: PolicyKey<'_>, r: &AttemptRecord) {
        self.0
            .lock()
            .unwrap()
            .push((key.to_string(), r.backoff, r.outcome.reason));
    }
}

impl Attempts {
    fn reasons(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().iter().map(|a| a.2).collect()
    }
    fn backoffs(&self) -> Vec<Duration> {
        self.0.lock().unwrap().iter().map(|a| a.1).collect()
    }
}

const KEY: &str = "127.0.0.1.GET";

fn policy() -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 4;
    p.retry.initial_backoff = Duration::from_millis(7);
    p.retry.max_backoff = Duration::from_millis(7);
    p.retry.jitter = Jitter::None;
    p.retry.overall_timeout = Some(Duration::from_secs(5));
    p
}

fn client_with(
    policies: &[(&str, Policy)],
    max_retry_after: Duration,
    f: impl FnOnce(RecourseMiddleware) -> RecourseMiddleware,
) -> (ClientWithMiddleware, Arc<Attempts>) {
    let seen = Arc::new(Attempts::default());
    let mut b = StaticProvider::builder();
    for (k, p) in policies {
        b = b.policy(k, p.clone()).unwrap();
    }
    let exec = Executor::builder()
        .provider(b.build())
        .observer(seen.clone())
        .max_retry_after(max_retry_after)
        .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(f(RecourseMiddleware::new(Arc::new(exec))))
        .build();
    (client, seen)
}

fn default_client() -> (ClientWithMiddleware, Arc<Attempts>) {
    client_with(
        &[(KEY, policy()), ("127.0.0.1.POST", policy())],
        Duration::from_secs(60),
        |m| m,
    )
}

#[tokio::test]
async fn a_flaky_get_is_retried_under_the_host_and_method_key() {
    let server = Server::start().await;
    let (client, seen) = default_client();
    let r = client.get(server.url("/flaky/2")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    assert_eq!(server.hits("flaky"), 3);
    let attempts = seen.0.lock().unwrap().clone();
    assert_eq!(
        attempts,
        [
            (KEY.into(), Duration::ZERO, "http_5xx"),
            (KEY.into(), Duration::from_millis(7), "http_5xx"),
            (KEY.into(), Duration::from_millis(7), "success"),
        ]
    );
}

#[tokio::test]
async fn a_post_is_sent_once() {
    let server = Server::start().await;
    let (client, seen) = default_client();
    let r = client
        .post(server.url("/flaky/2"))
        .body("order")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(server.hits("flaky"), 1);
    assert_eq!(seen.reasons(), ["http_non_idempotent"]);
}

#[tokio::test]
async fn retry_after_in_seconds_replaces_the_backoff() {
    let server = Server::start().await;
    let (client, seen) = default_client();
    let started = Instant::now();
    let r = client
        .get(server.url("/retry-after/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(seen.backoffs(), [Duration::ZERO, Duration::from_secs(1)]);
}

#[tokio::test]
async fn retry_after_as_a_date_garbage_and_the_far_future() {
    // A date in the past: retry at once.
    let server = Server::start().await;
    let (client, seen) = default_client();
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    let r = client
        .get(server.url(&format!("/retry-after/{}", past.replace(' ', "%20"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(seen.backoffs(), [Duration::ZERO, Duration::ZERO]);

    // Garbage: ignored, the policy's backoff applies.
    let server = Server::start().await;
    let (client, seen) = default_client();
    let r = client
        .get(server.url("/retry-after/soon"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(seen.backoffs(), [Duration::ZERO, Duration::from_millis(7)]);

    // Far in the future, cut to the executor's max_retry_after.
    let server = Server::start().await;
    let (client, seen) = client_with(&[(KEY, policy())], Duration::from_millis(30), |m| m);
    let r = client
        .get(server.url("/retry-after/99999999999999999999999"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(seen.backoffs(), [Duration::ZERO, Duration::from_millis(30)]);

    // Far in the future, past the call's deadline: the call stops at once
    // with the server's answer.
    let server = Server::start().await;
    let (client, seen) = default_client();
    let started = Instant::now();
    let r = client
        .get(server.url("/retry-after/3600"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(server.hits("retry-after"), 1);
    assert_eq!(seen.reasons(), ["http_5xx"]);
}

#[tokio::test]
async fn a_stalled_attempt_is_cut_and_retried() {
    let server = Server::start().await;
    let mut p = policy();
    p.retry.timeout_per_attempt = Some(Duration::from_millis(200));
    let (client, seen) = client_with(&[(KEY, p)], Duration::from_secs(60), |m| m);
    let r = client.get(server.url("/slow/3000")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.hits("slow"), 2);
    assert_eq!(seen.reasons(), ["attempt_timeout", "success"]);
}

#[tokio::test]
async fn a_streaming_body_is_sent_once() {
    let server = Server::start().await;
    let (client, seen) = client_with(
        &[("127.0.0.1.PUT", policy())],
        Duration::from_secs(60),
        |m| m,
    );
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("a"), Ok("b")];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = client
        .put(server.url("/flaky/2"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(server.hits("flaky"), 1);
    assert_eq!(seen.reasons(), [REQUEST_NOT_CLONEABLE]);
}

#[tokio::test]
async fn a_transport_error_is_a_typed_recourse_error() {
    let addr = closed_port().await;
    let (client, seen) = default_client();
    let err = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(e) = err else {
        panic!("{err:?}")
    };
    match e.downcast_ref::<RecourseError>().unwrap() {
        Error::RetriesExhausted {
            last: Some(reqwest_middleware::Error::Reqwest(e)),
            attempts: 4,
        } => assert!(e.is_connect(), "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.reasons(), ["http_transport_error"; 4]);
}

#[tokio::test]
async fn keys_by_route_and_a_panicking_key_fn() {
    let server = Server::start().await;
    let (client, seen) = client_with(&[("api.flaky", policy())], Duration::from_secs(60), |m| {
        m.key_fn(|r| {
            let route = r.url().path().split('/').nth(1).unwrap();
            format!("api.{route}")
        })
    });
    let r = client.get(server.url("/flaky/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let keys: Vec<_> = seen.0.lock().unwrap().iter().map(|a| a.0.clone()).collect();
    assert_eq!(keys, ["api.flaky", "api.flaky"]);

    let (client, _) = client_with(&[], Duration::from_secs(60), |m| {
        m.key_fn(|_| panic!("no route"))
    });
    let err = client.get(server.url("/flaky/0")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(e) = err else {
        panic!("{err:?}")
    };
    assert!(matches!(
        e.downcast_ref::<RecourseError>(),
        Some(Error::NoPolicy)
    ));
    assert_eq!(server.hits("flaky"), 2);
}
