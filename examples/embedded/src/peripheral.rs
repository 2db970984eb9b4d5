//! A simulated flaky peripheral (think of a sensor on a shared bus): each
//! transfer takes [`TRANSFER`] on the SysTick clock, and its mode says how
//! it answers.

use core::cell::Cell;
use core::time::Duration;

use recourse_core::Timer;

use crate::board::SysTickTimer;

/// How long one transfer takes.
pub const TRANSFER: Duration = Duration::from_millis(2);

/// How the peripheral answers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Fails this many transfers (bus NAK), then answers.
    FailThenAnswer(u32),
    /// Never answers: the transfer hangs until someone gives up on it.
    Hang,
    /// Fails every transfer.
    Broken,
    /// The first transfer hangs, later ones answer (a slow primary that a
    /// hedge overtakes).
    SlowFirst,
}

/// Why a transfer failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Nak;

impl core::fmt::Display for Nak {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("nak")
    }
}

/// The peripheral.
#[derive(Debug)]
pub struct Peripheral {
    mode: Mode,
    transfers: Cell<u32>,
}

impl Peripheral {
    /// A peripheral in `mode`.
    pub const fn new(mode: Mode) -> Self {
        Self {
            mode,
            transfers: Cell::new(0),
        }
    }

    /// Transfers started so far.
    pub fn transfers(&self) -> u32 {
        self.transfers.get()
    }

    /// Reads one value.
    pub async fn read(&self) -> Result<u16, Nak> {
        let n = self.transfers.get();
        self.transfers.set(n + 1);
        let hang = match self.mode {
            Mode::Hang => true,
            Mode::SlowFirst => n == 0,
            Mode::FailThenAnswer(_) | Mode::Broken => false,
        };
        if hang {
            core::future::pending::<()>().await;
        }
        let t = SysTickTimer;
        t.sleep_until(t.now() + TRANSFER).await;
        match self.mode {
            Mode::FailThenAnswer(k) if n < k => Err(Nak),
            Mode::Broken => Err(Nak),
            _ => Ok(0x2a0 + n as u16),
        }
    }
}
