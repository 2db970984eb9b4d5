//! Hedge triggers: when to launch another attempt of the same retry group
//! while the first is still running.
//!
//! Why hedge: in a fan-out service the slowest of many calls sets the
//! latency, and the slow ones are mostly slow by bad luck (a GC pause, a
//! cold cache, a busy queue). A second copy of a request that has run longer
//! than almost all others usually finishes first — "The Tail at Scale"
//! hedged after the 95th-percentile latency and cut the 99.9th percentile
//! from 1,800 ms to 74 ms for about 2 % more requests.
//!
//! A trigger answers two questions, each time the machine asks: spawn a
//! hedge now? and if not, when to look again? The machine wakes exactly
//! then — there is no polling interval. The trigger is consulted through the
//! [`Gate`](crate::Gate) (its [`hedge`](crate::Gate::hedge) method, which
//! defaults to [`fixed_delay`]), so a per-key latency quantile can live
//! outside the machine.

use core::time::Duration;

use crate::time::Instant;

/// What a trigger knows about the running retry group.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct HedgeState {
    /// The retry group, counted from 0.
    pub retry_index: u32,
    /// When the group's primary launched.
    pub group_start: Instant,
    /// Now.
    pub now: Instant,
    /// Hedges launched in this group so far.
    pub hedges: u32,
    /// Hedges this group may launch in all.
    pub max_hedges: u32,
    /// The policy's `hedge.hedge_delay`.
    pub hedge_delay: Duration,
}

/// A trigger's answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct HedgeDecision {
    /// Launch a hedge now.
    pub spawn: bool,
    /// When to ask again (ignored when `spawn`); `None`: not in this group.
    /// The machine never asks again sooner than 1 ms from now.
    pub next_check: Option<Instant>,
}

/// The fixed-delay trigger: hedge `k` launches `k × hedge_delay` after the
/// group's primary.
pub fn fixed_delay(state: &HedgeState) -> HedgeDecision {
    let k = state.hedges.saturating_add(1);
    let due = state.group_start + state.hedge_delay.saturating_mul(k);
    if state.now >= due {
        HedgeDecision {
            spawn: true,
            next_check: None,
        }
    } else {
        HedgeDecision {
            spawn: false,
            next_check: Some(due),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_delay_spaces_hedges_from_the_group_start() {
        let mut s = HedgeState {
            retry_index: 0,
            group_start: Instant::from_millis(100),
            now: Instant::from_millis(150),
            hedges: 0,
            max_hedges: 2,
            hedge_delay: Duration::from_millis(200),
        };
        assert_eq!(
            fixed_delay(&s),
            HedgeDecision {
                spawn: false,
                next_check: Some(Instant::from_millis(300))
            }
        );
        s.now = Instant::from_millis(300);
        assert!(fixed_delay(&s).spawn);
        s.hedges = 1;
        assert_eq!(fixed_delay(&s).next_check, Some(Instant::from_millis(500)));
    }
}
