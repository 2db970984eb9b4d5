//! The express lane (see the [module docs](super)): the first attempt of a
//! call that cannot hedge, launched and polled without a machine.

use super::*;

/// The express lane (see the [module docs](self)): launches the first
/// attempt without a machine and polls it once. Returns the call's result
/// when that attempt succeeded; otherwise the machine has taken over (the
/// call is [`State::Running`]), and `polled` says whether the attempt in
/// flight was just polled.
#[inline]
pub(super) fn express_lane<P, Tm, Op, Fut, T, E, C, O, G, W>(
    this: &mut CallProj<'_, '_, P, Tm, Op, Fut, T, E, C, O, G, W>,
    cx: &mut Context<'_>,
    now: Instant,
    polled: &mut bool,
) -> Option<Result<T, Error<E>>>
where
    P: Borrow<Policy>,
    Tm: Timer,
    Op: FnMut(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
    O: Observer,
    G: Gate,
    W: Width,
{
    let State::Idle(planned) = &mut *this.state else {
        unreachable!("the express lane runs on the first poll");
    };
    let Some(info) = first_attempt(planned.policy.borrow(), now) else {
        // A deadline is due already: the machine knows what that means.
        take_over(this.state, this.gate, now);
        return None;
    };
    let admission = this.gate.admit(&AdmitRequest {
        attempt: info,
        previous: None,
        now,
    });
    let opened = planned.opened.insert(Opened {
        info,
        start: now,
        admission,
        released: false,
    });
    if !admission.allowed {
        // The machine records the refusal and ends the call.
        if let Some(Action::Record(r)) = take_over(this.state, this.gate, now) {
            this.observer.on_attempt(*this.key, &r);
        }
        return None;
    }
    this.ids.as_mut()[0] = Some(info.id);
    this.observer.on_launch(*this.key, &info);
    this.attempts.as_mut().slot(0).set(Some((this.op)(info)));
    let Some((id, result)) = poll_attempts(this.ids.as_mut(), this.attempts.as_mut(), cx) else {
        take_over(this.state, this.gate, now);
        *polled = true;
        return None;
    };
    let end = this.clock.read(this.timer, now).max(now);
    let outcome = this.classifier.classify(&result);
    if outcome.kind != OutcomeKind::Success {
        take_over(this.state, this.gate, now);
        let State::Running(machine) = this.state else {
            unreachable!("the machine took over");
        };
        settle(
            machine,
            id,
            outcome,
            end,
            result,
            this.winner,
            this.last,
            this.last_terminal,
        );
        return None;
    }
    let record = first_attempt_record(info, now, end, outcome, admission.reason);
    opened.released = true;
    this.gate.attempt_ended(&record);
    this.observer.on_attempt(*this.key, &record);
    let verdict = Verdict::Success(id);
    *this.state = State::Done;
    this.gate.call_ended(&verdict, end);
    let call = CallEnd {
        start: now,
        end,
        attempts: 1,
        verdict,
    };
    this.observer.on_success(*this.key, &call);
    Some(result.map_err(|error| Error::Operation {
        error,
        cause: Cause::Accepted,
    }))
}

/// Makes the call's machine and starts it at `now`: the call is
/// [`State::Running`] after this. When the express lane asked the gate
/// about the first attempt, the machine is handed that answer: it launches
/// the attempt already running (nothing to do), or returns the record of
/// its refusal, which this returns.
#[inline]
pub(super) fn take_over<P: Borrow<Policy>, M: MachineOps, G: Gate>(
    state: &mut State<P, M>,
    gate: &mut G,
    now: Instant,
) -> Option<Action> {
    let State::Idle(planned) = core::mem::replace(state, State::Done) else {
        unreachable!("a machine is made once, for an idle call");
    };
    let Planned {
        policy,
        options,
        rng,
        opened,
    } = planned;
    // Without an RNG from the caller, the machine seeds one from the clock
    // now: no clock read for a seed that would be replaced.
    let rng = rng.unwrap_or_else(|| fastrand::Rng::with_seed(call_seed(now)));
    *state = State::Running(M::make(policy.borrow(), options, rng));
    #[cfg(test)]
    crate::tests::MACHINES_MADE.with(|n| n.set(n.get() + 1));
    let State::Running(machine) = state else {
        unreachable!("just made");
    };
    machine.handle(Event::Start { now });
    let opened = opened?;
    let first = machine.poll(&mut Replay {
        gate,
        admission: Some(opened.admission),
    });
    match first {
        Action::Launch(info) => {
            debug_assert_eq!(
                info, opened.info,
                "the machine launches the express lane's attempt"
            );
            None
        }
        refused => {
            debug_assert!(matches!(refused, Action::Record(r) if !r.budget_allowed));
            Some(refused)
        }
    }
}

/// A gate that answers its first admission with the answer the express
/// lane already had, and passes everything else to the call's gate.
pub(super) struct Replay<'g, G> {
    gate: &'g mut G,
    admission: Option<Admission>,
}

impl<G: Gate> Gate for Replay<'_, G> {
    #[inline]
    fn admit(&mut self, request: &AdmitRequest) -> Admission {
        match self.admission.take() {
            Some(admission) => admission,
            None => self.gate.admit(request),
        }
    }
    #[inline]
    fn attempt_ended(&mut self, record: &AttemptRecord) {
        self.gate.attempt_ended(record);
    }
    #[inline]
    fn call_ended(&mut self, verdict: &Verdict, now: Instant) {
        self.gate.call_ended(verdict, now);
    }
    #[inline]
    fn hedge(&mut self, state: &crate::hedge::HedgeState) -> crate::hedge::HedgeDecision {
        self.gate.hedge(state)
    }
    #[inline]
    fn expected_latency(&mut self, now: Instant) -> Option<core::time::Duration> {
        self.gate.expected_latency(now)
    }
}

/// Whether the express lane may run: always, except in this crate's tests
/// that compare a call with and without it.
#[cfg(not(test))]
#[inline]
pub(super) const fn express_lane_enabled() -> bool {
    true
}

#[cfg(test)]
#[inline]
pub(super) fn express_lane_enabled() -> bool {
    !crate::tests::EXPRESS_OFF.with(core::cell::Cell::get)
}
