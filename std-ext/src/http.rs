//! HTTP classification: what a response, or a failure to get one, means for
//! the call.
//!
//! Why a protocol-aware classifier: "retry on `Err`" is wrong for HTTP both
//! ways. Most failures arrive as `Ok(response)` with a 5xx or 429 status, so
//! a plain `Err` check never retries them; and retrying is only safe when
//! sending the request twice does no harm. A `503` to a `GET` is worth
//! another try, the same `503` to a `POST` may mean the order was placed
//! before the server fell over. So the classifier is made per call from the
//! request's method, and non-idempotent methods are not retried unless the
//! policy opts in (the caller knows the endpoint is safe: an idempotency key,
//! a conditional request).
//!
//! The server can also say *when* to come back: a `Retry-After` header on a
//! retryable response becomes the outcome's retry-after hint, which replaces
//! the jittered backoff (bounded by the executor's `max_retry_after`; a hint
//! that would end past the call's deadline stops the call at once).
//!
//! | result | idempotent method (or opted in) | non-idempotent method |
//! | --- | --- | --- |
//! | `2xx` | success `success` | success `success` |
//! | transport error (`Err`) | retryable `http_transport_error` | non-retryable `http_non_idempotent` |
//! | `5xx` | retryable `http_5xx` | non-retryable `http_non_idempotent` |
//! | `408` | retryable `http_408` | non-retryable `http_non_idempotent` |
//! | `429` | retryable `http_429` | non-retryable `http_non_idempotent` |
//! | any other status (`1xx`, `3xx`, other `4xx`) | non-retryable `http_non_retryable_status` | non-retryable `http_non_retryable_status` |
//!
//! Idempotent methods (RFC 9110 §9.2.2): `GET`, `HEAD`, `PUT`, `DELETE`,
//! `OPTIONS`, `TRACE`. Every other method (`POST`, `PATCH`, `CONNECT`,
//! extension methods) is treated as non-idempotent.
//!
//! ```
//! use recourse::http::HttpClassifier;
//! use recourse::{Classifier, OutcomeKind};
//! use std::time::Duration;
//!
//! let response = http::Response::builder()
//!     .status(503)
//!     .header("retry-after", "2")
//!     .body(())
//!     .unwrap();
//! let get = HttpClassifier::new(&http::Method::GET);
//! let outcome = Classifier::<_, std::io::Error>::classify(&get, &Ok(response));
//! assert_eq!(outcome.kind, OutcomeKind::Retryable);
//! assert_eq!(outcome.reason, "http_5xx");
//! assert_eq!(outcome.retry_after, Some(Duration::from_secs(2)));
//! ```

use core::fmt;
use core::time::Duration;
use std::time::SystemTime;

use ::http::header::RETRY_AFTER;
use ::http::{HeaderMap, Method, Response, StatusCode};
use recourse_core::{Classifier, Outcome};

/// The HTTP classifier's reason codes.
pub mod reason {
    /// A `2xx` response.
    pub const SUCCESS: &str = recourse_core::outcome::reason::SUCCESS;
    /// No response: the operation returned `Err` (connect, reset, TLS, ...).
    pub const HTTP_TRANSPORT_ERROR: &str = "http_transport_error";
    /// A `5xx` response.
    pub const HTTP_5XX: &str = "http_5xx";
    /// `408 Request Timeout`.
    pub const HTTP_408: &str = "http_408";
    /// `429 Too Many Requests`.
    pub const HTTP_429: &str = "http_429";
    /// A failure that would be retried, but the method is not idempotent and
    /// the policy did not opt in.
    pub const HTTP_NON_IDEMPOTENT: &str = "http_non_idempotent";
    /// Any other status: `1xx`, `3xx`, a `4xx` other than `408` and `429`.
    pub const HTTP_NON_RETRYABLE_STATUS: &str = "http_non_retryable_status";
}

/// The wall clock [`HttpClassifier::new`] uses for HTTP-date `Retry-After`
/// values.
pub type SystemClock = fn() -> SystemTime;

/// Classifies HTTP results by status, request method and `Retry-After`; see
/// the [module docs](self) for the rules.
///
/// Made per call from the request's method. `C` is the wall clock that an
/// HTTP-date `Retry-After` is measured against ([`SystemTime::now`] unless
/// [`HttpClassifier::with_clock`] replaced it); it is read only when a
/// response carries a date.
///
/// Implements [`Classifier`] for `http::Response<B>` (any body) and for a
/// bare [`StatusCode`], with any error type. For other response types (a
/// client's own), call [`HttpClassifier::classify_response`] and
/// [`HttpClassifier::transport_error`] from a closure.
#[derive(Copy, Clone)]
pub struct HttpClassifier<C = SystemClock> {
    idempotent: bool,
    retry_non_idempotent: bool,
    clock: C,
}

impl HttpClassifier {
    /// A classifier for a request with `method`, on the system clock, that
    /// does not retry non-idempotent methods.
    pub fn new(method: &Method) -> Self {
        Self {
            idempotent: is_idempotent(method),
            retry_non_idempotent: false,
            clock: SystemTime::now,
        }
    }
}

impl<C> HttpClassifier<C> {
    /// Whether a non-idempotent request (`POST`, `PATCH`, ...) is retried
    /// like an idempotent one. Default `false`: set it only when sending the
    /// request twice is known to be harmless.
    #[must_use]
    pub fn retry_non_idempotent(mut self, retry: bool) -> Self {
        self.retry_non_idempotent = retry;
        self
    }

    /// The same classifier with `clock` as its wall clock for HTTP-date
    /// `Retry-After` values (a fixed time in tests).
    #[must_use]
    pub fn with_clock<C2>(self, clock: C2) -> HttpClassifier<C2>
    where
        C2: Fn() -> SystemTime,
    {
        HttpClassifier {
            idempotent: self.idempotent,
            retry_non_idempotent: self.retry_non_idempotent,
            clock,
        }
    }

    /// Whether failures of this request may be retried: the method is
    /// idempotent, or the policy opted in.
    pub fn may_retry(&self) -> bool {
        self.idempotent || self.retry_non_idempotent
    }

    /// The outcome of a transport error (no response at all):
    /// `http_transport_error`, or `http_non_idempotent`.
    pub fn transport_error(&self) -> Outcome {
        self.retryable(reason::HTTP_TRANSPORT_ERROR)
    }

    /// The outcome of a response with `status`, without headers (so without
    /// a retry-after hint).
    pub fn classify_status(&self, status: StatusCode) -> Outcome {
        match status.as_u16() {
            200..=299 => Outcome::SUCCESS,
            408 => self.retryable(reason::HTTP_408),
            429 => self.retryable(reason::HTTP_429),
            500..=599 => self.retryable(reason::HTTP_5XX),
            _ => Outcome::non_retryable(reason::HTTP_NON_RETRYABLE_STATUS),
        }
    }

    /// `reason` as a retryable outcome when [`may_retry`](Self::may_retry),
    /// `http_non_idempotent` otherwise.
    fn retryable(&self, reason: &'static str) -> Outcome {
        if self.may_retry() {
            Outcome::retryable(reason)
        } else {
            Outcome::non_retryable(reason::HTTP_NON_IDEMPOTENT)
        }
    }
}

impl<C> HttpClassifier<C>
where
    C: Fn() -> SystemTime,
{
    /// The outcome of a response with `status` and `headers`: as
    /// [`classify_status`](Self::classify_status), and a retryable outcome
    /// carries the `Retry-After` delay, if the header is present and valid.
    pub fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        let outcome = self.classify_status(status);
        if outcome.kind != recourse_core::OutcomeKind::Retryable {
            return outcome;
        }
        match self.retry_after(headers) {
            Some(delay) => outcome.with_retry_after(delay),
            None => outcome,
        }
    }

    /// The delay a `Retry-After` header asks for, from now on this
    /// classifier's clock: delta-seconds (`120`) or an HTTP-date (`Wed, 21
    /// Oct 2015 07:28:00 GMT`; one in the past is a zero delay). `None`
    /// without the header or when its first value is not valid.
    pub fn retry_after(&self, headers: &HeaderMap) -> Option<Duration> {
        let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
        parse_retry_after(value, &self.clock)
    }
}

impl<C> fmt::Debug for HttpClassifier<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClassifier")
            .field("idempotent", &self.idempotent)
            .field("retry_non_idempotent", &self.retry_non_idempotent)
            .finish_non_exhaustive()
    }
}

impl<B, E, C> Classifier<Response<B>, E> for HttpClassifier<C>
where
    C: Fn() -> SystemTime,
{
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => self.classify_response(response.status(), response.headers()),
            Err(_) => self.transport_error(),
        }
    }
}

/// For operations that return only the status: no headers, so no
/// retry-after hint.
impl<E, C> Classifier<StatusCode, E> for HttpClassifier<C> {
    fn classify(&self, result: &Result<StatusCode, E>) -> Outcome {
        match result {
            Ok(status) => self.classify_status(*status),
            Err(_) => self.transport_error(),
        }
    }
}

/// Why an HTTP call ([`Executor::call_http`](crate::Executor::call_http))
/// failed, inside its [`Error`](crate::Error): the last response the
/// classifier did not accept (a `503` after retries ran out, a `404`, a
/// `503` whose `Retry-After` reached past the deadline), or the last
/// transport error.
///
/// So a call that ends on a response the classifier rejected is an `Err`,
/// carrying that response, whatever stopped it (retries exhausted, a budget
/// refusing the retry, the deadline): the caller sees what the observer
/// hears.
#[derive(Debug)]
pub enum HttpFailure<B, E> {
    /// A response the classifier did not accept.
    Response(Response<B>),
    /// No response: the operation returned `Err`.
    Transport(E),
}

impl<B, E> HttpFailure<B, E> {
    /// The response, when there was one.
    pub fn response(&self) -> Option<&Response<B>> {
        match self {
            Self::Response(r) => Some(r),
            Self::Transport(_) => None,
        }
    }

    /// The response, when there was one.
    pub fn into_response(self) -> Option<Response<B>> {
        match self {
            Self::Response(r) => Some(r),
            Self::Transport(_) => None,
        }
    }

    /// The response's status, when there was one.
    pub fn status(&self) -> Option<StatusCode> {
        self.response().map(Response::status)
    }

    /// The transport error, when there was no response.
    pub fn transport(&self) -> Option<&E> {
        match self {
            Self::Response(_) => None,
            Self::Transport(e) => Some(e),
        }
    }
}

impl<B, E: fmt::Display> fmt::Display for HttpFailure<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Response(r) => write!(f, "HTTP {}", r.status()),
            Self::Transport(e) => write!(f, "transport error: {e}"),
        }
    }
}

impl<B: fmt::Debug, E: core::error::Error + 'static> core::error::Error for HttpFailure<B, E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        self.transport().map(|e| e as _)
    }
}

/// An attempt's raw result as the call sees it: a `2xx` is the value, any
/// other response an [`HttpFailure::Response`], a transport error an
/// [`HttpFailure::Transport`].
pub(crate) fn into_attempt<B, E>(
    result: Result<Response<B>, E>,
) -> Result<Response<B>, HttpFailure<B, E>> {
    match result {
        Ok(r) if r.status().is_success() => Ok(r),
        Ok(r) => Err(HttpFailure::Response(r)),
        Err(e) => Err(HttpFailure::Transport(e)),
    }
}

pin_project_lite::pin_project! {
    /// An HTTP attempt's future whose result is split by [`into_attempt`].
    pub(crate) struct HttpAttempt<F> {
        #[pin]
        pub(crate) inner: F,
    }
}

impl<B, E, F> core::future::Future for HttpAttempt<F>
where
    F: core::future::Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, HttpFailure<B, E>>;

    fn poll(
        self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Self::Output> {
        self.project().inner.poll(cx).map(into_attempt)
    }
}

/// [`HttpClassifier`] for results already split by [`into_attempt`].
pub(crate) struct FailureClassifier<C>(pub(crate) HttpClassifier<C>);

impl<B, E, C> crate::classify::CallClassifier<Response<B>, HttpFailure<B, E>>
    for FailureClassifier<C>
where
    Self: Classifier<Response<B>, HttpFailure<B, E>>,
{
}

impl<B, E, C> Classifier<Response<B>, HttpFailure<B, E>> for FailureClassifier<C>
where
    C: Fn() -> SystemTime,
{
    fn classify(&self, result: &Result<Response<B>, HttpFailure<B, E>>) -> Outcome {
        match result {
            Ok(r) | Err(HttpFailure::Response(r)) => {
                self.0.classify_response(r.status(), r.headers())
            }
            Err(HttpFailure::Transport(_)) => self.0.transport_error(),
        }
    }
}

/// RFC 9110 §9.2.2's idempotent methods. Extension methods are not known to
/// be idempotent.
fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
    ]
    .contains(method)
}

/// `Retry-After = HTTP-date / delay-seconds` (RFC 9110 §10.2.3).
///
/// Delta-seconds too large for a `u64` saturate (the executor cuts any hint
/// to its maximum anyway); anything that is neither form is `None`.
fn parse_retry_after(value: &str, now: impl Fn() -> SystemTime) -> Option<Duration> {
    let value = value.trim_matches([' ', '\t']);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use recourse_core::OutcomeKind::{self, NonRetryable, Retryable, Success};

    /// `Wed, 21 Oct 2015 07:28:00 GMT`.
    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480)
    }

    fn response(status: u16, retry_after: Option<&str>) -> Response<()> {
        let mut b = Response::builder().status(status);
        if let Some(v) = retry_after {
            b = b.header(RETRY_AFTER, v);
        }
        b.body(()).unwrap()
    }

    fn classify(c: &HttpClassifier<impl Fn() -> SystemTime>, status: u16) -> Outcome {
        Classifier::<_, ()>::classify(c, &Ok(response(status, None)))
    }

    const IDEMPOTENT: [Method; 6] = [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
    ];

    fn non_idempotent() -> Vec<Method> {
        vec![
            Method::POST,
            Method::PATCH,
            Method::CONNECT,
            Method::from_bytes(b"PURGE").unwrap(),
        ]
    }

    /// (status, kind, reason) for a method that may be retried.
    const RETRYING: &[(u16, OutcomeKind, &str)] = &[
        (200, Success, "success"),
        (201, Success, "success"),
        (204, Success, "success"),
        (299, Success, "success"),
        (100, NonRetryable, "http_non_retryable_status"),
        (101, NonRetryable, "http_non_retryable_status"),
        (301, NonRetryable, "http_non_retryable_status"),
        (304, NonRetryable, "http_non_retryable_status"),
        (400, NonRetryable, "http_non_retryable_status"),
        (401, NonRetryable, "http_non_retryable_status"),
        (404, NonRetryable, "http_non_retryable_status"),
        (409, NonRetryable, "http_non_retryable_status"),
        (499, NonRetryable, "http_non_retryable_status"),
        (408, Retryable, "http_408"),
        (429, Retryable, "http_429"),
        (500, Retryable, "http_5xx"),
        (502, Retryable, "http_5xx"),
        (503, Retryable, "http_5xx"),
        (504, Retryable, "http_5xx"),
        (599, Retryable, "http_5xx"),
    ];

    #[test]
    fn idempotent_methods_retry_5xx_408_429() {
        for method in &IDEMPOTENT {
            let c = HttpClassifier::new(method);
            assert!(c.may_retry(), "{method}");
            for &(status, kind, reason) in RETRYING {
                let o = classify(&c, status);
                assert_eq!((o.kind, o.reason), (kind, reason), "{method} {status}");
                assert_eq!(o.retry_after, None);
            }
        }
    }

    #[test]
    fn non_idempotent_methods_do_not_retry() {
        for method in &non_idempotent() {
            let c = HttpClassifier::new(method);
            assert!(!c.may_retry(), "{method}");
            for &(status, kind, reason) in RETRYING {
                let o = classify(&c, status);
                let want = match kind {
                    Retryable => (NonRetryable, "http_non_idempotent"),
                    _ => (kind, reason),
                };
                assert_eq!((o.kind, o.reason), want, "{method} {status}");
            }
        }
    }

    #[test]
    fn non_idempotent_methods_retry_when_opted_in() {
        for method in &non_idempotent() {
            let c = HttpClassifier::new(method).retry_non_idempotent(true);
            assert!(c.may_retry(), "{method}");
            for &(status, kind, reason) in RETRYING {
                let o = classify(&c, status);
                assert_eq!((o.kind, o.reason), (kind, reason), "{method} {status}");
            }
        }
        // Opting in changes nothing for idempotent methods; opting out again
        // restores the default.
        let c = HttpClassifier::new(&Method::GET).retry_non_idempotent(true);
        assert_eq!(classify(&c, 503).kind, Retryable);
        let c = HttpClassifier::new(&Method::POST)
            .retry_non_idempotent(true)
            .retry_non_idempotent(false);
        assert_eq!(classify(&c, 503).reason, "http_non_idempotent");
    }

    #[test]
    fn transport_errors() {
        let cases = [
            (Method::GET, false, Retryable, "http_transport_error"),
            (Method::PUT, false, Retryable, "http_transport_error"),
            (Method::DELETE, false, Retryable, "http_transport_error"),
            (Method::POST, false, NonRetryable, "http_non_idempotent"),
            (Method::PATCH, false, NonRetryable, "http_non_idempotent"),
            (Method::POST, true, Retryable, "http_transport_error"),
        ];
        for (method, opt_in, kind, reason) in cases {
            let c = HttpClassifier::new(&method).retry_non_idempotent(opt_in);
            let err: Result<Response<Vec<u8>>, &str> = Err("connection reset");
            let o = c.classify(&err);
            assert_eq!((o.kind, o.reason, o.retry_after), (kind, reason, None));
            let err: Result<StatusCode, &str> = Err("connection reset");
            assert_eq!(c.classify(&err), o, "{method}");
        }
    }

    #[test]
    fn status_only_results() {
        let c = HttpClassifier::new(&Method::GET);
        let cases = [
            (StatusCode::OK, Success, "success"),
            (StatusCode::SERVICE_UNAVAILABLE, Retryable, "http_5xx"),
            (StatusCode::TOO_MANY_REQUESTS, Retryable, "http_429"),
            (
                StatusCode::NOT_FOUND,
                NonRetryable,
                "http_non_retryable_status",
            ),
        ];
        for (status, kind, reason) in cases {
            let o = Classifier::<_, ()>::classify(&c, &Ok(status));
            assert_eq!((o.kind, o.reason, o.retry_after), (kind, reason, None));
        }
    }

    #[test]
    fn retry_after_forms() {
        let secs = |s: u64| Some(Duration::from_secs(s));
        let cases: &[(&str, Option<Duration>)] = &[
            // delta-seconds
            ("0", secs(0)),
            ("1", secs(1)),
            ("120", secs(120)),
            (" 7 ", secs(7)),
            ("007", secs(7)),
            ("99999999999999999999999", secs(u64::MAX)),
            // HTTP-date, all three formats, against t0
            ("Wed, 21 Oct 2015 07:28:30 GMT", secs(30)),
            ("Wednesday, 21-Oct-15 07:29:00 GMT", secs(60)),
            ("Wed Oct 21 08:28:00 2015", secs(3600)),
            ("Wed, 21 Oct 2015 07:28:00 GMT", secs(0)),
            // in the past: no wait
            ("Wed, 21 Oct 2015 07:27:00 GMT", secs(0)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", secs(0)),
            // garbage: no hint
            ("", None),
            ("soon", None),
            ("-1", None),
            ("+5", None),
            ("1.5", None),
            ("5s", None),
            ("0x10", None),
            ("Wed, 21 Oct 2015 25:61:00 GMT", None),
            ("21 Oct 2015", None),
        ];
        let c = HttpClassifier::new(&Method::GET).with_clock(t0);
        for &(value, want) in cases {
            for status in [503, 429, 408] {
                let o = Classifier::<_, ()>::classify(&c, &Ok(response(status, Some(value))));
                assert_eq!(o.kind, Retryable, "{value:?}");
                assert_eq!(o.retry_after, want, "{status} {value:?}");
            }
        }
    }

    #[test]
    fn retry_after_only_on_retryable_outcomes() {
        let c = HttpClassifier::new(&Method::GET).with_clock(t0);
        for status in [200, 301, 404] {
            let o = Classifier::<_, ()>::classify(&c, &Ok(response(status, Some("5"))));
            assert_eq!(o.retry_after, None, "{status}");
        }
        let post = HttpClassifier::new(&Method::POST);
        let o = Classifier::<_, ()>::classify(&post, &Ok(response(503, Some("5"))));
        assert_eq!((o.reason, o.retry_after), ("http_non_idempotent", None));
        let post = post.retry_non_idempotent(true);
        let o = Classifier::<_, ()>::classify(&post, &Ok(response(503, Some("5"))));
        assert_eq!(
            (o.reason, o.retry_after),
            ("http_5xx", Some(Duration::from_secs(5)))
        );
    }

    #[test]
    fn retry_after_non_ascii_and_repeated_headers() {
        let c = HttpClassifier::new(&Method::GET).with_clock(t0);
        let mut r = response(503, None);
        r.headers_mut().insert(
            RETRY_AFTER,
            ::http::HeaderValue::from_bytes("5\u{e9}".as_bytes()).unwrap(),
        );
        assert_eq!(Classifier::<_, ()>::classify(&c, &Ok(r)).retry_after, None);
        // The first value counts.
        let mut r = response(503, Some("3"));
        r.headers_mut()
            .append(RETRY_AFTER, ::http::HeaderValue::from_static("9"));
        assert_eq!(
            Classifier::<_, ()>::classify(&c, &Ok(r)).retry_after,
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn the_clock_is_read_only_for_dates() {
        let c =
            HttpClassifier::new(&Method::GET).with_clock(|| -> SystemTime { panic!("clock read") });
        let o = Classifier::<_, ()>::classify(&c, &Ok(response(503, Some("2"))));
        assert_eq!(o.retry_after, Some(Duration::from_secs(2)));
        let o = Classifier::<_, ()>::classify(&c, &Ok(response(503, Some("later"))));
        assert_eq!(o.retry_after, None);
    }

    #[test]
    fn default_clock_is_the_system_clock() {
        let c = HttpClassifier::new(&Method::GET);
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        let hint = Classifier::<_, ()>::classify(&c, &Ok(response(503, Some(&soon))))
            .retry_after
            .unwrap();
        assert!(hint > Duration::from_secs(3500) && hint <= Duration::from_secs(3600));
        assert_eq!(
            format!("{c:?}"),
            "HttpClassifier { idempotent: true, retry_non_idempotent: false, .. }"
        );
    }
}
