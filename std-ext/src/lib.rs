//! # recourse
//!
//! Policy-driven resilience for Rust: retries with exponential backoff and
//! jitter, per-attempt and overall timeouts, cancellation by dropping the
//! future, and a [`Timeline`] of every attempt — chosen per call site by a
//! low-cardinality key such as `"user-service.GetUser"`.
//!
//! Every decision is made by one `#![no_std]`, sans-IO state machine
//! ([`recourse_core`], re-exported as [`core_machine`]); this crate is what
//! std programs import around it: policy providers, the executor, observers,
//! timelines and a one-line facade.
//!
//! ## What a call does
//!
//! 1. The [`Executor`] takes a fresh timer from its [`TimerSource`](timer::TimerSource) (tokio's
//!    inside a tokio runtime with the `tokio` feature, async-io's
//!    otherwise) and a fresh, optionally seeded, RNG.
//! 2. It asks its [`PolicyProvider`] for the key's normalized [`Policy`],
//!    exactly once; without one, the [`MissingPolicyMode`] decides (deny,
//!    allow a single attempt, or fall back to [`Policy::DEFAULT`]).
//! 3. It runs the core driver ([`recourse_core::call`]): the machine says
//!    when to launch an attempt, how long to back off, when to cut an attempt
//!    or the whole call; the [`Classifier`] says what each result means.
//! 4. Events go to the [`Observer`] (start, one per attempt, exactly one
//!    end) and, when asked for, into a [`Timeline`].
//!
//! ## The result contract
//!
//! Every call method ends with one verdict that the caller and the
//! [`Observer`] share: `Ok` exactly when the observer hears `on_success`,
//! `Err` with the same reason when it hears `on_failure` (a budget
//! refusal's own code is in the error, the observer hears
//! `budget_denied`). `Ok` means the classifier accepted the value.
//!
//! | method | a value the classifier rejected ends the call as |
//! |---|---|
//! | [`Executor::call_classified`], `..._with_timeline` | `Err`, carrying it as [`Failure::Rejected`] (errors are [`Failure::Error`]) |
//! | `Executor::call_http`, `..._with_timeline` (feature `http`) | `Err`, carrying the response as `http::HttpFailure::Response`, so `Ok` means `2xx` |
//! | [`Executor::call`], `..._with_timeline`, [`do_value`] and friends | the default classifier accepts every `Ok`; under a classifier the policy names, [`Error::Rejected`] with the cause (the error type has no room for the value) |
//!
//! Whatever stopped the call — retries exhausted, a non-retryable verdict,
//! a budget refusing the retry ([`Error::BudgetDenied`]), the deadline —
//! the last value or error is carried where the error has room for it. The
//! circuit breaker is asked before the first attempt only, so its refusal
//! ([`Error::CircuitOpen`]) never follows an attempt. Also:
//!
//! - attempts all cut by `timeout_per_attempt`: [`Error::AttemptsTimedOut`];
//! - with panic containment on (the default), a panicking operation ends the
//!   call with [`Error::OperationPanicked`] (reason `panic_in_operation`,
//!   which the observer hears too), its attempts settled with their budgets.
//!
//! ## Example
//!
//! ```
//! use recourse::AttemptInfo;
//!
//! # async_io::block_on(async {
//! let mut failures = 2;
//! // The default policy: 3 attempts, 10 ms backoff doubling to 250 ms.
//! let (result, timeline) = recourse::do_value_with_timeline(
//!     "user-service.GetUser",
//!     |attempt: AttemptInfo| {
//!         let fail = failures > 0;
//!         failures -= 1;
//!         async move {
//!             if fail { Err("connection reset") } else { Ok(format!("user 42, attempt {}", attempt.retry_index)) }
//!         }
//!     },
//! )
//! .await;
//! assert_eq!(result.as_deref(), Ok("user 42, attempt 2"));
//! assert_eq!(timeline.attempts.len(), 3);
//! println!("{timeline}");
//! # });
//! ```
//!
//! Per-key policies, observers and the missing-policy mode go on an
//! executor: see [`Executor`] and [`StaticProvider`]. Policies are values
//! built in one expression (`const` where they name nothing):
//!
//! ```
//! use std::time::Duration;
//! use recourse::{Executor, Jitter, Policy, StaticProvider};
//! use recourse::budget::{BudgetRegistry, RetryRatio};
//!
//! const GET_USER: Policy = Policy::retries(3)
//!     .backoff(Duration::from_millis(20), Duration::from_secs(1))
//!     .jitter(Jitter::Full)
//!     .overall_timeout(Duration::from_secs(2));
//!
//! let exec = Executor::builder()
//!     .provider(
//!         StaticProvider::builder()
//!             .policy("users.GetUser", GET_USER)?
//!             .policy("users.ListUsers", GET_USER.budget("retries")?)?
//!             .build(),
//!     )
//!     .budgets(BudgetRegistry::new().with("retries", RetryRatio::finagle()))
//!     // Every budget, classifier and trigger a policy names must exist.
//!     .try_build()?;
//! # drop(exec);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Modules
//!
//! What most programs use is at the root; the rest is one level down:
//!
//! - [`executor`] — [`Executor`] and its call methods.
//! - [`builder`] — [`ExecutorBuilder`]: provider, observers, registries,
//!   modes, seed.
//! - [`facade`] — [`do_value`] and friends on a process-wide default
//!   executor.
//! - [`policy`] — [`Policy`] and its sections, [`Jitter`], names
//!   ([`policy::Name`]), normalization and its [`PolicyError`].
//! - [`budget`] — retry budgets ([`budget::RetryRatio`],
//!   [`budget::TokenBucket`], [`budget::AwsRetryQuota`], ...), the
//!   [`budget::Budget`] trait, [`BudgetRegistry`] and
//!   [`budget::MissingBudgetMode`].
//! - [`classify`] — [`ClassifierRegistry`] (classifiers a policy names) and
//!   [`classify::MissingClassifierMode`].
//! - [`hedging`] — hedge triggers by name and
//!   [`hedging::MissingTriggerMode`].
//! - [`breakers`] — [`Breakers`], circuit breakers per policy key.
//! - [`amplification`] — one bound on retries and hedges together, per key.
//! - [`latency`] — recent latencies per policy key (quantile triggers,
//!   deadline-aware retries).
//! - [`contract`] — [`Failure`], the error of a call with your classifier.
//! - [`names`] — [`UnknownName`]: typos in a policy's names, found when it
//!   is added.
//! - [`missing_policy`] — [`MissingPolicyMode`].
//! - [`provider`] — [`PolicyProvider`], [`provider::PolicyLookup`],
//!   [`provider::PolicySource`], [`provider::ProviderError`].
//! - [`static_provider`] — [`StaticProvider`].
//! - [`providers`] — [`providers::Layered`], [`providers::PolicyFn`]; with
//!   features `serde`, `file`, `etcd`, `remote-http`, `grpc-config`: policy
//!   documents (TOML, JSON), `FileProvider`, `EtcdProvider`, `HttpProvider`,
//!   `GrpcServiceConfig`.
//! - [`observer`] — [`Observer`] and the events it hears, [`NoopObserver`],
//!   [`MultiObserver`].
//! - [`timeline`] — [`Timeline`].
//! - [`timer`] — [`timer::TimerSource`], [`timer::DefaultTimer`].
//! - [`gate`] — the executor's gate: budgets, breaker and ledger per call
//!   (reason codes).
//! - [`reason`] — every reason code a call or attempt can end with.
//! - `http` (feature `http`) — `HttpClassifier`, `HttpFailure`: status,
//!   method, `Retry-After`.
//! - `grpc` (feature `grpc`) — `GrpcClassifier`: status codes, pushback.
//! - `sim` (feature `sim`) — the deterministic simulator: a policy against
//!   a modelled backend in virtual time.
//! - `integrations` (features `tower`, `reqwest`, `tonic`) — a tower
//!   layer, a `reqwest-middleware` middleware, a tonic `Channel` layer.
//! - `observers` (features `tracing`, `metrics`, `opentelemetry`) —
//!   observers writing `tracing` spans, `metrics` counters and histograms,
//!   OpenTelemetry instruments.
//! - [`core_machine`] — the `#![no_std]` engine ([`recourse_core`]) with
//!   its internals (verdicts, options, the driver); [`runtimes`] — timer
//!   adapters.
//!
//! ## Examples
//!
//! Runnable programs in the repository (`cargo run -p recourse-rs
//! --example NAME`, with the features each names):
//!
//! - [`quickstart`](https://github.com/recourse-rs/recourse/blob/main/std-ext/examples/quickstart.rs)
//!   — three calls under per-key policies, each printed with its timeline;
//! - [`http_service`](https://github.com/recourse-rs/recourse/blob/main/std-ext/examples/http_service.rs)
//!   — a service calling flaky HTTP backends with reqwest, tracing and
//!   Prometheus metrics (features `reqwest tracing metrics tokio`);
//! - [`hedging`](https://github.com/recourse-rs/recourse/blob/main/std-ext/examples/hedging.rs)
//!   — "The Tail at Scale" in the simulator (feature `sim`);
//! - [`amplification`](https://github.com/recourse-rs/recourse/blob/main/std-ext/examples/amplification.rs)
//!   — one bound for retries and hedges across three layers (feature `sim`);
//! - [`budgets`](https://github.com/recourse-rs/recourse/blob/main/tests/examples/budgets.rs)
//!   and [`control_plane`](https://github.com/recourse-rs/recourse/blob/main/tests/examples/control_plane.rs)
//!   — a 10,000-call outage under each budget, and policies from files,
//!   etcd and HTTP;
//! - [`embedded`](https://github.com/recourse-rs/recourse/tree/main/examples/embedded)
//!   — `recourse-core` on a Cortex-M, run in qemu.
//!
//! ## Features
//!
//! - `tokio`: calls inside a tokio runtime use tokio's timer (so
//!   `tokio::time::pause` works); without it, or outside a runtime, calls
//!   use async-io's timer, which works under any executor.
//! - `smol`, `async-std`: async-io's timer, which is already the default;
//!   async-std is discontinued upstream.
//! - `http`: `http::HttpClassifier`, which retries idempotent requests on
//!   transport errors, 5xx, 408 and 429 and honours `Retry-After` (adds the
//!   `http` and `httpdate` crates).
//! - `grpc`: `grpc::GrpcClassifier`, which retries a configurable set of
//!   `tonic::Status` codes and honours `grpc-retry-pushback-ms` (adds
//!   `tonic` without its transport).
//! - `sim`: `sim::Scenario`, the discrete-event simulator (no extra
//!   dependencies).
//! - `tower`: `integrations::tower::RecourseLayer` (adds `tower-service`
//!   and `tower-layer`).
//! - `reqwest`: `integrations::reqwest::RecourseMiddleware` (adds
//!   `reqwest`, `reqwest-middleware`, `anyhow`, `async-trait`; implies
//!   `http`).
//! - `tonic`: `integrations::tonic::GrpcLayer` (adds `http-body`,
//!   `http-body-util`, `bytes`; implies `grpc` and `http`).
//! - `tracing`: `observers::tracing::TracingObserver` (adds `tracing`).
//! - `metrics`: `observers::metrics::MetricsObserver` (adds `metrics`).
//! - `opentelemetry`: `observers::opentelemetry::OtelMetricsObserver`
//!   (adds `opentelemetry` with only its metrics API).
//! - `serde`: `providers::document`, policy documents in TOML and JSON;
//!   `json-schema` adds their JSON Schema.
//! - `file`: `providers::FileProvider`, a watched policy file (`notify`,
//!   `arc-swap`).
//! - `etcd`: `providers::EtcdProvider` (`etcd-client`; building it needs
//!   `protoc`).
//! - `remote-http`: `providers::HttpProvider` (hyper client, `moka` cache).
//! - `grpc-config`: `providers::GrpcServiceConfig`, gRPC service configs.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub mod amplification;
pub mod breakers;
pub mod budget;
pub mod builder;
pub mod classify;
pub mod contract;
pub mod executor;
pub mod facade;
pub mod gate;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod hedging;
#[cfg(feature = "http")]
pub mod http;
#[cfg(any(feature = "tower", feature = "reqwest", feature = "tonic"))]
pub mod integrations;
mod key_cache;
mod keyed;
pub mod latency;
pub mod missing_policy;
pub mod names;
pub mod observer;
#[cfg(any(feature = "tracing", feature = "metrics", feature = "opentelemetry"))]
pub mod observers;
pub mod provider;
pub mod providers;
mod report;
mod sharded;
#[cfg(feature = "sim")]
pub mod sim;
pub mod static_provider;
pub mod timeline;
pub mod timer;
pub mod upstream;

/// Policies: the envelope ([`Policy`]), its sections, names, and
/// normalization (`recourse_core`'s `policy` module).
pub mod policy {
    pub use recourse_core::policy::*;
}

pub use recourse_core as core_machine;
pub use recourse_core::outcome::reason;
pub use recourse_runtimes as runtimes;

pub use recourse_core::policy::{
    AmplificationPolicy, CircuitPolicy, HedgePolicy, Jitter, Policy, PolicyError, RetryPolicy,
};
pub use recourse_core::{
    AttemptInfo, Cause, Classifier, DefaultClassifier, Error, Outcome, OutcomeKind, PolicyKey,
};

pub use breakers::Breakers;
pub use budget::BudgetRegistry;
pub use builder::ExecutorBuilder;
pub use classify::ClassifierRegistry;
pub use contract::Failure;
pub use executor::Executor;
pub use facade::{
    default_executor, do_value, do_value_key, do_value_with, do_value_with_timeline,
    do_value_with_timeline_with, set_default_executor,
};
#[cfg(feature = "grpc")]
pub use grpc::GrpcClassifier;
#[cfg(feature = "http")]
pub use http::HttpClassifier;
pub use key_cache::CallKey;
pub use missing_policy::MissingPolicyMode;
pub use names::UnknownName;
pub use observer::{MultiObserver, NoopObserver, Observer};
pub use provider::PolicyProvider;
pub use static_provider::StaticProvider;
pub use timeline::Timeline;
