//! Streaming a large object into a volume as ranged GETs pinned to the version read — in
//! parts when the step's deadline (or a stop) comes before its end: the part so far ends the
//! entry, and the shard's next step goes on from that byte with the object's running digest
//! (see [`crate::format::parts`]). An object of any size ships, however short the steps.

use super::*;
use crate::format::archive::EntryDigest;
use crate::format::parts::{Split, WholeDigest};

/// What [`Run::stream_large`] wrote.
pub(super) enum Streamed {
    /// The whole object, in one entry.
    Whole(EntryDigest),
    /// A part of it: its digest and place; `next` is how far the object got when this part
    /// ends before the object does.
    Part {
        digest: EntryDigest,
        split: Split,
        next: Option<Partial>,
    },
}

/// What adding an object to a volume did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Added {
    /// Its last byte is in the volume.
    Whole,
    /// A deadline cut it: the volume ends with its part.
    Cut,
}

impl Run<'_> {
    /// Stream `key` (`meta`, whose first range is `first`) into `entry` of volume `v`, from
    /// the start or from where `resume` says a previous step got.
    pub(super) async fn stream_large(
        &self,
        v: &mut OpenVolume,
        entry: &str,
        key: &str,
        meta: &ObjectMeta,
        first: Bytes,
        resume: Option<&Partial>,
    ) -> Result<Streamed> {
        let bucket = &self.cfg.source.bucket;
        let changed = || Error::ObjectChanged {
            bucket: bucket.clone(),
            key: key.to_string(),
        };
        let (start, mut whole) = match resume {
            None => (0, WholeDigest::default()),
            Some(p) => {
                let d = WholeDigest::restore(&p.digest).ok_or_else(|| Error::Corrupt {
                    what: "shard progress",
                    location: format!("the shard progress of s3://{bucket}/{key}"),
                    hint: "take a new baseline",
                    source: format!("the saved digest of `{key}` is not one this ferry wrote")
                        .into(),
                })?;
                (p.offset, d)
            }
        };
        if whole.len() != start {
            return Err(changed());
        }
        let mut w = v.writer.begin_stream(entry, meta.last_modified_ms).await?;
        let mut at = start;
        if start == 0 {
            w.write(&first).await?;
            whole.update(&first);
            at = first.len() as u64;
        }
        let ranges = (at..meta.size)
            .step_by(CHUNK as usize)
            .map(|start| (start, (start + CHUNK).min(meta.size) - 1));
        let mut chunks = futures::stream::iter(ranges)
            .map(|range| {
                let (store, bucket, key, etag) = (
                    self.store().clone(),
                    bucket.clone(),
                    key.to_string(),
                    meta.etag.clone(),
                );
                tokio::spawn(
                    async move { store.get(&bucket, &key, Some(&etag), Some(range)).await },
                )
            })
            .buffered(CHUNKS_IN_FLIGHT);
        // At least one range a step, then a cut at the first range boundary after the
        // deadline.
        let mut cut = start == 0 && at < meta.size && self.cut_now();
        while at < meta.size && !cut {
            let Some(got) = chunks.next().await else {
                break;
            };
            let got = got.map_err(|e| Error::Stream {
                bucket: bucket.clone(),
                key: key.to_string(),
                source: Box::new(e),
            })??;
            match got {
                Got::Found { body, .. } => {
                    w.write(&body).await?;
                    whole.update(&body);
                    at += body.len() as u64;
                }
                Got::Changed | Got::Gone => return Err(changed()),
            }
            cut = at < meta.size && self.cut_now();
        }
        drop(chunks);
        let digest = w.close().await?;
        if cut {
            let parts = resume.map_or(0, |p| p.parts) + 1;
            info!(
                key,
                part = parts,
                at,
                size = meta.size,
                "deadline mid-object: the rest ships in the shard's next step"
            );
            return Ok(Streamed::Part {
                digest,
                split: Split {
                    part: parts,
                    offset: start,
                    object_size: meta.size,
                    object_sha256: None,
                    object_crc32: None,
                },
                next: Some(Partial {
                    key: key.to_string(),
                    etag: meta.etag.clone(),
                    offset: at,
                    parts,
                    digest: whole.save(),
                }),
            });
        }
        if at != meta.size || start + digest.size != meta.size {
            return Err(changed());
        }
        match resume {
            None => Ok(Streamed::Whole(digest)),
            Some(p) => {
                let (sha, crc) = whole.finish();
                Ok(Streamed::Part {
                    digest,
                    split: Split {
                        part: p.parts + 1,
                        offset: start,
                        object_size: meta.size,
                        object_sha256: Some(sha),
                        object_crc32: Some(crc),
                    },
                    next: None,
                })
            }
        }
    }

    /// Is it time to cut the object being streamed (the step's deadline, or a stop)?
    fn cut_now(&self) -> bool {
        self.past_deadline() || self.store().run().stop().requested().is_some()
    }
}
