//! `HttpClassifier` against a real HTTP/1.1 server on 127.0.0.1.
//!
//! The server and client are raw tokio sockets (one request per connection,
//! `Connection: close`), so the test needs no HTTP stack beyond the `http`
//! types. It runs on the real clock: the server's `Retry-After: 1` is a real
//! second, and the test checks that recourse waited it, from both the
//! timeline and the server's own clock.

use core::net::SocketAddr;
use core::time::Duration;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant as StdInstant;

use http::{Method, Response, StatusCode};
use recourse::{AttemptInfo, Executor, HttpClassifier, Policy, StaticProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const UNAVAILABLE: &str =
    "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy";
const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    request_line: String,
    arrived: StdInstant,
    /// Just before the response was written.
    answered: StdInstant,
}

/// Serves `script[i]` to the `i`-th connection (the last entry from then
/// on) and records every request. Stops when the test's runtime ends.
async fn serve(script: &'static [&'static str]) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        // Bounded: every test makes at most a handful of requests.
        for n in 0..16 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let Ok(head) = read_head(&mut socket).await else {
                continue;
            };
            let arrived = StdInstant::now();
            // Logged before the answer is written, so that the log is
            // complete by the time the client has its response.
            lock(&log).push(Seen {
                request_line: head.lines().next().unwrap_or_default().to_owned(),
                arrived,
                answered: StdInstant::now(),
            });
            let response = script[n.min(script.len() - 1)];
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (addr, seen)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads up to the blank line that ends a request's head (at most 8 KiB).
async fn read_head(socket: &mut TcpStream) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// One HTTP/1.1 request on a fresh connection; the response is read to EOF
/// and parsed into an `http::Response`. Any I/O or parse failure is an
/// `Err`, a transport error to the classifier.
async fn request(addr: SocketAddr, method: &Method) -> io::Result<Response<Vec<u8>>> {
    let mut socket = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await?;
    parse_response(&raw).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad response"))
}

fn parse_response(raw: &[u8]) -> Option<Response<Vec<u8>>> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = core::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    let mut builder = Response::builder().status(StatusCode::from_bytes(status.as_bytes()).ok()?);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        builder = builder.header(name.trim(), value.trim());
    }
    builder.body(raw[split + 4..].to_vec()).ok()
}

/// Up to 4 attempts, with timeouts so that a broken test fails instead of
/// hanging.
fn executor() -> Executor {
    let mut policy = Policy::DEFAULT;
    policy.retry.max_attempts = 4;
    policy.retry.timeout_per_attempt = Some(Duration::from_secs(5));
    policy.retry.overall_timeout = Some(Duration::from_secs(20));
    let provider = StaticProvider::builder()
        .policy("svc.Http", policy)
        .map(|b| b.build())
        .unwrap_or_else(|e| panic!("{e}"));
    Executor::builder().provider(provider).build()
}

#[tokio::test]
async fn get_waits_retry_after_then_succeeds() {
    let (addr, seen) = serve(&[UNAVAILABLE, UNAVAILABLE, OK]).await;
    let exec = executor();
    let method = Method::GET;
    let (result, timeline) = exec
        .call_classified_with_timeline(
            "svc.Http",
            HttpClassifier::new(&method),
            |_: AttemptInfo| request(addr, &method),
        )
        .await;

    let response = result.expect("the third attempt succeeds");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body().as_slice(), b"hello");

    let reasons: Vec<_> = timeline.attempts.iter().map(|a| a.outcome.reason).collect();
    assert_eq!(reasons, ["http_5xx", "http_5xx", "success"], "{timeline}");
    let a = &timeline.attempts;
    for i in 1..3 {
        // The hint replaced the 10 ms backoff...
        assert_eq!(a[i].backoff, Duration::from_secs(1), "{timeline}");
        assert_eq!(a[i - 1].outcome.retry_after, Some(Duration::from_secs(1)));
        // ...and the next attempt really started a second after.
        assert!(
            a[i].start - a[i - 1].end >= Duration::from_secs(1),
            "{timeline}"
        );
    }

    // The server's view: three GETs, each retry a second after the answer.
    let seen = lock(&seen).clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.request_line == "GET / HTTP/1.1"));
    for w in seen.windows(2) {
        assert!(
            w[1].arrived - w[0].answered >= Duration::from_secs(1),
            "{seen:?}"
        );
    }
}

#[tokio::test]
async fn post_is_not_retried() {
    let (addr, seen) = serve(&[UNAVAILABLE]).await;
    let exec = executor();
    let method = Method::POST;
    let (result, timeline) = exec
        .call_classified_with_timeline(
            "svc.Http",
            HttpClassifier::new(&method),
            |_: AttemptInfo| request(addr, &method),
        )
        .await;

    // A non-retryable value ends the call as an `Err` carrying the 503
    // itself (the result contract: the observer hears a failure too).
    let response = match result {
        Err(recourse::Error::Operation {
            error: recourse::Failure::Rejected(response),
            cause: recourse::Cause::NonRetryable,
        }) => response,
        other => panic!("expected the rejected 503, got {other:?}"),
    };
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(timeline.attempts.len(), 1, "{timeline}");
    assert_eq!(timeline.attempts[0].outcome.reason, "http_non_idempotent");
    assert_eq!(timeline.attempts[0].outcome.retry_after, None);
    assert!(matches!(
        timeline.verdict,
        Some(recourse::observer::Verdict::Failure {
            cause: recourse::Cause::NonRetryable,
            ..
        })
    ));
    assert_eq!(lock(&seen).len(), 1);
}

#[tokio::test]
async fn transport_errors_are_retried_for_get() {
    // A port with nothing listening: bind, note the port, close.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("local addr")
    };
    let exec = executor();
    let method = Method::GET;
    let (result, timeline) = exec
        .call_classified_with_timeline(
            "svc.Http",
            HttpClassifier::new(&method),
            |_: AttemptInfo| request(addr, &method),
        )
        .await;
    assert!(result.is_err());
    let reasons: Vec<_> = timeline.attempts.iter().map(|a| a.outcome.reason).collect();
    assert_eq!(reasons, ["http_transport_error"; 4], "{timeline}");
}

/// A 503 without `Retry-After`, so that the retry follows the policy's
/// 10 ms backoff.
const BUSY: &str =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn post_is_retried_when_the_policy_opts_in() {
    let (addr, seen) = serve(&[BUSY, OK]).await;
    let mut policy = Policy::DEFAULT;
    policy.retry.retry_non_idempotent = true;
    let provider = StaticProvider::builder()
        .policy("svc.Idempotent", policy)
        .map(|b| b.build())
        .unwrap_or_else(|e| panic!("{e}"));
    let exec = Executor::builder().provider(provider).build();
    let method = Method::POST;
    let (result, timeline) = exec
        .call_http_with_timeline("svc.Idempotent", &method, |_: AttemptInfo| {
            request(addr, &method)
        })
        .await;
    assert_eq!(result.expect("200").status(), StatusCode::OK);
    let reasons: Vec<_> = timeline.attempts.iter().map(|a| a.outcome.reason).collect();
    assert_eq!(reasons, ["http_5xx", "success"], "{timeline}");
    assert_eq!(lock(&seen).len(), 2);

    // The same call under a policy that does not opt in stops at the 503.
    let (addr, seen) = serve(&[BUSY, OK]).await;
    let (result, timeline) = executor()
        .call_http_with_timeline("svc.Http", &method, |_: AttemptInfo| request(addr, &method))
        .await;
    // The 503 the classifier did not accept is the call's error, carried.
    let failure = result.expect_err("503").into_last_error().expect("last");
    assert_eq!(failure.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(timeline.attempts[0].outcome.reason, "http_non_idempotent");
    assert_eq!(lock(&seen).len(), 1);
}

// ---------------------------------------------------------------------------
// The result contract of `call_http`, against a real server
// ---------------------------------------------------------------------------

/// A 503 asking to come back in two minutes.
const BUSY_LONG: &str = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Remembers every call end: `None` for success, the reason otherwise.
#[derive(Clone, Default)]
struct Ends(Arc<Mutex<Vec<Option<&'static str>>>>);

impl recourse::Observer for Ends {
    fn on_success(&self, _: recourse::PolicyKey<'_>, _: &recourse::observer::CallSummary) {
        lock(&self.0).push(None);
    }
    fn on_failure(&self, _: recourse::PolicyKey<'_>, s: &recourse::observer::CallSummary) {
        lock(&self.0).push(s.reason());
    }
}

/// Allows first attempts, refuses every retry with `no_retries`.
struct FirstOnly;

impl recourse::core_machine::Budget for FirstOnly {
    fn decide(
        &self,
        r: &recourse::core_machine::budget::BudgetRequest<'_>,
    ) -> recourse::core_machine::budget::Decision {
        if r.attempt.retry_index == 0 {
            recourse::core_machine::budget::Decision::ALLOW
        } else {
            recourse::core_machine::budget::Decision {
                allowed: false,
                reason: "no_retries",
                reservation: None,
            }
        }
    }
}

/// One row of the contract table: what the server answers, the policy,
/// and what the caller gets (`Ok(status)`, or the error's reason and the
/// status of the response it carries).
struct Row {
    name: &'static str,
    script: &'static [&'static str],
    policy: fn() -> Policy,
    /// Calls made before the one checked (to open the breaker).
    warmup: usize,
    want: Result<u16, (&'static str, Option<u16>)>,
    /// Requests the server sees during the checked call.
    requests: usize,
    /// What the observer hears: the verdict's cause (for a budget refusal
    /// `budget_denied`, where the error names the budget's own code).
    heard: Option<&'static str>,
}

fn three() -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 3;
    p.retry.timeout_per_attempt = Some(Duration::from_secs(5));
    p.retry.overall_timeout = Some(Duration::from_secs(20));
    p
}

fn three_with_budget() -> Policy {
    let mut p = three();
    p.retry.budget.name = recourse::core_machine::policy::name("retry.budget.name", "first_only")
        .unwrap_or_else(|e| panic!("{e}"));
    p
}

fn breaker_after_one() -> Policy {
    let mut p = three();
    p.retry.max_attempts = 1;
    p.circuit.enabled = true;
    p.circuit.threshold = 1;
    p.circuit.cooldown = Duration::from_secs(60);
    p
}

fn short_deadline() -> Policy {
    let mut p = three();
    p.retry.overall_timeout = Some(Duration::from_secs(2));
    p
}

/// `call_http`'s result contract: only a 2xx is `Ok`; every other end is an
/// `Err` whose reason the observer hears too, carrying the last response
/// when there was one (a refusal after a failed attempt included).
#[tokio::test]
async fn call_http_result_contract_table() {
    let rows = [
        Row {
            name: "success",
            script: &[OK],
            policy: three,
            warmup: 0,
            want: Ok(200),
            requests: 1,
            heard: None,
        },
        Row {
            name: "retries exhausted on 503",
            script: &[BUSY],
            policy: three,
            warmup: 0,
            want: Err(("retries_exhausted", Some(503))),
            requests: 3,
            heard: Some("retries_exhausted"),
        },
        Row {
            name: "budget refusal after a 503",
            script: &[BUSY],
            policy: three_with_budget,
            warmup: 0,
            want: Err(("no_retries", Some(503))),
            requests: 1,
            heard: Some("budget_denied"),
        },
        Row {
            name: "breaker refusal",
            script: &[BUSY],
            policy: breaker_after_one,
            warmup: 1,
            want: Err(("circuit_open", None)),
            requests: 0,
            heard: Some("circuit_open"),
        },
        Row {
            name: "Retry-After beyond the deadline",
            script: &[BUSY_LONG],
            policy: short_deadline,
            warmup: 0,
            want: Err(("retry_after_beyond_deadline", Some(503))),
            requests: 1,
            heard: Some("retry_after_beyond_deadline"),
        },
    ];
    for row in rows {
        let (addr, seen) = serve(row.script).await;
        let ends = Ends::default();
        let provider = StaticProvider::builder()
            .policy("svc.Contract", (row.policy)())
            .map(|b| b.build())
            .unwrap_or_else(|e| panic!("{e}"));
        let exec = Executor::builder()
            .provider(provider)
            .budgets(recourse::BudgetRegistry::new().with("first_only", FirstOnly))
            .observer(ends.clone())
            .build();
        let method = Method::GET;
        for _ in 0..row.warmup {
            let _ = exec
                .call_http("svc.Contract", &method, |_| request(addr, &method))
                .await;
        }
        let before = lock(&seen).len();
        let (result, timeline) = exec
            .call_http_with_timeline("svc.Contract", &method, |_| request(addr, &method))
            .await;
        let got = match result {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) => Err((
                e.reason(),
                e.last_error()
                    .and_then(recourse::http::HttpFailure::status)
                    .map(|s| s.as_u16()),
            )),
        };
        assert_eq!(got, row.want, "{}", row.name);
        assert_eq!(lock(&seen).len() - before, row.requests, "{}", row.name);
        // The observer and the timeline hear the caller's verdict.
        let heard = *lock(&ends.0).last().expect("an end");
        assert_eq!(heard, row.heard, "{}", row.name);
        assert_eq!(
            timeline.reason,
            row.want.err().map(|(reason, _)| reason),
            "{}",
            row.name
        );
        assert_eq!(
            timeline
                .verdict
                .map(|v| matches!(v, recourse::observer::Verdict::Success(_))),
            Some(row.want.is_ok()),
            "{}",
            row.name
        );
    }
}
