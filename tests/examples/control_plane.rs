//! Policies from a watched file (or etcd), changed while calls run.
//!
//! ```text
//! cargo run --example control_plane                       # a file it writes to a temp dir
//! cargo run --example control_plane -- --file PATH        # your document (a bad one exits 1)
//! cargo run --example control_plane --features recourse-tests/etcd -- --etcd http://127.0.0.1:2379
//! ```
//!
//! Every call prints its `policy_source` and the attempts it made; the
//! example edits the policy mid-run, prints when the change takes effect,
//! then writes a bad edit and shows that calls keep the last good policy.

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;
use std::sync::Arc;
use std::time::Instant;

use recourse::providers::{FileProvider, ReloadEvent};
use recourse::{AttemptInfo, Executor};

const KEY: &str = "user-service.GetUser";

fn document(max_attempts: u32) -> String {
    format!(
        "[default.retry]\nmax_attempts = 1\n\n\
         [policies.\"{KEY}\".retry]\nmax_attempts = {max_attempts}\ninitial_backoff = \"1ms\"\nmax_backoff = \"2ms\"\n"
    )
}

/// One call against a backend that always fails: the attempts it makes are
/// the policy's `max_attempts`.
async fn call(exec: &Executor, n: u32) -> (String, usize) {
    let (_, timeline) = exec
        .call_with_timeline(KEY, |_: AttemptInfo| async { Err::<(), _>("unavailable") })
        .await;
    let source = timeline
        .attribute("policy_source")
        .unwrap_or("-")
        .to_owned();
    println!(
        "call {n:>3}: policy_source={source:<7} attempts={}",
        timeline.attempts.len()
    );
    (source, timeline.attempts.len())
}

/// Runs calls until one makes `want` attempts; returns how long that took.
async fn until_attempts(exec: &Executor, calls: &AtomicU32, want: usize) -> Option<Duration> {
    let start = Instant::now();
    for _ in 0..400 {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        if call(exec, n).await.1 == want {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        None => file_demo().await,
        Some("--file") if args.len() == 2 => own_file(&args[1]).await,
        Some("--etcd") if args.len() == 2 => etcd_demo(&args[1]).await,
        _ => {
            eprintln!("usage: control_plane [--file PATH | --etcd URL]");
            2
        }
    };
    std::process::exit(code);
}

async fn file_demo() -> i32 {
    let dir = std::env::temp_dir().join(format!("recourse-control-plane-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("policies.toml");
    std::fs::write(&path, document(3)).expect("write the policy file");
    println!("policy file: {}", path.display());
    let provider = FileProvider::builder(&path)
        .on_reload(|event| match event {
            ReloadEvent::Applied {
                generation, keys, ..
            } => {
                println!("  [file] document {generation} applied ({keys} keys)")
            }
            ReloadEvent::Rejected { error, rejected } => {
                println!("  [file] edit rejected (#{rejected}), last good kept: {error}")
            }
            _ => {}
        })
        .build()
        .expect("the embedded document is valid");
    let provider = Arc::new(provider);
    let exec = Executor::builder().provider(Arc::clone(&provider)).build();
    let calls = AtomicU32::new(1);
    for _ in 0..5 {
        call(&exec, calls.fetch_add(1, Ordering::Relaxed)).await;
    }

    println!("-- editing the file: max_attempts 3 -> 5");
    std::fs::write(&path, document(5)).expect("edit");
    let Some(took) = until_attempts(&exec, &calls, 5).await else {
        eprintln!("the edit never took effect");
        return 1;
    };
    println!(
        "-- the change took effect {} ms after the edit",
        took.as_millis()
    );

    println!("-- writing a bad edit (a duration without a unit)");
    std::fs::write(&path, document(7).replace("\"1ms\"", "\"1\"")).expect("edit");
    let start = Instant::now();
    while provider.stats().rejected == 0 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..3 {
        let (_, attempts) = call(&exec, calls.fetch_add(1, Ordering::Relaxed)).await;
        if attempts != 5 {
            eprintln!("a bad edit changed the policy");
            return 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if provider.stats().rejected == 0 {
        eprintln!("the bad edit was not reported");
        return 1;
    }
    println!("-- calls kept the last good policy; done");
    0
}

async fn own_file(path: &str) -> i32 {
    let provider = match FileProvider::open(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let exec = Executor::builder().provider(provider).build();
    println!("{path}: loaded");
    let lookup = exec.provider().policy(recourse::PolicyKey::parse(KEY));
    match lookup {
        Ok(found) => println!(
            "{KEY}: source {}, {:?}",
            found.source, found.policy.policy.retry
        ),
        Err(e) => println!("{KEY}: {e}"),
    }
    0
}

#[cfg(feature = "etcd")]
async fn etcd_demo(url: &str) -> i32 {
    use recourse::providers::EtcdProvider;
    let prefix = "/recourse-example/";
    // etcd may still be starting: try for up to 10 s.
    let mut client = None;
    let mut last_error = String::new();
    for _ in 0..100 {
        match etcd_client::Client::connect([url], None).await {
            Ok(mut c) => match c.get("probe", None).await {
                Ok(_) => {
                    client = Some(c);
                    break;
                }
                Err(e) => last_error = e.to_string(),
            },
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(mut client) = client else {
        eprintln!("error: cannot connect to etcd at {url}: {last_error}");
        return 1;
    };
    let value = |n: u32| {
        format!(r#"{{"retry":{{"max_attempts":{n},"initial_backoff":"1ms","max_backoff":"2ms"}}}}"#)
    };
    let key = format!("{prefix}{KEY}");
    if let Err(e) = client.put(key.as_str(), value(3), None).await {
        eprintln!("error: put: {e}");
        return 1;
    }
    let provider = Arc::new(EtcdProvider::builder([url], prefix).start());
    if !provider.ready(Duration::from_secs(10)).await {
        eprintln!("error: no read from etcd: {:?}", provider.stats());
        return 1;
    }
    let exec = Executor::builder().provider(Arc::clone(&provider)).build();
    let calls = AtomicU32::new(1);
    for _ in 0..5 {
        call(&exec, calls.fetch_add(1, Ordering::Relaxed)).await;
    }
    println!("-- etcd put: max_attempts 3 -> 5");
    if let Err(e) = client.put(key.as_str(), value(5), None).await {
        eprintln!("error: put: {e}");
        return 1;
    }
    let Some(took) = until_attempts(&exec, &calls, 5).await else {
        eprintln!("the put never took effect");
        return 1;
    };
    println!(
        "-- the change took effect {} ms after the put",
        took.as_millis()
    );
    0
}

#[cfg(not(feature = "etcd"))]
async fn etcd_demo(_url: &str) -> i32 {
    eprintln!(
        "error: --etcd needs the etcd feature: \
         cargo run --example control_plane --features recourse-tests/etcd -- --etcd URL"
    );
    2
}
