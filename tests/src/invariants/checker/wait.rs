//! Rules for waiting: every wait is after now, never past a pending deadline
//! or the trigger's next check, and has the reason it says; a backoff is
//! exactly the hinted one or the one the reference schedule drew.

use core::time::Duration;

use recourse_core::{Instant, WaitReason};

use super::Checker;
use crate::invariants::coverage::Feature;
use crate::invariants::gate::GateCall;

impl Checker<'_> {
    pub(super) fn on_wait(&mut self, until: Instant, reason: WaitReason, calls: &[GateCall]) {
        ensure!(
            self,
            until > self.now,
            "Wait until {until:?} ({reason:?}) is not after now {:?}: a driver would busy-loop",
            self.now
        );
        ensure!(
            self,
            self.expected.is_none(),
            "the machine waits although the call must end with {:?}",
            self.expected
        );
        let hedge = self.hedge_check(calls);
        let feature = match reason {
            WaitReason::Backoff => Feature::WaitedBackoff,
            WaitReason::HedgeDelay => Feature::WaitedHedgeDelay,
            WaitReason::AttemptDeadline => Feature::WaitedAttemptDeadline,
            WaitReason::CallDeadline => Feature::WaitedCallDeadline,
        };
        self.seen.mark(feature);
        if self.in_flight.is_empty() {
            ensure!(
                self,
                reason == WaitReason::Backoff && calls.is_empty(),
                "with nothing in flight the only wait is a backoff, got {reason:?} (gate calls \
                 {calls:?})"
            );
            let Some(end) = self.group_end else {
                self.fail(format_args!(
                    "backoff wait, but no retry group failed retryably"
                ));
            };
            ensure!(
                self,
                self.deadline.is_none_or(|d| until < d),
                "backoff until {until:?} reaches the overall deadline {:?}: the call should \
                 have stopped",
                self.deadline
            );
            match self.backoff_until {
                Some(prev) => ensure!(
                    self,
                    prev == until,
                    "the backoff moved from {prev:?} to {until:?}"
                ),
                None => {
                    let delay = until - end.at;
                    // (Compared as instants: `at + delay` may saturate.)
                    ensure!(
                        self,
                        until == end.at + end.delay,
                        "backoff of {delay:?}, but {} fixes it at {:?}",
                        if end.hinted {
                            "the retry-after hint"
                        } else {
                            "the backoff schedule"
                        },
                        end.delay
                    );
                    if end.hinted {
                        self.seen.mark(Feature::RetryAfterHint);
                    }
                    self.backoff_until = Some(until);
                }
            }
            return;
        }
        let attempt = self.next_attempt_deadline();
        ensure!(
            self,
            attempt.is_none_or(|a| until <= a) && self.deadline.is_none_or(|d| until <= d),
            "Wait until {until:?} sleeps past a deadline (attempt {attempt:?}, call {:?})",
            self.deadline
        );
        match reason {
            WaitReason::AttemptDeadline => ensure!(
                self,
                attempt == Some(until),
                "AttemptDeadline wait until {until:?}, the next attempt deadline is {attempt:?}"
            ),
            WaitReason::CallDeadline => ensure!(
                self,
                self.deadline == Some(until),
                "CallDeadline wait until {until:?}, the deadline is {:?}",
                self.deadline
            ),
            WaitReason::HedgeDelay => ensure!(
                self,
                hedge.is_some_and(|h| h == until),
                "HedgeDelay wait until {until:?}, the trigger asked for {hedge:?} (never sooner \
                 than 1 ms from now)"
            ),
            WaitReason::Backoff => self.fail(format_args!("backoff wait with attempts in flight")),
        }
        if let Some(h) = hedge {
            ensure!(
                self,
                until <= h,
                "Wait until {until:?} sleeps past the trigger's next check {h:?}"
            );
        }
    }

    pub(super) fn next_attempt_deadline(&self) -> Option<Instant> {
        self.in_flight
            .iter()
            .filter_map(|id| self.attempts[usize::from(*id)].info.deadline)
            .min()
    }

    /// Checks a trigger consultation that did not spawn; the instant it
    /// asked to be woken at, no sooner than 1 ms from now.
    pub(super) fn hedge_check(&mut self, calls: &[GateCall]) -> Option<Instant> {
        match calls {
            [] => None,
            [GateCall::Hedge(state, decision)] => {
                self.check_hedge_consultation(state, decision);
                ensure!(
                    self,
                    !decision.spawn,
                    "the trigger said spawn, but no hedge was launched or refused"
                );
                // Never sooner than 1 ms from now; at the clock's end
                // (`Instant::MAX`) no instant comes later, so no check.
                let floor = self.now + Duration::from_millis(1);
                decision
                    .next_check
                    .filter(|_| floor > self.now)
                    .map(|t| t.max(floor))
            }
            _ => self.fail(format_args!(
                "a wait must come with at most one trigger consultation, got gate calls {calls:?}"
            )),
        }
    }

    pub(super) fn on_await(&mut self, calls: &[GateCall]) {
        ensure!(
            self,
            self.expected.is_none(),
            "AwaitAttempts although the call must end with {:?}",
            self.expected
        );
        ensure!(
            self,
            !self.in_flight.is_empty(),
            "AwaitAttempts with nothing in flight: the call would hang forever"
        );
        ensure!(
            self,
            self.deadline.is_none() && self.next_attempt_deadline().is_none(),
            "AwaitAttempts although a deadline is pending (call {:?}, attempt {:?})",
            self.deadline,
            self.next_attempt_deadline()
        );
        let hedge = self.hedge_check(calls);
        ensure!(
            self,
            hedge.is_none(),
            "AwaitAttempts although the trigger asked to be consulted at {hedge:?}"
        );
        self.seen.mark(Feature::AwaitedAttempts);
    }
}
