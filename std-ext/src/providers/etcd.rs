//! The etcd provider: one policy per key under a key prefix, watched.
//!
//! Layout: `<prefix><policy key>` holds one policy (JSON when it starts with
//! `{`, TOML otherwise), for example `/recourse/user-service.GetUser` →
//! `{"retry": {"max_attempts": 5, "initial_backoff": "20ms"}}`;
//! `<prefix>_default` holds the default.
//!
//! Why read then watch from the read revision: the read gives every policy
//! as of one revision, and a watch that starts right after it misses no put
//! in between. A background task on the tokio runtime does both; when the
//! connection fails it reconnects with exponential backoff and jitter, and
//! reads again (a watch that fell behind a compaction reads again too: the
//! history it needs is gone).
//!
//! Why last-known-good: the control plane is there to tune calls, not to
//! gate them. While etcd is unreachable every lookup keeps answering from
//! the last policies read, with source `lkg` (a key's own policy) so the
//! timeline shows the outage; when etcd is back, the next read or put
//! reaches calls without a restart. A put whose value is invalid is counted
//! and reported, and the key keeps its last good value: one operator's typo
//! changes nothing.

// A `DocumentError` is big, and produced only when a value is rejected.
#![allow(clippy::result_large_err)]

use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use core::time::Duration;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use recourse_core::policy::Normalized;
use recourse_core::PolicyKey;

use crate::provider::{PolicyLookup, PolicyProvider, PolicySource, ProviderError};
use crate::providers::document::{normalize_policy, parse_policy, DocumentError, KnownNames};
use crate::providers::snapshot::Snapshot;
use crate::static_provider::StaticProvider;

/// The key, under the prefix, that holds the default policy.
pub const DEFAULT_KEY: &str = "_default";

/// Counters and state of an [`EtcdProvider`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdStats {
    /// Whether the provider is connected and watching (false before the
    /// first read and during an outage: lookups then serve last-known-good).
    pub connected: bool,
    /// Full reads of the prefix done (the first one, and one per reconnect
    /// or compaction).
    pub reads: u64,
    /// Policy values applied (from reads and watch events).
    pub applied: u64,
    /// Policy values rejected (the key kept its last good value).
    pub rejected: u64,
    /// Connection or watch failures (each followed by a reconnect).
    pub failures: u64,
    /// The etcd revision of the policies served.
    pub revision: i64,
    /// The latest rejected value, naming the key and field.
    pub last_rejection: Option<DocumentError>,
    /// The latest connection failure.
    pub last_failure: Option<String>,
}

struct Shared {
    current: Snapshot,
    connected: AtomicBool,
    ever_read: AtomicBool,
    reads: AtomicU64,
    applied: AtomicU64,
    rejected: AtomicU64,
    failures: AtomicU64,
    revision: AtomicI64,
    last_rejection: Mutex<Option<DocumentError>>,
    last_failure: Mutex<Option<String>>,
    changed: tokio::sync::Notify,
}

/// Policies from etcd, read under a prefix and watched; see the module docs.
///
/// Lookups never wait: they read the current snapshot (no lock, no shared write). Before
/// the first read completes they are `provider_unavailable`, so a lower
/// [`Layered`](crate::providers::Layered) layer or the executor's
/// missing-policy mode decides.
pub struct EtcdProvider {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl core::fmt::Debug for EtcdProvider {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EtcdProvider")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for EtcdProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds an [`EtcdProvider`].
#[derive(Clone, Debug)]
#[must_use = "call .start() to connect"]
pub struct EtcdProviderBuilder {
    endpoints: Vec<String>,
    prefix: String,
    backoff_initial: Duration,
    backoff_max: Duration,
    timeout: Duration,
    watch_delay: Duration,
    known: KnownNames,
}

impl EtcdProvider {
    /// A builder for `endpoints` (such as `http://127.0.0.1:2379`) and the
    /// key `prefix` (such as `/recourse/`).
    pub fn builder(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        prefix: impl Into<String>,
    ) -> EtcdProviderBuilder {
        EtcdProviderBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.into(),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            watch_delay: Duration::ZERO,
            known: KnownNames::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> EtcdStats {
        let s = &self.shared;
        EtcdStats {
            connected: s.connected.load(Ordering::Acquire),
            reads: s.reads.load(Ordering::Acquire),
            applied: s.applied.load(Ordering::Acquire),
            rejected: s.rejected.load(Ordering::Acquire),
            failures: s.failures.load(Ordering::Acquire),
            revision: s.revision.load(Ordering::Acquire),
            last_rejection: lock(&s.last_rejection).clone(),
            last_failure: lock(&s.last_failure).clone(),
        }
    }

    /// Waits until the first read has completed, at most `timeout`; whether
    /// it has.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.changed.notified();
                if self.shared.ever_read.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Waits until the served revision is at least `revision`, at most
    /// `timeout`; whether it is.
    pub async fn wait_for_revision(&self, revision: i64, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.changed.notified();
                if self.shared.revision.load(Ordering::Acquire) >= revision {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl PolicyProvider for EtcdProvider {
    /// The key's own policy (source `etcd`, or `lkg` while etcd is
    /// unreachable), else the default (source `default`), else `NotFound`;
    /// before the first read, `provider_unavailable`.
    fn policy(&self, key: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        match self.shared.current.with(|snapshot| snapshot.policy(key)) {
            Ok(mut found) => {
                if found.source == PolicySource::Static {
                    found.source = if self.shared.connected.load(Ordering::Relaxed) {
                        PolicySource::Etcd
                    } else {
                        PolicySource::Lkg
                    };
                }
                Ok(found)
            }
            Err(ProviderError::NotFound) if !self.shared.ever_read.load(Ordering::Relaxed) => Err(
                ProviderError::Unavailable("etcd: policies not read yet".to_owned()),
            ),
            Err(e) => Err(e),
        }
    }

    /// The latest connection failure, while disconnected.
    fn lkg_reason(&self, _key: PolicyKey<'_>) -> Option<String> {
        if self.shared.connected.load(Ordering::Relaxed) {
            return None;
        }
        lock(&self.shared.last_failure)
            .as_ref()
            .map(|why| format!("etcd: {why}"))
    }

    /// The document's generation and whether etcd is reachable (which
    /// turns answers' source between `etcd` and `lkg`): either changing
    /// changes it.
    fn generation(&self) -> Option<u64> {
        let connected = self.shared.connected.load(Ordering::Acquire);
        Some(
            self.shared
                .current
                .generation()
                .wrapping_mul(2)
                .wrapping_add(u64::from(connected)),
        )
    }
}

impl EtcdProviderBuilder {
    /// First reconnect delay (default 100 ms), doubled per failure up to
    /// [`EtcdProviderBuilder::backoff_max`], with full jitter.
    pub fn backoff_initial(mut self, d: Duration) -> Self {
        self.backoff_initial = d.max(Duration::from_millis(1));
        self
    }

    /// Longest reconnect delay (default 5 s).
    pub fn backoff_max(mut self, d: Duration) -> Self {
        self.backoff_max = d.max(self.backoff_initial);
        self
    }

    /// The budget, classifier and trigger names a policy may use (such as
    /// [`ExecutorBuilder::known_names`](crate::ExecutorBuilder::known_names));
    /// a put naming another is rejected like an invalid value (counted, the
    /// key keeps its last good policy), with an error naming the key, the
    /// field and the known names. Default: not checked.
    pub fn known_names(mut self, known: KnownNames) -> Self {
        self.known = known;
        self
    }

    /// Connect and request timeout, and the keep-alive timeout that detects
    /// a silent outage (default 2 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d.max(Duration::from_millis(10));
        self
    }

    /// Waits this long between the read and the watch (default 0). For
    /// tests only: it lets a test compact etcd past the read revision, so
    /// that the watch finds its history gone and the provider reads again.
    #[doc(hidden)]
    pub fn watch_delay_for_tests(mut self, d: Duration) -> Self {
        self.watch_delay = d;
        self
    }

    /// Starts the background task on the current tokio runtime and returns
    /// at once; see [`EtcdProvider::ready`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn start(self) -> EtcdProvider {
        let shared = Arc::new(Shared {
            current: Snapshot::new(StaticProvider::empty()),
            connected: AtomicBool::new(false),
            ever_read: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            revision: AtomicI64::new(0),
            last_rejection: Mutex::new(None),
            last_failure: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        });
        let task = tokio::spawn(run(Arc::clone(&shared), self));
        EtcdProvider { shared, task }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The policies as read, by key under the prefix (last good values).
#[derive(Default)]
struct State {
    policies: BTreeMap<String, Arc<Normalized>>,
    default: Option<Arc<Normalized>>,
}

impl State {
    /// Applies one value; a bad one (or one naming a budget, classifier or
    /// trigger not in `known`) is counted, reported and ignored.
    fn put(&mut self, shared: &Shared, known: &KnownNames, key: &str, value: &str) {
        let checked = parse_policy(value).and_then(|p| {
            known.check(key, &p)?;
            normalize_policy(key, p)
        });
        match checked {
            Ok(n) => {
                let n = Arc::new(n);
                if key == DEFAULT_KEY {
                    self.default = Some(n);
                } else {
                    self.policies.insert(key.to_owned(), n);
                }
                shared.applied.fetch_add(1, Ordering::AcqRel);
            }
            Err(mut e) => {
                e.key = Some(key.to_owned());
                shared.rejected.fetch_add(1, Ordering::AcqRel);
                *lock(&shared.last_rejection) = Some(e);
            }
        }
    }

    fn delete(&mut self, key: &str) {
        if key == DEFAULT_KEY {
            self.default = None;
        } else {
            self.policies.remove(key);
        }
    }

    fn publish(&self, shared: &Shared, revision: i64) {
        let provider = StaticProvider::from_normalized(
            self.policies
                .iter()
                .map(|(k, v)| (k.as_str(), Arc::clone(v))),
            self.default.clone(),
        );
        shared.current.store(provider);
        shared.revision.store(revision, Ordering::Release);
        shared.changed.notify_waiters();
    }
}

/// Why a session ended.
enum End {
    /// The watch fell behind a compaction: read again at once.
    Compacted,
    /// A connection or protocol failure: back off, then reconnect.
    Failed(String),
}

async fn run(shared: Arc<Shared>, config: EtcdProviderBuilder) {
    let mut state = State::default();
    let mut backoff = config.backoff_initial;
    let mut rng = fastrand::Rng::new();
    loop {
        match session(&shared, &config, &mut state).await {
            End::Compacted => continue,
            End::Failed(why) => {
                let was_connected = shared.connected.swap(false, Ordering::AcqRel);
                shared.failures.fetch_add(1, Ordering::AcqRel);
                *lock(&shared.last_failure) = Some(why);
                shared.changed.notify_waiters();
                if was_connected {
                    backoff = config.backoff_initial;
                }
                // Full jitter: a fleet reconnecting after an outage spreads out.
                let nanos = u64::try_from(backoff.as_nanos()).unwrap_or(u64::MAX);
                tokio::time::sleep(Duration::from_nanos(rng.u64(nanos / 2..=nanos))).await;
                backoff = (backoff * 2).min(config.backoff_max);
            }
        }
    }
}

/// Connects, reads the prefix, watches from the read revision.
async fn session(shared: &Shared, config: &EtcdProviderBuilder, state: &mut State) -> End {
    let options = ConnectOptions::new()
        .with_connect_timeout(config.timeout)
        .with_timeout(config.timeout)
        .with_keep_alive(config.timeout, config.timeout)
        .with_keep_alive_while_idle(true);
    let mut client = match Client::connect(&config.endpoints, Some(options)).await {
        Ok(c) => c,
        Err(e) => return End::Failed(format!("connect: {e}")),
    };
    let prefix = config.prefix.as_str();
    let read = match client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
    {
        Ok(r) => r,
        Err(e) => return End::Failed(format!("read: {e}")),
    };
    let revision = read.header().map_or(0, |h| h.revision());
    // A full read replaces what was known: keys deleted during an outage go.
    let mut fresh = State::default();
    for kv in read.kvs() {
        let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) else {
            continue;
        };
        let key = key.strip_prefix(prefix).unwrap_or(key);
        // A bad value keeps the key's last good one.
        let before = shared.rejected.load(Ordering::Acquire);
        fresh.put(shared, &config.known, key, value);
        if shared.rejected.load(Ordering::Acquire) != before {
            if let Some(old) = state.policies.get(key) {
                fresh.policies.insert(key.to_owned(), Arc::clone(old));
            } else if key == DEFAULT_KEY {
                fresh.default.clone_from(&state.default);
            }
        }
    }
    *state = fresh;
    state.publish(shared, revision);
    shared.reads.fetch_add(1, Ordering::AcqRel);
    shared.ever_read.store(true, Ordering::Release);
    shared.connected.store(true, Ordering::Release);
    shared.changed.notify_waiters();

    if !config.watch_delay.is_zero() {
        tokio::time::sleep(config.watch_delay).await;
    }
    let watch = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = match client.watch(prefix, Some(watch)).await {
        Ok(s) => s,
        Err(e) => return End::Failed(format!("watch: {e}")),
    };
    loop {
        let response = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return End::Failed("watch stream ended".to_owned()),
            Err(e) => return End::Failed(format!("watch: {e}")),
        };
        if response.compact_revision() > 0 {
            return End::Compacted;
        }
        if response.canceled() {
            return End::Failed(format!("watch canceled: {}", response.cancel_reason()));
        }
        if response.events().is_empty() {
            continue;
        }
        let mut latest = shared.revision.load(Ordering::Acquire);
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            let key = key.strip_prefix(prefix).unwrap_or(key);
            match event.event_type() {
                EventType::Put => match kv.value_str() {
                    Ok(value) => state.put(shared, &config.known, key, value),
                    Err(_) => {
                        shared.rejected.fetch_add(1, Ordering::AcqRel);
                    }
                },
                EventType::Delete => state.delete(key),
            }
            latest = latest.max(kv.mod_revision());
        }
        if let Some(h) = response.header() {
            latest = latest.max(h.revision());
        }
        state.publish(shared, latest);
    }
}
