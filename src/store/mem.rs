//! An in-memory [`ObjectStore`] that answers as S3 does: key-sorted listings in pages with
//! start-after and continuation, ranged reads, If-Match and If-None-Match on PUT and on
//! multipart completion (checked atomically), MD5 ETags (`md5-N` for multipart objects), parts
//! of at least 5 MiB but the last, aborts, open-upload listings. The fast test tier runs the
//! engine on it; the conformance suite runs the same bodies on it and on moto.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use futures::StreamExt;
use md5::Digest;

use super::multipart_etag;
use super::object::ObjectHeaders;
use super::object::ObjectRecord;
use super::object::{
    ByteStream, Got, Head, ListPage, ObjectMeta, ObjectStore, OpenUpload, Part, PutMode, UploadPage,
};
use crate::error::{Class, Error, Result};

/// S3's smallest part (all but the last).
const MIN_PART: usize = 5 * 1024 * 1024;
/// Bytes per chunk of a body stream.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
struct Object {
    body: Bytes,
    etag: String,
    last_modified_ms: i64,
    headers: ObjectHeaders,
    storage_class: String,
    restore: Option<String>,
    /// The part sizes of an object a multipart upload made (empty for any other).
    parts: Vec<u64>,
}

#[derive(Debug)]
struct Upload {
    key: String,
    headers: ObjectHeaders,
    parts: BTreeMap<i32, (Bytes, String)>,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Made with Object Lock.
    object_lock: bool,
    objects: BTreeMap<String, Object>,
    /// Open uploads by (key, id): the order ListMultipartUploads answers in.
    uploads: BTreeMap<(String, String), Upload>,
}

/// The in-memory store. Buckets are made with [`MemoryStore::create_bucket`].
#[derive(Debug)]
pub struct MemoryStore {
    buckets: Mutex<BTreeMap<String, Bucket>>,
    page_size: usize,
    next_id: std::sync::atomic::AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_page_size(1000)
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose listings answer `page_size` keys per page (S3: 1,000).
    pub fn with_page_size(page_size: usize) -> Self {
        MemoryStore {
            buckets: Mutex::new(BTreeMap::new()),
            page_size: page_size.max(1),
            next_id: Default::default(),
        }
    }

    /// Make an empty bucket (an existing one is kept).
    pub fn create_bucket(&self, bucket: &str) {
        self.lock().entry(bucket.to_string()).or_default();
    }

    /// Make `bucket` with Object Lock (its objects may carry a retention or a legal hold).
    pub fn create_bucket_with_object_lock(&self, bucket: &str) {
        self.lock()
            .entry(bucket.to_string())
            .or_default()
            .object_lock = true;
    }

    /// Put an object in a storage class (an archived one cannot be read until
    /// [`MemoryStore::restore`]).
    pub fn set_storage_class(&self, bucket: &str, key: &str, class: &str) {
        if let Some(o) = self
            .lock()
            .get_mut(bucket)
            .and_then(|b| b.objects.get_mut(key))
        {
            o.storage_class = class.to_string();
        }
    }

    /// Change an object's headers as PutObjectTagging or PutObjectLegalHold do: its ETag and
    /// LastModified stay.
    pub fn change_headers(&self, bucket: &str, key: &str, f: impl FnOnce(&mut ObjectHeaders)) {
        if let Some(o) = self
            .lock()
            .get_mut(bucket)
            .and_then(|b| b.objects.get_mut(key))
        {
            f(&mut o.headers);
        }
    }

    /// Mark an archived object restored (`x-amz-restore: ongoing-request="false"`).
    pub fn restore(&self, bucket: &str, key: &str) {
        if let Some(o) = self
            .lock()
            .get_mut(bucket)
            .and_then(|b| b.objects.get_mut(key))
        {
            o.restore = Some(
                "ongoing-request=\"false\", expiry-date=\"Fri, 01 Jan 2100 00:00:00 GMT\""
                    .to_string(),
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_bucket<T>(&self, bucket: &str, f: impl FnOnce(&mut Bucket) -> Result<T>) -> Result<T> {
        let mut buckets = self.lock();
        match buckets.get_mut(bucket) {
            Some(b) => f(b),
            None => Err(Error::NoSuchBucket {
                bucket: bucket.to_string(),
            }),
        }
    }
}

fn failed(op: &'static str, bucket: &str, key: &str, class: Class, what: &str) -> Error {
    Error::S3 {
        op,
        bucket: bucket.to_string(),
        key: key.to_string(),
        class,
        source: what.to_string().into(),
    }
}

fn md5_hex(body: &[u8]) -> String {
    hex::encode(md5::Md5::digest(body))
}

/// Whether `mode` lets a write over `current` go ahead.
fn allowed(mode: PutMode<'_>, current: Option<&Object>) -> bool {
    match (mode, current) {
        (PutMode::Overwrite, _) => true,
        (PutMode::Create, existing) => existing.is_none(),
        (PutMode::IfMatch(etag), Some(o)) => o.etag == etag,
        (PutMode::IfMatch(_), None) => false,
    }
}

fn archived(class: &str) -> bool {
    matches!(class, "GLACIER" | "DEEP_ARCHIVE")
}

fn chunks(body: Bytes) -> ByteStream {
    let pieces: Vec<_> = (0..body.len().div_ceil(CHUNK).max(1))
        .map(|i| Ok(body.slice(i * CHUNK..((i + 1) * CHUNK).min(body.len()))))
        .collect();
    futures::stream::iter(pieces).boxed()
}

fn meta_of(o: &Object) -> ObjectMeta {
    ObjectMeta {
        version_id: None,
        etag: o.etag.clone(),
        size: o.body.len() as u64,
        last_modified_ms: o.last_modified_ms,
        headers: o.headers.clone(),
        part_layout: None,
    }
}

fn object(body: Bytes, etag: String, headers: ObjectHeaders) -> Object {
    Object {
        body,
        etag,
        last_modified_ms: crate::clock::now_ms(),
        headers,
        storage_class: "STANDARD".to_string(),
        restore: None,
        parts: Vec::new(),
    }
}

#[async_trait::async_trait]
impl ObjectStore for MemoryStore {
    async fn head_bucket(&self, bucket: &str) -> Result<()> {
        self.with_bucket(bucket, |_| Ok(()))
    }

    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool> {
        self.with_bucket(bucket, |b| Ok(b.object_lock))
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage> {
        let page_size = self.page_size;
        self.with_bucket(bucket, |b| {
            use std::ops::Bound::{Excluded, Unbounded};
            let after = token.or(start_after).filter(|a| *a >= prefix);
            let from = match after {
                Some(a) => Excluded(a.to_string()),
                None => std::ops::Bound::Included(prefix.to_string()),
            };
            let mut records = Vec::new();
            let mut next = None;
            for (key, o) in b.objects.range::<String, _>((from, Unbounded)) {
                if !key.starts_with(prefix) {
                    break;
                }
                if records.len() == page_size {
                    next = records.last().map(|r: &ObjectRecord| r.key.clone());
                    break;
                }
                records.push(ObjectRecord {
                    key: key.clone(),
                    size: o.body.len() as u64,
                    etag: o.etag.clone(),
                    last_modified_ms: o.last_modified_ms,
                    storage_class: o.storage_class.clone(),
                    state: None,
                    withheld: None,
                });
            }
            Ok(ListPage { records, next })
        })
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<Got<ByteStream>> {
        let o = self.with_bucket(bucket, |b| Ok(b.objects.get(key).cloned()))?;
        let Some(o) = o else { return Ok(Got::Gone) };
        if if_match.is_some_and(|e| !e.is_empty() && e != o.etag) {
            return Ok(Got::Changed);
        }
        if archived(&o.storage_class) && o.restore.is_none() {
            return Err(Error::Archived {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        let mut meta = meta_of(&o);
        // As the S3 adapter: the tags come with the first read only.
        if range.is_some_and(|(start, _)| start > 0) {
            meta.headers.tags.clear();
        }
        let body = match range {
            None => o.body,
            Some((start, end)) => {
                let size = o.body.len() as u64;
                if start >= size || end < start {
                    let what = format!("InvalidRange: bytes={start}-{end} of {size}");
                    return Err(failed("GetObject", bucket, key, Class::Rejected, &what));
                }
                o.body.slice(start as usize..=(end.min(size - 1)) as usize)
            }
        };
        Ok(Got::Found {
            meta,
            body: chunks(body),
        })
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<Head>> {
        self.with_bucket(bucket, |b| {
            Ok(b.objects.get(key).map(|o| {
                // HeadObject gives no tags (GetObjectTagging does): nor does this.
                let mut meta = meta_of(o);
                let tag_count = std::mem::take(&mut meta.headers.tags).len() as u32;
                Head {
                    meta,
                    restore: o.restore.clone(),
                    tag_count,
                }
            }))
        })
    }

    async fn part_sizes(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        parts: u64,
    ) -> Result<Option<Vec<u64>>> {
        self.with_bucket(bucket, |b| {
            Ok(b.objects.get(key).and_then(|o| {
                let whole = o.etag == etag && o.parts.len() as u64 == parts;
                whole.then(|| o.parts.clone())
            }))
        })
    }

    async fn tags(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        self.with_bucket(bucket, |b| {
            Ok(b.objects
                .get(key)
                .map(|o| o.headers.tags.clone())
                .unwrap_or_default())
        })
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        headers: &ObjectHeaders,
        mode: PutMode<'_>,
    ) -> Result<Option<String>> {
        self.with_bucket(bucket, |b| {
            if !allowed(mode, b.objects.get(key)) {
                return Ok(None);
            }
            let etag = md5_hex(&body);
            b.objects
                .insert(key.to_string(), object(body, etag.clone(), headers.clone()));
            Ok(Some(etag))
        })
    }

    async fn copy(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        headers: Option<&ObjectHeaders>,
    ) -> Result<String> {
        self.with_bucket(bucket, |b| {
            let Some(source) = b.objects.get(from) else {
                return Err(failed(
                    "CopyObject",
                    bucket,
                    from,
                    Class::NotFound,
                    "NoSuchKey",
                ));
            };
            let etag = md5_hex(&source.body);
            let headers = headers.cloned().unwrap_or_else(|| source.headers.clone());
            let copy = object(source.body.clone(), etag.clone(), headers);
            b.objects.insert(to.to_string(), copy);
            Ok(etag)
        })
    }

    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        headers: &ObjectHeaders,
    ) -> Result<String> {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("mem-upload-{n}");
        self.with_bucket(bucket, |b| {
            let upload = Upload {
                key: key.to_string(),
                headers: headers.clone(),
                parts: BTreeMap::new(),
            };
            b.uploads.insert((key.to_string(), id.clone()), upload);
            Ok(id.clone())
        })
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part> {
        if !(1..=10_000).contains(&number) {
            let what = format!("InvalidArgument: part number {number}");
            return Err(failed("UploadPart", bucket, key, Class::Rejected, &what));
        }
        self.with_bucket(bucket, |b| {
            let Some(u) = b.uploads.get_mut(&(key.to_string(), upload_id.to_string())) else {
                return Err(failed(
                    "UploadPart",
                    bucket,
                    key,
                    Class::NotFound,
                    "NoSuchUpload",
                ));
            };
            let etag = md5_hex(&body);
            u.parts.insert(number, (body, etag.clone()));
            Ok(Part {
                number,
                etag,
                crc32: None,
            })
        })
    }

    async fn copy_part(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        upload_id: &str,
        number: i32,
        (start, end): (u64, u64),
    ) -> Result<Part> {
        let source =
            self.with_bucket(bucket, |b| Ok(b.objects.get(from).map(|o| o.body.clone())))?;
        let Some(source) = source else {
            return Err(failed(
                "UploadPartCopy",
                bucket,
                from,
                Class::NotFound,
                "NoSuchKey",
            ));
        };
        let size = source.len() as u64;
        if start >= size || end >= size || end < start {
            let what = format!("InvalidRange: bytes={start}-{end} of {size}");
            return Err(failed(
                "UploadPartCopy",
                bucket,
                from,
                Class::Rejected,
                &what,
            ));
        }
        let body = source.slice(start as usize..=end as usize);
        self.upload_part(bucket, to, upload_id, number, body).await
    }

    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[Part],
        mode: PutMode<'_>,
    ) -> Result<Option<String>> {
        let op = "CompleteMultipartUpload";
        self.with_bucket(bucket, |b| {
            let id = (key.to_string(), upload_id.to_string());
            let Some(u) = b.uploads.get(&id) else {
                return Err(failed(op, bucket, key, Class::NotFound, "NoSuchUpload"));
            };
            if parts.is_empty() || parts.windows(2).any(|w| w[0].number >= w[1].number) {
                return Err(failed(op, bucket, key, Class::Rejected, "InvalidPartOrder"));
            }
            let mut body = Vec::new();
            let mut sizes = Vec::with_capacity(parts.len());
            for (i, p) in parts.iter().enumerate() {
                let Some((bytes, _)) = u.parts.get(&p.number).filter(|(_, e)| *e == p.etag) else {
                    return Err(failed(op, bucket, key, Class::Rejected, "InvalidPart"));
                };
                if i + 1 < parts.len() && bytes.len() < MIN_PART {
                    return Err(failed(op, bucket, key, Class::Rejected, "EntityTooSmall"));
                }
                body.extend_from_slice(bytes);
                sizes.push(bytes.len() as u64);
            }
            if !allowed(mode, b.objects.get(key)) {
                return Ok(None);
            }
            let etag = multipart_etag(parts).unwrap_or_default();
            let Some(u) = b.uploads.remove(&id) else {
                return Err(failed(op, bucket, key, Class::NotFound, "NoSuchUpload"));
            };
            let done = Object {
                parts: sizes,
                ..object(Bytes::from(body), etag.clone(), u.headers)
            };
            b.objects.insert(u.key, done);
            Ok(Some(etag))
        })
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        self.with_bucket(bucket, |b| {
            b.uploads.remove(&(key.to_string(), upload_id.to_string()));
            Ok(())
        })
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<Option<UploadPage>> {
        let page_size = self.page_size;
        self.with_bucket(bucket, |b| {
            let mut uploads = Vec::new();
            let mut next = None;
            for (k, _) in b.uploads.iter() {
                if !k.0.starts_with(prefix) || marker.as_ref().is_some_and(|m| k <= m) {
                    continue;
                }
                if uploads.len() == page_size {
                    next = uploads
                        .last()
                        .map(|u: &OpenUpload| (u.key.clone(), u.upload_id.clone()));
                    break;
                }
                uploads.push(OpenUpload {
                    key: k.0.clone(),
                    upload_id: k.1.clone(),
                });
            }
            Ok(Some(UploadPage { uploads, next }))
        })
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.with_bucket(bucket, |b| {
            b.objects.remove(key);
            Ok(())
        })
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<()> {
        if keys.len() > 1000 {
            let what = "MalformedXML: more than 1,000 keys";
            return Err(failed(
                "DeleteObjects",
                bucket,
                &keys[0],
                Class::Rejected,
                what,
            ));
        }
        self.with_bucket(bucket, |b| {
            for k in keys {
                b.objects.remove(k);
            }
            Ok(())
        })
    }
}
