//! The board support both binaries share: a SysTick timer that implements
//! [`recourse_core::Timer`], a `block_on` that sleeps with `wfi`, and a
//! simulated flaky peripheral.
//!
//! Everything here is safe code on `cortex-m`'s and `critical-section`'s
//! APIs; the only state is three `static`s shared with the SysTick handler.
#![no_std]

pub mod board;
pub mod peripheral;
