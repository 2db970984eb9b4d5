//! Amplification across layers: a client calling A calling B calling C,
//! each of the three callers retrying (and, in the second table, hedging)
//! under its own policy, C failing every request. [`three_layers`] counts
//! the attempts that reach each layer per client request, with every
//! call's decisions made by the core machine and [`PolicyGate`] (each
//! layer keeps its own amplification ledger), on a virtual clock, calls of
//! all layers in flight at once.
//!
//! The layers tell each other what the integrations carry: every attempt
//! sends the upstream attempt count (`grpc-previous-rpc-attempts` /
//! `recourse-attempt`: the count the request came with plus the attempts
//! this call sent before, [`outbound_attempts`]), and each call applies its
//! policy's `amplification.upstream_retry` to the count it came with
//! ([`upstream_effect`]), exactly as the executor does.

use core::cell::RefCell;
use core::cmp::Reverse;
use core::fmt::Write as _;
use core::time::Duration;
use std::collections::BinaryHeap;

use recourse_core::amplification::{
    outbound_attempts, upstream_effect, AmplificationLedger, UpstreamEffect,
};
use recourse_core::budget::{BudgetRequest, Decision, Reservation};
use recourse_core::hedge::Trigger;
use recourse_core::machine::{Action, CallMachine, Event, Limits};
use recourse_core::policy::{AmplificationPolicy, Policy, UpstreamRetry};
use recourse_core::policy_gate::{GateParts, PolicyGate};
use recourse_core::{AttemptId, AttemptKind, AttemptRecord, Instant, Outcome, PolicyKey};

/// Callers above the failing service C (the client, A and B).
pub const CALLERS: usize = 3;

const KEY: PolicyKey<'static> = PolicyKey::new("layer", "Call");
/// The time between client requests.
const SPACING: Duration = Duration::from_millis(10);

/// The gate's parts at one layer: no budgets, the layer's ledger; the
/// call's upstream effect decides how a first attempt is counted.
struct LayerParts<'a> {
    ledger: &'a RefCell<AmplificationLedger>,
    effect: UpstreamEffect,
}

impl GateParts for LayerParts<'_> {
    type Budget = ();
    type Permit = ();
    fn budget(&mut self, _: &str, _: AttemptKind) -> Option<()> {
        None
    }
    fn decide(&mut self, _: (), _: &BudgetRequest<'_>) -> Decision {
        Decision::ALLOW
    }
    fn settle(&mut self, _: (), _: &AttemptRecord, _: Option<Reservation>, _: Instant) {}
    fn amplification_allows(
        &mut self,
        _: PolicyKey<'_>,
        policy: &AmplificationPolicy,
        now: Instant,
    ) -> bool {
        self.ledger
            .borrow()
            .allows_extra_reserving(policy, now, self.effect.reserve())
    }
    fn amplification_record(&mut self, _: PolicyKey<'_>, kind: AttemptKind, now: Instant) {
        let kind = self.effect.ledger_kind(kind);
        self.ledger.borrow_mut().record(kind, now);
    }
}

/// One call in flight at one layer.
struct Call<'a> {
    machine: CallMachine,
    gate: PolicyGate<'a, LayerParts<'a>>,
    layer: usize,
    /// The caller's call and attempt, for a layer below the client.
    parent: Option<(usize, AttemptId)>,
    upstream: Option<u32>,
    sent: u32,
    /// The calls this call's attempts made one layer down.
    children: Vec<(AttemptId, usize)>,
    over: bool,
}

#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick(usize),
    /// An attempt of a call ended (failed: C never succeeds).
    Failed(usize, u16),
}

struct Run<'a> {
    policy: &'a Policy,
    single: &'a Policy,
    ledgers: &'a [RefCell<AmplificationLedger>; CALLERS],
    /// How long C takes to fail.
    leaf: Duration,
    calls: Vec<Call<'a>>,
    queue: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    seq: u64,
    /// Requests that reached A, B and C.
    reached: [u64; CALLERS],
    seed: u64,
}

impl<'a> Run<'a> {
    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    /// Starts a call at `layer` at `now` with the upstream count `upstream`.
    fn start(
        &mut self,
        layer: usize,
        parent: Option<(usize, AttemptId)>,
        upstream: Option<u32>,
        now: Instant,
    ) -> usize {
        let effect = upstream_effect(&self.policy.amplification, upstream);
        let policy = if effect == UpstreamEffect::SingleAttempt {
            self.single
        } else {
            self.policy
        };
        self.seed += 1;
        let mut machine: CallMachine =
            CallMachine::new(policy, Limits::DEFAULT, fastrand::Rng::with_seed(self.seed));
        let trigger = policy.hedge.enabled.then_some(Trigger::FixedDelay);
        let gate = PolicyGate::new(
            KEY,
            policy,
            trigger,
            LayerParts {
                ledger: &self.ledgers[layer],
                effect,
            },
        );
        machine.handle(Event::Start { now });
        self.calls.push(Call {
            machine,
            gate,
            layer,
            parent,
            upstream,
            sent: 0,
            children: Vec::new(),
            over: false,
        });
        let id = self.calls.len() - 1;
        self.drive(id);
        id
    }

    /// Polls call `id` until it waits or ends.
    fn drive(&mut self, id: usize) {
        // A call acts at most a few times per event (launches, records,
        // cancellations of its max 4 slots).
        for _ in 0..64 {
            let c = &mut self.calls[id];
            if c.over {
                return;
            }
            let now = c.machine.now();
            match c.machine.poll(&mut c.gate) {
                Action::Launch(info) => {
                    let layer = c.layer;
                    let n = outbound_attempts(c.upstream, c.sent);
                    c.sent += 1;
                    self.reached[layer] += 1;
                    if layer + 1 == CALLERS {
                        let at = now + self.leaf;
                        self.push(at, Ev::Failed(id, info.id.0));
                    } else {
                        let child = self.start(layer + 1, Some((id, info.id)), Some(n), now);
                        self.calls[id].children.push((info.id, child));
                    }
                }
                Action::Cancel(record) => {
                    let child = c
                        .children
                        .iter()
                        .find(|(a, _)| *a == record.info.id)
                        .map(|(_, ch)| *ch);
                    if let Some(child) = child {
                        self.cancel(child, now);
                    }
                }
                Action::Record(_) => {}
                Action::Wait { until, .. } => {
                    self.push(until, Ev::Tick(id));
                    return;
                }
                Action::AwaitAttempts => return,
                Action::Finish(_) => {
                    c.over = true;
                    let parent = c.parent;
                    for (_, child) in core::mem::take(&mut c.children) {
                        self.cancel(child, now);
                    }
                    if let Some((p, attempt)) = parent {
                        self.push(now, Ev::Failed(p, attempt.0));
                    }
                    return;
                }
            }
        }
    }

    /// The caller dropped call `id`: it and its calls below end.
    fn cancel(&mut self, id: usize, now: Instant) {
        let mut stack = vec![id];
        // Each call is cancelled once: the tree is finite.
        while let Some(id) = stack.pop() {
            let c = &mut self.calls[id];
            if c.over {
                continue;
            }
            c.over = true;
            c.machine.handle(Event::Cancel { now });
            stack.extend(c.children.drain(..).map(|(_, ch)| ch));
        }
    }

    fn run(&mut self, requests: u64) {
        for i in 0..requests {
            let at = Instant::ZERO + SPACING * u32::try_from(i).unwrap_or(u32::MAX);
            // Every event before the next client request first.
            self.drain_until(at);
            self.start(0, None, None, at);
        }
        self.drain_until(Instant::MAX);
    }

    fn drain_until(&mut self, end: Instant) {
        while let Some(Reverse((at, _, ev))) = self.queue.peek().copied() {
            if at >= end {
                return;
            }
            self.queue.pop();
            match ev {
                Ev::Tick(id) => {
                    if !self.calls[id].over {
                        self.calls[id].machine.handle(Event::Tick { now: at });
                        self.drive(id);
                    }
                }
                Ev::Failed(id, attempt) => {
                    if !self.calls[id].over {
                        let layer_outcome = if self.calls[id].layer + 1 == CALLERS {
                            Outcome::retryable("c_down")
                        } else {
                            Outcome::retryable("upstream_failed")
                        };
                        self.calls[id].machine.handle(Event::AttemptFinished {
                            id: AttemptId(attempt),
                            outcome: layer_outcome,
                            now: at,
                        });
                        self.drive(id);
                    }
                }
            }
        }
    }
}

/// How the three-layer runs differ from one table to the other.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Retries only; C fails after 1 ms.
    Retries,
    /// Retries and one hedge per retry group at every layer (hedge delay
    /// 20 ms); C fails after 100 ms, so every attempt is hedged.
    Hedged,
}

/// Attempts reaching A, B and C per client request, for `requests` client
/// requests 10 ms apart, every caller under `policy` (its
/// `upstream_retry` applied to the count each request carries).
pub fn three_layers(policy: &Policy, shape: Shape, requests: u64) -> [f64; CALLERS] {
    let mut policy = policy.clone();
    let leaf = match shape {
        Shape::Retries => Duration::from_millis(1),
        Shape::Hedged => {
            policy.hedge.enabled = true;
            policy.hedge.max_hedges = 1;
            policy.hedge.hedge_delay = Duration::from_millis(20);
            Duration::from_millis(100)
        }
    };
    let single = UpstreamEffect::SingleAttempt
        .adjusted(&policy)
        .unwrap_or_else(|| policy.clone());
    let ledgers: [RefCell<AmplificationLedger>; CALLERS] = Default::default();
    let mut run = Run {
        policy: &policy,
        single: &single,
        ledgers: &ledgers,
        leaf,
        calls: Vec::new(),
        queue: BinaryHeap::new(),
        seq: 0,
        reached: [0; CALLERS],
        seed: 0,
    };
    run.run(requests);
    run.reached.map(|n| n as f64 / requests.max(1) as f64)
}

/// The configurations of the table's columns: (heading, ledger at 1.1×,
/// upstream mode).
pub const COLUMNS: [(&str, bool, UpstreamRetry); 5] = [
    ("no budget", false, UpstreamRetry::Always),
    ("ledger", true, UpstreamRetry::Always),
    ("not_when_retry", false, UpstreamRetry::NotWhenRetry),
    ("ledger+nwr", true, UpstreamRetry::NotWhenRetry),
    ("ledger+shared", true, UpstreamRetry::SharedAllowance),
];

/// The policy of a column: 3 attempts, the ledger at 1.1× with no
/// per-second floor when `ledger`, `mode` for upstream retries.
pub fn column_policy(ledger: bool, mode: UpstreamRetry) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 3;
    if ledger {
        p.amplification.max_amplification = 1.1;
        p.amplification.min_per_sec = 0;
    }
    p.amplification.upstream_retry = mode;
    p
}

/// Every column's attempts at A, B and C per client request.
pub fn three_layer_runs(shape: Shape, requests: u64) -> Vec<[f64; CALLERS]> {
    COLUMNS
        .iter()
        .map(|(_, ledger, mode)| three_layers(&column_policy(*ledger, *mode), shape, requests))
        .collect()
}

/// The table: one row per layer (C's row is the end-to-end
/// amplification), one column per configuration of [`COLUMNS`].
pub fn three_layer_table(shape: Shape, requests: u64) -> String {
    table(shape, requests, &three_layer_runs(shape, requests))
}

/// [`three_layer_table`] of runs already made.
pub fn table(shape: Shape, requests: u64, runs: &[[f64; CALLERS]]) -> String {
    let mut out = String::new();
    let what = match shape {
        Shape::Retries => "3 attempts per caller, C failing after 1 ms",
        Shape::Hedged => "3 attempts and a hedge at 20 ms per caller, C failing after 100 ms",
    };
    let _ = writeln!(out, "{what}, {requests} client requests 10 ms apart");
    let _ = write!(out, "{:<28}", "attempts per client request");
    for (name, _, _) in COLUMNS {
        let _ = write!(out, " {name:>14}");
    }
    out.push('\n');
    for (layer, name) in ["at A", "at B", "at C (end to end)"].iter().enumerate() {
        let _ = write!(out, "{name:<28}");
        for r in runs {
            let _ = write!(out, " {:>14.3}", r[layer]);
        }
        out.push('\n');
    }
    out
}
