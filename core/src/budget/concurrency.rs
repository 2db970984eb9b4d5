//! [`Concurrency`]: Envoy's retry budget — extra attempts in flight at most
//! a share of the attempts in flight.

use crate::sync::{AtomicUsize, Ordering};

use super::{Budget, BudgetRequest, Decision, Reservation};
use crate::record::{AttemptKind, AttemptRecord};
use crate::time::Instant;

/// Bits per half of the state word: active attempts in the low half, extra
/// attempts in the high half (32 + 32 on 64-bit targets, 16 + 16 on 32-bit
/// ones).
const HALF: u32 = usize::BITS / 2;
/// The most either half counts.
const HALF_MAX: usize = (1 << HALF) - 1;
/// What an attempt adds to the word.
const ONE_ACTIVE: usize = 1;
const ONE_EXTRA: usize = 1 << HALF;
/// What a retry or hedge holds: it is active and extra.
const EXTRA_ATTEMPT: usize = ONE_ACTIVE | ONE_EXTRA;
const PERMILLE: u64 = 1_000;

/// Bounds the retries and hedges *in flight* to a share of the attempts in
/// flight, never below a minimum.
///
/// Why: budgets over time (a ratio, a quota) let a burst of retries through
/// as long as the window's average is fine. A concurrency budget bounds the
/// extra load at every instant instead: with 20 %, retries and hedges are
/// never more than about a fifth of what this process has outstanding, and
/// the minimum keeps a quiet process able to retry at all. It needs no
/// clock: it counts attempts between [`decide`](Budget::decide) and
/// [`settle`](Budget::settle).
///
/// Reference: Envoy's cluster retry budget (`circuit_breakers.thresholds
/// .retry_budget`: `budget_percent` 20 %, `min_retry_concurrency` 3;
/// `ResourceManagerImpl::RetryBudgetImpl`) — [`envoy`]:
///
/// - a retry or hedge is allowed while `extra < max(min_retry_concurrency,
///   floor(budget_percent × active))`, where `extra` is the retries and
///   hedges this budget allowed that have not settled, and `active` is every
///   attempt it allowed that has not settled — first attempts, retries and
///   hedges, as Envoy's active-request count includes every upstream
///   request, retries too;
/// - first attempts are always allowed, and count as active until they
///   settle;
/// - each allowed attempt's reservation records what it added (active, or
///   active and extra); [`settle`](Budget::settle) takes exactly that back,
///   however the attempt ended. `cost` is not used: an attempt in flight is
///   one, whatever it costs.
///
/// Envoy computes `budget_percent / 100.0 × active` in `f64` and truncates;
/// here it is `active × budget_permille / 1000` in integers, the same for
/// every whole or tenth percentage (20 % of 25 is 5, of 24 is 4).
///
/// How: both counts live in one word, so the check and the increment are
/// one compare-and-swap and two threads cannot both take the last slot.
/// On a 32-bit target each count stops at 65 535: a first attempt beyond
/// that is allowed without being counted (no reservation), a retry or hedge
/// is denied.
///
/// Units: `budget_permille` in ‰ of active attempts (200 = 20 %),
/// `min_retry_concurrency` in attempts.
///
/// Available on every target with compare-and-swap (`cfg(target_has_atomic
/// = "32")`: microcontrollers included), and on those without it, such as
/// Cortex-M0 (`thumbv6m-none-eabi`), with the `critical-section` feature.
///
/// ```
/// use recourse_core::budget::Concurrency;
///
/// static EXTRA: Concurrency = Concurrency::envoy();
/// assert_eq!(EXTRA.limit(), 3);
/// ```
///
/// [`envoy`]: Self::envoy
#[derive(Debug)]
pub struct Concurrency {
    budget_permille: u32,
    min_retry_concurrency: u32,
    /// `extra << HALF | active`.
    state: AtomicUsize,
}

const fn active_of(word: usize) -> usize {
    word & HALF_MAX
}

const fn extra_of(word: usize) -> usize {
    word >> HALF
}

impl Concurrency {
    /// Envoy's defaults: 20 %, at least 3.
    pub const fn envoy() -> Self {
        Self::new(200, 3)
    }

    /// Retries and hedges in flight at most `max(min_retry_concurrency,
    /// budget_permille ‰ of the attempts in flight)`.
    pub const fn new(budget_permille: u32, min_retry_concurrency: u32) -> Self {
        Self {
            budget_permille,
            min_retry_concurrency,
            state: AtomicUsize::new(0),
        }
    }

    /// Attempts allowed and not yet settled, every kind.
    pub fn active(&self) -> usize {
        active_of(self.state.load(Ordering::Relaxed))
    }

    /// Retries and hedges allowed and not yet settled.
    pub fn extra_in_flight(&self) -> usize {
        extra_of(self.state.load(Ordering::Relaxed))
    }

    /// How many retries and hedges may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit_for(self.active())
    }

    fn limit_for(&self, active: usize) -> usize {
        // `active` < 2³², `budget_permille` < 2³²: the product fits u64.
        let share = active as u64 * u64::from(self.budget_permille) / PERMILLE;
        let share = usize::try_from(share).unwrap_or(usize::MAX);
        share.max(self.min_retry_concurrency as usize)
    }
}

impl Default for Concurrency {
    /// [`Concurrency::envoy`].
    fn default() -> Self {
        Self::envoy()
    }
}

impl Budget for Concurrency {
    fn decide(&self, request: &BudgetRequest<'_>) -> Decision {
        // One word, totally ordered read-modify-writes: Relaxed suffices.
        if let AttemptKind::Initial = request.kind {
            let counted = self
                .state
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                    (active_of(w) < HALF_MAX).then_some(w + ONE_ACTIVE)
                })
                .is_ok();
            return if counted {
                Decision::reserve(Reservation(ONE_ACTIVE as u64))
            } else {
                Decision::ALLOW
            };
        }
        let admitted = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                let (active, extra) = (active_of(w), extra_of(w));
                let room = extra < self.limit_for(active) && active < HALF_MAX && extra < HALF_MAX;
                room.then_some(w + EXTRA_ATTEMPT)
            })
            .is_ok();
        if admitted {
            Decision::reserve(Reservation(EXTRA_ATTEMPT as u64))
        } else {
            Decision::DENY
        }
    }

    /// Takes back exactly what the reservation records; a reservation this
    /// budget did not make, or one settled twice, changes nothing.
    fn settle(&self, _record: &AttemptRecord, reservation: Option<Reservation>, _now: Instant) {
        let Some(Reservation(r)) = reservation else {
            return;
        };
        let release = match usize::try_from(r) {
            Ok(release @ (ONE_ACTIVE | EXTRA_ATTEMPT)) => release,
            _ => {
                debug_assert!(false, "not a Concurrency reservation: {r}");
                return;
            }
        };
        let released = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                let enough = active_of(w) >= active_of(release) && extra_of(w) >= extra_of(release);
                enough.then(|| w - release)
            })
            .is_ok();
        debug_assert!(released, "a Concurrency reservation settled twice");
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::AtomicU32;
    use std::vec::Vec;

    use super::super::testing::{decide, ms, record, FAILED, HEDGE, INITIAL, RETRY};
    use super::*;
    use crate::outcome::{reason, Outcome};

    fn settle(c: &Concurrency, kind: AttemptKind, d: Decision) {
        c.settle(&record(kind, FAILED, ms(0)), d.reservation, ms(0));
    }

    #[test]
    fn golden_minimum_when_quiet() {
        // 20 %, min 3. Nothing in flight: floor(0.2 × a) < 3 for a ≤ 14,
        // so exactly 3 extra attempts, whatever their kind.
        let c = Concurrency::envoy();
        let held: Vec<Decision> = [RETRY, HEDGE, RETRY]
            .iter()
            .map(|k| decide(&c, *k, ms(0)))
            .collect();
        assert!(held
            .iter()
            .all(|d| *d == Decision::reserve(Reservation(EXTRA_ATTEMPT as u64))));
        assert_eq!((c.active(), c.extra_in_flight(), c.limit()), (3, 3, 3));
        let d = decide(&c, HEDGE, ms(0));
        assert_eq!((d.allowed, d.reason), (false, reason::BUDGET_DENIED));
        assert_eq!((c.active(), c.extra_in_flight()), (3, 3));
        // One settles: room for one more.
        settle(&c, HEDGE, held[1]);
        assert_eq!(c.extra_in_flight(), 2);
        let again = decide(&c, RETRY, ms(0));
        assert!(again.allowed);
        for d in [held[0], held[2], again] {
            settle(&c, RETRY, d);
        }
        assert_eq!((c.active(), c.extra_in_flight()), (0, 0));
    }

    #[test]
    fn golden_percent_of_active() {
        // 25 first attempts in flight. Each admitted extra attempt is
        // active too (Envoy counts every upstream request), so the limit
        // grows as they are admitted:
        //   extra 0, active 25: limit max(3, 5) = 5 → allow
        //   1, 26: 5.2 → 5 · 2, 27: 5 · 3, 28: 5 · 4, 29: 5.8 → 5 → allow
        //   5, 30: 6 → allow · 6, 31: 6.2 → 6 → deny.
        let c = Concurrency::envoy();
        let firsts: Vec<Decision> = (0..25).map(|_| decide(&c, INITIAL, ms(0))).collect();
        assert!(firsts
            .iter()
            .all(|d| *d == Decision::reserve(Reservation(ONE_ACTIVE as u64))));
        let mut extras = Vec::new();
        for expected_limit in [5, 5, 5, 5, 5, 6] {
            assert_eq!(c.limit(), expected_limit);
            let d = decide(&c, HEDGE, ms(0));
            assert!(d.allowed);
            extras.push(d);
        }
        assert_eq!((c.active(), c.extra_in_flight(), c.limit()), (31, 6, 6));
        assert!(!decide(&c, RETRY, ms(0)).allowed);
        // 20 first attempts finish: active 11, limit max(3, 2) = 3 < 6:
        // no extra attempt until three of the six settle.
        for d in &firsts[..20] {
            settle(&c, INITIAL, *d);
        }
        assert_eq!(c.limit(), 3);
        for (i, d) in extras.drain(..3).enumerate() {
            assert!(!decide(&c, RETRY, ms(0)).allowed, "after {i} settled");
            settle(&c, RETRY, d);
        }
        // Active 8, extra 3, limit 3: still full; one more settles.
        assert!(!decide(&c, RETRY, ms(0)).allowed);
        settle(&c, RETRY, extras.remove(0));
        let d = decide(&c, RETRY, ms(0));
        assert!(d.allowed);
        extras.push(d);
        // Release everything: back to the initial state exactly.
        for d in extras.into_iter().chain(firsts[20..].iter().copied()) {
            let kind = if d.reservation == Some(Reservation(ONE_ACTIVE as u64)) {
                INITIAL
            } else {
                RETRY
            };
            settle(&c, kind, d);
        }
        assert_eq!((c.active(), c.extra_in_flight()), (0, 0));
    }

    #[test]
    fn release_exactly_once_whatever_ends_the_attempt() {
        let c = Concurrency::new(0, 1);
        let first = decide(&c, INITIAL, ms(0));
        let extra = decide(&c, HEDGE, ms(0));
        assert_eq!((c.active(), c.extra_in_flight()), (2, 1));
        // The hedge loses its race, the first attempt succeeds: each
        // settle releases exactly what its reservation recorded.
        c.settle(
            &record(HEDGE, Outcome::abort(reason::HEDGE_LOSER), ms(0)),
            extra.reservation,
            ms(0),
        );
        assert_eq!((c.active(), c.extra_in_flight()), (1, 0));
        c.settle(
            &record(INITIAL, Outcome::SUCCESS, ms(0)),
            first.reservation,
            ms(0),
        );
        assert_eq!((c.active(), c.extra_in_flight()), (0, 0));
        // A settle without a reservation (a denied attempt is never
        // settled, but a careless caller might) changes nothing.
        c.settle(&record(RETRY, FAILED, ms(0)), None, ms(0));
        assert_eq!((c.active(), c.extra_in_flight()), (0, 0));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "settled twice")]
    fn settling_twice_is_caught_in_debug() {
        let c = Concurrency::envoy();
        let d = decide(&c, RETRY, ms(0));
        settle(&c, RETRY, d);
        settle(&c, RETRY, d);
    }

    #[test]
    fn static_instance() {
        static CONCURRENCY: Concurrency = Concurrency::envoy();
        let d = decide(&CONCURRENCY, RETRY, ms(0));
        assert_eq!(CONCURRENCY.extra_in_flight(), 1);
        settle(&CONCURRENCY, RETRY, d);
        assert_eq!(CONCURRENCY.active(), 0);
    }

    #[test]
    fn two_threads_never_exceed_the_limit_and_release_everything() {
        // 0 %, minimum 1: one extra attempt in flight at a time, across
        // both threads; `holders` checks it from outside.
        const ROUNDS: u32 = if cfg!(miri) { 100 } else { 20_000 };
        let c = Concurrency::new(0, 1);
        let holders = AtomicU32::new(0);
        let admitted = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..ROUNDS {
                        let first = decide(&c, INITIAL, ms(0));
                        let d = decide(&c, HEDGE, ms(0));
                        if d.allowed {
                            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0);
                            admitted.fetch_add(1, Ordering::Relaxed);
                            assert_eq!(holders.fetch_sub(1, Ordering::SeqCst), 1);
                            settle(&c, HEDGE, d);
                        }
                        settle(&c, INITIAL, first);
                    }
                });
            }
        });
        assert!(admitted.into_inner() > 0);
        assert_eq!((c.active(), c.extra_in_flight()), (0, 0));
    }
}
