//! What the binaries share: a SysTick timer that implements
//! [`recourse_core::Timer`], a `block_on` that sleeps with `wfi`, a
//! simulated flaky peripheral, and the calls' gate (breaker and budget).
//!
//! Everything here is safe code on `cortex-m`'s and `critical-section`'s
//! APIs (the measuring binary, `probe`, reads the painted stack with one
//! documented `unsafe` block).
#![no_std]

pub mod board;
pub mod guard;
pub mod peripheral;
