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
fn write_key(
    buf: &mut impl core::fmt::Write,
    key: recourse_core::PolicyKey<'_>,
) -> core::fmt::Result {
    if !key.namespace.is_empty() {
        buf.write_str(key.namespace)?;
        buf.write_char('.')?;
    }
    buf.write_str(key.name)
}

/// A key joined as `namespace.name` (see [`joined_key`]): on the stack when
/// it fits, so looking a key up in a map by its full name allocates only
/// for an unusually long key.
#[expect(
    clippy::large_enum_variant,
    reason = "the inline buffer is the point: it lives on the caller's stack for one lookup"
)]
pub(crate) enum JoinedKey {
    Inline(heapless::String<256>),
    Owned(String),
}

impl core::ops::Deref for JoinedKey {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Self::Inline(s) => s,
            Self::Owned(s) => s,
        }
    }
}

/// `key` joined as `namespace.name` (or `name`), the form the map-backed
/// providers key their entries by.
pub(crate) fn joined_key(key: recourse_core::PolicyKey<'_>) -> JoinedKey {
    let mut buf = heapless::String::<256>::new();
    if write_key(&mut buf, key).is_ok() {
        return JoinedKey::Inline(buf);
    }
    let mut s = String::new();
    let _ = write_key(&mut s, key);
    JoinedKey::Owned(s)
}
