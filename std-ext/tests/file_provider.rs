//! The file provider against real files in temporary directories: load,
//! watch (notifications and polling), atomic swap, bad edits keep the last
//! good document, and calls through an executor say `policy_source=file`.
#![allow(clippy::unwrap_used)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use recourse::provider::PolicySource;
use recourse::providers::{FileProvider, ReloadEvent, Watch};
use recourse::{AttemptInfo, Executor, PolicyKey, PolicyProvider};

const DEADLINE: Duration = Duration::from_secs(10);

fn doc(attempts: u32) -> String {
    format!(
        "[default.retry]\nmax_attempts = 2\n\n[policies.\"svc.Get\".retry]\nmax_attempts = {attempts}\ninitial_backoff = \"1ms\"\n"
    )
}

fn attempts(p: &FileProvider) -> u32 {
    p.policy(PolicyKey::parse("svc.Get"))
        .unwrap()
        .policy
        .policy
        .retry
        .max_attempts
}

/// Waits (bounded) until `cond` holds; false when the deadline passed.
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Writes through a temporary file renamed over `path`, as editors do.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn loads_answers_with_source_file_and_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.toml");
    std::fs::write(&path, doc(4)).unwrap();
    let p = FileProvider::builder(&path)
        .watch(Watch::Off)
        .build()
        .unwrap();
    let found = p.policy(PolicyKey::parse("svc.Get")).unwrap();
    assert_eq!(found.source, PolicySource::File);
    assert_eq!(found.policy.policy.retry.max_attempts, 4);
    let other = p.policy(PolicyKey::parse("svc.Put")).unwrap();
    assert_eq!(other.source, PolicySource::Default);
    assert_eq!(other.policy.policy.retry.max_attempts, 2);
    assert_eq!(p.stats().generation, 1);
    // Same contents again: nothing applied.
    assert!(!p.reload().unwrap());
    assert_eq!(p.stats().generation, 1);
}

#[test]
fn a_bad_first_document_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.toml");
    std::fs::write(&path, "[policies.\"svc.Get\".retry]\nmax_attempts = -1\n").unwrap();
    let e = FileProvider::open(&path).unwrap_err();
    assert_eq!(e.file.as_deref(), Some(path.as_path()));
    assert_eq!(e.field.as_deref(), Some("retry.max_attempts"));
    let missing = FileProvider::open(dir.path().join("nope.toml")).unwrap_err();
    assert!(missing.message.contains("cannot read"), "{missing}");
}

fn watched_edits_apply_and_bad_edits_keep_the_last_good(watch: Watch) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.toml");
    std::fs::write(&path, doc(4)).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let p = FileProvider::builder(&path)
        .watch(watch)
        .poll_interval(Duration::from_millis(20))
        .on_reload(move |e| seen.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    assert_eq!(attempts(&p), 4);

    // An in-place edit.
    std::fs::write(&path, doc(5)).unwrap();
    assert!(
        wait_for(|| attempts(&p) == 5),
        "edit not applied: {:?}",
        p.stats()
    );

    // A bad edit: counted, reported with file/key/field, nothing changes.
    // Written aside and renamed over, so that no watcher can read it half
    // written (a half-written file is a different error, or none).
    write_atomically(&path, &doc(6).replace("\"1ms\"", "\"1\""));
    // (The in-place edit above may have been read half written once:
    // wait for this edit's own error.)
    assert!(
        wait_for(
            || p.stats().rejected >= 1 && p.stats().last_error.is_some_and(|e| e.key.is_some())
        ),
        "bad edit not seen: {:?}",
        p.stats()
    );
    assert_eq!(attempts(&p), 5, "the last good document keeps serving");
    let stats = p.stats();
    let e = stats.last_error.unwrap();
    assert_eq!(e.file.as_deref(), Some(path.as_path()));
    assert_eq!(e.key.as_deref(), Some("svc.Get"));
    assert_eq!(e.field.as_deref(), Some("retry.initial_backoff"));
    assert_eq!(e.line, Some(6));

    // An editor-style replace (write aside, rename over).
    write_atomically(&path, &doc(7));
    assert!(
        wait_for(|| attempts(&p) == 7),
        "rename not applied: {:?}",
        p.stats()
    );
    assert_eq!(p.stats().last_error, None);

    // An empty file (an in-place write caught half-way) is rejected.
    std::fs::write(&path, "").unwrap();
    assert!(p.reload().unwrap_err().message.contains("empty file"));
    assert_eq!(attempts(&p), 7);

    // The file going away keeps the last good document too.
    std::fs::remove_file(&path).unwrap();
    assert!(p.reload().is_err());
    assert_eq!(attempts(&p), 7);

    let events = events.lock().unwrap();
    assert!(matches!(
        events[0],
        ReloadEvent::Applied {
            generation: 1,
            keys: 1,
            ..
        }
    ));
    assert!(events
        .iter()
        .any(|e| matches!(e, ReloadEvent::Rejected { .. })));
}

#[test]
fn notify_watcher_applies_edits_and_keeps_the_last_good() {
    watched_edits_apply_and_bad_edits_keep_the_last_good(Watch::Notify);
}

#[test]
fn poll_watcher_applies_edits_and_keeps_the_last_good() {
    watched_edits_apply_and_bad_edits_keep_the_last_good(Watch::Poll);
}

#[test]
fn readers_never_see_a_mix_while_documents_swap() {
    // Two keys always written together with equal values: a reader that saw
    // different values would have seen half a document.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.json");
    let write = |n: u32| {
        std::fs::write(
            &path,
            format!(
                r#"{{"policies":{{"a.A":{{"retry":{{"max_attempts":{n}}}}},"b.B":{{"retry":{{"max_attempts":{n}}}}}}}}}"#
            ),
        )
        .unwrap();
    };
    write(1);
    let p = Arc::new(
        FileProvider::builder(&path)
            .watch(Watch::Off)
            .build()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (p, stop, reads) = (Arc::clone(&p), Arc::clone(&stop), Arc::clone(&reads));
            std::thread::spawn(move || {
                let mut torn = 0;
                while !stop.load(Ordering::Relaxed) {
                    let a = p
                        .policy(PolicyKey::parse("a.A"))
                        .unwrap()
                        .policy
                        .policy
                        .retry
                        .max_attempts;
                    let b = p
                        .policy(PolicyKey::parse("b.B"))
                        .unwrap()
                        .policy
                        .policy
                        .retry
                        .max_attempts;
                    // b is read after a, and values only grow.
                    if b < a {
                        torn += 1;
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                torn
            })
        })
        .collect();
    for n in 2..=10 {
        write(n);
        assert!(p.reload().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert_eq!(r.join().unwrap(), 0);
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(p.stats().generation, 10);
}

#[test]
fn calls_through_an_executor_say_policy_source_file_and_see_edits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.toml");
    std::fs::write(&path, doc(4)).unwrap();
    let p = Arc::new(
        FileProvider::builder(&path)
            .watch(Watch::Off)
            .build()
            .unwrap(),
    );
    let exec = Executor::builder().provider(Arc::clone(&p)).seed(1).build();
    let run = || {
        async_io::block_on(
            exec.call_with_timeline("svc.Get", |_: AttemptInfo| async { Err::<(), _>("down") }),
        )
    };
    let (_, timeline) = run();
    assert_eq!(timeline.attribute("policy_source"), Some("file"));
    assert_eq!(timeline.attempts.len(), 4);
    std::fs::write(&path, doc(50)).unwrap();
    assert!(p.reload().unwrap());
    let (_, timeline) = run();
    assert_eq!(timeline.attempts.len(), 10);
    assert_eq!(
        timeline.attribute("policy_clamped_fields"),
        Some("retry.max_attempts")
    );
}

#[test]
fn a_lookup_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.toml");
    std::fs::write(&path, doc(4)).unwrap();
    let p = FileProvider::builder(&path)
        .watch(Watch::Off)
        .build()
        .unwrap();
    // Warm-up: arc-swap's per-thread debt slot.
    let _ = attempts(&p);
    let info = allocation_counter::measure(|| {
        for _ in 0..1000 {
            assert_eq!(attempts(&p), 4);
            let _ = p.policy(PolicyKey::parse("svc.Other")).unwrap();
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
}

#[test]
fn many_providers_on_one_thread_each_answer_their_own_current_document() {
    // More providers than a thread keeps snapshots of: each still answers
    // its own document, and a reload of one is seen at once.
    let dir = tempfile::tempdir().unwrap();
    let providers: Vec<_> = (1..=6u32)
        .map(|n| {
            let path = dir.path().join(format!("p{n}.toml"));
            std::fs::write(&path, doc(n)).unwrap();
            (
                path.clone(),
                FileProvider::builder(&path)
                    .watch(Watch::Off)
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    for round in 0..3 {
        for (n, (_, p)) in (1..).zip(&providers) {
            assert_eq!(attempts(p), n, "round {round}");
        }
    }
    let (path, p) = &providers[2];
    std::fs::write(path, doc(9)).unwrap();
    assert!(p.reload().unwrap());
    assert_eq!(attempts(p), 9);
    assert_eq!(attempts(&providers[1].1), 2);
    // And from another thread.
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(attempts(&providers[2].1), 9);
            assert_eq!(attempts(&providers[5].1), 6);
        });
    });
}
