//! Layers that know about each other, over real servers on 127.0.0.1: a
//! client → A → B → C chain of axum services, each middle one reading
//! `recourse-attempt` with `UpstreamLayer` and calling the next through
//! reqwest + `RecourseMiddleware` under its own executor, C always
//! answering 503; the three `amplification.upstream_retry` modes, garbage
//! headers, the tower layer's mark, and `grpc-previous-rpc-attempts` read
//! by a tonic server.

#![allow(clippy::unwrap_used)]

use core::convert::Infallible;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;
use recourse::integrations::reqwest::RecourseMiddleware;
use recourse::integrations::tower::{set_attempt_header, RecourseLayer, UpstreamLayer};
use recourse::upstream::{self, UpstreamRetry};
use recourse::{Executor, Policy, StaticProvider};
use reqwest_middleware::ClientWithMiddleware;

const KEY: &str = "down.GET";

fn policy(mode: UpstreamRetry, ledger: bool) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 3;
    p.retry.initial_backoff = Duration::from_millis(1);
    p.retry.max_backoff = Duration::from_millis(2);
    p.retry.overall_timeout = Some(Duration::from_secs(10));
    p.amplification.upstream_retry = mode;
    if ledger {
        p.amplification.max_amplification = 1.1;
        p.amplification.min_per_sec = 0;
    }
    p
}

/// A reqwest client under its own executor (one per service, as in a
/// real fleet), keyed `down.GET`.
fn client(policy: &Policy) -> ClientWithMiddleware {
    let exec = Executor::builder()
        .provider(
            StaticProvider::builder()
                .policy(KEY, policy.clone())
                .unwrap()
                .build(),
        )
        .build();
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(RecourseMiddleware::new(Arc::new(exec)).key_fn(|_| KEY.to_owned()))
        .build()
}

/// What one service saw: the `recourse-attempt` header of each request,
/// and the upstream count its handler ran with.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Entry>>>);

/// A request's header, and the count its handler ran with.
type Entry = (Option<String>, Option<u32>);

impl Seen {
    fn push(&self, headers: &HeaderMap) {
        let header = headers
            .get(upstream::HTTP_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        self.0.lock().unwrap().push((header, upstream::current()));
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn headers(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _)| h.as_deref().unwrap().parse().unwrap())
            .collect();
        v.sort_unstable();
        v
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// C: always 503.
async fn leaf(seen: Seen) -> String {
    let app = Router::new().route(
        "/",
        any(|State(seen): State<Seen>, headers: HeaderMap| async move {
            seen.push(&headers);
            StatusCode::SERVICE_UNAVAILABLE
        }),
    );
    serve(app.with_state(seen).layer(UpstreamLayer::http())).await
}

#[derive(Clone)]
struct Mid {
    seen: Seen,
    client: ClientWithMiddleware,
    down: String,
}

/// A or B: calls `down` under `policy`; 200 when it answered 200, 503
/// otherwise. Returns its URL and its `UpstreamLayer`.
async fn mid(seen: Seen, policy: &Policy, down: String) -> (String, UpstreamLayer) {
    let state = Mid {
        seen,
        client: client(policy),
        down,
    };
    let layer = UpstreamLayer::http();
    let app = Router::new()
        .route(
            "/",
            any(|State(m): State<Mid>, headers: HeaderMap| async move {
                m.seen.push(&headers);
                match m.client.get(&m.down).send().await {
                    Ok(r) if r.status().is_success() => StatusCode::OK,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                }
            }),
        )
        .with_state(state)
        .layer(layer.clone());
    (serve(app).await, layer)
}

struct Chain {
    a: Seen,
    b: Seen,
    c: Seen,
    url: String,
    b_url: String,
    b_layer: UpstreamLayer,
}

/// client → A → B → C, A and B under `policy`.
async fn start_chain(policy: &Policy) -> Chain {
    let (a, b, c) = (Seen::default(), Seen::default(), Seen::default());
    let c_url = leaf(c.clone()).await;
    let (b_url, b_layer) = mid(b.clone(), policy, c_url).await;
    let (url, _) = mid(a.clone(), policy, b_url.clone()).await;
    Chain {
        a,
        b,
        c,
        url,
        b_url,
        b_layer,
    }
}

#[tokio::test]
async fn per_layer_retries_multiply_to_27_attempts_with_counts_in_the_headers() {
    let p = policy(UpstreamRetry::Always, false);
    let chain = start_chain(&p).await;
    let r = client(&p).get(&chain.url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!((chain.a.len(), chain.b.len(), chain.c.len()), (3, 9, 27));
    // Each request carries the attempts made above it on its path: the
    // client's attempt index, plus A's, plus B's.
    assert_eq!(chain.a.headers(), [0, 1, 2]);
    let mut want: Vec<u32> = (0..3)
        .flat_map(|a| (0..3).flat_map(move |b| (0..3).map(move |c| a + b + c)))
        .collect();
    want.sort_unstable();
    assert_eq!(chain.c.headers(), want);
    // The handlers ran with the count their request carried.
    for (header, current) in chain.b.0.lock().unwrap().iter() {
        assert_eq!(
            current.unwrap(),
            header.as_deref().unwrap().parse::<u32>().unwrap()
        );
    }
}

#[tokio::test]
async fn not_when_retry_sends_a_retried_request_once_at_every_layer_below() {
    let p = policy(UpstreamRetry::NotWhenRetry, false);
    let chain = start_chain(&p).await;
    let r = client(&p).get(&chain.url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    // A: the client's 3 attempts. B: A retries only the client's first
    // attempt (3) and sends its retries once (2). C: B retries only the
    // one request that was a first all the way up (3), the other 4 once.
    assert_eq!((chain.a.len(), chain.b.len(), chain.c.len()), (3, 5, 7));
    assert_eq!(chain.b.headers(), [0, 1, 1, 2, 2]);
    assert_eq!(chain.c.headers(), [0, 1, 1, 1, 2, 2, 2]);
}

/// A request through the chain fails: a 503, or (when the client's ledger
/// refused its retry) an error.
async fn fails(c: &ClientWithMiddleware, url: &str) {
    if let Ok(r) = c.get(url).send().await {
        assert_eq!(r.status(), 503);
    }
}

#[tokio::test]
async fn a_shared_allowance_keeps_every_layer_within_the_ledgers_bound() {
    const N: usize = 40;
    let bound = N + N / 10;
    let shared = policy(UpstreamRetry::SharedAllowance, true);
    let chain = start_chain(&shared).await;
    let c = client(&shared);
    for _ in 0..N {
        fails(&c, &chain.url).await;
    }
    let counts = (chain.a.len(), chain.b.len(), chain.c.len());
    assert!(
        counts.0 <= bound && counts.1 <= bound && counts.2 <= bound,
        "{counts:?}"
    );
    assert!(
        counts.0 > N,
        "the client still retries within the allowance: {counts:?}"
    );

    // The same ledgers without sharing: each layer spends its own 10 %.
    let alone = policy(UpstreamRetry::Always, true);
    let chain = start_chain(&alone).await;
    let c = client(&alone);
    for _ in 0..N {
        fails(&c, &chain.url).await;
    }
    let alone_counts = (chain.a.len(), chain.b.len(), chain.c.len());
    assert!(
        alone_counts.2 > bound,
        "{alone_counts:?} vs shared {counts:?}"
    );
    eprintln!("{N} requests, reaching A, B, C: shared {counts:?}, ledgers alone {alone_counts:?}");
}

#[tokio::test]
async fn garbage_upstream_counts_are_treated_as_absent_and_counted() {
    let p = policy(UpstreamRetry::NotWhenRetry, false);
    let chain = start_chain(&p).await;
    let raw = reqwest::Client::new();
    let mut sent = 0;
    for bad in ["abc", "-1", "99999999999", "1.5", "", "10001", "+1", " 1 2"] {
        let r = raw
            .get(&chain.b_url)
            .header(upstream::HTTP_HEADER, bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{bad:?}");
        sent += 1;
        assert_eq!(chain.b_layer.invalid_headers(), sent, "{bad:?}");
        // Absent: B's call is a first one and retries as usual.
        assert_eq!(chain.c.len() as u64, 3 * sent, "{bad:?}");
    }
    // The header twice is ambiguous: absent too.
    let r = raw
        .get(&chain.b_url)
        .header(upstream::HTTP_HEADER, "1")
        .header(upstream::HTTP_HEADER, "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(chain.b_layer.invalid_headers(), sent + 1);
    assert_eq!(chain.c.len() as u64, 3 * (sent + 1));
    // A valid count: the request is a retry upstream, sent once.
    let before = chain.c.len();
    raw.get(&chain.b_url)
        .header(upstream::HTTP_HEADER, " 1 ")
        .send()
        .await
        .unwrap();
    assert_eq!(chain.c.len(), before + 1);
    assert_eq!(chain.b_layer.invalid_headers(), sent + 1);
    assert!(chain
        .b
        .0
        .lock()
        .unwrap()
        .iter()
        .all(|(h, cur)| { cur.is_none() || h.as_deref().map(str::trim) == Some("1") }));
}

#[tokio::test]
async fn the_tower_layer_marks_each_attempt_with_the_count_above_plus_its_own() {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower::ServiceExt;
    use tower_layer::Layer;

    let c = Seen::default();
    let url = leaf(c.clone()).await;
    let p = policy(UpstreamRetry::Always, false);
    let exec = Arc::new(
        Executor::builder()
            .provider(StaticProvider::builder().policy(KEY, p).unwrap().build())
            .build(),
    );
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let svc = RecourseLayer::with_request_clone(
        exec,
        KEY,
        recourse::integrations::tower::clone_http_request,
    )
    .classifier(recourse::integrations::tower::HttpByMethod::default())
    .mark_attempts(set_attempt_header)
    .layer(hyper);
    let req = || {
        http::Request::get(url.as_str())
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let r = upstream::scope(Some(4), svc.clone().oneshot(req()))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(c.headers(), [4, 5, 6]);
    // Outside a scope the count starts at 0.
    svc.oneshot(req()).await.unwrap();
    assert_eq!(c.headers(), [0, 1, 2, 4, 5, 6]);
}

// ------------------------------------------------------------------ gRPC

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A unary service that answers UNAVAILABLE and records the upstream count
/// its handler ran with.
#[derive(Clone, Default)]
struct Down(Arc<Mutex<Vec<Option<u32>>>>);

struct Handler(Down);

impl tonic::server::UnaryService<Msg> for Handler {
    type Response = Msg;
    type Future = BoxFuture<Result<tonic::Response<Msg>, tonic::Status>>;
    fn call(&mut self, _: tonic::Request<Msg>) -> Self::Future {
        let seen = self.0.clone();
        Box::pin(async move {
            seen.0.lock().unwrap().push(upstream::current());
            Err(tonic::Status::unavailable("down"))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Down {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let state = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Msg, Msg>::default());
            Ok(grpc.unary(Handler(state), req).await)
        })
    }
}

impl tonic::server::NamedService for Down {
    const NAME: &'static str = "test.Down";
}

#[tokio::test]
async fn a_tonic_server_reads_grpc_previous_rpc_attempts_into_the_scope() {
    use tower_layer::Layer;

    let down = Down::default();
    let layer = UpstreamLayer::grpc();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer.clone())
            .add_service(down.clone())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let key = "test.Down.Call";
    let exec = Arc::new(
        Executor::builder()
            .provider(
                StaticProvider::builder()
                    .policy(key, policy(UpstreamRetry::Always, false))
                    .unwrap()
                    .build(),
            )
            .build(),
    );
    let channel = tonic::transport::Channel::from_shared(url.clone())
        .unwrap()
        .connect_lazy();
    let mut client = tonic::client::Grpc::new(
        recourse::integrations::tonic::GrpcLayer::new(exec).layer(channel.clone()),
    );
    let call = |client: &mut tonic::client::Grpc<_>| {
        let mut client = client.clone();
        async move {
            client.ready().await.unwrap();
            client
                .unary(
                    tonic::Request::new(Msg::default()),
                    http::uri::PathAndQuery::from_static("/test.Down/Call"),
                    tonic_prost::ProstCodec::<Msg, Msg>::default(),
                )
                .await
                .map(|_: tonic::Response<Msg>| ())
        }
    };
    // A6's header on retries only; with a count above, added to it.
    assert!(call(&mut client).await.is_err());
    assert!(upstream::scope(Some(3), call(&mut client)).await.is_err());
    assert_eq!(
        *down.0.lock().unwrap(),
        [None, Some(1), Some(2), Some(3), Some(4), Some(5)]
    );
    assert_eq!(layer.invalid_headers(), 0);
    // A garbage header from a plain client: absent, counted.
    let mut plain = tonic::client::Grpc::new(channel);
    plain.ready().await.unwrap();
    let mut req = tonic::Request::new(Msg::default());
    req.metadata_mut()
        .insert("grpc-previous-rpc-attempts", "-7".parse().unwrap());
    let r: Result<tonic::Response<Msg>, _> = plain
        .unary(
            req,
            http::uri::PathAndQuery::from_static("/test.Down/Call"),
            tonic_prost::ProstCodec::<Msg, Msg>::default(),
        )
        .await;
    assert!(r.is_err());
    assert_eq!(down.0.lock().unwrap().last(), Some(&None));
    assert_eq!(layer.invalid_headers(), 1);
}
