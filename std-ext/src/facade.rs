//! The one-line facade: calls on a process-wide default executor, and the
//! same calls on an executor you pass.
//!
//! The default executor is created on first use with [`Executor::new`]: no
//! policies, so every call runs under the fallback policy
//! ([`Policy::DEFAULT`](recourse_core::Policy::DEFAULT): 3 attempts, 10 ms
//! backoff doubling to 250 ms), and its timelines say
//! `missing_policy_mode=fallback`. To configure it, build an executor and
//! install it with [`set_default_executor`] before the first call.
//!
//! | function | executor | returns |
//! |---|---|---|
//! | [`do_value`] | the default | `Result<T, Error<E>>` |
//! | [`do_value_key`] (a [`CallKey`]) | the default | `Result<T, Error<E>>` |
//! | [`do_value_with_timeline`] | the default | `(Result<T, Error<E>>, Timeline)` |
//! | [`do_value_with`] | the one passed | `Result<T, Error<E>>` |
//! | [`do_value_with_timeline_with`] | the one passed | `(Result<T, Error<E>>, Timeline)` |
//!
//! For a custom classifier, call
//! [`Executor::call_classified`] on [`default_executor()`] or your own.

use core::future::Future;
use std::sync::OnceLock;

use recourse_core::{AttemptInfo, Error};

use crate::executor::Executor;
use crate::key_cache::CallKey;
use crate::timeline::Timeline;
use crate::timer::TimerSource;

static DEFAULT: OnceLock<Executor> = OnceLock::new();

/// The process-wide default executor, created on first use unless
/// [`set_default_executor`] installed one.
pub fn default_executor() -> &'static Executor {
    DEFAULT.get_or_init(Executor::new)
}

/// Installs `exec` as the default executor.
///
/// # Errors
///
/// Gives `exec` back when a default executor already exists (installed
/// earlier, or created by a call that ran first).
// Like `OnceLock::set`, the rejected executor is handed back by value; it is
// called once at start-up, so its size costs nothing.
#[allow(clippy::result_large_err)]
pub fn set_default_executor(exec: Executor) -> Result<(), Executor> {
    DEFAULT.set(exec)
}

/// Calls `op` under the policy for `key` on the default executor, with the
/// default classifier (`Ok` succeeds, every `Err` is retryable).
///
/// ```
/// # async_io::block_on(async {
/// let mut failures = 1;
/// let value = recourse::do_value("inventory.Reserve", |_attempt| {
///     let fail = failures > 0;
///     failures -= 1;
///     async move { if fail { Err("busy") } else { Ok("reserved") } }
/// })
/// .await;
/// assert_eq!(value, Ok("reserved"));
/// # });
/// ```
///
/// # Errors
///
/// As for [`Executor::call`].
///
/// The future returned is the executor's call future itself (no async frame
/// of its own around it); like an `async fn`, it does nothing until first
/// polled.
pub fn do_value<'k, T, E, Op, Fut>(
    key: &'k str,
    op: Op,
) -> impl Future<Output = Result<T, Error<E>>> + use<'k, T, E, Op, Fut>
where
    T: 'static,
    E: 'static,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    default_executor().call(key, op)
}

/// [`do_value`] with a [`CallKey`], which keeps its key's resolution
/// itself (no per-call lookup of the key; see [`Executor::call_key`]).
///
/// ```
/// use recourse::CallKey;
///
/// static RESERVE: CallKey = CallKey::new("inventory.Reserve");
///
/// # async_io::block_on(async {
/// let value = recourse::do_value_key(&RESERVE, |_attempt| async { Ok::<_, ()>("reserved") }).await;
/// assert_eq!(value, Ok("reserved"));
/// # });
/// ```
///
/// # Errors
///
/// As for [`Executor::call`].
pub fn do_value_key<'k, T, E, Op, Fut>(
    key: &'k CallKey,
    op: Op,
) -> impl Future<Output = Result<T, Error<E>>> + use<'k, T, E, Op, Fut>
where
    T: 'static,
    E: 'static,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    default_executor().call_key(key, op)
}

/// Like [`do_value`], and also returns the call's [`Timeline`].
pub async fn do_value_with_timeline<T, E, Op, Fut>(
    key: &str,
    op: Op,
) -> (Result<T, Error<E>>, Timeline)
where
    T: 'static,
    E: 'static,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    default_executor().call_with_timeline(key, op).await
}

/// Like [`do_value`], on `exec` instead of the default executor (the same
/// as [`Executor::call`]).
///
/// # Errors
///
/// As for [`Executor::call`].
pub fn do_value_with<'s, 'k, S, T, E, Op, Fut>(
    exec: &'s Executor<S>,
    key: &'k str,
    op: Op,
) -> impl Future<Output = Result<T, Error<E>>> + use<'s, 'k, S, T, E, Op, Fut>
where
    S: TimerSource,
    T: 'static,
    E: 'static,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    exec.call(key, op)
}

/// Like [`do_value_with_timeline`], on `exec` instead of the default
/// executor (the same as [`Executor::call_with_timeline`]).
pub async fn do_value_with_timeline_with<S, T, E, Op, Fut>(
    exec: &Executor<S>,
    key: &str,
    op: Op,
) -> (Result<T, Error<E>>, Timeline)
where
    S: TimerSource,
    T: 'static,
    E: 'static,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    exec.call_with_timeline(key, op).await
}
