//! Timer adapters that let [`recourse_core`]'s driver run on a runtime.
//!
//! An adapter is a clock and a way to sleep until an instant on it — the
//! [`Timer`](recourse_core::Timer) trait — and nothing else: the call machine
//! makes every decision, the driver polls attempts inside the caller's task,
//! and no adapter spawns a task.
//!
//! | feature | timer | notes |
//! |---|---|---|
//! | `tokio` | [`TokioTimer`] | reads `tokio::time::Instant`, so tests can use tokio's paused clock |
//! | `smol` | [`AsyncIoTimer`] | async-io's timer; works under any executor |
//! | `async-std` | [`AsyncStdTimer`] | async-std is discontinued upstream; its timer is async-io's |
//! | `embassy` | [`EmbassyTimer`] | embassy-time's clock and the program's time driver; `no_std` |
//!
//! Each timer's [`Instant`](recourse_core::Instant)s count from the moment the
//! timer was created, so make one per call (they are cheap: one clock read).
//! [`EmbassyTimer`]'s count from embassy's epoch (boot).
//!
//! With only the `embassy` feature the crate is `no_std`, for
//! microcontrollers.
#![cfg_attr(docsrs, feature(doc_cfg))]
// embassy (issue 18): no_std unless a std runtime's adapter is on.
#![cfg_attr(
    not(any(test, feature = "tokio", feature = "smol", feature = "async-std")),
    no_std
)]

#[cfg(any(feature = "smol", feature = "async-std"))]
mod async_io_timer;
#[cfg(feature = "async-std")]
mod async_std_timer;
#[cfg(feature = "tokio")]
mod tokio_timer;
// embassy (issue 18)
#[cfg(feature = "embassy")]
mod embassy_timer;

#[cfg(any(feature = "smol", feature = "async-std"))]
pub use async_io_timer::{AsyncIoSleep, AsyncIoTimer};
#[cfg(feature = "async-std")]
pub use async_std_timer::AsyncStdTimer;
#[cfg(feature = "tokio")]
pub use tokio_timer::TokioTimer;
// embassy (issue 18)
#[cfg(feature = "embassy")]
pub use embassy_timer::{EmbassySleep, EmbassyTimer};
