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

/// When the process last moved data (a listing page, a GET, an uploaded part), ms since the
/// epoch: what the export's heartbeat looks at before renewing its lease.
static LAST_MOVED_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Record that data moved just now.
pub fn tick() {
    LAST_MOVED_MS.store(crate::state::now_ms(), std::sync::atomic::Ordering::Relaxed);
}

/// How long since data last moved (since `tick` or, before any, since `since_ms`).
pub fn idle_for(since_ms: i64) -> std::time::Duration {
    let last = LAST_MOVED_MS
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(since_ms);
    std::time::Duration::from_millis((crate::state::now_ms() - last).max(0) as u64)
}
