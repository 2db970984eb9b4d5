//! Tests of `budget/retry_ratio.rs`.

use core::sync::atomic::AtomicI64;

use super::super::testing::{attempt, decide, ms, record, request, FAILED, HEDGE, INITIAL, RETRY};
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

#[test]
fn a_whole_window_late_changes_nothing() {
    let b = RetryRatio::finagle();
    initial(&b, ms(20_000)); // slice 20, slot 0
                             // A thread whose `now` is 20 s behind: its slot holds a later slice.
    initial(&b, ms(0));
    assert!(!b.withdraw(5, ms(0)));
    assert_eq!(b.balance(ms(20_000)), 100); // (500 + 1) / 5
    assert_eq!(b.window(20), 501);
    // Nor does one a whole window late seen from a later slice's clock.
    assert_eq!(b.balance(ms(0)), 100);
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

/// Issue 17: a thread whose `now` lagged a slice behind another's spent,
/// sequentially, a deposit the later slice already spent (the balance went
/// to −1): a withdrawal at slice 0 did not count the slot a later slice
/// wrote. It now acts in the latest slice.
#[test]
fn a_lagging_clock_cannot_spend_what_a_later_slice_spent() {
    // 100 %: a first attempt pays for exactly one retry; no reserve.
    let b = RetryRatio::new(Duration::from_secs(1), 0, 1_000);
    initial(&b, ms(0)); // slice 0
    assert!(retry(&b, ms(100))); // slice 1 spends it
    assert!(!retry(&b, ms(0)), "a lagging clock spent it again");
    assert_eq!(b.balance(ms(100)), 0);
    // The lagging clock reads the latest slice's balance.
    assert_eq!(b.balance(ms(0)), 0);
}

#[test]
fn a_lagging_clock_acts_in_the_latest_slice() {
    // 100 %, no reserve, slices of 100 ms.
    let b = RetryRatio::new(Duration::from_secs(1), 0, 1_000);
    initial(&b, ms(950)); // slice 9
    initial(&b, ms(1_000)); // slice 10 (slice 0's slot)
                            // A deposit 9 slices late lands in slice 10: it lasts as long as that
                            // slice.
    initial(&b, ms(150));
    assert_eq!(b.balance(ms(1_000)), 3);
    // A withdrawal 9 slices late is checked and recorded there too.
    assert!(retry(&b, ms(100)));
    assert_eq!(b.balance(ms(1_000)), 2);
    // At slice 19 slice 9's deposit has expired, slice 10's (two deposits,
    // one withdrawal) has not.
    assert_eq!(b.balance(ms(1_900)), 1);
    assert!(retry(&b, ms(1_900)));
    assert!(!retry(&b, ms(1_000)), "slice 10 acts in slice 19");
    assert!(!retry(&b, ms(1_500)));
    assert_eq!(b.balance(ms(1_000)), 0);
    // At slice 20 slice 10 has expired, slice 19's withdrawal has not.
    assert_eq!(b.balance(ms(2_000)), -1);
}

#[test]
fn a_call_a_whole_window_behind_the_latest_slice_is_too_late() {
    let b = RetryRatio::new(Duration::from_secs(1), 0, 1_000);
    initial(&b, ms(1_000)); // slice 10
    initial(&b, ms(99)); // slice 0: a whole window late, dropped
    assert_eq!(b.balance(ms(1_000)), 1);
    assert!(!retry(&b, ms(0)), "a whole window late");
    assert_eq!(b.balance(ms(1_000)), 1);
    // Slice 1 is 9 slices behind: it acts in slice 10.
    assert!(retry(&b, ms(100)));
    assert_eq!(b.balance(ms(1_000)), 0);
    // A give-back a whole window late is dropped too; 9 late, it counts.
    let d = b.decide(&request(RETRY, 1, None, ms(1_000)));
    assert!(!d.allowed);
    initial(&b, ms(1_000));
    let d = b.decide(&request(RETRY, 1, None, ms(1_000)));
    let mut never_ran = record(RETRY, Outcome::abort(reason::BUDGET_DENIED), ms(0));
    never_ran.budget_allowed = false;
    b.settle(&never_ran, d.reservation, ms(0));
    assert_eq!(b.balance(ms(1_000)), 0);
    b.settle(&never_ran, d.reservation, ms(100));
    assert_eq!(b.balance(ms(1_000)), 1);
}

#[test]
fn slice_numbers_far_from_the_epoch() {
    // Near `Instant::MAX` (slice numbers above 2³¹), and after a jump of
    // exactly 2³¹ slices: the budget is the reserve plus what the window
    // holds.
    let b = RetryRatio::new(Duration::from_secs(1), 1, 1_000);
    let far = Instant::from_nanos(u64::MAX);
    assert_eq!(b.balance(far), 1);
    initial(&b, far);
    assert_eq!(b.balance(far), 2);
    assert!(retry(&b, far));
    assert!(retry(&b, far));
    assert!(!retry(&b, far));
    assert_eq!(b.balance(far), 0);
    // Every earlier clock is now a whole window late.
    assert!(!retry(&b, ms(0)));
    initial(&b, ms(0));
    assert_eq!(b.balance(ms(0)), 0);
    // Slot words keep slice numbers mod 2³¹: 2³¹ slices after slice 5,
    // slice 5's word is not read as recent (it is in another slice's
    // slot); 5 × 2³¹ slices after (the least common multiple of 2³¹ and
    // the 10 slots: 34 years of 100 ms slices) it is, as the type's docs
    // say, by the balance and the decisions alike.
    let b = RetryRatio::new(Duration::from_secs(1), 0, 1_000);
    initial(&b, ms(500));
    assert_eq!(b.balance(ms(500 + (1 << 31) * 100)), 0);
    let wrapped = ms(500 + 5 * (1 << 31) * 100);
    assert_eq!(b.balance(wrapped), 1);
    assert!(retry(&b, wrapped));
    assert_eq!(b.balance(wrapped), 0);
    assert!(!retry(&b, wrapped));
}
