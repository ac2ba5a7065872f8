//! A decorator over any [`ObjectStore`] that counts a run's requests by S3 operation into its
//! [`Activity`] (what `--json`'s `requests` reports): every [`super::Store`] has one, bound to
//! the run it serves.

use std::sync::Arc;

use bytes::Bytes;

use super::object::{ByteStream, Got, Head, ListPage, ObjectHeaders, ObjectStore, Part, PutMode};
use super::object::{Placement, UploadPage};
use crate::activity::Activity;
use crate::error::Result;

/// Requests through `inner`, counted into `activity`.
#[derive(Debug)]
pub struct Counted {
    inner: Arc<dyn ObjectStore>,
    activity: Arc<Activity>,
}

impl Counted {
    pub fn over(inner: Arc<dyn ObjectStore>, activity: Arc<Activity>) -> Arc<dyn ObjectStore> {
        Arc::new(Counted { inner, activity })
    }

    /// Counts `n` requests of `op` and traces each call (`FERRY_LOG=ferry::requests=trace`
    /// lists a run's requests one by one: what issue 29's request budget is read from).
    fn count(&self, op: &'static str, n: u64, bucket: &str, key: &str) {
        tracing::trace!(target: "ferry::requests", op, n, bucket, key);
        self.activity.request(&format!("s3:{op}"), n);
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counted {
    async fn head_bucket(&self, bucket: &str) -> Result<()> {
        self.count("HeadBucket", 1, bucket, "");
        self.inner.head_bucket(bucket).await
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage> {
        let call = self.inner.list_page(bucket, prefix, start_after, token);
        self.count("ListObjectsV2", 1, bucket, prefix);
        call.await
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<Got<ByteStream>> {
        self.count("GetObject", 1, bucket, key);
        self.inner.get(bucket, key, if_match, range).await
    }

    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool> {
        self.count("GetObjectLockConfiguration", 1, bucket, "");
        self.inner.object_lock_enabled(bucket).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<Head>> {
        self.count("HeadObject", 1, bucket, key);
        self.inner.head(bucket, key).await
    }

    async fn part_sizes(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        parts: u64,
    ) -> Result<Option<Vec<u64>>> {
        self.count("HeadObject", parts, bucket, key);
        self.inner.part_sizes(bucket, key, etag, parts).await
    }

    async fn tags(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        self.count("GetObjectTagging", 1, bucket, key);
        self.inner.tags(bucket, key).await
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        headers: &ObjectHeaders,
        mode: PutMode<'_>,
    ) -> Result<Option<String>> {
        let call = self.inner.put(bucket, key, body, headers, mode);
        self.count("PutObject", 1, bucket, key);
        call.await
    }

    async fn copy(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        headers: Option<&ObjectHeaders>,
    ) -> Result<String> {
        let call = self.inner.copy(bucket, from, to, headers);
        self.count("CopyObject", 1, bucket, to);
        call.await
    }

    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        headers: &ObjectHeaders,
    ) -> Result<String> {
        let call = self.inner.create_upload(bucket, key, headers);
        self.count("CreateMultipartUpload", 1, bucket, key);
        call.await
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part> {
        let call = self.inner.upload_part(bucket, key, upload_id, number, body);
        self.count("UploadPart", 1, bucket, key);
        call.await
    }

    async fn copy_part(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        upload_id: &str,
        number: i32,
        range: (u64, u64),
    ) -> Result<Part> {
        let call = self
            .inner
            .copy_part(bucket, from, to, upload_id, number, range);
        self.count("UploadPartCopy", 1, bucket, to);
        call.await
    }

    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[Part],
        mode: PutMode<'_>,
    ) -> Result<Option<String>> {
        let call = self
            .inner
            .complete_upload(bucket, key, upload_id, parts, mode);
        self.count("CompleteMultipartUpload", 1, bucket, key);
        call.await
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        let call = self.inner.abort_upload(bucket, key, upload_id);
        self.count("AbortMultipartUpload", 1, bucket, key);
        call.await
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<Option<UploadPage>> {
        let call = self.inner.list_uploads(bucket, prefix, marker);
        self.count("ListMultipartUploads", 1, bucket, prefix);
        call.await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.count("DeleteObject", 1, bucket, key);
        self.inner.delete(bucket, key).await
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<()> {
        let call = self.inner.delete_many(bucket, keys);
        self.count(
            "DeleteObjects",
            1,
            bucket,
            keys.first().map_or("", String::as_str),
        );
        call.await
    }

    fn placed(&self, placement: &Placement) -> Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(Counted {
            inner: self.inner.placed(placement)?,
            activity: self.activity.clone(),
        }))
    }
}
