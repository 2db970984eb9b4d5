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
//!
//! ## Layers that know about each other
//!
//! A ledger bounds one layer. Across layers, each attempt tells the next
//! one how many attempts were made above it for the same request (gRPC's
//! `grpc-previous-rpc-attempts`, or the `recourse-attempt` HTTP header):
//! [`parse_upstream_attempts`] reads the value (anything but a plain
//! decimal up to [`MAX_UPSTREAM_ATTEMPTS`] is treated as absent),
//! [`outbound_attempts`] makes the value of this layer's next attempt, and
//! [`upstream_effect`] says what the policy's
//! [`UpstreamRetry`] does with it.

use core::time::Duration;

use crate::policy::{AmplificationPolicy, Policy, UpstreamRetry};
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
        self.allows_extra_reserving(policy, now, 0)
    }

    /// [`allows_extra`](Self::allows_extra) with `reserve` extra attempts
    /// of the bound left unused, for the layers above (see
    /// [`UpstreamEffect::reserve`]).
    pub fn allows_extra_reserving(
        &self,
        policy: &AmplificationPolicy,
        now: Instant,
        reserve: u64,
    ) -> bool {
        if !policy.is_enabled() {
            return true;
        }
        let t = self.totals(now);
        let ratio = policy.max_amplification - 1.0;
        // A non-negative product truncates to its floor (`as` saturates).
        let earned = (ratio * t.firsts as f64) as u64;
        let floor = u64::from(policy.min_per_sec) * WINDOW.as_secs();
        t.extras.saturating_add(reserve) < earned.saturating_add(floor)
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

/// The largest upstream attempt count read from a header; a larger value
/// is treated as absent (no chain of layers makes that many attempts for
/// one request, so it is garbage or hostile).
pub const MAX_UPSTREAM_ATTEMPTS: u32 = 10_000;

/// The upstream attempt count in a header value: ASCII digits, optionally
/// surrounded by spaces or tabs, at most [`MAX_UPSTREAM_ATTEMPTS`].
/// Anything else — empty, a sign, a fraction, letters, an overflowing or
/// huge number — is `None`: the caller treats it as absent (and counts it).
pub fn parse_upstream_attempts(value: &[u8]) -> Option<u32> {
    let start = value.iter().position(|b| !matches!(b, b' ' | b'\t'))?;
    let end = value.iter().rposition(|b| !matches!(b, b' ' | b'\t'))?;
    let digits = &value[start..=end];
    // More than 5 digits is past the maximum (leading zeros included:
    // nobody writes them, and the bound keeps the loop short).
    if digits.len() > 5 {
        return None;
    }
    let mut n: u32 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    (n <= MAX_UPSTREAM_ATTEMPTS).then_some(n)
}

/// The upstream attempt count this layer's attempt sends on: the attempts
/// made above it (`upstream`, none when the request came with no count)
/// plus the attempts this layer sent for the request before this one,
/// at most [`MAX_UPSTREAM_ATTEMPTS`].
pub fn outbound_attempts(upstream: Option<u32>, sent_before: u32) -> u32 {
    upstream
        .unwrap_or(0)
        .saturating_add(sent_before)
        .min(MAX_UPSTREAM_ATTEMPTS)
}

/// What a call does about the attempts made above it for the request it
/// serves (see [`upstream_effect`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UpstreamEffect {
    /// Nothing: no upstream count, a count of 0 under
    /// [`UpstreamRetry::NotWhenRetry`], or [`UpstreamRetry::Always`].
    None,
    /// One attempt, no hedge ([`UpstreamRetry::NotWhenRetry`] and a
    /// request that is a retry or a hedge upstream).
    SingleAttempt,
    /// [`UpstreamRetry::SharedAllowance`] and a request with a caller
    /// above: this call's own retries and hedges leave one extra attempt of
    /// the bound to the callers (whose retries come after this layer's
    /// own, since the layer below fails first), and when the request is
    /// itself a retry or a hedge upstream (`first_is_extra`) its first
    /// attempt counts as an extra attempt in the ledger: the allowance
    /// spent above is spent here too.
    Shared {
        /// The upstream count is above 0.
        first_is_extra: bool,
    },
}

/// What `policy` does with a request whose callers made `upstream`
/// attempts before it (`None`: the request carried no count, or a count
/// that was garbage: no caller above that would retry).
pub fn upstream_effect(policy: &AmplificationPolicy, upstream: Option<u32>) -> UpstreamEffect {
    match (policy.upstream_retry, upstream) {
        (UpstreamRetry::Always, _) | (_, None) | (UpstreamRetry::NotWhenRetry, Some(0)) => {
            UpstreamEffect::None
        }
        (UpstreamRetry::NotWhenRetry, Some(_)) => UpstreamEffect::SingleAttempt,
        (UpstreamRetry::SharedAllowance, Some(n)) => UpstreamEffect::Shared {
            first_is_extra: n > 0,
        },
    }
}

impl UpstreamEffect {
    /// The policy the call runs under instead of `policy`, when the effect
    /// changes it: one attempt and no hedge for
    /// [`SingleAttempt`](Self::SingleAttempt) (timeouts, classifier,
    /// budgets and breaker unchanged).
    pub fn adjusted(self, policy: &Policy) -> Option<Policy> {
        if self != Self::SingleAttempt {
            return None;
        }
        let mut p = policy.clone();
        p.retry.max_attempts = 1;
        p.hedge.enabled = false;
        Some(p)
    }

    /// The kind the ledger counts an attempt of `kind` as: a first attempt
    /// is an extra one when the request is a retry or hedge upstream under
    /// a shared allowance.
    pub fn ledger_kind(self, kind: AttemptKind) -> AttemptKind {
        if self
            == (Self::Shared {
                first_is_extra: true,
            })
            && kind == AttemptKind::Initial
        {
            AttemptKind::Retry
        } else {
            kind
        }
    }

    /// Extra attempts of the bound this call's retries and hedges leave
    /// unused for the callers above: 1 under a shared allowance, else 0.
    pub fn reserve(self) -> u64 {
        u64::from(matches!(self, Self::Shared { .. }))
    }

    /// The name of the effect, for a timeline: `none`, `single_attempt`,
    /// `shared` or `shared_first_is_extra`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::SingleAttempt => "single_attempt",
            Self::Shared {
                first_is_extra: false,
            } => "shared",
            Self::Shared {
                first_is_extra: true,
            } => "shared_first_is_extra",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: f64, min_per_sec: u32) -> AmplificationPolicy {
        AmplificationPolicy {
            max_amplification: max,
            min_per_sec,
            ..AmplificationPolicy::DEFAULT
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

    #[test]
    fn upstream_counts_are_plain_bounded_decimals_or_absent() {
        for (v, want) in [
            (&b"0"[..], Some(0)),
            (b"2", Some(2)),
            (b" 7\t", Some(7)),
            (b"10000", Some(MAX_UPSTREAM_ATTEMPTS)),
            (b"00003", Some(3)),
            (b"10001", None),
            (b"99999", None),
            (b"4294967296", None),
            (b"184467440737095516160", None),
            (b"-1", None),
            (b"+1", None),
            (b"1.5", None),
            (b"1e3", None),
            (b"", None),
            (b"   ", None),
            (b"two", None),
            (b"1 2", None),
            (b"\xff\xfe", None),
        ] {
            assert_eq!(parse_upstream_attempts(v), want, "{v:?}");
        }
    }

    #[test]
    fn outbound_counts_add_this_layers_attempts_and_saturate() {
        assert_eq!(outbound_attempts(None, 0), 0);
        assert_eq!(outbound_attempts(None, 2), 2);
        assert_eq!(outbound_attempts(Some(3), 1), 4);
        assert_eq!(
            outbound_attempts(Some(MAX_UPSTREAM_ATTEMPTS), u32::MAX),
            MAX_UPSTREAM_ATTEMPTS
        );
    }

    #[test]
    fn a_reserve_leaves_extra_attempts_for_the_layers_above() {
        let p = policy(1.1, 0);
        let mut l = AmplificationLedger::new();
        for i in 0..100 {
            l.record_first(ms(i));
        }
        let mut allowed = 0;
        for i in 0..100 {
            if l.allows_extra_reserving(&p, ms(100 + i), 1) {
                l.record_extra(ms(100 + i));
                allowed += 1;
            }
        }
        assert_eq!(allowed, 9, "10 % of 100 first attempts, one left");
        // The one left is for a retry from above, counted whatever the room.
        l.record(AttemptKind::Retry, ms(300));
        assert_eq!(l.totals(ms(300)).amplification(), 1.1);
        assert!(l.allows_extra_reserving(&AmplificationPolicy::DEFAULT, ms(300), 5));
    }

    #[test]
    fn the_upstream_mode_decides_the_effect() {
        let mut p = Policy::DEFAULT;
        p.retry.max_attempts = 4;
        p.hedge.enabled = true;
        for mode in UpstreamRetry::ALL {
            p.amplification.upstream_retry = mode;
            assert_eq!(
                upstream_effect(&p.amplification, None),
                UpstreamEffect::None
            );
        }
        p.amplification.upstream_retry = UpstreamRetry::Always;
        for n in [0, 5] {
            assert_eq!(
                upstream_effect(&p.amplification, Some(n)),
                UpstreamEffect::None
            );
        }
        p.amplification.upstream_retry = UpstreamRetry::NotWhenRetry;
        assert_eq!(
            upstream_effect(&p.amplification, Some(0)),
            UpstreamEffect::None
        );
        let e = upstream_effect(&p.amplification, Some(1));
        assert_eq!(e, UpstreamEffect::SingleAttempt);
        let single = e.adjusted(&p).unwrap();
        assert_eq!(
            (single.retry.max_attempts, single.hedge.enabled),
            (1, false)
        );
        assert_eq!(single.retry.overall_timeout, p.retry.overall_timeout);
        assert_eq!(e.ledger_kind(AttemptKind::Initial), AttemptKind::Initial);
        assert_eq!(e.reserve(), 0);
        p.amplification.upstream_retry = UpstreamRetry::SharedAllowance;
        let first = upstream_effect(&p.amplification, Some(0));
        assert_eq!(
            first,
            UpstreamEffect::Shared {
                first_is_extra: false
            }
        );
        assert_eq!(
            first.ledger_kind(AttemptKind::Initial),
            AttemptKind::Initial
        );
        assert_eq!(first.reserve(), 1);
        let e = upstream_effect(&p.amplification, Some(2));
        assert_eq!(
            e,
            UpstreamEffect::Shared {
                first_is_extra: true
            }
        );
        assert_eq!(e.adjusted(&p), None);
        assert_eq!(e.reserve(), 1);
        assert_eq!(e.ledger_kind(AttemptKind::Initial), AttemptKind::Retry);
        assert_eq!(e.ledger_kind(AttemptKind::Hedge), AttemptKind::Hedge);
        assert_eq!(
            UpstreamEffect::None.ledger_kind(AttemptKind::Initial),
            AttemptKind::Initial
        );
        assert_eq!(e.as_str(), "shared_first_is_extra");
    }
}
