//! One call site, for `size.sh`: the baseline's program with its read made
//! through recourse — retries, per-attempt timeouts, the token bucket
//! budget and the circuit breaker. Its flash and RAM minus the baseline's
//! is what one call site costs.
#![no_std]
#![no_main]

use core::panic::PanicInfo;
use core::time::Duration;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use recourse_core::{call, CircuitBreaker, Policy, PolicyKey};
use recourse_embedded_example::board::{self, SysTickTimer};
use recourse_embedded_example::guard::Guard;
use recourse_embedded_example::peripheral::{Mode, Peripheral};

/// The call site's policy, built at compile time and kept in flash, as
/// firmware keeps its configuration.
static POLICY: Policy = policy();

const fn policy() -> Policy {
    let mut policy = Policy::DEFAULT;
    policy.retry.timeout_per_attempt = Some(Duration::from_millis(50));
    policy.circuit.enabled = true;
    policy
}

#[entry]
fn main() -> ! {
    let Some(cp) = cortex_m::Peripherals::take() else {
        board::exit(false)
    };
    board::start_systick(cp.SYST);
    let mut breaker = CircuitBreaker::new(POLICY.circuit.clone());
    let key = PolicyKey::parse("sensor.Read");
    let p = Peripheral::new(Mode::FailThenAnswer(2));
    let out = board::block_on(
        call(key, &POLICY, SysTickTimer, |_| p.read()).gate(Guard::new(key, &mut breaker)),
    );
    match out {
        Ok(v) => hprintln!("baseline: ok {:#x}", v),
        Err(_) => hprintln!("baseline: nak"),
    }
    board::exit(true)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    hprintln!("panic: {}", info);
    board::exit(false)
}
