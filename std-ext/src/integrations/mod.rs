//! Client integrations: recourse where a service's requests already go.
//!
//! - `tower` (feature `tower`) — [`RecourseLayer`](tower::RecourseLayer), a
//!   tower layer for any `Service`.
//! - `reqwest` (feature `reqwest`) — a `reqwest-middleware` middleware.
//! - `tonic` (feature `tonic`) — a layer for a tonic client `Channel`.

#[cfg(feature = "reqwest")]
pub mod reqwest;
#[cfg(feature = "tonic")]
pub mod tonic;
#[cfg(feature = "tower")]
pub mod tower;
