//! The mirror types of the policy's sections, which carry the serde
//! derives (every field optional, unknown fields refused), and `Policy`'s
//! `Serialize`/`Deserialize` through them.

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::values::{Dur, NameW, OptDur, Permille};
use crate::policy::{
    AmplificationPolicy, BudgetRef, CircuitPolicy, HedgePolicy, Jitter, Policy, RetryPolicy,
    UpstreamRetry,
};

#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub(super) struct BudgetDoc {
    /// The budget's name; empty means no budget.
    name: NameW,
    /// Units one attempt costs; 0 means 1.
    cost: u32,
}

impl From<BudgetRef> for BudgetDoc {
    fn from(b: BudgetRef) -> Self {
        Self {
            name: NameW(b.name),
            cost: b.cost,
        }
    }
}

impl From<BudgetDoc> for BudgetRef {
    fn from(b: BudgetDoc) -> Self {
        Self {
            name: b.name.0,
            cost: b.cost,
        }
    }
}

impl Default for BudgetDoc {
    fn default() -> Self {
        RetryPolicy::DEFAULT.budget.into()
    }
}

#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub(super) struct RetryDoc {
    /// Attempts in all, the first included; 0 means 3; clamped to 1..=10.
    max_attempts: u32,
    /// Backoff before the first retry, e.g. "10ms"; clamped to 1ms..=30s.
    initial_backoff: Dur,
    /// Ceiling of any backoff, e.g. "250ms"; at most 30s.
    max_backoff: Dur,
    /// Growth of the backoff per retry; clamped to 1..=10.
    backoff_multiplier: f64,
    /// none, full, equal or decorrelated.
    jitter: Jitter,
    /// Deadline of one attempt, or "off".
    #[serde(skip_serializing_if = "OptDur::is_none")]
    timeout_per_attempt: OptDur,
    /// Deadline of the whole call, backoff included, or "off".
    #[serde(skip_serializing_if = "OptDur::is_none")]
    overall_timeout: OptDur,
    /// The classifier, by name; empty means the default classifier.
    classifier: NameW,
    /// The budget that gates attempts.
    budget: BudgetDoc,
    /// Whether protocol classifiers may retry non-idempotent requests.
    retry_non_idempotent: bool,
    /// Latency quantile (permille, 900 = p90) a retry or hedge must be
    /// expected to finish within before the deadline; 0 is off.
    #[serde(skip_serializing_if = "is_zero")]
    deadline_quantile_permille: u32,
}

pub(super) fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl From<RetryPolicy> for RetryDoc {
    fn from(r: RetryPolicy) -> Self {
        Self {
            max_attempts: r.max_attempts,
            initial_backoff: Dur(r.initial_backoff),
            max_backoff: Dur(r.max_backoff),
            backoff_multiplier: r.backoff_multiplier,
            jitter: r.jitter,
            timeout_per_attempt: OptDur(r.timeout_per_attempt),
            overall_timeout: OptDur(r.overall_timeout),
            classifier: NameW(r.classifier),
            budget: r.budget.into(),
            retry_non_idempotent: r.retry_non_idempotent,
            deadline_quantile_permille: r.deadline_quantile_permille,
        }
    }
}

impl From<RetryDoc> for RetryPolicy {
    fn from(r: RetryDoc) -> Self {
        Self {
            max_attempts: r.max_attempts,
            initial_backoff: r.initial_backoff.0,
            max_backoff: r.max_backoff.0,
            backoff_multiplier: r.backoff_multiplier,
            jitter: r.jitter,
            timeout_per_attempt: r.timeout_per_attempt.0,
            overall_timeout: r.overall_timeout.0,
            classifier: r.classifier.0,
            budget: r.budget.into(),
            retry_non_idempotent: r.retry_non_idempotent,
            deadline_quantile_permille: r.deadline_quantile_permille,
        }
    }
}

impl Default for RetryDoc {
    fn default() -> Self {
        RetryPolicy::DEFAULT.into()
    }
}

#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub(super) struct HedgeDoc {
    /// Whether hedges are launched at all.
    enabled: bool,
    /// Hedges per retry group; 0 means 2; clamped to 1..=3 (executor ceiling).
    max_hedges: u32,
    /// Delay before each hedge, e.g. "200ms"; at least 10ms.
    hedge_delay: Dur,
    /// The hedge trigger, by name; empty means the fixed delay.
    trigger: NameW,
    /// Whether a non-retryable outcome of one attempt ends the call.
    cancel_on_first_terminal: bool,
    /// The budget that gates hedges.
    budget: BudgetDoc,
}

impl From<HedgePolicy> for HedgeDoc {
    fn from(h: HedgePolicy) -> Self {
        Self {
            enabled: h.enabled,
            max_hedges: h.max_hedges,
            hedge_delay: Dur(h.hedge_delay),
            trigger: NameW(h.trigger),
            cancel_on_first_terminal: h.cancel_on_first_terminal,
            budget: h.budget.into(),
        }
    }
}

impl From<HedgeDoc> for HedgePolicy {
    fn from(h: HedgeDoc) -> Self {
        Self {
            enabled: h.enabled,
            max_hedges: h.max_hedges,
            hedge_delay: h.hedge_delay.0,
            trigger: h.trigger.0,
            cancel_on_first_terminal: h.cancel_on_first_terminal,
            budget: h.budget.into(),
        }
    }
}

impl Default for HedgeDoc {
    fn default() -> Self {
        HedgePolicy::DEFAULT.into()
    }
}

#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub(super) struct CircuitDoc {
    /// Whether the breaker is consulted.
    enabled: bool,
    /// Consecutive failed calls that open the circuit; 0 means 5.
    threshold: u32,
    /// Time open before a probe, e.g. "10s"; at least 100ms.
    cooldown: Dur,
    /// Failure ratio that opens the circuit: permille, or "50%"; 0 is off.
    failure_ratio_permille: Permille,
    /// Sliding window of the ratio rule, e.g. "10s"; at least 100ms.
    window: Dur,
    /// Calls in the window before the ratio rule may open; 0 means 20.
    min_calls: u32,
    /// Concurrent probes when half-open; clamped to 1..=100.
    half_open_max_probes: u32,
    /// Successful probes that close the circuit; clamped to 1..=100.
    half_open_successes: u32,
}

impl From<CircuitPolicy> for CircuitDoc {
    fn from(c: CircuitPolicy) -> Self {
        Self {
            enabled: c.enabled,
            threshold: c.threshold,
            cooldown: Dur(c.cooldown),
            failure_ratio_permille: Permille(c.failure_ratio_permille),
            window: Dur(c.window),
            min_calls: c.min_calls,
            half_open_max_probes: c.half_open_max_probes,
            half_open_successes: c.half_open_successes,
        }
    }
}

impl From<CircuitDoc> for CircuitPolicy {
    fn from(c: CircuitDoc) -> Self {
        Self {
            enabled: c.enabled,
            threshold: c.threshold,
            cooldown: c.cooldown.0,
            failure_ratio_permille: c.failure_ratio_permille.0,
            window: c.window.0,
            min_calls: c.min_calls,
            half_open_max_probes: c.half_open_max_probes,
            half_open_successes: c.half_open_successes,
        }
    }
}

impl Default for CircuitDoc {
    fn default() -> Self {
        CircuitPolicy::DEFAULT.into()
    }
}

#[derive(Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub(super) struct AmplificationDoc {
    /// Attempts of any kind per first attempt over 10 s, e.g. 1.1; 0 is
    /// off, otherwise 1..=100.
    max_amplification: f64,
    /// Extra attempts per second allowed whatever the ratio; at most 10000.
    min_per_sec: u32,
    /// When the request served is itself a retry or hedge upstream:
    /// "always" retry, "not_when_retry", or "shared_allowance" (count it
    /// against this layer's ledger; needs max_amplification).
    #[serde(skip_serializing_if = "is_always")]
    upstream_retry: UpstreamRetry,
}

pub(super) fn is_always(v: &UpstreamRetry) -> bool {
    *v == UpstreamRetry::Always
}

impl From<AmplificationPolicy> for AmplificationDoc {
    fn from(a: AmplificationPolicy) -> Self {
        Self {
            max_amplification: a.max_amplification,
            min_per_sec: a.min_per_sec,
            upstream_retry: a.upstream_retry,
        }
    }
}

impl From<AmplificationDoc> for AmplificationPolicy {
    fn from(a: AmplificationDoc) -> Self {
        Self {
            max_amplification: a.max_amplification,
            min_per_sec: a.min_per_sec,
            upstream_retry: a.upstream_retry,
        }
    }
}

impl Default for AmplificationDoc {
    fn default() -> Self {
        AmplificationPolicy::DEFAULT.into()
    }
}

impl AmplificationDoc {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// A policy: every section and field optional, unknown fields rejected.
#[derive(Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default, rename = "Policy")]
pub(super) struct PolicyDoc {
    /// Retries and timeouts.
    retry: RetryDoc,
    /// Hedged requests.
    hedge: HedgeDoc,
    /// The circuit breaker.
    circuit: CircuitDoc,
    /// One bound on retries and hedges together (left out when off).
    #[serde(skip_serializing_if = "AmplificationDoc::is_default")]
    amplification: AmplificationDoc,
}

impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PolicyDoc {
            retry: self.retry.clone().into(),
            hedge: self.hedge.clone().into(),
            circuit: self.circuit.clone().into(),
            amplification: self.amplification.into(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Policy {
    /// Reads a policy; absent sections and fields take the reference
    /// defaults ([`Policy::DEFAULT`]); unknown fields are errors. The result
    /// is not yet normalized: call [`Policy::normalize`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let doc = PolicyDoc::deserialize(d)?;
        Ok(Self {
            retry: doc.retry.into(),
            hedge: doc.hedge.into(),
            circuit: doc.circuit.into(),
            amplification: doc.amplification.into(),
        })
    }
}
