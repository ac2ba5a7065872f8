//! Cooperative stop: the CLI turns SIGINT/SIGTERM into a request that long work checks at its
//! safe points (an export between objects and listing pages, an import between entries, a
//! download between ranges). The work then ends the way a deadline ends it — volume closed and
//! checkpointed, uploads aborted and awaited, lease or lock given back — and the CLI exits
//! 130/143. Nothing here handles signals itself.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{Error, Result};

/// The signal that asked the run to stop: 0 none, 2 SIGINT, 15 SIGTERM.
static REQUESTED: AtomicU8 = AtomicU8::new(0);

/// A stop signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    /// Its name (`SIGINT`, `SIGTERM`).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The shell's exit status for a process ended by it: 128 + its number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

/// Ask the running work to stop at its next safe point.
pub fn request(signal: Signal) {
    let n = match signal {
        Signal::Interrupt => 2,
        Signal::Terminate => 15,
    };
    let _ = REQUESTED.compare_exchange(0, n, Ordering::SeqCst, Ordering::SeqCst);
}

/// The signal that asked the work to stop, if any.
pub fn requested() -> Option<Signal> {
    match REQUESTED.load(Ordering::SeqCst) {
        2 => Some(Signal::Interrupt),
        15 => Some(Signal::Terminate),
        _ => None,
    }
}

/// `Err(Error::Interrupted)` once a stop was asked for.
pub fn check() -> Result<()> {
    match requested() {
        Some(s) => Err(Error::Interrupted { signal: s.name() }),
        None => Ok(()),
    }
}

/// Resolves once a stop was asked for (checked every 100 ms): for work that waits on the network
/// and has no safe point to reach, so it can be dropped at once.
pub async fn stopped() -> Signal {
    loop {
        if let Some(s) = requested() {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
