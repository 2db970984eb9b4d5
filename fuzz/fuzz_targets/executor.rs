//! The std executor on tokio's paused clock: arbitrary (normalized)
//! policies; operations that succeed, fail, hang or panic after arbitrary
//! delays; calls dropped at arbitrary points; observers and budgets that
//! panic; missing policies, budgets, classifiers and triggers. Checks
//! observer order, exactly one end event, the timeline against the
//! records, containment, the missing-piece modes, the panic counters, and
//! the budgets back where they started once every call has ended
//! (`recourse_tests::executor_model`, shared with the `executor_model`
//! property test).

#![no_main]

use libfuzzer_sys::fuzz_target;
use recourse_tests::executor_model::{run, Input, Stats};

fuzz_target!(|input: Input| {
    if let Err(e) = run(&input, &mut Stats::default()) {
        panic!("{e}\n{input:#?}");
    }
});
