//! `Serialize`/`Deserialize` for [`Policy`] (feature `serde`): the policy
//! file format, readable on an embedded target without an allocator.
//!
//! Why a format of its own rather than the structs as they are: policy files
//! are written by people, so durations are human strings (`"250ms"`, `"2s"`,
//! `"1m30s"`), a failure ratio may be a percentage (`"50%"`), every section
//! and field may be left out (it takes the reference default), and an unknown
//! field is an error (a typo must not silently become a default). Values are
//! read as they are written; out-of-range numbers are clamped later by
//! [`Policy::normalize`], which reports each field it changed.
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! use core::time::Duration;
//! use recourse_core::policy_serde::parse_duration;
//! assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
//! assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
//! assert!(parse_duration("5").is_err()); // a duration needs a unit
//! # }
//! ```
//!
//! The Rust types stay as they are; private mirror types carry the serde
//! derives, so nothing here allocates and `policy.rs` stays free of format
//! concerns.

use core::fmt;
use core::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::policy::{
    AmplificationPolicy, BudgetRef, CircuitPolicy, HedgePolicy, Jitter, Name, Policy, RetryPolicy,
    NAME_CAPACITY,
};

/// Why a duration string could not be read.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurationError {
    /// The string is empty.
    Empty,
    /// A number without a unit, such as `"5"`.
    MissingUnit,
    /// A unit other than `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
    UnknownUnit,
    /// Something other than digits where a number belongs (a sign, say).
    NotANumber,
    /// More than 9 fractional digits, or more than `u64::MAX` nanoseconds.
    OutOfRange,
}

impl DurationError {
    /// What is wrong, in a few words (`"duration without a unit"`).
    pub const fn problem(self) -> &'static str {
        match self {
            Self::Empty => "empty duration",
            Self::MissingUnit => "duration without a unit",
            Self::UnknownUnit => "duration with an unknown unit",
            Self::NotANumber => "duration whose number is not a non-negative number",
            Self::OutOfRange => "duration out of range",
        }
    }
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.problem())?;
        f.write_str(DURATION_EXPECTED_SUFFIX)
    }
}

impl core::error::Error for DurationError {}

const DURATION_EXPECTED: &str =
    "a duration with a unit (ns, us, ms, s, m, h), such as \"250ms\", \"2s\" or \"1m30s\"";
const DURATION_EXPECTED_SUFFIX: &str =
    "; expected a duration with a unit (ns, us, ms, s, m, h), such as \"250ms\", \"2s\" or \"1m30s\"";

/// Reads a human duration: one or more `<number><unit>` parts, such as
/// `"250ms"`, `"1.5s"`, `"1m30s"`; units `ns`, `us` (or `µs`), `ms`, `s`,
/// `m`, `h`; at most 9 fractional digits; never negative. Surrounding spaces
/// are ignored. Allocates nothing.
///
/// # Errors
///
/// [`DurationError`] says what is wrong; a bare number (`"5"`) is
/// [`DurationError::MissingUnit`].
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(DurationError::NotANumber);
        }
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_ns: u128 = match unit.trim() {
            "" => return Err(DurationError::MissingUnit),
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(DurationError::UnknownUnit),
        };
        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(DurationError::NotANumber);
        }
        if frac.len() > 9 || int.len() > 20 {
            return Err(DurationError::OutOfRange);
        }
        let mut int_v: u128 = 0;
        for b in int.bytes() {
            int_v = int_v * 10 + u128::from(b - b'0');
        }
        let mut frac_v: u128 = 0;
        for b in frac.bytes() {
            frac_v = frac_v * 10 + u128::from(b - b'0');
        }
        let scale = 10u128.pow(frac.len() as u32);
        total = total
            .checked_add(int_v * unit_ns + frac_v * unit_ns / scale)
            .ok_or(DurationError::OutOfRange)?;
        rest = next;
    }
    let nanos = u64::try_from(total).map_err(|_| DurationError::OutOfRange)?;
    Ok(Duration::from_nanos(nanos))
}

/// Writes `d` the way policy files write it: the largest unit that is exact
/// (`"250ms"`, `"2s"`, `"90s"`), `"0s"` for zero.
pub fn format_duration(d: Duration, out: &mut impl fmt::Write) -> fmt::Result {
    let ns = d.as_nanos();
    for (unit, per) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns % per == 0 && ns != 0 {
            // Minutes and hours only when they read better than seconds.
            if per > 1_000_000_000 && ns / per < 1 {
                continue;
            }
            return write!(out, "{}{unit}", ns / per);
        }
    }
    if ns == 0 {
        out.write_str("0s")
    } else {
        write!(out, "{ns}ns")
    }
}

/// What a value in a policy file may be, by dotted field path (as in
/// `policy_clamped_fields`): the type, the allowed range and what
/// normalization does outside it. `None` for a path that is not a field.
pub fn allowed(path: &str) -> Option<&'static str> {
    Some(match path {
        "retry" | "hedge" | "circuit" | "amplification" | "retry.budget" | "hedge.budget" => {
            "a table"
        }
        "retry.max_attempts" => "an integer 0..=4294967295; 0 means 3, values outside 1..=10 are clamped",
        "retry.initial_backoff" => "a duration such as \"10ms\"; \"0s\" means 10ms, clamped to 1ms..=30s",
        "retry.max_backoff" => "a duration such as \"250ms\"; \"0s\" means 250ms, clamped to initial_backoff..=30s",
        "retry.backoff_multiplier" => "a finite number; 0 means 2, clamped to 1..=10",
        "retry.jitter" => "one of \"none\", \"full\", \"equal\", \"decorrelated\"",
        "retry.timeout_per_attempt" => "a duration such as \"500ms\", or \"off\"; at least 1ms, at most overall_timeout",
        "retry.overall_timeout" => "a duration such as \"2s\", or \"off\"; at least 1ms",
        "retry.classifier" | "hedge.trigger" | "retry.budget.name" | "hedge.budget.name" => {
            "a name of at most 32 bytes (empty means the default)"
        }
        "retry.budget.cost" | "hedge.budget.cost" => "an integer 0..=4294967295; 0 means 1",
        "retry.retry_non_idempotent" | "hedge.enabled" | "hedge.cancel_on_first_terminal"
        | "circuit.enabled" => "true or false",
        "hedge.max_hedges" => "an integer 0..=4294967295; 0 means 2, clamped to 1..=3 (the executor's ceiling, at most 10)",
        "hedge.hedge_delay" => "a duration such as \"200ms\"; \"0s\" means 200ms, at least 10ms",
        "circuit.threshold" => "an integer 0..=4294967295; 0 means 5",
        "circuit.cooldown" => "a duration such as \"10s\"; \"0s\" means 10s, at least 100ms",
        "circuit.failure_ratio_permille" => "an integer permille 0..=1000 or a percentage such as \"50%\" (0 turns the ratio rule off; above 1000 is clamped)",
        "circuit.window" => "a duration such as \"10s\"; \"0s\" means 10s, at least 100ms",
        "circuit.min_calls" => "an integer 0..=4294967295; 0 means 20",
        "circuit.half_open_max_probes" | "circuit.half_open_successes" => {
            "an integer 0..=4294967295, clamped to 1..=100"
        }
        "amplification.max_amplification" => "0 (off) or a number 1..=100 such as 1.1 (attempts of any kind per first attempt); below 1 or NaN is an error, above 100 is clamped",
        "retry.deadline_quantile_permille" => "an integer 0..=1000: 0 (off) or a latency quantile in permille such as 900 (p90); above 1000 is an error",
        "amplification.min_per_sec" => "an integer 0..=4294967295 (extra attempts per second allowed whatever the ratio), clamped to 0..=10000",
        _ => return None,
    })
}

// ---------------------------------------------------------------- wrappers

/// A duration written as a human string.
#[derive(Copy, Clone, Debug, PartialEq)]
struct Dur(Duration);

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = heapless::String::<48>::new();
        format_duration(self.0, &mut buf).map_err(|_| serde::ser::Error::custom("duration"))?;
        s.serialize_str(&buf)
    }
}

struct DurVisitor;

impl Visitor<'_> for DurVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DURATION_EXPECTED)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(|e| E::invalid_value(Unexpected::Str(v), &DurExpect(e)))
    }
}

/// The `expected` part of a duration error: what was wrong, then the format.
struct DurExpect(DurationError);

impl de::Expected for DurExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DURATION_EXPECTED}, not a {}", self.0.problem())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(DurVisitor).map(Dur)
    }
}

/// An optional duration: a duration string, `"off"`, or null / absent.
#[derive(Copy, Clone, Debug, PartialEq)]
struct OptDur(Option<Duration>);

impl OptDur {
    fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl Serialize for OptDur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(d) => Dur(d).serialize(s),
            None => s.serialize_str("off"),
        }
    }
}

struct OptDurVisitor;

impl<'de> Visitor<'de> for OptDurVisitor {
    type Value = Option<Duration>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DURATION_EXPECTED}, or \"off\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        DurVisitor.visit_str(v).map(Some)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Deserialize<'de> for OptDur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_option(OptDurVisitor).map(OptDur)
    }
}

/// A name of at most [`NAME_CAPACITY`] bytes.
#[derive(Clone, Debug, PartialEq, Default)]
struct NameW(Name);

impl Serialize for NameW {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

struct NameVisitor;

impl Visitor<'_> for NameVisitor {
    type Value = Name;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a name of at most {NAME_CAPACITY} bytes")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
        Name::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
    }
}

impl<'de> Deserialize<'de> for NameW {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(NameVisitor).map(NameW)
    }
}

/// A failure ratio: an integer permille, or a percentage string `"50%"`
/// (one fractional digit at most: `"0.5%"` is 5 permille).
#[derive(Copy, Clone, Debug, PartialEq)]
struct Permille(u32);

impl Serialize for Permille {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

struct PermilleVisitor;

const PERMILLE_EXPECTED: &str =
    "an integer permille 0..=4294967295 or a percentage such as \"50%\" or \"0.5%\"";

impl Visitor<'_> for PermilleVisitor {
    type Value = u32;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PERMILLE_EXPECTED)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        let bad = || E::invalid_value(Unexpected::Str(v), &PERMILLE_EXPECTED);
        let pct = v.trim().strip_suffix('%').ok_or_else(bad)?.trim();
        let (int, frac) = pct.split_once('.').unwrap_or((pct, ""));
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 7 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || !(frac.is_empty() || (frac.len() == 1 && digits(frac))) {
            return Err(bad());
        }
        let mut n: u32 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            n = n * 10 + u32::from(b - b'0');
        }
        Ok(if frac.is_empty() { n * 10 } else { n })
    }
}

impl<'de> Deserialize<'de> for Permille {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PermilleVisitor).map(Permille)
    }
}

impl Serialize for Jitter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

struct JitterVisitor;

impl Visitor<'_> for JitterVisitor {
    type Value = Jitter;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one of \"none\", \"full\", \"equal\", \"decorrelated\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Jitter, E> {
        v.parse()
            .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
    }
}

impl<'de> Deserialize<'de> for Jitter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(JitterVisitor)
    }
}

// ------------------------------------------------------------ mirror types

#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct BudgetDoc {
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
struct RetryDoc {
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

fn is_zero(v: &u32) -> bool {
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
struct HedgeDoc {
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
struct CircuitDoc {
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
struct AmplificationDoc {
    /// Attempts of any kind per first attempt over 10 s, e.g. 1.1; 0 is
    /// off, otherwise 1..=100.
    max_amplification: f64,
    /// Extra attempts per second allowed whatever the ratio; at most 10000.
    min_per_sec: u32,
}

impl From<AmplificationPolicy> for AmplificationDoc {
    fn from(a: AmplificationPolicy) -> Self {
        Self {
            max_amplification: a.max_amplification,
            min_per_sec: a.min_per_sec,
        }
    }
}

impl From<AmplificationDoc> for AmplificationPolicy {
    fn from(a: AmplificationDoc) -> Self {
        Self {
            max_amplification: a.max_amplification,
            min_per_sec: a.min_per_sec,
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
struct PolicyDoc {
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

#[cfg(feature = "schemars")]
mod schema {
    //! `JsonSchema` for the wrappers and for [`Policy`].
    extern crate alloc;
    use alloc::borrow::Cow;

    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

    use super::{Dur, NameW, OptDur, Permille, PolicyDoc};
    use crate::policy::{Jitter, Policy, NAME_CAPACITY};

    const DURATION_PATTERN: &str = r"^\s*([0-9]+(\.[0-9]{1,9})?|\.[0-9]{1,9})(ns|us|µs|ms|s|m|h)(([0-9]+(\.[0-9]{1,9})?|\.[0-9]{1,9})(ns|us|µs|ms|s|m|h))*\s*$";

    impl JsonSchema for Dur {
        fn schema_name() -> Cow<'static, str> {
            "Duration".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "pattern": DURATION_PATTERN,
                "description": "A duration with a unit (ns, us, ms, s, m, h), such as \"250ms\", \"2s\" or \"1m30s\".",
                "examples": ["250ms", "2s"]
            })
        }
    }

    impl JsonSchema for OptDur {
        fn schema_name() -> Cow<'static, str> {
            "OptionalDuration".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "A duration such as \"2s\", or \"off\" (or null) for none.",
                "anyOf": [
                    { "type": "string", "pattern": DURATION_PATTERN },
                    { "const": "off" },
                    { "type": "null" }
                ]
            })
        }
    }

    impl JsonSchema for NameW {
        fn schema_name() -> Cow<'static, str> {
            "Name".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "maxLength": NAME_CAPACITY,
                "description": "A name of at most 32 bytes; empty means the default."
            })
        }
    }

    impl JsonSchema for Permille {
        fn schema_name() -> Cow<'static, str> {
            "Permille".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "Permille (500 = half), or a percentage such as \"50%\" or \"0.5%\".",
                "anyOf": [
                    { "type": "integer", "minimum": 0, "maximum": u32::MAX },
                    { "type": "string", "pattern": r"^\s*[0-9]{1,7}(\.[0-9])?\s*%$" }
                ]
            })
        }
    }

    impl JsonSchema for Jitter {
        fn schema_name() -> Cow<'static, str> {
            "Jitter".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "How each backoff is randomized.",
                "enum": ["none", "full", "equal", "decorrelated"]
            })
        }
    }

    impl JsonSchema for Policy {
        fn schema_name() -> Cow<'static, str> {
            "Policy".into()
        }
        fn json_schema(generator: &mut SchemaGenerator) -> Schema {
            PolicyDoc::json_schema(generator)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    #[test]
    fn durations_parse() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            (" 1.5s ", Duration::from_millis(1500)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            ("0s", Duration::ZERO),
            (".5s", Duration::from_millis(500)),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        let bad = [
            ("", DurationError::Empty),
            ("5", DurationError::MissingUnit),
            ("5 ", DurationError::MissingUnit),
            ("-5s", DurationError::NotANumber),
            ("5 parsecs", DurationError::UnknownUnit),
            ("5sec", DurationError::UnknownUnit),
            ("1.2.3s", DurationError::NotANumber),
            (".s", DurationError::NotANumber),
            ("1.0000000001s", DurationError::OutOfRange),
            ("99999999999999999999h", DurationError::OutOfRange),
        ];
        for (s, e) in bad {
            assert_eq!(parse_duration(s), Err(e), "{s:?}");
        }
    }

    #[test]
    fn durations_format_round_trip() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(250),
            Duration::from_secs(2),
            Duration::from_secs(90),
            Duration::from_secs(7200),
            Duration::from_nanos(1_500),
            Duration::from_nanos(7),
            Duration::from_millis(1500),
        ] {
            let mut s = String::new();
            format_duration(d, &mut s).unwrap();
            assert_eq!(parse_duration(&s), Ok(d), "{s}");
        }
        let mut s = String::new();
        format_duration(Duration::from_millis(1500), &mut s).unwrap();
        assert_eq!(s, "1500ms");
    }

    #[test]
    fn every_field_has_an_allowed_range() {
        for f in crate::policy::Field::ALL {
            assert!(allowed(f.path()).is_some(), "{}", f.path());
        }
        assert!(allowed("retry.jitter").is_some());
        assert!(allowed("retry.nope").is_none());
    }
}
