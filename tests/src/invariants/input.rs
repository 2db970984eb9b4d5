//! The checker's inputs — a policy, executor options, a gate and a script of
//! what the world does — all [`Arbitrary`], so libFuzzer and proptest build
//! them from the same bytes.
//!
//! Why hand-written `Arbitrary` impls: derived ones pick uniformly among
//! enum variants and integer values, and stop a `Vec` at the first odd byte.
//! Random bytes would then give nanosecond-or-centuries durations and
//! one-step scripts. These impls draw each value at a realistic scale most
//! of the time (milliseconds for backoffs and time steps, a handful of
//! attempts) and at any value now and then (`Duration::MAX`, `u32::MAX`
//! attempts, a NaN multiplier), which is what both a fuzzer and a property
//! test need to reach deep states and odd corners.

use core::fmt;
use core::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};
use recourse_core::policy::{
    BudgetRef, CircuitPolicy, HedgePolicy, Jitter, Limits, Name, Policy, RetryPolicy, NAME_CAPACITY,
};
use recourse_core::{reason, Outcome, OutcomeKind};

/// Most world steps one scenario holds (the rest of the bytes are ignored).
pub const MAX_STEPS: usize = 400;

/// A duration at one of several scales: zero, sub-millisecond, tens of
/// milliseconds (most often), seconds, and now and then any value at all.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct Dur(pub Duration);

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'a> Arbitrary<'a> for Dur {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let d = match u.int_in_range(0u8..=31)? {
            0..=2 => Duration::ZERO,
            3..=4 => Duration::from_nanos(u.int_in_range(1..=999_999)?),
            5..=20 => Duration::from_millis(u.int_in_range(1..=100)?),
            21..=26 => Duration::from_millis(u.int_in_range(101..=2_000)?),
            27..=29 => Duration::from_secs(u.int_in_range(2..=600)?),
            30 => Duration::from_secs(u64::from(u.arbitrary::<u32>()?)),
            _ => u.arbitrary::<Duration>()?,
        };
        Ok(Self(d))
    }
}

/// A count: mostly `0..=12`, sometimes up to 70,000, now and then any `u32`.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct Count(pub u32);

impl fmt::Debug for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'a> Arbitrary<'a> for Count {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self(match u.int_in_range(0u8..=15)? {
            0..=13 => u.int_in_range(0..=12)?,
            14 => u.int_in_range(13..=70_000)?,
            _ => u.arbitrary()?,
        }))
    }
}

fn multiplier(u: &mut Unstructured<'_>) -> Result<f64> {
    Ok(match u.int_in_range(0u8..=15)? {
        0..=11 => f64::from(u.int_in_range(0u8..=120)?) / 10.0,
        12 => -f64::from(u.int_in_range(0u8..=100)?) / 10.0,
        13 => *u.choose(&[
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            1e-300,
        ])?,
        _ => u.arbitrary()?,
    })
}

fn jitter(u: &mut Unstructured<'_>) -> Result<Jitter> {
    Ok(*u.choose(&[
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ])?)
}

fn timeout(u: &mut Unstructured<'_>) -> Result<Option<Duration>> {
    Ok(if u.ratio(1u8, 2)? {
        None
    } else {
        Some(u.arbitrary::<Dur>()?.0)
    })
}

/// A name: mostly empty, else up to [`NAME_CAPACITY`] bytes of any text.
fn name(u: &mut Unstructured<'_>) -> Result<Name> {
    if u.ratio(2u8, 3)? {
        return Ok(Name::new());
    }
    let s: &str = u.arbitrary()?;
    let mut end = s.len().min(NAME_CAPACITY);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Ok(Name::try_from(&s[..end]).unwrap_or_default())
}

fn budget_ref(u: &mut Unstructured<'_>) -> Result<BudgetRef> {
    Ok(BudgetRef {
        name: name(u)?,
        cost: u.arbitrary::<Count>()?.0,
    })
}

/// Any [`Policy`] value — normalized or not, sensible or not.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ArbitraryPolicy(pub Policy);

impl<'a> Arbitrary<'a> for ArbitraryPolicy {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let retry = RetryPolicy {
            max_attempts: u.arbitrary::<Count>()?.0,
            initial_backoff: u.arbitrary::<Dur>()?.0,
            max_backoff: u.arbitrary::<Dur>()?.0,
            backoff_multiplier: multiplier(u)?,
            jitter: jitter(u)?,
            timeout_per_attempt: timeout(u)?,
            overall_timeout: timeout(u)?,
            classifier: name(u)?,
            budget: budget_ref(u)?,
            retry_non_idempotent: u.arbitrary()?,
            // Not drawn, so that the checked-in corpora decode as before;
            // the checker's gate has no latency source anyway.
            deadline_quantile_permille: 0,
        };
        let hedge = HedgePolicy {
            enabled: u.ratio(3u8, 5)?,
            max_hedges: u.arbitrary::<Count>()?.0,
            hedge_delay: u.arbitrary::<Dur>()?.0,
            trigger: name(u)?,
            cancel_on_first_terminal: u.arbitrary()?,
            budget: budget_ref(u)?,
        };
        let circuit = CircuitPolicy {
            enabled: u.arbitrary()?,
            threshold: u.arbitrary::<Count>()?.0,
            cooldown: u.arbitrary::<Dur>()?.0,
            failure_ratio_permille: if u.ratio(1u8, 4)? {
                u.arbitrary()?
            } else {
                u.int_in_range(0..=1_200)?
            },
            window: u.arbitrary::<Dur>()?.0,
            min_calls: u.arbitrary::<Count>()?.0,
            half_open_max_probes: u.arbitrary::<Count>()?.0,
            half_open_successes: u.arbitrary::<Count>()?.0,
        };
        Ok(Self(Policy {
            retry,
            hedge,
            circuit,
            ..Policy::DEFAULT
        }))
    }
}

/// Executor limits for [`Policy::normalize_with`]: a hedge ceiling that is
/// mostly `0..=12`, now and then any `u32`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct ArbitraryLimits(pub Limits);

impl<'a> Arbitrary<'a> for ArbitraryLimits {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self(Limits {
            max_hedges_ceiling: u.arbitrary::<Count>()?.0,
            ..Limits::DEFAULT
        }))
    }
}

/// The executor's [`Limits`] as the machine takes them: any retry-after
/// bound and hedge ceiling ([`ArbitraryLimits`] draws only the ceiling, for
/// normalization).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ArbitraryOptions(pub Limits);

impl<'a> Arbitrary<'a> for ArbitraryOptions {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self(if u.ratio(1u8, 2)? {
            Limits::DEFAULT
        } else {
            Limits {
                max_retry_after: u.arbitrary::<Dur>()?.0,
                max_hedges_ceiling: u.arbitrary::<Count>()?.0,
            }
        }))
    }
}

/// The machine's attempt slots, `N`.
#[derive(Arbitrary, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Width {
    /// `CallMachine<1>`: no room for hedges.
    One,
    /// `CallMachine<2>`.
    Two,
    /// `CallMachine<4>`, the default.
    Four,
    /// `CallMachine<11>`: the primary and the highest hedge ceiling.
    Eleven,
}

/// A classified result the world feeds for an attempt.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ArbitraryOutcome(pub Outcome);

impl<'a> Arbitrary<'a> for ArbitraryOutcome {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let outcome = match u.int_in_range(0u8..=19)? {
            0..=3 => Outcome::SUCCESS,
            4..=17 => Outcome::retryable(reason::RETRYABLE_ERROR),
            18 => Outcome::non_retryable(reason::NON_RETRYABLE_ERROR),
            _ => Outcome::abort(reason::ABORT),
        };
        Ok(Self(
            if outcome.kind != OutcomeKind::Success && u.ratio(1u8, 5)? {
                outcome.with_retry_after(u.arbitrary::<Dur>()?.0)
            } else {
                outcome
            },
        ))
    }
}

/// When an event happens, relative to the machine's clock.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum When {
    /// At the current time.
    Now,
    /// This many 256ths of the way to the pending wait's end (or that many
    /// milliseconds from now when nothing is pending).
    Toward(u8),
    /// This long after the pending wait's end: a late timer.
    Late(Dur),
    /// This long after now.
    After(Dur),
}

impl<'a> Arbitrary<'a> for When {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0u8..=9)? {
            0 => Self::Now,
            1..=5 => Self::Toward(u.arbitrary()?),
            6 => Self::Late(u.arbitrary()?),
            _ => Self::After(u.arbitrary()?),
        })
    }
}

/// One thing the world does.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Step {
    /// An attempt in flight (the `pick`-th, modulo how many) completes. With
    /// none in flight, time passes instead.
    Finish {
        /// Which attempt in flight.
        pick: u8,
        /// Its result.
        outcome: ArbitraryOutcome,
        /// When.
        when: When,
    },
    /// A result for any attempt id: usually one that already ended or was
    /// never launched, which the machine must ignore.
    FinishId {
        /// The id.
        id: u16,
        /// The result.
        outcome: ArbitraryOutcome,
        /// When.
        when: When,
    },
    /// Time passes: [`Event::Tick`](recourse_core::Event::Tick).
    Tick(When),
    /// A tick this long before the machine's clock (it must not go back).
    Backwards(Dur),
    /// The caller gives up: [`Event::Cancel`](recourse_core::Event::Cancel).
    Cancel(When),
    /// [`Event::Start`](recourse_core::Event::Start) again (ignored once
    /// started).
    Restart(When),
    /// The executor changes its options mid-call.
    SetOptions(ArbitraryOptions),
    /// A well-behaved driver takes over for a while: it sleeps until each
    /// wait ends and completes attempts in flight, with results drawn from
    /// `seed`.
    Run {
        /// How many rounds.
        rounds: u8,
        /// Seeds the results.
        seed: u8,
    },
}

impl<'a> Arbitrary<'a> for Step {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0u8..=63)? {
            0..=29 => Self::Finish {
                pick: u.arbitrary()?,
                outcome: u.arbitrary()?,
                when: u.arbitrary()?,
            },
            30..=32 => Self::FinishId {
                id: u.int_in_range(0..=40)?,
                outcome: u.arbitrary()?,
                when: u.arbitrary()?,
            },
            33..=52 => Self::Tick(u.arbitrary()?),
            53..=54 => Self::Backwards(u.arbitrary()?),
            55 => Self::Cancel(u.arbitrary()?),
            56 => Self::Restart(u.arbitrary()?),
            57 => Self::SetOptions(u.arbitrary()?),
            _ => Self::Run {
                rounds: u.arbitrary()?,
                seed: u.arbitrary()?,
            },
        })
    }
}

/// What the gate answers before it asks the budget.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Ask the budget.
    Pass,
    /// Refuse as a budget would (`budget_denied`).
    DenyBudget,
    /// Refuse as an open circuit would (`circuit_open`).
    DenyCircuit,
}

impl<'a> Arbitrary<'a> for Answer {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0u8..=15)? {
            0..=13 => Self::Pass,
            14 => Self::DenyBudget,
            _ => Self::DenyCircuit,
        })
    }
}

/// A built-in budget: with small parameters most of the time, so that it
/// runs dry within a call, and now and then any value of each parameter.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BudgetInput {
    /// No budget: every attempt allowed with `no_budget`.
    None,
    /// [`Unlimited`](recourse_core::budget::Unlimited).
    Unlimited,
    /// [`TokenBucket::new`](recourse_core::budget::TokenBucket::new).
    TokenBucket {
        /// Tokens.
        capacity: u32,
        /// Tokens per second.
        refill_per_second: u32,
    },
    /// [`Concurrency::new`](recourse_core::budget::Concurrency::new).
    Concurrency {
        /// ‰ of active attempts.
        permille: u32,
        /// The floor.
        min: u32,
    },
    /// [`RetryRatio::new`](recourse_core::budget::RetryRatio::new).
    RetryRatio {
        /// Seconds.
        ttl_secs: u32,
        /// Retries per second always allowed.
        min_per_sec: u32,
        /// ‰ of requests that may be retries.
        permille: u32,
    },
    /// [`GrpcThrottle::new`](recourse_core::budget::GrpcThrottle::new).
    GrpcThrottle {
        /// `maxTokens`.
        max_tokens: u32,
        /// `tokenRatio` × 1000.
        ratio_milli: u32,
    },
    /// [`AwsRetryQuota::new`](recourse_core::budget::AwsRetryQuota::new).
    AwsRetryQuota {
        /// Tokens.
        capacity: u32,
        /// Per retry.
        retry_cost: u32,
        /// Per retry after a timeout.
        timeout_cost: u32,
        /// Per success without retry.
        increment: u32,
    },
}

/// A budget parameter: in `small` seven times in eight, else any `u32`.
fn param(u: &mut Unstructured<'_>, small: core::ops::RangeInclusive<u32>) -> Result<u32> {
    if u.ratio(1u8, 8)? {
        u.arbitrary()
    } else {
        u.int_in_range(small)
    }
}

impl<'a> Arbitrary<'a> for BudgetInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0u8..=7)? {
            0..=1 => Self::None,
            2 => Self::Unlimited,
            3 => Self::TokenBucket {
                capacity: param(u, 0..=12)?,
                refill_per_second: param(u, 0..=40)?,
            },
            4 => Self::Concurrency {
                permille: param(u, 0..=1_000)?,
                min: param(u, 0..=3)?,
            },
            5 => Self::RetryRatio {
                ttl_secs: param(u, 0..=255)?,
                min_per_sec: param(u, 0..=3)?,
                permille: param(u, 0..=500)?,
            },
            6 => Self::GrpcThrottle {
                max_tokens: param(u, 0..=255)?,
                ratio_milli: param(u, 0..=2_000)?,
            },
            _ => Self::AwsRetryQuota {
                capacity: param(u, 0..=30)?,
                retry_cost: param(u, 0..=10)?,
                timeout_cost: param(u, 0..=15)?,
                increment: param(u, 0..=3)?,
            },
        })
    }
}

/// One answer of a scripted, misbehaving hedge trigger.
#[derive(Arbitrary, Copy, Clone, Debug, PartialEq, Eq)]
pub struct ChaosAnswer {
    /// Spawn a hedge now.
    pub spawn: bool,
    /// When to ask again, in milliseconds from now (negative: in the past).
    pub next_check_ms: Option<i16>,
}

/// The hedge trigger the gate answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TriggerInput {
    /// [`fixed_delay`](recourse_core::hedge::fixed_delay).
    Fixed,
    /// [`Trigger::Quantile`](recourse_core::Trigger::Quantile) with this
    /// quantile latency (`None`: too few samples).
    Quantile {
        /// The quantile, in permille.
        permille: u16,
        /// The key's latency at that quantile.
        latency: Option<Dur>,
    },
    /// Answers in turn, cycling: any answer at all, past instants included.
    Chaos(Vec<ChaosAnswer>),
}

impl<'a> Arbitrary<'a> for TriggerInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0u8..=5)? {
            0..=2 => Self::Fixed,
            3..=4 => Self::Quantile {
                permille: u.int_in_range(500..=999)?,
                latency: u.arbitrary()?,
            },
            _ => Self::Chaos(small_vec(u, 1, 6)?),
        })
    }
}

/// The gate: a script of answers, then a real budget, and a hedge trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateInput {
    /// Answers for the first attempts, in order; [`Answer::Pass`] (and every
    /// attempt after the script) asks the budget.
    pub script: Vec<Answer>,
    /// The budget.
    pub budget: BudgetInput,
    /// `Some`: hedges are charged to this budget instead (a policy's
    /// separate `hedge.budget`); `None`: to the same one.
    pub hedge_budget: Option<BudgetInput>,
    /// The cost passed to the budget per attempt.
    pub cost: u32,
    /// The hedge trigger.
    pub trigger: TriggerInput,
}

impl<'a> Arbitrary<'a> for GateInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self {
            script: if u.ratio(2u8, 3)? {
                Vec::new()
            } else {
                small_vec(u, 1, 10)?
            },
            budget: u.arbitrary()?,
            hedge_budget: if u.ratio(1u8, 3)? {
                Some(u.arbitrary()?)
            } else {
                None
            },
            cost: if u.ratio(1u8, 16)? {
                u.arbitrary()?
            } else {
                u.int_in_range(0..=3)?
            },
            trigger: u.arbitrary()?,
        })
    }
}

/// How the results are drawn when a well-behaved driver brings the call to
/// its end after the script.
#[derive(Arbitrary, Copy, Clone, Debug, PartialEq, Eq)]
pub enum FinaleMode {
    /// Any result.
    Mixed,
    /// Every attempt fails retryably: the call runs to its last attempt.
    AllFail,
    /// Attempts hang; the driver only sleeps until each wait ends.
    Hang,
}

/// How the call is brought to its end after the script's steps.
#[derive(Arbitrary, Copy, Clone, Debug, PartialEq, Eq)]
pub struct Finale {
    /// How results are drawn.
    pub mode: FinaleMode,
    /// Seeds the results.
    pub seed: u8,
}

/// One whole run: a machine under a policy, a gate, and what the world does.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The policy as written.
    pub policy: ArbitraryPolicy,
    /// `Some`: normalize it with these limits first (the executor's path);
    /// `None`: give the raw policy to the machine.
    pub normalize: Option<ArbitraryLimits>,
    /// The executor's options.
    pub options: ArbitraryOptions,
    /// Attempt slots.
    pub width: Width,
    /// The machine's RNG seed (jitter).
    pub seed: u64,
    /// The gate.
    pub gate: GateInput,
    /// When the call starts.
    pub start: Dur,
    /// Events fed before [`Event::Start`](recourse_core::Event::Start)
    /// (a careless driver).
    pub before_start: Vec<Step>,
    /// How the call ends after the steps.
    pub finale: Finale,
    /// What the world does, in order (the rest of the input, at most
    /// [`MAX_STEPS`]).
    pub steps: Vec<Step>,
}

impl<'a> Arbitrary<'a> for Scenario {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let policy = u.arbitrary()?;
        let normalize = if u.ratio(2u8, 3)? {
            Some(if u.ratio(1u8, 2)? {
                ArbitraryLimits(Limits::DEFAULT)
            } else {
                u.arbitrary()?
            })
        } else {
            None
        };
        let options = u.arbitrary()?;
        let width = match u.int_in_range(0u8..=7)? {
            0 => Width::One,
            1 => Width::Two,
            2..=5 => Width::Four,
            _ => Width::Eleven,
        };
        let seed = u.arbitrary()?;
        let gate = u.arbitrary()?;
        let start = if u.ratio(1u8, 2)? {
            Dur::default()
        } else {
            u.arbitrary()?
        };
        let before_start = if u.ratio(7u8, 8)? {
            Vec::new()
        } else {
            small_vec(u, 1, 3)?
        };
        let finale = u.arbitrary()?;
        let mut steps = Vec::new();
        while !u.is_empty() && steps.len() < MAX_STEPS {
            steps.push(u.arbitrary()?);
        }
        Ok(Self {
            policy,
            normalize,
            options,
            width,
            seed,
            gate,
            start,
            before_start,
            finale,
            steps,
        })
    }
}

/// `min..=max` values, the count drawn first.
fn small_vec<'a, T: Arbitrary<'a>>(
    u: &mut Unstructured<'a>,
    min: usize,
    max: usize,
) -> Result<Vec<T>> {
    let len = u.int_in_range(min..=max)?;
    (0..len).map(|_| u.arbitrary()).collect()
}
