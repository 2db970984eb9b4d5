//! A tower [`Layer`] that runs every request through an [`Executor`]:
//! retries, backoff, timeouts, hedging, budgets and the breaker of the
//! request's policy key.
//!
//! Why a layer: a service team stacks middleware on its client rather than
//! wrapping each call site in `exec.call(key, ...)`. [`RecourseLayer`] puts
//! the executor in that stack, so every request made through the service is
//! one recourse call: one key, one policy, one timeline's worth of observer
//! events.
//!
//! ```
//! use std::sync::Arc;
//! use recourse::integrations::tower::RecourseLayer;
//! use recourse::Executor;
//! use tower_layer::Layer;
//! use tower_service::Service;
//!
//! # #[derive(Clone)] struct Client;
//! # impl tower_service::Service<String> for Client {
//! #     type Response = String; type Error = std::io::Error;
//! #     type Future = std::future::Ready<Result<String, std::io::Error>>;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
//! #     fn call(&mut self, r: String) -> Self::Future { std::future::ready(Ok(r)) }
//! # }
//! let exec = Arc::new(Executor::new());
//! let mut service = RecourseLayer::<String>::new(exec, "user-service.GetUser").layer(Client);
//!
//! # async_io::block_on(async {
//! std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
//! assert_eq!(service.call("GetUser 42".into()).await?, "GetUser 42");
//! # Ok::<(), recourse::Error<std::io::Error>>(())
//! # }).unwrap();
//! ```
//!
//! ## Tower's contracts, and how the layer keeps them
//!
//! - **`poll_ready` before each `call`.** The layer's own `poll_ready` is
//!   the inner service's. Its `call` hands that ready service to the first
//!   attempt and keeps a clone; every later attempt (retry or hedge) clones
//!   the service again and waits for the clone's `poll_ready` before calling
//!   it, as `tower::retry` does. A clone's readiness error is that attempt's
//!   error, classified like any other.
//! - **A request per attempt.** Every attempt sends its own copy, made by
//!   the layer's clone hook: `Clone::clone` for [`RecourseLayer::new`], your
//!   function for [`RecourseLayer::with_request_clone`] (for `Request:
//!   !Clone`, e.g. an `http::Request` with a streaming body). When the hook
//!   returns `None` the attempt sends the original request instead, and
//!   from then on the call makes no new attempt: a failure that would have
//!   been retried ends the call with the reason
//!   [`REQUEST_NOT_CLONEABLE`] (non-retryable), a hedge spawned after that
//!   waits and is cancelled when the call ends. A hook that panics counts
//!   as `None` (the panic is contained). A request is never sent twice.
//! - **Errors.** The service's error is [`recourse::Error`](crate::Error)
//!   of the inner service's error: the inner error is kept, typed, in
//!   [`Error::Operation`] and the `last` fields. When the classifier rejects
//!   an `Ok` response (a 503 read as retryable) and recourse stops, the
//!   caller gets that response as `Ok`, as with [`Executor::call`].
//! - **Tracing.** With the `tracing` feature, each call runs in the span
//!   `recourse.call` (see `observers::tracing::call_span`), so a
//!   `TracingObserver`'s attempt spans and the inner service's own spans
//!   nest under it.
//!
//! ## Layers that know about each other
//!
//! On the client side, [`RecourseLayer::mark_attempts`] writes the upstream
//! attempt count on each attempt's request ([`set_attempt_header`] writes
//! the `recourse-attempt` header of an `http::Request`): the count of the
//! request being served ([`upstream::current`](crate::upstream::current))
//! plus the attempts this call sent before. On the server side,
//! [`UpstreamLayer`] reads that header (or `grpc-previous-rpc-attempts`
//! with [`UpstreamLayer::grpc`]) from each inbound request and runs the
//! handler in [`upstream::scope`](crate::upstream::scope), so that the
//! executor calls the handler makes apply the policy's
//! `amplification.upstream_retry` (see [`crate::upstream`]). A value that
//! is not a plain decimal up to 10 000 — garbage, negative, huge, or the
//! header repeated — is treated as absent and counted
//! ([`UpstreamLayer::invalid_headers`]).
//!
//! ## Keys and classifiers
//!
//! The key is fixed ([`RecourseLayer::new`]) or computed from each request
//! ([`RecourseLayer::key_fn`], e.g. from an `http::Request`'s route; keys
//! are low-cardinality by design — do not put ids in them). A key function
//! that panics is contained: the request is not sent and the call fails
//! with [`Error::NoPolicy`] (there is no key to find a policy under).
//!
//! The classifier is made per request by a [`MakeClassifier`]:
//! [`DefaultClassifier`] (every `Err` retryable), [`PerRequest`] (your
//! function of the request), or, with the `http` feature, [`HttpByMethod`]
//! (the [`HttpClassifier`](crate::http::HttpClassifier) for the request's
//! method, so a `POST` is not retried unless the policy opts in).

use core::fmt;
use core::future::{poll_fn, Future};
use core::panic::AssertUnwindSafe;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::task::{Context, Poll};
use std::panic::catch_unwind;
use std::sync::Arc;

use recourse_core::amplification::outbound_attempts;
use recourse_core::machine::Cause;
use recourse_core::{
    AttemptInfo, Classifier, DefaultClassifier, Error, Outcome, OutcomeKind, Timer,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::executor::Executor;
use crate::timer::{DefaultTimer, TimerSource};

/// Reason: an attempt failed retryably, but the request could not be cloned
/// for another attempt (the clone hook returned `None`), so the call ended.
pub const REQUEST_NOT_CLONEABLE: &str = "request_not_cloneable";

/// The boxed future a [`RecourseService`] returns.
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, Error<E>>> + Send>>;

type KeyFn<Req> = dyn Fn(&Req) -> String + Send + Sync;
type CloneFn<Req> = dyn Fn(&Req) -> Option<Req> + Send + Sync;
type MarkFn<Req> = dyn Fn(&mut Req, u32) + Send + Sync;

/// Where a request's policy key comes from.
enum KeySource<Req> {
    Fixed(Arc<str>),
    Computed(Arc<KeyFn<Req>>),
}

impl<Req> Clone for KeySource<Req> {
    fn clone(&self) -> Self {
        match self {
            Self::Fixed(k) => Self::Fixed(k.clone()),
            Self::Computed(f) => Self::Computed(f.clone()),
        }
    }
}

impl<Req> KeySource<Req> {
    /// The key, or `None` when the key function panicked.
    fn key(&self, req: &Req) -> Option<Arc<str>> {
        match self {
            Self::Fixed(k) => Some(k.clone()),
            Self::Computed(f) => catch_unwind(AssertUnwindSafe(|| f(req)))
                .ok()
                .map(Arc::from),
        }
    }
}

/// Makes the classifier of one request's call.
pub trait MakeClassifier<Req> {
    /// The classifier.
    type Classifier;
    /// The classifier for `req`'s call.
    fn make_classifier(&self, req: &Req) -> Self::Classifier;
}

/// Every request gets the [`DefaultClassifier`]: `Ok` succeeds, every `Err`
/// is retryable.
impl<Req> MakeClassifier<Req> for DefaultClassifier {
    type Classifier = DefaultClassifier;
    fn make_classifier(&self, _req: &Req) -> DefaultClassifier {
        DefaultClassifier
    }
}

/// A classifier made by a function of the request.
#[derive(Clone, Copy, Debug)]
pub struct PerRequest<F>(pub F);

impl<Req, C, F: Fn(&Req) -> C> MakeClassifier<Req> for PerRequest<F> {
    type Classifier = C;
    fn make_classifier(&self, req: &Req) -> C {
        (self.0)(req)
    }
}

/// The [`HttpClassifier`](crate::http::HttpClassifier) for an
/// `http::Request`'s method: idempotent methods retry transport errors, 5xx,
/// 408 and 429 and honour `Retry-After`; others only with
/// `retry_non_idempotent`.
#[cfg(feature = "http")]
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpByMethod {
    /// Retry non-idempotent methods too (default `false`).
    pub retry_non_idempotent: bool,
}

#[cfg(feature = "http")]
impl<B> MakeClassifier<::http::Request<B>> for HttpByMethod {
    type Classifier = crate::http::HttpClassifier;
    fn make_classifier(&self, req: &::http::Request<B>) -> Self::Classifier {
        crate::http::HttpClassifier::new(req.method())
            .retry_non_idempotent(self.retry_non_idempotent)
    }
}

/// A copy of `req` with a cloneable body: method, URI, version, headers and
/// body (extensions are not copied: they are not `Clone`). A clone hook for
/// [`RecourseLayer::with_request_clone`].
#[cfg(feature = "http")]
pub fn clone_http_request<B: Clone>(req: &::http::Request<B>) -> Option<::http::Request<B>> {
    let mut copy = ::http::Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Sets the `recourse-attempt` header of `req` to `attempts`: a mark for
/// [`RecourseLayer::mark_attempts`].
#[cfg(feature = "http")]
pub fn set_attempt_header<B>(req: &mut ::http::Request<B>, attempts: u32) {
    req.headers_mut().insert(
        crate::upstream::HTTP_HEADER,
        ::http::HeaderValue::from(attempts),
    );
}

/// The upstream attempt count of `headers`' `name`: `Ok(None)` when the
/// header is absent, `Err(())` when it is repeated or its value is not a
/// plain decimal up to [`MAX_UPSTREAM_ATTEMPTS`](crate::upstream::MAX_UPSTREAM_ATTEMPTS).
#[cfg(feature = "http")]
fn read_upstream(
    headers: &::http::HeaderMap,
    name: &::http::HeaderName,
) -> Result<Option<u32>, ()> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    crate::upstream::parse_upstream_attempts(first.as_bytes())
        .map(Some)
        .ok_or(())
}

/// Server side: reads the upstream attempt count of each inbound
/// `http::Request` and calls the inner service (and polls its future) in
/// [`upstream::scope`](crate::upstream::scope); see the
/// [module docs](self#layers-that-know-about-each-other).
#[cfg(feature = "http")]
#[derive(Clone, Debug)]
pub struct UpstreamLayer {
    header: ::http::HeaderName,
    invalid: Arc<core::sync::atomic::AtomicU64>,
}

#[cfg(feature = "http")]
impl UpstreamLayer {
    /// Reads `recourse-attempt` (HTTP).
    pub fn http() -> Self {
        Self::header(::http::HeaderName::from_static(
            crate::upstream::HTTP_HEADER,
        ))
    }

    /// Reads `grpc-previous-rpc-attempts` (gRPC, for a tonic server).
    pub fn grpc() -> Self {
        Self::header(::http::HeaderName::from_static(
            crate::upstream::GRPC_HEADER,
        ))
    }

    /// Reads the header `name`.
    pub fn header(name: ::http::HeaderName) -> Self {
        Self {
            header: name,
            invalid: Arc::default(),
        }
    }

    /// Requests whose header was repeated or not a valid count (treated as
    /// absent), by this layer and every service it made.
    pub fn invalid_headers(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }
}

#[cfg(feature = "http")]
impl<S> Layer<S> for UpstreamLayer {
    type Service = UpstreamService<S>;
    fn layer(&self, inner: S) -> UpstreamService<S> {
        UpstreamService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service that runs each request in its upstream attempt count's scope;
/// made by [`UpstreamLayer`].
#[cfg(feature = "http")]
#[derive(Clone, Debug)]
pub struct UpstreamService<S> {
    inner: S,
    layer: UpstreamLayer,
}

#[cfg(feature = "http")]
impl<S, B> Service<::http::Request<B>> for UpstreamService<S>
where
    S: Service<::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = crate::upstream::Scoped<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ::http::Request<B>) -> Self::Future {
        let upstream = read_upstream(req.headers(), &self.layer.header).unwrap_or_else(|()| {
            self.layer.invalid.fetch_add(1, Ordering::Relaxed);
            None
        });
        // `call` itself may start the work: it runs in the scope too.
        let inner = &mut self.inner;
        let fut = crate::upstream::with_current(upstream, || inner.call(req));
        crate::upstream::scope(upstream, fut)
    }
}

/// Wraps services in [`RecourseService`]; see the [module docs](self).
pub struct RecourseLayer<Req, M = DefaultClassifier, T = DefaultTimer> {
    exec: Arc<Executor<T>>,
    key: KeySource<Req>,
    classify: M,
    clone_request: Arc<CloneFn<Req>>,
    mark: Option<Arc<MarkFn<Req>>>,
}

impl<Req, M: Clone, T> Clone for RecourseLayer<Req, M, T> {
    fn clone(&self) -> Self {
        Self {
            exec: self.exec.clone(),
            key: self.key.clone(),
            classify: self.classify.clone(),
            clone_request: self.clone_request.clone(),
            mark: self.mark.clone(),
        }
    }
}

impl<Req, M: fmt::Debug, T> fmt::Debug for RecourseLayer<Req, M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.key {
            KeySource::Fixed(k) => &**k,
            KeySource::Computed(_) => "<computed>",
        };
        f.debug_struct("RecourseLayer")
            .field("key", &key)
            .field("classify", &self.classify)
            .field("mark_attempts", &self.mark.is_some())
            .finish_non_exhaustive()
    }
}

impl<Req: Clone + 'static, T> RecourseLayer<Req, DefaultClassifier, T> {
    /// A layer calling `exec` under the fixed `key`, with the default
    /// classifier, cloning the request for each attempt.
    pub fn new(exec: Arc<Executor<T>>, key: impl Into<String>) -> Self {
        Self::with_request_clone(exec, key, |r: &Req| Some(r.clone()))
    }
}

impl<Req: 'static, T> RecourseLayer<Req, DefaultClassifier, T> {
    /// A layer calling `exec` under the fixed `key`, making each attempt's
    /// request with `clone_request` (`None`: this request cannot be copied;
    /// see the [module docs](self) for what the call does then).
    pub fn with_request_clone(
        exec: Arc<Executor<T>>,
        key: impl Into<String>,
        clone_request: impl Fn(&Req) -> Option<Req> + Send + Sync + 'static,
    ) -> Self {
        Self {
            exec,
            key: KeySource::Fixed(Arc::from(key.into())),
            classify: DefaultClassifier,
            clone_request: Arc::new(clone_request),
            mark: None,
        }
    }
}

impl<Req, M, T> RecourseLayer<Req, M, T> {
    /// The key computed from each request (a panic in `key` is contained:
    /// the request fails with [`Error::NoPolicy`] unsent).
    #[must_use]
    pub fn key_fn(mut self, key: impl Fn(&Req) -> String + Send + Sync + 'static) -> Self {
        self.key = KeySource::Computed(Arc::new(key));
        self
    }

    /// Writes the upstream attempt count on each attempt's request with
    /// `mark` (e.g. [`set_attempt_header`] for an `http::Request`): the
    /// count of the request being served
    /// ([`upstream::current`](crate::upstream::current), 0 outside a
    /// scope) plus the attempts this call sent before this one. A `mark`
    /// that panics is contained: the request goes out unmarked.
    #[must_use]
    pub fn mark_attempts(mut self, mark: impl Fn(&mut Req, u32) + Send + Sync + 'static) -> Self {
        self.mark = Some(Arc::new(mark));
        self
    }

    /// The classifier maker: [`DefaultClassifier`], [`PerRequest`],
    /// `HttpByMethod`, or your own [`MakeClassifier`].
    pub fn classifier<M2>(self, classify: M2) -> RecourseLayer<Req, M2, T> {
        RecourseLayer {
            exec: self.exec,
            key: self.key,
            classify,
            clone_request: self.clone_request,
            mark: self.mark,
        }
    }
}

impl<S, Req, M: Clone, T> Layer<S> for RecourseLayer<Req, M, T> {
    type Service = RecourseService<S, Req, M, T>;
    fn layer(&self, inner: S) -> Self::Service {
        RecourseService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service whose every request is one recourse call; made by
/// [`RecourseLayer`].
pub struct RecourseService<S, Req, M = DefaultClassifier, T = DefaultTimer> {
    inner: S,
    layer: RecourseLayer<Req, M, T>,
}

impl<S: Clone, Req, M: Clone, T> Clone for RecourseService<S, Req, M, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, Req, M: fmt::Debug, T> fmt::Debug for RecourseService<S, Req, M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecourseService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// The call's classifier, which stops retrying once the original request
/// has been sent.
struct UnlessConsumed<'a, C> {
    inner: C,
    consumed: &'a AtomicBool,
}

impl<R, E, C: Classifier<R, E>> Classifier<R, E> for UnlessConsumed<'_, C> {
    fn classify(&self, result: &Result<R, E>) -> Outcome {
        let outcome = self.inner.classify(result);
        if outcome.kind == OutcomeKind::Retryable && self.consumed.load(Ordering::Acquire) {
            Outcome::non_retryable(REQUEST_NOT_CLONEABLE)
        } else {
            outcome
        }
    }
}

impl<S, Req, M, T> Service<Req> for RecourseService<S, Req, M, T>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    Req: Send + 'static,
    M: MakeClassifier<Req>,
    M::Classifier: Classifier<S::Response, S::Error> + Send + 'static,
    T: TimerSource,
    T::Timer: Send,
    <T::Timer as Timer>::Sleep: Send,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|error| Error::Operation {
            error,
            cause: Cause::NonRetryable,
        })
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The ready service goes to the first attempt; later attempts clone.
        let spare = self.inner.clone();
        let ready = core::mem::replace(&mut self.inner, spare.clone());
        let Some(key) = self.layer.key.key(&req) else {
            return Box::pin(core::future::ready(Err(Error::NoPolicy)));
        };
        let classifier = self.layer.classify.make_classifier(&req);
        let exec = self.layer.exec.clone();
        let clone_request = self.layer.clone_request.clone();
        let mark = self.layer.mark.clone();
        #[cfg(feature = "tracing")]
        let span = crate::observers::tracing::call_span(&key);
        let call = async move {
            let upstream = crate::upstream::current();
            let sent = AtomicU32::new(0);
            let sent = &sent;
            let consumed = AtomicBool::new(false);
            let mut original = Some(req);
            let mut ready = Some(ready);
            let classifier = UnlessConsumed {
                inner: classifier,
                consumed: &consumed,
            };
            let consumed = &consumed;
            exec.call_classified_in(&key, classifier, move |_: AttemptInfo| {
                let copy = original.as_ref().and_then(|r| {
                    catch_unwind(AssertUnwindSafe(|| clone_request(r))).unwrap_or(None)
                });
                let request = copy.or_else(|| {
                    let r = original.take();
                    if r.is_some() {
                        consumed.store(true, Ordering::Release);
                    }
                    r
                });
                let mut request = request;
                if let (Some(mark), Some(r)) = (&mark, request.as_mut()) {
                    let n = outbound_attempts(upstream, sent.fetch_add(1, Ordering::Relaxed));
                    let _ = catch_unwind(AssertUnwindSafe(|| mark(r, n)));
                }
                let service = ready.take();
                let spare = spare.clone();
                async move {
                    let Some(request) = request else {
                        // The original was sent by an earlier attempt: this
                        // one (a hedge) has nothing to send and waits to be
                        // cancelled.
                        return core::future::pending().await;
                    };
                    let mut service = match service {
                        Some(s) => s,
                        None => {
                            let mut s = spare;
                            poll_fn(|cx| s.poll_ready(cx)).await?;
                            s
                        }
                    };
                    service.call(request).await
                }
            })
            .await
        };
        #[cfg(feature = "tracing")]
        let call = tracing::Instrument::instrument(call, span);
        Box::pin(call)
    }
}
