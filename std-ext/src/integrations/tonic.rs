//! [`GrpcLayer`]: recourse on a tonic client `Channel` (or any gRPC
//! transport service), as gRPC's own retry ([gRFC A6]) would do it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn core::error::Error>> {
//! use std::sync::Arc;
//! use recourse::integrations::tonic::GrpcLayer;
//! use tower_layer::Layer;
//!
//! let exec = Arc::new(recourse::Executor::new());
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect().await?;
//! let channel = GrpcLayer::new(exec).layer(channel);
//! // Generated clients take it like a channel: `GreeterClient::new(channel)`.
//! # drop(channel); Ok(()) }
//! ```
//!
//! What it does with each RPC:
//!
//! - **Key**: the method's path without its leading slash, with `/` as `.`
//!   (`/helloworld.Greeter/SayHello` → `helloworld.Greeter.SayHello`), or
//!   [`GrpcLayer::key_fn`]'s.
//! - **Request**: the layer reads what the request body has ready without
//!   waiting. A body that ends there — a unary or server-streaming request
//!   (one message), or a client stream whose messages were all ready — is
//!   kept in memory and every attempt sends a copy with the same headers. A
//!   body that fails to read is answered with a trailers-only `INTERNAL`
//!   status, unsent.
//! - **Client-streaming and bidirectional calls pass through**: a request
//!   body that is not over when the call is made (its next message is not
//!   ready: a stream fed by a channel, a bidi call that waits for the
//!   server's answer before sending more) goes to the inner service
//!   untouched, once — with what was already read in front, no buffering,
//!   no retry, no hedge, no `grpc-timeout` or `grpc-previous-rpc-attempts`
//!   of recourse's, and no executor (so no observer event, budget or
//!   breaker). Buffering such a stream could not end before the server
//!   answered, and replaying it would need all of it.
//! - **Classifier**: the [`GrpcClassifier`] on the status the server sent
//!   in a trailers-only response (every status a tonic server returns from
//!   a handler before a message), or in trailers that come before any
//!   message (a tonic server-streaming handler whose stream fails at once):
//!   `UNAVAILABLE` and `RESOURCE_EXHAUSTED` are retried,
//!   `grpc-retry-pushback-ms` replaces the backoff, a negative or
//!   malformed pushback stops the retries (`grpc_pushback_stop`). A
//!   transport error (no response) counts as `UNAVAILABLE`. A malformed
//!   `grpc-status-details-bin` is ignored, never a panic.
//! - **The response**: when its headers carry no status, the layer waits
//!   for the body's first frame before handing the response over (so a
//!   response future resolves with the first message, not with the
//!   headers): trailers there are classified as above (a failure is handed
//!   over as a trailers-only response), a message makes the attempt a
//!   success, and the response goes to the caller with that message in
//!   front. A status in the trailers **after** a message is not
//!   classified: seeing it would mean holding back every message of a
//!   server stream until the stream's end (buffering all of it, and
//!   delaying its first message by the stream's length), and gRPC's own
//!   retry ([gRFC A6]) commits a call once a message has come. The caller
//!   gets that status from tonic, after the messages.
//! - **`grpc-timeout`**: each attempt's header carries what is left of the
//!   policy's deadlines when it is sent — the per-attempt timeout, or what
//!   remains of the overall one, whichever is shorter — and never more than
//!   a `grpc-timeout` the caller set. The layer reads the timeouts from the
//!   executor's provider (one more lookup per RPC than the call's own);
//!   for a key the provider has no policy for, only the caller's
//!   `grpc-timeout` is sent.
//! - **`grpc-previous-rpc-attempts`**: the number of attempts sent before
//!   this one (A6's header, hedges included), plus the upstream attempt
//!   count of the request being served
//!   ([`upstream::current`](crate::upstream::current)), so that a chain of
//!   services knows how many attempts were made above it; left out when 0
//!   (a first attempt all the way up). A tonic server reads it with
//!   [`UpstreamLayer::grpc`](crate::integrations::tower::UpstreamLayer::grpc)
//!   (feature `tower`) and applies `amplification.upstream_retry` (see
//!   [`crate::upstream`]).
//! - **Errors**: `recourse::Error` of the transport's error; tonic turns it
//!   into a `Status` for the caller, with the inner error as its source.
//!
//! [gRFC A6]: https://github.com/grpc/proposal/blob/master/A6-client-retries.md

use core::fmt;
use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, Ordering};

use core::task::{Context, Poll};
use core::time::Duration;
use recourse_core::amplification::outbound_attempts;
use std::panic::catch_unwind;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use core::panic::AssertUnwindSafe;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body as _, Frame};
use http_body_util::Full;
use recourse_core::machine::Cause;
use recourse_core::{AttemptInfo, Error, Outcome, PolicyKey, Timer};
use tonic::body::Body;
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use crate::executor::Executor;
use crate::grpc::GrpcClassifier;
use crate::timer::{DefaultTimer, TimerSource};

/// `grpc-timeout`.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";
/// `grpc-previous-rpc-attempts`.
pub const GRPC_PREVIOUS_RPC_ATTEMPTS: &str = crate::upstream::GRPC_HEADER;

type KeyFn = dyn Fn(&Request<Body>) -> String + Send + Sync;

/// Wraps a gRPC transport service in [`GrpcService`]; see the
/// [module docs](self).
pub struct GrpcLayer<T = DefaultTimer> {
    exec: Arc<Executor<T>>,
    key: Option<Arc<KeyFn>>,
    classifier: GrpcClassifier,
}

impl<T> Clone for GrpcLayer<T> {
    fn clone(&self) -> Self {
        Self {
            exec: self.exec.clone(),
            key: self.key.clone(),
            classifier: self.classifier,
        }
    }
}

impl<T> fmt::Debug for GrpcLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcLayer")
            .field("custom_key", &self.key.is_some())
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<T> GrpcLayer<T> {
    /// The layer on `exec`, keyed by method, with the default
    /// [`GrpcClassifier`].
    pub fn new(exec: Arc<Executor<T>>) -> Self {
        Self {
            exec,
            key: None,
            classifier: GrpcClassifier::new(),
        }
    }

    /// Keys computed by `key` from each request (a panic in it is
    /// contained: the RPC fails with [`Error::NoPolicy`], unsent).
    #[must_use]
    pub fn key_fn(
        mut self,
        key: impl Fn(&Request<Body>) -> String + Send + Sync + 'static,
    ) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// The classifier (for another retryable set).
    #[must_use]
    pub fn classifier(mut self, classifier: GrpcClassifier) -> Self {
        self.classifier = classifier;
        self
    }
}

impl<S, T> Layer<S> for GrpcLayer<T> {
    type Service = GrpcService<S, T>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A gRPC transport service whose every RPC is one recourse call; made by
/// [`GrpcLayer`].
pub struct GrpcService<S, T = DefaultTimer> {
    inner: S,
    layer: GrpcLayer<T>,
}

impl<S: Clone, T> Clone for GrpcService<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for GrpcService<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// The default key: `/pkg.Service/Method` → `pkg.Service.Method`.
pub fn default_key(req: &Request<Body>) -> String {
    req.uri().path().trim_start_matches('/').replace('/', ".")
}

/// The status of a trailers-only response, if the headers carry one.
/// `grpc-status-details-bin` is dropped first: tonic panics on a value that
/// is not base64.
fn header_status(headers: &HeaderMap) -> Option<Status> {
    headers.get(Status::GRPC_STATUS)?;
    let mut headers = headers.clone();
    headers.remove("grpc-status-details-bin");
    Status::from_header_map(&headers)
}

/// `d` as a `grpc-timeout` value: at most 8 digits, rounded up, in the
/// finest unit that fits.
fn format_timeout(d: Duration) -> HeaderValue {
    let micros = d.as_micros().max(1);
    let units: [(u128, char); 4] = [(1, 'u'), (1_000, 'm'), (1_000_000, 'S'), (60_000_000, 'M')];
    for (per, unit) in units {
        let n = micros.div_ceil(per);
        if n <= 99_999_999 {
            return HeaderValue::from_str(&format!("{n}{unit}"))
                .unwrap_or(HeaderValue::from_static("99999999H"));
        }
    }
    HeaderValue::from_static("99999999H")
}

/// A `grpc-timeout` header's duration, if well-formed.
fn parse_timeout(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?;
    let (digits, unit) = s.split_at(s.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A trailers-only response with `status`.
fn status_response(status: &Status) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    // `add_header` only fails on a message that cannot be a header value;
    // then the code alone goes out.
    if status.add_header(response.headers_mut()).is_err() {
        let code = HeaderValue::from(status.code() as i32);
        response.headers_mut().insert(Status::GRPC_STATUS, code);
    }
    response
}

/// What [`read_ready`] found in a request body.
enum Read {
    /// The body ended: all of its data.
    Whole(Bytes),
    /// The body is not over: the frames read so far, and the rest.
    Streaming(VecDeque<Result<Frame<Bytes>, Status>>, Body),
    /// Reading failed.
    Failed(Status),
}

/// Reads the frames `body` has ready, without waiting for more.
async fn read_ready(mut body: Body) -> Read {
    let mut data = BytesMut::new();
    let mut read = VecDeque::new();
    let ended = poll_fn(|cx| loop {
        match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    data.extend_from_slice(chunk);
                }
                read.push_back(Ok(frame));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(None) => return Poll::Ready(Ok(true)),
            Poll::Pending => return Poll::Ready(Ok(false)),
        }
    })
    .await;
    match ended {
        Ok(true) => Read::Whole(data.freeze()),
        Ok(false) => Read::Streaming(read, body),
        Err(e) => Read::Failed(e),
    }
}

/// A body that yields `read` first, then `rest`.
struct Replay {
    read: VecDeque<Result<Frame<Bytes>, Status>>,
    rest: Body,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        match this.read.pop_front() {
            Some(frame) => Poll::Ready(Some(frame)),
            None => Pin::new(&mut this.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }
}

/// Waits for the first frame of a response whose headers carry no status:
/// trailers with a failing status before any message become a
/// trailers-only response (for the classifier and the caller); otherwise
/// the response is handed on with that frame in front.
async fn first_frame(response: Response<Body>) -> Response<Body> {
    if response.headers().contains_key(Status::GRPC_STATUS) {
        return response;
    }
    let (mut parts, mut body) = response.into_parts();
    let first = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
    let first = match first {
        None => return Response::from_parts(parts, body),
        Some(Ok(frame)) => match frame.into_trailers() {
            Ok(trailers) => {
                let failed = header_status(&trailers).is_some_and(|s| s.code() != Code::Ok);
                if failed {
                    parts.headers.extend(trailers);
                    return Response::from_parts(parts, Body::empty());
                }
                Ok(Frame::trailers(trailers))
            }
            Err(frame) => Ok(frame),
        },
        Some(Err(e)) => Err(e),
    };
    let replay = Replay {
        read: VecDeque::from([first]),
        rest: body,
    };
    Response::from_parts(parts, Body::new(replay))
}

impl<S, ResBody, T> Service<Request<Body>> for GrpcService<S, T>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn core::error::Error + Send + Sync>>,
    T: TimerSource,
    T::Timer: Send,
    <T::Timer as Timer>::Sleep: Send,
{
    type Response = Response<Body>;
    type Error = Error<S::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Error<S::Error>>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|error| Error::Operation {
            error,
            cause: Cause::NonRetryable,
        })
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let spare = self.inner.clone();
        let ready = core::mem::replace(&mut self.inner, spare.clone());
        let key = match &self.layer.key {
            Some(f) => match catch_unwind(AssertUnwindSafe(|| f(&req))) {
                Ok(k) => k,
                Err(_) => return Box::pin(core::future::ready(Err(Error::NoPolicy))),
            },
            None => default_key(&req),
        };
        let exec = self.layer.exec.clone();
        let grpc = self.layer.classifier;
        #[cfg(feature = "tracing")]
        let span = crate::observers::tracing::call_span(&key);
        let call = async move {
            let started = StdInstant::now();
            let (parts, body) = req.into_parts();
            let bytes = match read_ready(body).await {
                Read::Whole(bytes) => bytes,
                Read::Failed(e) => {
                    let status = Status::internal(format!(
                        "recourse: the request body could not be read: {e}"
                    ));
                    return Ok(status_response(&status));
                }
                Read::Streaming(read, rest) => {
                    // Once, untouched, on the service polled ready.
                    let body = Body::new(Replay { read, rest });
                    let mut service = ready;
                    let response = service
                        .call(Request::from_parts(parts, body))
                        .await
                        .map_err(|error| Error::Operation {
                            error,
                            cause: Cause::NonRetryable,
                        })?;
                    return Ok(response.map(Body::new));
                }
            };
            let timeouts = exec
                .provider()
                .policy(PolicyKey::parse(&key))
                .ok()
                .map(|l| {
                    (
                        l.policy.policy.retry.timeout_per_attempt,
                        l.policy.policy.retry.overall_timeout,
                    )
                });
            let caller_timeout = parts.headers.get(GRPC_TIMEOUT).and_then(parse_timeout);
            let upstream = crate::upstream::current();
            let sent = AtomicU32::new(0);
            let sent = &sent;
            let mut ready = Some(ready);
            let classifier = |r: &Result<Response<Body>, S::Error>| -> Outcome {
                match r {
                    Ok(response) => match header_status(response.headers()) {
                        Some(status) if status.code() != Code::Ok => grpc.classify_status(&status),
                        _ if response.status() != http::StatusCode::OK => grpc.classify_status(
                            &Status::unavailable(format!("HTTP {}", response.status())),
                        ),
                        _ => Outcome::SUCCESS,
                    },
                    Err(_) => grpc.classify_status(&Status::unavailable("transport error")),
                }
            };
            let op = move |_: AttemptInfo| {
                let mut request =
                    Request::from_parts(parts.clone(), Body::new(Full::new(bytes.clone())));
                let previous = outbound_attempts(upstream, sent.fetch_add(1, Ordering::Relaxed));
                if previous > 0 {
                    request
                        .headers_mut()
                        .insert(GRPC_PREVIOUS_RPC_ATTEMPTS, HeaderValue::from(previous));
                }
                let left = timeouts.and_then(|(per_attempt, overall)| {
                    let overall = overall.map(|o| o.saturating_sub(started.elapsed()));
                    [per_attempt, overall, caller_timeout]
                        .into_iter()
                        .flatten()
                        .min()
                });
                if let Some(left) = left.or(caller_timeout) {
                    request
                        .headers_mut()
                        .insert(GRPC_TIMEOUT, format_timeout(left));
                }
                let service = ready.take();
                let spare = spare.clone();
                async move {
                    let mut service = match service {
                        Some(s) => s,
                        None => {
                            let mut s = spare;
                            poll_fn(|cx| s.poll_ready(cx)).await?;
                            s
                        }
                    };
                    let response = service.call(request).await?;
                    Ok(first_frame(response.map(Body::new)).await)
                }
            };
            exec.call_classified_in(&key, classifier, op).await
        };
        #[cfg(feature = "tracing")]
        let call = tracing::Instrument::instrument(call, span);
        Box::pin(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_round_trips_in_the_finest_unit_that_fits() {
        let cases = [
            (Duration::from_millis(250), "250000u"),
            (Duration::from_secs(150), "150000m"),
            (Duration::from_secs(200_000), "200000S"),
            (Duration::from_secs(200_000_000), "3333334M"),
            (Duration::ZERO, "1u"),
        ];
        for (d, s) in cases {
            assert_eq!(format_timeout(d), s, "{d:?}");
        }
        assert_eq!(
            parse_timeout(&HeaderValue::from_static("250m")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_timeout(&HeaderValue::from_static("2S")),
            Some(Duration::from_secs(2))
        );
        for bad in ["", "m", "12", "123456789m", "-5m", "5x", "5 m"] {
            assert_eq!(
                parse_timeout(&HeaderValue::from_static(bad)),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_malformed_status_details_header_is_ignored() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("14"));
        h.insert(
            "grpc-status-details-bin",
            HeaderValue::from_static("%%%not base64"),
        );
        let status = header_status(&h);
        assert_eq!(status.map(|s| s.code()), Some(Code::Unavailable));
        assert!(header_status(&HeaderMap::new()).is_none());
    }
}
