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
mod tests;
