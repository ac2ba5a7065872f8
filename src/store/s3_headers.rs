//! The S3 adapter's request dressing: the macros that set an object's headers, tags, Object
//! Lock, encryption and storage class on the SDK's request builders (PutObject,
//! CreateMultipartUpload and CopyObject share setter names, not a trait) and read them back
//! from GetObject and HeadObject outputs. Only the S3 adapter uses them.

/// Set the backend's encryption and storage class on a PUT, CreateMultipartUpload or
/// CopyObject request builder.
macro_rules! with_placement {
    ($req:expr, $p:expr) => {{
        let p: &Placement = $p;
        let (sse, key_id, bucket_key) = match &p.sse {
            None => (None, None, None),
            Some(Sse::Aes256) => (Some(ServerSideEncryption::Aes256), None, None),
            Some(Sse::Kms { key_id, bucket_key }) => (
                Some(ServerSideEncryption::AwsKms),
                key_id.clone(),
                bucket_key.then_some(true),
            ),
        };
        $req.set_server_side_encryption(sse)
            .set_ssekms_key_id(key_id)
            .set_bucket_key_enabled(bucket_key)
            .set_storage_class(p.storage_class.as_deref().map(StorageClass::from))
    }};
}
pub(super) use with_placement;

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
            .set_website_redirect_location(h.website_redirect_location.clone())
            .set_object_lock_mode(h.object_lock_mode.as_deref().map(ObjectLockMode::from))
            .set_object_lock_retain_until_date(retain_until(h))
            .set_object_lock_legal_hold_status(
                h.object_lock_legal_hold
                    .then_some(ObjectLockLegalHoldStatus::On),
            )
            .set_metadata(metadata(h))
    }};
}
pub(super) use with_headers;

/// The `ObjectMeta` of a GetObject or HeadObject output (both have the same accessors).
macro_rules! object_meta {
    ($out:expr, $size:expr) => {{
        let out = &$out;
        // S3's additional checksum (answered when asked with ChecksumMode=ENABLED).
        let checksum = [
            ("CRC64NVME", out.checksum_crc64_nvme()),
            ("CRC32C", out.checksum_crc32_c()),
            ("CRC32", out.checksum_crc32()),
            ("SHA256", out.checksum_sha256()),
            ("SHA1", out.checksum_sha1()),
        ]
        .into_iter()
        .find_map(|(a, v)| v.map(|v| (a, v)));
        ObjectMeta {
            part_layout: None,
            // "null": an object written before versioning was enabled, or none at all.
            version_id: out
                .version_id()
                .filter(|v| !v.is_empty() && *v != "null")
                .map(str::to_string),
            etag: unquote(out.e_tag().unwrap_or_default()),
            size: $size,
            last_modified_ms: out
                .last_modified()
                .map(|d| d.to_millis().unwrap_or(0))
                .unwrap_or(0),
            headers: ObjectHeaders {
                content_type: out.content_type().map(str::to_string),
                content_encoding: out.content_encoding().map(str::to_string),
                content_disposition: out.content_disposition().map(str::to_string),
                content_language: out.content_language().map(str::to_string),
                cache_control: out.cache_control().map(str::to_string),
                expires: out.expires_string().map(str::to_string),
                website_redirect_location: out.website_redirect_location().map(str::to_string),
                metadata: metadata_of(out.metadata()),
                // GetObjectTagging's, where the object has any (see `get`).
                tags: Default::default(),
                object_lock_mode: out.object_lock_mode().map(|m| m.as_str().to_string()),
                object_lock_retain_until: out
                    .object_lock_retain_until_date()
                    .and_then(|d| d.fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime).ok()),
                object_lock_legal_hold: out.object_lock_legal_hold_status()
                    == Some(&ObjectLockLegalHoldStatus::On),
                checksum_algorithm: checksum.map(|(a, _)| a.to_string()),
                checksum: checksum.map(|(_, v)| v.to_string()),
                checksum_type: checksum
                    .and(out.checksum_type())
                    .map(|t| t.as_str().to_string()),
            },
        }
    }};
}
pub(super) use object_meta;
