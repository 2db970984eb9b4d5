//! The circuit breaker: stop calling a dependency that keeps failing, and let
//! a few probe calls find out when it has recovered.
//!
//! Why a breaker when there are already budgets: a budget bounds the *extra*
//! load retries and hedges add, but every call still makes its first attempt.
//! When a dependency is down, those first attempts are wasted work on both
//! sides and each one makes its caller wait for a failure. A breaker stops
//! calling for a while (`cooldown`), then lets a bounded number of probes
//! through to see whether the dependency is back.
//!
//! ```text
//!            threshold consecutive failures,         cooldown over
//!            or failure ratio ≥ limit in window      (next admit)
//!   Closed ─────────────────────────────────▶ Open ───────────────▶ HalfOpen
//!     ▲                                        ▲                     │  │
//!     │             a probe fails (cooldown restarts)                │  │
//!     │                                        └─────────────────────┘  │
//!     └──────────── half_open_successes probes succeed ─────────────────┘
//! ```
//!
//! A half-open circuit lets at most `half_open_max_probes` probe calls run at
//! once; more are refused with [`HALF_OPEN_PROBE_LIMIT`]. A probe that ends
//! neither in success nor in failure — aborted, cancelled, dropped, cut by
//! the caller's deadline: a [`CallResult::Neutral`] — frees its slot and
//! changes nothing else, so the next call becomes the probe. (The Go original
//! kept the slot of an aborted probe forever, wedging the circuit half-open.)
//!
//! The breaker is consulted once per call: [`CircuitBreaker::admit`] before
//! the first attempt, [`CircuitBreaker::record`] exactly once with the
//! call's [`CallResult`] (see [`CallResult::from_verdict`] for how a call's
//! [`Verdict`](crate::Verdict) maps to one). A probe runs without hedges
//! ([`Permit::is_probe`]).
//!
//! It is a plain value: `&mut self`, no atomics, no heap, and time is always
//! an argument. A no_std program shares one behind its own mutex (a
//! critical section); std programs use `recourse::breakers::Breakers`, one
//! breaker per policy key with a bound on the number of keys.

use crate::policy::CircuitPolicy;
use crate::time::Instant;

mod answers;
mod window;

pub use crate::verdict::reason::{CIRCUIT_OPEN, HALF_OPEN_PROBE_LIMIT};
use answers::PermitKind;
pub use answers::{CallResult, CircuitState, Permit, Refusal};
use window::Window;
pub use window::WindowCounts;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

/// One circuit breaker (see the [module docs](self)).
///
/// ```
/// use core::time::Duration;
/// use recourse_core::breaker::{CallResult, CircuitBreaker, CircuitState};
/// use recourse_core::policy::CircuitPolicy;
/// use recourse_core::Instant;
///
/// let mut b = CircuitBreaker::new(CircuitPolicy {
///     enabled: true,
///     threshold: 2,
///     cooldown: Duration::from_secs(1),
///     ..CircuitPolicy::DEFAULT
/// });
/// let t = Instant::from_secs(100);
/// for _ in 0..2 {
///     let permit = b.admit(t).unwrap();
///     b.record(permit, CallResult::Failure, t);
/// }
/// let refusal = b.admit(t).unwrap_err();
/// assert_eq!(refusal.reason, "circuit_open");
/// assert_eq!(refusal.state, CircuitState::Open { until: Instant::from_secs(101) });
///
/// // After the cooldown one probe runs, without hedges; its success closes.
/// let probe = b.admit(Instant::from_secs(101)).unwrap();
/// assert!(probe.is_probe());
/// b.record(probe, CallResult::Success, Instant::from_secs(102));
/// assert_eq!(b.state(Instant::from_secs(102)), CircuitState::Closed);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitBreaker {
    policy: CircuitPolicy,
    state: State,
    /// Bumped on every state change; permits of older episodes are stale.
    generation: u32,
    /// Failed calls since the last success (closed state).
    consecutive: u32,
    window: Window,
    /// The latest time seen.
    now: Instant,
}

impl CircuitBreaker {
    /// A closed breaker under `policy` (normalize it first).
    ///
    /// A breaker whose policy is disabled admits every call with
    /// [`Permit::BYPASS`] and counts nothing: enable the policy
    /// (`enabled: true`) to break.
    ///
    /// The policy is kept as given ([`Policy::normalize`](crate::Policy::normalize)
    /// checks it); the breaker reads a zero count as 1 and a ratio above
    /// 1000 ‰ as 1000 where it compares them, so an unnormalized policy
    /// cannot wedge or trip it.
    pub const fn new(policy: CircuitPolicy) -> Self {
        let window = Window::new(policy.window);
        Self {
            policy,
            state: State::Closed,
            generation: 0,
            consecutive: 0,
            window,
            now: Instant::ZERO,
        }
    }

    /// The policy in force.
    pub const fn policy(&self) -> &CircuitPolicy {
        &self.policy
    }

    /// Replaces the policy (a control plane changed it) without losing the
    /// state: a changed window clears the ratio counts; a disabled policy
    /// resets the breaker to closed.
    pub fn set_policy(&mut self, policy: &CircuitPolicy) {
        if *policy == self.policy {
            return;
        }
        let policy = policy.clone();
        if policy.window != self.policy.window {
            self.window = Window::new(policy.window);
        }
        let enabled = policy.enabled;
        self.policy = policy;
        if !enabled {
            self.reset();
        }
    }

    /// Back to closed with no failures counted; outstanding permits become
    /// stale.
    pub fn reset(&mut self) {
        self.enter(State::Closed);
    }

    /// Asks to run one call at `now`.
    ///
    /// Closed: allowed. Open: refused with [`CIRCUIT_OPEN`] until the
    /// cooldown is over; the first call after it turns the circuit half-open.
    /// Half-open: allowed as a probe while fewer than `half_open_max_probes`
    /// probes run, refused with [`HALF_OPEN_PROBE_LIMIT`] otherwise.
    ///
    /// What changes the answer: the results recorded and the time.
    pub fn admit(&mut self, now: Instant) -> Result<Permit, Refusal> {
        let now = self.advance(now);
        if !self.policy.enabled {
            return Ok(Permit::BYPASS);
        }
        if let State::Open { until } = self.state {
            if now < until {
                return Err(Refusal {
                    reason: CIRCUIT_OPEN,
                    state: CircuitState::Open { until },
                });
            }
            self.enter(State::HalfOpen {
                in_flight: 0,
                successes: 0,
            });
        }
        let kind = match &mut self.state {
            State::HalfOpen { in_flight, .. } => {
                // At least one probe: a zero would keep the circuit
                // half-open for ever.
                if *in_flight >= self.policy.half_open_max_probes.max(1) {
                    return Err(Refusal {
                        reason: HALF_OPEN_PROBE_LIMIT,
                        state: CircuitState::HalfOpen,
                    });
                }
                *in_flight += 1;
                PermitKind::Probe
            }
            State::Closed | State::Open { .. } => PermitKind::Closed,
        };
        Ok(Permit {
            kind,
            generation: self.generation,
        })
    }

    /// The call admitted with `permit` ended with `result` at `now`; returns
    /// the new state when this result changed it.
    ///
    /// Call it exactly once per permit, whatever ended the call: a probe
    /// permit that is never recorded keeps its slot. Results of permits
    /// issued before the last state change are ignored.
    pub fn record(
        &mut self,
        permit: Permit,
        result: CallResult,
        now: Instant,
    ) -> Option<CircuitState> {
        let now = self.advance(now);
        if permit.is_bypass() || permit.generation != self.generation {
            return None;
        }
        match (self.state, permit.kind) {
            (State::Closed, PermitKind::Closed) => {
                match result {
                    CallResult::Success => {
                        self.consecutive = 0;
                        self.window.add(now, false);
                    }
                    CallResult::Failure => {
                        self.consecutive = self.consecutive.saturating_add(1);
                        self.window.add(now, true);
                        if self.trips(now) {
                            return Some(self.open(now));
                        }
                    }
                    CallResult::Neutral => {}
                }
                None
            }
            (
                State::HalfOpen {
                    in_flight,
                    successes,
                },
                PermitKind::Probe,
            ) => {
                let in_flight = in_flight.saturating_sub(1);
                match result {
                    CallResult::Success => {
                        let successes = successes.saturating_add(1);
                        if successes >= self.policy.half_open_successes {
                            self.enter(State::Closed);
                            return Some(CircuitState::Closed);
                        }
                        self.state = State::HalfOpen {
                            in_flight,
                            successes,
                        };
                        None
                    }
                    CallResult::Failure => Some(self.open(now)),
                    CallResult::Neutral => {
                        self.state = State::HalfOpen {
                            in_flight,
                            successes,
                        };
                        None
                    }
                }
            }
            // Same generation means the state has not changed since the
            // permit was issued, so the kinds always match; be lenient.
            _ => None,
        }
    }

    /// The state at `now` (an open circuit whose cooldown is over reports
    /// half-open; the next [`admit`](Self::admit) makes it so). A disabled
    /// breaker is always closed.
    pub fn state(&self, now: Instant) -> CircuitState {
        let now = self.now.max(now);
        if !self.policy.enabled {
            return CircuitState::Closed;
        }
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open { until },
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// When the cooldown of an open breaker ends: `Some(until)` while the
    /// breaker is open, also after `until` has passed (until the next
    /// [`admit`](Self::admit) turns it half-open), `None` when closed or
    /// half-open. Lets a caller tell that an admission moved the breaker
    /// from open to half-open.
    pub const fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            State::Closed | State::HalfOpen { .. } => None,
        }
    }

    /// Failed calls since the last success (while closed).
    pub const fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// What the failure-ratio rule sees at `now` (while closed).
    pub fn window_counts(&self, now: Instant) -> WindowCounts {
        self.window.counts(self.now.max(now))
    }

    /// Probes running now (while half-open).
    pub const fn probes_in_flight(&self) -> u32 {
        match self.state {
            State::HalfOpen { in_flight, .. } => in_flight,
            State::Closed | State::Open { .. } => 0,
        }
    }

    /// The current episode's generation while the circuit is closed (and
    /// its policy enabled): [`admit`](Self::admit) then answers
    /// [`Permit::closed`] of it, whatever the time. `None` otherwise.
    ///
    /// With [`quiet_generation`](Self::quiet_generation),
    /// [`window_bucket_width`](Self::window_bucket_width) and
    /// [`absorb_successes`](Self::absorb_successes), what a breaker shared
    /// between threads needs to admit and count the calls of a closed
    /// circuit without taking its lock on every call (std's
    /// `recourse::breakers::Breakers`).
    pub const fn closed_generation(&self) -> Option<u32> {
        match self.state {
            State::Closed if self.policy.enabled => Some(self.generation),
            _ => None,
        }
    }

    /// [`closed_generation`](Self::closed_generation) when, in addition, no
    /// failure has been counted since the last success: then recording a
    /// success changes nothing but the window's count of calls, which
    /// [`absorb_successes`](Self::absorb_successes) can add later.
    pub const fn quiet_generation(&self) -> Option<u32> {
        match self.closed_generation() {
            Some(g) if self.consecutive == 0 => Some(g),
            _ => None,
        }
    }

    /// Nanoseconds per bucket of the failure-ratio window (a tenth of the
    /// policy's `window`, at least 1): a call at `t` counts in bucket
    /// `t.as_nanos() / width`.
    pub const fn window_bucket_width(&self) -> u64 {
        self.window.width()
    }

    /// The latest time this breaker has seen (it never goes back: each
    /// method takes the latest of its `now` and this).
    pub const fn latest(&self) -> Instant {
        self.now
    }

    /// Takes `now` as seen, as every method does with its own `now`.
    pub fn observe(&mut self, now: Instant) {
        self.advance(now);
    }

    /// Records `n` successes of closed permits of episode `generation`,
    /// counted elsewhere while the breaker was quiet (see
    /// [`quiet_generation`](Self::quiet_generation)), in window bucket
    /// `bucket` (their latest time, by
    /// [`window_bucket_width`](Self::window_bucket_width)): the same as `n`
    /// calls of [`record`](Self::record) with `CallResult::Success` at a
    /// time in that bucket. Permits of an older episode count for nothing,
    /// as in `record`.
    pub fn absorb_successes(&mut self, generation: u32, bucket: u64, n: u32) {
        if n == 0
            || generation != self.generation
            || !self.policy.enabled
            || self.state != State::Closed
        {
            return;
        }
        self.consecutive = 0;
        self.window.add_successes(bucket, n);
    }

    /// Whether a closed circuit should open after a failure at `now`.
    ///
    /// That failure is counted already (`consecutive` and the window's
    /// calls are at least 1), so a zero `threshold` or `min_calls` reads as
    /// 1; a ratio above 1000 ‰ reads as 1000.
    fn trips(&self, now: Instant) -> bool {
        if self.consecutive >= self.policy.threshold {
            return true;
        }
        let ratio = u64::from(self.policy.failure_ratio_permille.min(1000));
        if ratio == 0 {
            return false;
        }
        let c = self.window.counts(now);
        c.calls >= self.policy.min_calls
            && u64::from(c.failures) * 1000 >= ratio * u64::from(c.calls)
    }

    fn open(&mut self, now: Instant) -> CircuitState {
        let until = now + self.policy.cooldown;
        self.enter(State::Open { until });
        CircuitState::Open { until }
    }

    /// Moves to `state`: a new episode, with fresh counts.
    fn enter(&mut self, state: State) {
        self.state = state;
        self.generation = self.generation.wrapping_add(1);
        self.consecutive = 0;
        self.window.clear();
    }

    /// The clock never goes back: concurrent callers of a shared breaker
    /// read the time before taking its lock, so a slightly older `now` is
    /// expected and taken as the latest one seen.
    fn advance(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }
}

#[cfg(test)]
mod tests;
