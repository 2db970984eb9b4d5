//! Each key's resolution, kept per thread: what a call with a key it has
//! seen runs under, found without asking the provider, hashing with a
//! keyed hasher, or taking a lock (issue 16).
//!
//! A call names its key as a `&str`. The first call of a key on a thread
//! asks the provider (exactly once, as before), works out the hedge plan,
//! and keeps both in this thread's cache, tagged with the executor and the
//! provider's [`generation`](crate::PolicyProvider::generation) read
//! *before* asking. A later call of the same key on the same thread finds
//! its slot (the key's bytes mixed into an index, then compared whole),
//! reads the provider's generation (one atomic load for the providers of
//! this crate), and, when it has not moved, reuses the slot: a reference
//! count increment instead of a lookup. A provider update moves the
//! generation, so the next call of every key asks again: a cached answer
//! never outlives the document it came from.
//!
//! What is not kept: answers of providers without a generation (they are
//! asked on every call, as before), last-known-good answers and provider
//! errors other than `not_found` and `invalid_policy` (their text says why
//! *now*), and keys longer than [`KEY_BYTES`] bytes.
//!
//! Memory: [`SLOTS`] (2048) slots of 80 bytes per thread that made a call
//! (160 KiB, made by its first call, with [`SPARE`] answers' allocations),
//! and per slot filled one shared answer of about 100 bytes (the key's
//! policy, its hedge plan and its state are `Arc`s into the executor's);
//! the slots are grouped in sets of [`WAYS`] (8): a key may sit in any
//! slot of the set its bytes hash to, and a new key of a full set takes
//! the place of one of them in turn, so the cache never grows. A thousand
//! keys fit with few of them pushing each other out (issue 16: with 1024
//! slots of one key each, and an index that read only part of the key's
//! bytes, a thousand keys `svc.Op0`..`svc.Op999` landed on 6 slots, and
//! almost every call asked the provider again).

use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use recourse_core::policy::Normalized;
use recourse_core::PolicyKey;

use crate::amplification::LedgerEntry;
use crate::breakers::BreakerEntry;
use crate::hedging::HedgePlan;
use crate::latency::LatencyEntry;
use crate::missing_policy::Resolution;

/// Slots per thread (a thousand keys used in turn mostly stay cached).
pub(crate) const SLOTS: usize = 2048;

/// Slots per set: a key may sit in any of its set's.
pub(crate) const WAYS: usize = 8;

/// The longest key (in bytes of its text) the cache keeps.
pub(crate) const KEY_BYTES: usize = 48;

/// Unique per executor, so one thread's cache never mixes two executors'
/// answers (0 is no executor).
static NEXT_EXECUTOR: AtomicU64 = AtomicU64::new(1);

/// A new executor's id.
pub(crate) fn executor_id() -> u64 {
    NEXT_EXECUTOR.fetch_add(1, Ordering::Relaxed)
}

/// What a call runs under, for one key.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) resolution: Resolution,
    pub(crate) plan: HedgePlan,
    /// The key's circuit breaker, when its policy has one on.
    pub(crate) breaker: Option<BreakerEntry>,
    /// The key's latency sketch, when its policy reads or feeds one.
    pub(crate) latency: Option<LatencyEntry>,
    /// The key's amplification ledger, when its policy has the bound on.
    pub(crate) ledger: Option<LedgerEntry>,
    /// Whether the policy does anything with the attempts made upstream
    /// (`amplification.upstream_retry` other than `always`): else a call
    /// does not read them (unless its timeline records them).
    pub(crate) upstream_matters: bool,
    /// Whether the call runs under a fallback instead of its key's own
    /// policy ([`Resolution::is_fallback`], decided once per key: each
    /// such call is counted, issue 16).
    pub(crate) fallback: bool,
    /// Whether this holds any per-key state (`breaker`, `latency` or
    /// `ledger`): else [`Resolved::is_stale`] has nothing to look at, and a
    /// hit reads one flag instead of three (issue 16: 6 instructions a
    /// call). Set with them, in [`Resolved::with_state`].
    pub(crate) stateful: bool,
}

impl Resolved {
    /// No policy, nothing else: the answer of an empty slot.
    fn denied() -> Self {
        Self {
            resolution: Resolution {
                policy: None,
                source: None,
                mode: None,
                error: None,
            },
            plan: HedgePlan::OFF,
            breaker: None,
            latency: None,
            ledger: None,
            upstream_matters: false,
            fallback: false,
            stateful: false,
        }
    }

    /// The answer `resolution` with its hedge plan and its key's state.
    pub(crate) fn with_state(
        resolution: Resolution,
        plan: HedgePlan,
        breaker: Option<BreakerEntry>,
        latency: Option<LatencyEntry>,
        ledger: Option<LedgerEntry>,
    ) -> Self {
        Self {
            stateful: breaker.is_some() || latency.is_some() || ledger.is_some(),
            resolution,
            plan,
            breaker,
            latency,
            ledger,
            upstream_matters: false,
            fallback: false,
        }
    }

    /// Whether a store evicted a value this holds (then the key must be
    /// looked up again).
    #[inline]
    pub(crate) fn is_stale(&self) -> bool {
        self.stateful && self.is_evicted()
    }

    /// [`Resolved::is_stale`] of an answer with state.
    #[inline(always)]
    fn is_evicted(&self) -> bool {
        self.breaker.as_ref().is_some_and(BreakerEntry::is_evicted)
            || self.latency.as_ref().is_some_and(LatencyEntry::is_evicted)
            || self.ledger.as_ref().is_some_and(LedgerEntry::is_evicted)
    }
}

struct Slot {
    executor: u64,
    generation: u64,
    len: u8,
    /// Where [`PolicyKey::parse`] split the key's text: a hit is not parsed
    /// again.
    split: Split,
    key: [u8; KEY_BYTES],
    /// `None` until the slot is first filled.
    resolved: Option<Arc<Resolved>>,
}

/// How a key's text splits into its namespace and name, for the
/// well-formed keys (the others are not kept): the byte of the dot of
/// `namespace.name` (never 0: a namespace is not empty), 0 for a key
/// without a namespace (the name is the whole text). One byte, so that a
/// hit's answer with it is a pair of scalars, returned in registers.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Split(u8);

impl Split {
    /// No namespace: the name is the whole text.
    const WHOLE: Self = Self(0);

    /// How `key` lies in `text`, which it was parsed from; `None` when
    /// parsing trimmed or moved anything.
    pub(crate) fn of(text: &str, key: PolicyKey<'_>) -> Option<Self> {
        let at = |part: &str, offset: usize| {
            core::ptr::eq(part.as_ptr(), text.as_ptr().wrapping_add(offset))
        };
        if key.namespace.is_empty() && key.name.len() == text.len() && at(key.name, 0) {
            return Some(Self::WHOLE);
        }
        let dot = key.namespace.len();
        let splits = !key.namespace.is_empty()
            && dot + 1 + key.name.len() == text.len()
            && at(key.namespace, 0)
            && at(key.name, dot + 1);
        if splits {
            u8::try_from(dot).ok().map(Self)
        } else {
            None
        }
    }

    /// The key `text` (the bytes this was made from) splits into.
    #[inline(always)]
    pub(crate) fn key(self, text: &str) -> Option<PolicyKey<'_>> {
        match self.0 {
            0 => Some(PolicyKey::new("", text)),
            at => {
                let (namespace, rest) = text.split_at_checked(usize::from(at))?;
                Some(PolicyKey::new(namespace, rest.get(1..)?))
            }
        }
    }
}

/// A key's resolution for one call: the cache's, shared, a [`CallKey`]'s,
/// borrowed, or one made for this call alone (not kept).
pub(crate) enum Held<'h> {
    Cached(Arc<Resolved>),
    Borrowed(&'h Resolved),
    Own(Resolved),
}

impl<'h> Held<'h> {
    /// What a call keeps once it has read the answer's attributes: the
    /// policy and the key's state (a cached answer is kept whole, behind
    /// its `Arc`; a [`CallKey`]'s is borrowed).
    #[inline]
    pub(crate) fn keep(self) -> Kept<'h> {
        match self {
            Self::Cached(r) => Kept::Cached(r),
            Self::Borrowed(r) => Kept::Borrowed(r),
            Self::Own(r) => Kept::Own {
                policy: r.resolution.policy,
                breaker: r.breaker,
                latency: r.latency,
                ledger: r.ledger,
            },
        }
    }
}

/// [`Kept::release`]'s rare case.
#[cold]
#[inline(never)]
fn drop_own(own: Kept<'_>) {
    drop(own);
}

/// What a call keeps of its key's resolution (see [`Held::keep`]).
pub(crate) enum Kept<'h> {
    Cached(Arc<Resolved>),
    Borrowed(&'h Resolved),
    Own {
        policy: Option<Arc<Normalized>>,
        breaker: Option<BreakerEntry>,
        latency: Option<LatencyEntry>,
        ledger: Option<LedgerEntry>,
    },
}

impl Kept<'_> {
    /// Drops this at a call's end: a borrowed answer (a [`CallKey`]'s)
    /// costs nothing, a cached one its reference count, and only a call's
    /// own answer (rare: an answer that may not be kept) goes through the
    /// whole drop, out of line (issue 16: the drop glue of every variant
    /// was a call of its own, 13 instructions a call).
    #[inline(always)]
    pub(crate) fn release(self) {
        match self {
            // Holds nothing to drop: forgotten, so that no drop glue is
            // called for it (a match arm that moves nothing out leaves the
            // whole to the glue).
            Self::Borrowed(_) => core::mem::forget(self),
            Self::Cached(r) => drop(r),
            own @ Self::Own { .. } => drop_own(own),
        }
    }

    /// The answer this keeps whole, if it does.
    #[inline(always)]
    fn whole(&self) -> Option<&Resolved> {
        match self {
            Self::Cached(r) => Some(r),
            Self::Borrowed(r) => Some(r),
            Self::Own { .. } => None,
        }
    }

    /// This with `policy` in place of the key's (the key's state kept).
    pub(crate) fn with_policy(self, policy: Arc<Normalized>) -> Self {
        match self {
            Self::Cached(_) | Self::Borrowed(_) => {
                let r = self.whole();
                Self::Own {
                    policy: Some(policy),
                    breaker: r.and_then(|r| r.breaker.clone()),
                    latency: r.and_then(|r| r.latency.clone()),
                    ledger: r.and_then(|r| r.ledger.clone()),
                }
            }
            Self::Own {
                breaker,
                latency,
                ledger,
                ..
            } => Self::Own {
                policy: Some(policy),
                breaker,
                latency,
                ledger,
            },
        }
    }

    /// The policy; `None`: the call is denied.
    pub(crate) fn policy(&self) -> Option<&Normalized> {
        match self {
            Self::Cached(r) => r.resolution.policy.as_deref(),
            Self::Borrowed(r) => r.resolution.policy.as_deref(),
            Self::Own { policy, .. } => policy.as_deref(),
        }
    }

    /// The key's breaker, when its policy has one on.
    pub(crate) fn breaker(&self) -> Option<&BreakerEntry> {
        match self {
            Self::Cached(r) => r.breaker.as_ref(),
            Self::Borrowed(r) => r.breaker.as_ref(),
            Self::Own { breaker, .. } => breaker.as_ref(),
        }
    }

    /// The key's latency sketch, when its policy reads or feeds one.
    pub(crate) fn latency(&self) -> Option<&LatencyEntry> {
        match self {
            Self::Cached(r) => r.latency.as_ref(),
            Self::Borrowed(r) => r.latency.as_ref(),
            Self::Own { latency, .. } => latency.as_ref(),
        }
    }

    /// The key's amplification ledger, when its policy has the bound on.
    pub(crate) fn ledger(&self) -> Option<&LedgerEntry> {
        match self {
            Self::Cached(r) => r.ledger.as_ref(),
            Self::Borrowed(r) => r.ledger.as_ref(),
            Self::Own { ledger, .. } => ledger.as_ref(),
        }
    }
}

impl core::ops::Deref for Held<'_> {
    type Target = Resolved;

    fn deref(&self) -> &Resolved {
        match self {
            Self::Cached(r) => r,
            Self::Borrowed(r) => r,
            Self::Own(r) => r,
        }
    }
}

/// A policy key kept where its calls are made (a `static`, or a value its
/// caller holds), which keeps its key's resolution itself: a call with it
/// ([`Executor::call_key`](crate::Executor::call_key),
/// [`do_value_key`](crate::do_value_key)) finds its policy, hedge plan and
/// per-key state (breaker, latency sketch, amplification ledger) without
/// hashing its text, looking in the per-thread cache or counting a
/// reference: one comparison of the provider's
/// [`generation`](crate::PolicyProvider::generation) with the one its
/// answer was made under.
///
/// The first call with it on an executor asks the provider (exactly once,
/// as any call of a new key does) and keeps the answer, for that executor
/// and that generation. Calls after a provider update run under the new
/// policy at once, as every call does: once the generation moved (or on
/// another executor, or when a store evicted the key's state), a call with
/// it is looked up as a `&str` key is, in the per-thread cache — the
/// handle's own answer is made once and never replaced (it is read by
/// every thread without a lock). Keys of providers without a generation
/// are asked on every call, as `&str` keys are.
///
/// ```
/// use recourse::{CallKey, Executor, Policy, StaticProvider};
///
/// static GET_USER: CallKey = CallKey::new("user-service.GetUser");
///
/// let exec = Executor::builder()
///     .provider(StaticProvider::builder().policy("user-service.GetUser", Policy::retries(3))?.build())
///     .try_build()?;
/// let value = async_io::block_on(exec.call_key(&GET_USER, |_attempt| async { Ok::<_, ()>(7) }));
/// assert_eq!(value, Ok(7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct CallKey {
    text: Cow<'static, str>,
    answer: OnceLock<KeyAnswer>,
}

/// A [`CallKey`]'s answer, for one executor under one generation.
#[derive(Debug)]
struct KeyAnswer {
    executor: u64,
    generation: u64,
    split: Split,
    /// The parsed key itself, for a key whose text is `'static` (a
    /// [`CallKey::new`]): read as it is, where the split is cut out of the
    /// text again on every call (its bounds and character boundaries
    /// checked, about 15 instructions).
    fixed: Option<PolicyKey<'static>>,
    resolved: Resolved,
}

impl CallKey {
    /// The key `key` (a policy key such as `"user-service.GetUser"`),
    /// resolved on its first call; usable in a `static`.
    pub const fn new(key: &'static str) -> Self {
        Self {
            text: Cow::Borrowed(key),
            answer: OnceLock::new(),
        }
    }

    /// The key `key`, for a key made at run time.
    pub fn owned(key: impl Into<String>) -> Self {
        Self {
            text: Cow::Owned(key.into()),
            answer: OnceLock::new(),
        }
    }

    /// The key's text, as a `&str` key would name it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The answer kept for `executor` under `generation`, with the parsed
    /// key, while it is fresh.
    #[inline(always)]
    pub(crate) fn answer(
        &self,
        executor: u64,
        generation: u64,
    ) -> Option<(PolicyKey<'_>, &Resolved)> {
        let answer = self.answer.get()?;
        if answer.executor != executor
            || answer.generation != generation
            || answer.resolved.is_stale()
        {
            return None;
        }
        let key = match answer.fixed {
            Some(key) => key,
            None => answer.split.key(&self.text)?,
        };
        Some((key, &answer.resolved))
    }

    /// Whether no answer was kept yet (the first call keeps one).
    #[inline(always)]
    pub(crate) fn is_unresolved(&self) -> bool {
        self.answer.get().is_none()
    }

    /// Keeps `resolved`, the answer for `parsed` (this key's text parsed)
    /// on `executor` under `generation`, when it may be kept and no other
    /// call kept one first; gives it back otherwise.
    pub(crate) fn keep(
        &self,
        executor: u64,
        generation: u64,
        parsed: PolicyKey<'_>,
        resolved: Resolved,
    ) -> Result<(), Resolved> {
        let split = match Split::of(&self.text, parsed) {
            Some(split) if keeps(&resolved.resolution) => split,
            _ => return Err(resolved),
        };
        let fixed = match self.text {
            Cow::Borrowed(text) => split.key(text),
            Cow::Owned(_) => None,
        };
        self.answer
            .set(KeyAnswer {
                executor,
                generation,
                split,
                fixed,
                resolved,
            })
            .map_err(|answer| answer.resolved)
    }
}

impl Clone for CallKey {
    /// The same key, resolved again on its first call.
    fn clone(&self) -> Self {
        Self {
            text: self.text.clone(),
            answer: OnceLock::new(),
        }
    }
}

impl From<&'static str> for CallKey {
    fn from(key: &'static str) -> Self {
        Self::new(key)
    }
}

impl From<String> for CallKey {
    fn from(key: String) -> Self {
        Self::owned(key)
    }
}

/// What a call names its key by: a `&str`, or a [`CallKey`] that keeps
/// its answer.
pub(crate) trait KeyArg<'k>: Copy {
    /// The key's text.
    fn text(self) -> &'k str;
    /// The handle, when the key is one.
    fn handle(self) -> Option<&'k CallKey>;
}

impl<'k> KeyArg<'k> for &'k str {
    #[inline(always)]
    fn text(self) -> &'k str {
        self
    }

    #[inline(always)]
    fn handle(self) -> Option<&'k CallKey> {
        None
    }
}

impl<'k> KeyArg<'k> for &'k CallKey {
    #[inline(always)]
    fn text(self) -> &'k str {
        &self.text
    }

    #[inline(always)]
    fn handle(self) -> Option<&'k CallKey> {
        Some(self)
    }
}

/// Answers' allocations made ahead, on a thread's first call, for its
/// first slots filled: the first keys a thread caches allocate nothing in
/// their call (a slot, once filled, reuses its allocation for the next
/// key; past these, the first fill of a slot allocates once).
const SPARE: usize = 16;

/// One thread's cache: made on its first call.
struct Cache {
    slots: Vec<Slot>,
    spare: Vec<Arc<Resolved>>,
    /// Turns, for the slot a new key of a full set takes.
    turn: usize,
}

std::thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache {
            slots: Vec::new(),
            spare: Vec::new(),
            turn: 0,
        })
    };
}

impl Slot {
    /// Whether this slot's key is `bytes` (1 to [`KEY_BYTES`] of them):
    /// compared a word at a time, inline, for keys of up to 16 bytes (the
    /// usual `svc.Method`), where a `memcmp` call cost about as much as
    /// the rest of the lookup; longer keys compare as slices.
    #[inline(always)]
    fn holds(&self, bytes: &[u8]) -> bool {
        let n = bytes.len();
        if usize::from(self.len) != n {
            return false;
        }
        let mine = &self.key;
        // Fixed-size reads at `at` of both (`None` past either's end: never
        // for `at + width <= n <= KEY_BYTES`).
        let u64s = |at: usize| {
            let a: Option<[u8; 8]> = mine.get(at..at + 8).and_then(|s| s.try_into().ok());
            let b: Option<[u8; 8]> = bytes.get(at..at + 8).and_then(|s| s.try_into().ok());
            a.is_some() && a == b
        };
        let u32s = |at: usize| {
            let a: Option<[u8; 4]> = mine.get(at..at + 4).and_then(|s| s.try_into().ok());
            let b: Option<[u8; 4]> = bytes.get(at..at + 4).and_then(|s| s.try_into().ok());
            a.is_some() && a == b
        };
        match n {
            // The first and last eight (they overlap, and cover all 16).
            8..=16 => u64s(0) && u64s(n - 8),
            4..=7 => u32s(0) && u32s(n - 4),
            _ => mine.get(..n) == Some(bytes),
        }
    }

    const EMPTY: Self = Self {
        executor: 0,
        generation: 0,
        len: 0,
        split: Split::WHOLE,
        key: [0; KEY_BYTES],
        resolved: None,
    };
}

/// The first slot of `key`'s set (never empty: the caller checks): every
/// byte of the key, eight at a time, mixed as FxHash does (rotate, xor,
/// multiply), with its length; the product's top bits pick the set. Keys
/// of one service differ anywhere (`svc.Op17`, `svc17.Get`), so all of
/// them count. Fixed-size reads only: the last eight bytes (or, in a key
/// shorter than eight, its first and last four) overlap what came before.
#[inline]
fn index(key: &[u8]) -> usize {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    let mix = |h: u64, word: u64| (h.rotate_left(26) ^ word).wrapping_mul(K);
    let n = key.len();
    let u32_at = |at: usize| match key.get(at..at + 4) {
        Some(&[a, b, c, d]) => u64::from(u32::from_le_bytes([a, b, c, d])),
        _ => 0,
    };
    let u64_at = |at: usize| match key.get(at..at + 8) {
        Some(&[a, b, c, d, e, f, g, h]) => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        _ => 0,
    };
    let mut h = n as u64;
    if n >= 8 {
        let mut at = 0;
        while at + 8 < n {
            h = mix(h, u64_at(at));
            at += 8;
        }
        h = mix(h, u64_at(n - 8));
    } else if n >= 4 {
        h = mix(h, u32_at(0) | u32_at(n - 4) << 32);
    } else {
        h = mix(h, key.iter().fold(0u64, |w, &b| w << 8 | u64::from(b)));
    }
    let sets = (SLOTS / WAYS) as u64;
    // The top bits of a multiplicative hash are its best mixed.
    let h = (h ^ h >> 29).wrapping_mul(K);
    let set = (h >> (64 - sets.trailing_zeros())) % sets;
    set as usize * WAYS
}

/// `key`'s policy key (as [`PolicyKey::parse`] reads it) and its
/// resolution on `executor`: the cached ones while the provider's
/// `generation` (read by the caller before anything else) has not moved,
/// else the parse's and `resolve`'s, which are cached when they may be.
///
/// `generation` `None`: the provider cannot say when its answers change;
/// `resolve` runs and nothing is kept.
// The executor calls its two halves, `hit` and `resolve_and_keep`, apart.
#[cfg(test)]
#[inline]
pub(crate) fn resolve<'k>(
    executor: u64,
    key: &'k str,
    generation: Option<u64>,
    resolve: impl FnOnce(PolicyKey<'k>) -> Resolved,
) -> (PolicyKey<'k>, Held<'static>) {
    // The hit (the usual call) inline; asking and filling out of line.
    if let Some((parsed, found)) = generation.and_then(|g| hit(executor, key, g)) {
        return (parsed, Held::Cached(found));
    }
    resolve_and_keep(executor, key, generation, resolve)
}

/// The hit half of `resolve`: `key` parsed and its cached answer on
/// `executor` under `generation`, if this thread's cache has a fresh one.
/// (A caller that handles a hit apart from a miss never moves a [`Held`],
/// whose `Own` answer is large.)
#[inline(always)]
pub(crate) fn hit(
    executor: u64,
    key: &str,
    generation: u64,
) -> Option<(PolicyKey<'_>, Arc<Resolved>)> {
    let (split, found) = lookup(executor, key, generation)?;
    Some((split.key(key)?, found))
}

/// `key`'s cached answer on `executor` under `generation`, if this
/// thread's cache has a fresh one, with where its text splits. (A pair
/// of scalars: returned in registers, not copied through the stack.)
#[inline(always)]
fn lookup(executor: u64, key: &str, generation: u64) -> Option<(Split, Arc<Resolved>)> {
    let bytes = key.as_bytes();
    if bytes.is_empty() || bytes.len() > KEY_BYTES {
        return None;
    }
    let first = index(bytes);
    CACHE
        .try_with(|cache| {
            let cache = cache.try_borrow().ok()?;
            let set = cache.slots.get(first..first + WAYS)?;
            let slot = set
                .iter()
                .find(|slot| slot.executor == executor && slot.holds(bytes))?;
            let resolved = slot.resolved.as_ref()?;
            if slot.generation != generation || resolved.is_stale() {
                return None;
            }
            Some((slot.split, Arc::clone(resolved)))
        })
        .ok()
        .flatten()
}

/// What `resolve` does on a miss: parses the key, asks `resolve`, and
/// keeps the answer when it may be kept.
#[inline(never)]
pub(crate) fn resolve_and_keep<'k>(
    executor: u64,
    key: &'k str,
    generation: Option<u64>,
    resolve: impl FnOnce(PolicyKey<'k>) -> Resolved,
) -> (PolicyKey<'k>, Held<'static>) {
    let bytes = key.as_bytes();
    let Some(generation) = generation.filter(|_| !bytes.is_empty() && bytes.len() <= KEY_BYTES)
    else {
        let parsed = PolicyKey::parse(key);
        return (parsed, Held::Own(resolve(parsed)));
    };
    let first = index(bytes);
    // Asked outside the cache's borrow: a provider may make calls itself.
    let parsed = PolicyKey::parse(key);
    let resolved = resolve(parsed);
    let (true, Some(split)) = (keeps(&resolved.resolution), Split::of(key, parsed)) else {
        return (parsed, Held::Own(resolved));
    };
    let mut resolved = Some(resolved);
    let kept = CACHE.try_with(|cache| {
        let mut cache = cache.try_borrow_mut().ok()?;
        let Cache { slots, spare, turn } = &mut *cache;
        if slots.is_empty() {
            slots.extend((0..SLOTS).map(|_| Slot::EMPTY));
            spare.extend((0..SPARE).map(|_| Arc::new(Resolved::denied())));
        }
        let set = slots.get_mut(first..first + WAYS)?;
        // The key's own slot (an answer gone stale), else an empty one,
        // else each slot of the set in turn.
        let way = set
            .iter()
            .position(|slot| slot.executor == executor && slot.holds(bytes))
            .or_else(|| set.iter().position(|slot| slot.resolved.is_none()))
            .unwrap_or_else(|| {
                *turn = turn.wrapping_add(1);
                *turn % WAYS
            });
        let slot = set.get_mut(way)?;
        let answer = resolved.take()?;
        match slot.resolved.as_mut().and_then(Arc::get_mut) {
            // No call holds the slot's previous answer: reuse its place.
            Some(place) => *place = answer,
            None => match spare.pop() {
                Some(mut made) => {
                    if let Some(place) = Arc::get_mut(&mut made) {
                        *place = answer;
                        slot.resolved = Some(made);
                    } else {
                        slot.resolved = Some(Arc::new(answer));
                    }
                }
                None => slot.resolved = Some(Arc::new(answer)),
            },
        }
        slot.executor = executor;
        slot.generation = generation;
        // At most KEY_BYTES (48): fits.
        slot.len = bytes.len() as u8;
        slot.split = split;
        slot.key[..bytes.len()].copy_from_slice(bytes);
        slot.resolved.as_ref().map(Arc::clone)
    });
    match (kept, resolved) {
        (Ok(Some(shared)), _) => (parsed, Held::Cached(shared)),
        (_, Some(own)) => (parsed, Held::Own(own)),
        // Unreachable: the answer is either kept or still here.
        (_, None) => (parsed, Held::Own(Resolved::denied())),
    }
}

/// Whether an answer holds until the provider's generation moves: not a
/// last-known-good one, nor an error that says why the provider cannot
/// answer now.
pub(crate) fn keeps(resolution: &Resolution) -> bool {
    use crate::provider::{PolicySource, ProviderError};
    resolution.source != Some(PolicySource::Lkg)
        && matches!(
            resolution.error,
            None | Some(ProviderError::NotFound | ProviderError::Invalid(_))
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_rebuilds_the_parsed_key() {
        for text in ["svc.Get", "Get", "db.Users.Query", "svc.", "a.b"] {
            let parsed = PolicyKey::parse(text);
            let split = Split::of(text, parsed).expect("a well-formed key");
            assert_eq!(split.key(text), Some(parsed), "{text:?}");
        }
        // Keys that parsing trims or drops a dot of are not kept.
        for text in [" svc . Get ", "svc. Get", ".x"] {
            assert!(
                Split::of(text, PolicyKey::parse(text)).is_none(),
                "{text:?}"
            );
        }
    }

    /// A slot holds exactly its key: for every length, the same bytes
    /// match and a difference at any byte (or in the length) does not.
    #[test]
    fn a_slot_holds_exactly_its_key_at_every_length() {
        let text = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP";
        for n in 1..=KEY_BYTES {
            let mut slot = Slot::EMPTY;
            slot.len = n as u8;
            slot.key[..n].copy_from_slice(&text[..n]);
            assert!(slot.holds(&text[..n]), "{n}");
            for at in 0..n {
                let mut other = text[..n].to_vec();
                other[at] ^= 0x20;
                assert!(!slot.holds(&other), "{n}: byte {at}");
            }
            assert!(!slot.holds(&text[..n - 1]), "{n}: shorter");
            if n < KEY_BYTES {
                assert!(!slot.holds(&text[..n + 1]), "{n}: longer");
            }
        }
    }

    #[test]
    fn the_index_stays_in_range_for_every_length() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP";
        for n in 1..=text.len() {
            let i = index(&text.as_bytes()[..n]);
            assert!(i + WAYS <= SLOTS && i % WAYS == 0, "{n}: {i}");
        }
    }

    /// A thousand keys of one service, differing at the end or in the
    /// middle, spread over the sets: none has more keys than it has slots
    /// by much (a thousand keys once landed on 6 slots).
    #[test]
    fn a_thousand_keys_spread_over_the_sets() {
        let families: [fn(usize) -> String; 3] = [
            |i| format!("svc.Op{i}"),
            |i| format!("svc{i}.Get"),
            |i| format!("user-service.GetUserProfile{i}"),
        ];
        for family in families {
            let mut per_set = vec![0usize; SLOTS / WAYS];
            for i in 0..1_000 {
                per_set[index(family(i).as_bytes()) / WAYS] += 1;
            }
            let overflow: usize = per_set.iter().map(|&n| n.saturating_sub(WAYS)).sum();
            assert!(
                overflow <= 30,
                "{}: {overflow} keys past their set's slots",
                family(0)
            );
        }
    }

    /// A thousand keys used in turn on one thread are found in the cache
    /// (the provider is asked once per key, and for the few pushed out).
    #[test]
    fn a_thousand_keys_in_turn_stay_cached() {
        let asked = core::cell::Cell::new(0u32);
        let keys: Vec<String> = (0..1_000).map(|i| format!("svc.Op{i}")).collect();
        for _round in 0..3 {
            for key in &keys {
                let (_, held) = resolve(u64::MAX - 7, key, Some(1), |_| {
                    asked.set(asked.get() + 1);
                    Resolved {
                        resolution: Resolution {
                            policy: Some(Arc::new(
                                recourse_core::Policy::DEFAULT
                                    .normalize()
                                    .expect("the default policy is valid"),
                            )),
                            source: None,
                            mode: None,
                            error: None,
                        },
                        ..Resolved::denied()
                    }
                });
                assert!(held.resolution.policy.is_some());
            }
        }
        // 1,000 the first round; the rounds after ask again only for keys
        // of overfull sets.
        assert!(asked.get() <= 1_000 + 2 * 30, "asked {} times", asked.get());
    }
}
