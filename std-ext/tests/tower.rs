//! The tower layer against a real axum server on 127.0.0.1: retries,
//! hedges, per-attempt readiness, request cloning (and its absence), keys
//! from requests, typed errors; and `tower::retry` + `tower::timeout` on the
//! same server beside it, and `tower::hedge` beside the layer's hedging.

#![allow(clippy::unwrap_used)]

mod flaky_server;

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flaky_server::{closed_port, Server};
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use recourse::integrations::tower::{
    clone_http_request, HttpByMethod, PerRequest, RecourseLayer, REQUEST_NOT_CLONEABLE,
};
use recourse::observer::AttemptRecord;
use recourse::{Cause, Error, Executor, Observer, Outcome, Policy, PolicyKey, StaticProvider};
use tower::{Service, ServiceExt};
use tower_layer::Layer;

type Body = Full<Bytes>;
type HyperClient = Client<HttpConnector, Body>;

fn client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: &str) -> http::Request<Body> {
    http::Request::get(url).body(Body::default()).unwrap()
}

/// Every attempt: (key, retry index, hedge index, reason).
#[derive(Default)]
struct Attempts(Mutex<Vec<(String, u32, u32, &'static str)>>);

impl Observer for Attempts {
    fn on_attempt(&self, key: PolicyKey<'_>, r: &AttemptRecord) {
        self.0.lock().unwrap().push((
            key.to_string(),
            r.info.retry_index,
            r.info.hedge_index,
            r.outcome.reason,
        ));
    }
}

fn policy(max_attempts: u32) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = max_attempts;
    p.retry.initial_backoff = Duration::from_millis(1);
    p.retry.max_backoff = Duration::from_millis(5);
    p.retry.overall_timeout = Some(Duration::from_secs(5));
    p
}

fn executor(policies: &[(&str, Policy)], seen: Arc<Attempts>) -> Arc<Executor> {
    let mut b = StaticProvider::builder();
    for (k, p) in policies {
        b = b.policy(k, p.clone()).unwrap();
    }
    Arc::new(
        Executor::builder()
            .provider(b.build())
            .observer(seen)
            .seed(7)
            .build(),
    )
}

fn layer(exec: Arc<Executor>, key: &str) -> RecourseLayer<http::Request<Body>, HttpByMethod> {
    RecourseLayer::with_request_clone(exec, key, clone_http_request)
        .classifier(HttpByMethod::default())
}

#[tokio::test]
async fn a_flaky_route_is_retried_until_it_answers() {
    let server = Server::start().await;
    let seen = Arc::new(Attempts::default());
    let exec = executor(&[("api.flaky", policy(4))], seen.clone());
    let mut svc = layer(exec, "api.flaky").layer(client());
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/flaky/2")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.hits("flaky"), 3);
    let attempts = seen.0.lock().unwrap().clone();
    assert_eq!(
        attempts,
        [
            ("api.flaky".into(), 0, 0, "http_5xx"),
            ("api.flaky".into(), 1, 0, "http_5xx"),
            ("api.flaky".into(), 2, 0, "success"),
        ]
    );
}

#[tokio::test]
async fn a_post_is_sent_once_and_its_503_returned() {
    let server = Server::start().await;
    let seen = Arc::new(Attempts::default());
    let exec = executor(&[("api.flaky", policy(4))], seen.clone());
    let mut svc = layer(exec, "api.flaky").layer(client());
    let req = http::Request::post(server.url("/flaky/2"))
        .body(Body::from("order"))
        .unwrap();
    let response = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.hits("flaky"), 1);
    assert_eq!(seen.0.lock().unwrap()[0].3, "http_non_idempotent");
}

#[tokio::test]
async fn a_transport_error_keeps_the_inner_error_typed() {
    let addr = closed_port().await;
    let seen = Arc::new(Attempts::default());
    let exec = executor(&[("api.down", policy(3))], seen.clone());
    let mut svc = layer(exec, "api.down").layer(client());
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(get(&format!("http://{addr}/")))
        .await
        .unwrap_err();
    match err {
        Error::RetriesExhausted {
            last: Some(e),
            attempts: 3,
        } => {
            let e: hyper_util::client::legacy::Error = e;
            assert!(e.is_connect(), "{e:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(seen.0.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_stalled_primary_is_hedged_and_the_hedge_wins() {
    let server = Server::start().await;
    let seen = Arc::new(Attempts::default());
    let mut p = policy(1);
    p.hedge.enabled = true;
    p.hedge.max_hedges = 1;
    p.hedge.hedge_delay = Duration::from_millis(50);
    let exec = executor(&[("api.slow", p)], seen.clone());
    let mut svc = layer(exec, "api.slow").layer(client());
    let started = std::time::Instant::now();
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/slow/3000")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.hits("slow"), 2);
    let attempts = seen.0.lock().unwrap().clone();
    assert_eq!(
        attempts,
        [
            ("api.slow".into(), 0, 1, "success"),
            ("api.slow".into(), 0, 0, "hedge_loser"),
        ]
    );
}

/// A service that fails the test if `call` comes without a `poll_ready`
/// that returned `Ready(Ok)` on the same clone.
#[derive(Clone)]
struct MustBeReady {
    inner: HyperClient,
    ready: bool,
    polls: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
    unready_calls: Arc<AtomicBool>,
}

impl Service<http::Request<Body>> for MustBeReady {
    type Response = <HyperClient as Service<http::Request<Body>>>::Response;
    type Error = <HyperClient as Service<http::Request<Body>>>::Error;
    type Future = <HyperClient as Service<http::Request<Body>>>::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        let r = self.inner.poll_ready(cx);
        self.ready = matches!(r, Poll::Ready(Ok(())));
        r
    }
    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !core::mem::take(&mut self.ready) {
            self.unready_calls.store(true, Ordering::SeqCst);
        }
        self.inner.call(req)
    }
}

#[tokio::test]
async fn every_attempt_polls_its_own_clone_ready_before_calling() {
    let server = Server::start().await;
    let exec = executor(&[("api.flaky", policy(4))], Arc::default());
    let probe = MustBeReady {
        inner: client(),
        ready: false,
        polls: Arc::default(),
        calls: Arc::default(),
        unready_calls: Arc::default(),
    };
    let (polls, calls, unready) = (
        probe.polls.clone(),
        probe.calls.clone(),
        probe.unready_calls.clone(),
    );
    let mut svc = layer(exec, "api.flaky").layer(probe);
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/flaky/3")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert!(polls.load(Ordering::SeqCst) >= 4);
    assert!(
        !unready.load(Ordering::SeqCst),
        "a clone was called unready"
    );
}

#[tokio::test]
async fn a_request_that_cannot_be_cloned_is_sent_once() {
    let server = Server::start().await;
    let seen = Arc::new(Attempts::default());
    let exec = executor(&[("api.flaky", policy(4))], seen.clone());
    let mut svc =
        RecourseLayer::with_request_clone(exec.clone(), "api.flaky", |_: &http::Request<Body>| {
            None
        })
        .classifier(HttpByMethod::default())
        .layer(client());
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/flaky/2")))
        .await
        .unwrap();
    // The 503 comes back: retrying would need a second copy.
    assert_eq!(response.status(), 503);
    assert_eq!(server.hits("flaky"), 1);
    assert_eq!(seen.0.lock().unwrap()[0].3, REQUEST_NOT_CLONEABLE);

    // A transport error: the typed error says why it stopped.
    let addr = closed_port().await;
    let mut svc =
        RecourseLayer::with_request_clone(exec, "api.flaky", |_: &http::Request<Body>| None)
            .classifier(HttpByMethod::default())
            .layer(client());
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(get(&format!("http://{addr}/")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Operation { cause: Cause::NonRetryable, ref error } if error.is_connect()),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_stalled_non_cloneable_request_gets_no_hedge() {
    let server = Server::start().await;
    let mut p = policy(1);
    p.hedge.enabled = true;
    p.hedge.max_hedges = 1;
    p.hedge.hedge_delay = Duration::from_millis(20);
    let exec = executor(&[("api.slow", p)], Arc::default());
    let mut svc =
        RecourseLayer::with_request_clone(exec, "api.slow", |_: &http::Request<Body>| None)
            .classifier(HttpByMethod::default())
            .layer(client());
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/slow/300")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.hits("slow"), 1);
}

#[tokio::test]
async fn keys_come_from_the_request_and_a_panicking_key_fn_sends_nothing() {
    let server = Server::start().await;
    let seen = Arc::new(Attempts::default());
    let exec = executor(
        &[("api.flaky", policy(4)), ("api.status", policy(2))],
        seen.clone(),
    );
    let route_key = |r: &http::Request<Body>| {
        let route = r.uri().path().split('/').nth(1).unwrap();
        format!("api.{route}")
    };
    let mut svc = layer(exec.clone(), "unused")
        .key_fn(route_key)
        .layer(client());
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/flaky/1")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/status/500")))
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let keys: Vec<_> = seen.0.lock().unwrap().iter().map(|a| a.0.clone()).collect();
    assert_eq!(keys, ["api.flaky", "api.flaky", "api.status", "api.status"]);

    let mut svc = layer(exec, "unused")
        .key_fn(|_: &http::Request<Body>| panic!("no route"))
        .layer(client());
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/flaky/0")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoPolicy), "{err:?}");
    assert_eq!(server.hits("flaky"), 2);
}

#[tokio::test]
async fn a_classifier_per_request_and_a_cloneable_request_type() {
    // Any `Service<Req>` with `Req: Clone`: a closure service over strings.
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let inner = tower::service_fn(move |s: String| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                Err(format!("{s} failed"))
            } else {
                Ok(s.len())
            }
        }
    });
    let exec = executor(&[("strings", policy(5))], Arc::default());
    let mut svc = RecourseLayer::new(exec, "strings")
        .classifier(PerRequest(|req: &String| {
            let fatal = req.starts_with("fatal");
            move |r: &Result<usize, String>| match r {
                Ok(_) => Outcome::SUCCESS,
                Err(_) if fatal => Outcome::non_retryable("fatal"),
                Err(_) => Outcome::retryable("transient"),
            }
        }))
        .layer(inner);
    assert_eq!(svc.ready().await.unwrap().call("hello".into()).await, Ok(5));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    calls.store(0, Ordering::SeqCst);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call("fatal".into())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::Operation {
            error: "fatal failed".into(),
            cause: Cause::NonRetryable
        }
    );
}

/// The same flaky and stalling routes through `tower::retry` +
/// `tower::timeout`: both stacks make the same requests and get the same
/// answers.
#[tokio::test]
async fn side_by_side_with_tower_retry_and_timeout() {
    #[derive(Clone)]
    struct Attempts3(usize);
    impl<B, E> tower::retry::Policy<http::Request<Body>, http::Response<B>, E> for Attempts3 {
        type Future = tokio::time::Sleep;
        fn retry(
            &mut self,
            _req: &mut http::Request<Body>,
            result: &mut Result<http::Response<B>, E>,
        ) -> Option<Self::Future> {
            let retry = match result {
                Ok(r) => r.status().is_server_error(),
                Err(_) => true,
            };
            (retry && self.0 > 1).then(|| {
                self.0 -= 1;
                tokio::time::sleep(Duration::from_millis(1))
            })
        }
        fn clone_request(&mut self, req: &http::Request<Body>) -> Option<http::Request<Body>> {
            clone_http_request(req)
        }
    }

    let tower_server = Server::start().await;
    let recourse_server = Server::start().await;
    let mut tower_stack = tower::ServiceBuilder::new()
        .retry(Attempts3(3))
        .timeout(Duration::from_millis(200))
        .service(client());
    let mut p = policy(3);
    p.retry.timeout_per_attempt = Some(Duration::from_millis(200));
    let exec = executor(&[("api", p)], Arc::default());
    let mut recourse_stack = layer(exec, "api").layer(client());

    for path in ["/flaky/2", "/slow/2000"] {
        let t = tower_stack
            .ready()
            .await
            .unwrap()
            .call(get(&tower_server.url(path)))
            .await
            .unwrap();
        let r = recourse_stack
            .ready()
            .await
            .unwrap()
            .call(get(&recourse_server.url(path)))
            .await
            .unwrap();
        assert_eq!(
            (t.status(), r.status()),
            (http::StatusCode::OK, http::StatusCode::OK),
            "{path}"
        );
    }
    for route in ["flaky", "slow"] {
        assert_eq!(
            tower_server.hits(route),
            recourse_server.hits(route),
            "{route}"
        );
    }
    assert_eq!(
        (recourse_server.hits("flaky"), recourse_server.hits("slow")),
        (3, 2)
    );
}

#[tokio::test]
async fn a_panicking_clone_hook_sends_the_original_once() {
    let server = Server::start().await;
    let seen = Arc::new(Attempts::default());
    let exec = executor(&[("api.flaky", policy(4))], seen.clone());
    let mut svc = RecourseLayer::with_request_clone(
        exec,
        "api.flaky",
        |_: &http::Request<Body>| -> Option<http::Request<Body>> { panic!("clone failed") },
    )
    .classifier(HttpByMethod::default())
    .layer(client());
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/flaky/1")))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.hits("flaky"), 1);
    assert_eq!(seen.0.lock().unwrap()[0].3, REQUEST_NOT_CLONEABLE);
}

/// A stalled request through `tower::hedge` and through the layer's
/// hedging on the same kind of server: both send one hedge after 50 ms and
/// answer with it.
#[tokio::test]
async fn side_by_side_with_tower_hedge() {
    #[derive(Clone)]
    struct CloneHttp;
    impl tower::hedge::Policy<http::Request<Body>> for CloneHttp {
        fn clone_request(&self, req: &http::Request<Body>) -> Option<http::Request<Body>> {
            clone_http_request(req)
        }
        fn can_retry(&self, _: &http::Request<Body>) -> bool {
            true
        }
    }

    let tower_server = Server::start().await;
    let recourse_server = Server::start().await;
    // tower::hedge hedges at the p90 of recent latencies: 50 ms here.
    let mut tower_stack = tower::hedge::Hedge::new_with_mock_latencies(
        client(),
        CloneHttp,
        10,
        0.9,
        Duration::from_secs(60),
        &[50; 20],
    );
    let mut p = policy(1);
    p.hedge.enabled = true;
    p.hedge.max_hedges = 1;
    p.hedge.hedge_delay = Duration::from_millis(50);
    let exec = executor(&[("api", p)], Arc::default());
    let mut recourse_stack = layer(exec, "api").layer(client());

    let started = std::time::Instant::now();
    let t = tower_stack
        .ready()
        .await
        .unwrap()
        .call(get(&tower_server.url("/slow/3000")))
        .await
        .unwrap();
    let r = recourse_stack
        .ready()
        .await
        .unwrap()
        .call(get(&recourse_server.url("/slow/3000")))
        .await
        .unwrap();
    assert_eq!(
        (t.status(), r.status()),
        (http::StatusCode::OK, http::StatusCode::OK)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (tower_server.hits("slow"), recourse_server.hits("slow")),
        (2, 2)
    );
}
