//! The amplification ledger: one bound on retries and hedges together.
//!
//! Why: a retry budget bounds retries and a hedge budget bounds hedges, but
//! their sum is bounded by nobody, and a request through three layers that
//! each allow 3 attempts becomes up to 27 attempts at the bottom. The
//! ledger counts, per key and over a sliding window, the first attempts
//! and the extra attempts (retries and hedges alike); an extra attempt runs
//! only while `extras + 1 <= (max_amplification - 1) * firsts +
//! min_per_sec * window_secs`, so the attempts sent stay within
//! `max_amplification` times the calls made, plus a small floor per second
//! (as Finagle's retry budget has) so that a quiet key can still retry.
//!
//! No allocator, no clock: every method takes the machine's `now`. A std
//! user keeps one ledger per key behind a lock.

use core::time::Duration;

use crate::policy::AmplificationPolicy;
use crate::record::AttemptKind;
use crate::time::Instant;

/// Buckets of the sliding window; it slides in steps of a tenth of its
/// length.
const BUCKETS: usize = 10;

/// The window the ledger counts over.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Bucket {
    /// The step this bucket counts (`now / step`), or `u64::MAX` if unused.
    step: u64,
    firsts: u32,
    extras: u32,
}

const EMPTY: Bucket = Bucket {
    step: u64::MAX,
    firsts: 0,
    extras: 0,
};

/// What the ledger counted over its window (see [`AmplificationLedger::totals`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// First attempts.
    pub firsts: u64,
    /// Retries and hedges.
    pub extras: u64,
}

impl Totals {
    /// Attempts per first attempt (`1.0` with none yet).
    pub fn amplification(self) -> f64 {
        if self.firsts == 0 {
            return 1.0;
        }
        (self.firsts + self.extras) as f64 / self.firsts as f64
    }
}

/// First attempts and extra attempts (retries and hedges) of one key over a
/// sliding [`WINDOW`] (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmplificationLedger {
    buckets: [Bucket; BUCKETS],
}

impl Default for AmplificationLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl AmplificationLedger {
    /// An empty ledger.
    pub const fn new() -> Self {
        Self {
            buckets: [EMPTY; BUCKETS],
        }
    }

    fn step(now: Instant) -> u64 {
        now.as_nanos() / (WINDOW.as_nanos() as u64 / BUCKETS as u64)
    }

    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let step = Self::step(now);
        let b = &mut self.buckets[(step % BUCKETS as u64) as usize];
        if b.step != step {
            *b = Bucket {
                step,
                firsts: 0,
                extras: 0,
            };
        }
        b
    }

    /// The counts of the window that ends at `now`.
    pub fn totals(&self, now: Instant) -> Totals {
        let step = Self::step(now);
        let oldest = step.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.step != u64::MAX && b.step >= oldest && b.step <= step)
            .fold(Totals::default(), |t, b| Totals {
                firsts: t.firsts + u64::from(b.firsts),
                extras: t.extras + u64::from(b.extras),
            })
    }

    /// Counts a first attempt at `now`.
    pub fn record_first(&mut self, now: Instant) {
        let b = self.bucket(now);
        b.firsts = b.firsts.saturating_add(1);
    }

    /// Counts an extra attempt (a retry or a hedge) at `now`.
    pub fn record_extra(&mut self, now: Instant) {
        let b = self.bucket(now);
        b.extras = b.extras.saturating_add(1);
    }

    /// Counts an attempt of `kind` at `now`: a first attempt, or an extra
    /// one (a retry or a hedge).
    pub fn record(&mut self, kind: AttemptKind, now: Instant) {
        if kind == AttemptKind::Initial {
            self.record_first(now);
        } else {
            self.record_extra(now);
        }
    }

    /// Whether one more extra attempt at `now` stays within `policy`
    /// (always, when it is off). Counts nothing: call
    /// [`record_extra`](Self::record_extra) once the attempt runs.
    pub fn allows_extra(&self, policy: &AmplificationPolicy, now: Instant) -> bool {
        if !policy.is_enabled() {
            return true;
        }
        let t = self.totals(now);
        let ratio = policy.max_amplification - 1.0;
        // A non-negative product truncates to its floor (`as` saturates).
        let earned = (ratio * t.firsts as f64) as u64;
        let floor = u64::from(policy.min_per_sec) * WINDOW.as_secs();
        t.extras < earned.saturating_add(floor)
    }

    /// [`allows_extra`](Self::allows_extra) and, when it does,
    /// [`record_extra`](Self::record_extra).
    pub fn try_extra(&mut self, policy: &AmplificationPolicy, now: Instant) -> bool {
        let ok = self.allows_extra(policy, now);
        if ok {
            self.record_extra(now);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: f64, min_per_sec: u32) -> AmplificationPolicy {
        AmplificationPolicy {
            max_amplification: max,
            min_per_sec,
        }
    }

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    #[test]
    fn off_allows_everything() {
        let l = AmplificationLedger::new();
        assert!(l.allows_extra(&AmplificationPolicy::DEFAULT, ms(0)));
    }

    #[test]
    fn extras_stay_within_the_ratio_plus_the_floor() {
        let p = policy(1.1, 0);
        let mut l = AmplificationLedger::new();
        for i in 0..100 {
            l.record_first(ms(i));
        }
        let mut allowed = 0;
        for i in 0..100 {
            if l.try_extra(&p, ms(100 + i)) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 10, "10 % of 100 first attempts");
        let t = l.totals(ms(200));
        assert_eq!(
            t,
            Totals {
                firsts: 100,
                extras: 10
            }
        );
        assert!((t.amplification() - 1.1).abs() < 1e-9);
        // The floor: 1 per second over the 10 s window.
        let p = policy(1.1, 1);
        let mut allowed = 0;
        for i in 0..100 {
            if l.try_extra(&p, ms(300 + i)) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 10);
    }

    #[test]
    fn the_window_slides() {
        let p = policy(2.0, 0);
        let mut l = AmplificationLedger::new();
        l.record_first(ms(0));
        assert!(l.try_extra(&p, ms(10)));
        assert!(!l.try_extra(&p, ms(20)));
        // 9.9 s later the first attempt still counts, and so does the extra.
        assert!(!l.allows_extra(&p, ms(9_900)));
        // Once its bucket leaves the window, both are forgotten.
        assert_eq!(l.totals(ms(10_000)), Totals::default());
        assert!(
            !l.allows_extra(&p, ms(10_000)),
            "no first attempts, no floor"
        );
        l.record_first(ms(10_000));
        assert!(l.allows_extra(&p, ms(10_000)));
        // A stale bucket is reset when its slot is reused, not summed.
        l.record_first(ms(30_050));
        assert_eq!(
            l.totals(ms(30_050)),
            Totals {
                firsts: 1,
                extras: 0
            }
        );
    }

    #[test]
    fn a_clock_far_out_never_panics() {
        let p = policy(1.5, 3);
        let mut l = AmplificationLedger::new();
        for now in [0, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            l.record_first(ms(now));
            let _ = l.try_extra(&p, ms(now));
            let _ = l.totals(ms(now));
        }
    }
}
