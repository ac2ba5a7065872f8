//! `MultipartUpload`, a streaming writer that uploads fixed-size parts with bounded
//! concurrency and completes the object only on an explicit `finish`, over any
//! [`ObjectStore`](super::ObjectStore).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use super::object::ObjectHeaders;
use super::object::{Part, PutMode};
use super::{Fence, Store, WRITER_METADATA};
use crate::error::{BoxError, Error, Result};

/// A streaming writer into an S3 multipart upload.
///
/// An object that ends before its first part is full is sent with one PutObject on `finish`
/// instead. Bytes written are cut into parts of the configured size, uploaded by a background task
/// with at most N parts in flight (writes wait when it is behind). The object becomes visible
/// only when `finish` succeeds; on any error, or when dropped without `finish`, the upload is
/// aborted.
pub struct MultipartUpload {
    writer: Option<DuplexStream>,
    commit: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<String>>>,
    bucket: String,
    key: String,
}

impl MultipartUpload {
    /// The bucket the upload goes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key the upload creates.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Complete the upload; returns once the object exists.
    pub async fn finish(self) -> Result<()> {
        self.finish_etag().await.map(drop)
    }

    /// Complete the upload and return the new object's ETag.
    pub async fn finish_etag(mut self) -> Result<String> {
        use tokio::io::AsyncWriteExt;
        if let Some(mut w) = self.writer.take() {
            // The reader may be gone if the task failed; its error is reported below.
            let _ = w.shutdown().await;
        }
        if let Some(tx) = self.commit.take() {
            let _ = tx.send(());
        }
        self.join().await
    }

    /// Abort the upload and wait until S3 has been told (a process that exits right after an
    /// error leaves no upload open).
    pub async fn abort(mut self) {
        // No more bytes, no commit: the task aborts the upload and ends.
        self.writer.take();
        self.commit.take();
        if let Err(e) = self.join().await {
            debug!(bucket = %self.bucket, key = %self.key, error = %e, "upload aborted");
        }
    }

    async fn join(&mut self) -> Result<String> {
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| {
                Err(Error::Stream {
                    bucket: self.bucket.clone(),
                    key: self.key.clone(),
                    source: Box::new(e),
                })
            }),
            None => Ok(String::new()),
        }
    }

    /// When a write fails, the task has ended: report its error instead of "broken pipe".
    fn poll_failure(&mut self, cx: &mut Context<'_>, io: std::io::Error) -> Poll<std::io::Error> {
        match self.task.as_mut() {
            Some(task) => {
                let res = ready!(Pin::new(task).poll(cx));
                self.task = None;
                Poll::Ready(match res {
                    Ok(Err(e)) => std::io::Error::other(e),
                    Ok(Ok(_)) => io,
                    Err(join) => std::io::Error::other(join),
                })
            }
            None => Poll::Ready(io),
        }
    }
}

use std::future::Future;

impl AsyncWrite for MultipartUpload {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let Some(w) = this.writer.as_mut() else {
            return Poll::Ready(Err(std::io::Error::other("write after finish")));
        };
        match ready!(Pin::new(w).poll_write(cx, buf)) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(ready!(this.poll_failure(cx, e)))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match this.writer.as_mut() {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Shutdown only ends the byte stream; `finish` completes the upload.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match this.writer.as_mut() {
            Some(w) => Pin::new(w).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl Drop for MultipartUpload {
    fn drop(&mut self) {
        if self.task.is_some() && self.commit.is_some() {
            debug!(bucket = %self.bucket, key = %self.key, "multipart upload dropped before finish: aborting");
        }
        // Dropping `commit` makes the task abort the upload.
    }
}

pub(super) struct PartUploader {
    pub(super) store: Store,
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) part_size: usize,
    /// The source's part sizes, when the upload repeats them (parts past them: `part_size`).
    pub(super) layout: Option<crate::format::layout::PartLayout>,
    pub(super) parts_in_flight: usize,
    pub(super) headers: ObjectHeaders,
    pub(super) fence: Option<Arc<Fence>>,
}

impl PartUploader {
    /// The size of part `number`: the layout's, or the upload's part size.
    fn size_of(&self, number: i32) -> usize {
        self.layout
            .as_ref()
            .and_then(|l| l.part_size(u64::try_from(number).ok()?))
            .and_then(|s| usize::try_from(s).ok())
            .unwrap_or(self.part_size)
    }

    /// The result of a finished part task; a panicked task is reported with this upload's key.
    fn joined(
        &self,
        done: Option<std::result::Result<Result<Part>, tokio::task::JoinError>>,
    ) -> Result<Part> {
        match done {
            Some(Ok(part)) => part,
            Some(Err(join)) => Err(Error::Stream {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                source: Box::new(join) as BoxError,
            }),
            None => unreachable!("join_next on a non-empty set"),
        }
    }

    pub(super) async fn run(
        self,
        mut reader: DuplexStream,
        commit: oneshot::Receiver<()>,
    ) -> Result<String> {
        // An object smaller than one part is sent whole, with one PutObject, once `finish`
        // is called (and nothing at all is sent when the writer is dropped or aborted): one
        // request instead of three, and no upload is ever open for it. Only an upload that
        // repeats a source's part layout keeps its parts (its ETag and composite checksum).
        let mut first = None;
        if self.layout.is_none() {
            let part = read_part(&mut reader, self.part_size)
                .await
                .map_err(|e| self.stream_error(e))?;
            if part.len() < self.part_size {
                drop(reader);
                if commit.await.is_err() {
                    return Err(self.aborted());
                }
                return self.put_whole(part).await;
            }
            first = Some(part);
        }
        let backend = &self.store.backend;
        let upload_id = backend
            .create_upload(&self.bucket, &self.key, &self.headers)
            .await?;
        let result = self
            .upload_parts(&upload_id, first, &mut reader, commit)
            .await;
        drop(reader);
        if result.is_err() {
            let aborted = backend
                .abort_upload(&self.bucket, &self.key, &upload_id)
                .await;
            if let Err(e) = aborted {
                warn!(bucket = %self.bucket, key = %self.key, error = %e, "could not abort multipart upload; the bucket's lifecycle rule or the next run will");
            }
        }
        result
    }

    fn stream_error(&self, e: std::io::Error) -> Error {
        Error::Stream {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            source: Box::new(e),
        }
    }

    fn aborted(&self) -> Error {
        Error::UploadAborted {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            reason: "the writer was dropped before finish",
        }
    }

    /// Send an object smaller than a part with one PutObject, under the same rules as
    /// [`Self::complete`].
    async fn put_whole(&self, body: Bytes) -> Result<String> {
        use md5::Digest;
        let (bucket, key) = (self.bucket.as_str(), self.key.as_str());
        let backend = &self.store.backend;
        let etag = match self.fence {
            None => backend
                .put(bucket, key, body, &self.headers, PutMode::Overwrite)
                .await?
                .unwrap_or_default(),
            Some(_) => {
                let expected = hex::encode(md5::Md5::digest(&body));
                self.create_fenced(Some(expected), &Sent::Whole(body))
                    .await?
            }
        };
        self.store.activity().tick();
        Ok(etag)
    }

    /// Upload the parts (`first`: part 1, read already) and complete the upload on commit.
    async fn upload_parts(
        &self,
        upload_id: &str,
        mut first: Option<Bytes>,
        reader: &mut DuplexStream,
        commit: oneshot::Receiver<()>,
    ) -> Result<String> {
        let mut in_flight: JoinSet<Result<Part>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut number = 1i32;
        loop {
            let size = self.size_of(number);
            let part = match first.take() {
                Some(part) => part,
                None => read_part(reader, size)
                    .await
                    .map_err(|e| self.stream_error(e))?,
            };
            let last = part.len() < size;
            if part.is_empty() && number > 1 {
                break;
            }
            while in_flight.len() >= self.parts_in_flight {
                parts.push(self.joined(in_flight.join_next().await)?);
            }
            let (store, bucket, key) = (self.store.clone(), self.bucket.clone(), self.key.clone());
            let id = upload_id.to_string();
            in_flight.spawn(async move {
                let done = store
                    .backend
                    .upload_part(&bucket, &key, &id, number, part)
                    .await?;
                store.activity().tick();
                Ok(done)
            });
            number += 1;
            if last {
                break;
            }
        }
        while let Some(done) = in_flight.join_next().await {
            parts.push(self.joined(Some(done))?);
        }
        if commit.await.is_err() {
            return Err(self.aborted());
        }
        parts.sort_by_key(|p| p.number);
        self.complete(upload_id, &parts).await
    }

    /// Complete the upload: over whatever is there without a fence; with one, only as a new
    /// object, or over another run's object while the fence still holds.
    async fn complete(&self, upload_id: &str, parts: &[Part]) -> Result<String> {
        let (bucket, key) = (self.bucket.as_str(), self.key.as_str());
        let backend = &self.store.backend;
        if self.fence.is_none() {
            return Ok(backend
                .complete_upload(bucket, key, upload_id, parts, PutMode::Overwrite)
                .await?
                .unwrap_or_default());
        }
        self.create_fenced(multipart_etag(parts), &Sent::Parts(upload_id, parts))
            .await
    }

    /// Create the object from `sent` only if nothing is at its key (`None`: something is).
    async fn create(&self, sent: &Sent<'_>) -> Result<Option<String>> {
        let (bucket, key) = (self.bucket.as_str(), self.key.as_str());
        let backend = &self.store.backend;
        match sent {
            Sent::Whole(body) => {
                backend
                    .put(bucket, key, body.clone(), &self.headers, PutMode::Create)
                    .await
            }
            Sent::Parts(id, parts) => {
                backend
                    .complete_upload(bucket, key, id, parts, PutMode::Create)
                    .await
            }
        }
    }

    /// Create the object from `sent`; if something is at the key already, accept it when it is our own (ETag `expected`: an earlier attempt whose
    /// answer was lost), refuse when this run wrote it under the same key before, and replace
    /// another run's only while this run's fence still holds.
    async fn create_fenced(&self, expected: Option<String>, sent: &Sent<'_>) -> Result<String> {
        let (bucket, key) = (self.bucket.as_str(), self.key.as_str());
        let fenced = || Error::Fenced {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        let Some(fence) = &self.fence else {
            return Err(fenced());
        };
        if let Some(etag) = self.create(sent).await? {
            return Ok(etag);
        }
        if let Some((etag, writer)) = self.store.head_writer(bucket, key).await? {
            if Some(&etag) == expected.as_ref() {
                return Ok(etag);
            }
            // Written by this very run under the same key: the key was handed out twice.
            // That object is another worker's good work; this upload is the one dropped.
            let ours = self.headers.metadata.get(WRITER_METADATA);
            if ours.is_some() && writer.as_ref() == ours {
                return Err(Error::WrittenTwice {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                });
            }
        }
        // Another run's: replaced only while this run still holds its fence.
        if !fence.confirm().await? {
            return Err(fenced());
        }
        warn!(
            bucket,
            key, "replacing an object written by a run that lost its lease"
        );
        self.store.backend.delete(bucket, key).await?;
        self.create(sent).await?.ok_or_else(fenced)
    }
}

/// What an upload sends to create its object: the whole body, or an open upload's parts.
enum Sent<'a> {
    Whole(Bytes),
    Parts(&'a str, &'a [Part]),
}

/// The ETag S3 gives a multipart object made of `parts`: the MD5 of the parts' binary MD5s,
/// a dash, and the part count (`None` if a part's ETag is not a plain MD5).
pub fn multipart_etag(parts: &[Part]) -> Option<String> {
    use md5::Digest;
    let mut md5 = md5::Md5::new();
    for p in parts {
        md5.update(hex::decode(&p.etag).ok()?);
    }
    Some(format!("{}-{}", hex::encode(md5.finalize()), parts.len()))
}

/// Read up to `size` bytes (fewer only at end of stream). The buffer grows with the bytes that
/// really arrive, never ahead of them to a size someone declared.
async fn read_part<R: AsyncRead + Unpin>(reader: &mut R, size: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size.min(8 * 1024 * 1024));
    while buf.len() < size {
        let mut limited = (&mut *reader).take((size - buf.len()) as u64);
        if limited.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

impl MultipartUpload {
    /// Start `job`'s upload task; bytes written go to it through a bounded pipe.
    pub(super) fn start(job: PartUploader) -> MultipartUpload {
        let (writer, reader) = tokio::io::duplex(256 * 1024);
        let (commit_tx, commit_rx) = oneshot::channel();
        let (bucket, key) = (job.bucket.clone(), job.key.clone());
        let task = job
            .store
            .run()
            .uploads()
            .clone()
            .spawn(job.run(reader, commit_rx));
        MultipartUpload {
            writer: Some(writer),
            commit: Some(commit_tx),
            task: Some(task),
            bucket,
            key,
        }
    }
}

impl crate::format::sink::VolumeSink for MultipartUpload {
    fn finish(self) -> impl Future<Output = Result<()>> + Send {
        MultipartUpload::finish(self)
    }
}

/// Starting uploads through the run's store.
impl super::Store {
    /// Start a streaming multipart upload of `bucket/key`.
    pub fn multipart(
        &self,
        bucket: &str,
        key: &str,
        part_size: u64,
        parts_in_flight: usize,
        headers: &ObjectHeaders,
    ) -> MultipartUpload {
        self.multipart_fenced(bucket, key, part_size, parts_in_flight, headers, None)
    }

    /// A streaming multipart upload of `bucket/key` in the parts of `layout` (a source
    /// object's), so that the object's ETag and composite checksum equal the source's.
    pub fn multipart_laid_out(
        &self,
        bucket: &str,
        key: &str,
        layout: &crate::format::layout::PartLayout,
        parts_in_flight: usize,
        headers: &ObjectHeaders,
    ) -> MultipartUpload {
        let first = layout
            .part_size(1)
            .unwrap_or(crate::format::layout::MIN_PART);
        MultipartUpload::start(PartUploader {
            store: self.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            part_size: first as usize,
            layout: Some(layout.clone()),
            parts_in_flight: parts_in_flight.max(1),
            headers: headers.clone(),
            fence: None,
        })
    }

    /// A multipart upload that only creates its object (`If-None-Match: *` on completion)
    /// while `fence` holds: an object already there is replaced only after the fence is
    /// confirmed (a run that lost its lease never overwrites the new holder's object).
    pub fn multipart_fenced(
        &self,
        bucket: &str,
        key: &str,
        part_size: u64,
        parts_in_flight: usize,
        headers: &ObjectHeaders,
        fence: Option<Arc<Fence>>,
    ) -> MultipartUpload {
        MultipartUpload::start(PartUploader {
            store: self.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            part_size: part_size as usize,
            layout: None,
            parts_in_flight: parts_in_flight.max(1),
            headers: headers.clone(),
            fence,
        })
    }
}
