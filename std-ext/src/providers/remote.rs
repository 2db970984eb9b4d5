//! The remote provider: one policy per key over HTTP, cached.
//!
//! `GET <base><key>` (for example `http://control-plane/policies/` +
//! `user-service.GetUser`) answers one policy, JSON or TOML; 404 means the
//! control plane has none for the key.
//!
//! Why a cache in front of every key, refreshed in the background: the
//! lookup is on the call's path and must never wait on the network. The
//! first lookup of a key starts one fetch (concurrent misses share it) and
//! answers `provider_unavailable` at once, so a lower
//! [`Layered`](crate::providers::Layered) layer or the missing-policy mode
//! decides that call. From then on one background task per key refreshes it
//! before its TTL runs out (default 1 min, minus up to 20 % jitter so a
//! fleet's refreshes spread out), with `If-None-Match` so an unchanged policy
//! costs a 304; lookups keep answering from memory meanwhile
//! (stale-while-revalidate). A 404 is cached for the negative TTL (default
//! 10 s). A failed fetch — a 5xx, a hang past the timeout, a refused
//! connection, an invalid body — keeps the last-known-good policy (source
//! `lkg`) and retries with backoff. The cache is bounded (default 10,000
//! keys, least-recently/frequently used evicted, and keys not looked up for
//! 10 minutes); an evicted key's task ends.

// A `DocumentError` is big, and produced only when a body is rejected.
#![allow(clippy::result_large_err)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use recourse_core::policy::Normalized;
use recourse_core::PolicyKey;

use crate::provider::{PolicyLookup, PolicyProvider, PolicySource, ProviderError};
use crate::providers::document::{normalize_policy, parse_policy, KnownNames};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// What is known about one key.
#[derive(Debug, Default)]
struct Known {
    /// The last good policy; `None` before the first fetch, or after a 404.
    policy: Option<Arc<Normalized>>,
    /// Whether a fetch has answered (200 or 404).
    answered: bool,
    /// The validator of `policy`.
    etag: Option<String>,
    /// Why the latest fetch failed; `None` when it succeeded.
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Entry {
    known: ArcSwap<Known>,
}

/// Counters of an [`HttpProvider`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct HttpStats {
    /// Requests sent.
    pub fetches: u64,
    /// 200 answers applied.
    pub updated: u64,
    /// 304 answers (the cached policy was still current).
    pub not_modified: u64,
    /// 404 answers (negative-cached).
    pub not_found: u64,
    /// Failed fetches (5xx, timeout, connection, invalid body); each kept
    /// the last-known-good policy.
    pub errors: u64,
    /// Keys in the cache.
    pub keys: u64,
}

#[derive(Default)]
struct Counters {
    fetches: AtomicU64,
    updated: AtomicU64,
    not_modified: AtomicU64,
    not_found: AtomicU64,
    errors: AtomicU64,
}

struct Inner {
    base: String,
    client: HttpClient,
    cache: moka::sync::Cache<String, Arc<Entry>>,
    runtime: tokio::runtime::Handle,
    ttl: Duration,
    negative_ttl: Duration,
    timeout: Duration,
    known: KnownNames,
    counters: Counters,
    last_error: Mutex<Option<String>>,
    closed: AtomicBool,
}

/// Policies per key from an HTTP control plane; see the module docs.
pub struct HttpProvider {
    inner: Arc<Inner>,
}

impl core::fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HttpProvider")
            .field("base", &self.inner.base)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for HttpProvider {
    fn drop(&mut self) {
        // Ends every key's refresh task at its next wake-up.
        self.inner.closed.store(true, Ordering::Release);
    }
}

/// Builds an [`HttpProvider`].
#[derive(Clone, Debug)]
#[must_use = "call .build() to get the provider"]
pub struct HttpProviderBuilder {
    base: String,
    ttl: Duration,
    negative_ttl: Duration,
    timeout: Duration,
    max_keys: u64,
    idle: Duration,
    known: KnownNames,
}

impl HttpProvider {
    /// A builder for `base`, to which the key is appended
    /// (`http://127.0.0.1:8080/policies/`).
    pub fn builder(base: impl Into<String>) -> HttpProviderBuilder {
        HttpProviderBuilder {
            base: base.into(),
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            max_keys: 10_000,
            idle: Duration::from_secs(600),
            known: KnownNames::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> HttpStats {
        let c = &self.inner.counters;
        self.inner.cache.run_pending_tasks();
        HttpStats {
            fetches: c.fetches.load(Ordering::Acquire),
            updated: c.updated.load(Ordering::Acquire),
            not_modified: c.not_modified.load(Ordering::Acquire),
            not_found: c.not_found.load(Ordering::Acquire),
            errors: c.errors.load(Ordering::Acquire),
            keys: self.inner.cache.entry_count(),
        }
    }

    /// Why the latest fetch of `key` failed (`None`: it succeeded, or the
    /// key is not cached). While it is `Some`, lookups of the key answer
    /// last-known-good.
    pub fn key_error(&self, key: &str) -> Option<String> {
        let entry = self.inner.cache.get(key)?;
        let known = entry.known.load();
        known.error.clone()
    }

    /// The latest fetch error of any key, if any.
    pub fn last_error(&self) -> Option<String> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl HttpProviderBuilder {
    /// How long a fetched policy is current (default 1 min); it is
    /// refreshed in the background 0–20 % before.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_millis(10));
        self
    }

    /// How long a 404 is remembered (default 10 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl.max(Duration::from_millis(10));
        self
    }

    /// The budget, classifier and trigger names a policy may use (such as
    /// [`ExecutorBuilder::known_names`](crate::ExecutorBuilder::known_names));
    /// a fetched policy naming another is a failed fetch (counted, the
    /// last-known-good policy keeps serving) whose error names the key, the
    /// field and the known names. Default: not checked.
    pub fn known_names(mut self, known: KnownNames) -> Self {
        self.known = known;
        self
    }

    /// How long one fetch may take (default 2 s); a hang past it is an
    /// error, and the last-known-good policy keeps serving.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Most keys cached (default 10,000; at least 1).
    pub fn max_keys(mut self, n: u64) -> Self {
        self.max_keys = n.max(1);
        self
    }

    /// A key not looked up for this long is evicted (default 10 min).
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = idle.max(Duration::from_millis(10));
        self
    }

    /// The provider, using the current tokio runtime for its fetches.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn build(self) -> HttpProvider {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        HttpProvider {
            inner: Arc::new(Inner {
                base: self.base,
                client,
                cache: moka::sync::Cache::builder()
                    .max_capacity(self.max_keys)
                    .time_to_idle(self.idle)
                    .build(),
                runtime: tokio::runtime::Handle::current(),
                ttl: self.ttl,
                negative_ttl: self.negative_ttl,
                timeout: self.timeout,
                known: self.known,
                counters: Counters::default(),
                last_error: Mutex::new(None),
                closed: AtomicBool::new(false),
            }),
        }
    }
}

impl PolicyProvider for HttpProvider {
    /// The cached policy (source `remote`, or `lkg` when the latest fetch
    /// failed); `NotFound` after a 404; `provider_unavailable` while the
    /// first fetch of the key is outstanding or has failed.
    fn policy(&self, key: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        let joined = crate::providers::joined_key(key);
        let full: &str = &joined;
        if let Some(entry) = self.inner.cache.get(full) {
            let known = entry.known.load();
            return match &known.policy {
                Some(policy) => Ok(PolicyLookup {
                    policy: Arc::clone(policy),
                    source: if known.error.is_some() {
                        PolicySource::Lkg
                    } else {
                        PolicySource::Remote
                    },
                }),
                None if known.answered => Err(ProviderError::NotFound),
                None => Err(ProviderError::Unavailable(match &known.error {
                    Some(e) => format!("remote: {e}"),
                    None => "remote: first fetch in progress".to_owned(),
                })),
            };
        }
        // A miss: one fetch task per key, however many lookups miss at once.
        let entry = self
            .inner
            .cache
            .entry(full.to_owned())
            .or_insert_with(|| Arc::new(Entry::default()));
        if entry.is_fresh() {
            let inner = Arc::clone(&self.inner);
            let key = full.to_owned();
            let entry = Arc::clone(entry.value());
            self.inner
                .runtime
                .spawn(async move { refresh_loop(inner, key, entry).await });
        }
        Err(ProviderError::Unavailable(
            "remote: first fetch in progress".to_owned(),
        ))
    }

    /// The latest fetch error of the key.
    fn lkg_reason(&self, key: PolicyKey<'_>) -> Option<String> {
        self.key_error(&crate::providers::joined_key(key))
            .map(|e| format!("remote: {e}"))
    }
}

/// What one fetch found.
enum Fetched {
    Updated(Arc<Normalized>, Option<String>),
    NotModified,
    NotFound,
    Failed(String),
}

async fn fetch(inner: &Inner, key: &str, etag: Option<&str>) -> Fetched {
    inner.counters.fetches.fetch_add(1, Ordering::AcqRel);
    let uri = format!("{}{}", inner.base, key);
    let mut request = hyper::Request::get(uri.as_str());
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    let request = match request.body(Empty::<Bytes>::new()) {
        Ok(r) => r,
        Err(e) => return Fetched::Failed(format!("bad request for {uri}: {e}")),
    };
    let exchange = async {
        let response = inner
            .client
            .request(request)
            .await
            .map_err(|e| format!("GET {uri}: {e}"))?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(ToOwned::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {uri}: body: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, etag, body))
    };
    let (status, etag, body) = match tokio::time::timeout(inner.timeout, exchange).await {
        Err(_) => {
            return Fetched::Failed(format!("GET {uri}: no answer within {:?}", inner.timeout))
        }
        Ok(Err(e)) => return Fetched::Failed(e),
        Ok(Ok(r)) => r,
    };
    match status {
        200 => {
            let text = match core::str::from_utf8(&body) {
                Ok(t) => t,
                Err(_) => return Fetched::Failed(format!("GET {uri}: body is not UTF-8")),
            };
            let checked = parse_policy(text).and_then(|p| {
                inner.known.check(key, &p)?;
                normalize_policy(key, p)
            });
            match checked {
                Ok(n) => Fetched::Updated(Arc::new(n), etag),
                Err(mut e) => {
                    e.key = Some(key.to_owned());
                    Fetched::Failed(format!("GET {uri}: invalid policy: {e}"))
                }
            }
        }
        304 => Fetched::NotModified,
        404 => Fetched::NotFound,
        s => Fetched::Failed(format!("GET {uri}: HTTP {s}")),
    }
}

/// Fetches `key` now and then before each TTL runs out, until the key is
/// evicted or the provider dropped.
async fn refresh_loop(inner: Arc<Inner>, key: String, entry: Arc<Entry>) {
    let mut rng = fastrand::Rng::new();
    let mut failures: u32 = 0;
    loop {
        if inner.closed.load(Ordering::Acquire) || !inner.cache.contains_key(&key) {
            return;
        }
        let old = entry.known.load_full();
        let wait = match fetch(&inner, &key, old.etag.as_deref()).await {
            Fetched::Updated(policy, etag) => {
                inner.counters.updated.fetch_add(1, Ordering::AcqRel);
                entry.known.store(Arc::new(Known {
                    policy: Some(policy),
                    answered: true,
                    etag,
                    error: None,
                }));
                failures = 0;
                jittered(&mut rng, inner.ttl)
            }
            Fetched::NotModified => {
                inner.counters.not_modified.fetch_add(1, Ordering::AcqRel);
                if old.error.is_some() {
                    entry.known.store(Arc::new(Known {
                        policy: old.policy.clone(),
                        answered: old.answered,
                        etag: old.etag.clone(),
                        error: None,
                    }));
                }
                failures = 0;
                jittered(&mut rng, inner.ttl)
            }
            Fetched::NotFound => {
                inner.counters.not_found.fetch_add(1, Ordering::AcqRel);
                entry.known.store(Arc::new(Known {
                    policy: None,
                    answered: true,
                    etag: None,
                    error: None,
                }));
                failures = 0;
                jittered(&mut rng, inner.negative_ttl)
            }
            Fetched::Failed(why) => {
                inner.counters.errors.fetch_add(1, Ordering::AcqRel);
                *inner
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(why.clone());
                entry.known.store(Arc::new(Known {
                    policy: old.policy.clone(),
                    answered: old.answered,
                    etag: old.etag.clone(),
                    error: Some(why),
                }));
                failures = failures.saturating_add(1);
                // 100 ms doubling, at most the TTL, with full jitter.
                let backoff = Duration::from_millis(100)
                    .saturating_mul(1 << failures.min(16))
                    .min(inner.ttl);
                let nanos = u64::try_from(backoff.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.u64(nanos / 2..=nanos))
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// 80–100 % of `ttl`: refreshed before it runs out, and a fleet's
/// refreshes spread out.
fn jittered(rng: &mut fastrand::Rng, ttl: Duration) -> Duration {
    let nanos = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.u64(nanos - nanos / 5..=nanos))
}
