//! `Serialize`/`Deserialize` for [`Policy`](crate::policy::Policy) (feature `serde`): the policy
//! file format, readable on an embedded target without an allocator.
//!
//! Why a format of its own rather than the structs as they are: policy files
//! are written by people, so durations are human strings (`"250ms"`, `"2s"`,
//! `"1m30s"`), a failure ratio may be a percentage (`"50%"`), every section
//! and field may be left out (it takes the reference default), and an unknown
//! field is an error (a typo must not silently become a default). Values are
//! read as they are written; out-of-range numbers are clamped later by
//! [`Policy::normalize`](crate::policy::Policy::normalize), which reports each field it changed.
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
        "amplification.upstream_retry" => "one of \"always\", \"not_when_retry\", \"shared_allowance\" (shared_allowance needs max_amplification of at least 1)",
        _ => return None,
    })
}

#[cfg(feature = "schemars")]
mod schema;
mod sections;
mod values;

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
