//! Providers that load policies from outside the program: a policy document
//! (TOML or JSON), a watched file, etcd; and layers of providers.
//!
//! Why they all answer from memory: a call reads its policy once, on its own
//! task, and must never wait on a disk or a network. Each provider here
//! validates a new document whole, normalizes it once, and swaps it in
//! atomically (`arc-swap`, with a per-thread snapshot checked against a
//! generation counter): a lookup takes no lock, writes no shared memory,
//! and does the same
//! binary search as [`StaticProvider`](crate::StaticProvider), and a bad
//! document, or an unreachable store, leaves the last good policies serving.

pub mod custom;
#[cfg(feature = "serde")]
pub mod document;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "grpc-config")]
pub mod grpc_config;
pub mod layered;
#[cfg(feature = "remote-http")]
pub mod remote;
#[cfg(any(feature = "file", feature = "etcd"))]
mod snapshot;

pub use custom::PolicyFn;
#[cfg(feature = "serde")]
pub use document::{DocumentError, Format, KnownNames, PolicyDocument, ValidDocument};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdProvider, EtcdProviderBuilder, EtcdStats};
#[cfg(feature = "file")]
pub use file::{FileProvider, FileProviderBuilder, ReloadEvent, ReloadStats, Watch};
#[cfg(feature = "grpc-config")]
pub use grpc_config::{GrpcConfigProvider, GrpcServiceConfig};
pub use layered::Layered;
#[cfg(feature = "remote-http")]
pub use remote::{HttpProvider, HttpProviderBuilder, HttpStats};

/// Writes `namespace.name` (or `name`) into `buf`.
pub(crate) fn write_key(
    buf: &mut impl core::fmt::Write,
    key: recourse_core::PolicyKey<'_>,
) -> core::fmt::Result {
    if !key.namespace.is_empty() {
        buf.write_str(key.namespace)?;
        buf.write_char('.')?;
    }
    buf.write_str(key.name)
}
