//! Client integrations: recourse where a service's requests already go.
//!
//! - `tower` (feature `tower`) — [`RecourseLayer`](tower::RecourseLayer), a
//!   tower layer for any `Service`; with `http`, `UpstreamLayer`, which
//!   reads the upstream attempt count of inbound requests (see
//!   [`crate::upstream`]).
//! - `reqwest` (feature `reqwest`) — a `reqwest-middleware` middleware.
//! - `tonic` (feature `tonic`) — a layer for a tonic client `Channel`.

#[cfg(feature = "reqwest")]
pub mod reqwest;
#[cfg(feature = "tonic")]
pub mod tonic;
#[cfg(feature = "tower")]
pub mod tower;
