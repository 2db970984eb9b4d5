//! The call machine under arbitrary policies (raw and normalized), gates,
//! budgets, hedge triggers and event sequences, with every invariant of
//! `recourse_tests::invariants` checked after every step.
//!
//! A crash prints the violated invariant, the last events and actions and
//! the scenario; `cargo +nightly fuzz fmt machine <artifact>` prints the
//! scenario again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use recourse_tests::invariants::{check_machine, RunLimits, Scenario};

fuzz_target!(|scenario: Scenario| {
    check_machine(&scenario, RunLimits::FUZZ);
});
