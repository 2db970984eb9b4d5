//! SysTick as recourse's clock, and the executor.
//!
//! # The timer
//!
//! SysTick interrupts at 1 kHz. Its handler advances a 24-bit tick count
//! ([`RAW`], standing for any narrow hardware counter; it starts 200 ticks
//! before it wraps, so the calls of the example run across a wrap) and
//! reads it into a [`TickCounter`], which extends it to the core's 64-bit
//! [`Instant`]. [`SysTickTimer::now`] reads it too. Both run in a critical
//! section, so the extension never sees two readings out of order.
//!
//! A sleep is a deadline in ticks, rounded up ([`TickCounter::ticks_at`])
//! so it never wakes early. Its future stores the deadline in [`ALARM`]
//! when it has to wait; the SysTick handler sets [`WAKE`] once the count
//! reaches it. A deadline already past is ready at the first poll; dropping
//! the sleep disarms its alarm.
//!
//! # The executor
//!
//! [`block_on`] runs one future to completion on the main stack: poll it;
//! if it is pending, sleep with `wfi` until the SysTick handler sets
//! [`WAKE`], then poll again. The check and the `wfi` run with interrupts
//! masked, so a wake-up between them is not lost (a pending interrupt ends
//! `wfi` even while masked; it runs when the mask is lifted). The futures
//! it runs — recourse's call, the peripheral's transfers — wait only on
//! this timer's sleeps, so the alarm is the only wake-up source it needs
//! and the task's [`Waker`](core::task::Waker) is a no-op.

use core::cell::{Cell, RefCell};
use core::future::{Future, IntoFuture};
use core::pin::{pin, Pin};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::task::{Context, Poll, Waker};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use critical_section::Mutex;
use recourse_core::counter::TickCounter;
use recourse_core::{Instant, Timer};

/// The core clock SysTick counts, as assumed for [`TICK_HZ`] (a 12 MHz
/// crystal without the PLL). qemu's LM3S6965 clocks SysTick differently
/// (`probe` measures it against the instruction count), which only scales
/// the virtual length of a tick: the program counts ticks.
pub const CPU_HZ: u32 = 12_000_000;
/// SysTick interrupts per second.
pub const TICK_HZ: u32 = 1_000;
/// Width of the tick count standing for a hardware counter.
pub const COUNTER_BITS: u32 = 24;
/// Where the tick count starts: 200 ticks (200 ms) before it wraps.
pub const COUNTER_START: u32 = (1 << COUNTER_BITS) - 200;

/// The raw tick count, `COUNTER_BITS` wide, advanced by the SysTick handler.
pub static RAW: AtomicU32 = AtomicU32::new(COUNTER_START);
/// Set by the SysTick handler when the alarm is due; cleared by `block_on`.
pub static WAKE: AtomicBool = AtomicBool::new(true);
/// The 24-bit count extended to 64 bits.
static CLOCK: Mutex<RefCell<TickCounter>> = Mutex::new(RefCell::new(counter()));
/// The deadline of the pending sleep, in extended ticks.
pub static ALARM: Mutex<Cell<Option<u64>>> = Mutex::new(Cell::new(None));

const fn counter() -> TickCounter {
    match TickCounter::new(COUNTER_BITS, TICK_HZ) {
        Ok(c) => c,
        // Checked when the static is built: never at run time.
        Err(_) => panic!("COUNTER_BITS or TICK_HZ out of range"),
    }
}

/// Starts SysTick at [`TICK_HZ`].
pub fn start_systick(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CPU_HZ / TICK_HZ - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

#[exception]
fn SysTick() {
    let mask = (1 << COUNTER_BITS) - 1;
    let raw = RAW.load(Ordering::Relaxed).wrapping_add(1) & mask;
    RAW.store(raw, Ordering::Relaxed);
    critical_section::with(|cs| {
        // Reading at every tick keeps the extension well within its
        // "at least twice per wrap period".
        let ticks = {
            let mut clock = CLOCK.borrow_ref_mut(cs);
            clock.observe(raw);
            clock.ticks()
        };
        let alarm = ALARM.borrow(cs);
        if alarm.get().is_some_and(|at| ticks >= at) {
            alarm.set(None);
            WAKE.store(true, Ordering::Release);
        }
    });
}

/// Core clock cycles since boot, from the extended tick count and
/// SysTick's current value (for measuring; exact to one SysTick cycle).
pub fn cycles() -> u64 {
    let per_tick = u64::from(CPU_HZ / TICK_HZ);
    loop {
        let before = SysTickTimer.now_ticks();
        // SysTick counts down from reload to 0.
        let into = per_tick - 1 - u64::from(SYST::get_current());
        if SysTickTimer.now_ticks() == before {
            return before * per_tick + into;
        }
    }
}

/// The SysTick clock: a zero-sized handle to the statics above.
#[derive(Copy, Clone, Debug, Default)]
pub struct SysTickTimer;

impl SysTickTimer {
    fn now_ticks(self) -> u64 {
        critical_section::with(|cs| {
            let mut clock = CLOCK.borrow_ref_mut(cs);
            clock.observe(RAW.load(Ordering::Relaxed));
            clock.ticks()
        })
    }
}

impl Timer for SysTickTimer {
    type Sleep = Sleep;

    fn now(&self) -> Instant {
        critical_section::with(|cs| {
            let mut clock = CLOCK.borrow_ref_mut(cs);
            clock.observe(RAW.load(Ordering::Relaxed))
        })
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let at = critical_section::with(|cs| CLOCK.borrow_ref(cs).ticks_at(deadline));
        Sleep { at }
    }
}

/// Completes once the tick count reaches `at`.
///
/// Several sleeps may wait at once (an attempt's own delay and the call's
/// timeout): each pending poll arms the alarm for the earliest deadline
/// armed. A dropped sleep leaves its alarm armed; if it fires, that is one
/// spurious poll, after which every sleep still pending arms again.
#[derive(Debug)]
#[must_use = "a sleep does nothing unless polled"]
pub struct Sleep {
    at: u64,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        let at = self.at;
        critical_section::with(|cs| {
            if SysTickTimer.now_ticks() >= at {
                return Poll::Ready(());
            }
            let alarm = ALARM.borrow(cs);
            alarm.set(Some(alarm.get().map_or(at, |a| a.min(at))));
            Poll::Pending
        })
    }
}

/// Runs `fut` to completion, sleeping with `wfi` while it waits (see the
/// module docs).
pub fn block_on<F: IntoFuture>(fut: F) -> F::Output {
    let mut fut = pin!(fut.into_future());
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        // Cleared before the poll: an alarm due during the poll is kept.
        WAKE.store(false, Ordering::Release);
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        loop {
            let woken = cortex_m::interrupt::free(|_| {
                if WAKE.load(Ordering::Acquire) {
                    true
                } else {
                    cortex_m::asm::wfi();
                    false
                }
            });
            if woken {
                break;
            }
        }
    }
}

/// Ends the qemu run with `code` (0: success) over semihosting.
pub fn exit(success: bool) -> ! {
    use cortex_m_semihosting::debug;
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}
