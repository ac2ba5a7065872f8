//! A run's context: its [`Stop`] token, its [`Activity`] (when data last moved, reads resumed)
//! and the background tasks of the multipart uploads it started. One per run, passed in (a
//! `Store` carries the context of the run it serves), never
//! process-global: a warm Lambda container's invocations and in-process tests each have their own.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::activity::Activity;
use crate::interrupt::Stop;

/// What one run shares among its tasks and with nobody else. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    stop: Stop,
    activity: Arc<Activity>,
    uploads: TaskTracker,
}

impl RunContext {
    /// A context for a run (or for a process's runs: see [`RunContext::child`]).
    pub fn new() -> RunContext {
        RunContext::default()
    }

    /// A run inside this context: its own activity, a stop token that this context's stop also
    /// stops (a signal to the CLI) and that can be stopped alone (a lost lease), and the same
    /// uploads to settle before the process exits.
    pub fn child(&self) -> RunContext {
        RunContext {
            stop: self.stop.child(),
            activity: Arc::default(),
            uploads: self.uploads.clone(),
        }
    }

    /// The run's stop token.
    pub fn stop(&self) -> &Stop {
        &self.stop
    }

    /// What the run's requests did so far.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// The tasks of the multipart uploads started in this context.
    pub(crate) fn uploads(&self) -> &TaskTracker {
        &self.uploads
    }

    /// Wait (at most `limit`) until every multipart upload started in this context (and its
    /// children) has completed or been aborted: call before exiting, so that no upload is left
    /// open by a dropped writer. `false` if some were still running.
    pub async fn settle_uploads(&self, limit: Duration) -> bool {
        self.uploads.close();
        let settled = tokio::time::timeout(limit, self.uploads.wait())
            .await
            .is_ok();
        self.uploads.reopen();
        settled
    }
}
