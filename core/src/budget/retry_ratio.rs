//! [`RetryRatio`]: Finagle's retry budget — retries at most a share of
//! recent requests, plus a small reserve.

use crate::sync::{AtomicU64, Ordering};
use core::time::Duration;

use super::{Budget, BudgetRequest, Decision, Reservation};
use crate::record::{AttemptKind, AttemptRecord};
use crate::time::Instant;

/// Slices in the window (Finagle's `WindowedAdder(ttl, 10, now)`).
const SLICES: u64 = 10;
/// Finagle's `ScaleFactor`: a deposit is 1000 units.
const SCALE: u64 = 1_000;
/// `percent_can_retry` is in per-mille: 1000 ‰ is 100 %.
const PERMILLE: u64 = 1_000;
const NANOS_PER_MS: u64 = 1_000_000;

/// Retries and hedges at most a share of recent first attempts, plus a
/// reserve for quiet clients.
///
/// Why: a fixed `max_attempts` multiplies load exactly when a dependency is
/// failing (three attempts triple it). A ratio bounds the *extra* load
/// instead: with 20 %, a dependency that fails everything sees at most 1.2×
/// its normal traffic from this process. The reserve (`min_retries_per_sec`)
/// lets a client that has just started, or sends little, still retry.
///
/// Reference: Finagle's `RetryBudget(ttl, minRetriesPerSec,
/// percentCanRetry)` (`TokenRetryBudget` over a leaky `TokenBucket` over a
/// `WindowedAdder`), defaults 10 s, 10 retries/s, 20 % — [`finagle`]. Its
/// arithmetic, reproduced in integers:
///
/// - every first attempt deposits 1000 units (`ScaleFactor`);
/// - a retry or hedge withdraws `floor(1000 / percent)` units, allowed when
///   `reserve + Σ window ≥ withdrawal`, and denied without withdrawing;
/// - `reserve = min_retries_per_sec × ttl (whole seconds) × withdrawal` is
///   constant; withdrawals are recorded in the window like deposits, so
///   spending the reserve is undone as they expire ("refills");
/// - the window is 10 slices of `ttl / 10` (whole milliseconds); the sum
///   covers the current slice and the 9 before it, so a deposit or
///   withdrawal counts for between 9 and 10 tenths of `ttl`;
/// - [`balance`](Self::balance) is `(reserve + Σ window) / withdrawal`,
///   Finagle's `balance`: the retries that can be made now.
///
/// So with the defaults a quiet client may make 100 retries per 10 s, and
/// `N` first attempts add `N / 5` more. `percent_can_retry` 0 with
/// `min_retries_per_sec` 0 never allows a retry (Finagle's `Empty`).
///
/// One deliberate difference: Finagle starts a new slice at the first
/// request after the current one is `ttl / 10` old, so its slice boundaries
/// drift with traffic. Here slice `k` is `[k, k + 1) × ttl / 10` on the
/// timer's clock, so expiry is deterministic and the state can be one
/// atomic word per slice (a `static` has no construction instant to anchor
/// Finagle's slices to). Decisions are Finagle's whenever every slice that
/// sees a request sees one at its start (a seeded test checks this against
/// a port of Finagle's code). Otherwise Finagle's slices are longer: one
/// lasts until the first request after it is `ttl / 10` old and still
/// counts as one slice, so an entry may count there for up to almost twice
/// `ttl` when requests are sparse, while here it counts for 9 to 10 tenths
/// of `ttl`, never longer (e.g. withdrawals made at 0.5 s, with a request
/// at 1.5 s, still count at 10.4 s in Finagle, not here).
///
/// How: deposits and withdrawals are kept in reduced units (both divided by
/// their greatest common divisor: 1 and 5 for 20 %, which changes no
/// decision) in ten 64-bit slots, each `(slice number, signed sum)`, reset
/// lazily when a later slice reuses it. A withdrawal reads the window and
/// compare-and-swaps the current slot, so two threads in one slice never
/// spend the same units. A slot's sum saturates rather than wraps; a
/// withdrawal that would not fit is denied.
///
/// Units: `ttl` a [`Duration`] (clamped to 1..=60 s, as Finagle requires),
/// `min_retries_per_sec` in retries per second, `percent_can_retry_permille`
/// in ‰ of first attempts (200 = 20 %, at most 1 000 000 = 1000×, Finagle's
/// limit). A retry's `cost` (the policy's `budget.cost`) multiplies its
/// withdrawal; deposits are one per first attempt.
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
/// use recourse_core::budget::RetryRatio;
/// use recourse_core::Instant;
///
/// static RETRIES: RetryRatio = RetryRatio::finagle();
/// assert_eq!(RETRIES.balance(Instant::ZERO), 100); // 10 retries/s × 10 s
/// ```
///
/// [`finagle`]: Self::finagle
#[derive(Debug)]
pub struct RetryRatio {
    /// Slice length, in milliseconds.
    slice_ms: u64,
    /// Reduced units per first attempt.
    deposit: i64,
    /// Reduced units per retry or hedge (cost 1).
    withdrawal: i64,
    /// Reduced units always available, on top of the window.
    reserve: i64,
    /// `(slice number as u32) << 32 | (sum as i32 as u32)` per slot; slot
    /// `k % 10` holds slice `k`.
    slots: [AtomicU64; SLICES as usize],
}

/// What a slot holds for slice `now` (whether it was a later slice's).
enum Slot {
    /// The sum of slice `now` so far.
    Current(i32),
    /// An older slice: expired, reusable.
    Expired,
    /// A later slice (another thread's `now` is a whole window ahead).
    Later,
}

const fn pack(slice: u64, sum: i32) -> u64 {
    ((slice as u32 as u64) << 32) | (sum as u32 as u64)
}

const fn sum_of(word: u64) -> i32 {
    word as u32 as i32
}

/// How many slices `word`'s slice lies before slice `now` (mod 2³²; a
/// later slice wraps to a huge age).
const fn age(word: u64, now: u64) -> u32 {
    (now as u32).wrapping_sub((word >> 32) as u32)
}

const fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

impl RetryRatio {
    /// Finagle's `RetryBudget()`: 10 s, 10 retries/s, 20 %.
    pub const fn finagle() -> Self {
        Self::new(Duration::from_secs(10), 10, 200)
    }

    /// Finagle's `RetryBudget(ttl, minRetriesPerSec, percentCanRetry)`, the
    /// percentage in per-mille (200 = 20 %).
    pub const fn new(
        ttl: Duration,
        min_retries_per_sec: u32,
        percent_can_retry_permille: u32,
    ) -> Self {
        let ttl_ms = clamp(ttl.as_millis(), 1_000, 60_000) as u64;
        let ttl_secs = ttl_ms / 1_000;
        let pm = if percent_can_retry_permille as u64 > SCALE * PERMILLE {
            SCALE * PERMILLE
        } else {
            percent_can_retry_permille as u64
        };
        // Finagle: deposit = 1000, withdrawal = (1000 / percent).toInt, or
        // 0 and 1 when percent is 0 ("all credits come via time").
        let (deposit, withdrawal) = match (SCALE * PERMILLE).checked_div(pm) {
            Some(withdrawal) => (SCALE, withdrawal),
            None => (0, 1),
        };
        let g = gcd(deposit, withdrawal);
        let (deposit, withdrawal) = (deposit / g, withdrawal / g);
        Self {
            slice_ms: ttl_ms / SLICES,
            deposit: deposit as i64,
            withdrawal: withdrawal as i64,
            reserve: (min_retries_per_sec as u64 * ttl_secs * withdrawal) as i64,
            slots: [const { AtomicU64::new(0) }; SLICES as usize],
        }
    }

    /// Retries (cost 1) that would be allowed at `now`: Finagle's `balance`.
    /// Negative when more was withdrawn than is left after deposits expired.
    pub fn balance(&self, now: Instant) -> i64 {
        let slice = self.slice(now);
        let current = self.slot(slice).load(Ordering::Relaxed);
        self.count(slice, current) / self.withdrawal
    }

    /// The slice `now` falls in.
    const fn slice(&self, now: Instant) -> u64 {
        now.as_nanos() / NANOS_PER_MS / self.slice_ms
    }

    const fn slot(&self, slice: u64) -> &AtomicU64 {
        &self.slots[(slice % SLICES) as usize]
    }

    const fn read(word: u64, slice: u64) -> Slot {
        match age(word, slice) {
            0 => Slot::Current(sum_of(word)),
            // Only a slot a racing thread wrote for a slightly later `now`
            // is ahead; anything else is old, including a never-written
            // word (slice 0) seen from a clock far from its epoch.
            a if a > u32::MAX - 2 * SLICES as u32 => Slot::Later,
            _ => Slot::Expired,
        }
    }

    /// `reserve + Σ window` at `slice`, in reduced units, with `current` as
    /// the current slot's word.
    fn count(&self, slice: u64, current: u64) -> i64 {
        let mut sum = self.reserve;
        for (i, slot) in self.slots.iter().enumerate() {
            let word = if i as u64 == slice % SLICES {
                current
            } else {
                slot.load(Ordering::Relaxed)
            };
            if age(word, slice) < SLICES as u32 {
                sum += i64::from(sum_of(word));
            }
        }
        sum
    }

    /// Adds `units` (≥ 0) to the current slice, saturating.
    fn deposit_units(&self, units: i64, now: Instant) {
        if units == 0 {
            return;
        }
        let slice = self.slice(now);
        let _ = self
            .slot(slice)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let sum = match Self::read(word, slice) {
                    Slot::Current(sum) => sum,
                    Slot::Expired => 0,
                    // A whole window late: the deposit has already expired.
                    Slot::Later => return None,
                };
                let sum = i64::from(sum).saturating_add(units);
                Some(pack(slice, sum.min(i64::from(i32::MAX)) as i32))
            });
    }

    /// Withdraws `units` if `reserve + Σ window` covers them at `now`.
    fn withdraw(&self, units: i64, now: Instant) -> bool {
        let slice = self.slice(now);
        let slot = self.slot(slice);
        let mut word = slot.load(Ordering::Relaxed);
        loop {
            let sum = match Self::read(word, slice) {
                Slot::Current(sum) => sum,
                Slot::Expired => 0,
                Slot::Later => return false,
            };
            if self.count(slice, word) < units {
                return false;
            }
            let Ok(next) = i32::try_from(i64::from(sum) - units) else {
                return false;
            };
            // Only threads in this slice write this slot, so the CAS fails
            // exactly when one of them deposited or withdrew meanwhile.
            match slot.compare_exchange_weak(
                word,
                pack(slice, next),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }
}

const fn clamp(v: u128, lo: u128, hi: u128) -> u128 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

impl Default for RetryRatio {
    /// [`RetryRatio::finagle`].
    fn default() -> Self {
        Self::finagle()
    }
}

impl Budget for RetryRatio {
    /// First attempts are always allowed and deposit; retries and hedges
    /// withdraw `cost` retries' worth or are denied. The reservation holds
    /// the units withdrawn.
    fn decide(&self, request: &BudgetRequest<'_>) -> Decision {
        if let AttemptKind::Initial = request.kind {
            self.deposit_units(self.deposit, request.now);
            return Decision::ALLOW;
        }
        let units = self
            .withdrawal
            .saturating_mul(i64::from(request.cost.max(1)));
        if self.withdraw(units, request.now) {
            Decision::reserve(Reservation(units as u64))
        } else {
            Decision::DENY
        }
    }

    /// Withdrawals are final once the attempt ran (Finagle has no refund);
    /// an attempt that was allowed but never ran gives its units back.
    fn settle(&self, record: &AttemptRecord, reservation: Option<Reservation>, now: Instant) {
        if let (false, Some(Reservation(units))) = (record.budget_allowed, reservation) {
            self.deposit_units(i64::try_from(units).unwrap_or(i64::MAX), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::AtomicI64;

    use super::super::testing::{
        attempt, decide, ms, record, request, FAILED, HEDGE, INITIAL, RETRY,
    };
    use super::*;
    use crate::outcome::{reason, Outcome};

    fn initial(b: &RetryRatio, now: Instant) {
        assert_eq!(decide(b, INITIAL, now), Decision::ALLOW);
    }

    fn retry(b: &RetryRatio, now: Instant) -> bool {
        attempt(b, RETRY, FAILED, now)
    }

    #[test]
    fn finagle_defaults_in_reduced_units() {
        // deposit 1000, withdrawal 1000 / 0.2 = 5000, reserve
        // 10 × 10 × 5000 = 500 000; ÷ gcd 1000 → 1, 5, 500.
        let b = RetryRatio::finagle();
        assert_eq!((b.deposit, b.withdrawal, b.reserve), (1, 5, 500));
        assert_eq!(b.slice_ms, 1_000);
    }

    #[test]
    fn golden_reserve_is_spent_then_expires() {
        let b = RetryRatio::finagle();
        // A quiet client: 500 / 5 = 100 retries, the 101st is denied.
        assert_eq!(b.balance(ms(0)), 100);
        for i in 0..100 {
            assert!(retry(&b, ms(0)), "retry {i}");
        }
        let d = decide(&b, RETRY, ms(0));
        assert_eq!((d.allowed, d.reason), (false, reason::BUDGET_DENIED));
        assert_eq!(b.balance(ms(0)), 0);
        // Hedges draw on the same balance.
        assert!(!decide(&b, HEDGE, ms(0)).allowed);
        // 9.999 s: slice 9, the window [0, 9] still holds the withdrawals.
        assert_eq!(b.balance(ms(9_999)), 0);
        assert!(!retry(&b, ms(9_999)));
        // 10 s: slice 10, slice 0 has expired: the reserve is whole again.
        assert_eq!(b.balance(ms(10_000)), 100);
    }

    #[test]
    fn golden_deposits_add_a_fifth_and_expire() {
        // Under Miri, 500 first attempts: 200 retries, then 50 left.
        const FIRSTS: i64 = if cfg!(miri) { 500 } else { 1_000 };
        let b = RetryRatio::finagle();
        // 1000 first attempts at 0 s: (500 + 1000) / 5 = 300 retries.
        for _ in 0..FIRSTS {
            initial(&b, ms(0));
        }
        assert_eq!(b.balance(ms(0)), (500 + FIRSTS) / 5);
        // 150 retries at 5 s (slice 5): 1500 − 750 = 750 → 150 left.
        for _ in 0..150 {
            assert!(retry(&b, ms(5_000)));
        }
        assert_eq!(b.balance(ms(5_000)), (500 + FIRSTS) / 5 - 150);
        // 10 s: the deposits (slice 0) expire, the withdrawals (slice 5)
        // do not: 500 − 750 = −250 units → balance −50, nothing allowed.
        assert_eq!(b.balance(ms(10_000)), -50);
        assert!(!retry(&b, ms(10_000)));
        // 15 s: the withdrawals expire too.
        assert_eq!(b.balance(ms(15_000)), 100);
    }

    #[test]
    fn golden_finagle_test_budget_interleaved() {
        // Finagle's RetryBudgetTest.testBudget(ttl = 1 s,
        // minRetriesPerSec = 10, percentCanRetry = 0.1) at frozen time:
        // deposit 1000, withdrawal 10 000, reserve 10 × 1 × 10 000 → ÷1000:
        // 1, 10, 100. Each request deposits, then tries a retry. Steps 1–11
        // retry (100 + 1 − 10 each: 100, 91, …, 1), then every 10th
        // request (count climbs 1 → 10): steps 20, 30, …, 10 000 — 999
        // more. 11 + 999 = 1010 = 10 000 × 0.1 + 10, Finagle's expectation
        // (which it allows ±1; here it is exact). Under Miri, 100 steps:
        // 11 + 9 = 20.
        const STEPS: u32 = if cfg!(miri) { 100 } else { 10_000 };
        let b = RetryRatio::new(Duration::from_secs(1), 10, 100);
        assert_eq!((b.deposit, b.withdrawal, b.reserve), (1, 10, 100));
        assert_eq!(b.balance(ms(0)), 10);
        let mut retried = 0;
        for step in 1..=STEPS {
            initial(&b, ms(0));
            if retry(&b, ms(0)) {
                retried += 1;
                assert!(step <= 11 || step % 10 == 0, "step {step}");
            } else {
                assert_eq!(b.balance(ms(0)), 0, "step {step}");
            }
        }
        assert_eq!(retried, STEPS / 10 + 10);
    }

    #[test]
    fn golden_percent_above_one_and_empty() {
        // Finagle: percentCanRetry 2.0, no minimum, ttl 60 s: 10 000
        // deposits give a balance of 20 000 (withdrawal 1000 / 2 = 500).
        // Under Miri, 200 deposits give 400.
        const DEPOSITS: i64 = if cfg!(miri) { 200 } else { 10_000 };
        let b = RetryRatio::new(Duration::from_secs(60), 0, 2_000);
        assert_eq!(b.balance(ms(0)), 0);
        assert!(!retry(&b, ms(0)));
        for _ in 0..DEPOSITS {
            initial(&b, ms(0));
        }
        assert_eq!(b.balance(ms(0)), 2 * DEPOSITS);
        // percentCanRetry 0 and minRetriesPerSec 0 is Finagle's Empty.
        let empty = RetryRatio::new(Duration::from_secs(10), 0, 0);
        initial(&empty, ms(0));
        assert_eq!(empty.balance(ms(0)), 0);
        assert!(!retry(&empty, ms(0)));
        // Only a minimum: every retry costs 1 unit, requests give nothing.
        let min_only = RetryRatio::new(Duration::from_secs(2), 5, 0);
        assert_eq!(
            (min_only.deposit, min_only.withdrawal, min_only.reserve),
            (0, 1, 10)
        );
        initial(&min_only, ms(0));
        assert_eq!(min_only.balance(ms(0)), 10);
    }

    #[test]
    fn ttl_is_clamped_and_cost_multiplies() {
        assert_eq!(RetryRatio::new(Duration::ZERO, 1, 200).slice_ms, 100);
        assert_eq!(
            RetryRatio::new(Duration::from_secs(600), 1, 200).slice_ms,
            6_000
        );
        let b = RetryRatio::finagle(); // 100 retries of cost 1
        let d = b.decide(&request(RETRY, 40, None, ms(0)));
        assert_eq!(d, Decision::reserve(Reservation(200)));
        assert_eq!(b.balance(ms(0)), 60);
        assert!(!b.decide(&request(RETRY, 61, None, ms(0))).allowed);
        assert_eq!(b.balance(ms(0)), 60);
        // Settling a retry that ran gives nothing back; one that never ran
        // does.
        b.settle(
            &record(RETRY, Outcome::SUCCESS, ms(0)),
            d.reservation,
            ms(0),
        );
        assert_eq!(b.balance(ms(0)), 60);
        let mut never_ran = record(RETRY, Outcome::abort(reason::BUDGET_DENIED), ms(0));
        never_ran.budget_allowed = false;
        b.settle(&never_ran, d.reservation, ms(0));
        assert_eq!(b.balance(ms(0)), 100);
    }

    /// Open defect (issue 17): a thread whose `now` lags a slice behind
    /// another's spends, sequentially, a deposit the later slice already
    /// spent (the balance goes to −1): a withdrawal at slice 0 does not
    /// count the slot a later slice wrote. A fix (acting in the latest
    /// slice, sealing the other slots) passed this test and the loom
    /// models but broke the conservation law in the `shared` fuzz target
    /// (a balance that rose after a withdrawal), so it was not merged.
    #[test]
    #[ignore = "open defect: a lagging clock spends what a later slice spent"]
    fn a_lagging_clock_cannot_spend_what_a_later_slice_spent() {
        // 100 %: a first attempt pays for exactly one retry; no reserve.
        let b = RetryRatio::new(Duration::from_secs(1), 0, 1_000);
        initial(&b, ms(0)); // slice 0
        assert!(retry(&b, ms(100))); // slice 1 spends it
        assert!(!retry(&b, ms(0)), "a lagging clock spent it again");
        assert_eq!(b.balance(ms(100)), 0);
    }

    #[test]
    fn a_whole_window_late_changes_nothing() {
        let b = RetryRatio::finagle();
        initial(&b, ms(20_000)); // slice 20, slot 0
                                 // A thread whose `now` is 20 s behind: its slot holds a later slice.
        initial(&b, ms(0));
        assert!(!b.withdraw(5, ms(0)));
        assert_eq!(b.balance(ms(20_000)), 100); // (500 + 1) / 5
        assert_eq!(b.count(20, b.slots[0].load(Ordering::Relaxed)), 501);
    }

    /// Finagle's `TokenRetryBudget` over `TokenBucket.newLeakyBucket` over
    /// `WindowedAdder(ttl, 10, now)`, ported line by line (unreduced units,
    /// drifting slices), as the reference the budget is checked against.
    struct Finagle {
        window: u64,
        buf: [i64; 9],
        writer: i64,
        i: usize,
        old: u64,
        reserve: i64,
        deposit: i64,
        withdrawal: i64,
    }

    impl Finagle {
        fn new(ttl_secs: u64, min_retries_per_sec: i64, percent: f64) -> Self {
            let deposit = if percent == 0.0 { 0 } else { 1_000 };
            let withdrawal = if percent == 0.0 {
                1
            } else {
                (1_000.0 / percent) as i64
            };
            Self {
                window: ttl_secs * 1_000 / 10,
                buf: [0; 9],
                writer: 0,
                i: 0,
                old: 0, // constructed at t = 0
                reserve: min_retries_per_sec * ttl_secs as i64 * withdrawal,
                deposit,
                withdrawal,
            }
        }
        fn expire(&mut self, now: u64) {
            if now - self.old < self.window {
                return;
            }
            self.buf[self.i] = core::mem::take(&mut self.writer);
            self.i = (self.i + 1) % 9;
            let nskip = ((now - self.old) / self.window - 1).min(9) as usize;
            for k in 0..nskip {
                self.buf[(self.i + k) % 9] = 0;
            }
            self.i = (self.i + nskip) % 9;
            self.old = now;
        }
        fn count(&mut self, now: u64) -> i64 {
            self.expire(now);
            self.writer + self.buf.iter().sum::<i64>() + self.reserve
        }
        fn deposit(&mut self, now: u64) {
            self.expire(now);
            self.writer += self.deposit;
        }
        fn try_withdraw(&mut self, now: u64) -> bool {
            let ok = self.count(now) >= self.withdrawal;
            if ok {
                self.expire(now);
                self.writer -= self.withdrawal;
            }
            ok
        }
        fn balance(&mut self, now: u64) -> i64 {
            self.count(now) / self.withdrawal
        }
    }

    #[test]
    fn matches_finagle_when_each_active_slice_starts_with_a_request() {
        // Seeded random traffic over 300 s: when the first request of every
        // slice that has any arrives at the slice's start, Finagle's
        // drifting slices coincide with the fixed ones, and every decision
        // and balance must be Finagle's. Miri, which interprets every step,
        // runs the first 5 slices of each configuration only.
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut all_allowed, mut all_denied) = (0, 0);
        for (ttl, min, permille) in [
            (10, 10, 200),
            (1, 10, 100),
            (2, 5, 500),
            (5, 0, 250),
            (3, 1, 2_000),
            (4, 3, 0),
        ] {
            let b = RetryRatio::new(Duration::from_secs(ttl), min as u32, permille);
            let mut f = Finagle::new(ttl, min, f64::from(permille) / 1_000.0);
            let slice = ttl * 100;
            let (mut allowed, mut denied) = (0, 0);
            let slices = if cfg!(miri) { 5 } else { 300_000 / slice };
            for k in 0..slices {
                if rng.u8(..10) < 3 {
                    continue; // a quiet slice
                }
                let start = k * slice;
                assert_eq!(
                    b.balance(ms(start)),
                    f.balance(start),
                    "ttl {ttl} slice {k}"
                );
                let mut times: std::vec::Vec<u64> = (0..rng.usize(..40))
                    .map(|_| start + rng.u64(..slice))
                    .collect();
                times.sort_unstable();
                for t in times {
                    // Mostly retries, so that balances run out.
                    if rng.u8(..10) < 6 {
                        let ours = retry(&b, ms(t));
                        assert_eq!(ours, f.try_withdraw(t), "ttl {ttl} at {t} ms");
                        if ours {
                            allowed += 1
                        } else {
                            denied += 1
                        }
                    } else {
                        initial(&b, ms(t));
                        f.deposit(t);
                    }
                    assert_eq!(b.balance(ms(t)), f.balance(t), "ttl {ttl} at {t} ms");
                }
            }
            // Both outcomes were exercised: in every configuration over
            // 300 s; over all of them in Miri's shorter run, in which some
            // configurations never run out.
            assert!(
                cfg!(miri) || (allowed > 20 && denied > 20),
                "ttl {ttl}: {allowed} allowed, {denied} denied"
            );
            all_allowed += allowed;
            all_denied += denied;
        }
        assert!(
            all_allowed > 50 && all_denied > 50,
            "{all_allowed} allowed, {all_denied} denied"
        );
    }

    #[test]
    fn documented_difference_finagle_slices_drift() {
        // Withdrawals at 0.5 s, a request at 1.5 s, a look at 10.4 s.
        let b = RetryRatio::finagle();
        let mut f = Finagle::new(10, 10, 0.2);
        for _ in 0..100 {
            assert!(retry(&b, ms(500)));
            assert!(f.try_withdraw(500));
        }
        initial(&b, ms(1_500));
        f.deposit(1_500); // Finagle's second slice starts here, not at 1 s
                          // Here slice 0 ([0, 1) s) has left the window [1, 10] s; in Finagle
                          // the slice [0.5, 1.5) s is still one of its last ten.
        assert_eq!(b.balance(ms(10_400)), 100);
        assert_eq!(f.balance(10_400), 0);
        // From 11.5 s on they agree again.
        assert_eq!(b.balance(ms(11_500)), f.balance(11_500));
    }

    #[test]
    fn static_instance() {
        static RATIO: RetryRatio = RetryRatio::finagle();
        initial(&RATIO, ms(0));
        assert!(retry(&RATIO, ms(0)));
        assert_eq!(RATIO.balance(ms(0)), 99);
    }

    #[test]
    fn two_threads_neither_create_nor_lose_units() {
        // Both threads deposit 5000 times and try a retry after each, then
        // drain. Whatever the interleaving, the units are conserved: the
        // retries allowed are exactly (500 + 10 000) / 5 = 2100 (under Miri,
        // 100 deposits each: (500 + 200) / 5 = 140).
        const DEPOSITS: i64 = if cfg!(miri) { 100 } else { 5_000 };
        let b = RetryRatio::finagle();
        let retried = AtomicI64::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut mine = 0;
                    for _ in 0..DEPOSITS {
                        initial(&b, ms(3_000));
                        mine += i64::from(retry(&b, ms(3_000)));
                    }
                    while retry(&b, ms(3_000)) {
                        mine += 1;
                    }
                    retried.fetch_add(mine, Ordering::Relaxed);
                });
            }
        });
        assert_eq!(retried.into_inner(), (500 + 2 * DEPOSITS) / 5);
        assert_eq!(b.balance(ms(3_000)), 0);
    }
}
