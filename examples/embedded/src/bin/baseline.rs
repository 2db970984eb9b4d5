//! The size baseline: the same runtime as the example (cortex-m-rt,
//! semihosting, the SysTick timer and `block_on`) reading the same
//! peripheral once, without recourse. `size.sh` subtracts its flash and
//! RAM from the example's.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use recourse_embedded_example::board;
use recourse_embedded_example::peripheral::{Mode, Peripheral};

#[entry]
fn main() -> ! {
    let Some(cp) = cortex_m::Peripherals::take() else {
        board::exit(false)
    };
    board::start_systick(cp.SYST);
    let p = Peripheral::new(Mode::FailThenAnswer(0));
    match board::block_on(p.read()) {
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
