//! recourse in one screen: three calls under per-key policies, each printed
//! with its timeline.
//!
//! - `inventory.Reserve` fails twice, then succeeds: retried with backoff.
//! - `search.Query` hangs: each attempt is cut at its 50 ms deadline until
//!   the 180 ms overall deadline ends the call.
//! - `payments.Charge` is unavailable once (retryable), then fails with an
//!   error a custom classifier calls non-retryable: the call stops there,
//!   with attempts to spare.
//!
//! Runs on async-io's timer under a plain `block_on`, no runtime needed:
//! `cargo run --example quickstart`.

use core::fmt;
use core::time::Duration;

use recourse::{Executor, Jitter, Outcome, Policy, StaticProvider};

/// What the pretend payment service can answer.
#[derive(Debug)]
enum PaymentError {
    InvalidCard,
    Unavailable,
}

impl fmt::Display for PaymentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidCard => f.write_str("card number is invalid"),
            Self::Unavailable => f.write_str("payment service unavailable"),
        }
    }
}

/// A few milliseconds of pretend network latency.
async fn latency() {
    async_io::Timer::after(Duration::from_millis(2)).await;
}

fn main() -> Result<(), Box<dyn core::error::Error>> {
    // Per-key policies, each one expression, normalized (and checked) as
    // they are added.
    let reserve = Policy::retries(3)
        .backoff(Duration::from_millis(10), Duration::from_millis(250))
        .jitter(Jitter::Equal);
    let query = Policy::retries(4)
        .attempt_timeout(Duration::from_millis(50))
        .overall_timeout(Duration::from_millis(180));
    let charge = Policy::DEFAULT;

    let provider = StaticProvider::builder()
        .policy("inventory.Reserve", reserve)?
        .policy("search.Query", query)?
        .policy("payments.Charge", charge)?
        .build();
    recourse::set_default_executor(Executor::builder().provider(provider).try_build()?)
        .map_err(|_| "the default executor was already set")?;

    async_io::block_on(async {
        // (a) A flaky dependency: fails twice, then succeeds.
        let mut calls = 0;
        let (result, timeline) = recourse::do_value_with_timeline("inventory.Reserve", |attempt| {
            calls += 1;
            let fail = calls <= 2;
            async move {
                latency().await;
                if fail {
                    Err("connection reset")
                } else {
                    Ok(format!("reserved on attempt {}", attempt.retry_index + 1))
                }
            }
        })
        .await;
        println!("(a) flaky dependency -> {result:?}\n{timeline}");

        // (b) A dependency that hangs: cut per attempt, then overall.
        let (result, timeline) = recourse::do_value_with_timeline("search.Query", |_attempt| {
            core::future::pending::<Result<Vec<String>, &str>>()
        })
        .await;
        match &result {
            Ok(hits) => println!("(b) hanging dependency -> ok: {hits:?}"),
            Err(e) => println!("(b) hanging dependency -> error: {e}"),
        }
        println!("{timeline}");

        // (c) A non-retryable failure, as a custom classifier sees it.
        let classify = |r: &Result<u64, PaymentError>| match r {
            Ok(_) => Outcome::SUCCESS,
            Err(PaymentError::InvalidCard) => Outcome::non_retryable("invalid_argument"),
            Err(PaymentError::Unavailable) => Outcome::retryable("unavailable"),
        };
        let (result, timeline) = recourse::default_executor()
            .call_classified_with_timeline("payments.Charge", classify, |attempt| async move {
                latency().await;
                Err::<u64, _>(if attempt.retry_index == 0 {
                    PaymentError::Unavailable
                } else {
                    PaymentError::InvalidCard
                })
            })
            .await;
        match &result {
            Ok(id) => println!("(c) non-retryable failure -> ok: charge {id}"),
            Err(e) => println!("(c) non-retryable failure -> error: {e}"),
        }
        println!("{timeline}");
    });
    Ok(())
}
