//! Policy normalization on arbitrary raw policies and executor limits:
//! never panics, errors only on a non-finite multiplier (naming the field),
//! and the result satisfies every row of SPEC.md's table, reports exactly
//! the fields it changed, and is a fixed point.

#![no_main]

use libfuzzer_sys::fuzz_target;
use recourse_tests::invariants::{check_normalize, ArbitraryLimits, ArbitraryPolicy};

fuzz_target!(|input: (ArbitraryPolicy, ArbitraryLimits)| {
    let (ArbitraryPolicy(policy), ArbitraryLimits(limits)) = input;
    check_normalize(&policy, limits);
});
