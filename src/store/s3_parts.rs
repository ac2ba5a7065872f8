//! The S3 adapter's part layout reads: HeadObject with `PartNumber` answers one part's size
//! (Content-Length) and the object's part count (`x-amz-mp-parts-count`). Not pinned by
//! `If-Match`: moto compares it with the part's own ETag, which it answers in place of the
//! object's (S3 answers the object's). An answer with another multipart ETag means the object
//! changed; the sizes must also add up to the size read ([`crate::store::Store::part_layout`]).
//! A rewrite in between with the same part count and size could give the wrong sizes: the
//! import's copy would then get another ETag, never other bytes.

use futures::{StreamExt, TryStreamExt};

use super::s3::S3Backend;
use super::s3_wire::{http_status, s3_err, unquote};
use crate::error::Result;

/// Part HEADs in flight at once for one object.
const IN_FLIGHT: usize = 8;

impl S3Backend {
    /// The sizes of the `parts` parts of `bucket/key` while its ETag is `etag`; `None` once
    /// it changed or is gone (412, 404), or when S3 counts another number of parts.
    pub(super) async fn read_part_sizes(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        parts: u64,
    ) -> Result<Option<Vec<u64>>> {
        let Ok(count) = i32::try_from(parts) else {
            return Ok(None);
        };
        let sizes: Vec<Option<u64>> = futures::stream::iter(1..=count)
            .map(|n| {
                let req = self
                    .client
                    .head_object()
                    .bucket(bucket)
                    .key(key)
                    .part_number(n);
                async move {
                    match req.send().await {
                        Ok(out) => {
                            let answered = out.e_tag().map(unquote);
                            let other = answered.is_some_and(|e| e != etag && e.contains('-'));
                            Ok((out.parts_count() == Some(count) && !other)
                                .then(|| out.content_length().and_then(|l| u64::try_from(l).ok()))
                                .flatten())
                        }
                        Err(e) if matches!(http_status(&e), Some(404 | 412 | 416)) => Ok(None),
                        Err(e) => Err(s3_err("HeadObject (part)", bucket, key, e)),
                    }
                }
            })
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(sizes.into_iter().collect())
    }
}
