//! The data: buckets of key-sorted objects (a `BTreeMap`, so a listing page costs its own
//! length), each object's bytes kept as the chunks they arrived in (a multipart object is its
//! parts, never copied into one buffer; a ranged read slices them), and the open multipart
//! uploads. Locks are held only for map operations, never across an await.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use s3s::checksum::ChecksumHasher;
use s3s::dto::{Checksum, ChecksumAlgorithm, Metadata};
use s3s::{S3Result, s3_error};

/// Bodies up to this size are joined into one buffer as they arrive (a few hyper frames); larger
/// ones keep their chunks.
const JOIN_BELOW: usize = 1 << 20;

/// An object's bytes: its chunks in order.
#[derive(Clone, Default)]
pub struct Body {
    chunks: Vec<Bytes>,
    len: u64,
}

impl Body {
    /// The body of `chunks`, joined into one buffer when small.
    pub fn from_chunks(chunks: Vec<Bytes>) -> Self {
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        if chunks.len() > 1 && len <= JOIN_BELOW as u64 {
            let mut one = BytesMut::with_capacity(len as usize);
            for c in &chunks {
                one.extend_from_slice(c);
            }
            return Body {
                chunks: vec![one.freeze()],
                len,
            };
        }
        Body { chunks, len }
    }

    /// The bodies one after the other (their chunks, not copied).
    pub fn join<'a>(bodies: impl IntoIterator<Item = &'a Body>) -> Self {
        let mut chunks = Vec::new();
        let mut len = 0;
        for b in bodies {
            chunks.extend(b.chunks.iter().cloned());
            len += b.len;
        }
        Body { chunks, len }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// The bytes of `start..end` (within the body) as slices of its chunks.
    pub fn slice(&self, start: u64, end: u64) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut at = 0u64;
        for c in &self.chunks {
            let (c_start, c_end) = (at, at + c.len() as u64);
            at = c_end;
            if c_end <= start || c_start >= end {
                continue;
            }
            let from = start.saturating_sub(c_start) as usize;
            let to = (end.min(c_end) - c_start) as usize;
            out.push(c.slice(from..to));
        }
        out
    }

    /// Every chunk, for hashing.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }
}

/// What a PUT, a multipart upload or a copy sets besides the bytes.
#[derive(Clone, Default)]
pub struct Attrs {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub website_redirect_location: Option<String>,
    pub metadata: Option<Metadata>,
    pub storage_class: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// Now, in whole seconds: S3 keeps LastModified to the second (a listing shows `.000Z`, HEAD
/// and GET an HTTP date), and a client that compares the two must see the same time.
pub fn now() -> SystemTime {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(since.as_secs())
}

/// One stored object.
pub struct Object {
    pub body: Body,
    /// Without quotes: hex MD5, or the multipart form `HEX-N`.
    pub e_tag: String,
    pub last_modified: SystemTime,
    pub attrs: Attrs,
    pub checksum: Checksum,
    /// `FULL_OBJECT` or `COMPOSITE`, when the object has a checksum.
    pub checksum_type: Option<String>,
    pub parts: Option<i32>,
}

/// One uploaded part.
pub struct Part {
    pub body: Body,
    pub md5: [u8; 16],
    pub checksum: Checksum,
}

/// An open multipart upload.
pub struct Upload {
    pub bucket: String,
    pub key: String,
    pub initiated: SystemTime,
    pub attrs: Attrs,
    pub algorithm: Option<String>,
    pub checksum_type: Option<String>,
    pub parts: BTreeMap<i32, Arc<Part>>,
}

/// One bucket.
pub struct Bucket {
    pub created: SystemTime,
    pub objects: BTreeMap<String, Arc<Object>>,
}

/// Everything the server holds.
#[derive(Default)]
pub struct Store {
    pub buckets: RwLock<BTreeMap<String, Bucket>>,
    /// By upload id (ids grow, so this is also the order they were made in).
    pub uploads: Mutex<BTreeMap<String, Upload>>,
    pub next_upload: Mutex<u64>,
}

impl Store {
    /// The buckets, to read.
    pub fn read(&self) -> S3Result<RwLockReadGuard<'_, BTreeMap<String, Bucket>>> {
        self.buckets.read().map_err(|_| s3_error!(InternalError))
    }

    /// The buckets, to change.
    pub fn write(&self) -> S3Result<RwLockWriteGuard<'_, BTreeMap<String, Bucket>>> {
        self.buckets.write().map_err(|_| s3_error!(InternalError))
    }

    /// The open uploads.
    pub fn uploads(&self) -> S3Result<MutexGuard<'_, BTreeMap<String, Upload>>> {
        self.uploads.lock().map_err(|_| s3_error!(InternalError))
    }
}

/// A page of a listing: objects and common prefixes in key order.
#[derive(Default)]
pub struct Page {
    pub objects: Vec<(String, Arc<Object>)>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or prefix on the page (where the next page starts after).
    pub last: Option<String>,
}

/// Up to `max` keys and common prefixes of `objects` under `prefix`, after `after`, grouped at
/// `delimiter`. Walks only what the page holds (a common prefix is skipped in one step).
pub fn list(
    objects: &BTreeMap<String, Arc<Object>>,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> Page {
    let mut page = Page::default();
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut from: Bound<String> = match after {
        Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
        _ => Bound::Included(prefix.to_string()),
    };
    let mut count = 0usize;
    'restart: loop {
        for (key, object) in objects.range((from.clone(), Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break 'restart;
            }
            let group = delimiter.and_then(|d| {
                let rest = &key[prefix.len()..];
                rest.find(d).map(|at| &key[..prefix.len() + at + d.len()])
            });
            if let Some(group) = group {
                let seen = after.is_some_and(|a| group <= a);
                if !seen {
                    if count == max {
                        page.truncated = true;
                        break 'restart;
                    }
                    page.prefixes.push(group.to_string());
                    page.last = Some(group.to_string());
                    count += 1;
                }
                match successor(group) {
                    Some(next) => {
                        from = Bound::Included(next);
                        continue 'restart;
                    }
                    None => break 'restart,
                }
            }
            if count == max {
                page.truncated = true;
                break 'restart;
            }
            page.objects.push((key.clone(), object.clone()));
            page.last = Some(key.clone());
            count += 1;
        }
        break;
    }
    page
}

/// The least string greater than every string starting with `s` (`None`: there is none).
fn successor(s: &str) -> Option<String> {
    let mut chars: Vec<char> = s.chars().collect();
    while let Some(c) = chars.pop() {
        let next = match c as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A hasher for `algorithm` (`CRC32`, `CRC32C`, `SHA1`, `SHA256`, `CRC64NVME`); `None` for an
/// algorithm S3 does not have.
pub fn hasher(algorithm: &str) -> Option<ChecksumHasher> {
    let mut h = ChecksumHasher::default();
    match algorithm {
        ChecksumAlgorithm::CRC32 => h.crc32 = Some(Default::default()),
        ChecksumAlgorithm::CRC32C => h.crc32c = Some(Default::default()),
        ChecksumAlgorithm::SHA1 => h.sha1 = Some(Default::default()),
        ChecksumAlgorithm::SHA256 => h.sha256 = Some(Default::default()),
        ChecksumAlgorithm::CRC64NVME => h.crc64nvme = Some(Default::default()),
        _ => return None,
    }
    Some(h)
}

/// The one value `checksum` holds for `algorithm`.
pub fn value_of<'a>(checksum: &'a Checksum, algorithm: &str) -> Option<&'a String> {
    match algorithm {
        ChecksumAlgorithm::CRC32 => checksum.checksum_crc32.as_ref(),
        ChecksumAlgorithm::CRC32C => checksum.checksum_crc32c.as_ref(),
        ChecksumAlgorithm::SHA1 => checksum.checksum_sha1.as_ref(),
        ChecksumAlgorithm::SHA256 => checksum.checksum_sha256.as_ref(),
        ChecksumAlgorithm::CRC64NVME => checksum.checksum_crc64nvme.as_ref(),
        _ => None,
    }
}

/// `checksum` with its value for `algorithm` set to `value`.
pub fn with_value(mut checksum: Checksum, algorithm: &str, value: String) -> Checksum {
    match algorithm {
        ChecksumAlgorithm::CRC32 => checksum.checksum_crc32 = Some(value),
        ChecksumAlgorithm::CRC32C => checksum.checksum_crc32c = Some(value),
        ChecksumAlgorithm::SHA1 => checksum.checksum_sha1 = Some(value),
        ChecksumAlgorithm::SHA256 => checksum.checksum_sha256 = Some(value),
        ChecksumAlgorithm::CRC64NVME => checksum.checksum_crc64nvme = Some(value),
        _ => {}
    }
    checksum
}

/// The algorithms a client sent a value for.
pub fn algorithms_of(checksum: &Checksum) -> Vec<&'static str> {
    [
        ChecksumAlgorithm::CRC32,
        ChecksumAlgorithm::CRC32C,
        ChecksumAlgorithm::SHA1,
        ChecksumAlgorithm::SHA256,
        ChecksumAlgorithm::CRC64NVME,
    ]
    .into_iter()
    .filter(|a| value_of(checksum, a).is_some())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> Arc<Object> {
        Arc::new(Object {
            body: Body::default(),
            e_tag: String::new(),
            last_modified: SystemTime::UNIX_EPOCH,
            attrs: Attrs::default(),
            checksum: Checksum::default(),
            checksum_type: None,
            parts: None,
        })
    }

    fn keys(page: &Page) -> Vec<&str> {
        page.objects.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn listing_pages_in_key_order_and_groups_at_the_delimiter() {
        let mut m = BTreeMap::new();
        for k in ["a/1", "a/2", "b", "c/x/1", "c/y", "d"] {
            m.insert(k.to_string(), object());
        }
        let p = list(&m, "", None, None, 2);
        assert_eq!(keys(&p), ["a/1", "a/2"]);
        assert!(p.truncated);
        let p = list(&m, "", None, p.last.as_deref(), 10);
        assert_eq!(keys(&p), ["b", "c/x/1", "c/y", "d"]);
        assert!(!p.truncated);

        let p = list(&m, "", Some("/"), None, 2);
        assert_eq!(p.prefixes, ["a/"]);
        assert_eq!(keys(&p), ["b"]);
        assert!(p.truncated);
        let p = list(&m, "", Some("/"), p.last.as_deref(), 2);
        assert_eq!(p.prefixes, ["c/"]);
        assert_eq!(keys(&p), ["d"]);
        assert!(!p.truncated);

        let p = list(&m, "c/", Some("/"), None, 10);
        assert_eq!(p.prefixes, ["c/x/"]);
        assert_eq!(keys(&p), ["c/y"]);
        let p = list(&m, "a", None, Some("a/1"), 10);
        assert_eq!(keys(&p), ["a/2"]);
    }

    #[test]
    fn a_slice_spans_chunks_without_copying_them() {
        let big = Bytes::from(vec![7u8; JOIN_BELOW + 1]);
        let b = Body::from_chunks(vec![big.clone(), Bytes::from_static(b"xyz")]);
        assert_eq!(b.len(), JOIN_BELOW as u64 + 4);
        let s = b.slice(JOIN_BELOW as u64, JOIN_BELOW as u64 + 3);
        assert_eq!(s.concat(), [7, b'x', b'y']);
        let small = Body::from_chunks(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")]);
        assert_eq!(small.chunks().len(), 1);
        assert_eq!(small.slice(1, 3).concat(), b"bc");
    }
}
