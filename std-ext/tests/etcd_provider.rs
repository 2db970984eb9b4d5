//! The etcd provider against a real etcd server (Debian's `etcd-server`),
//! started and killed by the test itself on free 127.0.0.1 ports: read,
//! watch, bad values, deletes, put-to-use latency, and an outage in the
//! middle of 10,000 calls (zero fail, last-known-good served, the next put
//! after the restart reaches calls).
#![allow(clippy::unwrap_used)]

use core::time::Duration;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use etcd_client::Client;
use recourse::provider::PolicySource;
use recourse::providers::EtcdProvider;
use recourse::{AttemptInfo, Executor, PolicyKey, PolicyProvider};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real etcd, killed when dropped.
struct Etcd {
    child: Option<Child>,
    data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    fn start(data_dir: &Path) -> Self {
        let mut e = Self {
            child: None,
            data_dir: data_dir.to_path_buf(),
            client_port: free_port(),
            peer_port: free_port(),
        };
        e.spawn();
        e
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.data_dir.with_extension("log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "recourse-test", "--data-dir"])
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("recourse-test={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "cannot run `etcd`: install Debian's etcd-server \
                 (apt-get install -y etcd-server), as .ci/run does",
            );
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A client, once etcd answers (bounded: 15 s).
    async fn client(&self) -> Client {
        let start = Instant::now();
        loop {
            if let Ok(mut c) = Client::connect([self.url()], None).await {
                if c.get("probe", None).await.is_ok() {
                    return c;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "etcd did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn attempts(p: &EtcdProvider, key: &str) -> (u32, PolicySource) {
    let found = p.policy(PolicyKey::parse(key)).unwrap();
    (found.policy.policy.retry.max_attempts, found.source)
}

async fn put(c: &mut Client, key: &str, value: &str) -> i64 {
    let r = c.put(format!("/t/{key}"), value, None).await.unwrap();
    r.header().unwrap().revision()
}

/// Waits (bounded) until `cond` holds, yielding to the provider's task.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test]
async fn etcd_read_watch_outage_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(&dir.path().join("etcd"));
    let mut c = etcd.client().await;
    put(
        &mut c,
        "svc.Get",
        r#"{"retry":{"max_attempts":4,"initial_backoff":"1ms"}}"#,
    )
    .await;
    put(&mut c, "_default", "[retry]\nmax_attempts = 2\n").await;

    let provider = std::sync::Arc::new(
        EtcdProvider::builder([etcd.url()], "/t/")
            .backoff_initial(Duration::from_millis(50))
            .backoff_max(Duration::from_millis(400))
            .timeout(Duration::from_secs(1))
            .start(),
    );
    assert!(
        provider.ready(Duration::from_secs(15)).await,
        "{:?}",
        provider.stats()
    );
    assert_eq!(attempts(&provider, "svc.Get"), (4, PolicySource::Etcd));
    assert_eq!(attempts(&provider, "svc.Put"), (2, PolicySource::Default));
    // A lookup allocates nothing.
    let info = allocation_counter::measure(|| {
        for _ in 0..1000 {
            assert_eq!(attempts(&provider, "svc.Get").0, 4);
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");

    // A put reaches lookups.
    let rev = put(&mut c, "svc.Get", r#"{"retry":{"max_attempts":5}}"#).await;
    assert!(
        provider
            .wait_for_revision(rev, Duration::from_secs(10))
            .await
    );
    assert_eq!(attempts(&provider, "svc.Get"), (5, PolicySource::Etcd));

    // A bad value is rejected and reported; the key keeps its last good one.
    let rev = put(&mut c, "svc.Get", r#"{"retry":{"max_attempts":-1}}"#).await;
    assert!(
        provider
            .wait_for_revision(rev, Duration::from_secs(10))
            .await
    );
    assert_eq!(attempts(&provider, "svc.Get"), (5, PolicySource::Etcd));
    let stats = provider.stats();
    assert_eq!(stats.rejected, 1);
    let e = stats.last_rejection.unwrap();
    assert_eq!(e.key.as_deref(), Some("svc.Get"));
    assert_eq!(e.field.as_deref(), Some("retry.max_attempts"));

    // A delete falls back to the default.
    put(&mut c, "svc.Tmp", r#"{"retry":{"max_attempts":7}}"#).await;
    let r = c.delete("/t/svc.Tmp", None).await.unwrap();
    assert!(
        provider
            .wait_for_revision(r.header().unwrap().revision(), Duration::from_secs(10))
            .await
    );
    assert_eq!(attempts(&provider, "svc.Tmp"), (2, PolicySource::Default));

    // Put-to-use latency over 100 changes: from just before the put to the
    // first lookup that returns the new value.
    let mut latencies = Vec::with_capacity(100);
    for i in 0..100u32 {
        let n = 3 + i % 7;
        let n = if n == attempts(&provider, "svc.Get").0 {
            n % 9 + 1
        } else {
            n
        };
        let t0 = Instant::now();
        put(
            &mut c,
            "svc.Get",
            &format!(r#"{{"retry":{{"max_attempts":{n}}}}}"#),
        )
        .await;
        until("a put to reach lookups", || {
            attempts(&provider, "svc.Get").0 == n
        })
        .await;
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    eprintln!("etcd put-to-first-use over 100 changes: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?}");

    // An outage in the middle of 10,000 calls: none fails, and the calls
    // after the kill are served last-known-good.
    let exec = Executor::builder()
        .provider(std::sync::Arc::clone(&provider))
        .build();
    let last_good = attempts(&provider, "svc.Get").0;
    let mut failed = 0;
    let mut sources = std::collections::BTreeMap::<&'static str, u32>::new();
    for i in 0..10_000u32 {
        if i == 3_000 {
            etcd.kill();
            until("the provider to notice the outage", || {
                !provider.stats().connected
            })
            .await;
        }
        let (result, timeline) = exec
            .call_with_timeline("svc.Get", |_: AttemptInfo| async { Ok::<_, &str>(()) })
            .await;
        if result.is_err() {
            failed += 1;
        }
        let source = match timeline.attribute("policy_source") {
            Some("etcd") => "etcd",
            Some("lkg") => "lkg",
            other => panic!("unexpected source {other:?}"),
        };
        *sources.entry(source).or_default() += 1;
        if i >= 3_000 {
            assert_eq!(source, "lkg", "call {i}");
            let why = timeline.attribute("policy_error").unwrap_or_default();
            assert!(
                why.starts_with("provider_unavailable: etcd: "),
                "call {i}: {why}"
            );
            assert_eq!(attempts(&provider, "svc.Get").0, last_good);
        }
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    eprintln!("outage run: {failed} failed calls, sources {sources:?}");
    assert_eq!(failed, 0);
    assert_eq!(sources.get("etcd"), Some(&3_000));
    assert_eq!(sources.get("lkg"), Some(&7_000));
    assert!(provider.stats().failures >= 1);

    // etcd comes back: the provider reconnects by itself, and the next put
    // reaches calls.
    etcd.spawn();
    let mut c = etcd.client().await;
    until("the provider to reconnect", || provider.stats().connected).await;
    let rev = put(&mut c, "svc.Get", r#"{"retry":{"max_attempts":8}}"#).await;
    assert!(
        provider
            .wait_for_revision(rev, Duration::from_secs(10))
            .await
    );
    let (_, timeline) = exec
        .call_with_timeline("svc.Get", |_: AttemptInfo| async { Err::<(), _>("down") })
        .await;
    assert_eq!(timeline.attribute("policy_source"), Some("etcd"));
    assert_eq!(timeline.attribute("policy_error"), None);
    assert_eq!(timeline.attempts.len(), 8);
}

#[tokio::test]
async fn before_the_first_read_lookups_are_unavailable_not_missing() {
    // Nothing listens on this port: the provider keeps retrying, and lookups
    // say why they have no answer so a lower layer or the missing-policy
    // mode decides.
    let port = free_port();
    let provider = EtcdProvider::builder([format!("http://127.0.0.1:{port}")], "/t/")
        .backoff_initial(Duration::from_millis(10))
        .timeout(Duration::from_millis(200))
        .start();
    assert!(!provider.ready(Duration::from_millis(300)).await);
    let e = provider.policy(PolicyKey::parse("svc.Get")).unwrap_err();
    assert_eq!(e.code(), "provider_unavailable");
    until("a failed connect to be counted", || {
        provider.stats().failures >= 1
    })
    .await;
    assert!(provider.stats().last_failure.unwrap().contains("connect"));
}

#[tokio::test]
async fn a_watch_behind_a_compaction_reads_again() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&dir.path().join("etcd"));
    let mut c = etcd.client().await;
    put(&mut c, "svc.Get", r#"{"retry":{"max_attempts":2}}"#).await;
    let provider = EtcdProvider::builder([etcd.url()], "/t/")
        .watch_delay_for_tests(Duration::from_millis(500))
        .start();
    assert!(provider.ready(Duration::from_secs(15)).await);
    assert_eq!(attempts(&provider, "svc.Get"), (2, PolicySource::Etcd));
    // Between the read and the watch: new values, and the history compacted
    // past the read revision.
    put(&mut c, "svc.Get", r#"{"retry":{"max_attempts":3}}"#).await;
    let rev = put(&mut c, "svc.Get", r#"{"retry":{"max_attempts":4}}"#).await;
    c.compact(rev, None).await.unwrap();
    until("a re-read after the compaction", || {
        provider.stats().reads >= 2 && attempts(&provider, "svc.Get").0 == 4
    })
    .await;
    let stats = provider.stats();
    assert_eq!(
        stats.failures, 0,
        "a compaction is not a failure: {stats:?}"
    );
    assert!(stats.connected);
    // And the new watch works.
    let rev = put(&mut c, "svc.Get", r#"{"retry":{"max_attempts":5}}"#).await;
    assert!(
        provider
            .wait_for_revision(rev, Duration::from_secs(10))
            .await
    );
    assert_eq!(attempts(&provider, "svc.Get"), (5, PolicySource::Etcd));
}

#[tokio::test]
async fn a_put_naming_an_unknown_budget_is_rejected_naming_the_key_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&dir.path().join("etcd"));
    let mut c = etcd.client().await;
    // Already there at the first read: a typo keeps the key out.
    put(
        &mut c,
        "svc.List",
        r#"{"retry":{"max_attempts":3,"budget":{"name":"retires"}}}"#,
    )
    .await;
    put(
        &mut c,
        "svc.Get",
        r#"{"retry":{"max_attempts":4,"budget":{"name":"retries"}}}"#,
    )
    .await;
    let known = recourse::providers::KnownNames {
        budgets: Some(vec!["retries".to_owned()]),
        ..Default::default()
    };
    let provider = EtcdProvider::builder([etcd.url()], "/t/")
        .known_names(known)
        .start();
    assert!(provider.ready(Duration::from_secs(15)).await);
    assert_eq!(attempts(&provider, "svc.Get"), (4, PolicySource::Etcd));
    assert_eq!(provider.stats().rejected, 1);
    let e = provider.stats().last_rejection.unwrap();
    assert_eq!(e.key.as_deref(), Some("svc.List"));
    assert_eq!(e.field.as_deref(), Some("retry.budget.name"));
    assert!(e.to_string().contains("`retires`"), "{e}");
    assert!(e.to_string().contains("known: retries"), "{e}");

    // Through the watch: the key keeps its last good policy.
    let rev = put(
        &mut c,
        "svc.Get",
        r#"{"retry":{"max_attempts":6,"budget":{"name":"hedges"}}}"#,
    )
    .await;
    assert!(
        provider
            .wait_for_revision(rev, Duration::from_secs(10))
            .await
    );
    assert_eq!(attempts(&provider, "svc.Get"), (4, PolicySource::Etcd));
    let stats = provider.stats();
    assert_eq!(stats.rejected, 2);
    let e = stats.last_rejection.unwrap();
    assert_eq!(e.key.as_deref(), Some("svc.Get"));
    assert_eq!(e.field.as_deref(), Some("retry.budget.name"));
}
