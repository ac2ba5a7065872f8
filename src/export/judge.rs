//! The content policy at ship time: an object read is judged by its size, its headers and
//! its bytes (its type from its first bytes, keywords anywhere in its text) before any of it
//! enters a volume. What breaks the policy is withheld: not shipped, reported on this side
//! only, and judged again by every run while it stays so.

use super::*;

/// An object read for a shard: its record, what the read returned, its body, the ETag it was
/// planned with when it changed since.
pub(super) type Found = (ObjectRecord, ObjectMeta, Body, Option<String>);

impl Run<'_> {
    /// `found`, or `None` when the policy withholds it (recorded in `done`).
    pub(super) async fn judged(&self, done: &mut ShardDone, found: Found) -> Result<Option<Found>> {
        let Some(policy) = self.cfg.policy.as_deref() else {
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
        let mut why = policy
            .judge_key(rel, meta.size)
            .or_else(|| policy.judge_headers(&meta.headers));
        if why.is_none() {
            let mut inspector = policy.inspector();
            match body {
                Body::Whole(data, _) => inspector.update(data),
                Body::Ranged(first, _) => {
                    inspector.update(first);
                    let from = first.len() as u64;
                    if policy.reads_content()
                        && crate::policy::detect(first).text
                        && from < meta.size
                    {
                        // A keyword may be anywhere in a large text object: it is read through
                        // once before any of it ships (a second GET of its bytes).
                        let range = Some((from, meta.size - 1));
                        match self
                            .store()
                            .get_body(&source.bucket, &rec.key, Some(&meta.etag), range)
                            .await?
                        {
                            Got::Found { mut body, .. } => {
                                while let Some(chunk) = body.chunk().await? {
                                    inspector.update(&chunk);
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
            why = inspector
                .finish(rel, meta.headers.content_type.as_deref())
                .1;
        }
        match why {
            Some(reason) => {
                info!(key = %rec.key, reason = %reason, "withheld by the policy: not shipped");
                done.withhold_by_policy(rec, meta, &policy.digest, reason);
                Ok(None)
            }
            None => Ok(Some(found)),
        }
    }
}
