//! recourse's call machine on a Cortex-M3 (qemu's lm3s6965evb): calls to a
//! simulated flaky peripheral with retries, per-attempt timeouts, a token
//! bucket budget, a circuit breaker and hedging, timed by SysTick. Prints
//! each call's attempt records over semihosting.
//!
//! Run it (from this directory): `cargo run --release`. See the README's
//! "Embedded" section.
#![no_std]
#![no_main]

use core::panic::PanicInfo;
use core::time::Duration;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use recourse_core::{
    call, AttemptRecord, CircuitBreaker, CircuitState, Error, Instant, Observer, Policy, PolicyKey,
    Timer,
};
use recourse_embedded_example::board::{self, SysTickTimer};
use recourse_embedded_example::guard::{Guard, BUDGET};
use recourse_embedded_example::peripheral::{Mode, Nak, Peripheral};

/// Keeps one call's attempt records (no heap: up to 8).
#[derive(Default)]
struct Log {
    start: Instant,
    records: heapless::Vec<AttemptRecord, 8>,
}

impl Observer for Log {
    fn on_start(&mut self, _: PolicyKey<'_>, start: Instant) {
        self.start = start;
        self.records.clear();
    }

    fn on_attempt(&mut self, _: PolicyKey<'_>, record: &AttemptRecord) {
        // More than 8 attempts would not be printed; the policies allow 3.
        let _ = self.records.push(*record);
    }
}

fn ms(d: Duration) -> u64 {
    // u64, not u128: no 128-bit formatting in flash.
    d.as_millis() as u64
}

fn report(name: &str, log: &Log, result: &Result<u16, Error<Nak>>) {
    match result {
        Ok(v) => hprintln!("{}: ok {:#x}", name, v),
        Err(e) => hprintln!("{}: error: {}", name, e),
    }
    for r in &log.records {
        hprintln!(
            "  #{} {:<7} start={:>3}ms end={:>3}ms backoff={:>2}ms {:<15} budget={}{}",
            r.info.id.0,
            r.info.kind().as_str(),
            ms(r.start - log.start),
            ms(r.end - log.start),
            ms(r.backoff),
            r.outcome.reason,
            r.budget_reason,
            if r.cancelled { " (cancelled)" } else { "" },
        );
    }
}

/// Retries: 3 attempts, 10 ms then 20 ms apart, each cut at 50 ms. Breaker:
/// opens after 2 failed calls in a row, for 5 s.
fn policy(hedge: bool) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.max_attempts = 3;
    p.retry.initial_backoff = Duration::from_millis(10);
    p.retry.backoff_multiplier = 2.0;
    p.retry.timeout_per_attempt = Some(Duration::from_millis(50));
    p.circuit.enabled = true;
    p.circuit.threshold = 2;
    p.circuit.cooldown = Duration::from_secs(5);
    if hedge {
        // One hedge 20 ms after the primary.
        p.hedge.enabled = true;
        p.hedge.max_hedges = 1;
        p.hedge.hedge_delay = Duration::from_millis(20);
    }
    p
}

/// One call of `peripheral.read()` under `policy`, through the breaker and
/// the budget; prints its records.
///
/// Every call of the program goes through this one function, as firmware
/// keeps one call site per operation of a peripheral: the call future, and
/// the call machine inside it, are compiled once (a second call site with
/// its own closure or slot count is a second copy of the machine in flash).
/// It has room for two attempts at once, so a policy that hedges can; the
/// policy decides whether a call does. A call that cannot hedge runs
/// exactly as with one slot (its first attempt in the machine's compact
/// stage), in a future a hundred bytes larger.
fn read(name: &str, policy: &Policy, breaker: &mut CircuitBreaker, peripheral: &Peripheral) {
    let key = PolicyKey::parse("sensor.Read");
    let mut log = Log::default();
    let result = board::block_on(
        call(key, policy, SysTickTimer, |_| peripheral.read())
            .slots::<2>()
            .gate(Guard::new(key, breaker))
            .observer(&mut log),
    );
    report(name, &log, &result);
}

#[entry]
fn main() -> ! {
    let Some(cp) = cortex_m::Peripherals::take() else {
        board::exit(false)
    };
    board::start_systick(cp.SYST);

    let (plain, hedged) = match (policy(false).normalize(), policy(true).normalize()) {
        (Ok(p), Ok(h)) => (p.policy, h.policy),
        (Err(e), _) | (_, Err(e)) => {
            hprintln!("bad policy: {}", e);
            board::exit(false)
        }
    };
    let mut breaker = CircuitBreaker::new(plain.circuit.clone());
    hprintln!(
        "clock: {}-bit tick count at {} Hz, {} ticks before it wraps",
        board::COUNTER_BITS,
        board::TICK_HZ,
        (1u32 << board::COUNTER_BITS) - board::COUNTER_START
    );

    read(
        "fails twice",
        &plain,
        &mut breaker,
        &Peripheral::new(Mode::FailThenAnswer(2)),
    );
    read(
        "hedged",
        &hedged,
        &mut breaker,
        &Peripheral::new(Mode::SlowFirst),
    );
    read("hangs", &plain, &mut breaker, &Peripheral::new(Mode::Hang));
    read(
        "broken",
        &plain,
        &mut breaker,
        &Peripheral::new(Mode::Broken),
    );
    let refused = Peripheral::new(Mode::FailThenAnswer(0));
    read("breaker open", &plain, &mut breaker, &refused);

    let now = SysTickTimer.now();
    let state = match breaker.state(now) {
        CircuitState::Closed => "closed",
        CircuitState::Open { .. } => "open",
        CircuitState::HalfOpen => "half-open",
    };
    hprintln!(
        "end: breaker {}, budget {} tokens left, refused peripheral called {} times, clock wrapped: {}",
        state,
        BUDGET.available(now),
        refused.transfers(),
        now >= Instant::from_millis(1 << board::COUNTER_BITS),
    );
    board::exit(true)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    hprintln!("panic: {}", info);
    board::exit(false)
}
