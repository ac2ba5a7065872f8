//! A run's activity: when its requests last moved data and how many reads it resumed, counted
//! per run (never per process), for the export's heartbeat and the runs' reports.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// What one run's requests did, counted per run (a warm Lambda container serves many runs,
/// and in-process tests run many at once): when data last moved (a listing page, a GET, an
/// uploaded part), which the export's heartbeat looks at before renewing its lease, and how
/// many reads were resumed mid-body. Each run gets its own (`Store::for_run` in the S3 adapter).
#[derive(Debug, Default)]
pub struct Activity {
    last_moved_ms: AtomicI64,
    read_resumes: AtomicU64,
    /// Requests sent, by operation (`s3:GetObject`, `dynamodb:acquire`, …).
    requests: Mutex<BTreeMap<String, u64>>,
}

impl Activity {
    /// Record that data moved just now.
    pub fn tick(&self) {
        self.last_moved_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
    }

    /// How long since data last moved (since `tick` or, before any, since `since_ms`).
    pub fn idle_for(&self, since_ms: i64) -> std::time::Duration {
        let last = self.last_moved_ms.load(Ordering::Relaxed).max(since_ms);
        std::time::Duration::from_millis((crate::clock::now_ms() - last).max(0) as u64)
    }

    /// A read was resumed from the byte it broke at.
    pub fn resumed(&self) {
        self.read_resumes.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` requests of `op` (`service:Operation`) were sent.
    pub fn request(&self, op: &str, n: u64) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry(op.to_string()).or_default() += n;
    }

    /// The requests sent so far in this run, by operation.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The requests of `op` (`service:Operation`) sent so far in this run.
    pub fn requests_of(&self, op: &str) -> u64 {
        let r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        r.get(op).copied().unwrap_or(0)
    }

    /// Reads resumed mid-body so far in this run.
    pub fn read_resumes(&self) -> u64 {
        self.read_resumes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_counts_its_own_activity() {
        let (a, b) = (Activity::default(), Activity::default());
        a.resumed();
        a.tick();
        assert_eq!((a.read_resumes(), b.read_resumes()), (1, 0));
        let long_ago = crate::clock::now_ms() - 60_000;
        assert!(a.idle_for(long_ago) < std::time::Duration::from_secs(5));
        assert!(b.idle_for(long_ago) >= std::time::Duration::from_secs(59));
    }
}
