//! The import run: for each bundle in chain order — check it follows the last one applied
//! (ledger) → stream every volume through the verifier into the target (objects become visible
//! only after their bytes matched) → apply moves (confirmed copies), deletions and, for a
//! baseline, the removal of keys it does not list → record the bundle as applied. Progress is
//! recorded per volume, so an interrupted import resumes without redoing finished volumes.

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

/// Deletions applied per step of an import's tail (one DeleteObjects request per 1,000).
const DELETE_BATCH: usize = 4_000;
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
    /// The run's activity counters: those of the store its `s3://` volumes are read with.
    pub activity: Arc<crate::activity::Activity>,
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
    /// Keys a baseline removed because it does not list them (ferry wrote them, or
    /// `--delete-unlisted`).
    pub removed: u64,
    /// Keys (a directory: paths) a baseline found under the target, does not list, and left
    /// because ferry did not write them; `--delete-unlisted` removes them.
    pub kept_unlisted: u64,
    /// The first of those (at most [`KEPT_LISTED`]).
    pub kept_unlisted_keys: Vec<String>,
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
            removed: 0,
            kept_unlisted: 0,
            kept_unlisted_keys: Vec::new(),
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
        read_resumes: cfg.activity.read_resumes(),
        target: target_name,
        state: ledger.location(),
        dry_run: cfg.dry_run,
        sequence: ledger.record().sequence,
        bundle_digest: ledger.record().bundle_digest.clone(),
        complete,
        bundles: outcomes,
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

async fn dry_run(
    ledger: &dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
    out: &mut BundleOutcome,
    simulated: &mut HashMap<String, bool>,
) -> Result<()> {
    for v in &b.volumes {
        let contents = v.contents().await?;
        dry_run_volume(ledger, &contents, out, simulated).await?;
    }
    dry_run_tail(ledger, cfg, b, out, simulated).await
}

/// What a dry run reports of one volume's objects.
async fn dry_run_volume(
    ledger: &dyn Ledger,
    contents: &crate::import::bundle::Contents,
    out: &mut BundleOutcome,
    simulated: &mut HashMap<String, bool>,
) -> Result<()> {
    let keys: Vec<String> = contents.objects.iter().map(|o| o.key.clone()).collect();
    let known = ledger.lookup(&keys).await?;
    for o in &contents.objects {
        let overwrite = simulated
            .get(&o.key)
            .copied()
            .unwrap_or_else(|| known.contains_key(&o.key));
        simulated.insert(o.key.clone(), true);
        out.objects += 1;
        out.bytes += o.size;
        if overwrite {
            out.overwritten += 1;
        } else {
            out.new += 1;
        }
        out.changes.push(Change {
            op: if overwrite { "overwrite" } else { "put" },
            key: o.key.clone(),
            to: None,
            bytes: o.size,
        });
    }
    Ok(())
}

/// What a dry run reports of a bundle's moves, deletions and (baseline) removals.
async fn dry_run_tail(
    ledger: &dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
    out: &mut BundleOutcome,
    simulated: &mut HashMap<String, bool>,
) -> Result<()> {
    for m in &b.last.moved {
        out.moved += 1;
        simulated.insert(m.from.clone(), false);
        simulated.insert(m.to.clone(), true);
        out.changes.push(Change {
            op: "move",
            key: m.from.clone(),
            to: Some(m.to.clone()),
            bytes: m.size,
        });
    }
    for k in b.last.deleted.iter().chain(&b.last.vanished) {
        out.deleted += 1;
        simulated.insert(k.clone(), false);
        out.changes.push(Change {
            op: "delete",
            key: k.clone(),
            to: None,
            bytes: 0,
        });
    }
    if b.baseline {
        let removals = baseline_removals(ledger, cfg, b).await?;
        for (stray, _) in removals.remove {
            out.removed += 1;
            out.changes.push(Change {
                op: "remove",
                key: stray,
                to: None,
                bytes: 0,
            });
        }
        out.kept_unlisted = removals.kept;
        out.kept_unlisted_keys = removals.kept_first;
    }
    Ok(())
}

/// How many of the keys a baseline kept because ferry did not write them are listed by name.
pub const KEPT_LISTED: usize = 20;

/// What a baseline removes, and what it leaves.
#[derive(Default)]
struct Removals {
    /// The stray (a relative key, or a directory's path) and, when ferry wrote it, its key.
    remove: Vec<(String, Option<String>)>,
    /// Found under the target, not listed by the bundle, not written by ferry: left.
    kept: u64,
    /// The first [`KEPT_LISTED`] of those.
    kept_first: Vec<String>,
}

/// The strays of a baseline (what the target holds and the bundle does not list), split into
/// those the import state records as written by ferry (removed) and the rest (left, counted
/// and listed), unless `--delete-unlisted` asks for exact mirror semantics.
async fn baseline_removals(
    ledger: &dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
) -> Result<Removals> {
    let strays = baseline_strays(cfg, b).await?;
    // Once for all strays (a directory reads its escaped map once).
    let rels = cfg.target.stray_keys(&strays).await?;
    let mut out = Removals::default();
    for (chunk, rels) in strays.chunks(1_000).zip(rels.chunks(1_000)) {
        let keyed: Vec<(&String, Option<String>)> = chunk
            .iter()
            .zip(rels)
            .map(|(stray, rel)| {
                let key = rel.as_ref().map(|rel| format!("{}{rel}", b.source_prefix));
                (stray, key)
            })
            .collect();
        let keys: Vec<String> = keyed.iter().filter_map(|(_, k)| k.clone()).collect();
        let known = ledger.lookup(&keys).await?;
        for (stray, key) in keyed {
            let ours = key
                .as_ref()
                .and_then(|k| known.get(k))
                .filter(|e| cfg.target.is_place(stray, e))
                .and(key);
            if ours.is_some() || cfg.delete_unlisted {
                out.remove.push((stray.clone(), ours));
            } else {
                out.kept += 1;
                if out.kept_first.len() < KEPT_LISTED {
                    out.kept_first.push(stray.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Every volume's SHA-256 against the signed `SHA256SUMS` (the signature covers the volumes
/// whole, not their entries one by one).
async fn check_signed_volumes(b: &Bundle) -> Result<()> {
    for v in &b.volumes {
        let index = v.manifest.volume;
        let sha = crate::import::verify::volume_sha256(&v.source.media).await?;
        if b.expected(index).1.as_deref() != Some(sha.as_str()) {
            return Err(Error::Untrusted {
                what: b.label(),
                location: v.source.display(),
                detail: format!(
                    "volume {index} has SHA-256 {}, not the one the signed SHA256SUMS lists",
                    short(&sha)
                ),
            });
        }
    }
    Ok(())
}

/// Destination keys (or paths) a baseline does not list. What it lists is held as 128-bit
/// digests (16 bytes a key, read one volume at a time), not as strings.
async fn baseline_strays(cfg: &ImportConfig, b: &Bundle) -> Result<Vec<String>> {
    let mut keep = crate::import::target::KeepSet::default();
    let mut add = |keys: &mut dyn Iterator<Item = &String>| {
        for k in keys {
            let rel = relative(k, &b.source_prefix);
            keep.insert(&cfg.target.keep_name(rel));
        }
    };
    for v in &b.volumes {
        let contents = v.contents().await?;
        add(&mut contents.objects.iter().map(|o| &o.key));
    }
    add(&mut b.last.skipped.iter().map(|s| &s.key));
    keep.finish();
    cfg.target.strays(&keep).await
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    ledger: &mut dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
    digest: &str,
    signer: Option<&TrustedKey>,
    rec: &mut Record,
    out: &mut BundleOutcome,
    progress: &dyn Progress,
) -> Result<BundleStatus> {
    let mut pending = match &rec.pending {
        Some(p) if p.sequence == b.sequence && p.bundle_digest == digest => {
            info!(job = %b.job, sequence = b.sequence, done = ?p.volumes_done, "resuming an interrupted import");
            p.clone()
        }
        _ => Pending {
            sequence: b.sequence,
            bundle_digest: digest.to_string(),
            volumes_done: Vec::new(),
            moves_done: 0,
            deletions_done: 0,
        },
    };
    rec.job = Some(b.job.clone());
    rec.target = Some(cfg.target.display());
    let mut progressed = false;
    for v in &b.volumes {
        let index = v.manifest.volume;
        if pending.volumes_done.contains(&index) {
            out.volumes_resumed += 1;
            progress.object(v.bytes);
            continue;
        }
        if progressed && cfg.past_deadline() {
            info!(job = %b.job, sequence = b.sequence, volume = index, "deadline: stopping between volumes");
            return Ok(BundleStatus::Continue);
        }
        let contents = v.contents().await?;
        let keys: Vec<String> = contents.objects.iter().map(|o| o.key.clone()).collect();
        let known = ledger.lookup(&keys).await?;
        let shared = Shared::new(cfg.concurrency);
        let mut sink = TargetSink {
            target: cfg.target.clone(),
            source_prefix: b.source_prefix.clone(),
            shared: shared.clone(),
        };
        let checked = check_volume(b, v, &contents, &mut sink, progress).await;
        let landed = shared.drain().await;
        let report = checked?;
        let landed = landed?;
        for o in &contents.objects {
            if known.contains_key(&o.key) {
                out.overwritten += 1;
            } else {
                out.new += 1;
            }
        }
        out.objects += report.objects;
        out.bytes += report.bytes;
        pending.volumes_done.push(index);
        rec.pending = Some(pending.clone());
        cfg.target.make_durable().await?;
        ledger
            .save(
                rec.clone(),
                landed.into_iter().map(|(k, e)| (k, Some(e))).collect(),
            )
            .await?;
        info!(volume = %report.location, objects = report.objects, bytes = report.bytes, "volume imported");
        progressed = true;
    }

    // Moves, MOVE_BATCH at a time: each is confirmed against the key index (the original still
    // holds the content this import wrote there, or the copy is recorded and in place: a HEAD
    // on S3, never a re-read), copied (several at once), the copies recorded, then the
    // originals removed and that recorded. Between batches the deadline may stop the tail; a
    // resumed call starts after the moves already applied.
    let moves = &b.last.moved;
    let done = (pending.moves_done as usize).min(moves.len());
    out.moved += done as u64;
    for (i, batch) in moves[done..].chunks(MOVE_BATCH).enumerate() {
        if (i > 0 || progressed) && cfg.past_deadline() {
            info!(job = %b.job, sequence = b.sequence, moved = out.moved, "deadline: stopping between moves");
            return Ok(BundleStatus::Continue);
        }
        out.moved += batch.len() as u64;
        pending.moves_done = out.moved;
        rec.pending = Some(pending.clone());
        // (saves `rec`, with this batch counted, once the batch is applied)
        apply_moves(ledger, cfg, b, batch, rec).await?;
        progressed = true;
    }
    let mut changes: Vec<(String, Option<IndexEntry>)> = Vec::new();
    // Deletions (and objects that vanished before the export read them).
    let gone: Vec<String> = b
        .last
        .deleted
        .iter()
        .chain(&b.last.vanished)
        .cloned()
        .collect();
    // In batches (DeleteObjects of 1,000 keys; a directory 16 files at a time); between batches
    // the deadline may stop the tail: what was removed is saved, and the next call goes on.
    // Each call applies at least one batch (or a volume) before the deadline may stop it, and
    // a resumed call starts after the deletions already applied.
    let done = (pending.deletions_done as usize).min(gone.len());
    out.deleted += done as u64;
    for (i, batch) in gone[done..].chunks(DELETE_BATCH).enumerate() {
        if (i > 0 || progressed) && cfg.past_deadline() {
            info!(job = %b.job, sequence = b.sequence, deleted = out.deleted, "deadline: stopping between deletions");
            pending.deletions_done = out.deleted;
            return stop_tail(ledger, cfg, rec, &pending, changes).await;
        }
        let known = ledger.lookup(batch).await?;
        let items: Vec<(&str, Option<&IndexEntry>)> = batch
            .iter()
            .map(|k| (relative(k, &b.source_prefix), known.get(k)))
            .collect();
        cfg.target.delete_many(&items).await?;
        changes.extend(batch.iter().map(|k| (k.clone(), None)));
        out.deleted += batch.len() as u64;
        progressed = true;
    }
    if b.baseline {
        let removals = baseline_removals(ledger, cfg, b).await?;
        // In batches, like the deletions; the deadline may stop between them (what was removed
        // is saved; the next call lists the strays left and goes on).
        for (i, batch) in removals.remove.chunks(DELETE_BATCH).enumerate() {
            if (i > 0 || progressed) && cfg.past_deadline() {
                info!(job = %b.job, sequence = b.sequence, removed = out.removed, "deadline: stopping between removals");
                pending.deletions_done = gone.len() as u64;
                return stop_tail(ledger, cfg, rec, &pending, changes).await;
            }
            let strays: Vec<String> = batch.iter().map(|(s, _)| s.clone()).collect();
            info!(target = %cfg.target.display(), count = strays.len(), first = %strays[0],
                  "the baseline does not list them: removing");
            cfg.target.remove_strays(&strays).await?;
            // A baseline over earlier bundles removes keys they wrote: out of the index too.
            changes.extend(
                batch
                    .iter()
                    .filter_map(|(_, k)| k.clone().map(|k| (k, None))),
            );
            out.removed += batch.len() as u64;
        }
        if removals.kept > 0 {
            warn!(target = %cfg.target.display(), kept = removals.kept, first = ?removals.kept_first,
                  "the baseline does not list these and ferry did not write them: left in place");
        }
        out.kept_unlisted = removals.kept;
        out.kept_unlisted_keys = removals.kept_first;
    }
    if let Some(k) = signer {
        // From now on this target accepts only bundles signed by a trusted key.
        rec.signer = Some(crate::import::ledger::SignerRecord::of(k));
    }
    rec.sequence = b.sequence;
    rec.bundle_digest = Some(digest.to_string());
    rec.applied_at = Some(rfc3339_ms(now_ms()));
    rec.pending = None;
    if b.baseline && b.previous.is_none() {
        rec.history.clear();
    }
    rec.history.push((b.sequence, digest.to_string()));
    cfg.target.make_durable().await?;
    ledger.save(rec.clone(), changes).await?;
    Ok(BundleStatus::Applied)
}

/// Stop a bundle's tail at the deadline: what was applied so far (`changes`, the `pending`
/// progress) is made durable and saved; the next call goes on from there.
async fn stop_tail(
    ledger: &mut dyn Ledger,
    cfg: &ImportConfig,
    rec: &mut Record,
    pending: &Pending,
    changes: Vec<(String, Option<IndexEntry>)>,
) -> Result<BundleStatus> {
    rec.pending = Some(pending.clone());
    cfg.target.make_durable().await?;
    ledger.save(rec.clone(), changes).await?;
    Ok(BundleStatus::Continue)
}

/// Apply one batch of moves: confirm each, copy them (several at once), record the copies,
/// remove the originals, then record that together with `done` (the record counting this
/// batch as applied).
async fn apply_moves(
    ledger: &mut dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
    batch: &[crate::format::manifest::Move],
    done: &Record,
) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let keys: Vec<String> = batch
        .iter()
        .flat_map(|m| [m.from.clone(), m.to.clone()])
        .collect();
    let known = ledger.lookup(&keys).await?;
    let known = &known;
    // (move, the original's entry when it is still to be removed, the copy's entry when new)
    let copied: Vec<(&crate::format::manifest::Move, Option<IndexEntry>, Option<IndexEntry>)> =
        futures::stream::iter(batch)
            .map(|m| async move {
                let (from_rel, to_rel) = (
                    relative(&m.from, &b.source_prefix),
                    relative(&m.to, &b.source_prefix),
                );
                let expected = known
                    .get(&m.from)
                    .filter(|e| e.etag == m.etag && e.size == m.size)
                    .cloned();
                if let Some(e) = &expected
                    && cfg.target.holds(from_rel, e).await?
                {
                    let place = cfg
                        .target
                        .move_object(from_rel, e, to_rel, m.headers.as_ref(), &m.last_modified)
                        .await?;
                    let copy = IndexEntry { place, ..e.clone() };
                    return Ok((m, expected, Some(copy)));
                }
                if let Some(t) = known.get(&m.to).filter(|t| t.etag == m.etag)
                    && cfg.target.holds(to_rel, t).await?
                {
                    // Copied and recorded by an earlier, interrupted call.
                    return Ok((m, expected, None));
                }
                if let Some(e) = &expected
                    && let Some(place) = cfg.target.moved_unrecorded(to_rel, e).await?
                {
                    let copy = IndexEntry { place, ..e.clone() };
                    return Ok((m, expected, Some(copy)));
                }
                Err(Error::MoveUnconfirmed {
                    target: cfg.target.display(),
                    from: m.from.clone(),
                    to: m.to.clone(),
                    detail: match &expected {
                        Some(_) => "neither the original nor a recorded copy holds the content this import wrote".into(),
                        None => format!(
                            "the import state has no record of `{}` with ETag {} ({} bytes)",
                            m.from, m.etag, m.size
                        ),
                    },
                })
            })
            .buffer_unordered(cfg.concurrency.max(1))
            .try_collect()
            .await?;
    let record = ledger.record().clone();
    cfg.target.make_durable().await?;
    ledger
        .save(
            record,
            copied
                .iter()
                .filter_map(|(m, _, c)| c.clone().map(|c| (m.to.clone(), Some(c))))
                .collect(),
        )
        .await?;
    let originals: Vec<(&str, Option<&IndexEntry>)> = copied
        .iter()
        .map(|(m, e, _)| (relative(&m.from, &b.source_prefix), e.as_ref()))
        .collect();
    cfg.target.delete_many(&originals).await?;
    cfg.target.make_durable().await?;
    ledger
        .save(
            done.clone(),
            copied
                .iter()
                .map(|(m, _, _)| (m.from.clone(), None))
                .collect(),
        )
        .await
}
