//! Hedged requests in the executor: which trigger a policy names, what a
//! call does when the name is unknown, and how many hedges it may run.
//!
//! A policy turns hedging on with `hedge.enabled`; `hedge.trigger` names
//! the [`Trigger`] (see its table: `fixed_delay`, `p95`,
//! `max_extra_load:5%` ...). Quantile triggers read the key's recent
//! latencies from the executor's [`LatencyTrackers`](crate::latency::LatencyTrackers),
//! which record every attempt that ran to completion under such a policy
//! (never a budget denial, never an attempt recourse cut or dropped); until
//! a key has enough samples, the fixed delay applies.
//!
//! Every hedge passes the policy's `hedge.budget`; a refused hedge is
//! recorded and the primary keeps running. Which budget bounds hedges:
//! a token bucket named only by `hedge.budget` caps hedges per second; to
//! cap them at a share of requests, name the *same* ratio budget
//! ([`RetryRatio`](recourse_core::budget::RetryRatio),
//! [`Concurrency`](recourse_core::budget::Concurrency)) in `retry.budget`
//! and `hedge.budget` — a ratio budget learns the request rate from first
//! attempts, which only `retry.budget` sees. In a brownout where every call
//! outlives the hedge delay, a 5 % ratio budget keeps hedging's extra load
//! at 5 % where unbudgeted hedging doubles it (`std-ext/examples/hedging.rs`). The attempts of a hedged call
//! run inside the caller's task; their futures live in one heap block per
//! hedged call (a call that does not hedge allocates nothing).
//!
//! ```
//! use core::time::Duration;
//! use recourse::policy::HedgePolicy;
//! use recourse::{AttemptInfo, Executor, Policy, StaticProvider};
//!
//! let policy = Policy::retries(2).hedge(HedgePolicy::after(Duration::from_millis(20)));
//! let exec = Executor::builder()
//!     .provider(StaticProvider::builder().policy("search.Query", policy)?.build())
//!     .try_build()?;
//!
//! let (result, timeline) = async_io::block_on(exec.call_with_timeline(
//!     "search.Query",
//!     |attempt: AttemptInfo| async move {
//!         // The primary is a straggler; the hedge, 20 ms later, is quick.
//!         let ms = if attempt.is_hedge { 1 } else { 1_000 };
//!         async_io::Timer::after(Duration::from_millis(ms)).await;
//!         Ok::<_, ()>(attempt.hedge_index)
//!     },
//! ));
//! assert_eq!(result, Ok(1));
//! assert!(timeline.duration() < Duration::from_millis(500));
//! println!("{timeline}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use recourse_core::policy_gate::GateNeeds;
use std::collections::BTreeMap;

pub use recourse_core::hedge::Trigger;
use recourse_core::policy::Policy;

/// Reason: the policy names a hedge trigger recourse does not know.
pub const TRIGGER_NOT_FOUND: &str = "trigger_not_found";

/// What a call does when its policy's `hedge.trigger` names no trigger.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MissingTriggerMode {
    /// Hedge on the fixed delay (`hedge.hedge_delay`). The default.
    #[default]
    Fallback,
    /// Run the call without hedges.
    NoHedges,
}

impl MissingTriggerMode {
    /// `fallback` or `no_hedges`, as in the timeline attribute
    /// `missing_trigger_mode`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fallback => "fallback",
            Self::NoHedges => "no_hedges",
        }
    }
}

/// A call's hedging, resolved from its policy.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct HedgePlan {
    /// The trigger; `None`: the call does not hedge.
    pub(crate) trigger: Option<Trigger>,
    /// Hedges per retry group the call may launch.
    pub(crate) hedges: u32,
    /// The policy asked for more hedges than the executor's ceiling.
    pub(crate) cut_to_ceiling: bool,
    /// The trigger name resolved to nothing.
    pub(crate) not_found: bool,
    /// What the policy asks of the call's gate ([`GateNeeds::of`] the
    /// policy and `trigger`), worked out with the plan, once per key.
    pub(crate) needs: GateNeeds,
}

impl HedgePlan {
    /// No hedging.
    pub(crate) const OFF: Self = Self {
        trigger: None,
        hedges: 0,
        cut_to_ceiling: false,
        not_found: false,
        needs: GateNeeds::NOTHING,
    };

    /// The plan for `policy` under the executor's `ceiling` and `mode`.
    pub(crate) fn resolve(policy: &Policy, ceiling: u32, mode: MissingTriggerMode) -> Self {
        let h = &policy.hedge;
        if !h.enabled || h.max_hedges == 0 {
            return Self {
                needs: GateNeeds::of(policy, None),
                ..Self::OFF
            };
        }
        let parsed = Trigger::parse(h.trigger.as_str());
        let trigger = match (parsed, mode) {
            (Some(t), _) => Some(t),
            (None, MissingTriggerMode::Fallback) => Some(Trigger::FixedDelay),
            (None, MissingTriggerMode::NoHedges) => None,
        };
        Self {
            hedges: if trigger.is_some() {
                h.max_hedges.min(ceiling)
            } else {
                0
            },
            trigger,
            cut_to_ceiling: h.max_hedges > ceiling,
            not_found: parsed.is_none(),
            needs: GateNeeds::of(policy, trigger),
        }
    }

    /// Writes `hedge_trigger` (and, for an unknown name,
    /// `hedge_trigger_error` and `missing_trigger_mode`); adds
    /// `hedge.max_hedges` to `policy_clamped_fields` when the ceiling cut
    /// it.
    pub(crate) fn write_attributes(
        &self,
        policy: &Policy,
        mode: MissingTriggerMode,
        attrs: &mut BTreeMap<&'static str, String>,
    ) {
        if !policy.hedge.enabled {
            return;
        }
        let name = policy.hedge.trigger.as_str();
        attrs.insert(
            "hedge_trigger",
            if name.is_empty() { "fixed_delay" } else { name }.to_owned(),
        );
        if self.not_found {
            attrs.insert("hedge_trigger_error", TRIGGER_NOT_FOUND.to_owned());
            attrs.insert("missing_trigger_mode", mode.as_str().to_owned());
        }
        if self.cut_to_ceiling {
            attrs.insert("policy_normalized", "true".to_owned());
            let fields = attrs.entry("policy_clamped_fields").or_default();
            if !fields.split(',').any(|f| f == "hedge.max_hedges") {
                if !fields.is_empty() {
                    fields.push(',');
                }
                fields.push_str("hedge.max_hedges");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recourse_core::policy::Name;

    fn hedging(trigger: &str, max_hedges: u32) -> Policy {
        let mut p = Policy::DEFAULT;
        p.hedge.enabled = true;
        p.hedge.max_hedges = max_hedges;
        p.hedge.trigger = Name::try_from(trigger).unwrap();
        p
    }

    #[test]
    fn plans() {
        let fallback = MissingTriggerMode::Fallback;
        assert_eq!(
            HedgePlan::resolve(&Policy::DEFAULT, 3, fallback),
            HedgePlan::OFF
        );
        let p95 = HedgePlan::resolve(&hedging("p95", 2), 3, fallback);
        assert_eq!(p95.trigger, Some(Trigger::Quantile { permille: 950 }));
        assert_eq!(
            (p95.hedges, p95.cut_to_ceiling, p95.not_found),
            (2, false, false)
        );
        let cut = HedgePlan::resolve(&hedging("", 7), 3, fallback);
        assert_eq!(
            (cut.trigger, cut.hedges, cut.cut_to_ceiling),
            (Some(Trigger::FixedDelay), 3, true)
        );
        let lifted = HedgePlan::resolve(&hedging("", 7), 10, fallback);
        assert_eq!((lifted.hedges, lifted.cut_to_ceiling), (7, false));
        let unknown = HedgePlan::resolve(&hedging("p95x", 2), 3, fallback);
        assert_eq!(
            (unknown.trigger, unknown.hedges, unknown.not_found),
            (Some(Trigger::FixedDelay), 2, true)
        );
        let off = HedgePlan::resolve(&hedging("p95x", 2), 3, MissingTriggerMode::NoHedges);
        assert_eq!((off.trigger, off.hedges, off.not_found), (None, 0, true));
    }

    #[test]
    fn attributes_name_the_trigger_the_error_and_the_ceiling_cut() {
        let p = hedging("nope", 7);
        let plan = HedgePlan::resolve(&p, 3, MissingTriggerMode::Fallback);
        let mut attrs = BTreeMap::new();
        attrs.insert("policy_clamped_fields", "retry.max_backoff".to_owned());
        plan.write_attributes(&p, MissingTriggerMode::Fallback, &mut attrs);
        assert_eq!(attrs["hedge_trigger"], "nope");
        assert_eq!(attrs["hedge_trigger_error"], "trigger_not_found");
        assert_eq!(attrs["missing_trigger_mode"], "fallback");
        assert_eq!(attrs["policy_normalized"], "true");
        assert_eq!(
            attrs["policy_clamped_fields"],
            "retry.max_backoff,hedge.max_hedges"
        );
    }
}
