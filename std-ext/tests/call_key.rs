//! [`CallKey`]: a key kept at the call site that keeps its key's answer
//! itself (issue 16). A call with it runs under exactly the policy a call
//! with the key's text runs under: the provider is asked once, an update
//! reaches the very next call (and every call after it), two executors
//! never share an answer, a provider that cannot say when it changes is
//! asked on every call, a breaker the store evicted is not used, the
//! observer hears the key as its text parses, and the call allocates
//! nothing.

mod common;
use common::{executor, normalized_attempts, poll_once, JumpClock, Recorder, Swappable};

use core::future::ready;
use std::sync::Arc;

use recourse::{Breakers, CallKey, Error, Executor, Policy, StaticProvider};

/// Attempts a call with `key` made when every attempt fails.
fn attempts_of(exec: &Executor<JumpClock>, key: &CallKey) -> u32 {
    let mut n = 0;
    let result: Result<(), Error<&str>> = poll_once(exec.call_key(key, |_| {
        n += 1;
        ready(Err("down"))
    }));
    assert!(result.is_err());
    n
}

#[test]
fn a_call_key_is_asked_once_and_every_update_reaches_the_next_call() {
    let provider = Swappable::new(normalized_attempts(1), true);
    let exec = executor(Arc::clone(&provider));
    let key = CallKey::new("svc.A");
    assert_eq!(key.as_str(), "svc.A");
    for _ in 0..10 {
        assert_eq!(attempts_of(&exec, &key), 1);
    }
    assert_eq!(provider.asked(), 1, "answered from the handle");
    // The handle's answer serves every thread: another thread's first call
    // with it asks nothing (with the key's text, it would ask for its own
    // per-thread cache).
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(attempts_of(&exec, &key), 1));
    });
    assert_eq!(
        provider.asked(),
        1,
        "answered from the handle on another thread"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0;
            let by_text: Result<(), Error<&str>> = poll_once(exec.call("svc.A", |_| {
                n += 1;
                ready(Err("down"))
            }));
            assert!(by_text.is_err());
        });
    });
    assert_eq!(provider.asked(), 2, "a text key asks once per thread");

    // Each update reaches the very next call, and the one after it: the
    // handle's own answer is not used once the generation moved.
    for n in [3, 2, 4] {
        provider.set(normalized_attempts(n));
        assert_eq!(attempts_of(&exec, &key), n);
        assert_eq!(attempts_of(&exec, &key), n);
    }
    // The key's text names the same answers.
    let mut calls = 0;
    let by_text: Result<(), Error<&str>> = poll_once(exec.call("svc.A", |_| {
        calls += 1;
        ready(Err("down"))
    }));
    assert!(by_text.is_err());
    assert_eq!(calls, 4);

    // A handle made after the updates keeps the current answer (for
    // every thread).
    let fresh = CallKey::owned(String::from("svc.A"));
    let asked = provider.asked();
    assert_eq!(attempts_of(&exec, &fresh), 4);
    assert_eq!(attempts_of(&exec, &fresh), 4);
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(attempts_of(&exec, &fresh), 4));
    });
    assert_eq!(provider.asked(), asked + 1);

    // Another thread sees the same answers through the same handle.
    provider.set(normalized_attempts(2));
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(attempts_of(&exec, &fresh), 2));
    });
    assert_eq!(attempts_of(&exec, &fresh), 2);
}

#[test]
fn a_static_call_key_is_shared_by_threads_that_start_at_once() {
    static KEY: CallKey = CallKey::new("svc.Shared");
    let provider = Swappable::new(normalized_attempts(3), true);
    let exec = executor(Arc::clone(&provider));
    let barrier = std::sync::Barrier::new(4);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..50 {
                    assert_eq!(attempts_of(&exec, &KEY), 3);
                }
            });
        }
    });
    // Threads that missed the handle's first answer asked for their own
    // (at most once each: then their per-thread cache, or the handle).
    assert!((1..=4).contains(&provider.asked()), "{}", provider.asked());
}

#[test]
fn a_provider_without_a_generation_is_asked_on_every_call_with_a_call_key() {
    let provider = Swappable::new(normalized_attempts(1), false);
    let exec = executor(Arc::clone(&provider));
    let key = CallKey::new("svc.A");
    for i in 1..=5 {
        assert_eq!(attempts_of(&exec, &key), 1);
        assert_eq!(provider.asked(), i);
    }
    provider.set(normalized_attempts(4));
    assert_eq!(attempts_of(&exec, &key), 4);
}

#[test]
fn two_executors_never_share_a_call_keys_answer() {
    let one = executor(Swappable::new(normalized_attempts(1), true));
    let four = executor(Swappable::new(normalized_attempts(4), true));
    let key = CallKey::new("svc.Same");
    for _ in 0..3 {
        assert_eq!(attempts_of(&one, &key), 1);
        assert_eq!(attempts_of(&four, &key), 4);
    }
    // A clone starts without an answer: the executor it first runs on
    // keeps it.
    let clone = key.clone();
    assert_eq!(attempts_of(&four, &clone), 4);
    assert_eq!(attempts_of(&one, &clone), 1);
}

#[test]
fn a_key_that_parsing_trims_runs_under_its_policy_with_a_call_key() {
    // Not kept in the handle (its text is not the parsed key's), asked
    // through the per-thread path: the same policy.
    let provider = StaticProvider::builder()
        .policy("svc.Get", {
            let mut p = Policy::DEFAULT;
            p.retry.max_attempts = 2;
            p
        })
        .unwrap()
        .build();
    let exec = executor(provider);
    let key = CallKey::new(" svc . Get ");
    assert_eq!(attempts_of(&exec, &key), 2);
    assert_eq!(attempts_of(&exec, &key), 2);
}

#[test]
fn a_breaker_evicted_from_the_store_is_not_used_through_a_call_key() {
    let mut guarded = Policy::DEFAULT;
    guarded.retry.max_attempts = 1;
    guarded.circuit.enabled = true;
    guarded.circuit.threshold = 2;
    let provider = StaticProvider::builder()
        .default_policy(guarded)
        .unwrap()
        .build();
    let exec = Executor::builder()
        .provider(provider)
        .breakers(Breakers::new(1))
        .timer(JumpClock::default())
        .build();
    let (a, b) = (CallKey::new("svc.a"), CallKey::new("svc.b"));
    // One failure of `a` (threshold 2), then `b` takes the store's only
    // place: `a`'s breaker is evicted.
    assert_eq!(attempts_of(&exec, &a), 1);
    assert_eq!(attempts_of(&exec, &b), 1);
    // `a` gets a new breaker, so one more failure does not open it...
    assert_eq!(attempts_of(&exec, &a), 1);
    // ...and the second does.
    assert_eq!(attempts_of(&exec, &a), 1);
    let refused: Result<(), Error<&str>> = poll_once(exec.call_key(&a, |_| ready(Ok(()))));
    assert!(
        matches!(refused, Err(Error::CircuitOpen { .. })),
        "{refused:?}"
    );
}

#[test]
fn the_observer_hears_a_call_keys_calls_as_the_texts() {
    let recorder = Arc::new(Recorder::default());
    let exec = Executor::builder()
        .observer(Arc::clone(&recorder))
        .timer(JumpClock::default())
        .build();
    let key = CallKey::new("svc.Heard");
    for _ in 0..2 {
        let by_key: Result<u32, Error<()>> = poll_once(exec.call_key(&key, |_| ready(Ok(1))));
        assert_eq!(by_key, Ok(1));
    }
    let by_text: Result<u32, Error<()>> = poll_once(exec.call("svc.Heard", |_| ready(Ok(1))));
    assert_eq!(by_text, Ok(1));
    let events = recorder.events();
    let one = ["start svc.Heard", "attempt 0 success", "success svc.Heard"];
    assert_eq!(events, [one, one, one].concat(), "{events:?}");
}

/// A static key's answer keeps the parsed key itself, an owned key's
/// cuts it out of its text on each call: both are heard as the text
/// parses (with and without a namespace, with a dot in the name), on the
/// call that keeps the answer and on the calls that read it.
#[test]
fn static_and_owned_call_keys_are_heard_as_their_texts_on_every_call() {
    for text in ["svc.Heard", "Whole", "ns.a.b"] {
        let heard = |key: &CallKey| {
            let recorder = Arc::new(Recorder::default());
            let exec = Executor::builder()
                .observer(Arc::clone(&recorder))
                .timer(JumpClock::default())
                .build();
            for _ in 0..3 {
                let r: Result<u32, Error<()>> = poll_once(exec.call_key(key, |_| ready(Ok(1))));
                assert_eq!(r, Ok(1));
            }
            let by_text: Result<u32, Error<()>> = poll_once(exec.call(text, |_| ready(Ok(1))));
            assert_eq!(by_text, Ok(1));
            recorder.events()
        };
        let static_key = CallKey::new(text);
        let one = [
            format!("start {text}"),
            "attempt 0 success".to_string(),
            format!("success {text}"),
        ];
        let want = [one.clone(), one.clone(), one.clone(), one].concat();
        assert_eq!(heard(&static_key), want, "static {text}");
        assert_eq!(heard(&CallKey::owned(text)), want, "owned {text}");
    }
}

#[test]
fn a_call_with_a_call_key_does_not_allocate() {
    let provider = StaticProvider::builder()
        .policy("svc.Flaky", Policy::DEFAULT)
        .unwrap()
        .build();
    let exec = executor(provider);
    let key = CallKey::new("svc.Flaky");
    let flaky = || {
        let mut n = 0;
        poll_once(exec.call_key(&key, move |_| {
            n += 1;
            ready(if n < 3 { Err("reset") } else { Ok(n) })
        }))
    };
    // The first call keeps the answer (and warms thread-locals) outside
    // the count.
    assert_eq!(flaky(), Ok(3));
    let mut result = Ok(0);
    let info = allocation_counter::measure(|| result = flaky());
    assert_eq!(result, Ok(3));
    assert_eq!(info.count_total, 0, "{info:?}");
}

#[tokio::test(start_paused = true)]
async fn do_value_key_runs_on_the_default_executor() {
    static KEY: CallKey = CallKey::new("facade.Key");
    let mut failures = 1;
    let value = recourse::do_value_key(&KEY, |_| {
        let fail = failures > 0;
        failures -= 1;
        async move {
            if fail {
                Err("busy")
            } else {
                Ok("done")
            }
        }
    })
    .await;
    assert_eq!(value, Ok("done"));
}

/// Issue 16: a call whose policy does nothing with the attempts made
/// upstream does not read them (decided once per key, in the key's
/// answer). A policy update that makes them matter reaches the very next
/// call, with a key's text and with a `CallKey`.
#[test]
fn an_update_that_makes_upstream_attempts_matter_reaches_the_next_call() {
    let provider = Swappable::new(normalized_attempts(3), true);
    let exec = executor(Arc::clone(&provider));
    let key = CallKey::new("svc.Up");
    // A request that is itself a retry upstream (one attempt made above).
    let upstream_retry = |f: &dyn Fn() -> u32| recourse::upstream::with_current(Some(1), f);
    let text = || {
        let mut n = 0;
        let result: Result<(), Error<&str>> = poll_once(exec.call("svc.Up", |_| {
            n += 1;
            ready(Err("down"))
        }));
        assert!(result.is_err());
        n
    };
    // `always` (the default): the policy's three attempts, upstream or not.
    assert_eq!(upstream_retry(&|| attempts_of(&exec, &key)), 3);
    assert_eq!(upstream_retry(&text), 3);
    // `not_when_retry`: a request that is a retry upstream runs once, from
    // the very next call on.
    let mut policy = common::attempts(3);
    policy.amplification.upstream_retry = recourse::upstream::UpstreamRetry::NotWhenRetry;
    provider.set(Arc::new(policy.normalize().expect("valid")));
    assert_eq!(upstream_retry(&|| attempts_of(&exec, &key)), 1);
    assert_eq!(upstream_retry(&text), 1);
    // ...and one that is not runs the policy's three.
    assert_eq!(attempts_of(&exec, &key), 3);
    assert_eq!(text(), 3);
    // Back to `always`: three again.
    provider.set(normalized_attempts(3));
    assert_eq!(upstream_retry(&|| attempts_of(&exec, &key)), 3);
    assert_eq!(upstream_retry(&text), 3);
    assert_eq!(
        exec.policy_fallbacks(),
        0,
        "every call ran its key's own policy"
    );
}

/// Issue 16: a call under a fallback policy is counted as one on every
/// call, also when its key's answer is kept (whether it is a fallback is
/// decided once per key, in the key's answer).
#[test]
fn fallback_calls_are_counted_on_every_call() {
    let exec = Executor::builder().timer(JumpClock::default()).build();
    let key = CallKey::new("svc.Missing");
    for n in 1..=5 {
        let ok: Result<u32, Error<()>> = poll_once(exec.call_key(&key, |_| ready(Ok(1))));
        assert_eq!(ok, Ok(1));
        let ok: Result<u32, Error<()>> = poll_once(exec.call("svc.Missing", |_| ready(Ok(1))));
        assert_eq!(ok, Ok(1));
        assert_eq!(exec.policy_fallbacks(), 2 * n);
    }
}
