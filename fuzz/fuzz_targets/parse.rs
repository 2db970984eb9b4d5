//! The name parsers on arbitrary strings: `Trigger::parse`,
//! `PolicyKey::parse` and `Jitter::from_str` never panic and follow their
//! documented rules.

#![no_main]

use libfuzzer_sys::fuzz_target;
use recourse_tests::invariants::check_parse;

fuzz_target!(|data: &[u8]| {
    check_parse(&String::from_utf8_lossy(data));
});
