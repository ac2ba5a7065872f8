//! The import run: for each bundle in chain order — check it follows the last one applied
//! (ledger) → stream every volume through the verifier into the target (objects become visible
//! only after their bytes matched) → apply moves (confirmed copies), deletions and, for a
//! baseline, the removal of keys it does not list → record the bundle as applied. Progress is
//! recorded per volume, so an interrupted import resumes without redoing finished volumes. An
//! object shipped in parts is written whole after the volume of its last part (`joined`).
mod apply;
mod dry_run;
mod joined;
mod restate;
use apply::*;
use dry_run::*;
use joined::*;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tracing::{info, warn};

use crate::clock::{now_ms, rfc3339_ms};
use crate::error::{Error, Result};
use crate::format::manifest::short;
use crate::format::sign::TrustedKey;
use crate::import::bundle::Bundle;
use crate::import::ledger::{IndexEntry, Ledger, Pending, Record};
use crate::import::target::{Shared, Target, TargetSink, relative};
use crate::import::verify::check_volume;
use crate::progress::Progress;

/// Deletions applied per step of an import's tail: one DeleteObjects request, then the
/// progress is saved and the deadline checked.
const DELETE_BATCH: usize = 1_000;
/// Moves applied per step of an import's tail.
const MOVE_BATCH: usize = 1_000;

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    pub target: Arc<dyn Target>,
    /// Print what would change; change nothing.
    pub dry_run: bool,
    /// Apply bundles that do not follow the last one applied.
    pub force: bool,
    /// Objects written at once.
    pub concurrency: usize,
    /// Stop cleanly between volumes after this instant (the Lambda's deadline).
    pub deadline: Option<Instant>,
    /// Public keys whose signatures are accepted (`--trust`); the key that signed the last
    /// bundle applied (kept in the import state) is trusted as well.
    pub trust: Vec<TrustedKey>,
    /// A baseline removes everything under the target it does not list, not only what ferry
    /// wrote (`--delete-unlisted`, `DELETE_UNLISTED`: exact mirror semantics).
    pub delete_unlisted: bool,
    /// The run's context (stop token, activity counters): that of the store its `s3://`
    /// volumes are read with.
    pub run: crate::context::RunContext,
    /// Import objects carrying an Object Lock without it (`--object-lock skip`,
    /// `OBJECT_LOCK=skip`); otherwise a target without Object Lock refuses them.
    pub skip_object_lock: bool,
    /// The far side's own screening: its policy, scanner and quarantine (`--policy`,
    /// `--scan`, `--quarantine`); `None`: everything verified is written.
    pub screen: Option<Arc<crate::import::screen::Screen>>,
    /// The approvals required (`--require-approvals`, `--approver`; `REQUIRED_APPROVALS`,
    /// `APPROVERS`), `None` when not given: the import state's remembered one still applies.
    pub approvals: Option<crate::approval::Requirement>,
    /// Why `--force` was given (`--reason`): with a requirement given, `--force` and a reason
    /// replace the remembered one, even by a lower one (logged).
    pub force_reason: Option<String>,
}

impl ImportConfig {
    /// Has the deadline (if any) come?
    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// What happened to a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleStatus {
    Applied,
    /// It was the last bundle applied: nothing changed.
    AlreadyApplied,
    /// `--dry-run`: nothing changed.
    DryRun,
    /// The deadline came between volumes: run again to finish it.
    Continue,
}

/// A planned or applied change, for `--dry-run` listings.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub op: &'static str,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub bytes: u64,
}

/// One bundle's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct BundleOutcome {
    pub job: String,
    pub sequence: u64,
    pub baseline: bool,
    pub status: BundleStatus,
    pub bundle_digest: String,
    pub location: String,
    /// Objects written (or that would be).
    pub objects: u64,
    pub bytes: u64,
    pub new: u64,
    pub overwritten: u64,
    pub deleted: u64,
    pub moved: u64,
    /// Metadata-only entries applied: objects given new headers, metadata, tags or Object
    /// Lock without their bytes.
    pub metadata_only: u64,
    /// Objects the screening kept out of the target (`--policy`, `--scan`), and why; with
    /// `--quarantine`, where they are.
    pub quarantined: u64,
    pub quarantined_objects: Vec<crate::import::screen::Quarantined>,
    /// The valid approvals by listed approvers it carried (when approvals are required).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<crate::approval::Approved>,
    /// Keys a baseline removed because it does not list them (ferry wrote them, or
    /// `--delete-unlisted`).
    pub removed: u64,
    /// Keys (a directory: paths) a baseline found under the target, does not list, and left
    /// because ferry did not write them; `--delete-unlisted` removes them.
    pub kept_unlisted: u64,
    /// The first of those (at most [`KEPT_LISTED`]).
    pub kept_unlisted_keys: Vec<String>,
    /// Objects imported without their Object Lock (`--object-lock skip`).
    pub unlocked: u64,
    pub volumes: u32,
    /// Volumes already done by an earlier, interrupted run.
    pub volumes_resumed: u32,
    pub duration_ms: u64,
    /// `--dry-run` only: every change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
}

/// The run's summary (`ferry import --json`).
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub target: String,
    pub state: String,
    pub dry_run: bool,
    /// Last bundle applied to the target after this run.
    pub sequence: u64,
    pub bundle_digest: Option<String>,
    /// True when every bundle given is applied (or already was).
    pub complete: bool,
    pub bundles: Vec<BundleOutcome>,
    /// Reads of `s3://` volumes that broke mid-body and were resumed from where they broke.
    pub read_resumes: u64,
    /// Keys the baselines of this run left under the target (not listed, not written by
    /// ferry), and the first of them: `--delete-unlisted` removes them.
    pub kept_unlisted: u64,
    pub kept_unlisted_keys: Vec<String>,
    /// The approvals every bundle needed: `required` of the `approvers` (fingerprints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals_required: Option<RequiredApprovals>,
}

/// An approval requirement as reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct RequiredApprovals {
    pub required: u32,
    pub approvers: Vec<String>,
}

/// The requirement that applies: the one given, with the import state's (`remembered`) over it
/// (the larger number, every key of both) unless `--force` and a reason replace it, even by a
/// lower one; `None` when none applies.
fn requirement(
    cfg: &ImportConfig,
    remembered: Option<&crate::import::ledger::ApprovalRecord>,
) -> Result<Option<crate::approval::Requirement>> {
    let remembered = remembered.map(|r| r.requirement()).transpose()?;
    let chosen = match (cfg.approvals.clone(), remembered) {
        (None, r) => r,
        (Some(g), None) => Some(g),
        (Some(g), Some(r)) if cfg.force && cfg.force_reason.is_some() => {
            if g != r {
                warn!(
                    remembered = %crate::approval::describe(&r), given = %crate::approval::describe(&g),
                    reason = cfg.force_reason.as_deref().unwrap_or(""),
                    "the approval requirement is replaced (--force)"
                );
            }
            Some(g)
        }
        (Some(g), Some(r)) => {
            let mut keys = r.approvers.clone();
            keys.extend(
                g.approvers
                    .iter()
                    .filter(|k| !r.approvers.contains(k))
                    .cloned(),
            );
            Some(crate::approval::Requirement::new(
                g.required.max(r.required),
                keys,
            )?)
        }
    };
    Ok(chosen.filter(|r| !r.is_none()))
}

/// Refuse the run (exit 5) before anything is written unless every bundle it would apply
/// meets `req`; the approvals that count, by sequence.
async fn approvals_check(
    req: &crate::approval::Requirement,
    bundles: &[Bundle],
    rec: &Record,
) -> Result<HashMap<u64, Vec<crate::approval::Approved>>> {
    let mut out = HashMap::new();
    for b in bundles {
        let digest = bundle_digest(b).await?;
        let applied = (rec.sequence == b.sequence && rec.bundle_digest.as_deref() == Some(&digest))
            || rec
                .history
                .iter()
                .any(|(s, d)| *s == b.sequence && *d == digest);
        if !applied {
            out.insert(b.sequence, b.check_approvals(&digest, req)?.approved);
        }
    }
    Ok(out)
}

/// The bundle's digest: from `SHA256SUMS`, or by hashing its last volume.
pub async fn bundle_digest(b: &Bundle) -> Result<String> {
    if let Some(d) = b.digest(None) {
        return Ok(d);
    }
    let last = b.volumes.last().expect("a bundle has volumes");
    let sha = crate::import::verify::volume_sha256(&last.source.media).await?;
    Ok(b.digest(Some(&sha)).expect("digest from the last volume"))
}

/// Does `b` extend a target that holds bundle `sequence` with `digest` (0 and `None`: nothing
/// yet)? An incremental bundle must name that bundle as its previous one; a baseline is a full
/// snapshot and applies after any earlier bundle of its job (it removes what it does not list).
pub fn extends(b: &Bundle, sequence: u64, digest: Option<&str>) -> bool {
    let empty = sequence == 0 && digest.is_none();
    let follows = match &b.previous {
        Some(p) => sequence == p.sequence && digest == Some(p.bundle_digest.as_str()),
        None => empty,
    };
    follows || (b.baseline && (empty || b.sequence > sequence))
}

/// Decide whether `b` may be applied on top of `rec`.
fn chain_check(
    b: &Bundle,
    digest: &str,
    rec: &Record,
    target: &str,
    force: bool,
) -> Result<Option<BundleStatus>> {
    if let Some(job) = &rec.job
        && job != &b.job
        && !force
    {
        return Err(Error::config(
            "import state",
            format!(
                "{target} receives job `{job}`; bundle {} is of job `{}`: use another state file/table item for it (or --force)",
                b.sequence, b.job
            ),
        ));
    }
    if (rec.sequence == b.sequence && rec.bundle_digest.as_deref() == Some(digest))
        || rec
            .history
            .iter()
            .any(|(s, d)| *s == b.sequence && d == digest)
    {
        return Ok(Some(BundleStatus::AlreadyApplied));
    }
    let empty = rec.sequence == 0 && rec.bundle_digest.is_none();
    if extends(b, rec.sequence, rec.bundle_digest.as_deref()) {
        return Ok(None);
    }
    let applied = if empty {
        "none (the target has no bundle yet)".to_string()
    } else {
        format!(
            "{} (digest {})",
            rec.sequence,
            short(rec.bundle_digest.as_deref().unwrap_or("-"))
        )
    };
    let detail = match &b.previous {
        _ if b.sequence <= rec.sequence && !empty => format!(
            "(digest {}) is not newer than what the target holds",
            short(digest)
        ),
        Some(p) => format!(
            "follows bundle {} (digest {})",
            p.sequence,
            short(&p.bundle_digest)
        ),
        None => "is the baseline of a new chain".to_string(),
    };
    if force {
        warn!(job = %b.job, sequence = b.sequence, %detail, %applied, "applying out of order (--force)");
        return Ok(None);
    }
    Err(Error::OutOfOrder {
        job: b.job.clone(),
        sequence: b.sequence,
        detail,
        target: target.to_string(),
        applied,
    })
}

/// Import `bundles` (in the order given: discover sorts them) into the target.
pub async fn run(
    ledger: &mut dyn Ledger,
    cfg: &ImportConfig,
    bundles: &[Bundle],
    progress: &dyn Progress,
) -> Result<ImportReport> {
    let target_name = cfg.target.display();
    let mut rec = ledger.record().clone();
    let mut outcomes = Vec::new();
    let mut complete = true;
    // `--dry-run` over several bundles: keys earlier ones would have written (true) or removed.
    let mut simulated: HashMap<String, bool> = HashMap::new();
    // Keys given with --trust, and the one that signed the last bundle applied here.
    let mut trusted = cfg.trust.clone();
    if let Some(k) = rec.signer.as_ref().map(|s| s.key()).transpose()?
        && !trusted.contains(&k)
    {
        trusted.push(k);
    }
    let mut warned = false;
    let required = requirement(cfg, rec.approvals.as_ref())?;
    let remember = required
        .as_ref()
        .map(crate::import::ledger::ApprovalRecord::of);
    if rec.approvals != remember && !cfg.dry_run {
        // Remembered from now on (also when this run's bundles fall short), before anything
        // is written.
        rec.approvals = remember;
        ledger.save(rec.clone(), Vec::new()).await?;
    }
    let mut approved = match &required {
        Some(req) => approvals_check(req, bundles, &rec).await?,
        None => HashMap::new(),
    };
    object_lock_check(cfg, bundles).await?;
    // The state is ours (lock or lease held): uploads still open under the destination prefix
    // were left by an import that was killed, so they are aborted before anything is written.
    sweep_uploads(cfg, bundles).await?;
    for b in bundles {
        let started = Instant::now();
        let digest = bundle_digest(b).await?;
        let mut out = BundleOutcome {
            job: b.job.clone(),
            sequence: b.sequence,
            baseline: b.baseline,
            status: BundleStatus::Applied,
            bundle_digest: digest.clone(),
            location: b.location.clone(),
            objects: 0,
            bytes: 0,
            new: 0,
            overwritten: 0,
            deleted: 0,
            moved: 0,
            metadata_only: 0,
            quarantined: 0,
            quarantined_objects: Vec::new(),
            approved_by: approved.remove(&b.sequence).unwrap_or_default(),
            removed: 0,
            kept_unlisted: 0,
            kept_unlisted_keys: Vec::new(),
            unlocked: 0,
            volumes: b.volumes.len() as u32,
            volumes_resumed: 0,
            duration_ms: 0,
            changes: Vec::new(),
        };
        if let Some(status) = chain_check(b, &digest, &rec, &target_name, cfg.force)? {
            info!(job = %b.job, sequence = b.sequence, "bundle already applied: nothing to do");
            out.status = status;
            outcomes.push(out);
            continue;
        }
        // Trust is settled before anything of the bundle is used: its signature, then every
        // volume's SHA-256 against the signed SHA256SUMS (volumes a resumed import finished
        // too, since their manifests' deletions, moves and baseline flag still apply).
        let signer = b.signed_by(&trusted)?.cloned();
        if signer.is_some() {
            check_signed_volumes(b).await?;
        } else if !warned {
            warned = true;
            warn!(
                target = %target_name,
                "bundles are applied without a signature check: export with --signing-key and import with --trust KEY.pem (once a signed bundle is applied, the target accepts only signed ones)"
            );
        }
        if cfg.dry_run {
            dry_run(ledger, cfg, b, &mut out, &mut simulated).await?;
            out.status = BundleStatus::DryRun;
            rec.job = Some(b.job.clone());
            rec.sequence = b.sequence;
            rec.history.push((b.sequence, digest.clone()));
            rec.bundle_digest = Some(digest);
            outcomes.push(out);
            continue;
        }
        let status = apply(
            ledger,
            cfg,
            b,
            &digest,
            signer.as_ref(),
            &mut rec,
            &mut out,
            progress,
        )
        .await?;
        out.status = status;
        out.duration_ms = started.elapsed().as_millis() as u64;
        info!(
            job = %b.job, sequence = b.sequence, status = ?status, objects = out.objects,
            bytes = out.bytes, deleted = out.deleted, moved = out.moved, removed = out.removed,
            duration_ms = out.duration_ms, "bundle imported"
        );
        outcomes.push(out);
        if status == BundleStatus::Continue {
            complete = false;
            break;
        }
    }
    // Every upload of this import is finished: one still open is an upload whose creation was
    // applied but whose answer was lost (the SDK's retry opened another).
    sweep_uploads(cfg, bundles).await?;
    let kept_unlisted = outcomes.iter().map(|o| o.kept_unlisted).sum();
    let kept_unlisted_keys = outcomes
        .iter()
        .flat_map(|o| o.kept_unlisted_keys.iter().cloned())
        .take(KEPT_LISTED)
        .collect();
    Ok(ImportReport {
        kept_unlisted,
        kept_unlisted_keys,
        read_resumes: cfg.run.activity().read_resumes(),
        target: target_name,
        state: ledger.location(),
        dry_run: cfg.dry_run,
        sequence: ledger.record().sequence,
        bundle_digest: ledger.record().bundle_digest.clone(),
        complete,
        bundles: outcomes,
        approvals_required: required.map(|r| RequiredApprovals {
            required: r.required,
            approvers: r.approvers.iter().map(|k| k.fingerprint.clone()).collect(),
        }),
    })
}

/// Locked objects for a target without Object Lock are refused before anything is written
/// (unless they are to be imported unlocked).
async fn object_lock_check(cfg: &ImportConfig, bundles: &[Bundle]) -> Result<()> {
    if cfg.skip_object_lock || cfg.dry_run {
        return Ok(());
    }
    let Some(b) = bundles.iter().find(|b| b.locked() > 0) else {
        return Ok(());
    };
    if cfg.target.takes_object_lock().await? {
        return Ok(());
    }
    Err(Error::NoObjectLock {
        target: cfg.target.display(),
        sequence: b.sequence,
        objects: b.locked(),
    })
}

/// Abort the multipart uploads open under an S3 target's prefix (the import holds its state's
/// lock or lease, so any there are its own or a killed import's).
async fn sweep_uploads(cfg: &ImportConfig, bundles: &[Bundle]) -> Result<()> {
    if !cfg.dry_run && !bundles.is_empty() {
        let n = cfg.target.sweep_uploads().await?;
        if n > 0 {
            warn!(target = %cfg.target.display(), uploads = n, "aborted multipart uploads left open (by an interrupted import, or a creation whose answer was lost)");
        }
    }
    Ok(())
}
