//! Instructions per policy lookup: static, file and etcd-backed providers,
//! side by side, for callgrind.
//!
//! ```text
//! cargo build --release -p recourse-tests --features etcd --example lookup_instr
//! valgrind --tool=callgrind --toggle-collect='*measure_static*' --toggle-collect='*measure_file*' \
//!     --toggle-collect='*measure_etcd*' target/release/examples/lookup_instr http://127.0.0.1:2379
//! callgrind_annotate callgrind.out.* | grep measure_
//! ```
//!
//! Each `measure_*` function does `LOOKUPS` lookups of one key (after a
//! warm-up of as many), so its inclusive instructions divided by `LOOKUPS`
//! are one lookup's. The etcd provider is filled from a real etcd at the
//! URL given (the example puts the policy there first).

use core::hint::black_box;
use core::time::Duration;
use std::sync::Arc;

use recourse::providers::{EtcdProvider, FileProvider, Watch};
use recourse::{Policy, PolicyKey, PolicyProvider, StaticProvider};

const LOOKUPS: u32 = 100_000;
const KEY: &str = "user-service.GetUser";

fn lookups(p: &dyn PolicyProvider) -> u32 {
    let mut sum = 0;
    for _ in 0..LOOKUPS {
        let found = p.policy(black_box(PolicyKey::parse(black_box(KEY))));
        sum += found.map_or(0, |f| f.policy.policy.retry.max_attempts);
    }
    sum
}

#[inline(never)]
fn measure_static(p: &dyn PolicyProvider) -> u32 {
    lookups(p)
}

#[inline(never)]
fn measure_file(p: &dyn PolicyProvider) -> u32 {
    lookups(p)
}

#[inline(never)]
fn measure_etcd(p: &dyn PolicyProvider) -> u32 {
    lookups(p)
}

fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut policy = Policy::DEFAULT;
    policy.retry.max_attempts = 5;
    let stat = StaticProvider::builder()
        .policy(KEY, policy)
        .expect("valid")
        .default_policy(Policy::DEFAULT)
        .expect("valid")
        .build();

    let dir = std::env::temp_dir().join(format!("recourse-lookup-instr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("policies.toml");
    std::fs::write(
        &path,
        format!(
            "[default.retry]\nmax_attempts = 3\n[policies.\"{KEY}\".retry]\nmax_attempts = 5\n"
        ),
    )
    .expect("write");
    let file = FileProvider::builder(&path)
        .watch(Watch::Off)
        .build()
        .expect("valid document");

    let etcd = rt.block_on(async {
        let mut client = etcd_client::Client::connect([url.as_str()], None)
            .await
            .expect("etcd reachable at the URL given");
        client
            .put(
                format!("/lookup-instr/{KEY}"),
                r#"{"retry":{"max_attempts":5}}"#,
                None,
            )
            .await
            .expect("put");
        let p = EtcdProvider::builder([url.as_str()], "/lookup-instr/").start();
        assert!(p.ready(Duration::from_secs(10)).await, "read from etcd");
        Arc::new(p)
    });

    // Warm-up: thread-locals (arc-swap's debt slots) and caches.
    for p in [&stat as &dyn PolicyProvider, &file, &*etcd] {
        assert_eq!(lookups(p), 5 * LOOKUPS);
    }
    let s = measure_static(&stat);
    let f = measure_file(&file);
    let e = measure_etcd(&*etcd);
    assert_eq!((s, f, e), (5 * LOOKUPS, 5 * LOOKUPS, 5 * LOOKUPS));
    println!("{LOOKUPS} lookups each: static, file, etcd all returned max_attempts 5");
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}
