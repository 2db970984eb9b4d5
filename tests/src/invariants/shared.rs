//! Several calls sharing their budgets, their steps interleaved: the
//! budgets' conservation laws and ledgers hold across calls, and a
//! `Concurrency` budget is back to zero once every call has ended.
//!
//! Each call is a whole [`Scenario`] with its own machine, clock, gate
//! script and checker; the budgets are the first call's (`gate.budget`
//! and, when it has one, the separate `gate.hedge_budget`), each call
//! keeping its own ledger of what it reserved. The calls' clocks are
//! independent, so the budgets also see time go back between calls, as a
//! budget shared by threads with skewed clocks would.

use arbitrary::{Arbitrary, Result, Unstructured};

use super::coverage::Coverage;
use super::input::Scenario;
use super::scenario_from_bytes;
use super::world::{Budgets, RunLimits, World};

/// Calls sharing budgets.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedScenario {
    /// The calls, 2 to 4; the first one's gate names the shared budgets.
    /// Every call runs a `CallMachine<4>` (the scenarios' widths are not
    /// used).
    pub calls: Vec<Scenario>,
    /// Seeds the interleaving: which call takes the next step, and the
    /// order the calls are brought to their ends.
    pub seed: u64,
}

impl<'a> Arbitrary<'a> for SharedScenario {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let seed = u.arbitrary()?;
        let n = u.int_in_range(2..=4)?;
        let mut calls = Vec::with_capacity(n);
        for i in 0..n {
            // Each call decodes from a slice of its own; the last takes
            // what is left.
            let bytes = if i + 1 == n {
                u.bytes(u.len())?
            } else {
                let len = u.int_in_range(0..=u.len() / (n - i))?;
                u.bytes(len)?
            };
            calls.push(scenario_from_bytes(bytes));
        }
        Ok(Self { calls, seed })
    }
}

/// Runs `s` twice (the runs must agree action for action); panics at the
/// first broken invariant of any call or budget. Returns what the calls
/// covered.
pub fn check_shared(s: &SharedScenario, limits: RunLimits) -> Coverage {
    let (coverage, first) = run(s, limits);
    let (_, second) = run(s, limits);
    assert_eq!(
        first, second,
        "determinism: the same shared scenario gave different actions\n{s:#?}"
    );
    coverage
}

fn run(s: &SharedScenario, limits: RunLimits) -> (Coverage, Vec<u64>) {
    let Some(first) = s.calls.first() else {
        return (Coverage::default(), Vec::new());
    };
    let budgets = Budgets::new(&first.gate);
    let shares: Vec<Budgets> = s.calls.iter().map(|_| budgets.share()).collect();
    let mut worlds: Vec<World<'_, '_, 4>> = s
        .calls
        .iter()
        .zip(&shares)
        .map(|(call, b)| World::new(call, limits, b))
        .collect();
    let mut rng = fastrand::Rng::with_seed(s.seed);
    for (w, call) in worlds.iter_mut().zip(&s.calls) {
        w.begin(call, limits);
    }
    // Interleave the steps: at each turn a call with steps left takes its
    // next one.
    let mut next = vec![0usize; s.calls.len()];
    loop {
        let left: Vec<usize> = (0..s.calls.len())
            .filter(|&i| next[i] < s.calls[i].steps.len())
            .collect();
        if left.is_empty() {
            break;
        }
        let i = left[rng.usize(..left.len())];
        worlds[i].step(&s.calls[i].steps[next[i]]);
        next[i] += 1;
    }
    // Bring the calls to their ends in a random order.
    let mut order: Vec<usize> = (0..s.calls.len()).collect();
    rng.shuffle(&mut order);
    let mut slots: Vec<Option<World<'_, '_, 4>>> = worlds.into_iter().map(Some).collect();
    let mut coverage = Coverage::default();
    let mut digests = vec![0; s.calls.len()];
    let mut last = None;
    for i in order {
        let Some(w) = slots[i].take() else { continue };
        let (c, d) = w.end(&s.calls[i], limits);
        coverage.add(&c);
        digests[i] = d;
        last = Some(i);
    }
    if let Err(e) = budgets.audit_idle() {
        panic!(
            "shared budgets: {e} (the last call to end was call {last:?})\n{:#?}",
            s
        );
    }
    (coverage, digests)
}
