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
/// Clocks: calls pass their own `now`, and threads' clocks lag one
/// another a little. Like Finagle's window, which never moves back, the
/// budget keeps the latest slice a call has brought to it (a call raises it
/// as it begins, before it acts): a call whose slice is behind it by less
/// than a window acts in that latest slice (its deposit lands there, its
/// withdrawal is checked against that slice's window and recorded there),
/// so a thread whose clock lags can neither spend what a later slice
/// already spent nor count a deposit the later slice has seen expire. A
/// call a whole window (10 slices) or more behind is too late: its deposit
/// has already expired and is dropped, its withdrawal is denied.
/// [`balance`](Self::balance) at a `now` behind the latest slice is the
/// latest slice's.
///
/// How: deposits and withdrawals are kept in reduced units (both divided by
/// their greatest common divisor: 1 and 5 for 20 %, which changes no
/// decision) in ten 64-bit slots, each `(sealed, slice number, signed sum)`,
/// reset lazily when a later slice reuses it, beside the latest slice (one
/// more 64-bit word, only ever raised). A withdrawal seals the nine other
/// slots (once per slice: a sealed slot stays sealed until a later slice
/// reuses it), counts them, checks that its own slot and the latest slice
/// are still what it read, and compare-and-swaps its own slot, which fails if
/// another call wrote it meanwhile or a call in a later slice sealed it. So
/// decisions are those of some sequential order of the calls' clock raises
/// and their acts (the loom models in `core/tests/loom_budgets.rs` check
/// this): two threads never spend the same units, in one slice or across a
/// slice boundary. A slot's sum saturates rather than wraps; a
/// withdrawal that would not fit is denied. Slice numbers are kept mod 2³¹
/// in the slots: a slot last written a multiple of 5 × 2³¹ slices (34 years
/// of 100 ms slices) before is read as recent, by balances and decisions
/// alike.
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
    /// The latest slice a call acted in (only ever raised).
    latest: AtomicU64,
    /// `sealed << 63 | (slice number mod 2³¹) << 32 | (sum as i32 as u32)`
    /// per slot; slot `k % 10` holds slice `k`.
    slots: [AtomicU64; SLICES as usize],
}

/// Bit 63 of a slot word: sealed. A withdrawal seals every other slot before
/// it counts them, so a call in an earlier slice can no longer write there.
const SEAL: u64 = 1 << 63;
/// A slot word keeps its slice number mod 2³¹ (bits 62..32).
const TAG_MASK: u32 = (1 << 31) - 1;

const fn pack(slice: u64, sum: i32) -> u64 {
    (((slice as u32 & TAG_MASK) as u64) << 32) | (sum as u32 as u64)
}

const fn sum_of(word: u64) -> i32 {
    word as u32 as i32
}

const fn sealed(word: u64) -> bool {
    word & SEAL != 0
}

/// Whether `word` holds slice `slice` (mod 2³¹).
const fn holds(word: u64, slice: u64) -> bool {
    (word >> 32) as u32 & TAG_MASK == slice as u32 & TAG_MASK
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
            latest: AtomicU64::new(0),
            slots: [const { AtomicU64::new(0) }; SLICES as usize],
        }
    }

    /// Retries (cost 1) that would be allowed at `now`: Finagle's `balance`.
    /// Negative when more was withdrawn than is left after deposits expired.
    /// A `now` behind the latest slice a call acted in reads that slice.
    pub fn balance(&self, now: Instant) -> i64 {
        let slice = self.slice(now).max(self.latest.load(Ordering::Acquire));
        self.window(slice) / self.withdrawal
    }

    /// `reserve + Σ window` at `slice`, in reduced units.
    fn window(&self, slice: u64) -> i64 {
        let mut sum = self.reserve;
        for (i, slot) in self.slots.iter().enumerate() {
            sum += Self::in_window(slot.load(Ordering::Acquire), slice, i);
        }
        sum
    }

    /// What slot `i`'s `word` adds to the window of `slice`: its sum if it
    /// holds one of the window's ten slices (and is that slice's slot: a
    /// word whose slice number wrapped to look recent is not), else 0.
    fn in_window(word: u64, slice: u64, i: usize) -> i64 {
        let age = (slice as u32).wrapping_sub((word >> 32) as u32) & TAG_MASK;
        let age = u64::from(age);
        match slice.checked_sub(age) {
            Some(s) if age < SLICES && s % SLICES == i as u64 => i64::from(sum_of(word)),
            _ => 0,
        }
    }

    /// The slice `now` falls in.
    const fn slice(&self, now: Instant) -> u64 {
        now.as_nanos() / NANOS_PER_MS / self.slice_ms
    }

    const fn slot(&self, slice: u64) -> &AtomicU64 {
        &self.slots[(slice % SLICES) as usize]
    }

    /// The slice a call at `slice` acts in: the latest slice, raised to
    /// `slice` if that is later; `None` when `slice` is a whole window
    /// behind it (too late to count).
    fn act(&self, slice: u64) -> Option<u64> {
        let mut latest = self.latest.load(Ordering::Acquire);
        loop {
            if slice <= latest {
                return (latest - slice < SLICES).then_some(latest);
            }
            match self.latest.compare_exchange_weak(
                latest,
                slice,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(slice),
                Err(actual) => latest = actual,
            }
        }
    }

    /// Slice `slice`'s slot word and its sum (0 for an older slice's word,
    /// which the call's compare-and-swap replaces). `None` when a later
    /// slice has begun: the call starts again there.
    fn own(&self, slice: u64) -> Option<(u64, i32)> {
        let word = self.slot(slice).load(Ordering::Acquire);
        if holds(word, slice) {
            // Sealed: a call in a later slice counted it.
            (!sealed(word)).then_some((word, sum_of(word)))
        } else {
            // An older slice's slot, unless a later slice (one that reuses
            // this slot) has begun.
            (self.latest.load(Ordering::Acquire) == slice).then_some((word, 0))
        }
    }

    /// Adds `units` (≥ 0) in the slice the call acts in, saturating.
    fn deposit_units(&self, units: i64, now: Instant) {
        if units == 0 {
            return;
        }
        let slice = self.slice(now);
        // A whole window late: the deposit has already expired.
        while let Some(at) = self.act(slice) {
            let Some((word, sum)) = self.own(at) else {
                continue;
            };
            let sum = i64::from(sum).saturating_add(units);
            let next = pack(at, sum.min(i64::from(i32::MAX)) as i32);
            if self
                .slot(at)
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Withdraws `units` if `reserve + Σ window` covers them in the slice
    /// the call acts in.
    fn withdraw(&self, units: i64, now: Instant) -> bool {
        let slice = self.slice(now);
        'again: loop {
            let Some(at) = self.act(slice) else {
                return false; // a whole window late
            };
            let Some((word, sum)) = self.own(at) else {
                continue;
            };
            let mine = (at % SLICES) as usize;
            let mut count = self.reserve + i64::from(sum);
            for (i, slot) in self.slots.iter().enumerate() {
                if i == mine {
                    continue;
                }
                let mut other = slot.load(Ordering::Acquire);
                while !sealed(other) {
                    // Unsealed: an earlier slice's (seal it) or a later
                    // one's (act there).
                    if self.latest.load(Ordering::Acquire) != at {
                        continue 'again;
                    }
                    match slot.compare_exchange(
                        other,
                        other | SEAL,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => other |= SEAL,
                        Err(actual) => other = actual,
                    }
                }
                count += Self::in_window(other, at, i);
            }
            // The window counted is the budget's at this point if the slot
            // and the latest slice are still what the call read (the sealed
            // slots change only once a later slice has begun).
            if self.slot(at).load(Ordering::Acquire) != word
                || self.latest.load(Ordering::Acquire) != at
            {
                continue;
            }
            if count < units {
                return false;
            }
            let Ok(next) = i32::try_from(i64::from(sum) - units) else {
                return false;
            };
            if self
                .slot(at)
                .compare_exchange(word, pack(at, next), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return true;
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
