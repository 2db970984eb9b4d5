//! [`RecourseMiddleware`]: a `reqwest-middleware` middleware that runs every
//! request as one recourse call.
//!
//! ```
//! use std::sync::Arc;
//! use recourse::integrations::reqwest::RecourseMiddleware;
//!
//! let exec = Arc::new(recourse::Executor::new());
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(RecourseMiddleware::new(exec))
//!     .build();
//! # drop(client);
//! ```
//!
//! What it does with each request:
//!
//! - **Key**: by default the URL's host and the method, `{host}.{METHOD}`
//!   (`api.example.com.GET`) — low-cardinality, no path or query; set
//!   [`RecourseMiddleware::key_fn`] to name keys by route. A key function
//!   that panics is contained: the request is not sent and the error is
//!   [`Error::NoPolicy`].
//! - **Classifier**: the [`HttpClassifier`] for the method: idempotent
//!   methods retry transport errors, 5xx, 408 and 429, honouring
//!   `Retry-After` in both its forms (seconds and HTTP-date; a garbage value
//!   is ignored, so the policy's backoff applies; a far-future one is cut
//!   to the executor's `max_retry_after`, or stops the call when it reaches
//!   past the call's deadline). `POST`, `PATCH` and other non-idempotent
//!   methods are sent once unless [`RecourseMiddleware::retry_non_idempotent`].
//! - **Body**: every attempt sends a copy made by
//!   [`reqwest::Request::try_clone`]. A streaming body cannot be copied: the
//!   request is then sent once, as is, and a failure that would have been
//!   retried ends the call with the reason `request_not_cloneable` (hedges
//!   of it wait and are cancelled). Never sent twice.
//! - **Extensions**: each attempt gets a clone of the request's
//!   extensions.
//! - **Result**: a response is returned as `Ok`, also a 503 that ran out of
//!   retries (the caller reads the status, as without the middleware). A
//!   call that ends without a response returns
//!   `reqwest_middleware::Error::Middleware` holding a
//!   [`RecourseError`] — `recourse::Error<reqwest_middleware::Error>`, the
//!   last transport error kept inside; get it back with
//!   `error.downcast_ref::<RecourseError>()` on the `anyhow::Error`.
//! - **`recourse-attempt`**: every attempt carries the header
//!   [`HTTP_HEADER`](crate::upstream::HTTP_HEADER): the upstream attempt
//!   count of the request being served
//!   ([`upstream::current`](crate::upstream::current), 0 outside a scope)
//!   plus the attempts this call sent before this one, so that a server
//!   behind it can apply `amplification.upstream_retry` (see
//!   [`crate::upstream`]). [`RecourseMiddleware::attempt_header`] turns it
//!   off.
//! - **Tracing**: with the `tracing` feature each call runs in the span
//!   `recourse.call`.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::panic::catch_unwind;
use std::sync::Arc;

use core::panic::AssertUnwindSafe;
use recourse_core::amplification::outbound_attempts;
use recourse_core::{AttemptInfo, Error, OutcomeKind};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::executor::Executor;
use crate::http::HttpClassifier;
use crate::timer::{DefaultTimer, TimerSource};

/// The error inside `reqwest_middleware::Error::Middleware` when a call
/// ends without a response.
pub type RecourseError = Error<reqwest_middleware::Error>;

/// Reason: a failure that would have been retried, but the request's body
/// is a stream that cannot be sent again.
pub const REQUEST_NOT_CLONEABLE: &str = "request_not_cloneable";

type KeyFn = dyn Fn(&Request) -> String + Send + Sync;

/// The middleware; see the [module docs](self).
pub struct RecourseMiddleware<T = DefaultTimer> {
    exec: Arc<Executor<T>>,
    key: Option<Arc<KeyFn>>,
    retry_non_idempotent: bool,
    attempt_header: bool,
}

impl<T> fmt::Debug for RecourseMiddleware<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecourseMiddleware")
            .field("custom_key", &self.key.is_some())
            .field("retry_non_idempotent", &self.retry_non_idempotent)
            .field("attempt_header", &self.attempt_header)
            .finish_non_exhaustive()
    }
}

impl<T> RecourseMiddleware<T> {
    /// The middleware on `exec`, keyed by host and method.
    pub fn new(exec: Arc<Executor<T>>) -> Self {
        Self {
            exec,
            key: None,
            retry_non_idempotent: false,
            attempt_header: true,
        }
    }

    /// Keys computed by `key` from each request (keep them
    /// low-cardinality: a route, never an id).
    #[must_use]
    pub fn key_fn(mut self, key: impl Fn(&Request) -> String + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// Retry non-idempotent methods too (default `false`): only for
    /// endpoints where sending a request twice is harmless.
    #[must_use]
    pub fn retry_non_idempotent(mut self, retry: bool) -> Self {
        self.retry_non_idempotent = retry;
        self
    }

    /// Whether each attempt carries the `recourse-attempt` header (default
    /// `true`).
    #[must_use]
    pub fn attempt_header(mut self, send: bool) -> Self {
        self.attempt_header = send;
        self
    }

    /// The request's key, or `None` when the key function panicked.
    fn key(&self, req: &Request) -> Option<String> {
        match &self.key {
            Some(f) => catch_unwind(AssertUnwindSafe(|| f(req))).ok(),
            None => Some(default_key(req)),
        }
    }
}

/// `{host}.{METHOD}`, the default key (`unknown-host` for a URL without a
/// host).
pub fn default_key(req: &Request) -> String {
    let host = req.url().host_str().unwrap_or("unknown-host");
    format!("{host}.{}", req.method())
}

fn middleware_error(e: RecourseError) -> reqwest_middleware::Error {
    reqwest_middleware::Error::Middleware(anyhow::Error::new(e))
}

#[async_trait::async_trait]
impl<T> Middleware for RecourseMiddleware<T>
where
    T: TimerSource,
    T::Timer: Send,
    <T::Timer as recourse_core::Timer>::Sleep: Send,
{
    async fn handle(
        &self,
        req: Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let Some(key) = self.key(&req) else {
            return Err(middleware_error(Error::NoPolicy));
        };
        let http =
            HttpClassifier::new(req.method()).retry_non_idempotent(self.retry_non_idempotent);
        let consumed = AtomicBool::new(false);
        let classifier = |r: &Result<Response, reqwest_middleware::Error>| {
            let outcome = match r {
                Ok(response) => http.classify_response(response.status(), response.headers()),
                Err(_) => http.transport_error(),
            };
            if outcome.kind == OutcomeKind::Retryable && consumed.load(Ordering::Acquire) {
                recourse_core::Outcome::non_retryable(REQUEST_NOT_CLONEABLE)
            } else {
                outcome
            }
        };
        let mut original = Some(req);
        let extensions_template = extensions.clone();
        let consumed = &consumed;
        let upstream = self.attempt_header.then(crate::upstream::current);
        let sent = AtomicU32::new(0);
        let sent = &sent;
        let op = move |_: AttemptInfo| {
            let mut request = match original.as_ref().and_then(Request::try_clone) {
                Some(copy) => Some(copy),
                None => {
                    let r = original.take();
                    if r.is_some() {
                        consumed.store(true, Ordering::Release);
                    }
                    r
                }
            };
            if let (Some(upstream), Some(r)) = (upstream, request.as_mut()) {
                let n = outbound_attempts(upstream, sent.fetch_add(1, Ordering::Relaxed));
                r.headers_mut()
                    .insert(crate::upstream::HTTP_HEADER, http::HeaderValue::from(n));
            }
            let mut ext = extensions_template.clone();
            let next = next.clone();
            async move {
                let Some(request) = request else {
                    // The body was sent by an earlier attempt: this hedge
                    // has nothing to send and waits to be cancelled.
                    return core::future::pending().await;
                };
                next.run(request, &mut ext).await
            }
        };
        let call = self.exec.call_classified_in(&key, classifier, op);
        #[cfg(feature = "tracing")]
        let call =
            tracing::Instrument::instrument(call, crate::observers::tracing::call_span(&key));
        call.await.map_err(middleware_error)
    }
}
