//! The bundle's documents: the per-volume manifest (last entry of every volume), `bundle.json`
//! and `SHA256SUMS`. These types are the archive format's contract (`FORMAT`), shared by the
//! export and import sides.

use serde::{Deserialize, Serialize};

pub use crate::format::headers::{
    MAX_REDIRECT, MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS, ObjectHeaders,
};

/// Format identifier written into every manifest and bundle.json.
pub const FORMAT: &str = "s3-ferry/1";
/// Name of the manifest entry inside every volume. Object entries live under the source
/// bucket's name or `_escaped/`; bucket names cannot contain `_`, so this never collides.
pub const MANIFEST_ENTRY: &str = "_ferry/manifest.json";
/// Folder of entries whose key is not a safe relative path.
pub const ESCAPED_DIR: &str = "_escaped";

/// Limits a reader holds every volume to, whatever its bytes claim, so that hostile media can
/// neither crash nor exhaust it; the writer rotates volumes well inside them.
pub mod limits {
    /// Bytes of a volume's central directory.
    pub const CENTRAL_DIRECTORY: u64 = 64 * 1024 * 1024;
    /// Entries in one volume (objects and the manifest).
    pub const ENTRIES: u64 = 200_001;
    /// Bytes of a volume's manifest (JSON).
    pub const MANIFEST: u64 = 64 * 1024 * 1024;
    /// Volumes in one bundle.
    pub const VOLUMES: u64 = 100_000;
    /// The writer closes a volume before its manifest or its central directory would pass this.
    pub const WRITER_METADATA_BUDGET: u64 = 48 * 1024 * 1024;
    /// Deflate cannot expand data more than 1032:1; a directory claiming more is forged.
    pub const DEFLATE_RATIO: u64 = 1032;
    /// S3's longest key.
    pub const KEY_BYTES: usize = 1024;
}

/// The first 12 characters of a digest, for messages. Digests read from media may be anything:
/// this never splits a character.
pub fn short(d: &str) -> &str {
    match d.char_indices().nth(12) {
        Some((i, _)) => &d[..i],
        None => d,
    }
}

/// Why `key` cannot be an S3 key, if it cannot.
pub fn key_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("an empty key".into());
    }
    (key.len() > limits::KEY_BYTES).then(|| {
        format!(
            "a key of {} bytes (S3 keys have at most {})",
            key.len(),
            limits::KEY_BYTES
        )
    })
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
    /// The version shipped, read from a bucket with versioning.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version_id: Option<String>,
    /// Set on a part of an object split across volumes (see [`crate::format::parts`]): then
    /// `size`, `sha256` and `crc32` are the part's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub split: Option<crate::format::parts::Split>,
    /// The sizes of the parts a multipart source object was uploaded in (its ETag ends in
    /// `-N`), so that an import into a bucket uploads it the same way.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub part_layout: Option<crate::format::layout::PartLayout>,
    /// The type the export detected from the object's first bytes (its own report's; the far
    /// side detects again and never trusts this).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detected_type: Option<String>,
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

/// A metadata-only entry: the object's bytes did not change (same ETag and size as shipped
/// before) but its headers, metadata, tags or Object Lock did; the import applies `headers`
/// to the copy it holds (a bucket: a CopyObject onto the key; a folder: its key index), once it
/// has confirmed that copy still is the content it wrote. No bytes travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataOnly {
    pub key: String,
    /// The content the destination must hold: the ETag and size shipped before.
    pub etag: String,
    pub size: u64,
    /// LastModified of the version read, RFC 3339.
    pub last_modified: String,
    /// Everything the object has now (not only what changed).
    pub headers: ObjectHeaders,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version_id: Option<String>,
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
    /// Metadata-only entries ([`Final::metadata_only`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub metadata_only: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    /// Objects whose metadata changed and bytes did not (absent in older bundles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata_only: Vec<MetadataOnly>,
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
    /// SHA-256 of the content policy the export applied (`--policy`), when it applied one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy_digest: Option<String>,
    pub objects: Vec<ObjectEntry>,
    /// Present in the last volume only.
    #[serde(rename = "final", skip_serializing_if = "Option::is_none", default)]
    pub last: Option<Final>,
}

/// A volume's manifest built as its objects are written: compact JSON appended object by
/// object into the one buffer that becomes the manifest entry (memory: the entry's bytes, once,
/// not a list of objects plus its serialisation).
pub struct ManifestJson {
    buf: Vec<u8>,
    count: u64,
}

impl ManifestJson {
    /// Start from `head`: every field but `objects` (empty here) and `final` (given to
    /// [`ManifestJson::finish`]).
    pub fn start(head: &Manifest) -> Self {
        debug_assert!(head.objects.is_empty() && head.last.is_none());
        let mut buf = serde_json::to_vec(head).expect("manifest serialises");
        // `objects` is the last field serialised when `final` is absent: `..."objects":[]}`.
        debug_assert!(buf.ends_with(b"\"objects\":[]}"));
        buf.truncate(buf.len() - 2);
        ManifestJson { buf, count: 0 }
    }

    pub fn push(&mut self, o: &ObjectEntry) {
        if self.count > 0 {
            self.buf.push(b',');
        }
        serde_json::to_writer(&mut self.buf, o).expect("object entry serialises");
        self.count += 1;
    }

    /// Objects pushed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes of the manifest so far (without its closing `]}` and any `final` part).
    pub fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Never: the head is always there.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The manifest's bytes, with `last` as its `final` part.
    pub fn finish(mut self, last: Option<&Final>) -> Vec<u8> {
        self.buf.push(b']');
        if let Some(last) = last {
            self.buf.extend_from_slice(b",\"final\":");
            serde_json::to_writer(&mut self.buf, last).expect("final manifest serialises");
        }
        self.buf.push(b'}');
        self.buf
    }
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

/// One line of `SHA256SUMS`: a volume's SHA-256 and file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SumLine<'a> {
    pub sha256: &'a str,
    pub name: &'a str,
}

/// The lines of a `SHA256SUMS` text (blank lines aside): each `<64 hex digits>  <file name>`.
/// The error names the first line that is not (shortened: the text may come from the media).
pub fn parse_sha256sums(text: &str) -> std::result::Result<Vec<SumLine<'_>>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let bad = || {
                format!(
                    "SHA256SUMS line `{}` is not `<sha256>  <name>`",
                    short(line)
                )
            };
            let (sha256, name) = line.split_once("  ").ok_or_else(bad)?;
            let hex = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
            let plain = !name.is_empty() && name.len() <= 255 && !name.contains(['/', '\\']);
            if !hex || !plain {
                return Err(bad());
            }
            Ok(SumLine { sha256, name })
        })
        .collect()
}

/// Job, sequence and index of a volume name `JOB-SEQUENCE-INDEX.zip[.age]`.
pub fn volume_name_parts(name: &str) -> Option<(&str, u64, u32)> {
    let stem = name
        .strip_suffix(".age")
        .unwrap_or(name)
        .strip_suffix(".zip")?;
    let mut it = stem.rsplitn(3, '-');
    let index = it.next()?.parse().ok()?;
    let sequence = it.next()?.parse().ok()?;
    Some((it.next().filter(|j| !j.is_empty())?, sequence, index))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256sums_lines_and_volume_names_parse_strictly() {
        let sha = "ab".repeat(32);
        let text = format!("{sha}  j-00000002-0001.zip\n\n{sha}  j-00000002-0002.zip.age\n");
        let lines = parse_sha256sums(&text).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].name, "j-00000002-0002.zip.age");
        for bad in [
            "nohash  a.zip".to_string(),
            format!("{sha} a.zip"),
            format!("{sha}  ../a.zip"),
            format!("{sha}  "),
        ] {
            assert!(parse_sha256sums(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            volume_name_parts("my-job-00000007-0003.zip.age"),
            Some(("my-job", 7, 3))
        );
        assert_eq!(volume_name_parts("x-0001.zip"), None);
        assert_eq!(volume_name_parts("j-1-2.txt"), None);
    }

    fn entry(key: &str) -> ObjectEntry {
        ObjectEntry {
            key: key.into(),
            entry: format!("b/{key}"),
            size: 3,
            etag: "e".into(),
            last_modified: "2026-01-01T00:00:00.000Z".into(),
            sha256: "00".repeat(32),
            crc32: 7,
            storage_class: "STANDARD".into(),
            headers: ObjectHeaders {
                content_type: Some("text/plain".into()),
                ..Default::default()
            },
            planned_etag: None,
            version_id: None,
            split: None,
            part_layout: None,
            detected_type: None,
        }
    }

    #[test]
    fn a_manifest_built_object_by_object_reads_back_as_the_whole_one() {
        let head = Manifest {
            format: FORMAT.into(),
            job: "j\"objects\":[]".into(),
            source: SourceInfo {
                bucket: "b".into(),
                prefix: String::new(),
            },
            sequence: 2,
            previous: None,
            baseline: true,
            volume: 1,
            listed_at: "t".into(),
            policy_digest: None,
            objects: Vec::new(),
            last: None,
        };
        for (keys, last) in [
            (vec![], None),
            (vec!["a", "b\"c"], None),
            (
                vec!["x"],
                Some(Final {
                    volume_count: 1,
                    earlier_volumes: Vec::new(),
                    deleted: vec!["gone".into()],
                    moved: Vec::new(),
                    skipped: Vec::new(),
                    vanished: Vec::new(),
                    totals: Totals::default(),
                    metadata_only: Vec::new(),
                }),
            ),
        ] {
            let mut m = ManifestJson::start(&head);
            let mut whole = head.clone();
            for k in &keys {
                m.push(&entry(k));
                whole.objects.push(entry(k));
            }
            assert_eq!(m.count(), keys.len() as u64);
            whole.last = last.clone();
            let read: Manifest = serde_json::from_slice(&m.finish(last.as_ref())).unwrap();
            assert_eq!(read, whole);
        }
    }
}
