//! The audit lines each action's report makes: one per bundle exported, downloaded, verified or
//! imported, with its counts.

use super::{Event, Who};
use crate::export::{Report, Status};
use crate::import::download::DownloadReport;
use crate::import::verify::BundleReport;
use crate::import::{BundleStatus, ImportReport};

/// An `action` line about bundle `sequence` of `job`.
fn about(action: &str, who: &Who, job: &str, sequence: u64, digest: Option<&str>) -> Event {
    let mut e = Event::new(action, who);
    e.job = Some(job.to_string());
    e.sequence = Some(sequence);
    e.bundle_digest = digest.map(str::to_string);
    e
}

/// The line of an export run.
pub fn export(who: &Who, r: &Report) -> Event {
    let mut e = about(
        "export",
        who,
        &r.job,
        r.sequence,
        r.bundle_digest.as_deref(),
    );
    e.outcome = match r.status {
        Status::Complete => "ok",
        Status::NoChanges => "no_changes",
        Status::Continue => "continue",
    }
    .into();
    e.objects = r.objects;
    e.bytes = r.bytes;
    e.withheld = r.withheld;
    e.location = r.bundle.clone();
    e
}

/// A line per bundle an import run took up.
pub fn import(who: &Who, r: &ImportReport) -> Vec<Event> {
    r.bundles
        .iter()
        .map(|b| {
            let mut e = about("import", who, &b.job, b.sequence, Some(&b.bundle_digest));
            e.outcome = match b.status {
                BundleStatus::Applied => "ok",
                BundleStatus::AlreadyApplied => "already_applied",
                BundleStatus::DryRun => "dry_run",
                BundleStatus::Continue => "continue",
            }
            .into();
            e.objects = b.objects;
            e.bytes = b.bytes;
            e.quarantined = b.quarantined;
            e.location = Some(r.target.clone());
            if !b.approved_by.is_empty() {
                let by: Vec<String> = b
                    .approved_by
                    .iter()
                    .map(|a| crate::format::manifest::short(&a.key).to_string())
                    .collect();
                e.reason = Some(format!("approved by {}", by.join(", ")));
            }
            e
        })
        .collect()
}

/// A line per bundle verified.
pub fn verify(who: &Who, reports: &[BundleReport]) -> Vec<Event> {
    reports
        .iter()
        .map(|r| {
            let mut e = about("verify", who, &r.job, r.sequence, Some(&r.bundle_digest));
            e.objects = r.objects;
            e.bytes = r.bytes;
            e.refused = r.refused_objects.as_ref().map_or(0, |v| v.len() as u64);
            e.location = Some(r.location.clone());
            e
        })
        .collect()
}

/// A line per bundle downloaded.
pub fn download(who: &Who, r: &DownloadReport) -> Vec<Event> {
    r.bundles
        .iter()
        .map(|b| {
            let mut e = about("download", who, &r.job, b.sequence, Some(&b.bundle_digest));
            e.bytes = b.bytes;
            e.location = Some(b.dir.display().to_string());
            if r.approvals_only {
                e.reason = Some(format!("approvals only: {} file(s) written", b.approvals));
            }
            e
        })
        .collect()
}
