//! Hedge triggers: when to launch another attempt of the same retry group
//! while the first is still running.
//!
//! Why hedge: in a fan-out service the slowest of many calls sets the
//! latency, and the slow ones are mostly slow by bad luck (a GC pause, a
//! cold cache, a busy queue). A second copy of a request that has run longer
//! than almost all others usually finishes first — "The Tail at Scale"
//! hedged after the 95th-percentile latency and cut the 99.9th percentile
//! from 1,800 ms to 74 ms for about 2 % more requests.
//!
//! A trigger answers two questions, each time the machine asks: spawn a
//! hedge now? and if not, when to look again? The machine wakes exactly
//! then — there is no polling interval. The trigger is consulted through the
//! [`Gate`](crate::Gate) (its [`hedge`](crate::Gate::hedge) method, which
//! defaults to [`fixed_delay`]), so a per-key latency quantile can live
//! outside the machine.

use core::time::Duration;

use crate::time::{nanos, Instant};

/// What a trigger knows about the running retry group.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct HedgeState {
    /// The retry group, counted from 0.
    pub retry_index: u32,
    /// When the group's primary launched.
    pub group_start: Instant,
    /// Now.
    pub now: Instant,
    /// Hedges launched in this group so far.
    pub hedges: u32,
    /// Hedges this group may launch in all.
    pub max_hedges: u32,
    /// The policy's `hedge.hedge_delay`.
    pub hedge_delay: Duration,
}

/// A trigger's answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct HedgeDecision {
    /// Launch a hedge now.
    pub spawn: bool,
    /// When to ask again (ignored when `spawn`); `None`: not in this group.
    /// The machine never asks again sooner than 1 ms from now.
    pub next_check: Option<Instant>,
}

/// The fixed-delay trigger: hedge `k` launches `k × hedge_delay` after the
/// group's primary.
#[inline]
pub fn fixed_delay(state: &HedgeState) -> HedgeDecision {
    spaced(state, state.hedge_delay)
}

/// A hedge trigger named by a policy's `hedge.trigger`.
///
/// | name | trigger |
/// | --- | --- |
/// | `""`, `fixed`, `fixed_delay` | [`Trigger::FixedDelay`] |
/// | `p95`, `p99.9` (`p50` to `p99.9`) | [`Trigger::Quantile`] of that quantile |
/// | `max_extra_load:5%` (`0.1%` to `50%`) | [`Trigger::Quantile`] of 1 − the load (here p95) |
///
/// A quantile trigger hedges once an attempt has run longer than that
/// quantile of the key's recent latencies: hedge `k` at `k ×` the quantile
/// after the group's primary. Finagle's "max extra load" is the same
/// trigger seen from the other side: hedging past p(100 − x) launches a
/// hedge for at most x % of calls. With too few samples (a cold key) it
/// falls back to the fixed delay, so hedging never silently stops.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// Hedge `k` at `k × hedge_delay` ([`fixed_delay`]).
    FixedDelay,
    /// Hedge past this quantile of recent latencies, in permille (950 =
    /// p95; 500..=999).
    Quantile {
        /// The quantile, in permille.
        permille: u16,
    },
}

impl Trigger {
    /// The trigger `name` stands for, or `None` when it names none.
    ///
    /// ```
    /// use recourse_core::hedge::Trigger;
    /// assert_eq!(Trigger::parse("p95"), Some(Trigger::Quantile { permille: 950 }));
    /// assert_eq!(Trigger::parse("p99.9"), Some(Trigger::Quantile { permille: 999 }));
    /// assert_eq!(Trigger::parse("max_extra_load:2%"), Some(Trigger::Quantile { permille: 980 }));
    /// assert_eq!(Trigger::parse(""), Some(Trigger::FixedDelay));
    /// assert_eq!(Trigger::parse("p100"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "" | "fixed" | "fixed_delay" => return Some(Self::FixedDelay),
            _ => {}
        }
        if let Some(q) = name.strip_prefix('p') {
            let permille = tenths(q)?;
            return (500..=999)
                .contains(&permille)
                .then_some(Self::Quantile { permille });
        }
        let load = name.strip_prefix("max_extra_load:")?.strip_suffix('%')?;
        let load = tenths(load)?;
        (1..=500).contains(&load).then(|| Self::Quantile {
            permille: 1000 - load,
        })
    }

    /// The quantile this trigger reads, in permille, if it reads one.
    pub fn quantile(self) -> Option<u16> {
        match self {
            Self::FixedDelay => None,
            Self::Quantile { permille } => Some(permille),
        }
    }

    /// The decision for `state`, given the key's recent latency at this
    /// trigger's quantile (`None`: too few samples, or a fixed trigger).
    pub fn decide(self, state: &HedgeState, quantile: Option<Duration>) -> HedgeDecision {
        self.decide_nanos(state, quantile.map(nanos))
    }

    /// [`Trigger::decide`] with the quantile in whole nanoseconds (as
    /// [`nanos`] gives it): the same decision, without
    /// a [`Duration`] made and taken apart on every hedge decision.
    // Inlined into the gate (a generic, made in the crate that runs it: a
    // simulated call's hedge decision was a call of its own).
    #[inline]
    pub fn decide_nanos(self, state: &HedgeState, quantile: Option<u64>) -> HedgeDecision {
        match (self, quantile) {
            // `nanos` is monotonic: the gap is `nanos(q.max(MIN_SPACING))`.
            (Self::Quantile { .. }, Some(q)) => spaced_nanos(state, q.max(MIN_SPACING_NANOS)),
            _ => fixed_delay(state),
        }
    }
}

/// The shortest gap between hedges a quantile trigger uses.
const MIN_SPACING: Duration = Duration::from_millis(1);
/// [`MIN_SPACING`] in nanoseconds.
const MIN_SPACING_NANOS: u64 = nanos(MIN_SPACING);

/// `"95"` → 950, `"99.9"` → 999: a number with at most one decimal, in
/// tenths; `None` for anything else.
fn tenths(s: &str) -> Option<u16> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) if f.len() == 1 => (w, f),
        Some(_) => return None,
        None => (s, "0"),
    };
    if whole.is_empty() || whole.len() > 3 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digit = frac.bytes().next().filter(u8::is_ascii_digit)?;
    let whole: u16 = whole.parse().ok()?;
    Some(whole * 10 + u16::from(digit - b'0'))
}

/// Hedge `k` at `k × gap` after the group's primary.
#[inline]
fn spaced(state: &HedgeState, gap: Duration) -> HedgeDecision {
    spaced_nanos(state, nanos(gap))
}

/// [`spaced`] with the gap in nanoseconds.
#[inline]
fn spaced_nanos(state: &HedgeState, gap: u64) -> HedgeDecision {
    let k = state.hedges.saturating_add(1);
    // In `u64` nanoseconds, saturating: the same instant as
    // `group_start + gap * k` with `Duration`'s arithmetic, without its
    // seconds-and-nanoseconds normalization (a division on a Cortex-M).
    let due = Instant::from_nanos(
        state
            .group_start
            .as_nanos()
            .saturating_add(gap.saturating_mul(u64::from(k))),
    );
    if state.now >= due {
        HedgeDecision {
            spawn: true,
            next_check: None,
        }
    } else {
        HedgeDecision {
            spawn: false,
            next_check: Some(due),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_delay_spaces_hedges_from_the_group_start() {
        let mut s = HedgeState {
            retry_index: 0,
            group_start: Instant::from_millis(100),
            now: Instant::from_millis(150),
            hedges: 0,
            max_hedges: 2,
            hedge_delay: Duration::from_millis(200),
        };
        assert_eq!(
            fixed_delay(&s),
            HedgeDecision {
                spawn: false,
                next_check: Some(Instant::from_millis(300))
            }
        );
        s.now = Instant::from_millis(300);
        assert!(fixed_delay(&s).spawn);
        s.hedges = 1;
        assert_eq!(fixed_delay(&s).next_check, Some(Instant::from_millis(500)));
    }

    #[test]
    fn trigger_names() {
        for (name, want) in [
            ("fixed", Some(Trigger::FixedDelay)),
            ("fixed_delay", Some(Trigger::FixedDelay)),
            ("p50", Some(Trigger::Quantile { permille: 500 })),
            ("p90", Some(Trigger::Quantile { permille: 900 })),
            ("p99.5", Some(Trigger::Quantile { permille: 995 })),
            (
                "max_extra_load:0.5%",
                Some(Trigger::Quantile { permille: 995 }),
            ),
            (
                "max_extra_load:50%",
                Some(Trigger::Quantile { permille: 500 }),
            ),
            ("p49.9", None),
            ("p100", None),
            ("p99.99", None),
            ("p", None),
            ("p.5", None),
            ("p9x", None),
            ("P95", None),
            ("max_extra_load:0%", None),
            ("max_extra_load:51%", None),
            ("max_extra_load:5", None),
            ("quantile", None),
        ] {
            assert_eq!(Trigger::parse(name), want, "{name}");
        }
    }

    #[test]
    fn a_quantile_trigger_spaces_hedges_by_the_quantile_and_falls_back_when_cold() {
        let mut s = HedgeState {
            retry_index: 0,
            group_start: Instant::from_millis(1_000),
            now: Instant::from_millis(1_000),
            hedges: 0,
            max_hedges: 2,
            hedge_delay: Duration::from_millis(200),
        };
        let p95 = Trigger::Quantile { permille: 950 };
        let q = Some(Duration::from_millis(30));
        assert_eq!(
            p95.decide(&s, q).next_check,
            Some(Instant::from_millis(1_030))
        );
        assert_eq!(
            p95.decide(&s, None).next_check,
            Some(Instant::from_millis(1_200))
        );
        s.now = Instant::from_millis(1_030);
        assert!(p95.decide(&s, q).spawn);
        s.hedges = 1;
        assert_eq!(
            p95.decide(&s, q).next_check,
            Some(Instant::from_millis(1_060))
        );
        // A zero quantile never makes hedges due all at once.
        s.hedges = 0;
        s.now = Instant::from_millis(1_000);
        assert_eq!(
            p95.decide(&s, Some(Duration::ZERO)).next_check,
            Some(Instant::from_millis(1_001))
        );
        assert_eq!(Trigger::FixedDelay.decide(&s, q), fixed_delay(&s));
    }

    /// `decide_nanos` of a quantile's nanoseconds is `decide` of the
    /// quantile, at the floor, around it, cold, and saturating.
    #[test]
    fn deciding_in_nanoseconds_is_deciding_in_durations() {
        for hedges in [0, 1, 2] {
            for now_ms in [1_000, 1_001, 1_002, 1_030, 1_200, 1_400] {
                let s = HedgeState {
                    retry_index: 0,
                    group_start: Instant::from_millis(1_000),
                    now: Instant::from_millis(now_ms),
                    hedges,
                    max_hedges: 3,
                    hedge_delay: Duration::from_millis(200),
                };
                for q in [
                    None,
                    Some(Duration::ZERO),
                    Some(Duration::from_nanos(999_999)),
                    Some(Duration::from_millis(1)),
                    Some(Duration::from_nanos(1_000_001)),
                    Some(Duration::from_millis(30)),
                    Some(Duration::from_secs(133)),
                    Some(Duration::MAX),
                ] {
                    for t in [Trigger::Quantile { permille: 950 }, Trigger::FixedDelay] {
                        assert_eq!(
                            t.decide_nanos(&s, q.map(nanos)),
                            t.decide(&s, q),
                            "{t:?} {q:?} {s:?}"
                        );
                    }
                }
            }
        }
    }
}
