//! The circuit breaker against a plain reference model of its documented
//! state machine (`recourse_core::breaker`'s module docs, `admit`,
//! `record`, `state`, `CircuitPolicy`'s fields), under the same random
//! sequences of admissions, results, time steps (some going back), resets
//! and policies.
//!
//! The model keeps every counted call of the current episode as a list
//! and counts the window by brute force (a call at `t` counts at `now`
//! while `now / w − t / w < 10`, `w` a tenth of the window, at least 1 ns),
//! instead of the breaker's ring of buckets; its probes, generations and
//! cooldowns are plain fields. After every operation the two must agree on
//! the answer and on everything the breaker reports: `state`,
//! `consecutive_failures`, `window_counts`, `probes_in_flight`.
//!
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` override the case count and the
//! fixed seed.

#![allow(clippy::unwrap_used)]

use core::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use recourse_core::breaker::{
    CallResult, CircuitBreaker, CircuitState, Permit, Refusal, WindowCounts, CIRCUIT_OPEN,
    HALF_OPEN_PROBE_LIMIT,
};
use recourse_core::policy::CircuitPolicy;
use recourse_core::Instant;

const CASES: u32 = 1_000;
const SEED: u64 = 0xb4ea_6e45;

/// The model's own copy of the policy, with the zeros the breaker guards
/// against read as documented there (`threshold`, `min_calls`, probes and
/// successes at least 1; the ratio at most 1000).
#[derive(Clone, Debug)]
struct ModelPolicy {
    enabled: bool,
    threshold: u32,
    cooldown: Duration,
    ratio_permille: u64,
    /// A tenth of the window, in nanoseconds, at least 1.
    width: u64,
    min_calls: u32,
    max_probes: u32,
    successes: u32,
}

impl ModelPolicy {
    fn of(p: &CircuitPolicy) -> Self {
        Self {
            enabled: p.enabled,
            threshold: p.threshold.max(1),
            cooldown: p.cooldown,
            ratio_permille: u64::from(p.failure_ratio_permille.min(1000)),
            width: (u64::try_from(p.window.as_nanos()).unwrap_or(u64::MAX) / 10).max(1),
            min_calls: p.min_calls.max(1),
            max_probes: p.half_open_max_probes.max(1),
            successes: p.half_open_successes.max(1),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum ModelState {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Bypass,
    Closed,
    Probe,
}

#[derive(Copy, Clone, Debug)]
struct ModelPermit {
    kind: Kind,
    episode: u64,
}

#[derive(Debug)]
struct Model {
    policy: ModelPolicy,
    raw: CircuitPolicy,
    state: ModelState,
    /// Counts every state change; permits of earlier episodes are stale.
    episode: u64,
    consecutive: u32,
    /// `(when, failed)` of every success and failure counted this episode.
    calls: Vec<(Instant, bool)>,
    now: Instant,
}

impl Model {
    fn new(p: &CircuitPolicy) -> Self {
        Self {
            policy: ModelPolicy::of(p),
            raw: p.clone(),
            state: ModelState::Closed,
            episode: 0,
            consecutive: 0,
            calls: Vec::new(),
            now: Instant::ZERO,
        }
    }

    fn enter(&mut self, s: ModelState) {
        self.state = s;
        self.episode += 1;
        self.consecutive = 0;
        self.calls.clear();
    }

    fn window(&self, now: Instant) -> WindowCounts {
        let w = self.policy.width;
        let current = now.as_nanos() / w;
        let mut c = WindowCounts::default();
        for &(t, failed) in &self.calls {
            let i = t.as_nanos() / w;
            if i <= current && current - i < 10 {
                c.calls += 1;
                c.failures += u32::from(failed);
            }
        }
        c
    }

    fn admit(&mut self, now: Instant) -> Result<ModelPermit, (&'static str, CircuitState)> {
        self.now = self.now.max(now);
        let now = self.now;
        let permit = |kind, episode| ModelPermit { kind, episode };
        if !self.policy.enabled {
            return Ok(permit(Kind::Bypass, self.episode));
        }
        if let ModelState::Open { until } = self.state {
            if now < until {
                return Err((CIRCUIT_OPEN, CircuitState::Open { until }));
            }
            self.enter(ModelState::HalfOpen {
                in_flight: 0,
                successes: 0,
            });
        }
        match &mut self.state {
            ModelState::HalfOpen { in_flight, .. } => {
                if *in_flight >= self.policy.max_probes {
                    return Err((HALF_OPEN_PROBE_LIMIT, CircuitState::HalfOpen));
                }
                *in_flight += 1;
                Ok(permit(Kind::Probe, self.episode))
            }
            _ => Ok(permit(Kind::Closed, self.episode)),
        }
    }

    fn open(&mut self) -> CircuitState {
        let until = self.now + self.policy.cooldown;
        self.enter(ModelState::Open { until });
        CircuitState::Open { until }
    }

    fn record(&mut self, p: ModelPermit, r: CallResult, now: Instant) -> Option<CircuitState> {
        self.now = self.now.max(now);
        let now = self.now;
        if p.kind == Kind::Bypass || p.episode != self.episode {
            return None;
        }
        match self.state {
            ModelState::Closed => {
                match r {
                    CallResult::Success => {
                        self.consecutive = 0;
                        self.calls.push((now, false));
                    }
                    CallResult::Failure => {
                        self.consecutive += 1;
                        self.calls.push((now, true));
                        let c = self.window(now);
                        let ratio = self.policy.ratio_permille;
                        if self.consecutive >= self.policy.threshold
                            || (ratio > 0
                                && c.calls >= self.policy.min_calls
                                && u64::from(c.failures) * 1000 >= ratio * u64::from(c.calls))
                        {
                            return Some(self.open());
                        }
                    }
                    CallResult::Neutral => {}
                }
                None
            }
            ModelState::HalfOpen {
                in_flight,
                successes,
            } => {
                let in_flight = in_flight - 1;
                match r {
                    CallResult::Success if successes + 1 >= self.policy.successes => {
                        self.enter(ModelState::Closed);
                        Some(CircuitState::Closed)
                    }
                    CallResult::Success => {
                        self.state = ModelState::HalfOpen {
                            in_flight,
                            successes: successes + 1,
                        };
                        None
                    }
                    CallResult::Failure => Some(self.open()),
                    CallResult::Neutral => {
                        self.state = ModelState::HalfOpen {
                            in_flight,
                            successes,
                        };
                        None
                    }
                }
            }
            ModelState::Open { .. } => None,
        }
    }

    fn state(&self, now: Instant) -> CircuitState {
        let now = self.now.max(now);
        if !self.policy.enabled {
            return CircuitState::Closed;
        }
        match self.state {
            ModelState::Closed => CircuitState::Closed,
            ModelState::Open { until } if now < until => CircuitState::Open { until },
            _ => CircuitState::HalfOpen,
        }
    }

    fn probes(&self) -> u32 {
        match self.state {
            ModelState::HalfOpen { in_flight, .. } => in_flight,
            _ => 0,
        }
    }

    fn set_policy(&mut self, p: &CircuitPolicy) {
        let new = ModelPolicy::of(p);
        let same_window = new.width == self.policy.width && p.window == self.raw.window;
        self.raw = p.clone();
        self.policy = new;
        if !same_window {
            self.calls.clear();
        }
        if !p.enabled {
            self.enter(ModelState::Closed);
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Time passes by this many microseconds (negative: a caller whose
    /// clock read is older), then a call asks to run.
    Admit(i32),
    /// The `pick`-th outstanding call ends with this result, after `dt` µs.
    Record {
        pick: usize,
        result: CallResult,
        dt: i32,
    },
    /// The state is read `dt` µs later (nothing recorded).
    Look(i32),
    /// `reset`.
    Reset,
    /// `set_policy` with another policy.
    SetPolicy(CircuitPolicy),
}

fn policy() -> impl Strategy<Value = CircuitPolicy> {
    (
        prop::bool::weighted(0.9),
        0u32..6,
        1u64..200_000,
        prop_oneof![Just(0u32), 1u32..=1000, 1001u32..5000],
        prop_oneof![0u64..5, 1_000u64..300_000],
        0u32..8,
        0u32..4,
        0u32..4,
    )
        .prop_map(
            |(enabled, threshold, cooldown_us, ratio, window_us, min_calls, probes, successes)| {
                CircuitPolicy {
                    enabled,
                    threshold,
                    cooldown: Duration::from_micros(cooldown_us),
                    failure_ratio_permille: ratio,
                    window: Duration::from_micros(window_us),
                    min_calls,
                    half_open_max_probes: probes,
                    half_open_successes: successes,
                }
            },
        )
}

fn result() -> impl Strategy<Value = CallResult> {
    prop_oneof![
        3 => Just(CallResult::Failure),
        2 => Just(CallResult::Success),
        1 => Just(CallResult::Neutral),
    ]
}

fn dt() -> impl Strategy<Value = i32> {
    prop_oneof![
        6 => 0i32..30_000,
        2 => 30_000i32..300_000,
        1 => -20_000i32..0,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => dt().prop_map(Op::Admit),
        10 => (any::<usize>(), result(), dt())
            .prop_map(|(pick, result, dt)| Op::Record { pick, result, dt }),
        2 => dt().prop_map(Op::Look),
        1 => Just(Op::Reset),
        1 => policy().prop_map(Op::SetPolicy),
    ]
}

fn step(now: Instant, dt: i32) -> Instant {
    let d = Duration::from_micros(u64::from(dt.unsigned_abs()));
    if dt < 0 {
        now - d
    } else {
        now + d
    }
}

/// Runs `ops` on a breaker and the model; the first disagreement, with the
/// step it happened at.
fn run(p: &CircuitPolicy, start_ms: u64, ops: &[Op]) -> Result<(), String> {
    let mut b = CircuitBreaker::new(p.clone());
    let mut m = Model::new(p);
    let mut now = Instant::from_millis(start_ms);
    let mut held: Vec<(Permit, ModelPermit)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        macro_rules! at {
            ($($what:tt)+) => {
                return Err(format!(
                    "op {i} {op:?} at {now:?}: {}\nmodel {m:#?}",
                    format!($($what)+)
                ))
            };
        }
        match op {
            Op::Admit(dt) => {
                now = step(now, *dt);
                let real = b.admit(now);
                let model = m.admit(now);
                match (real, model) {
                    (Ok(r), Ok(mp)) => {
                        if r.is_probe() != (mp.kind == Kind::Probe)
                            || r.is_bypass() != (mp.kind == Kind::Bypass)
                        {
                            at!("permit {r:?}, the model issued {mp:?}");
                        }
                        held.push((r, mp));
                    }
                    (Err(Refusal { reason, state }), Err((mr, ms)))
                        if reason == mr && state == ms => {}
                    (real, model) => at!("admit gave {real:?}, the model {model:?}"),
                }
            }
            Op::Record { pick, result, dt } => {
                now = step(now, *dt);
                if held.is_empty() {
                    continue;
                }
                let (r, mp) = held.swap_remove(pick % held.len());
                let real = b.record(r, *result, now);
                let model = m.record(mp, *result, now);
                if real != model {
                    at!("record returned {real:?}, the model {model:?}");
                }
            }
            Op::Look(dt) => now = step(now, *dt),
            Op::Reset => {
                b.reset();
                m.enter(ModelState::Closed);
            }
            Op::SetPolicy(p) => {
                b.set_policy(p);
                m.set_policy(p);
            }
        }
        let seen = (
            b.state(now),
            b.consecutive_failures(),
            b.window_counts(now),
            b.probes_in_flight(),
        );
        let want = (
            m.state(now),
            m.consecutive,
            m.window(m.now.max(now)),
            m.probes(),
        );
        if seen != want {
            at!("(state, consecutive, window, probes) = {seen:?}, the model says {want:?}");
        }
    }
    Ok(())
}

fn config() -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = CASES;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(SEED);
    }
    c.failure_persistence = None;
    c
}

#[test]
fn the_breaker_follows_its_reference_model() {
    let mut runner = TestRunner::new(config());
    let visited = core::cell::Cell::new([0u32; 4]);
    let result = runner.run(
        &(
            policy(),
            prop_oneof![Just(0u64), 1u64..1_000_000_000],
            prop::collection::vec(op(), 1..300),
        ),
        |(p, start, ops)| {
            if let Err(e) = run(&p, start, &ops) {
                return Err(TestCaseError::fail(e));
            }
            // What the run reached, so that passing means something.
            let mut v = visited.get();
            let mut b = CircuitBreaker::new(p.clone());
            let mut held = Vec::new();
            let mut now = Instant::from_millis(start);
            for op in &ops {
                match op {
                    Op::Admit(dt) => {
                        now = step(now, *dt);
                        match b.admit(now) {
                            Ok(permit) => held.push(permit),
                            Err(r) if r.reason == HALF_OPEN_PROBE_LIMIT => v[3] += 1,
                            Err(_) => v[1] += 1,
                        }
                    }
                    Op::Record { pick, result, dt } => {
                        now = step(now, *dt);
                        if !held.is_empty() {
                            let permit = held.swap_remove(pick % held.len());
                            if b.record(permit, *result, now) == Some(CircuitState::Closed) {
                                v[2] += 1;
                            }
                        }
                    }
                    Op::Look(dt) => now = step(now, *dt),
                    Op::Reset => b.reset(),
                    Op::SetPolicy(p) => b.set_policy(p),
                }
                v[0] += 1;
            }
            visited.set(v);
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    let [ops, refused_open, closed_again, probe_limit] = visited.get();
    eprintln!(
        "{ops} operations: {refused_open} refusals while open, {probe_limit} at the probe \
         limit, {closed_again} half-open circuits closed by probes"
    );
    assert!(
        refused_open > 1_000 && probe_limit > 100 && closed_again > 100,
        "the runs must open, refuse, probe and close"
    );
}
