//! Storage and state behind traits: [`ObjectStore`] (one request per operation) with its S3
//! adapter ([`s3`], the only code that names `aws_sdk_s3`) and an in-memory store ([`mem`]);
//! [`StateStore`] with its DynamoDB adapter ([`dynamo`]) and an in-memory table
//! ([`mem_state`]). [`Store`] is what the engine uses over any object store: resumed bodies,
//! small documents, fenced writes ([`Fence`]) and streaming multipart uploads
//! ([`MultipartUpload`]), written once; the state layer's `StateTable` is its twin for state.

pub mod aws;
mod body;
mod counted;
mod counted_state;
pub mod dynamo;
mod fence;
pub mod kms;
mod leased;
mod lister;
pub mod mem;
pub mod mem_state;
mod multipart;
mod object;
pub mod s3;
mod s3_headers;
mod s3_parts;
mod s3_wire;
pub mod scripted;
pub mod sdk_error;
#[cfg(feature = "lambda")]
pub mod secrets;
mod state_store;
pub mod volume;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::warn;

pub use body::Body;
pub use dynamo::{DynamoState, DynamoTables};
pub use fence::Fence;
pub use lister::Lister;
pub use mem::MemoryStore;
pub use mem_state::{MemoryState, MemoryTables};
pub use multipart::{MultipartUpload, multipart_etag};
pub use object::{
    ByteStream, Got, Head, ListPage, ObjectHeaders, ObjectMeta, ObjectRecord, ObjectStore,
    OpenUpload, Part, Placement, PutMode, STORAGE_CLASSES, Sse, UploadPage, Withheld,
};
pub use s3_wire::client;
pub use scripted::{Fault, Gate, Rule, Scripted};
pub use state_store::{CommitRecord, CommittedBundle, JobRecord, StateStore, Tables};
pub use volume::S3Volume;

use crate::activity::Activity;
use crate::context::RunContext;
use crate::error::{Error, Result};

/// User metadata naming the run that wrote an object (volumes carry it).
pub const WRITER_METADATA: &str = "ferry-writer";

/// CopyObject's limit; larger objects are copied part by part.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Part size of a multipart copy.
const COPY_PART: u64 = 1024 * 1024 * 1024;

/// The object operations the engine uses, over any [`ObjectStore`], for one run: its
/// [`RunContext`] (stop token, [`Activity`], uploads) is the run's. Clones share it;
/// [`Store::for_run`] starts a run inside it, [`Store::in_run`] binds a given one.
#[derive(Clone, Debug)]
pub struct Store {
    /// `uncounted` behind a [`counted::Counted`] bound to `run`.
    backend: Arc<dyn ObjectStore>,
    uncounted: Arc<dyn ObjectStore>,
    run: RunContext,
}

impl Store {
    /// A store over `backend`.
    pub fn new(backend: Arc<dyn ObjectStore>) -> Self {
        Self::over(backend, RunContext::new())
    }

    /// `uncounted` for the run `run`, its requests counted in the run's activity.
    fn over(uncounted: Arc<dyn ObjectStore>, run: RunContext) -> Self {
        Store {
            backend: counted::Counted::over(uncounted.clone(), run.activity().clone()),
            uncounted,
            run,
        }
    }

    /// A store over S3 (or an emulator) through `client`.
    pub fn s3(client: aws_sdk_s3::Client) -> Self {
        Self::new(Arc::new(s3::S3Backend::new(client)))
    }

    /// The store these operations go to.
    pub fn backend(&self) -> &Arc<dyn ObjectStore> {
        &self.backend
    }

    /// The same store for a run inside this one's context ([`RunContext::child`]): its own
    /// activity and stop token, stopped also when this context is.
    pub fn for_run(&self) -> Store {
        self.in_run(self.run.child())
    }

    /// The same store for the run `run`.
    pub fn in_run(&self, run: RunContext) -> Store {
        Self::over(self.uncounted.clone(), run)
    }

    /// The same store with every mutation refused once this run's lease is lost
    /// ([`leased::Leased`]): the export's, so that a run that lost `job` changes nothing more.
    pub fn leased(&self, job: &str) -> Store {
        let stop = self.run.stop().clone();
        let leased = leased::Leased::new(self.uncounted.clone(), stop, job);
        Self::over(Arc::new(leased), self.run.clone())
    }

    /// The same store writing with `placement` (encryption, storage class; see
    /// [`ObjectStore::placed`]); itself when `placement` leaves both to the bucket.
    pub fn placed(&self, placement: &Placement) -> Result<Store> {
        if placement.is_default() {
            return Ok(self.clone());
        }
        Ok(Self::over(
            self.uncounted.placed(placement)?,
            self.run.clone(),
        ))
    }

    /// The run this store serves.
    pub fn run(&self) -> &RunContext {
        &self.run
    }

    /// What this run's requests did so far.
    pub fn activity(&self) -> &Arc<Activity> {
        self.run.activity()
    }

    /// Fail with [`Error::NoSuchBucket`] unless `bucket` exists and is visible (a check before
    /// a run writes anything into it).
    pub async fn check_bucket(&self, bucket: &str) -> Result<()> {
        self.backend.head_bucket(bucket).await
    }

    /// List `bucket` under `prefix`, in key order.
    pub fn list(&self, bucket: &str, prefix: &str) -> Lister {
        self.list_range(bucket, prefix, None, None)
    }

    /// List the keys of `bucket` under `prefix` that sort after `after` and no later than
    /// `until` (either open when `None`), in key order.
    pub fn list_range(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<String>,
        until: Option<String>,
    ) -> Lister {
        Lister {
            backend: self.backend.clone(),
            activity: self.run.activity().clone(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            token: None,
            done: false,
            previous: None,
            floor: after,
            until,
        }
    }

    /// Read an object (or the byte range `start..=end` of it), only if its ETag still is
    /// `if_match`. Whole-object reads are checked against S3's stored checksum.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<Got> {
        let (meta, mut reader) = match self.get_body(bucket, key, if_match, range).await? {
            Got::Found { meta, body } => (meta, body),
            Got::Changed => return Ok(Got::Changed),
            Got::Gone => return Ok(Got::Gone),
        };
        let mut body = BytesMut::with_capacity(reader.want.min(64 << 20) as usize);
        while let Some(chunk) = reader.chunk().await? {
            body.extend_from_slice(&chunk);
        }
        match reader.lost {
            Some(lost) => Ok(lost),
            None => {
                self.run.activity().tick();
                Ok(Got::Found {
                    meta,
                    body: body.freeze(),
                })
            }
        }
    }

    /// Like [`Store::get`], but the body comes chunk by chunk as it arrives (nothing is
    /// buffered): a body that breaks mid-way is asked for again from the byte it stopped at.
    pub async fn get_body(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<Got<Body>> {
        let first = self.backend.get(bucket, key, if_match, range).await?;
        let Got::Found { meta, body: stream } = first else {
            return Ok(match first {
                Got::Changed => Got::Changed,
                _ => Got::Gone,
            });
        };
        // The bytes asked for: the range, or the whole object.
        let (start, want) = match range {
            Some((s, e)) => (s, e - s + 1),
            None => (0, meta.size),
        };
        // Resumed reads are pinned to the version first read.
        let etag = if meta.etag.is_empty() {
            if_match.map(str::to_string)
        } else {
            Some(meta.etag.clone())
        };
        let body = Body {
            store: self.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag,
            start,
            want,
            got: 0,
            resumed: 0,
            stream,
            lost: None,
        };
        Ok(Got::Found { meta, body })
    }

    /// Metadata and headers of the current version, or `None` if the key is gone.
    pub async fn stat(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.backend.head(bucket, key).await?.map(|h| h.meta))
    }

    /// [`Store::stat`] with the object's tags (a second request: HEAD gives none).
    pub async fn stat_with_tags(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        let Some(mut meta) = self.stat(bucket, key).await? else {
            return Ok(None);
        };
        meta.headers.tags = self.backend.tags(bucket, key).await?;
        Ok(Some(meta))
    }

    /// [`Store::stat`] with the object's tags when it has any (a GetObjectTagging only then):
    /// what `--scan-metadata` reads of an object the listing calls unchanged.
    /// Also says whether the tags took that second request.
    pub async fn stat_state(&self, bucket: &str, key: &str) -> Result<Option<(ObjectMeta, bool)>> {
        let Some(head) = self.backend.head(bucket, key).await? else {
            return Ok(None);
        };
        let mut meta = head.meta;
        let tagged = head.tag_count > 0;
        if tagged {
            meta.headers.tags = self.backend.tags(bucket, key).await?;
        }
        Ok(Some((meta, tagged)))
    }

    /// ETag and size of the current version, or `None` if the key is gone.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<(String, u64)>> {
        Ok(self
            .backend
            .head(bucket, key)
            .await?
            .map(|h| (h.meta.etag, h.meta.size)))
    }

    /// The `x-amz-restore` header of an object (where a restore of an archived object
    /// stands); `None` without one, or if the key is gone.
    pub async fn restore_header(&self, bucket: &str, key: &str) -> Result<Option<String>> {
        Ok(self
            .backend
            .head(bucket, key)
            .await?
            .and_then(|h| h.restore))
    }

    /// An object's ETag and the run that wrote it ([`WRITER_METADATA`]); `None` if it does
    /// not exist.
    pub async fn head_writer(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        Ok(self.backend.head(bucket, key).await?.map(|mut h| {
            let writer = h.meta.headers.metadata.remove(WRITER_METADATA);
            (h.meta.etag, writer)
        }))
    }

    /// Read a small document whole; `None` if it does not exist.
    pub async fn get_document(&self, bucket: &str, key: &str) -> Result<Option<Bytes>> {
        Ok(self
            .get_document_tagged(bucket, key)
            .await?
            .map(|(body, _)| body))
    }

    /// Read a small document whole with its ETag; `None` if it does not exist.
    pub async fn get_document_tagged(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Bytes, String)>> {
        match self.get(bucket, key, None, None).await? {
            Got::Found { body, meta } => Ok(Some((body, meta.etag))),
            Got::Gone => Ok(None),
            Got::Changed => unreachable!("no If-Match was sent"),
        }
    }

    /// A streaming reader of an object (for inventories); `None` if it does not exist.
    pub async fn reader(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<impl tokio::io::AsyncBufRead + Unpin + Send + use<>>> {
        use futures::TryStreamExt;
        match self.backend.get(bucket, key, None, None).await? {
            Got::Found { body, .. } => Ok(Some(tokio_util::io::StreamReader::new(
                body.map_err(std::io::Error::other),
            ))),
            _ => Ok(None),
        }
    }

    /// Write a small document in one PUT.
    pub async fn put_document(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<()> {
        let headers = ObjectHeaders {
            content_type: Some(content_type.to_string()),
            ..Default::default()
        };
        self.backend
            .put(bucket, key, body, &headers, PutMode::Overwrite)
            .await?;
        Ok(())
    }

    /// PUT an object whole with its headers and user metadata; returns its ETag.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        h: &ObjectHeaders,
    ) -> Result<String> {
        Ok(self
            .backend
            .put(bucket, key, body, h, PutMode::Overwrite)
            .await?
            .unwrap_or_default())
    }

    /// Server-side copy of `from` to `to` in `bucket` with `headers` (or, when `None`, the
    /// source's headers and metadata); returns the copy's ETag. Objects over 5 GiB are copied
    /// part by part.
    pub async fn copy(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        size: u64,
        headers: Option<&ObjectHeaders>,
    ) -> Result<String> {
        self.copy_in(bucket, from, to, size, headers, None).await
    }

    /// [`Store::copy`] in the parts of `layout` when given (and one that S3 can have for
    /// `size` bytes): the copy's ETag is then the multipart ETag of those parts.
    pub async fn copy_in(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        size: u64,
        headers: Option<&ObjectHeaders>,
        layout: Option<&crate::format::layout::PartLayout>,
    ) -> Result<String> {
        let ranges = match layout.filter(|l| size > 0 && l.problem(size).is_none()) {
            Some(l) => l.ranges(),
            None if size > MAX_COPY => (0..size)
                .step_by(COPY_PART as usize)
                .map(|start| (start, (start + COPY_PART).min(size) - 1))
                .collect(),
            None => return self.backend.copy(bucket, from, to, headers).await,
        };
        self.copy_parts(bucket, from, to, &ranges, headers).await
    }

    async fn copy_parts(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        ranges: &[(u64, u64)],
        headers: Option<&ObjectHeaders>,
    ) -> Result<String> {
        let h = match headers {
            Some(h) => h.clone(),
            // The source's headers and tags, as a single CopyObject keeps them.
            None => match self.stat_with_tags(bucket, from).await? {
                Some(meta) => meta.headers,
                None => {
                    return Err(Error::ObjectChanged {
                        bucket: bucket.to_string(),
                        key: from.to_string(),
                    });
                }
            },
        };
        let id = self.backend.create_upload(bucket, to, &h).await?;
        let result: Result<String> = async {
            let mut parts = Vec::new();
            for (i, range) in ranges.iter().enumerate() {
                let number = i as i32 + 1;
                let part = self
                    .backend
                    .copy_part(bucket, from, to, &id, number, *range)
                    .await?;
                parts.push(part);
            }
            Ok(self
                .backend
                .complete_upload(bucket, to, &id, &parts, PutMode::Overwrite)
                .await?
                .unwrap_or_default())
        }
        .await;
        if result.is_err()
            && let Err(e) = self.backend.abort_upload(bucket, to, &id).await
        {
            warn!(bucket, key = to, error = %e, "could not abort the copy's multipart upload; the next import or the bucket's lifecycle rule will");
        }
        result
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.backend.delete(bucket, key).await
    }

    /// Delete up to 1,000 keys in one DeleteObjects request; missing keys are fine. A key the
    /// server reports it could not delete fails the call, naming it.
    pub async fn delete_batch(&self, bucket: &str, keys: &[String]) -> Result<()> {
        self.backend.delete_many(bucket, keys).await
    }

    /// Every key under `prefix` (for small listings such as one bundle's folder).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let mut lister = self.list(bucket, prefix);
        let mut keys = Vec::new();
        while let Some(page) = lister.next_page().await? {
            keys.extend(page.into_iter().map(|r| r.key));
        }
        Ok(keys)
    }

    /// Abort every open multipart upload under `prefix` (left by a killed run); returns how many.
    pub async fn abort_uploads(&self, bucket: &str, prefix: &str) -> Result<usize> {
        let mut aborted = 0;
        let mut marker = None;
        loop {
            let Some(page) = self.backend.list_uploads(bucket, prefix, marker).await? else {
                // Nothing is lost: an upload never completed is never visible, and the
                // bucket's lifecycle rule (AbortIncompleteMultipartUpload) reclaims its parts.
                warn!(
                    bucket,
                    prefix,
                    "the server does not implement ListMultipartUploads: uploads left by an \
                     interrupted run are not aborted here (a lifecycle rule reclaims them)"
                );
                return Ok(aborted);
            };
            for u in &page.uploads {
                self.backend
                    .abort_upload(bucket, &u.key, &u.upload_id)
                    .await?;
                warn!(
                    bucket,
                    key = u.key,
                    upload_id = u.upload_id,
                    "aborted a multipart upload left by an earlier run"
                );
                aborted += 1;
            }
            match page.next {
                Some(next) => marker = Some(next),
                None => return Ok(aborted),
            }
        }
    }

    /// The part layout of `bucket/key` while its ETag is `etag`, when that ETag is a multipart
    /// upload's (`…-N`): N part HEADs. `None` for any other ETag, once the object changed, or
    /// when the sizes cannot be an S3 object of `size` bytes.
    pub async fn part_layout(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        size: u64,
    ) -> Result<Option<crate::format::layout::PartLayout>> {
        let parts = match etag.rsplit_once('-').map(|(_, n)| n.parse::<u64>()) {
            Some(Ok(n)) if (1..=crate::format::layout::MAX_PARTS).contains(&n) => n,
            _ => return Ok(None),
        };
        let Some(sizes) = self.backend.part_sizes(bucket, key, etag, parts).await? else {
            return Ok(None);
        };
        let layout = crate::format::layout::PartLayout::from_sizes(&sizes);
        match layout.problem(size) {
            None => Ok(Some(layout)),
            Some(why) => {
                tracing::warn!(bucket, key, etag, %why, "the part sizes read are not the object's: it ships without them");
                Ok(None)
            }
        }
    }
}
