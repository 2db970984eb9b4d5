//! Observers: callbacks for logs, metrics and traces.
//!
//! Order, per call, always: [`Observer::on_start`] once and first, then
//! [`Observer::on_launch`] as each attempt (primary, retry or hedge) starts
//! and one [`Observer::on_attempt`] per attempt in the order attempts ended
//! (refused and cancelled attempts included), then exactly one of
//! [`Observer::on_success`] / [`Observer::on_failure`], last — also when the
//! call future is dropped midway (then the failure's cause is
//! [`Cause::Cancelled`](crate::Cause::Cancelled)).
//!
//! `()` is the no-op observer; every method has an empty default body, so it
//! costs nothing once inlined.

use crate::key::PolicyKey;
use crate::record::{AttemptInfo, AttemptRecord};
use crate::time::Instant;
use crate::verdict::Verdict;

/// How a call ended, for [`Observer::on_success`] and
/// [`Observer::on_failure`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallEnd {
    /// When the call started.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
    /// Attempts launched.
    pub attempts: u32,
    /// The machine's verdict.
    pub verdict: Verdict,
}

/// Receives the events of calls. Methods default to doing nothing.
pub trait Observer {
    /// The call started.
    fn on_start(&mut self, key: PolicyKey<'_>, start: Instant) {
        let _ = (key, start);
    }

    /// An attempt is launching (`info.is_hedge` for a hedge spawn): the
    /// gate admitted it and the operation is about to be called.
    fn on_launch(&mut self, key: PolicyKey<'_>, info: &AttemptInfo) {
        let _ = (key, info);
    }

    /// An attempt ended (or was refused by the gate).
    fn on_attempt(&mut self, key: PolicyKey<'_>, record: &AttemptRecord) {
        let _ = (key, record);
    }

    /// Whether [`on_attempt`](Self::on_attempt) does anything for this
    /// call: `false` (for an observer whose `on_attempt` is a no-op) lets
    /// the call future skip building an ended attempt's record when the
    /// gate does not hear it either. The default, `true`, is always
    /// correct; answer `false` only when `on_attempt` does nothing.
    #[inline]
    fn hears_attempts(&self) -> bool {
        true
    }

    /// Whether this observer uses the instants it is given for this call
    /// (`start` in [`on_start`](Self::on_start), the records' `start` and
    /// `end`, [`CallEnd`]'s): `false` lets a call whose gate and policy use
    /// no time either skip the clock reads nobody would use (the call's
    /// start, a successful attempt's end; issue 16). Asked when the call
    /// starts: answer the same for the whole call. The default, `true`, is always correct; answer `false` only
    /// when no hook reads an instant (the instants it is then given are the
    /// latest the call's machine saw, not the clock's).
    #[inline]
    fn uses_time(&self) -> bool {
        true
    }

    /// Whether [`uses_time`](Self::uses_time) may answer `false` for a
    /// call with an observer of this type. `false` (the default) says it
    /// never does, and a call future compiled for this type carries no code
    /// for calls that leave their clock unread (on a microcontroller, about
    /// 130 bytes of flash); set it `true` when you override `uses_time`
    /// (left `false`, the override is never asked and the clock is read).
    const MAY_IGNORE_TIME: bool = false;

    /// The call succeeded.
    fn on_success(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        let _ = (key, end);
    }

    /// The call failed.
    fn on_failure(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        let _ = (key, end);
    }
}

/// The no-op observer.
impl Observer for () {
    #[inline]
    fn hears_attempts(&self) -> bool {
        false
    }
    #[inline]
    fn uses_time(&self) -> bool {
        false
    }
    const MAY_IGNORE_TIME: bool = true;
}

impl<O: Observer + ?Sized> Observer for &mut O {
    fn on_start(&mut self, key: PolicyKey<'_>, start: Instant) {
        (**self).on_start(key, start)
    }
    fn on_launch(&mut self, key: PolicyKey<'_>, info: &AttemptInfo) {
        (**self).on_launch(key, info)
    }
    fn on_attempt(&mut self, key: PolicyKey<'_>, record: &AttemptRecord) {
        (**self).on_attempt(key, record)
    }
    #[inline]
    fn hears_attempts(&self) -> bool {
        (**self).hears_attempts()
    }
    #[inline]
    fn uses_time(&self) -> bool {
        (**self).uses_time()
    }
    const MAY_IGNORE_TIME: bool = O::MAY_IGNORE_TIME;
    fn on_success(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        (**self).on_success(key, end)
    }
    fn on_failure(&mut self, key: PolicyKey<'_>, end: &CallEnd) {
        (**self).on_failure(key, end)
    }
}
