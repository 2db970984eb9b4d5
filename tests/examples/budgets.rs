//! How much extra load retries put on a dependency that is down, with and
//! without budgets: 10,000 calls at 1,000 calls/s against a dependency that
//! fails every attempt, each call allowed 3 attempts (10 ms backoff,
//! doubling). A deterministic run of the real call machine in virtual time.
//!
//! Run: `cargo run --example budgets`

use core::time::Duration;

use recourse_core::budget::{AwsRetryQuota, Budget, GrpcThrottle, RetryRatio, TokenBucket};
use recourse_tests::load::{run_load, Load};

fn main() {
    let load = Load::outage();
    let finagle = RetryRatio::finagle();
    let ratio_5 = RetryRatio::new(Duration::from_secs(10), 10, 50);
    let grpc = GrpcThrottle::new(100, 100);
    let aws = AwsRetryQuota::standard();
    let bucket = TokenBucket::new(100, 50);
    let rows: [(&str, Option<&dyn Budget>); 6] = [
        ("no budget", None),
        (
            "retry ratio 20 %, 10/s, 10 s (Finagle default)",
            Some(&finagle),
        ),
        ("retry ratio 5 %, 10/s, 10 s", Some(&ratio_5)),
        ("gRPC throttling (100 tokens, ratio 0.1)", Some(&grpc)),
        ("AWS standard retry quota (500 tokens)", Some(&aws)),
        ("token bucket (100, 50/s), all attempts", Some(&bucket)),
    ];
    println!(
        "{} calls at {}/s, every attempt fails, max 3 attempts per call\n",
        load.calls, load.rate_per_sec
    );
    println!(
        "{:<48} {:>9} {:>8} {:>14}",
        "budget", "attempts", "denied", "amplification"
    );
    for (name, budget) in rows {
        let r = run_load(&load, budget);
        println!(
            "{:<48} {:>9} {:>8} {:>13.3}x",
            name,
            r.attempts,
            r.denied,
            r.amplification()
        );
    }
}
