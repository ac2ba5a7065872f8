//! The wire side of requests and answers: reading a body while hashing it, the checksum a
//! client sent (header or trailer) and its check, response bodies of chunks, tags in the
//! `x-amz-tagging` form, URL-encoded listing keys, `If-Match` / `If-None-Match`.

use bytes::Bytes;
use futures::TryStreamExt;
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::*;
use s3s::{S3Result, s3_error};

use crate::store::{self, Attrs, Body, Object};

/// The five checksum values of a request or a listed part, `take`n or `clone`d out of it.
#[macro_export]
macro_rules! checksum_of {
    ($x:expr, $how:ident) => {
        s3s::dto::Checksum {
            checksum_crc32: $x.checksum_crc32.$how(),
            checksum_crc32c: $x.checksum_crc32c.$how(),
            checksum_sha1: $x.checksum_sha1.$how(),
            checksum_sha256: $x.checksum_sha256.$how(),
            checksum_crc64nvme: $x.checksum_crc64nvme.$how(),
            checksum_type: None,
        }
    };
}

/// The [`Attrs`] a PUT, CopyObject or CreateMultipartUpload sets (their fields share names).
#[macro_export]
macro_rules! attrs_of {
    ($x:expr, storage_class: $class:expr, tags: $tags:expr) => {
        $crate::store::Attrs {
            content_type: $x.content_type.clone(),
            content_encoding: $x.content_encoding.clone(),
            content_disposition: $x.content_disposition.clone(),
            content_language: $x.content_language.clone(),
            cache_control: $x.cache_control.clone(),
            website_redirect_location: $x.website_redirect_location.clone(),
            metadata: $x.metadata.clone(),
            storage_class: $class,
            tags: $tags,
        }
    };
}

/// A GET's or HEAD's answer for object `o`: its headers, and its checksum when `with` (asked
/// for with `x-amz-checksum-mode: ENABLED`, and the whole object read); `extra` fields first.
#[macro_export]
macro_rules! described {
    ($ty:ident, $o:expr, $with:expr, { $($extra:tt)* }) => {{
        let o = &$o;
        let with: bool = $with;
        let c = |v: &Option<String>| v.clone().filter(|_| with);
        $ty {
            $($extra)*
            accept_ranges: Some("bytes".to_string()),
            e_tag: Some(ETag::Strong(o.e_tag.clone())),
            last_modified: Some(Timestamp::from(o.last_modified)),
            content_type: o.attrs.content_type.clone(),
            content_encoding: o.attrs.content_encoding.clone(),
            content_disposition: o.attrs.content_disposition.clone(),
            content_language: o.attrs.content_language.clone(),
            cache_control: o.attrs.cache_control.clone(),
            website_redirect_location: o.attrs.website_redirect_location.clone(),
            metadata: o.attrs.metadata.clone(),
            storage_class: o.attrs.storage_class.clone().map(StorageClass::from),
            parts_count: o.parts,
            checksum_crc32: c(&o.checksum.checksum_crc32),
            checksum_crc32c: c(&o.checksum.checksum_crc32c),
            checksum_sha1: c(&o.checksum.checksum_sha1),
            checksum_sha256: c(&o.checksum.checksum_sha256),
            checksum_crc64nvme: c(&o.checksum.checksum_crc64nvme),
            checksum_type: o.checksum_type.clone().filter(|_| with).map(ChecksumType::from),
            ..Default::default()
        }
    }};
}

/// What a request body held: its bytes, MD5 and the checksums asked for.
pub struct Received {
    pub body: Body,
    pub md5: [u8; 16],
    pub checksum: Checksum,
}

/// Read `blob` whole, hashing as it arrives.
pub async fn receive(blob: Option<StreamingBlob>, algorithm: Option<&str>) -> S3Result<Received> {
    let mut hasher = match algorithm {
        Some(a) => {
            store::hasher(a).ok_or_else(|| s3_error!(InvalidArgument, "unknown checksum {a}"))?
        }
        None => Default::default(),
    };
    let mut md5 = Md5::new();
    let mut chunks = Vec::new();
    if let Some(mut blob) = blob {
        while let Some(chunk) = blob
            .try_next()
            .await
            .map_err(|e| s3_error!(IncompleteBody, "{e}"))?
        {
            md5.update(&chunk);
            hasher.update(&chunk);
            chunks.push(chunk);
        }
    }
    Ok(Received {
        body: Body::from_chunks(chunks),
        md5: md5.finalize(),
        checksum: hasher.finalize(),
    })
}

/// The checksum values a client sent: headers, or trailers read after the body.
pub fn sent_checksum(mut sent: Checksum, trailers: Option<&s3s::TrailingHeaders>) -> Checksum {
    if let Some(t) = trailers.and_then(|t| t.take()) {
        for a in [
            ChecksumAlgorithm::CRC32,
            ChecksumAlgorithm::CRC32C,
            ChecksumAlgorithm::SHA1,
            ChecksumAlgorithm::SHA256,
            ChecksumAlgorithm::CRC64NVME,
        ] {
            let name = format!("x-amz-checksum-{}", a.to_ascii_lowercase());
            if let Some(v) = t.get(name.as_str()).and_then(|v| v.to_str().ok()) {
                sent = store::with_value(sent, a, v.to_string());
            }
        }
    }
    sent
}

/// The algorithm to compute: the one named, else the one a value was sent for.
pub fn algorithm_of(named: Option<&ChecksumAlgorithm>, sent: &Checksum) -> Option<String> {
    named
        .map(|a| a.as_str().to_string())
        .or_else(|| store::algorithms_of(sent).first().map(|a| a.to_string()))
}

/// Refuse a body whose checksum differs from the value the client sent.
pub fn check(computed: &Checksum, sent: &Checksum) -> S3Result<()> {
    for a in store::algorithms_of(sent) {
        if store::value_of(computed, a) != store::value_of(sent, a) {
            return Err(s3_error!(
                BadDigest,
                "the {a} checksum does not match the body"
            ));
        }
    }
    Ok(())
}

/// A response body of `chunks`.
pub fn blob(chunks: Vec<Bytes>) -> StreamingBlob {
    if chunks.len() == 1 {
        let one = chunks.into_iter().next().unwrap_or_default();
        return StreamingBlob::from(s3s::Body::from(one));
    }
    StreamingBlob::wrap(futures::stream::iter(
        chunks.into_iter().map(Ok::<_, std::io::Error>),
    ))
}

/// Tags from the `x-amz-tagging` header (`k=v&k2=v2`, URL-encoded).
pub fn parse_tags(header: Option<&str>) -> Vec<(String, String)> {
    let Some(h) = header.filter(|h| !h.is_empty()) else {
        return Vec::new();
    };
    h.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` URL-encoded as S3 encodes keys in a listing with `encoding-type=url` (`/` kept).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-_.~/".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

pub fn quoted_match(condition: &ETagCondition, e_tag: &str) -> bool {
    condition.is_any() || condition.as_etag().is_some_and(|t| t.value() == e_tag)
}

/// Refuse a write whose `If-None-Match: *` or `If-Match` does not hold for `current`.
pub fn check_write(
    current: Option<&Object>,
    if_none_match: Option<&ETagCondition>,
    if_match: Option<&ETagCondition>,
) -> S3Result<()> {
    if if_none_match.is_some_and(|c| c.is_any()) && current.is_some() {
        return Err(s3_error!(PreconditionFailed, "the object exists"));
    }
    if let Some(c) = if_match {
        match current {
            Some(o) if quoted_match(c, &o.e_tag) => {}
            Some(_) => return Err(s3_error!(PreconditionFailed, "the ETag does not match")),
            None => return Err(s3_error!(NoSuchKey)),
        }
    }
    Ok(())
}

pub fn listed(page: &store::Page, url: bool) -> (Option<Vec<Object_>>, Option<Vec<CommonPrefix>>) {
    let key = |k: &str| if url { url_encode(k) } else { k.to_string() };
    let contents = page
        .objects
        .iter()
        .map(|(k, o)| Object_ {
            key: Some(key(k)),
            e_tag: Some(ETag::Strong(o.e_tag.clone())),
            last_modified: Some(Timestamp::from(o.last_modified)),
            size: Some(o.body.len() as i64),
            storage_class: Some(ObjectStorageClass::from(
                o.attrs
                    .storage_class
                    .clone()
                    .unwrap_or_else(|| "STANDARD".to_string()),
            )),
            checksum_algorithm: store::algorithms_of(&o.checksum)
                .first()
                .map(|a| vec![ChecksumAlgorithm::from(a.to_string())]),
            checksum_type: o.checksum_type.clone().map(ChecksumType::from),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let prefixes = page
        .prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(key(p)),
        })
        .collect::<Vec<_>>();
    (
        (!contents.is_empty()).then_some(contents),
        (!prefixes.is_empty()).then_some(prefixes),
    )
}

/// S3's listing entry (the name `Object` is the store's).
pub type Object_ = s3s::dto::Object;

pub fn attrs_of_put(input: &PutObjectInput) -> Attrs {
    crate::attrs_of!(input,
        storage_class: input.storage_class.as_ref().map(|s| s.as_str().to_string()),
        tags: parse_tags(input.tagging.as_deref()))
}

/// A whole object's checksum: the one computed, `CRC64NVME` when none was asked for.
pub fn whole_checksum(received: &Received, algorithm: Option<&str>) -> (Checksum, String) {
    if algorithm.is_some() {
        return (received.checksum.clone(), "FULL_OBJECT".to_string());
    }
    let mut h = store::hasher(ChecksumAlgorithm::CRC64NVME).unwrap_or_default();
    for c in received.body.chunks() {
        h.update(c);
    }
    (h.finalize(), "FULL_OBJECT".to_string())
}
