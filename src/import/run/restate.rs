//! Metadata-only entries: an object whose bytes the destination already holds gets its new
//! headers, metadata, tags and Object Lock (a bucket: a CopyObject onto the key; a folder: its
//! key index), once the key index confirms the destination still holds the content this import
//! wrote there. In batches, each recorded before the next, resumable like the moves.

use super::*;
use crate::format::manifest::MetadataOnly;

/// Metadata-only entries applied per step of an import's tail.
pub(super) const RESTATE_BATCH: usize = 1_000;

/// Apply one batch: confirm each object against the key index, give it its new headers
/// (several at once), then record the new entries together with `done` (the record counting
/// this batch as applied).
pub(super) async fn apply_metadata(
    ledger: &mut dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
    batch: &[MetadataOnly],
    done: &Record,
) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let keys: Vec<String> = batch.iter().map(|m| m.key.clone()).collect();
    let known = ledger.lookup(&keys).await?;
    let known = &known;
    let restated: Vec<(String, Option<IndexEntry>)> = futures::stream::iter(batch)
        .map(|m| async move {
            let rel = relative(&m.key, &b.source_prefix);
            let headers = m
                .headers
                .for_import(cfg.skip_object_lock, now_ms())
                .unwrap_or_else(|| m.headers.clone());
            let unconfirmed = |detail: String| Error::MetadataUnconfirmed {
                target: cfg.target.display(),
                key: m.key.clone(),
                detail,
            };
            let Some(e) = known
                .get(&m.key)
                .filter(|e| e.etag == m.etag && e.size == m.size)
            else {
                return Err(unconfirmed(format!(
                    "the import state has no record of it with ETag {} ({} bytes)",
                    m.etag, m.size
                )));
            };
            let entry = if cfg.target.holds(rel, e).await? {
                cfg.target
                    .restate(rel, e, &headers, &m.last_modified)
                    .await?
            } else if let Some(entry) = cfg.target.restated_unrecorded(rel, e, &headers).await? {
                entry
            } else {
                return Err(unconfirmed(
                    "the destination no longer holds the content this import wrote there".into(),
                ));
            };
            Ok((m.key.clone(), Some(entry)))
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .try_collect()
        .await?;
    cfg.target.make_durable().await?;
    ledger.save(done.clone(), restated).await
}
