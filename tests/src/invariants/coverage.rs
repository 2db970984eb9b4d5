//! What the runs did, so that a suite can prove it did not pass vacuously.

use core::fmt;

/// Something a run can do; [`Coverage`] counts the runs that did each.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the names say it; `Coverage`'s table spells them out
pub enum Feature {
    RawPolicy,
    Hedged,
    Retried,
    HedgeRefused,
    AttemptTimedOut,
    HedgeLoserCancelled,
    BudgetReserved,
    BudgetDenied,
    StaleResult,
    BackwardsTick,
    WaitedBackoff,
    WaitedHedgeDelay,
    WaitedAttemptDeadline,
    WaitedCallDeadline,
    AwaitedAttempts,
    RetryAfterHint,
    EndedInSteps,
    Success,
    NonRetryable,
    Abort,
    Exhausted,
    DeadlineExceeded,
    BackoffBeyondDeadline,
    RetryAfterBeyondDeadline,
    Cancelled,
    VerdictBudgetDenied,
    CircuitOpen,
    ClockSaturated,
}

impl Feature {
    /// Every feature, in table order.
    pub const ALL: [Self; 28] = [
        Self::RawPolicy,
        Self::Hedged,
        Self::Retried,
        Self::HedgeRefused,
        Self::AttemptTimedOut,
        Self::HedgeLoserCancelled,
        Self::BudgetReserved,
        Self::BudgetDenied,
        Self::StaleResult,
        Self::BackwardsTick,
        Self::WaitedBackoff,
        Self::WaitedHedgeDelay,
        Self::WaitedAttemptDeadline,
        Self::WaitedCallDeadline,
        Self::AwaitedAttempts,
        Self::RetryAfterHint,
        Self::EndedInSteps,
        Self::Success,
        Self::NonRetryable,
        Self::Abort,
        Self::Exhausted,
        Self::DeadlineExceeded,
        Self::BackoffBeyondDeadline,
        Self::RetryAfterBeyondDeadline,
        Self::Cancelled,
        Self::VerdictBudgetDenied,
        Self::CircuitOpen,
        Self::ClockSaturated,
    ];

    /// What it means, for the table.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::RawPolicy => "ran a policy that was not normalized",
            Self::Hedged => "launched a hedge",
            Self::Retried => "launched a retry",
            Self::HedgeRefused => "had a hedge refused by the gate",
            Self::AttemptTimedOut => "cut an attempt at its deadline",
            Self::HedgeLoserCancelled => "cancelled a hedge-race loser",
            Self::BudgetReserved => "took a budget reservation",
            Self::BudgetDenied => "was denied by a budget",
            Self::StaleResult => "fed a result the machine had to ignore",
            Self::BackwardsTick => "fed a time earlier than the clock",
            Self::WaitedBackoff => "waited: backoff",
            Self::WaitedHedgeDelay => "waited: hedge delay",
            Self::WaitedAttemptDeadline => "waited: attempt deadline",
            Self::WaitedCallDeadline => "waited: call deadline",
            Self::AwaitedAttempts => "awaited attempts (no timer)",
            Self::RetryAfterHint => "backed off by a retry-after hint",
            Self::EndedInSteps => "ended within the scripted steps",
            Self::Success => "verdict: success",
            Self::NonRetryable => "verdict: non_retryable",
            Self::Abort => "verdict: abort",
            Self::Exhausted => "verdict: retries_exhausted",
            Self::DeadlineExceeded => "verdict: deadline_exceeded",
            Self::BackoffBeyondDeadline => "verdict: backoff_beyond_deadline",
            Self::RetryAfterBeyondDeadline => "verdict: retry_after_beyond_deadline",
            Self::Cancelled => "verdict: cancelled",
            Self::VerdictBudgetDenied => "verdict: budget_denied",
            Self::CircuitOpen => "verdict: circuit_open",
            Self::ClockSaturated => "clock at Instant::MAX: a timeout saturated",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// How many runs did each [`Feature`]; add runs up with [`Coverage::add`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Runs counted.
    pub runs: u64,
    /// Attempts launched in all runs.
    pub attempts: u64,
    counts: [u64; Feature::ALL.len()],
}

impl Coverage {
    /// Runs that did `f`.
    pub fn runs_with(&self, f: Feature) -> u64 {
        self.counts[f.index()]
    }

    /// The share of runs that did `f`, 0 to 1.
    pub fn share(&self, f: Feature) -> f64 {
        self.runs_with(f) as f64 / self.runs.max(1) as f64
    }

    /// Adds `other`'s runs to these.
    pub fn add(&mut self, other: &Self) {
        self.runs += other.runs;
        self.attempts += other.attempts;
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
    }

    /// Panics naming every feature fewer than `min_share` of the runs did.
    pub fn assert_each_at_least(&self, min_share: f64, features: &[Feature]) {
        let thin: Vec<String> = features
            .iter()
            .filter(|f| self.share(**f) < min_share)
            .map(|f| format!("{} ({:.2} %)", f.describe(), 100.0 * self.share(*f)))
            .collect();
        assert!(
            thin.is_empty(),
            "fewer than {:.2} % of runs did: {}\n{self}",
            100.0 * min_share,
            thin.join("; ")
        );
    }

    /// One run that did the features in `seen`.
    pub(super) fn one_run(seen: &[bool; Feature::ALL.len()], attempts: u64) -> Self {
        let mut c = Self {
            runs: 1,
            attempts,
            ..Self::default()
        };
        for (count, s) in c.counts.iter_mut().zip(seen) {
            *count = u64::from(*s);
        }
        c
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} runs, {} attempts launched", self.runs, self.attempts)?;
        for feature in Feature::ALL {
            writeln!(
                f,
                "  {:>6.2} %  {:>7}  {}",
                100.0 * self.share(feature),
                self.runs_with(feature),
                feature.describe()
            )?;
        }
        Ok(())
    }
}

/// The features one run has done so far.
#[derive(Clone, Debug)]
pub(super) struct Seen(pub(super) [bool; Feature::ALL.len()]);

impl Default for Seen {
    fn default() -> Self {
        Self([false; Feature::ALL.len()])
    }
}

impl Seen {
    pub(super) fn mark(&mut self, f: Feature) {
        self.0[f.index()] = true;
    }
}
