//! A real HTTP/1.1 server (axum) on 127.0.0.1 with failing, stalling and
//! pushing-back routes, shared by the integration tests. Each test starts
//! its own server, so the hit counts are the test's alone.
//!
//! - `/flaky/{n}`: `503` for the first `n` hits, then `200 ok`.
//! - `/slow/{ms}`: the first hit waits `ms` milliseconds, later hits answer
//!   at once; `200 ok`.
//! - `/retry-after/{value}`: the first hit is a `503` with `Retry-After:
//!   {value}` (`{value}` as given, URL-decoded), later hits `200 ok`.
//! - `/status/{code}`: always `code`.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::any;
use axum::Router;

#[derive(Clone, Default)]
struct Hits(Arc<Mutex<HashMap<String, u32>>>);

impl Hits {
    /// Counts a hit on `route` and returns the count, this one included.
    fn hit(&self, route: &str) -> u32 {
        let mut m = self.0.lock().unwrap();
        let n = m.entry(route.to_owned()).or_default();
        *n += 1;
        *n
    }
}

/// A running server; it stops when the test's runtime ends.
pub struct Server {
    pub addr: SocketAddr,
    hits: Hits,
    methods: Arc<Mutex<Vec<(String, Method, HeaderMap)>>>,
}

impl Server {
    pub async fn start() -> Self {
        let hits = Hits::default();
        let methods = Arc::new(Mutex::new(Vec::new()));
        let log = methods.clone();
        let app = Router::new()
            .route(
                "/flaky/{n}",
                any(|State(h): State<Hits>, Path(n): Path<u32>| async move {
                    if h.hit("flaky") <= n {
                        (StatusCode::SERVICE_UNAVAILABLE, "down")
                    } else {
                        (StatusCode::OK, "ok")
                    }
                }),
            )
            .route(
                "/slow/{ms}",
                any(|State(h): State<Hits>, Path(ms): Path<u64>| async move {
                    if h.hit("slow") == 1 {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    (StatusCode::OK, "ok")
                }),
            )
            .route(
                "/retry-after/{value}",
                any(
                    |State(h): State<Hits>, Path(value): Path<String>| async move {
                        if h.hit("retry-after") == 1 {
                            (
                                StatusCode::SERVICE_UNAVAILABLE,
                                [(axum::http::header::RETRY_AFTER, value)],
                                "later",
                            )
                        } else {
                            (
                                StatusCode::OK,
                                [(axum::http::header::RETRY_AFTER, String::from("0"))],
                                "ok",
                            )
                        }
                    },
                ),
            )
            .route(
                "/status/{code}",
                any(|State(h): State<Hits>, Path(code): Path<u16>| async move {
                    h.hit("status");
                    StatusCode::from_u16(code).unwrap()
                }),
            )
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let log = log.clone();
                    async move {
                        log.lock().unwrap().push((
                            req.uri().path().to_owned(),
                            req.method().clone(),
                            req.headers().clone(),
                        ));
                        next.run(req).await
                    }
                },
            ))
            .with_state(hits.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            hits,
            methods,
        }
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests the server has seen on `route` (`flaky`, `slow`, ...).
    pub fn hits(&self, route: &str) -> u32 {
        self.hits.0.lock().unwrap().get(route).copied().unwrap_or(0)
    }

    /// Every request seen: path, method, headers.
    pub fn requests(&self) -> Vec<(String, Method, HeaderMap)> {
        self.methods.lock().unwrap().clone()
    }
}

/// A port on 127.0.0.1 with nothing listening (bound, then closed).
pub async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}
