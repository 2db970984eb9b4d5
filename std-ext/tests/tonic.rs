//! The tonic layer on a real `Channel` to a real tonic server on 127.0.0.1:
//! a flaky method, pushback (valid, negative, malformed), a non-retryable
//! status, `grpc-timeout` from the remaining deadline and
//! `grpc-previous-rpc-attempts`. The service and client are hand-written
//! with tonic's `ProstCodec` and a hand-written prost message (no protoc).

#![allow(clippy::unwrap_used)]

use core::convert::Infallible;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::{Arc, Mutex};

use http::uri::PathAndQuery;
use recourse::integrations::tonic::GrpcLayer;
use recourse::{AttemptRecord, Executor, Jitter, Observer, Policy, PolicyKey, StaticProvider};
use tonic::body::Body;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::Service;
use tower_layer::Layer;

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A request's `grpc-timeout` and `grpc-previous-rpc-attempts`.
type Seen = (Option<String>, Option<String>);

/// The server's state: hits, and the two headers of every request.
#[derive(Clone, Default)]
struct Flaky {
    hits: Arc<AtomicU32>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Handler(Flaky);

impl tonic::server::UnaryService<Msg> for Handler {
    type Response = Msg;
    type Future = BoxFuture<Result<tonic::Response<Msg>, Status>>;
    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let header = |name| {
                req.metadata()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let seen = (header("grpc-timeout"), header("grpc-previous-rpc-attempts"));
            state.seen.lock().unwrap().push(seen);
            let hit = state.hits.fetch_add(1, Ordering::SeqCst) + 1;
            let text = req.into_inner().text;
            let (command, arg) = text.split_once(':').unwrap_or((&text, ""));
            match command {
                "flaky" if hit <= arg.parse().unwrap() => Err(Status::unavailable("restarting")),
                "pushback" if hit == 1 => {
                    let mut s = Status::unavailable("busy");
                    s.metadata_mut().insert(
                        "grpc-retry-pushback-ms",
                        MetadataValue::try_from(arg).unwrap(),
                    );
                    Err(s)
                }
                "invalid" => Err(Status::invalid_argument("no")),
                _ => Ok(tonic::Response::new(Msg {
                    text: format!("ok after {hit}"),
                })),
            }
        })
    }
}

impl Service<http::Request<Body>> for Flaky {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let handler = Handler(self.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
            Ok(grpc.unary(handler, req).await)
        })
    }
}

impl tonic::server::NamedService for Flaky {
    const NAME: &'static str = "test.Flaky";
}

async fn start(server: Flaky) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(incoming),
    );
    url
}

/// Every attempt: (backoff before it, reason).
#[derive(Default)]
struct Attempts(Mutex<Vec<(Duration, &'static str)>>);

impl Observer for Attempts {
    fn on_attempt(&self, _: PolicyKey<'_>, r: &AttemptRecord) {
        self.0.lock().unwrap().push((r.backoff, r.outcome.reason));
    }
}

const KEY: &str = "test.Flaky.Call";

fn policy() -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 4;
    p.retry.initial_backoff = Duration::from_millis(100);
    p.retry.max_backoff = Duration::from_millis(100);
    p.retry.jitter = Jitter::None;
    p.retry.timeout_per_attempt = Some(Duration::from_secs(3));
    p.retry.overall_timeout = Some(Duration::from_secs(2));
    p
}

type Client = tonic::client::Grpc<recourse::integrations::tonic::GrpcService<Channel>>;

async fn connect(url: String, policy: Policy) -> (Client, Arc<Attempts>) {
    let seen = Arc::new(Attempts::default());
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy(KEY, policy)
                .unwrap()
                .build(),
        )
        .observer(seen.clone())
        .build();
    let channel = Channel::from_shared(url).unwrap().connect_lazy();
    let channel = GrpcLayer::new(Arc::new(exec)).layer(channel);
    (tonic::client::Grpc::new(channel), seen)
}

async fn rpc(client: &mut Client, text: &str) -> Result<String, Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let r = client
        .unary(
            tonic::Request::new(Msg { text: text.into() }),
            PathAndQuery::from_static("/test.Flaky/Call"),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await?;
    Ok(r.into_inner().text)
}

fn timeout_ms(v: &Option<String>) -> u64 {
    let v = v.as_deref().unwrap();
    let (n, unit) = v.split_at(v.len() - 1);
    let n: u64 = n.parse().unwrap();
    match unit {
        "u" => n / 1000,
        "m" => n,
        other => panic!("unit {other}"),
    }
}

#[tokio::test]
async fn a_flaky_method_is_retried_with_a6_headers() {
    let server = Flaky::default();
    let url = start(server.clone()).await;
    let (mut client, seen) = connect(url, policy()).await;
    assert_eq!(rpc(&mut client, "flaky:2").await.unwrap(), "ok after 3");
    let requests = server.seen.lock().unwrap().clone();
    let previous: Vec<_> = requests.iter().map(|r| r.1.as_deref()).collect();
    assert_eq!(previous, [None, Some("1"), Some("2")]);
    // The overall deadline (2 s) is shorter than the per-attempt one (3 s):
    // each attempt is told what is left of it.
    let left: Vec<_> = requests.iter().map(|r| timeout_ms(&r.0)).collect();
    assert!(left[0] <= 2000 && left[0] > 1800, "{left:?}");
    assert!(
        left[1] <= left[0] - 100 && left[2] <= left[1] - 100,
        "{left:?}"
    );
    assert_eq!(
        seen.0
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.1)
            .collect::<Vec<_>>(),
        ["grpc_Unavailable", "grpc_Unavailable", "success"]
    );
}

#[tokio::test]
async fn pushback_replaces_the_backoff_or_stops_the_retries() {
    let server = Flaky::default();
    let url = start(server.clone()).await;
    let (mut client, seen) = connect(url, policy()).await;
    assert_eq!(rpc(&mut client, "pushback:30").await.unwrap(), "ok after 2");
    assert_eq!(
        *seen.0.lock().unwrap(),
        [
            (Duration::ZERO, "grpc_Unavailable"),
            (Duration::from_millis(30), "success")
        ]
    );

    for bad in ["-1", "soon", "1.5"] {
        let server = Flaky::default();
        let url = start(server.clone()).await;
        let (mut client, seen) = connect(url, policy()).await;
        let status = rpc(&mut client, &format!("pushback:{bad}"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{bad}");
        assert_eq!(server.hits.load(Ordering::SeqCst), 1, "{bad}");
        assert_eq!(seen.0.lock().unwrap()[0].1, "grpc_pushback_stop", "{bad}");
    }
}

#[tokio::test]
async fn a_non_retryable_status_is_returned_at_once() {
    let server = Flaky::default();
    let url = start(server.clone()).await;
    let (mut client, seen) = connect(url, policy()).await;
    let status = rpc(&mut client, "invalid").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert_eq!(seen.0.lock().unwrap()[0].1, "grpc_InvalidArgument");
}

#[tokio::test]
async fn a_caller_grpc_timeout_is_an_upper_bound() {
    let server = Flaky::default();
    let url = start(server.clone()).await;
    let (mut client, _) = connect(url, policy()).await;
    client.ready().await.unwrap();
    let mut req = tonic::Request::new(Msg { text: "ok".into() });
    req.set_timeout(Duration::from_millis(250));
    client
        .unary(
            req,
            PathAndQuery::from_static("/test.Flaky/Call"),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .unwrap();
    let requests = server.seen.lock().unwrap().clone();
    assert_eq!(timeout_ms(&requests[0].0), 250);
}

#[tokio::test]
async fn a_dead_server_is_retried_as_unavailable_then_fails() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut p = policy();
    p.retry.initial_backoff = Duration::from_millis(1);
    p.retry.max_backoff = Duration::from_millis(1);
    let (mut client, seen) = connect(url, p).await;
    let status = rpc(&mut client, "flaky:0").await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    assert_eq!(
        seen.0
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.1)
            .collect::<Vec<_>>(),
        ["grpc_Unavailable"; 4]
    );
}

#[tokio::test]
async fn a_panicking_key_fn_sends_nothing() {
    let server = Flaky::default();
    let url = start(server.clone()).await;
    let exec = Executor::builder().build();
    let channel = Channel::from_shared(url).unwrap().connect_lazy();
    let channel = GrpcLayer::new(Arc::new(exec))
        .key_fn(|_| panic!("no key"))
        .layer(channel);
    let mut client = tonic::client::Grpc::new(channel);
    let status = rpc(&mut client, "flaky:0").await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    assert!(status.message().contains("no policy"), "{status:?}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}
