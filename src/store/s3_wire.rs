//! The S3 adapter's wire details: the client, SDK errors read and classified, ETags, url-encoded
//! keys, header conversions.

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use tracing::warn;

use super::object::ObjectHeaders;
use crate::error::Error;

/// Build an S3 client from shared SDK config (`AWS_ENDPOINT_URL` etc. already applied).
pub fn client(sdk: &aws_config::SdkConfig, path_style: bool) -> Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(path_style)
        .build();
    Client::from_conf(conf)
}

pub(super) fn http_status<E, R>(e: &SdkError<E, R>) -> Option<u16>
where
    R: HttpStatus,
{
    e.raw_response().map(HttpStatus::status_code)
}

pub(super) trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

pub(super) fn s3_build_err(
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

pub(super) fn s3_err<E>(
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
        class: super::sdk_error::classify(&e),
        source: Box::new(e),
    }
}

pub(super) fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// Decode a key from a ListObjectsV2 response with `encoding-type=url` (`+` is a space).
pub(super) fn url_decode(s: &str) -> String {
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

/// An Object Lock retain-until date as the SDK wants it (checked as RFC 3339 by the bundle's
/// checks before an import writes).
pub(super) fn retain_until(h: &ObjectHeaders) -> Option<aws_sdk_s3::primitives::DateTime> {
    use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
    let v = h.object_lock_retain_until.as_deref()?;
    DateTime::from_str(v, DateTimeFormat::DateTime)
        .or_else(|_| DateTime::from_str(v, DateTimeFormat::DateTimeWithOffset))
        .ok()
}

/// Tags as the `x-amz-tagging` header takes them (`k=v&k2=v2`, URL-encoded); `None` for none.
pub(super) fn tagging(tags: &BTreeMap<String, String>) -> Option<String> {
    let enc = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    (!tags.is_empty()).then(|| {
        tags.iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// User metadata as the SDK returns it, in key order.
pub(super) fn metadata_of(
    metadata: Option<&std::collections::HashMap<String, String>>,
) -> BTreeMap<String, String> {
    metadata
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Total size from a `Content-Range: bytes a-b/total` header.
pub(super) fn range_total(content_range: Option<&str>) -> Option<u64> {
    content_range?.rsplit_once('/')?.1.parse().ok()
}

/// `Expires` as the SDK wants it (a date); an unparseable value is left out with a warning.
pub(super) fn expires(
    h: &ObjectHeaders,
    bucket: &str,
    key: &str,
) -> Option<aws_sdk_s3::primitives::DateTime> {
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

pub(super) fn metadata(h: &ObjectHeaders) -> Option<std::collections::HashMap<String, String>> {
    (!h.metadata.is_empty()).then(|| {
        h.metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

/// `bucket/key` for `x-amz-copy-source`, percent-encoded.
pub(super) fn copy_source(bucket: &str, key: &str) -> String {
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
