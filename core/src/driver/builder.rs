//! [`CallBuilder`]: a call being configured.

use super::*;

/// A call being configured; `.await` it (it is [`IntoFuture`]) or turn it
/// into a [`Call`] with [`IntoFuture::into_future`].
#[derive(Debug)]
#[must_use = "a call does nothing unless awaited"]
pub struct CallBuilder<
    'k,
    P,
    Tm,
    Op,
    C = DefaultClassifier,
    O = (),
    G = (),
    W: Width = InFlight<1>,
    K = Unheard,
> {
    pub(super) common: Common<'k, P, Tm, Op>,
    pub(super) width: core::marker::PhantomData<W>,
    /// What the call future keeps of the key (see [`KeyRoom`]): nothing
    /// until an observer is set.
    pub(super) room: core::marker::PhantomData<K>,
    pub(super) classifier: C,
    pub(super) observer: O,
    pub(super) gate: G,
}

/// What every builder step carries over unchanged.
#[derive(Debug)]
pub(super) struct Common<'k, P, Tm, Op> {
    pub(super) key: PolicyKey<'k>,
    /// The call's machine starts compact with these and makes the full
    /// machine from them only when the call needs it (see the driver's
    /// module docs): a builder step moves the policy as the caller gave it
    /// (a reference is one word) and a few more words, not a machine.
    pub(super) policy: P,
    pub(super) limits: Limits,
    pub(super) rng: Option<fastrand::Rng>,
    pub(super) timer: Tm,
    pub(super) op: Op,
}

impl<'k, P, Tm, Op, C, O, G, W: Width, K> CallBuilder<'k, P, Tm, Op, C, O, G, W, K> {
    /// Makes room for `M` attempts at once: the primary and up to `M - 1`
    /// hedges of the same retry group (when the policy enables hedging). The
    /// call future then holds `M` attempt futures; the default, 1, hedges
    /// never. `M = 1 + policy.hedge.max_hedges` runs every hedge the policy
    /// asks for.
    ///
    /// ```
    /// # use core::time::Duration;
    /// use recourse_core::{call, AttemptInfo, Policy, PolicyKey};
    /// # use recourse_core::{Instant, Timer};
    /// # struct NoSleep;
    /// # impl Timer for NoSleep {
    /// #     type Sleep = core::future::Ready<()>;
    /// #     fn now(&self) -> Instant { Instant::ZERO }
    /// #     fn sleep_until(&self, _: Instant) -> Self::Sleep { core::future::ready(()) }
    /// # }
    /// let mut policy = Policy::DEFAULT;
    /// policy.hedge.enabled = true;
    /// // The primary hangs; the hedge, launched after `hedge_delay`, answers.
    /// let call = call(PolicyKey::parse("svc.Get"), &policy, NoSleep, |attempt: AttemptInfo| async move {
    ///     if attempt.is_hedge {
    ///         Ok::<_, ()>("from the hedge")
    ///     } else {
    ///         core::future::pending::<Result<&str, ()>>().await
    ///     }
    /// })
    /// .slots::<3>();
    /// let fut = core::future::IntoFuture::into_future(call);
    /// assert_eq!(futures_util::FutureExt::now_or_never(fut), Some(Ok("from the hedge")));
    /// ```
    pub fn slots<const M: usize>(self) -> CallBuilder<'k, P, Tm, Op, C, O, G, InFlight<M>, K>
    where
        InFlight<M>: Width,
    {
        self.width()
    }

    /// Any width: `slots` above, and the crate's tests' widths of their own.
    pub(crate) fn width<W2: Width>(self) -> CallBuilder<'k, P, Tm, Op, C, O, G, W2, K> {
        CallBuilder {
            common: self.common,
            width: core::marker::PhantomData,
            room: core::marker::PhantomData,
            classifier: self.classifier,
            observer: self.observer,
            gate: self.gate,
        }
    }

    /// Uses `rng` for jitter draws.
    pub fn rng(mut self, rng: fastrand::Rng) -> Self {
        self.common.rng = Some(rng);
        self
    }

    /// Uses the executor's [`Limits`] (the retry-after ceiling, the hedge
    /// ceiling) instead of [`Limits::DEFAULT`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.common.limits = limits;
        self
    }

    /// Classifies results with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> CallBuilder<'k, P, Tm, Op, C2, O, G, W, K> {
        CallBuilder {
            common: self.common,
            width: core::marker::PhantomData,
            room: core::marker::PhantomData,
            classifier,
            observer: self.observer,
            gate: self.gate,
        }
    }

    /// Reports to `observer` (pass `&mut o` to read it after the call).
    /// The call future keeps the key from here on, to tell the observer
    /// (without an observer it keeps none).
    pub fn observer<O2: Observer>(
        self,
        observer: O2,
    ) -> CallBuilder<'k, P, Tm, Op, C, O2, G, W, PolicyKey<'k>> {
        CallBuilder {
            common: self.common,
            width: core::marker::PhantomData,
            room: core::marker::PhantomData,
            classifier: self.classifier,
            observer,
            gate: self.gate,
        }
    }

    /// Consults `gate` before every attempt (pass `&mut g` to share one).
    pub fn gate<G2: Gate>(self, gate: G2) -> CallBuilder<'k, P, Tm, Op, C, O, G2, W, K> {
        CallBuilder {
            common: self.common,
            width: core::marker::PhantomData,
            room: core::marker::PhantomData,
            classifier: self.classifier,
            observer: self.observer,
            gate,
        }
    }
}
