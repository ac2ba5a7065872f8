//! Listings: ListObjectsV2 and ListObjects (v1) over a bucket's key-sorted map, one page at
//! a time ([`store::list`] walks only what the page holds), keys URL-encoded when asked.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use crate::s3::Mem;
use crate::store;
use crate::wire::listed;

impl Mem {
    /// A listing page as ListObjectsV2 and ListObjects answer it.
    fn page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max_keys: Option<i32>,
    ) -> S3Result<store::Page> {
        let max = max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let buckets = self.0.read()?;
        let b = buckets.get(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        Ok(store::list(&b.objects, prefix, delimiter, after, max))
    }

    pub(crate) async fn list_objects_v2_(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(t), _) => Some(t.clone()),
            (None, s) => s.clone(),
        };
        let page = self.page(
            &input.bucket,
            &prefix,
            input.delimiter.as_deref(),
            after.as_deref(),
            input.max_keys,
        )?;
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let (contents, common_prefixes) = listed(&page, url);
        let key_count = (page.objects.len() + page.prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            max_keys: Some(input.max_keys.unwrap_or(1000)),
            key_count: Some(key_count),
            is_truncated: Some(page.truncated),
            next_continuation_token: page.last.clone().filter(|_| page.truncated),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            encoding_type: input.encoding_type,
            contents,
            common_prefixes,
            ..Default::default()
        }))
    }

    pub(crate) async fn list_objects_(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let page = self.page(
            &input.bucket,
            &prefix,
            input.delimiter.as_deref(),
            input.marker.as_deref().filter(|m| !m.is_empty()),
            input.max_keys,
        )?;
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let (contents, common_prefixes) = listed(&page, url);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            marker: input.marker,
            max_keys: Some(input.max_keys.unwrap_or(1000)),
            is_truncated: Some(page.truncated),
            next_marker: page.last.clone().filter(|_| page.truncated),
            encoding_type: input.encoding_type,
            contents,
            common_prefixes,
            ..Default::default()
        }))
    }
}
