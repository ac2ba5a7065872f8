//! S3 adapter: the only module that speaks `aws_sdk_s3`. Listing, conditional and ranged
//! reads, small documents, and `MultipartUpload`, a streaming writer that uploads fixed-size
//! parts with bounded concurrency and completes the object only on an explicit `finish`.
//!
//! Bodies we send (PutObject, UploadPart) carry a CRC-32 that S3 checks, so their payload is
//! not also SHA-256-signed (`UNSIGNED-PAYLOAD`, as aws-cli and boto3 do): one hash pass less.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, EncodingType,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::error::{BoxError, Error, Result};
use crate::inventory::ObjectRecord;
use crate::manifest::ObjectHeaders;

/// Set an object's HTTP headers and user metadata on a PUT, CreateMultipartUpload or CopyObject
/// request builder (their setters share names, not a trait).
macro_rules! with_headers {
    ($req:expr, $h:expr, $bucket:expr, $key:expr) => {{
        let h: &ObjectHeaders = $h;
        $req.set_content_type(h.content_type.clone())
            .set_content_encoding(h.content_encoding.clone())
            .set_content_disposition(h.content_disposition.clone())
            .set_content_language(h.content_language.clone())
            .set_cache_control(h.cache_control.clone())
            .set_expires(expires(h, $bucket, $key))
            .set_metadata(metadata(h))
    }};
}

/// Build an S3 client from shared SDK config (`AWS_ENDPOINT_URL` etc. already applied).
pub fn client(sdk: &aws_config::SdkConfig, path_style: bool) -> Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(path_style)
        .build();
    Client::from_conf(conf)
}

fn http_status<E, R>(e: &SdkError<E, R>) -> Option<u16>
where
    R: HttpStatus,
{
    e.raw_response().map(HttpStatus::status_code)
}

trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn s3_build_err(
    op: &'static str,
    bucket: &str,
    key: &str,
    e: aws_sdk_s3::error::BuildError,
) -> Error {
    Error::S3 {
        op,
        bucket: bucket.to_string(),
        key: key.to_string(),
        class: crate::error::Class::Rejected,
        source: Box::new(e),
    }
}

fn s3_err<E>(
    op: &'static str,
    bucket: &str,
    key: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if e.code() == Some("NoSuchBucket") {
        return Error::NoSuchBucket {
            bucket: bucket.to_string(),
        };
    }
    Error::S3 {
        op,
        bucket: bucket.to_string(),
        key: key.to_string(),
        class: crate::sdk_error::classify(&e),
        source: Box::new(e),
    }
}

/// The `ObjectMeta` of a GetObject or HeadObject output (both have the same accessors).
macro_rules! object_meta {
    ($out:expr, $size:expr) => {{
        let out = &$out;
        ObjectMeta {
            etag: unquote(out.e_tag().unwrap_or_default()),
            size: $size,
            last_modified_ms: out
                .last_modified()
                .map(|d| d.to_millis().unwrap_or(0))
                .unwrap_or(0),
            headers: headers_of(
                out.content_type(),
                out.content_encoding(),
                out.content_disposition(),
                out.content_language(),
                out.cache_control(),
                out.expires_string(),
                out.metadata(),
            ),
        }
    }};
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// Decode a key from a ListObjectsV2 response with `encoding-type=url` (`+` is a space).
fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            out.push(b' ');
        } else if b == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 2;
        } else {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Object metadata as a GET or HEAD returned it.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub etag: String,
    /// Size of the whole object (from Content-Range on ranged reads).
    pub size: u64,
    pub last_modified_ms: i64,
    pub headers: ObjectHeaders,
}

/// Result of a conditional read.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned once per read, never stored
pub enum Got<B = Bytes> {
    Found {
        meta: ObjectMeta,
        body: B,
    },
    /// If-Match failed: the object has a new version.
    Changed,
    /// The key no longer exists.
    Gone,
}

/// The body of one read, chunk by chunk, resuming a broken body from the byte it stopped at
/// (pinned to the version first read, at most [`BODY_RESUMES`] times).
pub struct Body {
    store: Store,
    bucket: String,
    key: String,
    etag: Option<String>,
    start: u64,
    want: u64,
    got: u64,
    resumed: u32,
    stream: ByteStream,
    /// Set when the object changed or vanished before a resumed read: the body is cut short.
    pub lost: Option<Got>,
}

impl Body {
    /// The next chunk, or `None` at the end (check [`Body::lost`] then).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.lost.is_some() {
                return Ok(None);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.got += chunk.len() as u64;
                    return Ok(Some(chunk));
                }
                None => return Ok(None),
                Some(Err(e)) => {
                    let (bucket, key) = (self.bucket.as_str(), self.key.as_str());
                    if self.resumed >= BODY_RESUMES || self.got >= self.want {
                        return Err(Error::Stream {
                            bucket: bucket.to_string(),
                            key: key.to_string(),
                            source: Box::new(e),
                        });
                    }
                    self.resumed += 1;
                    self.store.activity.resumed();
                    let at = self.start + self.got;
                    warn!(bucket, key, at, attempt = self.resumed, error = %e, "read broke mid-body: resuming from there");
                    let range = Some((at, self.start + self.want - 1));
                    match self
                        .store
                        .get_once(bucket, key, self.etag.as_deref(), range)
                        .await?
                    {
                        Got::Found { body, .. } => self.stream = body,
                        Got::Changed => self.lost = Some(Got::Changed),
                        Got::Gone => self.lost = Some(Got::Gone),
                    }
                }
            }
        }
    }
}

/// How many times a broken body is asked for again (from where it broke) before the read fails.
const BODY_RESUMES: u32 = 3;

/// User metadata naming the run that wrote an object (volumes carry it).
pub const WRITER_METADATA: &str = "ferry-writer";

/// S3 operations the engine uses. Its [`Activity`] is the run's: clones share it,
/// [`Store::for_run`] starts a new one.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    activity: std::sync::Arc<crate::activity::Activity>,
}

/// A ListObjectsV2 listing, page by page, as inventory records in key order: the whole
/// prefix, or one key range of it (after one key, up to and including another).
pub struct Lister {
    client: Client,
    activity: std::sync::Arc<crate::activity::Activity>,
    bucket: String,
    prefix: String,
    token: Option<String>,
    done: bool,
    previous: Option<String>,
    /// Keys after this one only (`StartAfter`, sent with the first request; keys at or before
    /// it are dropped too, should a server ignore it).
    floor: Option<String>,
    /// Keys up to and including this one only (the listing stops past it).
    until: Option<String>,
}

impl Lister {
    /// The next page of records; `None` when the listing is over.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ObjectRecord>>> {
        if self.done {
            return Ok(None);
        }
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .encoding_type(EncodingType::Url)
            .set_start_after(if self.token.is_none() {
                self.floor.clone()
            } else {
                None
            })
            .set_continuation_token(self.token.take())
            .send()
            .await
            .map_err(|e| s3_err("ListObjectsV2", &self.bucket, &self.prefix, e))?;
        self.activity.tick();
        let encoded = out.encoding_type() == Some(&EncodingType::Url);
        let mut page = Vec::with_capacity(out.contents().len());
        for o in out.contents() {
            let raw = o.key().unwrap_or_default();
            let key = if encoded {
                url_decode(raw)
            } else {
                raw.to_string()
            };
            if let Some(prev) = &self.previous
                && prev.as_str() >= key.as_str()
            {
                return Err(Error::UnsortedListing {
                    bucket: self.bucket.clone(),
                    previous: prev.clone(),
                    key,
                });
            }
            if self
                .floor
                .as_ref()
                .is_some_and(|f| key.as_str() <= f.as_str())
            {
                continue;
            }
            if self
                .until
                .as_ref()
                .is_some_and(|u| key.as_str() > u.as_str())
            {
                // Past the range: the rest belongs to the next one.
                self.done = true;
                return Ok(Some(page));
            }
            self.previous = Some(key.clone());
            page.push(ObjectRecord {
                key,
                size: o.size().unwrap_or(0).max(0) as u64,
                etag: unquote(o.e_tag().unwrap_or_default()),
                last_modified_ms: o
                    .last_modified()
                    .map(|d| d.to_millis().unwrap_or(0))
                    .unwrap_or(0),
                storage_class: o
                    .storage_class()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_else(|| "STANDARD".to_string()),
            });
        }
        match out.next_continuation_token() {
            Some(t) if out.is_truncated() == Some(true) => self.token = Some(t.to_string()),
            _ => self.done = true,
        }
        Ok(Some(page))
    }
}

fn headers_of(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    content_disposition: Option<&str>,
    content_language: Option<&str>,
    cache_control: Option<&str>,
    expires: Option<&str>,
    metadata: Option<&std::collections::HashMap<String, String>>,
) -> ObjectHeaders {
    let s = |v: Option<&str>| v.map(str::to_string);
    ObjectHeaders {
        content_type: s(content_type),
        content_encoding: s(content_encoding),
        content_disposition: s(content_disposition),
        content_language: s(content_language),
        cache_control: s(cache_control),
        expires: s(expires),
        metadata: metadata
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default(),
    }
}

/// Total size from a `Content-Range: bytes a-b/total` header.
fn range_total(content_range: Option<&str>) -> Option<u64> {
    content_range?.rsplit_once('/')?.1.parse().ok()
}

impl Store {
    pub fn new(client: Client) -> Self {
        Store {
            client,
            activity: Default::default(),
        }
    }

    /// The same client with a new [`Activity`](crate::activity::Activity): one per run.
    pub fn for_run(&self) -> Store {
        Store {
            client: self.client.clone(),
            activity: Default::default(),
        }
    }

    /// What this run's requests did so far.
    pub fn activity(&self) -> &std::sync::Arc<crate::activity::Activity> {
        &self.activity
    }

    /// Fail with [`Error::NoSuchBucket`] unless `bucket` exists and is visible (a check before
    /// a run writes anything into it).
    pub async fn check_bucket(&self, bucket: &str) -> Result<()> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if http_status(&e) == Some(404) => Err(Error::NoSuchBucket {
                bucket: bucket.to_string(),
            }),
            Err(e) => Err(s3_err("HeadBucket", bucket, "", e)),
        }
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
            client: self.client.clone(),
            activity: self.activity.clone(),
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
                self.activity.tick();
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
        let first = self.get_once(bucket, key, if_match, range).await?;
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

    /// One GetObject: its metadata and its body as a stream.
    async fn get_once(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<Got<ByteStream>> {
        let mut req = self.client.get_object().bucket(bucket).key(key);
        // A server that lists no ETags gives nothing to match.
        if let Some(etag) = if_match.filter(|e| !e.is_empty()) {
            req = req.if_match(format!("\"{etag}\""));
        }
        req = match range {
            Some((start, end)) => req.range(format!("bytes={start}-{end}")),
            None => req.checksum_mode(ChecksumMode::Enabled),
        };
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                return match (http_status(&e), e.code()) {
                    (Some(412), _) | (_, Some("PreconditionFailed")) => Ok(Got::Changed),
                    (Some(404), _) | (_, Some("NoSuchKey")) if e.code() != Some("NoSuchBucket") => {
                        Ok(Got::Gone)
                    }
                    // An archive tier (Intelligent-Tiering's, or a class changed since the
                    // listing): it cannot be read until it is restored.
                    (_, Some("InvalidObjectState")) => Err(Error::Archived {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                    }),
                    _ => Err(s3_err("GetObject", bucket, key, e)),
                };
            }
        };
        let size = match range {
            Some(_) => range_total(out.content_range()),
            None => out.content_length().map(|l| l.max(0) as u64),
        }
        .unwrap_or(0);
        let meta = object_meta!(out, size);
        Ok(Got::Found {
            meta,
            body: out.body,
        })
    }

    /// HeadObject of the current version, or `None` if the key is gone.
    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(e) if http_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(s3_err("HeadObject", bucket, key, e)),
        }
    }

    /// Metadata and headers of the current version, or `None` if the key is gone.
    pub async fn stat(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self
            .head_object(bucket, key)
            .await?
            .map(|out| object_meta!(out, out.content_length().unwrap_or(0).max(0) as u64)))
    }

    /// ETag and size of the current version, or `None` if the key is gone.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<(String, u64)>> {
        Ok(self.head_object(bucket, key).await?.map(|out| {
            (
                unquote(out.e_tag().unwrap_or_default()),
                out.content_length().unwrap_or(0).max(0) as u64,
            )
        }))
    }

    /// The `x-amz-restore` header of an object (where a restore of an archived object
    /// stands); `None` without one, or if the key is gone.
    pub async fn restore_header(&self, bucket: &str, key: &str) -> Result<Option<String>> {
        Ok(self
            .head_object(bucket, key)
            .await?
            .and_then(|out| out.restore().map(str::to_string)))
    }

    /// An object's ETag and the run that wrote it ([`WRITER_METADATA`]); `None` if it does
    /// not exist.
    pub async fn head_writer(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some((
                unquote(out.e_tag().unwrap_or_default()),
                out.metadata().and_then(|m| m.get(WRITER_METADATA)).cloned(),
            ))),
            Err(e) if http_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(s3_err("HeadObject", bucket, key, e)),
        }
    }

    /// Read a small document whole; `None` if it does not exist.
    pub async fn get_document(&self, bucket: &str, key: &str) -> Result<Option<Bytes>> {
        match self.get(bucket, key, None, None).await? {
            Got::Found { body, .. } => Ok(Some(body)),
            Got::Gone => Ok(None),
            Got::Changed => unreachable!("no If-Match was sent"),
        }
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
        match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.body.into_async_read())),
            Err(e) if http_status(&e) == Some(404) && e.code() != Some("NoSuchBucket") => Ok(None),
            Err(e) => Err(s3_err("GetObject", bucket, key, e)),
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
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| s3_err("PutObject", bucket, key, e))?;
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
        let req = self.client.put_object().bucket(bucket).key(key);
        let out = with_headers!(req, h, bucket, key)
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| s3_err("PutObject", bucket, key, e))?;
        Ok(unquote(out.e_tag().unwrap_or_default()))
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
        if size > MAX_COPY {
            return self.copy_parts(bucket, from, to, size, headers).await;
        }
        let mut req = self
            .client
            .copy_object()
            .bucket(bucket)
            .key(to)
            .copy_source(copy_source(bucket, from));
        if let Some(h) = headers {
            req = req.metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace);
            req = with_headers!(req, h, bucket, to);
        }
        let out = req
            .send()
            .await
            .map_err(|e| s3_err("CopyObject", bucket, to, e))?;
        Ok(unquote(
            out.copy_object_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default(),
        ))
    }

    async fn copy_parts(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        size: u64,
        headers: Option<&ObjectHeaders>,
    ) -> Result<String> {
        let h = match headers {
            Some(h) => h.clone(),
            None => match self.stat(bucket, from).await? {
                Some(meta) => meta.headers,
                None => {
                    return Err(Error::ObjectChanged {
                        bucket: bucket.to_string(),
                        key: from.to_string(),
                    });
                }
            },
        };
        let req = self.client.create_multipart_upload().bucket(bucket).key(to);
        let created = with_headers!(req, &h, bucket, to)
            .send()
            .await
            .map_err(|e| s3_err("CreateMultipartUpload", bucket, to, e))?;
        let id = created.upload_id().unwrap_or_default().to_string();
        let mut parts = Vec::new();
        let result: Result<String> = async {
            for (i, start) in (0..size).step_by(COPY_PART as usize).enumerate() {
                let end = (start + COPY_PART).min(size) - 1;
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(bucket)
                    .key(to)
                    .upload_id(&id)
                    .part_number(i as i32 + 1)
                    .copy_source(copy_source(bucket, from))
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| s3_err("UploadPartCopy", bucket, to, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(i as i32 + 1)
                        .set_e_tag(
                            out.copy_part_result()
                                .and_then(|r| r.e_tag())
                                .map(str::to_string),
                        )
                        .build(),
                );
            }
            let done = self
                .client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(to)
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| s3_err("CompleteMultipartUpload", bucket, to, e))?;
            Ok(unquote(done.e_tag().unwrap_or_default()))
        }
        .await;
        if result.is_err()
            && let Err(e) = abort_upload(&self.client, bucket, to, &id).await
        {
            warn!(bucket, key = to, error = %e, "could not abort the copy's multipart upload; the next import or the bucket's lifecycle rule will");
        }
        result
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_err("DeleteObject", bucket, key, e))?;
        Ok(())
    }

    /// Delete up to 1,000 keys in one DeleteObjects request; missing keys are fine. A key the
    /// server reports it could not delete fails the call, naming it.
    pub async fn delete_batch(&self, bucket: &str, keys: &[String]) -> Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        if keys.is_empty() {
            return Ok(());
        }
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| s3_build_err("DeleteObjects", bucket, &keys[0], e))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| s3_build_err("DeleteObjects", bucket, &keys[0], e))?;
        let out = self
            .client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| s3_err("DeleteObjects", bucket, &keys[0], e))?;
        if let Some(e) = out.errors().iter().find(|e| e.code() != Some("NoSuchKey")) {
            return Err(Error::S3 {
                op: "DeleteObjects",
                bucket: bucket.to_string(),
                key: e.key().unwrap_or_default().to_string(),
                class: crate::error::Class::of(e.code(), None, true),
                source: format!(
                    "{}: {}",
                    e.code().unwrap_or("error"),
                    e.message().unwrap_or_default()
                )
                .into(),
            });
        }
        Ok(())
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
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await;
            let out = match out {
                // Some S3-compatible servers (s3s-fs, for one) lack the call. Nothing is lost:
                // an upload never completed is never visible, and the bucket's lifecycle rule
                // (AbortIncompleteMultipartUpload) reclaims its parts.
                Err(e) if e.code() == Some("NotImplemented") => {
                    warn!(
                        bucket,
                        prefix,
                        "the server does not implement ListMultipartUploads: uploads left by an \
                         interrupted run are not aborted here (a lifecycle rule reclaims them)"
                    );
                    return Ok(aborted);
                }
                other => other.map_err(|e| s3_err("ListMultipartUploads", bucket, prefix, e))?,
            };
            for u in out.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                abort_upload(&self.client, bucket, key, id).await?;
                warn!(
                    bucket,
                    key,
                    upload_id = id,
                    "aborted a multipart upload left by an earlier run"
                );
                aborted += 1;
            }
            if out.is_truncated() == Some(true) {
                key_marker = out.next_key_marker().map(str::to_string);
                id_marker = out.next_upload_id_marker().map(str::to_string);
                if key_marker.is_none() {
                    break;
                }
            } else {
                break;
            }
        }
        Ok(aborted)
    }

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
        fence: Option<std::sync::Arc<Fence>>,
    ) -> MultipartUpload {
        let (writer, reader) = tokio::io::duplex(256 * 1024);
        let (commit_tx, commit_rx) = oneshot::channel();
        let job = PartUploader {
            client: self.client.clone(),
            activity: self.activity.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            part_size: part_size as usize,
            parts_in_flight: parts_in_flight.max(1),
            headers: headers.clone(),
            fence,
        };
        let task = UPLOADS.spawn(job.run(reader, commit_rx));
        MultipartUpload {
            writer: Some(writer),
            commit: Some(commit_tx),
            task: Some(task),
            bucket: bucket.to_string(),
            key: key.to_string(),
        }
    }
}

/// Every multipart upload's task, so that a process can wait for the aborts of the uploads it
/// dropped (an error path, a stop request) before it exits.
static UPLOADS: std::sync::LazyLock<tokio_util::task::TaskTracker> =
    std::sync::LazyLock::new(tokio_util::task::TaskTracker::new);

/// Wait (at most `limit`) until every multipart upload this process started has completed or
/// been aborted: call before exiting, so that no upload is left open by a dropped writer.
pub async fn settle_uploads(limit: std::time::Duration) -> bool {
    UPLOADS.close();
    let settled = tokio::time::timeout(limit, UPLOADS.wait()).await.is_ok();
    UPLOADS.reopen();
    settled
}

/// A streaming writer into an S3 multipart upload.
///
/// Bytes written are cut into parts of the configured size, uploaded by a background task
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

struct PartUploader {
    client: Client,
    activity: std::sync::Arc<crate::activity::Activity>,
    bucket: String,
    key: String,
    part_size: usize,
    parts_in_flight: usize,
    headers: ObjectHeaders,
    fence: Option<std::sync::Arc<Fence>>,
}

impl PartUploader {
    /// The result of a finished part task; a panicked task is reported with this upload's key.
    fn joined(
        &self,
        done: Option<std::result::Result<Result<CompletedPart>, tokio::task::JoinError>>,
    ) -> Result<CompletedPart> {
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

    async fn run(self, mut reader: DuplexStream, commit: oneshot::Receiver<()>) -> Result<String> {
        let h = &self.headers;
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key);
        let created = with_headers!(req, h, &self.bucket, &self.key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| s3_err("CreateMultipartUpload", &self.bucket, &self.key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(&upload_id, &mut reader, commit).await;
        drop(reader);
        if result.is_err() {
            let aborted = abort_upload(&self.client, &self.bucket, &self.key, &upload_id).await;
            if let Err(e) = aborted {
                warn!(bucket = %self.bucket, key = %self.key, error = %e, "could not abort multipart upload; the bucket's lifecycle rule or the next run will");
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        upload_id: &str,
        reader: &mut DuplexStream,
        commit: oneshot::Receiver<()>,
    ) -> Result<String> {
        let mut in_flight: JoinSet<Result<CompletedPart>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut number = 1i32;
        loop {
            let part = read_part(reader, self.part_size)
                .await
                .map_err(|e| Error::Stream {
                    bucket: self.bucket.clone(),
                    key: self.key.clone(),
                    source: Box::new(e),
                })?;
            let last = part.len() < self.part_size;
            if part.is_empty() && number > 1 {
                break;
            }
            while in_flight.len() >= self.parts_in_flight {
                parts.push(self.joined(in_flight.join_next().await)?);
            }
            let req = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(part));
            let (bucket, key) = (self.bucket.clone(), self.key.clone());
            let activity = self.activity.clone();
            in_flight.spawn(async move {
                let out = req
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|e| s3_err("UploadPart", &bucket, &key, e))?;
                activity.tick();
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                    .build())
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
            return Err(Error::UploadAborted {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                reason: "the writer was dropped before finish",
            });
        }
        parts.sort_by_key(|p| p.part_number());
        let Some(fence) = &self.fence else {
            return self
                .complete(upload_id, parts, false)
                .await
                .map(|etag| etag.unwrap_or_default());
        };
        if let Some(etag) = self.complete(upload_id, parts.clone(), true).await? {
            return Ok(etag);
        }
        // Something is at the key already. Our own object, if an earlier attempt's answer was
        // lost: its ETag is the one S3 gives these parts.
        let expected = multipart_etag(&parts);
        let store = Store::new(self.client.clone());
        if let Some((etag, writer)) = store.head_writer(&self.bucket, &self.key).await? {
            if Some(&etag) == expected.as_ref() {
                return Ok(etag);
            }
            // Written by this very run under the same key: the key was handed out twice.
            // That object is another worker's good work; this upload is the one dropped.
            let ours = self.headers.metadata.get(WRITER_METADATA);
            if ours.is_some() && writer.as_ref() == ours {
                return Err(Error::WrittenTwice {
                    bucket: self.bucket.clone(),
                    key: self.key.clone(),
                });
            }
        }
        // Another run's: replaced only while this run still holds its fence.
        if !fence.confirm().await? {
            return Err(Error::Fenced {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
            });
        }
        warn!(bucket = %self.bucket, key = %self.key, "replacing an object written by a run that lost its lease");
        store.delete(&self.bucket, &self.key).await?;
        self.complete(upload_id, parts, true)
            .await?
            .ok_or_else(|| Error::Fenced {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
            })
    }

    /// Complete the upload; `None` when `create_only` and the key exists already.
    async fn complete(
        &self,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        create_only: bool,
    ) -> Result<Option<String>> {
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if create_only {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(done) => Ok(Some(unquote(done.e_tag().unwrap_or_default()))),
            Err(e) if create_only && http_status(&e).is_some_and(|s| s == 412 || s == 409) => {
                Ok(None)
            }
            Err(e) => Err(s3_err(
                "CompleteMultipartUpload",
                &self.bucket,
                &self.key,
                e,
            )),
        }
    }
}

/// The ETag S3 gives a multipart object made of `parts`: the MD5 of the parts' binary MD5s,
/// a dash, and the part count (`None` if a part's ETag is not a plain MD5).
fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    use md5::Digest;
    let mut md5 = md5::Md5::new();
    for p in parts {
        md5.update(hex::decode(unquote(p.e_tag()?)).ok()?);
    }
    Some(format!("{}-{}", hex::encode(md5.finalize()), parts.len()))
}

/// A run's claim on its checkpoint document: every write is conditional on the ETag this run
/// last wrote (or on there being none), so once another run has taken the job over — and
/// rewritten the checkpoint with its own name — every write of the old run fails and it
/// stops. This is the fencing token of the run's S3 writes.
pub struct Fence {
    store: Store,
    bucket: String,
    key: String,
    held: tokio::sync::Mutex<Held>,
}

struct Held {
    etag: Option<String>,
    body: Bytes,
}

impl Fence {
    /// A fence over `bucket/key`, as read with `etag` (`None`: the document does not exist).
    pub fn new(store: &Store, bucket: &str, key: &str, etag: Option<String>) -> Self {
        Fence {
            store: store.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            held: tokio::sync::Mutex::new(Held {
                etag,
                body: Bytes::new(),
            }),
        }
    }

    /// A fence over `bucket/key` as read: `body` with `etag`. Its claim can be confirmed at
    /// once (a later step of the run that wrote it, such as a retried commit).
    pub fn read(store: &Store, bucket: &str, key: &str, etag: String, body: Bytes) -> Self {
        Fence {
            store: store.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            held: tokio::sync::Mutex::new(Held {
                etag: Some(etag),
                body,
            }),
        }
    }

    /// Write the JSON document `body` if it is still the one this run last saw. `false`:
    /// another run wrote it since (this run is fenced off and must stop).
    pub async fn write(&self, body: Bytes) -> Result<bool> {
        let mut held = self.held.lock().await;
        let mut req = self
            .store
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(body.clone()));
        req = match &held.etag {
            Some(etag) => req.if_match(format!("\"{etag}\"")),
            None => req.if_none_match("*"),
        };
        match req.send().await {
            Ok(out) => {
                held.etag = out.e_tag().map(unquote);
                held.body = body;
                Ok(true)
            }
            // 412/409: written by another since; 404: removed since (published by another).
            Err(e) if http_status(&e).is_some_and(|s| s == 412 || s == 409 || s == 404) => {
                // Our own write, if an earlier attempt's answer was lost: the body is ours.
                match self.store.get(&self.bucket, &self.key, None, None).await? {
                    Got::Found { body: now, meta } if now == body => {
                        held.etag = Some(meta.etag);
                        held.body = body;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            Err(e) => Err(s3_err("PutObject", &self.bucket, &self.key, e)),
        }
    }

    /// Confirm the claim still holds by writing the last body again under the same condition.
    pub async fn confirm(&self) -> Result<bool> {
        let body = self.held.lock().await.body.clone();
        if body.is_empty() {
            return Ok(false);
        }
        self.write(body).await
    }
}

/// `Expires` as the SDK wants it (a date); an unparseable value is left out with a warning.
fn expires(h: &ObjectHeaders, bucket: &str, key: &str) -> Option<aws_sdk_s3::primitives::DateTime> {
    let v = h.expires.as_deref()?;
    match aws_sdk_s3::primitives::DateTime::from_str(
        v,
        aws_sdk_s3::primitives::DateTimeFormat::HttpDate,
    )
    .or_else(|_| {
        aws_sdk_s3::primitives::DateTime::from_str(
            v,
            aws_sdk_s3::primitives::DateTimeFormat::DateTime,
        )
    }) {
        Ok(d) => Some(d),
        Err(_) => {
            warn!(
                bucket,
                key,
                expires = v,
                "Expires is not an HTTP date; it is not restored"
            );
            None
        }
    }
}

fn metadata(h: &ObjectHeaders) -> Option<std::collections::HashMap<String, String>> {
    (!h.metadata.is_empty()).then(|| {
        h.metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

/// Abort one multipart upload. One that is already gone counts as aborted: an earlier
/// attempt's answer was lost, so the SDK's retry finds `NoSuchUpload`.
async fn abort_upload(client: &Client, bucket: &str, key: &str, id: &str) -> Result<()> {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("NoSuchUpload") => {
            debug!(bucket, key, upload_id = id, "upload already gone");
            Ok(())
        }
        Err(e) => Err(s3_err("AbortMultipartUpload", bucket, key, e)),
    }
}

/// `bucket/key` for `x-amz-copy-source`, percent-encoded.
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = format!("{bucket}/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// CopyObject's limit; larger objects are copied part by part.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Part size of a multipart copy.
const COPY_PART: u64 = 1024 * 1024 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_url_encoded_keys() {
        assert_eq!(url_decode("a+b%2Bc%2F%01%E2%82%AC"), "a b+c/\u{1}€");
        assert_eq!(url_decode("100%"), "100%");
    }

    #[test]
    fn parses_content_range() {
        assert_eq!(range_total(Some("bytes 0-9/1234")), Some(1234));
        assert_eq!(range_total(None), None);
    }
}
