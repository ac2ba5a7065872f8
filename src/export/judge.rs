//! The export's screening at ship time: an object read is judged by its size, its headers and
//! its bytes (its type from its first bytes, keywords anywhere in its text) under the policy,
//! and by the scanner (`--scan`), before any of it enters a volume. What either refuses is
//! withheld: not shipped, reported on this side only, and judged again by every run while it
//! stays so (without a read while neither it nor the screening changes). A scanner that fails
//! stops the run before the object ships (fail closed).

use tokio::io::AsyncWriteExt;

use super::*;
use crate::error::io_at;

/// An object read for a shard: its record, what the read returned, its body, the ETag it was
/// planned with when it changed since.
pub(super) type Found = (ObjectRecord, ObjectMeta, Body, Option<String>);

impl Run<'_> {
    /// `found`, or `None` when the screening withholds it (recorded in `done`).
    pub(super) async fn judged(&self, done: &mut ShardDone, found: Found) -> Result<Option<Found>> {
        let Some(screen) = self.cfg.screen_digest() else {
            return Ok(Some(found));
        };
        let (rec, meta, body, _) = &found;
        // The rest of an object whose first part shipped in an earlier step: judged then.
        if done.partial.as_ref().is_some_and(|p| p.key == rec.key) {
            return Ok(Some(found));
        }
        let source = &self.cfg.source;
        let rel = rec
            .key
            .strip_prefix(source.prefix.as_str())
            .unwrap_or(&rec.key);
        let policy = self.cfg.policy.as_deref();
        let mut why = policy.and_then(|p| {
            p.judge_key(rel, meta.size)
                .or_else(|| p.judge_headers(&meta.headers))
        });
        if why.is_none() {
            let mut inspector = policy.map(|p| p.inspector());
            // The scanner reads a file of the object's bytes.
            let mut file = match &self.cfg.scan {
                Some(_) => Some(tempfile::NamedTempFile::new().map_err(io_at(
                    "creating a file for an object to scan in",
                    &std::env::temp_dir(),
                ))?),
                None => None,
            };
            let mut out = match &file {
                Some(f) => Some(tokio::fs::File::from_std(
                    f.reopen()
                        .map_err(io_at("opening the scan file", f.path()))?,
                )),
                None => None,
            };
            let mut take = async |chunk: &[u8]| -> Result<()> {
                if let Some(i) = inspector.as_mut() {
                    i.update(chunk);
                }
                if let (Some(o), Some(f)) = (out.as_mut(), file.as_ref()) {
                    o.write_all(chunk)
                        .await
                        .map_err(io_at("writing the scan file", f.path()))?;
                }
                Ok(())
            };
            match body {
                Body::Whole(data, _) => take(data).await?,
                Body::Ranged(first, _) => {
                    take(first).await?;
                    let from = first.len() as u64;
                    let keywords = policy.is_some_and(|p| p.reads_content())
                        && crate::policy::detect(first).text;
                    if (keywords || self.cfg.scan.is_some()) && from < meta.size {
                        // A keyword may be anywhere in a large text object, and a scanner
                        // reads it whole: it is read through once before any of it ships (a
                        // second GET of its bytes).
                        let range = Some((from, meta.size - 1));
                        match self
                            .store()
                            .get_body(&source.bucket, &rec.key, Some(&meta.etag), range)
                            .await?
                        {
                            Got::Found { mut body, .. } => {
                                while let Some(chunk) = body.chunk().await? {
                                    take(&chunk).await?;
                                }
                            }
                            Got::Changed | Got::Gone => {
                                return Err(Error::ObjectChanged {
                                    bucket: source.bucket.clone(),
                                    key: rec.key.clone(),
                                });
                            }
                        }
                    }
                }
            }
            why = inspector.and_then(|i| i.finish(rel, meta.headers.content_type.as_deref()).1);
            if let (None, Some(cmd), Some(f)) = (&why, &self.cfg.scan, file.as_mut()) {
                if let Some(o) = out.as_mut() {
                    o.flush()
                        .await
                        .map_err(io_at("writing the scan file", f.path()))?;
                }
                why = crate::policy::scanner::scan(cmd, f.path(), &rec.key).await?;
            }
        }
        match why {
            Some(reason) => {
                info!(key = %rec.key, reason = %reason, "withheld by the export's screening: not shipped");
                done.withhold_by_policy(rec, meta, &screen, reason);
                Ok(None)
            }
            None => Ok(Some(found)),
        }
    }
}
