//! Progress callbacks shared by both sides (the CLI draws a bar; the Lambda functions ignore
//! them). The engine reports; it never draws.

use crate::plan::PlanStats;

/// Progress callbacks of an export, a download, a verification or an import.
pub trait Progress: Send + Sync {
    fn planned(&self, _stats: &PlanStats) {}
    /// The bytes a run will move, when known before it starts (downloads).
    fn total(&self, _bytes: u64) {}
    fn resumed(&self, _objects_done: u64, _bytes_done: u64) {}
    fn object(&self, _bytes: u64) {}
}

/// No progress output.
pub struct NoProgress;
impl Progress for NoProgress {}
