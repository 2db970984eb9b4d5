//! Amplification across layers: a client calling A calling B calling C,
//! each of the three callers retrying under its own policy, C failing
//! every request. [`three_layers`] counts the attempts that reach each
//! layer per client request, with every call's decisions made by the core
//! machine and [`PolicyGate`] (each layer keeps its own amplification
//! ledger), on a virtual clock.
//!
//! What the layers tell each other is [`Awareness`]: nothing; whether the
//! request is itself a retry (what `grpc-previous-rpc-attempts` carries),
//! with a layer not retrying a request that is; or a failure that says
//! "already retried below, do not retry" (the SRE book's "retry at one
//! layer only"), with a layer not retrying such a failure.

use core::cell::RefCell;
use core::fmt::Write as _;
use core::time::Duration;

use recourse_core::amplification::AmplificationLedger;
use recourse_core::budget::{BudgetRequest, Decision, Reservation};
use recourse_core::machine::{Action, CallMachine, Event, Options};
use recourse_core::policy::{AmplificationPolicy, Policy};
use recourse_core::policy_gate::{GateParts, PolicyGate};
use recourse_core::{AttemptKind, AttemptRecord, Instant, Outcome, PolicyKey};

/// Callers above the failing service C (the client, A and B).
pub const CALLERS: usize = 3;

/// What the layers tell each other (see the [module docs](self)).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Awareness {
    /// Nothing: each layer retries on its own.
    None,
    /// A layer does not retry a request that is itself a retry or a hedge
    /// (the upstream attempt count is above zero).
    CallerIsRetry,
    /// A layer that retried returns a failure its caller does not retry:
    /// only the layer next to the failing dependency retries.
    OneLayer,
}

const KEY: PolicyKey<'static> = PolicyKey::new("layer", "Call");
/// C's latency, and the time between client requests.
const LEAF: Duration = Duration::from_millis(1);
const SPACING: Duration = Duration::from_millis(10);
/// A failure that says "already retried below".
const DONT_RETRY: &str = "overloaded_dont_retry";

/// The gate's parts at one layer: no budgets, the layer's ledger.
struct LayerParts<'a> {
    ledger: &'a RefCell<AmplificationLedger>,
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
        self.ledger.borrow().allows_extra(policy, now)
    }
    fn amplification_record(&mut self, _: PolicyKey<'_>, kind: AttemptKind, now: Instant) {
        self.ledger.borrow_mut().record(kind, now);
    }
}

struct Run<'a> {
    policy: &'a Policy,
    single: &'a Policy,
    awareness: Awareness,
    ledgers: [RefCell<AmplificationLedger>; CALLERS],
    /// Requests that reached A, B and C.
    reached: [u64; CALLERS],
    seed: u64,
}

impl Run<'_> {
    /// One request into caller `layer` (0: the client) at `now`, a retry
    /// or hedge upstream when `upstream_retry`: its outcome and end.
    fn call(&mut self, layer: usize, now: Instant, upstream_retry: bool) -> (Outcome, Instant) {
        let policy = if self.awareness == Awareness::CallerIsRetry && upstream_retry {
            self.single
        } else {
            self.policy
        };
        self.seed += 1;
        let mut m: CallMachine = CallMachine::new(
            policy,
            Options::DEFAULT,
            fastrand::Rng::with_seed(self.seed),
        );
        let ledgers = &self.ledgers;
        let mut gate: PolicyGate<'_, _> = PolicyGate::new(
            KEY,
            policy,
            None,
            LayerParts {
                ledger: &ledgers[layer],
            },
        );
        m.handle(Event::Start { now });
        // Every call ends within max_attempts launches and as many waits.
        for _ in 0..64 {
            match m.poll(&mut gate) {
                Action::Launch(info) => {
                    self.reached[layer] += 1;
                    let (outcome, end) = if layer + 1 == CALLERS {
                        (Outcome::retryable("c_down"), m.now() + LEAF)
                    } else {
                        let start = m.now();
                        drop(gate);
                        let r = self.call(layer + 1, start, info.id.0 > 0);
                        gate = PolicyGate::new(
                            KEY,
                            policy,
                            None,
                            LayerParts {
                                ledger: &self.ledgers[layer],
                            },
                        );
                        r
                    };
                    m.handle(Event::AttemptFinished {
                        id: info.id,
                        outcome,
                        now: end,
                    });
                }
                Action::Wait { until, .. } => m.handle(Event::Tick { now: until }),
                Action::Finish(v) => {
                    let failed = !matches!(v, recourse_core::Verdict::Success(_));
                    let outcome = if failed
                        && self.awareness == Awareness::OneLayer
                        && policy.retry.max_attempts > 1
                    {
                        Outcome::non_retryable(DONT_RETRY)
                    } else if failed {
                        Outcome::retryable("upstream_failed")
                    } else {
                        Outcome::SUCCESS
                    };
                    return (outcome, m.now());
                }
                _ => {}
            }
        }
        (Outcome::retryable("unfinished"), m.now())
    }
}

/// Attempts reaching A, B and C per client request, for `requests` client
/// requests 10 ms apart, every caller under `policy`.
pub fn three_layers(policy: &Policy, awareness: Awareness, requests: u64) -> [f64; CALLERS] {
    let mut single = policy.clone();
    single.retry.max_attempts = 1;
    single.hedge.enabled = false;
    let mut run = Run {
        policy,
        single: &single,
        awareness,
        ledgers: Default::default(),
        reached: [0; CALLERS],
        seed: 0,
    };
    for i in 0..requests {
        let at = Instant::ZERO + SPACING * u32::try_from(i).unwrap_or(u32::MAX);
        run.call(0, at, false);
    }
    run.reached.map(|n| n as f64 / requests.max(1) as f64)
}

/// The table: attempts reaching A, B and C per client request under each
/// configuration (3 attempts per caller; the ledger at `max_amplification`
/// 1.1 with no per-second floor).
pub fn three_layer_table(requests: u64) -> String {
    let mut plain = Policy::DEFAULT;
    plain.retry.max_attempts = 3;
    let plain = plain.normalize().map(|n| n.policy).unwrap_or_default();
    let mut ledger = plain.clone();
    ledger.amplification = AmplificationPolicy {
        max_amplification: 1.1,
        min_per_sec: 0,
    };
    let rows: [(&str, &Policy, Awareness); 6] = [
        ("per-layer policies only", &plain, Awareness::None),
        ("no retry of a retry", &plain, Awareness::CallerIsRetry),
        ("retry at one layer", &plain, Awareness::OneLayer),
        ("+ ledger (1.1x per layer)", &ledger, Awareness::None),
        (
            "+ ledger, no retry of a retry",
            &ledger,
            Awareness::CallerIsRetry,
        ),
        ("+ ledger, retry at one layer", &ledger, Awareness::OneLayer),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:>8} {:>8} {:>8}",
        "attempts per client request", "at A", "at B", "at C"
    );
    for (name, p, a) in rows {
        let r = three_layers(p, a, requests);
        let _ = writeln!(out, "{name:<32} {:>8.3} {:>8.3} {:>8.3}", r[0], r[1], r[2]);
    }
    out
}
