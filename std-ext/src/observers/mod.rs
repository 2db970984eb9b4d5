//! Observers for the ecosystem's telemetry: each is an
//! [`Observer`](crate::Observer), composes with the others (pass several to
//! [`ExecutorBuilder::observer`](crate::ExecutorBuilder::observer), or a
//! [`MultiObserver`](crate::MultiObserver)), and costs nothing when its
//! feature is off.
//!
//! - `tracing` (feature `tracing`) — a span per call and per attempt.
//! - `metrics` (feature `metrics`) — counters and histograms through the
//!   `metrics` facade, for any exporter (Prometheus, StatsD, OTLP ...).
//! - `opentelemetry` (feature `opentelemetry`) — the same instruments
//!   through the OpenTelemetry metrics API; its docs say which to pick.

#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "opentelemetry")]
pub mod opentelemetry;
#[cfg(feature = "tracing")]
pub mod tracing;
