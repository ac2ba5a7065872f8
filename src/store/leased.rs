//! `Leased`, the export's fenced decorator over any [`ObjectStore`]: once the run's
//! [`Stop`] says its lease is lost (the heartbeat found another run holding it, or the run
//! stalled past it), every request that would change something — PUT, copy, a multipart
//! upload's create, part or completion, a delete — is refused with [`Error::LeaseLost`] before
//! it is sent. Reads go on, and so do aborts of the run's own uploads (cleaning up is never
//! somebody else's data). So nothing a stale run writes or deletes lands after it lost the job.

use std::sync::Arc;

use bytes::Bytes;

use super::object::{
    ByteStream, Got, Head, ListPage, ObjectHeaders, ObjectStore, Part, PutMode, UploadPage,
};
use crate::error::{Error, Result};
use crate::interrupt::Stop;

/// Refuses mutations once `stop` says the lease of `job` is lost.
#[derive(Debug)]
pub struct Leased {
    inner: Arc<dyn ObjectStore>,
    stop: Stop,
    job: String,
}

impl Leased {
    pub fn new(inner: Arc<dyn ObjectStore>, stop: Stop, job: &str) -> Leased {
        Leased {
            inner,
            stop,
            job: job.to_string(),
        }
    }

    fn held(&self, op: &str, bucket: &str, key: &str) -> Result<()> {
        if self.stop.is_lease_lost() {
            tracing::warn!(job = %self.job, op, bucket, key, "lease lost: request refused");
            return Err(Error::LeaseLost {
                job: self.job.clone(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for Leased {
    async fn head_bucket(&self, bucket: &str) -> Result<()> {
        self.inner.head_bucket(bucket).await
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage> {
        self.inner
            .list_page(bucket, prefix, start_after, token)
            .await
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<Got<ByteStream>> {
        self.inner.get(bucket, key, if_match, range).await
    }

    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool> {
        self.inner.object_lock_enabled(bucket).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<Head>> {
        self.inner.head(bucket, key).await
    }

    async fn part_sizes(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        parts: u64,
    ) -> Result<Option<Vec<u64>>> {
        self.inner.part_sizes(bucket, key, etag, parts).await
    }

    async fn tags(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<std::collections::BTreeMap<String, String>> {
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
        self.held("PutObject", bucket, key)?;
        self.inner.put(bucket, key, body, headers, mode).await
    }

    async fn copy(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        headers: Option<&ObjectHeaders>,
    ) -> Result<String> {
        self.held("CopyObject", bucket, to)?;
        self.inner.copy(bucket, from, to, headers).await
    }

    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        headers: &ObjectHeaders,
    ) -> Result<String> {
        self.held("CreateMultipartUpload", bucket, key)?;
        self.inner.create_upload(bucket, key, headers).await
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part> {
        self.held("UploadPart", bucket, key)?;
        self.inner
            .upload_part(bucket, key, upload_id, number, body)
            .await
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
        self.held("UploadPartCopy", bucket, to)?;
        self.inner
            .copy_part(bucket, from, to, upload_id, number, range)
            .await
    }

    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[Part],
        mode: PutMode<'_>,
    ) -> Result<Option<String>> {
        self.held("CompleteMultipartUpload", bucket, key)?;
        self.inner
            .complete_upload(bucket, key, upload_id, parts, mode)
            .await
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        self.inner.abort_upload(bucket, key, upload_id).await
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<Option<UploadPage>> {
        self.inner.list_uploads(bucket, prefix, marker).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.held("DeleteObject", bucket, key)?;
        self.inner.delete(bucket, key).await
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<()> {
        self.held(
            "DeleteObjects",
            bucket,
            keys.first().map_or("", |k| k.as_str()),
        )?;
        self.inner.delete_many(bucket, keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, Store};

    #[tokio::test]
    async fn after_a_lost_lease_reads_and_aborts_go_on_and_nothing_else() {
        let mem = Arc::new(MemoryStore::new());
        mem.create_bucket("b");
        let store = Store::new(mem.clone()).leased("job");
        let h = ObjectHeaders::default();
        let put = |k: &'static str| {
            store
                .backend()
                .put("b", k, Bytes::from("x"), &h, PutMode::Overwrite)
        };
        put("before").await.unwrap();
        let upload = store.backend().create_upload("b", "big", &h).await.unwrap();
        store.run().stop().lease_lost();
        let refused = put("after").await.unwrap_err();
        assert!(matches!(refused, Error::LeaseLost { .. }), "{refused}");
        let b = store.backend();
        assert!(b.delete("b", "before").await.is_err());
        assert!(b.delete_many("b", &["before".into()]).await.is_err());
        assert!(b.copy("b", "before", "copy", None).await.is_err());
        assert!(b.create_upload("b", "k", &h).await.is_err());
        assert!(
            b.upload_part("b", "big", &upload, 1, Bytes::from("x"))
                .await
                .is_err()
        );
        assert!(
            b.complete_upload("b", "big", &upload, &[], PutMode::Create)
                .await
                .is_err()
        );
        // reads and the clean-up of its own upload still work
        assert!(b.head("b", "before").await.unwrap().is_some());
        b.abort_upload("b", "big", &upload).await.unwrap();
        let plain = Store::new(mem);
        assert_eq!(
            plain
                .backend()
                .list_uploads("b", "", None)
                .await
                .unwrap()
                .map(|p| p.uploads.len()),
            Some(0)
        );
        assert!(
            plain.head("b", "after").await.unwrap().is_none(),
            "nothing landed"
        );
    }
}
