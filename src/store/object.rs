//! The object-store seam: the S3 operations ferry is built on, as one trait with an S3 adapter
//! ([`super::s3::S3Backend`]) and an in-memory implementation ([`super::mem::MemoryStore`]) that
//! honours S3's preconditions exactly. Everything above it (resumed bodies, documents, fences,
//! streaming multipart uploads) is written once, in [`super::Store`].

use bytes::Bytes;

use crate::error::{BoxError, Result};
use serde::{Deserialize, Serialize};

pub use crate::format::manifest::ObjectHeaders;

/// One listed object, as the inventory keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "s")]
    pub size: u64,
    /// ETag without quotes.
    #[serde(rename = "e")]
    pub etag: String,
    /// LastModified, milliseconds since the Unix epoch.
    #[serde(rename = "m")]
    pub last_modified_ms: i64,
    #[serde(rename = "c", default)]
    pub storage_class: String,
    /// The digest of its headers, metadata, tags and Object Lock as last read
    /// ([`ObjectHeaders::state_digest`]), when a run read them (`--scan-metadata`, or a
    /// metadata-only change); `None`: not known.
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Set when the content policy withheld this version when it was read: never shipped, and
    /// withheld again without a read while the policy is the same.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<Withheld>,
}

/// A version the policy withheld: under which policy (its digest), and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withheld {
    #[serde(rename = "p")]
    pub policy: String,
    #[serde(rename = "r")]
    pub reason: String,
}

/// A body as it arrives, chunk by chunk.
pub type ByteStream = futures::stream::BoxStream<'static, std::result::Result<Bytes, BoxError>>;

/// Object metadata as a GET or HEAD returned it.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub etag: String,
    /// Size of the whole object (from Content-Range on ranged reads).
    pub size: u64,
    pub last_modified_ms: i64,
    pub headers: ObjectHeaders,
    /// The version read, on a bucket with versioning (`None` elsewhere).
    pub version_id: Option<String>,
    /// The part sizes of a multipart object, when read ([`crate::store::Store::part_layout`];
    /// a GET or HEAD alone leaves them out).
    pub part_layout: Option<crate::format::layout::PartLayout>,
}

/// What a HEAD returned: the metadata and where a restore of an archived object stands
/// (`x-amz-restore`).
#[derive(Debug, Clone)]
pub struct Head {
    pub meta: ObjectMeta,
    pub restore: Option<String>,
    /// How many tags it has (`x-amz-tagging-count`; the tags themselves take a
    /// GetObjectTagging).
    pub tag_count: u32,
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

/// The condition of a PUT or of a multipart completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode<'a> {
    /// Write whatever is there.
    Overwrite,
    /// Only if nothing is at the key (`If-None-Match: *`).
    Create,
    /// Only if the current version has this ETag (`If-Match`); a missing key fails it too.
    IfMatch(&'a str),
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct ListPage {
    /// Records in key order.
    pub records: Vec<ObjectRecord>,
    /// The continuation token of the next page; `None` on the last.
    pub next: Option<String>,
}

/// An uploaded part, as CompleteMultipartUpload wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: i32,
    /// The part's ETag, unquoted (the MD5 of its bytes on S3).
    pub etag: String,
    /// The part's CRC-32 (base64), when the store computed one.
    pub crc32: Option<String>,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
}

/// One page of open uploads.
#[derive(Debug, Default)]
pub struct UploadPage {
    pub uploads: Vec<OpenUpload>,
    /// Key and upload-id markers of the next page; `None` on the last.
    pub next: Option<(String, String)>,
}

/// Server-side encryption of what ferry writes into a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// `AES256`: S3-managed keys (SSE-S3).
    Aes256,
    /// `aws:kms`: a KMS key (the account's `aws/s3` key when `key_id` is `None`), with an S3
    /// Bucket Key when `bucket_key`. The ETags of such objects are not MD5s of their bytes.
    Kms {
        key_id: Option<String>,
        bucket_key: bool,
    },
}

/// How a destination stores what ferry writes there (`ferry import --sse … --storage-class …`,
/// the import function's `SSE`, `SSE_KMS_KEY_ID`, `BUCKET_KEY`, `STORAGE_CLASS`); the default
/// leaves both to the bucket's own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub sse: Option<Sse>,
    /// An S3 storage class (`STANDARD_IA`, `GLACIER_IR`, …).
    pub storage_class: Option<String>,
}

/// The storage classes an import writes into. Not GLACIER or DEEP_ARCHIVE: a later bundle's
/// rename copies the object server-side, which an archived object refuses until restored; not
/// EXPRESS_ONEZONE (directory buckets only).
pub const STORAGE_CLASSES: [&str; 6] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
];

impl Placement {
    /// From the four settings (flags or variables, named in `names`: sse, key, bucket key,
    /// class); every error names the setting and says what it takes.
    pub fn parse(
        sse: Option<&str>,
        key_id: Option<&str>,
        bucket_key: bool,
        storage_class: Option<&str>,
        names: [&str; 4],
    ) -> Result<Placement> {
        let sse = match sse {
            None => None,
            Some("AES256") => Some(Sse::Aes256),
            Some("aws:kms") => Some(Sse::Kms {
                key_id: key_id.map(str::to_string),
                bucket_key,
            }),
            Some(other) => {
                return Err(crate::error::Error::config(
                    names[0],
                    format!("`{other}` is not a server-side encryption: use AES256 or aws:kms"),
                ));
            }
        };
        if !matches!(sse, Some(Sse::Kms { .. })) {
            for (set, name) in [(key_id.is_some(), names[1]), (bucket_key, names[2])] {
                if set {
                    return Err(crate::error::Error::config(
                        name,
                        format!("it applies to SSE-KMS only: add {} aws:kms", names[0]),
                    ));
                }
            }
        }
        if let Some(c) = storage_class
            && !STORAGE_CLASSES.contains(&c)
        {
            return Err(crate::error::Error::config(
                names[3],
                format!(
                    "`{c}` is not an S3 storage class (one of {})",
                    STORAGE_CLASSES.join(", ")
                ),
            ));
        }
        Ok(Placement {
            sse,
            storage_class: storage_class.map(str::to_string),
        })
    }

    /// Leaves both to the bucket.
    pub fn is_default(&self) -> bool {
        *self == Placement::default()
    }
}

/// The S3 operations ferry uses, each one request. Implementations map the store's own
/// errors to [`crate::error::Error`] classified at the source (not found, precondition,
/// throttled, denied, transient), and a missing bucket to `Error::NoSuchBucket`.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug + 'static {
    /// Ok if `bucket` exists and is visible.
    async fn head_bucket(&self, bucket: &str) -> Result<()>;

    /// Was `bucket` made with Object Lock (so objects written into it can carry a retention
    /// or a legal hold)?
    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool>;

    /// One page of the keys under `prefix`, in key order, after `start_after` (first page) or
    /// from `token` (later pages).
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage>;

    /// Read an object, or the bytes `start..=end` of it, only if its ETag is `if_match`.
    /// Whole-object reads are checked against the store's own checksum where it has one.
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<Got<ByteStream>>;

    /// The current version's metadata; `None` if the key does not exist. Like S3's HeadObject,
    /// it gives no tags ([`ObjectStore::tags`] does).
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<Head>>;

    /// The sizes of the `parts` parts the current version of `bucket/key` was uploaded in (a
    /// multipart ETag ends in `-parts`), while that version's ETag is still `etag`; `None`
    /// once it changed or is gone, or when the store cannot tell.
    async fn part_sizes(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        parts: u64,
    ) -> Result<Option<Vec<u64>>>;

    /// The object's tags (GetObjectTagging); none for a key that does not exist.
    async fn tags(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<std::collections::BTreeMap<String, String>>;

    /// PUT an object whole; its ETag, or `None` when `mode`'s condition failed.
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        headers: &ObjectHeaders,
        mode: PutMode<'_>,
    ) -> Result<Option<String>>;

    /// Server-side copy (up to 5 GiB) with `headers` (and their tags, exactly), or the
    /// source's headers and tags when `None`; the copy's ETag.
    async fn copy(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        headers: Option<&ObjectHeaders>,
    ) -> Result<String>;

    /// Start a multipart upload; its id.
    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        headers: &ObjectHeaders,
    ) -> Result<String>;

    /// Upload part `number` (from 1).
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part>;

    /// Copy the bytes `start..=end` of `from` as part `number` of an upload to `to`.
    async fn copy_part(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        upload_id: &str,
        number: i32,
        range: (u64, u64),
    ) -> Result<Part>;

    /// Complete an upload from `parts` (in order); its ETag, or `None` when `mode`'s condition
    /// failed (the upload stays open).
    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[Part],
        mode: PutMode<'_>,
    ) -> Result<Option<String>>;

    /// Abort an upload; one already gone counts as aborted.
    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()>;

    /// One page of the open uploads under `prefix`, after the `marker` (key, upload id);
    /// `None` when the store cannot list uploads.
    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<Option<UploadPage>>;

    /// Delete a key; a missing key is fine.
    async fn delete(&self, bucket: &str, key: &str) -> Result<()>;

    /// Delete up to 1,000 keys; missing keys are fine, a key the store could not delete fails
    /// the call naming it.
    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<()>;

    /// This store, writing every object (PUT, multipart upload, copy) with `placement`. A
    /// store that cannot choose encryption or storage class refuses.
    fn placed(&self, _placement: &Placement) -> Result<std::sync::Arc<dyn ObjectStore>> {
        Err(crate::error::Error::config(
            "--sse/--storage-class",
            "this destination cannot choose encryption or storage class (an S3 bucket can)",
        ))
    }
}
