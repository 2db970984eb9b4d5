//! Tests of `policy_serde.rs`.

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
