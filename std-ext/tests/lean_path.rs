//! A call pays only for what it decides (issue 16): what a key's policy
//! asks of the gate (budgets, breaker, latency samples, amplification
//! bound, upstream attempts, a named classifier) is worked out once when
//! the key resolves, and whether anybody hears the call (an observer, a
//! timeline) once per call. These tests pin what those shortcuts rely on:
//! a provider's update that turns a collaborator on reaches the very next
//! call, an observer or a timeline hears every event, and the shortcuts
//! change no result.

mod common;
use common::{poll_once, JumpClock};

use core::future::ready;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use recourse::core_machine::{Budget, BudgetRequest, Decision};
use recourse::observer::{AttemptRecord, BudgetDecision, CallStart, CallSummary};
use recourse::policy::UpstreamRetry;
use recourse::provider::{PolicyLookup, PolicySource, ProviderError};
use recourse::{
    AttemptInfo, BudgetRegistry, ClassifierRegistry, Error, Executor, Observer, Outcome, Policy,
    PolicyKey, PolicyProvider,
};
use recourse_core::policy::Normalized;

fn normalized(p: Policy) -> Arc<Normalized> {
    Arc::new(p.normalize().expect("a valid policy"))
}

fn retries(n: u32) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = n;
    p
}

/// One policy for every key, replaced by `set` (which then moves the
/// generation): answers are cached between updates.
struct Swappable {
    policy: Mutex<Arc<Normalized>>,
    generation: AtomicU64,
}

impl Swappable {
    fn new(policy: Policy) -> Arc<Self> {
        Arc::new(Self {
            policy: Mutex::new(normalized(policy)),
            generation: AtomicU64::new(0),
        })
    }

    fn set(&self, policy: Policy) {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) = normalized(policy);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl PolicyProvider for Swappable {
    fn policy(&self, _: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        Ok(PolicyLookup {
            policy: Arc::clone(&self.policy.lock().unwrap_or_else(PoisonError::into_inner)),
            source: PolicySource::Remote,
        })
    }

    fn generation(&self) -> Option<u64> {
        Some(self.generation.load(Ordering::Acquire))
    }
}

/// Counts its decisions; refuses every attempt past `allow`.
struct Counted {
    decided: AtomicU64,
    allow: u64,
}

impl Budget for Counted {
    fn decide(&self, _: &BudgetRequest<'_>) -> Decision {
        let n = self.decided.fetch_add(1, Ordering::SeqCst);
        if n < self.allow {
            Decision::ALLOW
        } else {
            Decision::DENY
        }
    }
}

/// Attempts of one call of `key` whose every attempt fails.
fn attempts_of(exec: &Executor<JumpClock>, key: &str) -> (u32, Result<(), Error<&'static str>>) {
    let mut n = 0;
    let result = poll_once(exec.call(key, |_| {
        n += 1;
        ready(Err("down"))
    }));
    (n, result)
}

#[test]
fn a_key_resolved_without_a_budget_pays_the_budget_named_by_an_update() {
    static BUDGET: Counted = Counted {
        decided: AtomicU64::new(0),
        allow: 2,
    };
    let provider = Swappable::new(retries(3));
    let recorder = Arc::new(Recorder::default());
    let exec = Executor::builder()
        .provider(Arc::clone(&provider))
        .budgets(BudgetRegistry::new().with("b", &BUDGET))
        .observer(Arc::clone(&recorder))
        .timer(JumpClock::default())
        .build();
    let budget_events = || {
        recorder
            .events()
            .into_iter()
            .filter(|e| e.starts_with("budget"))
            .collect::<Vec<_>>()
    };
    // No budget named: three attempts, the budget never asked.
    for _ in 0..3 {
        assert_eq!(attempts_of(&exec, "svc.A").0, 3);
    }
    assert_eq!(BUDGET.decided.load(Ordering::SeqCst), 0);
    assert!(budget_events().is_empty());

    // The update names it: the very next call asks it for every attempt,
    // and it refuses the third.
    provider.set(retries(3).budget("b").expect("a budget name"));
    let (n, result) = attempts_of(&exec, "svc.A");
    assert_eq!(n, 2, "the budget refused the third attempt");
    assert!(result.is_err());
    assert_eq!(BUDGET.decided.load(Ordering::SeqCst), 3);
    // The observer heard each decision as it happened.
    assert_eq!(
        budget_events(),
        [
            "budget b true allowed",
            "budget b true allowed",
            "budget b false budget_denied"
        ]
    );

    // And back: nothing asked again.
    provider.set(retries(3));
    assert_eq!(attempts_of(&exec, "svc.A").0, 3);
    assert_eq!(BUDGET.decided.load(Ordering::SeqCst), 3);
}

#[test]
fn a_key_resolved_without_a_breaker_gets_the_breaker_an_update_turns_on() {
    let provider = Swappable::new(retries(1));
    let exec = Executor::builder()
        .provider(Arc::clone(&provider))
        .timer(JumpClock::default())
        .build();
    for _ in 0..5 {
        assert_eq!(attempts_of(&exec, "svc.A").0, 1);
    }
    let mut guarded = retries(1);
    guarded.circuit.enabled = true;
    guarded.circuit.threshold = 1;
    provider.set(guarded);
    // One failure opens it; the next call is refused without running.
    assert_eq!(attempts_of(&exec, "svc.A").0, 1);
    let (n, refused) = attempts_of(&exec, "svc.A");
    assert_eq!(n, 0);
    assert!(
        matches!(refused, Err(Error::CircuitOpen { .. })),
        "{refused:?}"
    );
}

#[test]
fn a_classifier_named_by_an_update_decides_the_next_call_and_its_panic_is_contained() {
    let classifiers = ClassifierRegistry::new()
        .with("final", |_: &Result<(), &'static str>| {
            Outcome::non_retryable("final")
        })
        .with("broken", |_: &Result<(), &'static str>| -> Outcome {
            panic!("the classifier is broken")
        });
    let provider = Swappable::new(retries(3));
    let exec = Executor::builder()
        .provider(Arc::clone(&provider))
        .classifiers(classifiers)
        .timer(JumpClock::default())
        .build();
    // The default classifier (no name): `Err` retries.
    assert_eq!(attempts_of(&exec, "svc.A").0, 3);

    let mut named = retries(3);
    named.retry.classifier = "final".try_into().expect("a classifier name");
    provider.set(named);
    assert_eq!(attempts_of(&exec, "svc.A").0, 1, "non-retryable");

    // A classifier that panics is contained (the default one runs bare).
    let mut broken = retries(3);
    broken.retry.classifier = "broken".try_into().expect("a classifier name");
    provider.set(broken);
    let (result, timeline) = poll_once(exec.call_with_timeline("svc.A", |_| ready(Err("down"))));
    let result: Result<(), Error<&str>> = result;
    assert!(result.is_err());
    assert_eq!(timeline.attempts.len(), 1);
    assert_eq!(timeline.attempts[0].outcome.reason, "panic_in_classifier");
    assert_eq!(
        timeline
            .attributes
            .get("panic_in_classifier")
            .map(String::as_str),
        Some("the classifier is broken")
    );
}

#[test]
fn an_upstream_rule_named_by_an_update_reaches_the_next_call() {
    let provider = Swappable::new(retries(3));
    let exec = Executor::builder()
        .provider(Arc::clone(&provider))
        .timer(JumpClock::default())
        .build();
    let under_retry = |exec: &Executor<JumpClock>| {
        let mut n = 0;
        let call = exec.call("svc.A", |_| {
            n += 1;
            ready(Err::<(), _>("down"))
        });
        let _ = poll_once(recourse::upstream::scope(Some(1), call));
        n
    };
    // `always` (the default): the upstream retry changes nothing.
    assert_eq!(under_retry(&exec), 3);
    let mut single = retries(3);
    single.amplification.upstream_retry = UpstreamRetry::NotWhenRetry;
    provider.set(single);
    assert_eq!(under_retry(&exec), 1, "one attempt under an upstream retry");
    // Outside an upstream retry the policy's own attempts.
    assert_eq!(attempts_of(&exec, "svc.A").0, 3);
}

/// Every event, as a line.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn push(&self, line: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    fn events(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Observer for Recorder {
    fn on_start(&self, key: PolicyKey<'_>, start: &CallStart) {
        self.push(format!("start {key} {}", start.start.as_nanos()));
    }
    fn on_launch(&self, _: PolicyKey<'_>, info: &AttemptInfo) {
        self.push(format!("launch {}", info.id.0));
    }
    fn on_attempt(&self, _: PolicyKey<'_>, r: &AttemptRecord) {
        self.push(format!(
            "attempt {} {} {}..{} backoff {:?}",
            r.info.id.0,
            r.outcome.reason,
            r.start.as_nanos(),
            r.end.as_nanos(),
            r.backoff
        ));
    }
    fn on_budget_decision(&self, _: PolicyKey<'_>, d: &BudgetDecision<'_>) {
        self.push(format!("budget {} {} {}", d.budget, d.allowed, d.reason));
    }
    fn on_success(&self, key: PolicyKey<'_>, s: &CallSummary) {
        self.push(format!("success {key} {}", s.attempts));
    }
    fn on_failure(&self, key: PolicyKey<'_>, s: &CallSummary) {
        self.push(format!(
            "failure {key} {} {}",
            s.attempts,
            s.reason().unwrap_or("-")
        ));
    }
}

/// The same seeded calls (jittered backoff, a flaky operation) on an
/// executor nobody hears, one with an observer, and with a timeline.
#[test]
fn the_same_seeded_calls_give_the_same_results_heard_or_not() {
    let mut policy = retries(4);
    policy.retry.initial_backoff = core::time::Duration::from_millis(10);
    let build = |observer: Option<Arc<Recorder>>| {
        let provider = Swappable::new(policy.clone());
        let b = Executor::builder()
            .provider(provider)
            .timer(JumpClock::default())
            .seed(7);
        match observer {
            Some(o) => b.observer(o).build(),
            None => b.build(),
        }
    };
    let recorder = Arc::new(Recorder::default());
    let quiet = build(None);
    let heard = build(Some(Arc::clone(&recorder)));
    let timed = build(None);
    // Call `i` fails its first `i % 5` attempts.
    let run = |exec: &Executor<JumpClock>, i: u32, timeline: bool| {
        let mut n = 0;
        let op = |_| {
            n += 1;
            ready(if n <= i % 5 { Err("down") } else { Ok(n) })
        };
        if timeline {
            let (r, t) = poll_once(exec.call_with_timeline("svc.A", op));
            (r, Some(t))
        } else {
            (poll_once(exec.call("svc.A", op)), None)
        }
    };
    let mut heard_attempts = 0;
    for i in 0..20 {
        let (q, _) = run(&quiet, i, false);
        let before = recorder.events().len();
        let (h, _) = run(&heard, i, false);
        let (t, timeline) = run(&timed, i, true);
        let timeline = timeline.expect("a timeline");
        assert_eq!(q, h, "call {i}");
        assert_eq!(q, t, "call {i}");
        // The observer heard the whole call: a start, a launch and an
        // attempt per attempt, one end; the timeline holds the same
        // attempts at the same instants (each executor's clock started at
        // zero and slept the same seeded backoffs).
        let events = &recorder.events()[before..];
        let attempts = i % 5 + 1;
        let made = attempts.min(4) as usize;
        heard_attempts += made;
        assert_eq!(events.len(), 2 + 2 * made, "call {i}: {events:?}");
        assert!(events[0].starts_with("start svc.A"), "{events:?}");
        assert_eq!(
            events.iter().filter(|e| e.starts_with("launch")).count(),
            made
        );
        let heard_records: Vec<&String> =
            events.iter().filter(|e| e.starts_with("attempt")).collect();
        assert_eq!(timeline.attempts.len(), made);
        for (line, r) in heard_records.iter().zip(&timeline.attempts) {
            let told = format!(
                "attempt {} {} {}..{} backoff {:?}",
                r.info.id.0,
                r.outcome.reason,
                r.start.as_nanos(),
                r.end.as_nanos(),
                r.backoff
            );
            assert_eq!(**line, told, "call {i}");
        }
        let end = events.last().expect("an end");
        if q.is_ok() {
            assert_eq!(*end, format!("success svc.A {made}"));
        } else {
            assert!(end.starts_with(&format!("failure svc.A {made}")), "{end}");
        }
    }
    assert!(heard_attempts > 20);
}
