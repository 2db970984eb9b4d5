//! The calls that `benches/peers.rs`, `examples/allocs.rs` and
//! `examples/instr.rs` compare: recourse (the core driver, the executor,
//! the facade), backon and tower, on three paths, each library given the
//! same operation and driven by the same harness ([`Env::drive`]).
//!
//! Included with `#[path]` by each of those binaries (the benches' library,
//! `src/lib.rs`, stays about budgets), so that the three measure exactly the
//! same futures.
//!
//! - **success**: the operation succeeds on its first attempt.
//! - **retry**: it fails twice, then succeeds; every library allows two
//!   retries, with zero backoff (recourse's executor, whose policies are
//!   normalized to at least 1 ms of backoff, runs on a virtual clock whose
//!   sleeps complete at once).
//! - **retry1**: the same, with one failure before the success (issue 16's
//!   retry target is stated for one failure).
//! - **hedge**: the primary attempt never completes, the hedge answers at
//!   once.
//!
//! The harness: success and retry calls are polled **once** with a no-op
//! waker (every one of them completes in that poll; [`Env::drive`] panics
//! otherwise), inside the context of a current-thread tokio runtime with a
//! real clock, so that recourse's default timer is tokio's. Hedge calls run
//! under `block_on` of a current-thread tokio runtime whose clock is paused:
//! `tower::hedge` waits for its hedge delay on a `tokio::time::Sleep`, which
//! completes only after the runtime's time driver has turned, even for a
//! zero delay; with the clock paused the runtime jumps to the deadline
//! instead of sleeping. Every variant of a path goes through the same
//! harness ([`Env::call`]: make the call inside an async block that awaits
//! it, pin the block where it stands, drive it, check the result). Making
//! the call where it is awaited is what `call(...).await` in an async fn
//! does: the future is built in the awaiting future's state and never
//! moved, where making it first and then pinning it would copy all of it
//! once (a 168-byte copy for backon, 656 for the core driver).
//! The paused runtime is made on the first hedge call, after the other
//! paths: see [`Env`].

// Each binary uses its part (the bench no labels, `allocs` no `find`).
#![allow(dead_code)]

use core::cell::{Cell, OnceCell};
use core::future::{ready, Future, IntoFuture, Ready};
use core::pin::{pin, Pin};
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::sync::Arc;

use backon::{ExponentialBuilder, Retryable};
use recourse::{Executor, StaticProvider};
use recourse_core::{AttemptInfo, Instant, Policy, PolicyKey, Timer};
use tokio::runtime::Runtime;
use tower::Service;

/// The error of a failed attempt.
pub(crate) type Fail = &'static str;

/// What every call returns when it succeeds.
pub(crate) const VALUE: u32 = 1;

/// The policy key of the success path (no policy: the fallback, like a
/// facade call with an unconfigured default executor).
const KEY_GET: &str = "svc.Get";
/// The policy key of the retry path: 3 attempts.
const KEY_FLAKY: &str = "svc.Flaky";
/// The policy key of the hedge path: 1 attempt, 1 hedge after 10 ms.
const KEY_HEDGE: &str = "svc.Hedge";
/// The success path with the circuit breaker on (issue 16's "breaker on"
/// row): as long as [`KEY_GET`], so that the difference of the two rows is
/// the breaker's (the key cache hashes and compares a key's bytes: a key
/// four bytes longer cost 20 instructions more).
const KEY_GUARDED: &str = "svc.Brk";
/// The hedge path with the `p95` trigger instead of the fixed delay.
const KEY_HEDGE_P95: &str = "svc.HedgeP95";
/// The same keys for the core driver, which takes a [`PolicyKey`]: named
/// once, as constants, the way a no_std program names its call sites. The
/// facade and the executor take `&str` keys and parse them on every call
/// (their numbers include that).
const CORE_GET: PolicyKey<'static> = PolicyKey::new("svc", "Get");
const CORE_FLAKY: PolicyKey<'static> = PolicyKey::new("svc", "Flaky");
const CORE_HEDGE: PolicyKey<'static> = PolicyKey::new("svc", "Hedge");
/// recourse's hedge delay (the smallest a normalized policy allows).
const HEDGE_DELAY: Duration = Duration::from_millis(10);

/// The paths.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    Success,
    /// Two failures, then success.
    Retry,
    /// One failure, then success.
    RetryOnce,
    Hedge,
}

impl Path {
    pub(crate) const ALL: [Self; 4] = [Self::Success, Self::Retry, Self::RetryOnce, Self::Hedge];

    pub(crate) const fn id(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Retry => "retry",
            Self::RetryOnce => "retry1",
            Self::Hedge => "hedge",
        }
    }
}

/// Who makes the call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lib {
    /// No library: the operation itself (success), a hand-written loop
    /// (retry), a hand-written select of primary and hedge (hedge).
    Direct,
    /// `recourse_core::call` with the default classifier, no observer, the
    /// open gate, and a timer whose sleeps complete at once.
    Core,
    /// `recourse::do_value` on the default executor, on tokio's timer.
    Facade,
    /// `Executor::call` on an executor whose timer is a virtual clock that
    /// jumps to each sleep's deadline.
    ExecVirtual,
    /// `Executor::call` on the default timer (tokio's).
    ExecTokio,
    /// [`Lib::ExecVirtual`] with the circuit breaker on (success path) or
    /// the `p95` hedge trigger (hedge path).
    ExecGuarded,
    /// [`Lib::ExecVirtual`] with a `static` [`recourse::CallKey`]
    /// (`Executor::call_key`): the key's answer kept in the handle.
    ExecKey,
    /// [`Lib::Facade`] with a `static` [`recourse::CallKey`]
    /// (`do_value_key`).
    FacadeKey,
    /// backon's `Retryable::retry` with `ExponentialBuilder`.
    Backon,
    /// `tower::retry::Retry` (success, retry) or `tower::hedge::Hedge`.
    Tower,
}

impl Lib {
    /// The benchmark id (criterion's directory name).
    pub(crate) const fn id(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Core => "recourse-core",
            Self::Facade => "recourse-facade",
            Self::ExecVirtual => "recourse-exec-virtual",
            Self::ExecTokio => "recourse-exec-tokio",
            Self::ExecGuarded => "recourse-exec-guarded",
            Self::ExecKey => "recourse-exec-key",
            Self::FacadeKey => "recourse-facade-key",
            Self::Backon => "backon",
            Self::Tower => "tower",
        }
    }
}

/// One benchmarked call: a library on a path.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    pub(crate) path: Path,
    pub(crate) lib: Lib,
}

impl Variant {
    /// `path/lib`, as criterion names it.
    pub(crate) fn id(self) -> String {
        format!("{}/{}", self.path.id(), self.lib.id())
    }

    /// A human description, for tables.
    pub(crate) fn label(self) -> &'static str {
        match (self.path, self.lib) {
            (Path::Success, Lib::Direct) => "direct call of the operation",
            (Path::Retry | Path::RetryOnce, Lib::Direct) => "hand-written retry loop",
            (Path::Hedge, Lib::Direct) => "hand-written select (primary, hedge)",
            (Path::Hedge, Lib::Core) => "recourse-core driver, `.slots::<2>()`, virtual clock",
            (_, Lib::Core) => "recourse-core driver, no-op timer",
            (_, Lib::Facade) => "recourse facade `do_value`, tokio timer",
            (_, Lib::ExecVirtual) => "recourse `Executor::call`, virtual clock",
            (Path::Hedge, Lib::ExecGuarded) => {
                "recourse `Executor::call`, `p95` trigger, virtual clock"
            }
            (_, Lib::ExecGuarded) => "recourse `Executor::call`, circuit breaker on, virtual clock",
            (_, Lib::ExecTokio) => "recourse `Executor::call`, tokio timer (paused clock)",
            (_, Lib::ExecKey) => {
                "recourse `Executor::call_key` (a static `CallKey`), virtual clock"
            }
            (_, Lib::FacadeKey) => {
                "recourse facade `do_value_key` (a static `CallKey`), tokio timer"
            }
            (_, Lib::Backon) => "backon `Retryable` + `ExponentialBuilder`",
            (Path::Hedge, Lib::Tower) => "`tower::hedge::Hedge` (0 ms delay, paused clock)",
            (_, Lib::Tower) => "`tower::retry::Retry`",
        }
    }
}

/// Every variant, in table order.
pub(crate) const VARIANTS: &[Variant] = &[
    v(Path::Success, Lib::Direct),
    v(Path::Success, Lib::Core),
    v(Path::Success, Lib::Facade),
    v(Path::Success, Lib::ExecVirtual),
    v(Path::Success, Lib::ExecGuarded),
    v(Path::Success, Lib::ExecKey),
    v(Path::Success, Lib::FacadeKey),
    v(Path::Success, Lib::Backon),
    v(Path::Success, Lib::Tower),
    v(Path::Retry, Lib::Direct),
    v(Path::Retry, Lib::Core),
    v(Path::Retry, Lib::ExecVirtual),
    v(Path::Retry, Lib::Backon),
    v(Path::Retry, Lib::Tower),
    v(Path::RetryOnce, Lib::Direct),
    v(Path::RetryOnce, Lib::Core),
    v(Path::RetryOnce, Lib::ExecVirtual),
    v(Path::RetryOnce, Lib::Backon),
    v(Path::RetryOnce, Lib::Tower),
    v(Path::Hedge, Lib::Direct),
    v(Path::Hedge, Lib::Core),
    v(Path::Hedge, Lib::ExecVirtual),
    v(Path::Hedge, Lib::ExecTokio),
    v(Path::Hedge, Lib::ExecGuarded),
    v(Path::Hedge, Lib::Tower),
];

const fn v(path: Path, lib: Lib) -> Variant {
    Variant { path, lib }
}

/// The variant named `path/lib`.
pub(crate) fn find(id: &str) -> Option<Variant> {
    VARIANTS.iter().copied().find(|v| v.id() == id)
}

/// Runs the calls of one variant: made by `make`, driven by [`Env::drive`].
pub(crate) trait Harness {
    fn run<F, E>(&mut self, env: &Env, variant: Variant, make: impl FnMut() -> F)
    where
        F: IntoFuture<Output = Result<u32, E>>;
}

// ---------------------------------------------------------------------------
// Timers.

/// A recourse timer that never sleeps: its clock stays at zero and every
/// sleep is ready (the core driver's documented no-op timer).
pub(crate) struct NoSleep;

impl Timer for NoSleep {
    type Sleep = Ready<()>;
    fn now(&self) -> Instant {
        Instant::ZERO
    }
    fn sleep_until(&self, _: Instant) -> Ready<()> {
        ready(())
    }
}

/// A virtual clock whose sleeps complete at once, jumping the clock to their
/// deadline.
#[derive(Default)]
pub(crate) struct Jump(AtomicU64);

impl Timer for Jump {
    type Sleep = Ready<()>;
    fn now(&self) -> Instant {
        Instant::from_nanos(self.0.load(Ordering::Relaxed))
    }
    fn sleep_until(&self, deadline: Instant) -> Ready<()> {
        self.0.fetch_max(deadline.as_nanos(), Ordering::Relaxed);
        ready(())
    }
}

/// [`Jump`] shared: an executor's timer source (each call gets a clone).
#[derive(Clone, Default)]
pub(crate) struct JumpClock(Arc<Jump>);

impl Timer for JumpClock {
    type Sleep = Ready<()>;
    fn now(&self) -> Instant {
        self.0.now()
    }
    fn sleep_until(&self, deadline: Instant) -> Ready<()> {
        self.0.sleep_until(deadline)
    }
}

/// backon's sleeper: every sleep is ready.
fn no_sleep(_: Duration) -> Ready<()> {
    ready(())
}

// ---------------------------------------------------------------------------
// Operations.

/// The operation of the success path.
fn ok(_: AttemptInfo) -> Ready<Result<u32, Fail>> {
    ready(Ok(VALUE))
}

/// An operation that fails `FAILURES` times, then succeeds (one per
/// call; a constant, as each path's operation is compiled on its own).
fn flaky<const FAILURES: u32>() -> impl FnMut() -> Ready<Result<u32, Fail>> {
    let mut n = 0u32;
    move || {
        n += 1;
        ready(if n <= FAILURES {
            Err("reset")
        } else {
            Ok(VALUE)
        })
    }
}

/// An attempt of the hedge path: the primary never completes, a hedge
/// answers at once.
pub(crate) enum HedgeFut {
    Straggler,
    Quick,
}

impl HedgeFut {
    fn new(is_hedge: bool) -> Self {
        if is_hedge {
            Self::Quick
        } else {
            Self::Straggler
        }
    }
}

impl Future for HedgeFut {
    type Output = Result<u32, Fail>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<u32, Fail>> {
        match *self {
            Self::Straggler => Poll::Pending,
            Self::Quick => Poll::Ready(Ok(VALUE)),
        }
    }
}

fn hedge_op(attempt: AttemptInfo) -> HedgeFut {
    HedgeFut::new(attempt.is_hedge)
}

/// backon's backoff: zero delays, two retries (three attempts, as
/// recourse's default policy and the tower policy below).
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::ZERO)
        .with_max_times(2)
}

// ---------------------------------------------------------------------------
// tower.

/// tower's retry policy: retries an error while retries are left; the
/// backoff is a ready future (zero delay).
#[derive(Copy, Clone)]
pub(crate) struct Retries(pub(crate) u32);

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for Retries {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, E>) -> Option<Ready<()>> {
        if result.is_err() && self.0 > 0 {
            self.0 -= 1;
            Some(ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// The service of tower's success path.
#[derive(Copy, Clone)]
pub(crate) struct Ok1;

impl Service<()> for Ok1 {
    type Response = u32;
    type Error = Fail;
    type Future = Ready<Result<u32, Fail>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Fail>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, (): ()) -> Self::Future {
        ready(Ok(VALUE))
    }
}

/// The service of tower's retry paths: fails `FAILURES` times, then
/// succeeds; the count lives in the harness, which resets it before every
/// call (a tower service is cloned into each response future, so it cannot
/// own it).
#[derive(Copy, Clone)]
pub(crate) struct Flaky<'a, const FAILURES: u32>(&'a Cell<u32>);

impl<const FAILURES: u32> Service<()> for Flaky<'_, FAILURES> {
    type Response = u32;
    type Error = Fail;
    type Future = Ready<Result<u32, Fail>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Fail>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, (): ()) -> Self::Future {
        let n = self.0.get() + 1;
        self.0.set(n);
        ready(if n <= FAILURES {
            Err("reset")
        } else {
            Ok(VALUE)
        })
    }
}

/// The service of tower's hedge path: the request says whether it is the
/// hedge.
#[derive(Copy, Clone)]
pub(crate) struct Backend;

impl Service<bool> for Backend {
    type Response = u32;
    type Error = Fail;
    type Future = HedgeFut;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Fail>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, is_hedge: bool) -> HedgeFut {
        HedgeFut::new(is_hedge)
    }
}

/// tower's hedge policy: every request may be hedged; the copy is the
/// hedge.
#[derive(Copy, Clone)]
pub(crate) struct HedgeAll;

impl tower::hedge::Policy<bool> for HedgeAll {
    fn clone_request(&self, _: &bool) -> Option<bool> {
        Some(true)
    }
    fn can_retry(&self, _: &bool) -> bool {
        true
    }
}

/// `svc.poll_ready` (which must be ready), then `svc.call(req)`: what a
/// caller of a tower service does for each request.
fn tower_call<S: Service<R>, R>(svc: &mut S, req: R) -> S::Future {
    let ready = svc.poll_ready(&mut Context::from_waker(Waker::noop()));
    assert!(matches!(ready, Poll::Ready(Ok(()))), "the service is ready");
    svc.call(req)
}

// ---------------------------------------------------------------------------
// The environment and the harness.

/// What the calls share: runtimes, executors, policies, clocks.
pub(crate) struct Env {
    /// Current-thread, real clock: the context of success and retry calls
    /// (both retry paths).
    live: Runtime,
    /// Current-thread, paused clock: runs the hedge calls. Made on the
    /// first hedge call: once any tokio clock has been paused in a process,
    /// every `tokio::time::Instant::now()` of the process (with tokio's
    /// `test-util` feature, which this crate enables) consults the
    /// runtime's clock behind a mutex, which would slow down the success
    /// and retry paths of recourse's tokio timer.
    paused: OnceCell<Runtime>,
    /// Policies of the core driver (not normalized: zero backoff).
    core_success: Policy,
    core_retry: Policy,
    core_hedge: Policy,
    /// The core driver's hedge-path clock.
    jump: Jump,
    /// Policies for `svc.Flaky` and `svc.Hedge`, on a virtual clock.
    exec_virtual: Executor<JumpClock>,
    /// The same policies on the default timer.
    exec_tokio: Executor,
    /// Attempts of tower's current retry-path call.
    tower_attempts: Cell<u32>,
}

impl Env {
    pub(crate) fn new() -> Self {
        let live = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime");

        let core_success = Policy::DEFAULT;
        let mut core_retry = Policy::DEFAULT;
        core_retry.retry.max_attempts = 3;
        core_retry.retry.initial_backoff = Duration::ZERO;
        core_retry.retry.max_backoff = Duration::ZERO;
        let mut hedge = Policy::DEFAULT;
        hedge.retry.max_attempts = 1;
        hedge.hedge.enabled = true;
        hedge.hedge.max_hedges = 1;
        hedge.hedge.hedge_delay = HEDGE_DELAY;

        let mut guarded = Policy::DEFAULT;
        guarded.circuit.enabled = true;
        let mut hedge_p95 = hedge.clone();
        hedge_p95.hedge.trigger = "p95".try_into().expect("a trigger name");

        let mut flaky = Policy::DEFAULT;
        flaky.retry.max_attempts = 3;
        let provider = || {
            StaticProvider::builder()
                .policy(KEY_FLAKY, flaky.clone())
                .and_then(|b| b.policy(KEY_HEDGE, hedge.clone()))
                .and_then(|b| b.policy(KEY_GUARDED, guarded.clone()))
                .and_then(|b| b.policy(KEY_HEDGE_P95, hedge_p95.clone()))
                .expect("valid policies")
                .build()
        };
        let exec_virtual = Executor::builder()
            .provider(provider())
            .timer(JumpClock::default())
            .build();
        let exec_tokio = Executor::builder().provider(provider()).build();
        Self {
            live,
            paused: OnceCell::new(),
            core_success,
            core_retry,
            core_hedge: hedge,
            jump: Jump::default(),
            exec_virtual,
            exec_tokio,
            tower_attempts: Cell::new(0),
        }
    }

    fn paused(&self) -> &Runtime {
        self.paused.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a paused tokio runtime")
        })
    }

    /// Runs `f` in the runtime context of `path`'s calls (where they are
    /// made and driven).
    pub(crate) fn session<R>(&self, path: Path, f: impl FnOnce() -> R) -> R {
        let _context = match path {
            Path::Success | Path::Retry | Path::RetryOnce => self.live.enter(),
            Path::Hedge => self.paused().enter(),
        };
        f()
    }

    /// Drives one call of `path` to completion: one poll with a no-op waker
    /// (success, retry), `block_on` of the paused runtime (hedge).
    #[inline]
    pub(crate) fn drive<F: Future>(&self, path: Path, mut fut: Pin<&mut F>) -> F::Output {
        match path {
            Path::Success | Path::Retry | Path::RetryOnce => {
                match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(out) => out,
                    Poll::Pending => panic!("a {} call did not complete in one poll", path.id()),
                }
            }
            Path::Hedge => self.paused().block_on(fut),
        }
    }

    /// Drives one call and says whether it returned `Ok(VALUE)`: what every
    /// harness does with each call (the caller looks at the result; handing
    /// the whole `Result` to `black_box` instead costs some variants a
    /// store-forwarding stall in copying it).
    ///
    /// The call is made inside the async block that awaits it, as
    /// `call(...).await` in the caller's async fn: `make()`'s value goes
    /// through [`IntoFuture`] straight into the block's state, rather than
    /// being made first and moved in (a move copies the whole future).
    #[inline]
    pub(crate) fn call<F, E>(&self, path: Path, make: &mut impl FnMut() -> F) -> bool
    where
        F: IntoFuture<Output = Result<u32, E>>,
    {
        matches!(self.drive(path, pin!(async { make().await })), Ok(VALUE))
    }

    /// Makes and drives one call; panics unless it returned [`VALUE`].
    pub(crate) fn check<F, E>(&self, variant: Variant, make: &mut impl FnMut() -> F)
    where
        F: IntoFuture<Output = Result<u32, E>>,
    {
        let ok = self.session(variant.path, || self.call(variant.path, make));
        assert!(ok, "{}: the call did not return Ok({VALUE})", variant.id());
    }
}

/// Hands `harness` the call maker of `variant`.
pub(crate) fn dispatch<H: Harness>(env: &Env, variant: Variant, harness: &mut H) {
    let h = harness;
    let e = env;
    match (variant.path, variant.lib) {
        // success
        (Path::Success, Lib::Direct) => h.run(e, variant, || ready(Ok::<u32, Fail>(VALUE))),
        (Path::Success, Lib::Core) => h.run(e, variant, || {
            recourse_core::call(CORE_GET, &e.core_success, NoSleep, ok)
        }),
        (Path::Success, Lib::Facade) => h.run(e, variant, || recourse::do_value(KEY_GET, ok)),
        (Path::Success, Lib::ExecVirtual) => {
            h.run(e, variant, || e.exec_virtual.call(KEY_GET, ok));
        }
        (Path::Success, Lib::ExecGuarded) => {
            h.run(e, variant, || e.exec_virtual.call(KEY_GUARDED, ok));
        }
        (Path::Success, Lib::ExecKey) => {
            static GET: recourse::CallKey = recourse::CallKey::new(KEY_GET);
            h.run(e, variant, || e.exec_virtual.call_key(&GET, ok));
        }
        (Path::Success, Lib::FacadeKey) => {
            static GET: recourse::CallKey = recourse::CallKey::new(KEY_GET);
            h.run(e, variant, || recourse::do_value_key(&GET, ok));
        }
        (Path::Success, Lib::Backon) => h.run(e, variant, || {
            (|| ready(Ok::<u32, Fail>(VALUE)))
                .retry(backoff())
                .sleep(no_sleep)
        }),
        (Path::Success, Lib::Tower) => {
            let mut svc = tower::retry::Retry::new(Retries(2), Ok1);
            h.run(e, variant, || tower_call(&mut svc, ()));
        }
        // retry (two failures), retry1 (one)
        (Path::Retry, lib) => retry::<2, H>(e, variant, lib, h),
        (Path::RetryOnce, lib) => retry::<1, H>(e, variant, lib, h),
        // hedge
        (Path::Hedge, Lib::Direct) => h.run(e, variant, || {
            let (mut primary, mut hedge) = (HedgeFut::new(false), HedgeFut::new(true));
            core::future::poll_fn(move |cx| {
                if let Poll::Ready(out) = Pin::new(&mut primary).poll(cx) {
                    return Poll::Ready(out);
                }
                Pin::new(&mut hedge).poll(cx)
            })
        }),
        (Path::Hedge, Lib::Core) => h.run(e, variant, || {
            recourse_core::call(CORE_HEDGE, &e.core_hedge, &e.jump, hedge_op).slots::<2>()
        }),
        (Path::Hedge, Lib::ExecVirtual) => {
            h.run(e, variant, || e.exec_virtual.call(KEY_HEDGE, hedge_op));
        }
        (Path::Hedge, Lib::ExecTokio) => {
            h.run(e, variant, || e.exec_tokio.call(KEY_HEDGE, hedge_op));
        }
        (Path::Hedge, Lib::ExecGuarded) => {
            h.run(e, variant, || e.exec_virtual.call(KEY_HEDGE_P95, hedge_op));
        }
        (Path::Hedge, Lib::Tower) => {
            // The hedge delay is the histogram's p50, 0 ms while it is
            // empty, and `min_data_points` 0 lets every call hedge, so every
            // call hedges after 0 ms. Hedge latencies (0 ms) are recorded,
            // but the read histogram rotates only after the (huge) period,
            // and would then hold only zeros.
            let mut svc = e.session(Path::Hedge, || {
                tower::hedge::Hedge::new::<bool>(
                    Backend,
                    HedgeAll,
                    0,
                    0.5,
                    Duration::from_secs(1 << 30),
                )
            });
            h.run(e, variant, || tower_call(&mut svc, false));
        }
        (path, lib) => panic!("no variant {lib:?} on the {path:?} path"),
    }
}

/// Hands `h` the call maker of `variant` on a retry path: `FAILURES`
/// failures, then the success.
fn retry<const FAILURES: u32, H: Harness>(e: &Env, variant: Variant, lib: Lib, h: &mut H) {
    match lib {
        Lib::Direct => h.run(e, variant, || {
            let mut op = flaky::<FAILURES>();
            async move {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match op().await {
                        Err(e) if attempts >= 3 => return Err(e),
                        Err(_) => {}
                        ok => return ok,
                    }
                }
            }
        }),
        Lib::Core => h.run(e, variant, || {
            let mut op = flaky::<FAILURES>();
            recourse_core::call(CORE_FLAKY, &e.core_retry, NoSleep, move |_| op())
        }),
        Lib::ExecVirtual => h.run(e, variant, || {
            let mut op = flaky::<FAILURES>();
            e.exec_virtual.call(KEY_FLAKY, move |_| op())
        }),
        Lib::Backon => h.run(e, variant, || {
            flaky::<FAILURES>().retry(backoff()).sleep(no_sleep)
        }),
        Lib::Tower => {
            let flaky = Flaky::<FAILURES>(&e.tower_attempts);
            let mut svc = tower::retry::Retry::new(Retries(2), flaky);
            h.run(e, variant, || {
                e.tower_attempts.set(0);
                tower_call(&mut svc, ())
            });
        }
        lib => panic!("no variant {lib:?} on the {:?} path", variant.path),
    }
}
