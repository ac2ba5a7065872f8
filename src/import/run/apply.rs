//! Applying one bundle: its volumes through the verifier into the target, then its tail
//! (moves as confirmed copies, deletions in batches, a baseline's removals), resumable per
//! step.

use super::*;
use crate::format::parts::is_early_part;
use crate::import::run::restate::{RESTATE_BATCH, apply_metadata};

/// How many of the keys a baseline kept because ferry did not write them are listed by name.
pub const KEPT_LISTED: usize = 20;

/// What a baseline removes, and what it leaves.
#[derive(Default)]
pub(super) struct Removals {
    /// The stray (a relative key, or a directory's path) and, when ferry wrote it, its key.
    pub(super) remove: Vec<(String, Option<String>)>,
    /// Found under the target, not listed by the bundle, not written by ferry: left.
    pub(super) kept: u64,
    /// The first [`KEPT_LISTED`] of those.
    pub(super) kept_first: Vec<String>,
}

/// The strays of a baseline (what the target holds and the bundle does not list), split into
/// those the import state records as written by ferry (removed) and the rest (left, counted
/// and listed), unless `--delete-unlisted` asks for exact mirror semantics.
pub(super) async fn baseline_removals(
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
pub(super) async fn check_signed_volumes(b: &Bundle) -> Result<()> {
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
pub(super) async fn baseline_strays(cfg: &ImportConfig, b: &Bundle) -> Result<Vec<String>> {
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
pub(super) async fn apply(
    ledger: &mut dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
    digest: &str,
    signer: Option<&TrustedKey>,
    rec: &mut Record,
    out: &mut BundleOutcome,
    progress: &dyn Progress,
) -> Result<BundleStatus> {
    let resumed =
        matches!(&rec.pending, Some(p) if p.sequence == b.sequence && p.bundle_digest == digest);
    let mut pending = pending_for(rec, b, digest);
    if !resumed {
        rec.quarantined.clear();
    }
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
        let before = out.quarantined_objects.len();
        let (report, landed) = import_volume(ledger, cfg, b, v, out, progress).await?;
        let room = crate::import::ledger::QUARANTINE_RECORDED.saturating_sub(rec.quarantined.len());
        let kept_out = out.quarantined_objects[before..].iter().take(room).cloned();
        rec.quarantined.extend(kept_out);
        pending.volumes_done.push(index);
        rec.pending = Some(pending.clone());
        let landed = landed.into_iter().map(|(k, e)| (k, Some(e))).collect();
        save_durably(ledger, cfg, rec.clone(), landed).await?;
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
    // Metadata-only entries, a batch at a time (see `restate`), resumable like the moves.
    let restated = &b.last.metadata_only;
    let done = (pending.metadata_done as usize).min(restated.len());
    out.metadata_only += done as u64;
    for (i, batch) in restated[done..].chunks(RESTATE_BATCH).enumerate() {
        if (i > 0 || progressed) && cfg.past_deadline() {
            info!(job = %b.job, sequence = b.sequence, metadata_only = out.metadata_only, "deadline: stopping between metadata-only entries");
            return Ok(BundleStatus::Continue);
        }
        out.metadata_only += batch.len() as u64;
        pending.metadata_done = out.metadata_only;
        rec.pending = Some(pending.clone());
        apply_metadata(ledger, cfg, b, batch, rec).await?;
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
    if b.baseline
        && let Some(stopped) = apply_removals(
            ledger,
            cfg,
            b,
            rec,
            &mut pending,
            out,
            &mut changes,
            progressed,
            gone.len(),
        )
        .await?
    {
        return Ok(stopped);
    }
    record_applied(ledger, cfg, b, digest, signer, rec, changes).await
}

/// Where an import of `b` starts: the record's pending progress if it is this bundle's, else
/// nothing done.
fn pending_for(rec: &Record, b: &Bundle, digest: &str) -> Pending {
    match &rec.pending {
        Some(p) if p.sequence == b.sequence && p.bundle_digest == digest => {
            info!(job = %b.job, sequence = b.sequence, done = ?p.volumes_done, "resuming an interrupted import");
            p.clone()
        }
        _ => Pending {
            sequence: b.sequence,
            bundle_digest: digest.to_string(),
            volumes_done: Vec::new(),
            moves_done: 0,
            metadata_done: 0,
            deletions_done: 0,
        },
    }
}

/// Record `b` as applied (its `changes` to the key index with it), once the target made what
/// it wrote durable.
async fn record_applied(
    ledger: &mut dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
    digest: &str,
    signer: Option<&TrustedKey>,
    rec: &mut Record,
    changes: Vec<(String, Option<IndexEntry>)>,
) -> Result<BundleStatus> {
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
    save_durably(ledger, cfg, rec.clone(), changes).await?;
    Ok(BundleStatus::Applied)
}

/// Stop a bundle's tail at the deadline: what was applied so far (`changes`, the `pending`
/// progress) is made durable and saved; the next call goes on from there.
pub(super) async fn stop_tail(
    ledger: &mut dyn Ledger,
    cfg: &ImportConfig,
    rec: &mut Record,
    pending: &Pending,
    changes: Vec<(String, Option<IndexEntry>)>,
) -> Result<BundleStatus> {
    rec.pending = Some(pending.clone());
    save_durably(ledger, cfg, rec.clone(), changes).await?;
    Ok(BundleStatus::Continue)
}

/// Record `record` and `changes` once what the target wrote is durable: the ledger never
/// says more landed than a crash would keep.
async fn save_durably(
    ledger: &mut dyn Ledger,
    cfg: &ImportConfig,
    record: Record,
    changes: Vec<(String, Option<IndexEntry>)>,
) -> Result<()> {
    cfg.target.make_durable().await?;
    ledger.save(record, changes).await
}

/// Apply one batch of moves: confirm each, copy them (several at once), record the copies,
/// remove the originals, then record that together with `done` (the record counting this
/// batch as applied).
pub(super) async fn apply_moves(
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
                    let headers = m.headers.as_ref().map(|h| {
                        h.for_import(cfg.skip_object_lock, now_ms())
                            .unwrap_or_else(|| h.clone())
                    });
                    let place = cfg
                        .target
                        .move_object(from_rel, e, to_rel, headers.as_ref(), &m.last_modified)
                        .await?;
                    // A folder's record of tags, lock and checksum follows new headers.
                    let kept = match (&e.kept, &headers) {
                        (Some(_), Some(h)) => crate::import::ledger::Kept::of(h),
                        _ => e.kept.clone(),
                    };
                    let copy = IndexEntry {
                        place,
                        kept,
                        ..e.clone()
                    };
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
    let copies = copied
        .iter()
        .filter_map(|(m, _, c)| c.clone().map(|c| (m.to.clone(), Some(c))))
        .collect();
    let record = ledger.record().clone();
    save_durably(ledger, cfg, record, copies).await?;
    let originals: Vec<(&str, Option<&IndexEntry>)> = copied
        .iter()
        .map(|(m, e, _)| (relative(&m.from, &b.source_prefix), e.as_ref()))
        .collect();
    cfg.target.delete_many(&originals).await?;
    let removed = copied
        .iter()
        .map(|(m, _, _)| (m.from.clone(), None))
        .collect();
    save_durably(ledger, cfg, done.clone(), removed).await
}

/// Stream volume `v` of `b` through the verifier into the target: what it reported, and what
/// landed (counted into `out` as new or overwritten against the key index).
async fn import_volume(
    ledger: &mut dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
    v: &crate::import::bundle::OpenVolume,
    out: &mut BundleOutcome,
    progress: &dyn Progress,
) -> Result<(
    crate::import::verify::VolumeReport,
    Vec<(String, IndexEntry)>,
)> {
    let contents = v.contents().await?;
    let keys: Vec<String> = contents.objects.iter().map(|o| o.key.clone()).collect();
    let known = ledger.lookup(&keys).await?;
    let shared = Shared::new(cfg.concurrency);
    let mut sink = TargetSink {
        target: cfg.target.clone(),
        source_prefix: b.source_prefix.clone(),
        shared: shared.clone(),
        unlock: cfg.skip_object_lock,
        screen: cfg.screen.clone(),
        bundle: (b.job.clone(), b.sequence),
    };
    let checked = match check_volume(b, v, &contents, &mut sink, progress, cfg.run.stop()).await {
        Ok(report) => import_joined(cfg, b, v.manifest.volume, &shared, progress)
            .await
            .map(|()| report),
        Err(e) => Err(e),
    };
    let landed = shared.drain().await;
    let report = checked?;
    let landed = landed?;
    let flagged = cfg
        .screen
        .as_ref()
        .map(|s| s.take_flagged())
        .unwrap_or_default();
    let kept_out: std::collections::HashSet<&str> =
        flagged.iter().map(|q| q.key.as_str()).collect();
    for o in contents.objects.iter().filter(|o| !is_early_part(o)) {
        if kept_out.contains(o.key.as_str()) {
            continue;
        }
        if cfg.skip_object_lock && o.headers.is_locked() {
            out.unlocked += 1;
        }
        if known.contains_key(&o.key) {
            out.overwritten += 1;
        } else {
            out.new += 1;
        }
    }
    out.objects += report.objects.saturating_sub(flagged.len() as u64);
    out.bytes += report.bytes;
    out.quarantined += flagged.len() as u64;
    out.quarantined_objects.extend(flagged);
    Ok((report, landed))
}

/// A baseline's removals of what it does not list and ferry wrote, in batches the deadline may
/// stop between (`Some`: the tail stopped there, what was removed saved).
#[allow(clippy::too_many_arguments)]
async fn apply_removals(
    ledger: &mut dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
    rec: &mut Record,
    pending: &mut Pending,
    out: &mut BundleOutcome,
    changes: &mut Vec<(String, Option<IndexEntry>)>,
    progressed: bool,
    deletions: usize,
) -> Result<Option<BundleStatus>> {
    let removals = baseline_removals(ledger, cfg, b).await?;
    // In batches, like the deletions; the deadline may stop between them (what was removed
    // is saved; the next call lists the strays left and goes on).
    for (i, batch) in removals.remove.chunks(DELETE_BATCH).enumerate() {
        if (i > 0 || progressed) && cfg.past_deadline() {
            info!(job = %b.job, sequence = b.sequence, removed = out.removed, "deadline: stopping between removals");
            pending.deletions_done = deletions as u64;
            return stop_tail(ledger, cfg, rec, pending, std::mem::take(changes))
                .await
                .map(Some);
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
    Ok(None)
}
