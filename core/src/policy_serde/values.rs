//! The wrappers the policy format reads values through: durations with a
//! unit, optional durations, names, permille (or percentage) ratios, the
//! jitter and upstream-retry names.

use core::fmt;
use core::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::{format_duration, parse_duration, DurationError, DURATION_EXPECTED};
use crate::policy::{Jitter, Name, UpstreamRetry, NAME_CAPACITY};

/// A duration written as a human string.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(super) struct Dur(pub(super) Duration);

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = heapless::String::<48>::new();
        format_duration(self.0, &mut buf).map_err(|_| serde::ser::Error::custom("duration"))?;
        s.serialize_str(&buf)
    }
}

pub(super) struct DurVisitor;

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
pub(super) struct DurExpect(pub(super) DurationError);

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
pub(super) struct OptDur(pub(super) Option<Duration>);

impl OptDur {
    pub(super) fn is_none(&self) -> bool {
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

pub(super) struct OptDurVisitor;

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
pub(super) struct NameW(pub(super) Name);

impl Serialize for NameW {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

pub(super) struct NameVisitor;

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
pub(super) struct Permille(pub(super) u32);

impl Serialize for Permille {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

pub(super) struct PermilleVisitor;

pub(super) const PERMILLE_EXPECTED: &str =
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

pub(super) struct JitterVisitor;

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

impl Serialize for UpstreamRetry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

pub(super) struct UpstreamRetryVisitor;

impl Visitor<'_> for UpstreamRetryVisitor {
    type Value = UpstreamRetry;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one of \"always\", \"not_when_retry\", \"shared_allowance\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<UpstreamRetry, E> {
        v.parse()
            .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
    }
}

impl<'de> Deserialize<'de> for UpstreamRetry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(UpstreamRetryVisitor)
    }
}
