//! Timelines: the record of one call — every attempt, how the call ended,
//! and which policy decisions shaped it.
//!
//! Why a timeline and not just logs: a retried call is a small story (three
//! attempts, two backoffs, a timeout) whose parts only make sense together.
//! A timeline keeps them together, in one value a test can assert on and a
//! person can read: its `Display` is a table with one row per attempt.
//!
//! Timelines are built only when asked for
//! ([`Executor::call_with_timeline`](crate::Executor::call_with_timeline)); a
//! plain call allocates none of this.

use core::fmt;
use core::time::Duration;
use std::collections::BTreeMap;
use std::time::SystemTime;

use recourse_core::machine::Verdict;
use recourse_core::{AttemptId, AttemptRecord, Error, Instant};

/// One call, attempt by attempt.
///
/// Attribute names used by recourse: `policy_source` (`static`, `default`,
/// `remote`, `lkg`), `policy_normalized` (`true` when normalization changed a
/// field), `policy_clamped_fields` (the changed fields' dotted paths,
/// comma-separated), `missing_policy_mode` (`deny`, `allow`, `fallback`, when
/// the provider had no policy), `policy_error` (the provider's error).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeline {
    /// The policy key, in its display form (`svc.Method`).
    pub key: String,
    /// When the call started, on the call's timer.
    pub start: Instant,
    /// When it ended, on the call's timer.
    pub end: Instant,
    /// The wall-clock time the call started, to place it among logs.
    pub wall_start: SystemTime,
    /// Every attempt, in the order attempts ended.
    pub attempts: Vec<AttemptRecord>,
    /// The machine's verdict; `None` when the call never ran (denied).
    pub verdict: Option<Verdict>,
    /// The attempt whose result the call returned as a success (ids count
    /// from 0 in launch order), if one did.
    pub winner: Option<AttemptId>,
    /// The returned error's reason code ([`Error::reason`]); `None` when the
    /// call returned `Ok`.
    pub reason: Option<&'static str>,
    /// Policy decisions and other low-cardinality facts about the call.
    pub attributes: BTreeMap<&'static str, String>,
}

impl Timeline {
    /// An empty timeline for `key`, started at `start` (`wall_start` on the
    /// wall clock).
    pub fn new(key: impl Into<String>, start: Instant, wall_start: SystemTime) -> Self {
        Self {
            key: key.into(),
            start,
            end: start,
            wall_start,
            attempts: Vec::new(),
            verdict: None,
            winner: None,
            reason: None,
            attributes: BTreeMap::new(),
        }
    }

    /// `end - start`.
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    /// The value of attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// Records the call's result: its error's reason code, if any.
    pub(crate) fn conclude<T, E>(&mut self, result: &Result<T, Error<E>>) {
        self.reason = result.as_ref().err().map(Error::reason);
    }
}

/// Milliseconds with one decimal, honouring the formatter's width.
pub(crate) struct Ms(pub(crate) Duration);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_secs_f64() * 1000.0;
        match f.width() {
            Some(w) => write!(f, "{ms:>w$.1}"),
            None => write!(f, "{ms:.1}"),
        }
    }
}

impl fmt::Display for Timeline {
    /// A header line, the attributes, then one row per attempt:
    ///
    /// ```text
    /// svc.Flaky: ok, attempt 3 won after 3 attempts in 30.4 ms
    ///   policy_source=static
    ///   attempt  retry  hedge  start ms  duration ms  outcome        reason              backoff ms
    ///         1      0      -       0.0          0.1  retryable      retryable_error            0.0
    /// ```
    ///
    /// Attempts are numbered from 1; retry is the retry group (from 0),
    /// hedge the hedge index within it (`-` for the group's primary); start
    /// is the offset from the call's start; backoff is the sleep before the
    /// attempt. The header names the attempt that won.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.attempts.len();
        let plural = if n == 1 { "" } else { "s" };
        write!(f, "{}: ", self.key)?;
        match (self.reason, self.winner, self.verdict) {
            (Some(reason), ..) => write!(f, "failed ({reason})")?,
            (None, Some(w), _) => write!(f, "ok, attempt {} won", u32::from(w.0) + 1)?,
            // A value the classifier rejected, returned because the call
            // stopped on it.
            (None, None, Some(Verdict::Failure { cause, .. })) => {
                write!(f, "ok, last value returned ({})", cause.as_str())?
            }
            (None, None, _) => f.write_str("ok")?,
        }
        writeln!(
            f,
            " after {n} attempt{plural} in {} ms",
            Ms(self.duration())
        )?;
        if !self.attributes.is_empty() {
            f.write_str(" ")?;
            for (k, v) in &self.attributes {
                write!(f, " {k}={v}")?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "  {:>7}  {:>5}  {:>5}  {:>8}  {:>11}  {:<14} {:<19} {:>10}",
            "attempt",
            "retry",
            "hedge",
            "start ms",
            "duration ms",
            "outcome",
            "reason",
            "backoff ms"
        )?;
        for r in &self.attempts {
            let hedge = if r.info.is_hedge {
                r.info.hedge_index.to_string()
            } else {
                "-".to_owned()
            };
            writeln!(
                f,
                "  {:>7}  {:>5}  {:>5}  {:>8}  {:>11}  {:<14} {:<19} {:>10}",
                u32::from(r.info.id.0) + 1,
                r.info.retry_index,
                hedge,
                Ms(r.start - self.start),
                Ms(r.duration()),
                r.outcome.kind.as_str(),
                r.outcome.reason,
                Ms(r.backoff),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denied_call_prints_its_reason_and_an_empty_table() {
        let mut t = Timeline::new("svc.A", Instant::ZERO, SystemTime::UNIX_EPOCH);
        t.conclude::<(), ()>(&Err(Error::NoPolicy));
        t.attributes.insert("missing_policy_mode", "deny".into());
        let text = t.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "svc.A: failed (no_policy) after 0 attempts in 0.0 ms"
        );
        assert_eq!(lines[1], "  missing_policy_mode=deny");
        assert_eq!(lines.len(), 3, "{text}");
    }

    #[test]
    fn a_returned_value_the_classifier_rejected_says_why_the_call_stopped() {
        let mut t = Timeline::new("svc.A", Instant::ZERO, SystemTime::UNIX_EPOCH);
        t.verdict = Some(Verdict::Failure {
            cause: recourse_core::Cause::NonRetryable,
            last: Some(AttemptId(0)),
        });
        t.conclude::<u16, ()>(&Ok(404));
        assert!(t
            .to_string()
            .starts_with("svc.A: ok, last value returned (non_retryable)"));
    }
}
