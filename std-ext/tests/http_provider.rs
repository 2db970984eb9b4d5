//! The HTTP provider against a real hyper server on 127.0.0.1 that serves,
//! changes, answers 304 and 404, fails with 500, hangs and goes away.
#![allow(clippy::unwrap_used)]

use core::convert::Infallible;
use core::time::Duration;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use recourse::provider::PolicySource;
use recourse::providers::HttpProvider;
use recourse::{AttemptInfo, Executor, PolicyKey, PolicyProvider};
use tokio::net::TcpListener;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Serve,
    Fail,
    Hang,
}

/// What the server answers, and what it saw.
struct State {
    mode: Mode,
    /// The policy served for `svc.Get`, and its version (the ETag).
    attempts: u32,
    version: u32,
    requests: u32,
    conditional: u32,
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (mode, attempts, version) = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        if req.headers().contains_key("if-none-match") {
            s.conditional += 1;
        }
        (s.mode, s.attempts, s.version)
    };
    let respond = |status: u16, body: String| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    match mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(respond(200, String::new()))
        }
        Mode::Fail => Ok(respond(500, "boom".into())),
        Mode::Serve => {
            let etag = format!("\"v{version}\"");
            Ok(match req.uri().path() {
                "/policies/svc.Get" => {
                    if req
                        .headers()
                        .get("if-none-match")
                        .and_then(|v| v.to_str().ok())
                        == Some(etag.as_str())
                    {
                        Response::builder()
                            .status(304)
                            .header("etag", etag)
                            .body(Full::new(Bytes::new()))
                            .unwrap()
                    } else {
                        Response::builder()
                            .status(200)
                            .header("etag", etag)
                            .body(Full::new(Bytes::from(format!(
                                r#"{{"retry":{{"max_attempts":{attempts},"initial_backoff":"1ms"}}}}"#
                            ))))
                            .unwrap()
                    }
                }
                "/policies/svc.Bad" => respond(200, r#"{"retry":{"max_attempts":"many"}}"#.into()),
                "/policies/svc.Typo" => respond(
                    200,
                    r#"{"retry":{"max_attempts":3,"budget":{"name":"retires"}}}"#.into(),
                ),
                _ => respond(404, String::new()),
            })
        }
    }
}

/// Serves until the returned handle is aborted (then the port refuses).
async fn serve(state: Arc<Mutex<State>>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/policies/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let state = Arc::clone(&state);
            conns.spawn(async move {
                let svc = service_fn(move |req| handle(Arc::clone(&state), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (base, task)
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn lookup(p: &HttpProvider, key: &str) -> Option<(u32, PolicySource)> {
    p.policy(PolicyKey::parse(key))
        .ok()
        .map(|f| (f.policy.policy.retry.max_attempts, f.source))
}

#[tokio::test]
async fn serves_changes_304_500_hang_gone_with_last_known_good() {
    let state = Arc::new(Mutex::new(State {
        mode: Mode::Serve,
        attempts: 4,
        version: 1,
        requests: 0,
        conditional: 0,
    }));
    let (base, server) = serve(Arc::clone(&state)).await;
    let p = Arc::new(
        HttpProvider::builder(&base)
            .ttl(Duration::from_millis(100))
            .negative_ttl(Duration::from_millis(100))
            .timeout(Duration::from_millis(200))
            .build(),
    );

    // Concurrent misses: every one answers at once (no waiting), one fetch.
    for _ in 0..50 {
        let e = p.policy(PolicyKey::parse("svc.Get")).unwrap_err();
        assert_eq!(e.code(), "provider_unavailable");
    }
    until("the first fetch", || lookup(&p, "svc.Get").is_some()).await;
    assert_eq!(lookup(&p, "svc.Get"), Some((4, PolicySource::Remote)));
    assert_eq!(p.stats().updated, 1);
    assert_eq!(
        state.lock().unwrap().requests,
        1,
        "one fetch for 50 concurrent misses"
    );

    // Unchanged: refreshes are conditional and answered 304.
    until("a 304", || p.stats().not_modified >= 2).await;
    assert!(state.lock().unwrap().conditional >= 2);
    assert_eq!(lookup(&p, "svc.Get"), Some((4, PolicySource::Remote)));

    // Changed: the next refresh brings it.
    {
        let mut s = state.lock().unwrap();
        s.attempts = 6;
        s.version = 2;
    }
    until("the change", || {
        lookup(&p, "svc.Get") == Some((6, PolicySource::Remote))
    })
    .await;

    // 404: negative-cached, NotFound.
    assert!(p.policy(PolicyKey::parse("svc.Unknown")).is_err());
    until("the 404", || p.stats().not_found >= 1).await;
    assert_eq!(
        p.policy(PolicyKey::parse("svc.Unknown"))
            .unwrap_err()
            .code(),
        "not_found"
    );

    // An invalid body is a fetch error; with nothing good before, the key
    // stays unavailable and the error says why.
    assert!(p.policy(PolicyKey::parse("svc.Bad")).is_err());
    until("the bad body", || {
        p.last_error().is_some_and(|e| e.contains("svc.Bad"))
    })
    .await;
    let e = p.policy(PolicyKey::parse("svc.Bad")).unwrap_err();
    assert_eq!(e.code(), "provider_unavailable");
    assert!(e.to_string().contains("retry.max_attempts"), "{e}");

    let exec = Executor::builder().provider(Arc::clone(&p)).build();
    let mut failed = 0;
    for mode in [Mode::Fail, Mode::Hang] {
        state.lock().unwrap().mode = mode;
        // The last-known-good policy, marked lkg, once a fetch of the key
        // failed.
        until("a failed fetch", || {
            lookup(&p, "svc.Get") == Some((6, PolicySource::Lkg))
        })
        .await;
        let why = p.key_error("svc.Get").unwrap();
        let expected = if mode == Mode::Fail {
            "HTTP 500"
        } else {
            "no answer within"
        };
        assert!(why.contains(expected), "{mode:?}: {why}");
        for _ in 0..1000 {
            let (r, t) = exec
                .call_with_timeline("svc.Get", |_: AttemptInfo| async { Ok::<_, &str>(()) })
                .await;
            failed += usize::from(r.is_err());
            assert_eq!(t.attribute("policy_source"), Some("lkg"));
            // The error is in the timeline (the key's own, though another
            // key's fetch may have failed since).
            let why = t.attribute("policy_error").unwrap_or_default();
            assert!(
                why.starts_with("provider_unavailable: remote: GET ") && why.contains("svc.Get"),
                "{why}"
            );
        }
        state.lock().unwrap().mode = Mode::Serve;
        until("recovery", || {
            lookup(&p, "svc.Get") == Some((6, PolicySource::Remote))
        })
        .await;
    }

    // The server goes away: last-known-good, no call fails.
    server.abort();
    let _ = server.await;
    until("a refused fetch", || {
        lookup(&p, "svc.Get") == Some((6, PolicySource::Lkg))
    })
    .await;
    assert!(p.key_error("svc.Get").is_some());
    for _ in 0..1000 {
        let (r, t) = exec
            .call_with_timeline("svc.Get", |_: AttemptInfo| async { Ok::<_, &str>(()) })
            .await;
        failed += usize::from(r.is_err());
        assert_eq!(t.attribute("policy_source"), Some("lkg"));
    }
    assert_eq!(failed, 0);
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let state = Arc::new(Mutex::new(State {
        mode: Mode::Serve,
        attempts: 4,
        version: 1,
        requests: 0,
        conditional: 0,
    }));
    let (base, _server) = serve(Arc::clone(&state)).await;
    let p = HttpProvider::builder(&base).max_keys(8).build();
    for i in 0..100 {
        let _ = p.policy(PolicyKey::parse(&format!("svc.K{i}")));
    }
    until("eviction", || p.stats().keys <= 8).await;
    assert!(p.stats().keys <= 8, "{:?}", p.stats());
}

#[tokio::test]
async fn a_policy_naming_an_unknown_budget_is_a_failed_fetch_naming_the_key_and_field() {
    let state = Arc::new(Mutex::new(State {
        mode: Mode::Serve,
        attempts: 4,
        version: 1,
        requests: 0,
        conditional: 0,
    }));
    let (base, _server) = serve(Arc::clone(&state)).await;
    let known = recourse::providers::KnownNames {
        budgets: Some(vec!["retries".to_owned()]),
        ..Default::default()
    };
    let p = HttpProvider::builder(&base).known_names(known).build();
    // A good policy is served as before.
    let _ = p.policy(PolicyKey::parse("svc.Get"));
    until("the first fetch", || lookup(&p, "svc.Get").is_some()).await;
    // A typo is a fetch error naming the key and the field: the key stays
    // unavailable (no good policy before it).
    let _ = p.policy(PolicyKey::parse("svc.Typo"));
    until("the typo", || {
        p.last_error().is_some_and(|e| e.contains("svc.Typo"))
    })
    .await;
    let e = p.policy(PolicyKey::parse("svc.Typo")).unwrap_err();
    assert_eq!(e.code(), "provider_unavailable");
    let text = e.to_string();
    assert!(text.contains("retry.budget.name"), "{text}");
    assert!(text.contains("`retires`"), "{text}");
}
