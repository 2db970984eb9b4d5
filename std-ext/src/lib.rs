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
//! 1. The [`Executor`] takes a fresh timer from its [`TimerSource`] (tokio's
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
//! Every call method ends with one [`Error`] the observer hears too (the
//! caller's `Err` and the observer's `on_failure` come from the same
//! verdict; a budget refusal's own code is in the error, the observer hears
//! `budget_denied`):
//!
//! - the operation's last error is carried whenever there was one, also
//!   when a budget refused the retry after it ([`Error::BudgetDenied`]);
//! - `Executor::call_http` (feature `http`) makes every response the
//!   classifier did not accept (a `503` after retries ran out, a `404`, a
//!   `503` whose `Retry-After` reaches past the deadline) an `Err` carrying
//!   it (`http::HttpFailure::Response`), so `Ok` means `2xx`; with a
//!   classifier of your own over `Result<T, E>`, a rejected `Ok` value stays
//!   `Ok` (see [`Error`]);
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
//! executor: see [`Executor`] and [`StaticProvider`].
//!
//! ## Modules
//!
//! - [`executor`] — [`Executor`], the call methods.
//! - [`breakers`] — [`Breakers`], circuit breakers per policy key.
//! - [`builder`] — [`ExecutorBuilder`].
//! - [`facade`] — [`do_value`] and friends on a global default executor.
//! - [`hedging`] — hedge triggers by name, [`MissingTriggerMode`].
//! - [`latency`] — [`LatencyTrackers`], recent latencies per policy key.
//! - [`provider`] — [`PolicyProvider`], [`PolicyLookup`], [`PolicySource`],
//!   [`ProviderError`].
//! - [`static_provider`] — [`StaticProvider`].
//! - [`providers`] — [`providers::Layered`], [`providers::PolicyFn`]; with
//!   features `serde`, `file`, `etcd`, `remote-http`, `grpc-config`: policy
//!   documents (TOML, JSON), `FileProvider`, `EtcdProvider`, `HttpProvider`,
//!   `GrpcServiceConfig`.
//! - [`missing_policy`] — [`MissingPolicyMode`].
//! - [`observer`] — [`Observer`], [`NoopObserver`], [`MultiObserver`].
//! - [`timeline`] — [`Timeline`].
//! - [`timer`] — [`TimerSource`], [`DefaultTimer`].
//! - `http` (feature `http`) — `HttpClassifier`: status, method, `Retry-After`.
//! - `grpc` (feature `grpc`) — `GrpcClassifier`: status codes, pushback.
//! - `sim` (feature `sim`) — the deterministic simulator: a policy against
//!   a modelled backend in virtual time.
//! - `integrations` (features `tower`, `reqwest`, `tonic`) — a tower
//!   layer, a `reqwest-middleware` middleware, a tonic `Channel` layer.
//! - `observers` (features `tracing`, `metrics`, `opentelemetry`) —
//!   observers writing `tracing` spans, `metrics` counters and histograms,
//!   OpenTelemetry instruments.
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
pub mod budgets;
pub mod builder;
pub mod classify;
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
pub mod observer;
#[cfg(any(feature = "tracing", feature = "metrics", feature = "opentelemetry"))]
pub mod observers;
pub mod provider;
pub mod providers;
mod report;
#[cfg(feature = "sim")]
pub mod sim;
pub mod static_provider;
pub mod timeline;
pub mod timer;

pub use recourse_core as core_machine;
pub use recourse_runtimes as runtimes;

pub use recourse_core::hedge::Trigger;
pub use recourse_core::machine::{Cause, Options, Verdict};
pub use recourse_core::outcome::reason;
pub use recourse_core::policy::{
    ChangedFields, CircuitPolicy, Field, HedgePolicy, Normalized, PolicyError, RetryPolicy,
};
pub use recourse_core::{
    AttemptId, AttemptInfo, AttemptKind, AttemptRecord, Classifier, DefaultClassifier, Error,
    Instant, Jitter, Outcome, OutcomeKind, Policy, PolicyKey, Timer,
};

#[cfg(feature = "grpc")]
pub use self::grpc::GrpcClassifier;
#[cfg(feature = "http")]
pub use self::http::HttpClassifier;
pub use amplification::AmplificationLedgers;
pub use breakers::Breakers;
pub use budgets::{BudgetRegistry, MissingBudgetMode, SharedBudget};
pub use builder::ExecutorBuilder;
pub use classify::{ClassifierRegistry, MissingClassifierMode};
pub use executor::Executor;
pub use facade::{
    default_executor, do_value, do_value_with, do_value_with_timeline, do_value_with_timeline_with,
    set_default_executor,
};
pub use hedging::MissingTriggerMode;
pub use latency::LatencyTrackers;
pub use missing_policy::MissingPolicyMode;
pub use observer::{
    BudgetDecision, CallStart, CallSummary, CircuitTransition, MultiObserver, NoopObserver,
    Observer,
};
pub use provider::{PolicyLookup, PolicyProvider, PolicySource, ProviderError};
pub use static_provider::{StaticProvider, StaticProviderBuilder};
pub use timeline::Timeline;
pub use timer::{DefaultCallTimer, DefaultSleep, DefaultTimer, TimerSource};
