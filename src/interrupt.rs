//! Cooperative stop: a run's [`Stop`] token, stopped by a signal (the CLI turns SIGINT/SIGTERM
//! into a request) or by a lost lease (the export's heartbeat). Long work checks it at its safe
//! points (an export between objects and listing pages, an import between entries, a download
//! between ranges) and then ends the way a deadline ends it — volume closed and checkpointed,
//! uploads aborted and awaited, lease or lock given back — and the CLI exits 130/143. Nothing
//! here handles signals itself, and nothing is process-global: each run has its own token.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

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

/// Why a run was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Somebody asked: the run stops cleanly at its next safe point.
    Signal(Signal),
    /// The run's lease is gone: it must not write or delete anything more.
    LeaseLost,
}

/// A run's stop token. Clones share it; [`Stop::child`] makes a token that stops with this one
/// and can also be stopped alone (a run inside a process the CLI may signal). The first reason
/// given is the one kept.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    token: CancellationToken,
    /// This token's own reason.
    own: Arc<OnceLock<Why>>,
    /// Its parents' reasons, nearest first.
    inherited: Vec<Arc<OnceLock<Why>>>,
}

impl Stop {
    /// A token nobody has stopped.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// A token stopped when this one is, or on its own.
    pub fn child(&self) -> Stop {
        let mut inherited = vec![self.own.clone()];
        inherited.extend(self.inherited.iter().cloned());
        Stop {
            token: self.token.child_token(),
            own: Arc::default(),
            inherited,
        }
    }

    fn stop(&self, why: Why) {
        let _ = self.own.set(why);
        self.token.cancel();
    }

    /// Ask the run to stop at its next safe point.
    pub fn request(&self, signal: Signal) {
        self.stop(Why::Signal(signal));
    }

    /// The run lost its lease: every later mutation is refused.
    pub fn lease_lost(&self) {
        self.stop(Why::LeaseLost);
    }

    /// Why the run was stopped, if it was.
    pub fn why(&self) -> Option<Why> {
        if !self.token.is_cancelled() {
            return None;
        }
        std::iter::once(&self.own)
            .chain(&self.inherited)
            .find_map(|r| r.get().copied())
    }

    /// The signal that asked the run to stop, if one did.
    pub fn requested(&self) -> Option<Signal> {
        match self.why() {
            Some(Why::Signal(s)) => Some(s),
            _ => None,
        }
    }

    /// Has this run lost its lease?
    pub fn is_lease_lost(&self) -> bool {
        self.why() == Some(Why::LeaseLost)
    }

    /// `Err(Error::Interrupted)` once a signal asked the run to stop.
    pub fn check(&self) -> Result<()> {
        match self.requested() {
            Some(s) => Err(Error::Interrupted { signal: s.name() }),
            None => Ok(()),
        }
    }

    /// Resolves once the run is stopped: for work that waits on the network and has no safe
    /// point to reach, so it can be dropped at once.
    pub async fn stopped(&self) -> Why {
        self.token.cancelled().await;
        self.why().unwrap_or(Why::LeaseLost)
    }

    /// [`Stop::stopped`] as the error that ends the work: [`Error::Interrupted`].
    pub async fn interrupted(&self) -> Error {
        let signal = match self.stopped().await {
            Why::Signal(s) => s.name(),
            Why::LeaseLost => "a lost lease",
        };
        Error::Interrupted { signal }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_stops_with_its_parent_and_alone_without_it() {
        let (a, b) = (Stop::new(), Stop::new());
        let (a1, a2, b1) = (a.child(), a.child(), b.child());
        a1.lease_lost();
        assert_eq!(
            (a.why(), a1.why(), a2.why()),
            (None, Some(Why::LeaseLost), None)
        );
        a.request(Signal::Terminate);
        assert_eq!(a2.requested(), Some(Signal::Terminate));
        assert_eq!(a1.why(), Some(Why::LeaseLost), "the first reason is kept");
        assert_eq!(a2.stopped().await, Why::Signal(Signal::Terminate));
        assert!(a2.check().is_err());
        assert_eq!(
            (b.why(), b1.why()),
            (None, None),
            "another run is untouched"
        );
        assert!(b1.check().is_ok());
    }
}
