//! recourse under turmoil, unchanged: a client using the tower layer talks
//! to a flaky server across turmoil's simulated network and clock, through
//! a partition and its repair. The same seed gives the same attempts, the
//! same timeline and the same results on every run — the way to test a
//! service's resilience settings before production.

#![allow(clippy::unwrap_used)]

use core::time::Duration;
use std::sync::{Arc, Mutex};

use recourse::integrations::tower::RecourseLayer;
use recourse::observer::AttemptRecord;
use recourse::{Executor, Jitter, Observer, Policy, PolicyKey, StaticProvider};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tower::{Service, ServiceExt};
use tower_layer::Layer;
use turmoil::net::{TcpListener, TcpStream};

/// One attempt as the client saw it: virtual time at its end (ms), retry
/// index, backoff before it (µs), reason.
type Seen = (u128, u32, u128, &'static str);

struct Record(Arc<Mutex<Vec<Seen>>>);

impl Observer for Record {
    fn on_attempt(&self, _: PolicyKey<'_>, r: &AttemptRecord) {
        let now = turmoil::sim_elapsed().unwrap_or_default().as_millis();
        self.0.lock().unwrap().push((
            now,
            r.info.retry_index,
            r.backoff.as_micros(),
            r.outcome.reason,
        ));
    }
}

/// Answers one line per connection: `err` for every third request, `ok n`
/// otherwise.
async fn server() -> Result<(), Box<dyn core::error::Error>> {
    let listener = TcpListener::bind("0.0.0.0:9000").await?;
    let mut n = 0u32;
    loop {
        let (stream, _) = listener.accept().await?;
        n += 1;
        let reply = if n % 3 == 2 {
            "err\n".to_owned()
        } else {
            format!("ok {n}\n")
        };
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(read).read_line(&mut line).await.is_ok() {
                let _ = write.write_all(reply.as_bytes()).await;
            }
        });
    }
}

/// One request over a fresh connection.
async fn request(req: String) -> Result<String, String> {
    let stream = TcpStream::connect("server:9000")
        .await
        .map_err(|e| e.to_string())?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("{req}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    match line.trim() {
        "err" => Err("server error".into()),
        "" => Err("connection closed".into()),
        ok => Ok(ok.to_owned()),
    }
}

type Outcome = (Vec<Seen>, Vec<Result<String, String>>);

/// Marks a network event in the timeline.
fn mark(seen: &Mutex<Vec<Seen>>, what: &'static str) {
    let now = turmoil::sim_elapsed().unwrap_or_default().as_millis();
    seen.lock().unwrap().push((now, u32::MAX, 0, what));
}

fn run(seed: u64) -> Outcome {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .simulation_duration(Duration::from_secs(60))
        .build();
    sim.host("server", server);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let results = Arc::new(Mutex::new(Vec::new()));
    let (s, r) = (seen.clone(), results.clone());
    let s2 = seen.clone();
    sim.client("client", async move {
        let mut p = Policy::DEFAULT;
        p.retry.max_attempts = 8;
        p.retry.initial_backoff = Duration::from_millis(100);
        p.retry.max_backoff = Duration::from_secs(1);
        p.retry.jitter = Jitter::Full;
        p.retry.timeout_per_attempt = Some(Duration::from_millis(300));
        p.retry.overall_timeout = Some(Duration::from_secs(10));
        let exec = Executor::builder()
            .provider(StaticProvider::builder().policy("server.Get", p)?.build())
            .observer(Record(s))
            .seed(seed)
            .build();
        let mut svc =
            RecourseLayer::new(Arc::new(exec), "server.Get").layer(tower::service_fn(request));
        for i in 0..4 {
            if i == 2 {
                // Cut the link for 1.5 s of simulated time.
                turmoil::partition("client", "server");
                mark(&s2, "partition");
                let s3 = s2.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    turmoil::repair("client", "server");
                    mark(&s3, "repair");
                });
            }
            let result = svc
                .ready()
                .await
                .unwrap()
                .call(format!("get {i}"))
                .await
                .map_err(|e| e.to_string());
            r.lock().unwrap().push(result);
        }
        Ok(())
    });
    sim.run().unwrap();
    let seen = seen.lock().unwrap().clone();
    let results = results.lock().unwrap().clone();
    (seen, results)
}

#[test]
fn the_same_seed_gives_the_same_attempts_timeline_and_results() {
    let first = run(7);
    assert_eq!(run(7), first);

    let (seen, results) = first;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // The flaky server's error is retried.
    assert!(seen.iter().any(|a| a.3 == "retryable_error"), "{seen:#?}");
    // While the link is cut every attempt fails (turmoil refuses the
    // connection), backing off with growing, jittered delays; after the
    // repair the next attempt succeeds.
    let cut = seen.iter().position(|a| a.3 == "partition").unwrap();
    let repaired = seen.iter().position(|a| a.3 == "repair").unwrap();
    assert!(repaired - cut >= 4, "{seen:#?}");
    assert!(
        seen[cut + 1..repaired]
            .iter()
            .all(|a| a.3 == "retryable_error"),
        "{seen:#?}"
    );
    assert_eq!(seen[repaired + 1].3, "success", "{seen:#?}");
    assert_eq!(seen[repaired].0 - seen[cut].0, 1500);
}

#[test]
fn another_seed_gives_its_own_timeline() {
    // Jitter and message latency come from the seeds: another seed moves
    // the timeline but the outcome is the same.
    let (a, ra) = run(7);
    let (b, rb) = run(8);
    assert!(ra.iter().all(Result::is_ok) && rb.iter().all(Result::is_ok));
    assert_ne!(a, b);
}
