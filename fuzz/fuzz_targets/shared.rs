//! Two to four call machines sharing their budgets (hedges charged to a
//! budget of their own a third of the time), their steps interleaved:
//! every call's invariants and every budget's conservation law, checked
//! after every step, and the budgets idle once every call has ended.

#![no_main]

use libfuzzer_sys::fuzz_target;
use recourse_tests::invariants::{check_shared, RunLimits, SharedScenario};

fuzz_target!(|scenario: SharedScenario| {
    check_shared(&scenario, RunLimits::FUZZ);
});
