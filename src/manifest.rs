//! The bundle's documents: the per-volume manifest (last entry of every volume), `bundle.json`
//! and `SHA256SUMS`. These types are the archive format's contract (`FORMAT`), shared by the
//! export and import sides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Format identifier written into every manifest and bundle.json.
pub const FORMAT: &str = "s3-ferry/1";
/// Name of the manifest entry inside every volume. Object entries live under the source
/// bucket's name or `_escaped/`; bucket names cannot contain `_`, so this never collides.
pub const MANIFEST_ENTRY: &str = "_ferry/manifest.json";
/// Folder of entries whose key is not a safe relative path.
pub const ESCAPED_DIR: &str = "_escaped";

/// HTTP headers and user metadata of an object, as S3 returned them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHeaders {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cache_control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One shipped object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// The exact S3 key.
    pub key: String,
    /// The zip entry holding its bytes.
    pub entry: String,
    pub size: u64,
    /// ETag of the version shipped (without quotes).
    pub etag: String,
    /// LastModified of the version shipped, RFC 3339.
    pub last_modified: String,
    pub sha256: String,
    pub crc32: u32,
    pub storage_class: String,
    #[serde(flatten)]
    pub headers: ObjectHeaders,
    /// Set when the object changed between listing and reading: the ETag the plan had.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub planned_etag: Option<String>,
}

/// A rename: `from`'s bytes now live at `to` (same ETag and size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: String,
    pub to: String,
    pub etag: String,
    pub size: u64,
    pub last_modified: String,
    /// Headers and metadata of `to` when the bundle was closed (a rename may change them);
    /// absent when `to` could not be read then (the next bundle carries its new state).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub headers: Option<ObjectHeaders>,
}

/// An object that changed but was not shipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub key: String,
    pub size: u64,
    pub storage_class: String,
    pub reason: String,
}

/// A volume of the bundle, as the last manifest and bundle.json list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub index: u32,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub objects: u64,
    pub bytes: u64,
}

/// Link to the previous bundle of the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    pub sequence: u64,
    pub bundle_digest: String,
}

/// Counts over the whole bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub objects: u64,
    pub bytes: u64,
    pub deleted: u64,
    pub moved: u64,
    pub skipped: u64,
    pub vanished: u64,
    pub replaced: u64,
}

/// What only the last volume carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Final {
    pub volume_count: u32,
    /// Every volume before this one, in order.
    pub earlier_volumes: Vec<VolumeInfo>,
    pub deleted: Vec<String>,
    pub moved: Vec<Move>,
    pub skipped: Vec<Skipped>,
    /// Planned objects that were gone when read (applied as deletions).
    pub vanished: Vec<String>,
    pub totals: Totals,
}

/// Where the bundle came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub bucket: String,
    pub prefix: String,
}

/// The manifest: last entry of every volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub job: String,
    pub source: SourceInfo,
    pub sequence: u64,
    /// `None` for a baseline bundle.
    pub previous: Option<ChainLink>,
    pub baseline: bool,
    /// 1-based index of this volume.
    pub volume: u32,
    /// Start time of the listing this bundle was planned from (RFC 3339).
    pub listed_at: String,
    pub objects: Vec<ObjectEntry>,
    /// Present in the last volume only.
    #[serde(rename = "final", skip_serializing_if = "Option::is_none", default)]
    pub last: Option<Final>,
}

/// `bundle.json`: the summary written beside the volumes once all are complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSummary {
    pub format: String,
    pub job: String,
    pub source: SourceInfo,
    pub sequence: u64,
    pub previous: Option<ChainLink>,
    pub baseline: bool,
    pub listed_at: String,
    pub completed_at: String,
    /// SHA-256 of `SHA256SUMS`: the bundle's identity in the chain.
    pub bundle_digest: String,
    pub volumes: Vec<VolumeInfo>,
    pub totals: Totals,
}

/// The `SHA256SUMS` text (`sha256sum -c` format), in volume order.
pub fn sha256sums(volumes: &[VolumeInfo]) -> String {
    volumes
        .iter()
        .map(|v| format!("{}  {}\n", v.sha256, v.name))
        .collect()
}

/// The bundle digest: SHA-256 of the `SHA256SUMS` text.
pub fn bundle_digest(volumes: &[VolumeInfo]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(sha256sums(volumes).as_bytes()))
}
