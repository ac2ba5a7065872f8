//! The bucket target: an object is one PUT (small, several at once) or a multipart upload
//! completed on commit; moves are server-side copies, deletions DeleteObjects of 1,000 keys.

use super::*;

/// The largest source part an import repeats (a layout of larger parts is uploaded in the
/// import's own part size: the copy's ETag then differs from the source's), and the bytes of
/// such parts in flight at once.
pub const LAYOUT_PART_LIMIT: u64 = 256 * 1024 * 1024;
const LAYOUT_MEMORY: u64 = 256 * 1024 * 1024;

/// An S3 bucket and prefix: an object is one PUT or a multipart upload completed on commit.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub store: Store,
    pub dest: S3Location,
    pub part_size: u64,
}

#[async_trait]
impl Target for Bucket {
    fn display(&self) -> String {
        self.dest.to_string()
    }

    fn keep_name(&self, rel: &str) -> String {
        rel.to_string()
    }

    async fn takes_object_lock(&self) -> Result<bool> {
        self.store
            .backend()
            .object_lock_enabled(&self.dest.bucket)
            .await
    }

    /// S3 acknowledges only durable writes: nothing to do.
    async fn make_durable(&self) -> Result<()> {
        Ok(())
    }

    async fn sweep_uploads(&self) -> Result<usize> {
        self.store
            .abort_uploads(&self.dest.bucket, &self.dest.prefix)
            .await
    }

    async fn open(
        &self,
        rel: &str,
        obj: &ObjectEntry,
        shared: &Arc<Shared>,
    ) -> Result<Box<dyn ObjectWriter>> {
        let key = self.dest.key(rel);
        // A multipart source's parts, so that the copy's ETag is the source's (parts held in
        // memory: at most LAYOUT_MEMORY in flight, LAYOUT_PART_LIMIT each).
        let layout = obj
            .part_layout
            .as_ref()
            .filter(|l| l.problem(obj.size).is_none() && l.largest() <= LAYOUT_PART_LIMIT);
        if let Some(layout) = layout {
            let in_flight = (LAYOUT_MEMORY / layout.largest().max(1)).clamp(1, 4) as usize;
            return Ok(Box::new(MultipartPut {
                shared: shared.clone(),
                upload: self.store.multipart_laid_out(
                    &self.dest.bucket,
                    &key,
                    layout,
                    in_flight,
                    &obj.headers,
                ),
                obj: obj.clone(),
            }));
        }
        if obj.size <= SMALL_OBJECT {
            return Ok(Box::new(BufferedPut {
                shared: shared.clone(),
                store: self.store.clone(),
                bucket: self.dest.bucket.clone(),
                key,
                obj: obj.clone(),
                // At most SMALL_OBJECT: sized by the manifest only below that.
                buf: BytesMut::with_capacity(obj.size.min(SMALL_OBJECT) as usize),
            }));
        }
        let part = self
            .part_size
            .max(obj.size / 9_000 + 1)
            .min(crate::config::MAX_PART_SIZE);
        Ok(Box::new(MultipartPut {
            shared: shared.clone(),
            upload: self
                .store
                .multipart(&self.dest.bucket, &key, part, 4, &obj.headers),
            obj: obj.clone(),
        }))
    }

    async fn holds(&self, rel: &str, entry: &IndexEntry) -> Result<bool> {
        Ok(
            match self
                .store
                .head(&self.dest.bucket, &self.dest.key(rel))
                .await?
            {
                Some((etag, size)) => etag == entry.place && size == entry.size,
                None => false,
            },
        )
    }

    /// Never: a bucket's copy is recorded before the original is removed, so an unrecorded
    /// copy without its original is not this import's.
    async fn moved_unrecorded(&self, _to: &str, _entry: &IndexEntry) -> Result<Option<String>> {
        Ok(None)
    }

    /// A copy (the caller removes the original once the copy is recorded).
    async fn move_object(
        &self,
        from_rel: &str,
        entry: &IndexEntry,
        to_rel: &str,
        headers: Option<&ObjectHeaders>,
        _last_modified: &str,
    ) -> Result<String> {
        let (from, to) = (self.dest.key(from_rel), self.dest.key(to_rel));
        self.store
            .copy(&self.dest.bucket, &from, &to, entry.size, headers)
            .await
    }

    /// A CopyObject onto the key with the new headers and tags (a multipart object part by
    /// part in its own parts, so its ETag stays).
    async fn restate(
        &self,
        rel: &str,
        entry: &IndexEntry,
        headers: &ObjectHeaders,
        _last_modified: &str,
    ) -> Result<IndexEntry> {
        let key = self.dest.key(rel);
        let bucket = &self.dest.bucket;
        let layout = self
            .store
            .part_layout(bucket, &key, &entry.place, entry.size)
            .await?;
        let place = self
            .store
            .copy_in(
                bucket,
                &key,
                &key,
                entry.size,
                Some(headers),
                layout.as_ref(),
            )
            .await?;
        Ok(IndexEntry {
            place,
            ..entry.clone()
        })
    }

    /// The object has `entry`'s size and exactly `headers` (its ETag changed with the copy:
    /// SSE-KMS, or a copy made without the parts).
    async fn restated_unrecorded(
        &self,
        rel: &str,
        entry: &IndexEntry,
        headers: &ObjectHeaders,
    ) -> Result<Option<IndexEntry>> {
        let key = self.dest.key(rel);
        let Some((meta, _)) = self.store.stat_state(&self.dest.bucket, &key).await? else {
            return Ok(None);
        };
        let same = meta.size == entry.size && meta.headers.state_digest() == headers.state_digest();
        Ok(same.then(|| IndexEntry {
            place: meta.etag,
            ..entry.clone()
        }))
    }

    async fn delete(&self, rel: &str, _entry: Option<&IndexEntry>) -> Result<()> {
        self.store
            .delete(&self.dest.bucket, &self.dest.key(rel))
            .await
    }

    /// DeleteObjects of up to 1,000 keys, four batches at a time.
    async fn delete_many(&self, items: &[(&str, Option<&IndexEntry>)]) -> Result<()> {
        self.delete_keys(items.iter().map(|(rel, _)| self.dest.key(rel)).collect())
            .await
    }

    async fn strays(&self, keep: &KeepSet) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut lister = self.store.list(&self.dest.bucket, &self.dest.prefix);
        while let Some(page) = lister.next_page().await? {
            for r in page {
                let rel = relative(&r.key, &self.dest.prefix);
                if !keep.contains(rel) {
                    out.push(rel.to_string());
                }
            }
        }
        Ok(out)
    }

    async fn remove_strays(&self, strays: &[String]) -> Result<()> {
        self.delete_keys(strays.iter().map(|rel| self.dest.key(rel)).collect())
            .await
    }

    async fn stray_keys(&self, strays: &[String]) -> Result<Vec<Option<String>>> {
        Ok(strays.iter().cloned().map(Some).collect())
    }
}

impl Bucket {
    /// Delete `keys` (full keys): DeleteObjects of 1,000 keys, four requests at once.
    async fn delete_keys(&self, keys: Vec<String>) -> Result<()> {
        for four in keys.chunks(4 * 1000) {
            let batches = four
                .chunks(1000)
                .map(|chunk| self.store.delete_batch(&self.dest.bucket, chunk));
            futures::future::try_join_all(batches).await?;
        }
        Ok(())
    }
}

/// A small object: buffered, then PUT whole in the background (several at once).
pub(super) struct BufferedPut {
    shared: Arc<Shared>,
    store: Store,
    bucket: String,
    key: String,
    obj: ObjectEntry,
    buf: BytesMut,
}

#[async_trait]
impl ObjectWriter for BufferedPut {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let BufferedPut {
            shared,
            store,
            bucket,
            key,
            obj,
            buf,
        } = *self;
        shared.check()?;
        let permit = shared.slots.clone().acquire_owned().await.expect("open");
        shared.puts.lock().expect("lock").spawn(async move {
            let etag = store
                .put_object(&bucket, &key, buf.freeze(), &obj.headers)
                .await?;
            drop(permit);
            Ok((obj.key.clone(), index_entry(&obj, etag, false)))
        });
        Ok(())
    }

    /// Nothing was sent yet.
    async fn abort(self: Box<Self>) {}
}

/// A large object: a multipart upload completed on commit.
pub(super) struct MultipartPut {
    shared: Arc<Shared>,
    upload: MultipartUpload,
    obj: ObjectEntry,
}

#[async_trait]
impl ObjectWriter for MultipartPut {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let upload = &mut self.upload;
        upload.write_all(&chunk).await.map_err(|e| Error::Stream {
            bucket: upload.bucket().to_string(),
            key: upload.key().to_string(),
            source: Box::new(e),
        })
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let etag = self.upload.finish_etag().await?;
        self.shared
            .landed(self.obj.key.clone(), index_entry(&self.obj, etag, false));
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        self.upload.abort().await
    }
}
