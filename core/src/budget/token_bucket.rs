//! [`TokenBucket`]: a rate limit on attempts, with bursts.

use crate::sync::{AtomicU64, Ordering};

use super::{Budget, BudgetRequest, Decision, Reservation};
use crate::record::AttemptRecord;
use crate::time::Instant;

/// Milli-tokens per token.
const MILLI: u64 = 1_000;
/// Nanoseconds per millisecond: refill is credited per whole millisecond.
const NANOS_PER_MS: u64 = 1_000_000;

/// The highest refill rate, in tokens per second; higher rates are clamped
/// to it. At this rate the bucket's clock (milliseconds since the epoch ×
/// rate, in milli-tokens) fits 64 bits for every representable [`Instant`].
pub const MAX_REFILL_PER_SECOND: u32 = 1_000_000;

/// A token bucket: attempts spend tokens; tokens come back at a steady rate.
///
/// Why: the simplest budget that bounds load in absolute terms — at most
/// `capacity` attempts in a burst and `refill_per_second` attempts per second
/// sustained, whatever the traffic. It gates whatever the policy points it
/// at and every attempt it is asked about, first attempts included: name it
/// in `hedge.budget` to cap hedges per second, in `retry.budget` to cap
/// attempts (first attempts and retries) per second. When the budget should
/// scale with traffic instead, use [`RetryRatio`](super::RetryRatio).
///
/// Reference: recourse's Go original (`NewTokenBucketBudget(capacity,
/// refillPerSec)`) and the spec: starts full; refills elapsed × rate, capped
/// at capacity; each attempt spends its `cost` (the policy's `budget.cost`,
/// in tokens); a denial spends nothing. Time is the `now` passed in.
///
/// How, exactly and without a lock: the state is one 64-bit word, the
/// bucket's *spent mark* `S` in milli-tokens (0.001 token), against a clock
/// `C = whole milliseconds since the epoch × refill_per_second` — also in
/// milli-tokens, since `r` tokens per second is `r` milli-tokens per
/// millisecond. The bucket holds `min(capacity, C + capacity − S)` tokens;
/// spending `c` tokens sets `S = max(S, C) + c` if that is at most
/// `C + capacity`, in one compare-and-swap. `S = 0` is a full bucket, so the
/// constructor is `const`. No fraction is ever rounded away: the
/// milliseconds not yet elapsed are not yet credited, and are credited
/// whole once they have (at 3 tokens/s, exactly 3 tokens per second, not 2
/// or 2.997). An instant earlier than one seen before only makes the bucket
/// look emptier.
///
/// Units: `capacity` in tokens, `refill_per_second` in tokens per second
/// (at most [`MAX_REFILL_PER_SECOND`]; 0 means a bucket that never refills),
/// `cost` in tokens; [`available_milli`](Self::available_milli) in
/// milli-tokens.
///
/// Available on every target with compare-and-swap (`cfg(target_has_atomic
/// = "32")`: microcontrollers included), and on those without it, such as
/// Cortex-M0 (`thumbv6m-none-eabi`), with the `critical-section` feature.
///
/// Its state holds a time, in 64-bit atomics: native where the target has
/// them, [`portable_atomic`]'s fallback elsewhere (a seqlock over a global
/// lock table on 32-bit targets with compare-and-swap, such as
/// Cortex-M3/M4/M7). A single-core microcontroller should have the fallback
/// mask interrupts instead (portable-atomic's `unsafe-assume-single-core`
/// feature, enabled by the program): no lock table in RAM, and an interrupt
/// handler that shares the budget can never spin on a lock the code it
/// interrupted holds.
///
/// ```
/// use recourse_core::budget::TokenBucket;
/// use recourse_core::Instant;
///
/// // Bursts of 10 attempts, 2 more per second.
/// static HEDGES: TokenBucket = TokenBucket::new(10, 2);
/// assert_eq!(HEDGES.available(Instant::ZERO), 10);
/// ```
#[derive(Debug)]
pub struct TokenBucket {
    capacity: u32,
    refill_per_second: u32,
    /// The spent mark `S`, in milli-tokens.
    spent: AtomicU64,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens refilled at `refill_per_second`
    /// tokens per second (clamped to [`MAX_REFILL_PER_SECOND`]).
    pub const fn new(capacity: u32, refill_per_second: u32) -> Self {
        let rate = if refill_per_second > MAX_REFILL_PER_SECOND {
            MAX_REFILL_PER_SECOND
        } else {
            refill_per_second
        };
        Self {
            capacity,
            refill_per_second: rate,
            spent: AtomicU64::new(0),
        }
    }

    /// The most tokens the bucket holds.
    pub const fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Tokens added per second.
    pub const fn refill_per_second(&self) -> u32 {
        self.refill_per_second
    }

    /// Whole tokens available at `now`.
    pub fn available(&self, now: Instant) -> u64 {
        self.available_milli(now) / MILLI
    }

    /// Milli-tokens (0.001 token) available at `now`.
    pub fn available_milli(&self, now: Instant) -> u64 {
        let ahead = self
            .spent
            .load(Ordering::Relaxed)
            .saturating_sub(self.clock(now));
        self.capacity_milli().saturating_sub(ahead)
    }

    const fn capacity_milli(&self) -> u64 {
        self.capacity as u64 * MILLI
    }

    /// `C`: whole milliseconds since the epoch × rate, in milli-tokens.
    /// Cannot overflow: `u64::MAX / 10^6` ms × at most `10^6` per ms. It
    /// stops one capacity short of `u64::MAX`, so that `max(S, C) + cost`
    /// always fits: near the end of time (within `capacity / rate` seconds
    /// of `Instant::MAX`, centuries away) the bucket stops refilling but
    /// still spends exactly what it holds.
    const fn clock(&self, now: Instant) -> u64 {
        let clock = (now.as_nanos() / NANOS_PER_MS) * self.refill_per_second as u64;
        let last = u64::MAX - self.capacity_milli();
        if clock < last {
            clock
        } else {
            last
        }
    }

    /// Spends `cost` milli-tokens if the bucket holds them at `now`.
    fn take(&self, cost: u64, now: Instant) -> bool {
        let clock = self.clock(now);
        let capacity = self.capacity_milli();
        // One word and nothing published through it: every read-modify-write
        // of it is totally ordered, so Relaxed is enough for exact counts.
        self.spent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |spent| {
                // `S − C` is what the bucket lacks; `S = max(S, C) + c` is
                // allowed while it stays within the capacity.
                let lacking = spent.saturating_sub(clock);
                if lacking.checked_add(cost)? > capacity {
                    return None;
                }
                spent.max(clock).checked_add(cost)
            })
            .is_ok()
    }

    /// Gives `cost` milli-tokens back (the bucket still never holds more
    /// than its capacity).
    fn give_back(&self, cost: u64) {
        let _ = self
            .spent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |spent| {
                Some(spent.saturating_sub(cost))
            });
    }
}

impl Default for TokenBucket {
    /// 100 tokens, refilled at 10 tokens per second.
    fn default() -> Self {
        Self::new(100, 10)
    }
}

impl Budget for TokenBucket {
    /// Spends `request.cost` tokens (at least 1) for an attempt of any kind;
    /// the reservation holds the cost in tokens.
    fn decide(&self, request: &BudgetRequest<'_>) -> Decision {
        let cost = u64::from(request.cost.max(1));
        if self.take(cost * MILLI, request.now) {
            Decision::reserve(Reservation(cost))
        } else {
            Decision::DENY
        }
    }

    /// Tokens are spent for good once the attempt ran; an attempt that was
    /// allowed but never ran gets them back.
    fn settle(&self, record: &AttemptRecord, reservation: Option<Reservation>, _now: Instant) {
        if let (false, Some(Reservation(cost))) = (record.budget_allowed, reservation) {
            self.give_back(cost.saturating_mul(MILLI));
        }
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::AtomicU32;

    use super::super::testing::{
        attempt, decide, ms, record, request, FAILED, HEDGE, INITIAL, RETRY,
    };
    use super::*;
    use crate::outcome::{reason, Outcome};

    #[test]
    fn golden_drain_then_refill() {
        // capacity 10 tokens, 2 tokens/s = 2 milli-tokens per ms.
        let b = TokenBucket::new(10, 2);
        // t = 0: full. Ten attempts of any kind spend 1 token each: 10 → 0.
        for (i, kind) in [INITIAL, RETRY, HEDGE].iter().cycle().take(10).enumerate() {
            let d = decide(&b, *kind, ms(0));
            assert_eq!(d, Decision::reserve(Reservation(1)), "attempt {i}");
            assert_eq!(b.available(ms(0)), 9 - i as u64);
        }
        // The 11th is denied and spends nothing.
        assert_eq!(decide(&b, RETRY, ms(0)), Decision::DENY);
        assert_eq!(decide(&b, RETRY, ms(0)).reason, reason::BUDGET_DENIED);
        assert_eq!(b.available_milli(ms(0)), 0);
        // t = 499 ms: 499 ms × 2 = 998 milli-tokens, less than one token.
        assert_eq!(b.available_milli(ms(499)), 998);
        assert!(!decide(&b, RETRY, ms(499)).allowed);
        assert_eq!(b.available_milli(ms(499)), 998);
        // t = 500 ms: 1000 milli-tokens = 1 token: allowed, back to 0.
        assert!(decide(&b, RETRY, ms(500)).allowed);
        assert_eq!(b.available_milli(ms(500)), 0);
        // t = 100 s: 99.5 s × 2 = 199 tokens, capped at 10.
        assert_eq!(b.available(ms(100_000)), 10);
        assert_eq!(b.available_milli(ms(100_000)), 10_000);
    }

    #[test]
    fn golden_fractional_refill_is_never_lost() {
        // 3 tokens/s: one token every 333.33 ms; 3 milli-tokens per ms.
        let b = TokenBucket::new(10, 3);
        for _ in 0..10 {
            assert!(decide(&b, RETRY, ms(0)).allowed); // 10 → 0
        }
        // Ask every millisecond for one second. Tokens become whole at
        // 334 ms (1002 milli), 667 ms (2 + 333 × 3 = 1001) and 1000 ms
        // (1 + 333 × 3 = 1000): exactly 3 per second, no drift. (With a
        // capacity of 1 the 2 milli-tokens above a full bucket at 334 ms
        // would be capped away, as a full bucket's refill always is.)
        let allowed: std::vec::Vec<u64> = (1..=1_000)
            .filter(|&t| decide(&b, RETRY, ms(t)).allowed)
            .collect();
        assert_eq!(allowed, [334, 667, 1_000]);
        assert_eq!(b.available_milli(ms(1_000)), 0);
        // Sub-millisecond time is credited once the millisecond is whole:
        // 1000.9 ms is still 1000 ms; 1001 ms adds 3 milli-tokens.
        assert_eq!(b.available_milli(Instant::from_micros(1_000_900)), 0);
        assert_eq!(b.available_milli(ms(1_001)), 3);
    }

    #[test]
    fn golden_cost_and_denial_spends_nothing() {
        let b = TokenBucket::new(5, 0); // never refills
        let r = request(RETRY, 3, None, ms(0));
        assert_eq!(b.decide(&r), Decision::reserve(Reservation(3))); // 5 → 2
        assert_eq!(b.decide(&r), Decision::DENY); // 3 > 2: nothing spent
        assert_eq!(b.available(ms(0)), 2);
        // Cost 0 counts as 1.
        assert!(b.decide(&request(RETRY, 0, None, ms(0))).allowed); // 2 → 1
        assert_eq!(b.available(ms(60_000)), 1);
        // Settling a run attempt gives nothing back, whatever its outcome.
        b.settle(
            &record(RETRY, Outcome::SUCCESS, ms(0)),
            Some(Reservation(3)),
            ms(0),
        );
        b.settle(&record(RETRY, FAILED, ms(0)), Some(Reservation(3)), ms(0));
        assert_eq!(b.available(ms(0)), 1);
        // An allowed attempt that never ran gets its tokens back.
        let d = decide(&b, HEDGE, ms(0)); // 1 → 0
        let mut never_ran = record(HEDGE, Outcome::abort(reason::BUDGET_DENIED), ms(0));
        never_ran.budget_allowed = false;
        b.settle(&never_ran, d.reservation, ms(0));
        assert_eq!(b.available(ms(0)), 1);
    }

    #[test]
    fn earlier_instants_only_look_emptier() {
        let b = TokenBucket::new(2, 1); // 1 milli-token per ms
        assert!(attempt(&b, RETRY, FAILED, ms(10_000))); // 2 → 1
        assert!(attempt(&b, RETRY, FAILED, ms(10_000))); // 1 → 0
                                                         // A late-arriving `now` 5 s earlier sees no tokens (not 5 of them).
        assert_eq!(b.available(ms(5_000)), 0);
        assert!(!decide(&b, RETRY, ms(5_000)).allowed);
        // Time resumes: 1 s after 10 s holds 1 token again.
        assert_eq!(b.available(ms(11_000)), 1);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let b = TokenBucket::new(u32::MAX, u32::MAX);
        assert_eq!(b.refill_per_second(), MAX_REFILL_PER_SECOND);
        // 500 years after the epoch, at the highest rate, still exact.
        let late = Instant::from_secs(500 * 365 * 86_400);
        assert_eq!(b.available(late), u64::from(u32::MAX));
        assert!(b.decide(&request(RETRY, u32::MAX, None, late)).allowed);
        assert_eq!(b.available(late), 0);
        assert!(!b.decide(&request(RETRY, 1, None, late)).allowed);
        // At the end of time nothing panics; the bucket only looks emptier.
        assert!(b.available(Instant::MAX) <= u64::from(u32::MAX));
        let _ = b.decide(&request(RETRY, u32::MAX, None, Instant::MAX));
        // A full bucket at the end of time holds its capacity and spends it
        // (found by the `machine` fuzz target: the sum overflowed and a
        // bucket holding exactly the cost denied it).
        for rate in [MAX_REFILL_PER_SECOND, 1_000, 1] {
            let b = TokenBucket::new(2_964_369_584, rate);
            assert_eq!(b.available(Instant::MAX), 2_964_369_584);
            let d = b.decide(&request(RETRY, 2_964_369_584, None, Instant::MAX));
            assert!(d.allowed, "rate {rate}");
            assert_eq!(b.available(Instant::MAX), 0);
            assert!(!b.decide(&request(RETRY, 1, None, Instant::MAX)).allowed);
        }
    }

    #[test]
    fn static_instance() {
        static BUCKET: TokenBucket = TokenBucket::new(3, 1);
        assert_eq!(BUCKET.capacity(), 3);
        assert!(attempt(&BUCKET, INITIAL, Outcome::SUCCESS, ms(0)));
        assert_eq!(BUCKET.available(ms(0)), 2);
        assert_eq!(BUCKET.available(ms(1_000)), 3);
    }

    #[test]
    fn two_threads_spend_exactly_capacity() {
        const CAPACITY: u32 = if cfg!(miri) { 500 } else { 20_000 };
        let b = TokenBucket::new(CAPACITY, 0);
        let allowed = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut mine = 0;
                    while decide(&b, RETRY, ms(0)).allowed {
                        mine += 1;
                    }
                    // Denials after the last token stay denials.
                    assert!(!decide(&b, RETRY, ms(0)).allowed);
                    allowed.fetch_add(mine, Ordering::Relaxed);
                });
            }
        });
        assert_eq!(allowed.into_inner(), CAPACITY);
        assert_eq!(b.available_milli(ms(0)), 0);
    }
}
