//! The tonic layer on a real `Channel` to a real tonic server on 127.0.0.1:
//! a flaky method, pushback (valid, negative, malformed), a non-retryable
//! status, `grpc-timeout` from the remaining deadline and
//! `grpc-previous-rpc-attempts`; server streams whose status comes in
//! trailers before or after a message; client-streaming and bidirectional
//! calls passed through once. The service and client are hand-written
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
use recourse::observer::AttemptRecord;
use recourse::{Executor, Jitter, Observer, Policy, PolicyKey, StaticProvider};
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

type MsgStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Msg, Status>> + Send>>;

fn msg(text: impl Into<String>) -> Msg {
    Msg { text: text.into() }
}

/// `/test.Flaky/Stream`: `fail_first:N` answers the first N calls with a
/// stream that fails before its first message (headers, then the status
/// in trailers), then streams `a after {hit}` and `b`; `fail_after` sends
/// `a` then fails.
struct Streamer(Flaky);

impl tonic::server::ServerStreamingService<Msg> for Streamer {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<Result<tonic::Response<MsgStream>, Status>>;
    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        let hit = self.0.hits.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            let text = req.into_inner().text;
            let (command, arg) = text.split_once(':').unwrap_or((&text, ""));
            let items = match command {
                "fail_first" if hit <= arg.parse().unwrap() => {
                    vec![Err(Status::unavailable("stream restarting"))]
                }
                "fail_after" => vec![Ok(msg("a")), Err(Status::unavailable("gone"))],
                _ => vec![Ok(msg(format!("a after {hit}"))), Ok(msg("b"))],
            };
            let stream: MsgStream = Box::pin(tokio_stream::iter(items));
            Ok(tonic::Response::new(stream))
        })
    }
}

/// `/test.Flaky/Count`: counts the client's messages; a stream whose first
/// message is `flaky` fails with UNAVAILABLE on the first call.
struct Counter(Flaky);

impl tonic::server::ClientStreamingService<Msg> for Counter {
    type Response = Msg;
    type Future = BoxFuture<Result<tonic::Response<Msg>, Status>>;
    fn call(&mut self, req: tonic::Request<tonic::Streaming<Msg>>) -> Self::Future {
        let hit = self.0.hits.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            let mut stream = req.into_inner();
            let mut texts = Vec::new();
            while let Some(m) = stream.message().await? {
                texts.push(m.text);
            }
            if hit == 1 && texts.first().is_some_and(|t| t == "flaky") {
                return Err(Status::unavailable("restarting"));
            }
            Ok(tonic::Response::new(msg(format!(
                "{} messages after {hit}",
                texts.len()
            ))))
        })
    }
}

/// `/test.Flaky/Echo`: echoes each message as it comes.
struct Echo(Flaky);

impl tonic::server::StreamingService<Msg> for Echo {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<Result<tonic::Response<MsgStream>, Status>>;
    fn call(&mut self, req: tonic::Request<tonic::Streaming<Msg>>) -> Self::Future {
        self.0.hits.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let stream = req.into_inner();
            let echo: MsgStream = Box::pin(tokio_stream::StreamExt::map(stream, |m| {
                m.map(|m| msg(format!("echo {}", m.text)))
            }));
            Ok(tonic::Response::new(echo))
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
        let state = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
            Ok(match req.uri().path() {
                "/test.Flaky/Stream" => grpc.server_streaming(Streamer(state), req).await,
                "/test.Flaky/Count" => grpc.client_streaming(Counter(state), req).await,
                "/test.Flaky/Echo" => grpc.streaming(Echo(state), req).await,
                _ => grpc.unary(Handler(state), req).await,
            })
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
                .policy(KEY, policy.clone())
                .unwrap()
                .policy("test.Flaky.Stream", policy.clone())
                .unwrap()
                .policy("test.Flaky.Count", policy.clone())
                .unwrap()
                .policy("test.Flaky.Echo", policy)
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

fn reasons(seen: &Attempts) -> Vec<&'static str> {
    seen.0.lock().unwrap().iter().map(|a| a.1).collect()
}

/// Reads a server stream to its end: its messages, then its status.
async fn drain(mut stream: tonic::Streaming<Msg>) -> (Vec<String>, Result<(), Status>) {
    let mut texts = Vec::new();
    for _ in 0..100 {
        match stream.message().await {
            Ok(Some(m)) => texts.push(m.text),
            Ok(None) => return (texts, Ok(())),
            Err(status) => return (texts, Err(status)),
        }
    }
    panic!("more than 100 messages: {texts:?}");
}

async fn server_stream(client: &mut Client, text: &str) -> Result<tonic::Streaming<Msg>, Status> {
    client.ready().await.unwrap();
    let r = client
        .server_streaming(
            tonic::Request::new(msg(text)),
            PathAndQuery::from_static("/test.Flaky/Stream"),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await?;
    Ok(r.into_inner())
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_message_is_retried() {
    let server = Flaky::default();
    let url = start(server.clone()).await;
    let mut p = policy();
    p.retry.initial_backoff = Duration::from_millis(1);
    p.retry.max_backoff = Duration::from_millis(1);
    let (mut client, seen) = connect(url, p).await;
    let stream = server_stream(&mut client, "fail_first:2").await.unwrap();
    let (texts, end) = drain(stream).await;
    assert_eq!(texts, ["a after 3", "b"]);
    end.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    assert_eq!(
        reasons(&seen),
        ["grpc_Unavailable", "grpc_Unavailable", "success"]
    );

    // Every attempt failing: the caller gets the trailers' status.
    let server = Flaky::default();
    let url = start(server.clone()).await;
    let mut p = policy();
    p.retry.max_attempts = 2;
    p.retry.initial_backoff = Duration::from_millis(1);
    p.retry.max_backoff = Duration::from_millis(1);
    let (mut client, seen) = connect(url, p).await;
    let status = server_stream(&mut client, "fail_first:5")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "stream restarting");
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        2,
        "{:?}",
        reasons(&seen)
    );
    assert_eq!(reasons(&seen), ["grpc_Unavailable"; 2]);
}

#[tokio::test]
async fn a_status_after_a_message_is_not_retried() {
    let server = Flaky::default();
    let url = start(server.clone()).await;
    let (mut client, seen) = connect(url, policy()).await;
    let stream = server_stream(&mut client, "fail_after").await.unwrap();
    let (texts, end) = drain(stream).await;
    assert_eq!(texts, ["a"]);
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert_eq!(reasons(&seen), ["success"]);
}

async fn count(
    client: &mut Client,
    messages: impl tokio_stream::Stream<Item = Msg> + Send + 'static,
) -> Result<String, Status> {
    client.ready().await.unwrap();
    let r = client
        .client_streaming(
            tonic::Request::new(messages),
            PathAndQuery::from_static("/test.Flaky/Count"),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await?;
    Ok(r.into_inner().text)
}

/// A stream of `texts` fed by a task: the first message at once, the rest
/// only once the server has begun its `hit`th call — so the request body
/// cannot be over before the layer has passed it on.
fn fed(texts: &[&str], server: &Flaky, hit: u32) -> impl tokio_stream::Stream<Item = Msg> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let texts: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
    let hits = server.hits.clone();
    tokio::spawn(async move {
        let mut texts = texts.into_iter();
        tx.send(msg(texts.next().unwrap())).await.unwrap();
        for _ in 0..2000 {
            if hits.load(Ordering::SeqCst) >= hit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            hits.load(Ordering::SeqCst) >= hit,
            "the server never got the call"
        );
        for t in texts {
            tx.send(msg(t)).await.unwrap();
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[tokio::test]
async fn a_client_stream_still_being_fed_passes_through_once() {
    let server = Flaky::default();
    let url = start(server.clone()).await;
    let (mut client, seen) = connect(url, policy()).await;
    // UNAVAILABLE, which a unary call would retry: sent once, returned.
    let status = count(&mut client, fed(&["flaky", "x", "y"], &server, 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    // Every message arrived, the first one (read before the layer saw the
    // body was not over) included.
    assert_eq!(
        count(&mut client, fed(&["a", "b", "c"], &server, 2))
            .await
            .unwrap(),
        "3 messages after 2"
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    // No executor: no attempt records.
    assert!(reasons(&seen).is_empty());
}

#[tokio::test]
async fn a_client_stream_that_is_all_ready_is_kept_and_retried() {
    let server = Flaky::default();
    let url = start(server.clone()).await;
    let (mut client, seen) = connect(url, policy()).await;
    let all = tokio_stream::iter(["flaky", "x", "y"].map(msg));
    assert_eq!(count(&mut client, all).await.unwrap(), "3 messages after 2");
    assert_eq!(reasons(&seen), ["grpc_Unavailable", "success"]);
}

#[tokio::test]
async fn a_bidi_call_passes_through_and_converses() {
    let server = Flaky::default();
    let url = start(server.clone()).await;
    let (mut client, seen) = connect(url, policy()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(msg("1")).await.unwrap();
    client.ready().await.unwrap();
    let talk = async {
        let r = client
            .streaming(
                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                PathAndQuery::from_static("/test.Flaky/Echo"),
                ProstCodec::<Msg, Msg>::default(),
            )
            .await
            .unwrap();
        let mut replies = r.into_inner();
        let mut heard = Vec::new();
        // Each message is sent only after the previous echo: a layer that
        // buffered the request stream would wait forever here.
        for next in ["2", "3"] {
            heard.push(replies.message().await.unwrap().unwrap().text);
            tx.send(msg(next)).await.unwrap();
        }
        heard.push(replies.message().await.unwrap().unwrap().text);
        drop(tx);
        assert!(replies.message().await.unwrap().is_none());
        heard
    };
    let heard = tokio::time::timeout(Duration::from_secs(10), talk)
        .await
        .expect("the bidi call conversed within 10 s");
    assert_eq!(heard, ["echo 1", "echo 2", "echo 3"]);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert!(reasons(&seen).is_empty());
}
