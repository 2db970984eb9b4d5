//! [`Unlimited`]: the budget that allows everything.

use super::{Budget, BudgetRequest, Decision};

/// Allows every attempt, with reason `allowed`, and keeps no state.
///
/// Why a budget that never says no: naming a budget in a policy makes every
/// attempt carry a budget decision in its record and in the observer's
/// events. `Unlimited` gives you that bookkeeping — to measure how many
/// retries and hedges a key would spend before choosing a real budget, or to
/// opt one key out of a shared budget explicitly rather than by leaving the
/// name empty (`no_budget`).
///
/// Reference: Finagle's `RetryBudget.Infinite`, which always allows a retry.
///
/// Available on every target (no atomics).
///
/// ```
/// use recourse_core::budget::Unlimited;
///
/// static UNLIMITED: Unlimited = Unlimited;
/// # let _ = &UNLIMITED;
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Unlimited;

impl Budget for Unlimited {
    fn decide(&self, _request: &BudgetRequest<'_>) -> Decision {
        Decision::ALLOW
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{attempt, decide, ms, FAILED, HEDGE, INITIAL, RETRY};
    use super::*;
    use crate::outcome::{reason, Outcome};

    static UNLIMITED: Unlimited = Unlimited;

    #[test]
    fn allows_every_kind_with_reason_allowed() {
        const CALLS: u64 = if cfg!(miri) { 100 } else { 1_000 };
        for kind in [INITIAL, RETRY, HEDGE] {
            for i in 0..CALLS {
                let d = decide(&UNLIMITED, kind, ms(i));
                assert_eq!(d, Decision::ALLOW);
                assert_eq!(d.reason, reason::ALLOWED);
            }
        }
        assert!(attempt(&UNLIMITED, RETRY, FAILED, ms(0)));
        assert!(attempt(&UNLIMITED, RETRY, Outcome::SUCCESS, ms(0)));
    }
}
