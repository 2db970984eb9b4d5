//! Shared helpers for the integration tests in `tests/`.
//!
//! - [`DropCounter`] counts live attempt futures: wrap each attempt with
//!   [`DropCounter::wrap`] and check [`DropCounter::live`] is back to 0 once
//!   the call is over or dropped.
//! - [`Recorder`] is an [`Observer`] that logs every event, so a test can
//!   assert the exact sequence a call reported.
//! - [`hang`] is an attempt that never completes.
//! - [`conformance`] is the one suite every runtime adapter must pass; each
//!   runtime's test file runs it with its own [`Timer`](recourse_core::Timer).
//! - [`invariants`] drives the call machine through arbitrary scenarios and
//!   checks its invariants after every step; `tests/machine_invariants.rs`
//!   runs it as a property test and `fuzz/` under libFuzzer.
//! - [`executor_model`] runs the std executor on tokio's paused clock under
//!   arbitrary policies, operations, panics and missing pieces and checks
//!   its contracts; `tests/executor_model.rs` runs it as a property test and
//!   `fuzz/` (`executor`) under libFuzzer.
//! - [`hedged`] counts the attempt futures, observer events and budget
//!   states of many hedged calls through the executor on a real runtime.

use core::fmt::Write as _;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::{Arc, Mutex, MutexGuard};

use recourse_core::policy::RetryPolicy;
use recourse_core::{AttemptRecord, CallEnd, Cause, Instant, Observer, Policy, PolicyKey, Verdict};

pub mod conformance;
pub mod executor_model;
pub mod hedged;
pub mod invariants;
pub mod load;

/// The key every test call uses.
pub const KEY: PolicyKey<'static> = PolicyKey::new("svc", "Get");

/// `n` milliseconds.
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The instant `n` milliseconds after a timer's epoch.
pub const fn at(n: u64) -> Instant {
    Instant::from_millis(n)
}

/// [`Policy::DEFAULT`] with its retry section changed by `edit`, normalized.
///
/// Panics if normalization had to change a field: a test must run the policy
/// it spells out, not a clamped one.
pub fn policy(edit: impl FnOnce(&mut RetryPolicy)) -> Policy {
    let mut p = Policy::DEFAULT;
    edit(&mut p.retry);
    let n = p.normalize().expect("test policy is valid");
    assert!(
        n.changed.is_empty(),
        "normalization changed the test policy: {}",
        n.changed
    );
    n.policy
}

/// An attempt that never completes (`core::future::pending`).
pub fn hang<T>() -> core::future::Pending<T> {
    core::future::pending()
}

/// Counts attempt futures: how many were made and how many are still alive.
///
/// Clones share the counts, so one counter can be moved into an operation
/// closure (even across threads) and read by the test.
#[derive(Clone, Debug, Default)]
pub struct DropCounter(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    live: AtomicUsize,
    created: AtomicUsize,
}

impl DropCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps `fut`: counted as created and live from now, live until the
    /// wrapper is dropped (completed or not, polled or not).
    pub fn wrap<F: Future>(&self, fut: F) -> Counted<F> {
        self.0.created.fetch_add(1, Ordering::SeqCst);
        self.0.live.fetch_add(1, Ordering::SeqCst);
        Counted {
            fut: Box::pin(fut),
            _guard: LiveGuard(self.0.clone()),
        }
    }

    /// Wrapped futures not yet dropped.
    pub fn live(&self) -> usize {
        self.0.live.load(Ordering::SeqCst)
    }

    /// Futures wrapped so far (the operation's call count, when every
    /// attempt is wrapped).
    pub fn created(&self) -> usize {
        self.0.created.load(Ordering::SeqCst)
    }
}

/// A future counted by a [`DropCounter`] while it is alive.
#[must_use = "futures do nothing unless polled"]
pub struct Counted<F> {
    fut: Pin<Box<F>>,
    _guard: LiveGuard,
}

impl<F> core::fmt::Debug for Counted<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Counted")
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.fut.as_mut().poll(cx)
    }
}

/// Decrements the live count when dropped.
#[derive(Debug)]
struct LiveGuard(Arc<Counts>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One observer event, as a [`Recorder`] saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// `on_start`, with the key (as `ns.name`) and the start instant.
    Start(String, Instant),
    /// `on_attempt`.
    Attempt(AttemptRecord),
    /// `on_success`.
    Success(CallEnd),
    /// `on_failure`.
    Failure(CallEnd),
}

impl Seen {
    /// A one-line summary with times in milliseconds from the timer's epoch
    /// (to the microsecond), for exact sequence assertions.
    pub fn line(&self) -> String {
        let t = |i: Instant| format_ms(i.since_epoch());
        match self {
            Self::Start(key, start) => format!("start {key} @{}", t(*start)),
            Self::Attempt(r) => {
                let mut s = format!(
                    "attempt {} {} {}..{} backoff {}",
                    r.info.id.0,
                    r.outcome.reason,
                    t(r.start),
                    t(r.end),
                    format_ms(r.backoff)
                );
                if r.cancelled {
                    s.push_str(" cancelled");
                }
                s
            }
            Self::Success(end) => format!("success after {} @{}", end.attempts, t(end.end)),
            Self::Failure(end) => {
                let cause = match end.verdict {
                    Verdict::Failure { cause, .. } => cause.as_str(),
                    Verdict::Success(_) => "<success verdict!>",
                };
                format!("failure {cause} after {} @{}", end.attempts, t(end.end))
            }
        }
    }
}

/// `d` in milliseconds, with up to three decimals: `5`, `2005`, `30.25`.
fn format_ms(d: Duration) -> String {
    let us = d.as_micros();
    let mut s = format!("{}", us / 1000);
    if us % 1000 != 0 {
        let frac = format!("{:03}", us % 1000);
        let _ = write!(s, ".{}", frac.trim_end_matches('0'));
    }
    s
}

/// An [`Observer`] that logs every event in order.
///
/// Clones share the log: give the call a clone and read the original, also
/// after the call future was dropped or from another thread.
#[derive(Clone, Debug, Default)]
pub struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn log(&self) -> MutexGuard<'_, Vec<Seen>> {
        // A panic while holding the lock is a test failure already; the log
        // itself is still readable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Seen> {
        self.log().clone()
    }

    /// Every event so far, as [`Seen::line`]s.
    pub fn lines(&self) -> Vec<String> {
        self.log().iter().map(Seen::line).collect()
    }

    /// The attempt records so far.
    pub fn attempts(&self) -> Vec<AttemptRecord> {
        self.log()
            .iter()
            .filter_map(|e| match e {
                Seen::Attempt(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    /// How the call ended, if it has.
    pub fn end(&self) -> Option<Seen> {
        self.log()
            .iter()
            .find(|e| matches!(e, Seen::Success(_) | Seen::Failure(_)))
            .cloned()
    }

    /// The failure cause the call ended with, if it failed.
    pub fn failure_cause(&self) -> Option<Cause> {
        match self.end()? {
            Seen::Failure(CallEnd {
                verdict: Verdict::Failure { cause, .. },
                ..
            }) => Some(cause),
            _ => None,
        }
    }

    /// Asserts the observer contract for one finished call: `on_start` once
    /// and first, then only attempt records (ids in launch order, each
    /// once), then exactly one `on_success`/`on_failure`, last, whose attempt
    /// count matches the records.
    pub fn assert_contract(&self) {
        let log = self.events();
        let lines: Vec<String> = log.iter().map(Seen::line).collect();
        assert!(
            matches!(log.first(), Some(Seen::Start(..))),
            "first event must be on_start: {lines:#?}"
        );
        let Some((last, middle)) = log[1..].split_last() else {
            panic!("no end event: {lines:#?}");
        };
        let end = match last {
            Seen::Success(end) | Seen::Failure(end) => end,
            _ => panic!("last event must be on_success/on_failure: {lines:#?}"),
        };
        let mut ids = Vec::new();
        for e in middle {
            match e {
                Seen::Attempt(r) => ids.push(r.info.id.0),
                _ => panic!("only attempt records between start and end: {lines:#?}"),
            }
        }
        let expected: Vec<u16> = (0..).take(ids.len()).collect();
        assert_eq!(
            ids, expected,
            "one record per attempt, in order: {lines:#?}"
        );
        assert_eq!(
            end.attempts as usize,
            ids.len(),
            "end's attempt count matches the records: {lines:#?}"
        );
    }
}

impl Observer for Recorder {
    fn on_start(&mut self, key: PolicyKey<'_>, start: Instant) {
        self.log().push(Seen::Start(key.to_string(), start));
    }
    fn on_attempt(&mut self, _key: PolicyKey<'_>, record: &AttemptRecord) {
        self.log().push(Seen::Attempt(*record));
    }
    fn on_success(&mut self, _key: PolicyKey<'_>, end: &CallEnd) {
        self.log().push(Seen::Success(*end));
    }
    fn on_failure(&mut self, _key: PolicyKey<'_>, end: &CallEnd) {
        self.log().push(Seen::Failure(*end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counter_counts_unpolled_and_completed_futures() {
        let c = DropCounter::new();
        let a = c.wrap(async { 1 });
        let b = c.wrap(hang::<()>());
        assert_eq!((c.created(), c.live()), (2, 2));
        drop(b);
        assert_eq!(c.live(), 1);
        assert_eq!(futures_util::FutureExt::now_or_never(a), Some(1));
        assert_eq!((c.created(), c.live()), (2, 0));
    }

    #[test]
    fn millisecond_formatting() {
        assert_eq!(format_ms(ms(5)), "5");
        assert_eq!(format_ms(Duration::from_secs(2) + ms(5)), "2005");
        assert_eq!(format_ms(Duration::from_micros(30_250)), "30.25");
        assert_eq!(format_ms(Duration::ZERO), "0");
    }
}
