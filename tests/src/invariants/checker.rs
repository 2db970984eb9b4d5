//! The invariant checker: a model of one call that sees every event fed to
//! the machine, every action it returns and every call it makes on the gate,
//! and panics at the first step that breaks a rule.
//!
//! The model tracks what the machine must have decided — attempts in flight,
//! the running retry group, the overall deadline, the held terminal outcome —
//! but never how it decides: where the machine has a free choice (a jittered
//! backoff) the model only bounds it. Where the outcome is forced (a success
//! ends the call, a refused primary ends it with `budget_denied`, a retry-after
//! hint fixes the sleep) the model predicts it exactly and compares.

use core::fmt::{self, Write as _};
use core::time::Duration;
use std::collections::VecDeque;

use recourse_core::{
    Action, Admission, AttemptId, AttemptInfo, AttemptRecord, CallMachine, Cause, Event,
    Gatekeeper, Instant, Limits, Outcome, OutcomeKind, Policy, Verdict,
};

use super::coverage::{Feature, Seen};
use super::gate::GateCall;
use super::input::TriggerInput;

macro_rules! ensure {
    ($self:ident, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            $self.fail(format_args!($($arg)+));
        }
    };
}

mod backoff;
mod end;
mod launch;
mod wait;

/// How many recent events and actions a violation report shows.
const TRACE: usize = 48;

/// Where an attempt is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Life {
    InFlight,
    /// The world fed this result (reported, or about to be).
    Finished(Outcome),
    /// The machine cut it at its own deadline.
    TimedOut,
    /// The machine dropped it because the call ended.
    Dropped,
    /// The gate refused it; it never ran.
    Refused,
}

#[derive(Copy, Clone, Debug)]
struct Attempt {
    info: AttemptInfo,
    start: Instant,
    admission: Admission,
    /// The sleep its record must report.
    backoff: Duration,
    life: Life,
    /// How often the gate heard `attempt_ended` for it.
    ended_calls: u32,
}

/// A retry group that failed retryably, while the next one is due.
#[derive(Copy, Clone, Debug)]
struct GroupEnd {
    at: Instant,
    /// The sleep: the retry-after hint (capped by the executor), else the
    /// delay the reference schedule drew.
    delay: Duration,
    /// Whether a retry-after hint fixed it.
    hinted: bool,
}

#[derive(Copy, Clone, Debug)]
enum Traced {
    Event(Event),
    Action(Action),
    Note(&'static str),
}

/// The model and its rules. See the module docs.
pub(super) struct Checker<'s> {
    // What the machine was built with.
    context: &'s dyn fmt::Debug,
    n: usize,
    policy: Policy,
    options: Limits,
    /// Retry groups allowed (the machine reads 0 as 1).
    max_attempts: u32,
    /// Hedges per group the policy asks for (0 when hedging is off).
    policy_hedges: u32,
    /// Hedges per group allowed now (the policy's, within the options'
    /// ceiling and `n`), and the most ever allowed in this call.
    max_hedges: u32,
    max_hedges_ever: u32,
    per_attempt: Option<Duration>,
    overall: Option<Duration>,
    /// The backoff delays the machine must draw.
    schedule: backoff::Schedule,
    /// The gap between hedges the gate's trigger documents (`None`: a
    /// scripted trigger that answers anything).
    hedge_gap: Option<Duration>,

    // The clock and the call.
    /// The latest time fed (the machine's clock must say the same).
    pub(super) now: Instant,
    started: bool,
    start: Instant,
    deadline: Option<Instant>,
    cancel_fed: bool,

    // Attempts, indexed by id.
    attempts: Vec<Attempt>,
    pub(super) in_flight: Vec<u16>,

    // The running retry group.
    groups: u32,
    group_start: Instant,
    /// Hedge indexes used in the group (launched or refused).
    group_hedges: u32,
    hedging_stopped: bool,
    /// The first non-retryable or abort result held in the group.
    group_terminal: Option<u16>,
    /// The group failed retryably; the next is due after a backoff.
    group_end: Option<GroupEnd>,
    backoff_until: Option<Instant>,
    last_failed: Option<u16>,

    // How the call ends.
    /// A result was fed for this attempt: the next poll must report it.
    expect_record: Option<u16>,
    /// The verdict the machine must end with, once it is forced.
    expected: Option<Verdict>,
    /// The reason of the first cancellation of an ending call.
    ending: Option<&'static str>,
    refused_by: Option<Gatekeeper>,
    pub(super) finished: Option<Verdict>,
    call_ended_calls: u32,

    launched: u64,
    pub(super) seen: Seen,
    trace: VecDeque<Traced>,
}

impl<'s> Checker<'s> {
    /// A model of a machine built with `policy`, `options`, `n` slots and
    /// an RNG seeded with `seed`; `context` (the scenario) is printed with
    /// any violation.
    pub(super) fn new(
        context: &'s dyn fmt::Debug,
        policy: &Policy,
        options: Limits,
        n: usize,
        seed: u64,
    ) -> Self {
        let r = &policy.retry;
        let policy_hedges = if policy.hedge.enabled {
            policy.hedge.max_hedges
        } else {
            0
        };
        let mut c = Self {
            context,
            n,
            policy: policy.clone(),
            options,
            max_attempts: r.max_attempts.max(1),
            policy_hedges,
            max_hedges: 0,
            max_hedges_ever: 0,
            per_attempt: r.timeout_per_attempt.filter(|d| !d.is_zero()),
            overall: r.overall_timeout.filter(|d| !d.is_zero()),
            schedule: backoff::Schedule::new(r, seed),
            hedge_gap: None,
            now: Instant::ZERO,
            started: false,
            start: Instant::ZERO,
            deadline: None,
            cancel_fed: false,
            attempts: Vec::new(),
            in_flight: Vec::new(),
            groups: 0,
            group_start: Instant::ZERO,
            group_hedges: 0,
            hedging_stopped: false,
            group_terminal: None,
            group_end: None,
            backoff_until: None,
            last_failed: None,
            expect_record: None,
            expected: None,
            ending: None,
            refused_by: None,
            finished: None,
            call_ended_calls: 0,
            launched: 0,
            seen: Seen::default(),
            trace: VecDeque::with_capacity(TRACE),
        };
        c.set_options(options);
        c
    }

    /// The executor changed its options.
    pub(super) fn set_options(&mut self, options: Limits) {
        self.options = options;
        let room = u32::try_from(self.n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.max_hedges = self.policy_hedges.min(options.max_hedges_ceiling).min(room);
        self.max_hedges_ever = self.max_hedges_ever.max(self.max_hedges);
    }

    /// The gate answers with `trigger`: each answer must be the documented
    /// one (hedge `k` at `k × gap` after the group's start).
    pub(super) fn set_trigger(&mut self, trigger: &TriggerInput) {
        let delay = self.policy.hedge.hedge_delay;
        self.hedge_gap = match trigger {
            TriggerInput::Fixed | TriggerInput::Quantile { latency: None, .. } => Some(delay),
            // A quantile trigger never spaces hedges closer than 1 ms.
            TriggerInput::Quantile {
                latency: Some(q), ..
            } => Some(q.0.max(Duration::from_millis(1))),
            TriggerInput::Chaos(_) => None,
        };
    }

    /// Attempts launched so far.
    pub(super) fn launched(&self) -> u64 {
        self.launched
    }

    /// The most attempts the policy allows in all.
    pub(super) fn attempt_bound(&self) -> u64 {
        u64::from(self.max_attempts) * (1 + u64::from(self.max_hedges_ever))
    }

    /// The machine's retry groups bound.
    pub(super) fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether the machine is waiting for `Start`.
    pub(super) fn idle(&self) -> bool {
        !self.started && !self.cancel_fed && self.finished.is_none()
    }

    /// Records a remark for the trace (what the world is about to do).
    pub(super) fn note(&mut self, note: &'static str) {
        self.push(Traced::Note(note));
    }

    fn push(&mut self, t: Traced) {
        if self.trace.len() == TRACE {
            self.trace.pop_front();
        }
        self.trace.push_back(t);
    }

    /// Panics with `what`, the model's state, the recent trace and the
    /// scenario.
    pub(super) fn fail(&self, what: fmt::Arguments<'_>) -> ! {
        let mut s = String::new();
        let _ = writeln!(s, "call machine invariant violated: {what}");
        let _ = writeln!(
            s,
            "  now {:?}, start {:?}, deadline {:?}, in flight {:?}, groups {}, group hedges {}, \
             max hedges {}, launched {}, last failed {:?}, expected {:?}, finished {:?}",
            self.now,
            self.start,
            self.deadline,
            self.in_flight,
            self.groups,
            self.group_hedges,
            self.max_hedges,
            self.launched,
            self.last_failed,
            self.expected,
            self.finished,
        );
        let _ = writeln!(s, "  N = {}, options {:?}", self.n, self.options);
        let _ = writeln!(s, "  policy given to the machine: {:?}", self.policy);
        let _ = writeln!(s, "  last events and actions, oldest first:");
        for t in &self.trace {
            let _ = match t {
                Traced::Event(e) => writeln!(s, "    -> {e:?}"),
                Traced::Action(a) => writeln!(s, "    <- {a:?}"),
                Traced::Note(n) => writeln!(s, "    // {n}"),
            };
        }
        let _ = writeln!(s, "  scenario: {:#?}", self.context);
        panic!("{s}");
    }

    // ---- events -------------------------------------------------------

    /// The world is about to feed `event`.
    pub(super) fn on_event(&mut self, event: &Event) {
        self.push(Traced::Event(*event));
        match *event {
            Event::Start { now } => {
                if self.idle() {
                    // The clock never goes back: a start earlier than an
                    // event already fed starts at that event's time.
                    let now = self.now.max(now);
                    self.started = true;
                    self.start = now;
                    self.deadline = self.overall.map(|d| now + d);
                    self.now = now;
                    // At the clock's end the overall timeout saturates to
                    // now: the call ends `deadline_exceeded` before it
                    // launches anything.
                    if self.deadline == Some(now) {
                        self.seen.mark(Feature::ClockSaturated);
                        self.expected = Some(Verdict::Failure {
                            cause: Cause::DeadlineExceeded,
                            last: None,
                        });
                    }
                }
                return;
            }
            Event::Tick { now } => {
                if now < self.now {
                    self.seen.mark(Feature::BackwardsTick);
                }
                self.now = self.now.max(now);
            }
            Event::Cancel { now } => {
                self.now = self.now.max(now);
                if self.finished.is_none() {
                    self.cancel_fed = true;
                    self.expected = Some(Verdict::Failure {
                        cause: Cause::Cancelled,
                        last: self.last_failed.map(AttemptId),
                    });
                }
            }
            Event::AttemptFinished { id, outcome, now } => {
                self.now = self.now.max(now);
                if self.in_flight.contains(&id.0) {
                    self.attempt_finished(id.0, outcome);
                } else if self.finished.is_none() {
                    self.seen.mark(Feature::StaleResult);
                }
            }
        }
        if self.started
            && self.finished.is_none()
            && self.expected.is_none()
            && self.deadline.is_some_and(|d| self.now >= d)
        {
            self.expected = Some(Verdict::Failure {
                cause: Cause::DeadlineExceeded,
                last: self.last_failed.map(AttemptId),
            });
        }
    }

    fn attempt_finished(&mut self, id: u16, outcome: Outcome) {
        self.in_flight.retain(|i| *i != id);
        self.attempts[usize::from(id)].life = Life::Finished(outcome);
        self.expect_record = Some(id);
        let cause = match outcome.kind {
            OutcomeKind::Success => {
                self.expected = Some(Verdict::Success(AttemptId(id)));
                return;
            }
            OutcomeKind::Retryable => {
                self.last_failed = Some(id);
                if self.in_flight.is_empty() {
                    self.group_failed(outcome.retry_after);
                }
                return;
            }
            OutcomeKind::NonRetryable => Cause::NonRetryable,
            OutcomeKind::Abort => Cause::Abort,
        };
        self.last_failed = Some(id);
        if self.policy.hedge.cancel_on_first_terminal || self.in_flight.is_empty() {
            // The group's first terminal outcome is the call's, whichever
            // attempt reports last (as when the last one fails retryably,
            // in `group_failed`).
            if self.end_on_held_terminal() {
                return;
            }
            self.expected = Some(Verdict::Failure {
                cause,
                last: Some(AttemptId(id)),
            });
        } else {
            self.group_terminal.get_or_insert(id);
        }
    }

    /// Ends the call on the group's first terminal outcome, if one is held;
    /// says whether it did.
    fn end_on_held_terminal(&mut self) -> bool {
        let Some(t) = self.group_terminal.take() else {
            return false;
        };
        self.last_failed = Some(t);
        let cause = match self.attempts[usize::from(t)].life {
            Life::Finished(Outcome {
                kind: OutcomeKind::Abort,
                ..
            }) => Cause::Abort,
            _ => Cause::NonRetryable,
        };
        self.expected = Some(Verdict::Failure {
            cause,
            last: Some(AttemptId(t)),
        });
        true
    }

    /// Every attempt of the running group failed, the last one retryably
    /// (with `hint`).
    fn group_failed(&mut self, hint: Option<Duration>) {
        if self.end_on_held_terminal() {
            return;
        }
        let last = self.last_failed.map(AttemptId);
        if self.groups >= self.max_attempts {
            self.expected = Some(Verdict::Failure {
                cause: Cause::Exhausted,
                last,
            });
            return;
        }
        let now = self.now;
        // Drawn even when a hint replaces it: the RNG stream moves on.
        let drawn = match self.schedule.next() {
            Ok(d) => d,
            Err(e) => self.fail(format_args!("{e}")),
        };
        let (delay, beyond) = match hint {
            Some(h) => (
                h.min(self.options.max_retry_after),
                Cause::RetryAfterBeyondDeadline,
            ),
            None => (drawn, Cause::BackoffBeyondDeadline),
        };
        if self.deadline.is_some_and(|d| now + delay >= d) {
            self.expected = Some(Verdict::Failure {
                cause: beyond,
                last,
            });
        } else {
            self.group_end = Some(GroupEnd {
                at: now,
                delay,
                hinted: hint.is_some(),
            });
        }
    }

    // ---- actions ------------------------------------------------------

    /// The machine answered `poll` with `action`, calling the gate as
    /// `calls` says.
    pub(super) fn on_poll(&mut self, action: Action, calls: &[GateCall]) {
        self.push(Traced::Action(action));
        if let Some(v) = self.finished {
            ensure!(
                self,
                action == Action::Finish(v),
                "after Finish({v:?}) every poll must return the same Finish, got {action:?}"
            );
            ensure!(
                self,
                calls.is_empty(),
                "the gate was called after the call ended: {calls:?}"
            );
            return;
        }
        if self.idle() {
            ensure!(
                self,
                action == Action::AwaitAttempts && calls.is_empty(),
                "before Start the machine must answer AwaitAttempts and leave the gate alone, \
                 got {action:?} with gate calls {calls:?}"
            );
            return;
        }
        if let Some(id) = self.expect_record {
            ensure!(
                self,
                matches!(action, Action::Record(r) if r.info.id.0 == id),
                "the result fed for attempt {id} must be reported by the very next poll, \
                 got {action:?}"
            );
        }
        for call in calls {
            if let GateCall::AttemptEnded(r) = call {
                self.gate_attempt_ended(r);
            }
        }
        match action {
            Action::Launch(info) => self.on_launch(info, calls),
            Action::Record(r) if r.budget_allowed => self.on_result_record(r, calls),
            Action::Record(r) => self.on_refused(r, calls),
            Action::Cancel(r) => self.on_cancel(r, calls),
            Action::Wait { until, reason } => self.on_wait(until, reason, calls),
            Action::AwaitAttempts => self.on_await(calls),
            Action::Finish(v) => self.on_finish(v, calls),
        }
    }

    fn gate_attempt_ended(&mut self, r: &AttemptRecord) {
        let id = usize::from(r.info.id.0);
        let Some(a) = self.attempts.get_mut(id) else {
            self.fail(format_args!(
                "gate told attempt_ended for attempt {id}, which was never admitted"
            ));
        };
        a.ended_calls += 1;
        let (life, calls) = (a.life, a.ended_calls);
        ensure!(
            self,
            life != Life::Refused,
            "gate told attempt_ended for refused attempt {id} (it holds no reservation)"
        );
        ensure!(
            self,
            calls == 1,
            "gate told attempt_ended {calls} times for attempt {id}: release must run exactly once"
        );
        ensure!(
            self,
            self.call_ended_calls == 0,
            "attempt_ended for attempt {id} after call_ended"
        );
    }

    /// Compares the machine's own view with the model's.
    pub(super) fn sync<const N: usize>(&mut self, m: &CallMachine<N>) {
        ensure!(
            self,
            m.now() == self.now || self.idle(),
            "the machine's clock says {:?}, the latest time fed is {:?} (it must never go back)",
            m.now(),
            self.now
        );
        ensure!(
            self,
            u64::from(m.attempts()) == self.launched,
            "the machine counts {} attempts, {} were launched",
            m.attempts(),
            self.launched
        );
        ensure!(
            self,
            m.is_finished() == self.finished.is_some(),
            "is_finished() says {}, Finish returned: {:?}",
            m.is_finished(),
            self.finished
        );
        ensure!(
            self,
            m.max_hedges() == self.max_hedges,
            "max_hedges() says {}, expected {}",
            m.max_hedges(),
            self.max_hedges
        );
        if self.started {
            ensure!(
                self,
                m.start() == self.start && m.deadline() == self.deadline,
                "start/deadline {:?}/{:?}, expected {:?}/{:?}",
                m.start(),
                m.deadline(),
                self.start,
                self.deadline
            );
        }
    }

    /// After the call: each attempt ended exactly once and `call_ended`
    /// ran exactly once.
    pub(super) fn check_end(&mut self) {
        ensure!(
            self,
            self.finished.is_some() && self.call_ended_calls == 1,
            "the call did not end exactly once (finished {:?}, call_ended {} times)",
            self.finished,
            self.call_ended_calls
        );
    }
}
