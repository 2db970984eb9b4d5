//! Measurements for `size.sh` (built with `--features paint-stack`): the
//! size of a call future with 1 and 2 slots, the peak stack of one call
//! (stack painting), and instructions per call (qemu `-icount`: virtual
//! time follows the instruction count, so SysTick cycles count
//! instructions once calibrated against a loop of known length).
//!
//! The one `unsafe` of the example lives here: reading and repainting the
//! stack below the stack pointer, which no safe API can do.
#![no_std]
#![no_main]

use core::future::IntoFuture;
use core::hint::black_box;
use core::panic::PanicInfo;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use recourse_core::budget::TokenBucket;
use recourse_core::{call, CircuitBreaker, Policy, PolicyKey};
use recourse_embedded_example::board::{self, SysTickTimer};
use recourse_embedded_example::guard::Guard;
use recourse_embedded_example::peripheral::{Mode, Nak, Peripheral};

const PAINT: u32 = 0xcccc_cccc;

extern "C" {
    static mut _stack_end: u32;
}

/// Paints the free stack below the current stack pointer (less a margin
/// for this function's own frame).
#[allow(unsafe_code)]
fn repaint() {
    cortex_m::interrupt::free(|_| {
        let bottom = core::ptr::addr_of_mut!(_stack_end);
        let sp = cortex_m::register::msp::read() as usize - 64;
        let mut p = bottom;
        while (p as usize) < sp {
            // SAFETY: between the end of static RAM and the stack pointer
            // (less a margin) nothing is live with interrupts masked.
            unsafe { p.write_volatile(PAINT) };
            p = p.wrapping_add(1);
        }
    });
}

/// The lowest stack address written since the last paint.
#[allow(unsafe_code)]
fn low_water() -> usize {
    let mut p = core::ptr::addr_of!(_stack_end).cast::<u32>();
    // SAFETY: reads static RAM between `_stack_end` and the stack pointer,
    // word by word; stops at the first word the program wrote.
    while unsafe { p.read_volatile() } == PAINT {
        p = p.wrapping_add(1);
    }
    p as usize
}

fn policy(hedge: bool) -> Policy {
    let mut p = Policy::DEFAULT;
    p.retry.timeout_per_attempt = Some(core::time::Duration::from_millis(50));
    p.circuit.enabled = true;
    if hedge {
        p.hedge.enabled = true;
        p.hedge.max_hedges = 1;
        p.hedge.hedge_delay = core::time::Duration::from_millis(20);
    }
    p
}

#[entry]
fn main() -> ! {
    let Some(cp) = cortex_m::Peripherals::take() else {
        board::exit(false)
    };
    board::start_systick(cp.SYST);
    let key = PolicyKey::parse("sensor.Read");
    let (plain, hedged) = (policy(false), policy(true));
    let mut breaker = CircuitBreaker::new(plain.circuit.clone());

    // Peak stack of one call that fails twice (retries, attempt timeouts,
    // budget, breaker; 1 slot), then of a hedged one (2 slots), each
    // measured from the stack pointer before the call.
    let flaky = Peripheral::new(Mode::FailThenAnswer(2));
    repaint();
    let sp = cortex_m::register::msp::read() as usize;
    let fut = call(key, &plain, SysTickTimer, |_| flaky.read())
        .gate(Guard::new(key, &mut breaker))
        .into_future();
    let size1 = core::mem::size_of_val(&fut);
    let r1 = board::block_on(fut);
    let stack1 = sp - low_water();

    let slow = Peripheral::new(Mode::SlowFirst);
    repaint();
    let sp = cortex_m::register::msp::read() as usize;
    let fut = call(key, &hedged, SysTickTimer, |_| slow.read())
        .slots::<2>()
        .gate(Guard::new(key, &mut breaker))
        .into_future();
    let size2 = core::mem::size_of_val(&fut);
    let r2 = board::block_on(fut);
    let stack2 = sp - low_water();

    // Instructions of a call whose first attempt succeeds at once (the
    // common path), gate included: N calls minus N empty iterations. The
    // calls draw on a budget of their own, with room for all of them: on
    // the example's (a burst of 10), all but the first few were refused,
    // and the loop measured a refusal (the machine's growth), not a
    // success. Each call's result is checked after the loop.
    const N: u32 = 200;
    static PROBE_BUDGET: TokenBucket = TokenBucket::new(2 * N, 1);
    let ready = |_| core::future::ready(Ok::<u16, Nak>(1));
    let mut succeeded = 0u32;
    let t0 = board::cycles();
    for _ in 0..N {
        let out = board::block_on(
            call(key, black_box(&plain), SysTickTimer, ready).gate(Guard::with_budget(
                key,
                &mut breaker,
                &PROBE_BUDGET,
            )),
        );
        succeeded += u32::from(black_box(out).is_ok());
    }
    let t1 = board::cycles();
    for _ in 0..N {
        black_box(board::block_on(core::future::ready(black_box(Ok::<
            u16,
            Nak,
        >(1)))))
        .ok();
    }
    let t2 = board::cycles();
    // Calibration: `asm::delay(2 * K)` runs K + 1 iterations of two
    // instructions (`subs`, `bne`).
    const K: u32 = 100_000;
    cortex_m::asm::delay(2 * K);
    let t3 = board::cycles();
    let per_insn = (t3 - t2) as f32 / (2 * (K + 1)) as f32;
    let call_cycles = ((t1 - t0) - (t2 - t1)) as f32 / N as f32;

    hprintln!("future_1_slot {}", size1);
    hprintln!("future_2_slots {}", size2);
    hprintln!("stack_1_slot {}", stack1);
    hprintln!("stack_2_slots {}", stack2);
    hprintln!("insns_per_call {:.0}", call_cycles / per_insn);
    // SysTick cycles per instruction: with -icount shift=4 (16 ns per
    // instruction) and a 12 MHz core clock, 0.192.
    hprintln!("cycles_per_insn {:.3}", per_insn);
    hprintln!("results {} {}", r1.is_ok(), r2.is_ok());
    // The measured calls are successes, every one (else the figure is not
    // the success path's).
    hprintln!("succeeded {} of {}", succeeded, N);
    board::exit(r1.is_ok() && r2.is_ok() && succeeded == N)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    hprintln!("panic: {}", info);
    board::exit(false)
}
