//! What a download reports (`ferry download --json`).

use std::path::PathBuf;

use serde::Serialize;

/// One volume's fate.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// `downloaded`, `resumed` (a partial file was continued) or `present` (already complete).
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct DownloadedBundle {
    pub sequence: u64,
    pub dir: PathBuf,
    pub bundle_digest: String,
    pub volumes: Vec<VolumeFile>,
    pub bytes: u64,
    /// Approval files written beside it (new or changed).
    pub approvals: u64,
}

/// `ferry download --json`.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
    pub job: String,
    pub bundles: Vec<DownloadedBundle>,
    /// Bytes fetched by this run (not counting what was already on disk).
    pub bytes_fetched: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    /// Bundles of the job still being exported (no `SHA256SUMS` yet), skipped.
    pub incomplete: Vec<u64>,
    /// Ranged GETs that broke mid-body and were resumed from where they broke.
    pub read_resumes: u64,
    /// `--approvals-only`: only approval files were fetched.
    pub approvals_only: bool,
}
