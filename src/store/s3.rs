//! The S3 adapter: the only module that speaks `aws_sdk_s3`. Each [`ObjectStore`] operation is
//! one request; SDK errors are classified here ([`crate::store::sdk_error`]).
//!
//! Bodies we send (PutObject, UploadPart) carry a CRC-32 that S3 checks, so their payload is
//! not also SHA-256-signed (`UNSIGNED-PAYLOAD`, as aws-cli and boto3 do): one hash pass less.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, EncodingType,
    ObjectLockLegalHoldStatus, ObjectLockMode, ServerSideEncryption, StorageClass,
};
use bytes::Bytes;
use futures::StreamExt;
use tracing::debug;

use super::object::ObjectHeaders;
use super::object::ObjectRecord;
use super::object::{
    ByteStream, Got, Head, ListPage, ObjectMeta, ObjectStore, OpenUpload, Part, Placement, PutMode,
    Sse, UploadPage,
};
use super::s3_headers::{object_meta, with_headers, with_placement};
use super::s3_wire::{
    HttpStatus, copy_source, expires, http_status, metadata, metadata_of, range_total,
    retain_until, s3_build_err, s3_err, tagging, unquote, url_decode,
};
use crate::error::{Error, Result};

/// [`ObjectStore`] over an S3 client (AWS, or an emulator through `AWS_ENDPOINT_URL`).
#[derive(Clone, Debug)]
pub struct S3Backend {
    pub(super) client: Client,
    /// Encryption and storage class of every object written (the bucket's defaults when
    /// left unset).
    placement: Placement,
}

impl S3Backend {
    pub fn new(client: Client) -> Self {
        S3Backend {
            client,
            placement: Placement::default(),
        }
    }
}

impl S3Backend {
    /// An object's tags (GetObjectTagging).
    async fn read_tags(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        let out = self
            .client
            .get_object_tagging()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_err("GetObjectTagging", bucket, key, e))?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }
}

/// A body from the SDK as a [`ByteStream`].
fn stream(body: SdkStream) -> ByteStream {
    futures::stream::unfold(body, |mut body| async move {
        body.next()
            .await
            .map(|r| (r.map_err(|e| Box::new(e) as crate::error::BoxError), body))
    })
    .boxed()
}

#[async_trait::async_trait]
impl ObjectStore for S3Backend {
    async fn head_bucket(&self, bucket: &str) -> Result<()> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if http_status(&e) == Some(404) => Err(Error::NoSuchBucket {
                bucket: bucket.to_string(),
            }),
            Err(e) => Err(s3_err("HeadBucket", bucket, "", e)),
        }
    }

    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                == Some(&aws_sdk_s3::types::ObjectLockEnabled::Enabled)),
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => Ok(false),
            Err(e) => Err(s3_err("GetObjectLockConfiguration", bucket, "", e)),
        }
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .encoding_type(EncodingType::Url)
            .set_start_after(start_after.filter(|_| token.is_none()).map(str::to_string))
            .set_continuation_token(token.map(str::to_string))
            .send()
            .await
            .map_err(|e| s3_err("ListObjectsV2", bucket, prefix, e))?;
        let encoded = out.encoding_type() == Some(&EncodingType::Url);
        let records = out
            .contents()
            .iter()
            .map(|o| {
                let raw = o.key().unwrap_or_default();
                ObjectRecord {
                    key: if encoded {
                        url_decode(raw)
                    } else {
                        raw.to_string()
                    },
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
                    state: None,
                    withheld: None,
                }
            })
            .collect();
        let next = match out.next_continuation_token() {
            Some(t) if out.is_truncated() == Some(true) => Some(t.to_string()),
            _ => None,
        };
        Ok(ListPage { records, next })
    }

    async fn get(
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
        let mut meta = object_meta!(out, size);
        // The tags, on the first read of a tagged object (a later range needs only bytes).
        if out.tag_count().unwrap_or(0) > 0 && range.is_none_or(|(start, _)| start == 0) {
            meta.headers.tags = self.read_tags(bucket, key).await?;
        }
        Ok(Got::Found {
            meta,
            body: stream(out.body),
        })
    }

    async fn tags(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        match self.read_tags(bucket, key).await {
            Err(Error::S3 {
                class: crate::error::Class::NotFound,
                ..
            }) => Ok(Default::default()),
            other => other,
        }
    }

    async fn part_sizes(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        parts: u64,
    ) -> Result<Option<Vec<u64>>> {
        self.read_part_sizes(bucket, key, etag, parts).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<Head>> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Head {
                meta: object_meta!(out, out.content_length().unwrap_or(0).max(0) as u64),
                restore: out.restore().map(str::to_string),
                tag_count: out.tag_count().unwrap_or(0).max(0) as u32,
            })),
            Err(e) if http_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(s3_err("HeadObject", bucket, key, e)),
        }
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        h: &ObjectHeaders,
        mode: PutMode<'_>,
    ) -> Result<Option<String>> {
        let mut req = self.client.put_object().bucket(bucket).key(key);
        req = match mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::IfMatch(etag) => req.if_match(format!("\"{etag}\"")),
        };
        let mut req = with_placement!(req, &self.placement).set_tagging(tagging(&h.tags));
        // The source's own checksum, for S3 to check these bytes against.
        if let Some((alg, v)) = h.full_object_checksum() {
            let v = Some(v.to_string());
            req = match alg {
                "CRC32" => req
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .set_checksum_crc32(v),
                "CRC32C" => req
                    .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                    .set_checksum_crc32_c(v),
                "CRC64NVME" => req
                    .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                    .set_checksum_crc64_nvme(v),
                "SHA1" => req
                    .checksum_algorithm(ChecksumAlgorithm::Sha1)
                    .set_checksum_sha1(v),
                _ => req
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .set_checksum_sha256(v),
            };
        }
        let sent = with_headers!(req, h, bucket, key)
            .body(SdkStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await;
        match sent {
            Ok(out) => Ok(Some(unquote(out.e_tag().unwrap_or_default()))),
            // 412/409: written since; 404 under If-Match: removed since.
            Err(e) if mode != PutMode::Overwrite && precondition_failed(&e, mode) => Ok(None),
            Err(e) => Err(s3_err("PutObject", bucket, key, e)),
        }
    }

    async fn copy(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        headers: Option<&ObjectHeaders>,
    ) -> Result<String> {
        let mut req = self
            .client
            .copy_object()
            .bucket(bucket)
            .key(to)
            .copy_source(copy_source(bucket, from));
        if let Some(h) = headers {
            req = req.metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace);
            req = with_headers!(req, h, bucket, to);
            // The tags given, exactly (none: none), not the source's.
            req = req
                .tagging_directive(aws_sdk_s3::types::TaggingDirective::Replace)
                .set_tagging(tagging(&h.tags));
            // The copy keeps the object's checksum algorithm (S3 computes it again over the
            // same bytes); a locked copy needs one.
            let alg = h.checksum_algorithm.as_deref();
            if let Some(alg) = alg.or(h.is_locked().then_some("CRC32")) {
                req = req.checksum_algorithm(ChecksumAlgorithm::from(alg));
            }
        }
        req = with_placement!(req, &self.placement);
        let sent = if headers.is_some_and(ObjectHeaders::is_locked) {
            // moto asks a locked copy for the header a locked PUT needs (S3 does not).
            req.customize()
                .mutate_request(|r| {
                    r.headers_mut()
                        .insert("x-amz-sdk-checksum-algorithm", "CRC32");
                })
                .send()
                .await
        } else {
            req.send().await
        };
        let out = sent.map_err(|e| s3_err("CopyObject", bucket, to, e))?;
        Ok(unquote(
            out.copy_object_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default(),
        ))
    }

    async fn create_upload(&self, bucket: &str, key: &str, h: &ObjectHeaders) -> Result<String> {
        let req = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key);
        let req = with_placement!(req, &self.placement).set_tagging(tagging(&h.tags));
        let created = with_headers!(req, h, bucket, key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| s3_err("CreateMultipartUpload", bucket, key, e))?;
        Ok(created.upload_id().unwrap_or_default().to_string())
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part> {
        let out = self
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(SdkStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| s3_err("UploadPart", bucket, key, e))?;
        Ok(Part {
            number,
            etag: unquote(out.e_tag().unwrap_or_default()),
            crc32: out.checksum_crc32().map(str::to_string),
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
        let out = self
            .client
            .upload_part_copy()
            .bucket(bucket)
            .key(to)
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(copy_source(bucket, from))
            .copy_source_range(format!("bytes={start}-{end}"))
            .send()
            .await
            .map_err(|e| s3_err("UploadPartCopy", bucket, to, e))?;
        let result = out.copy_part_result();
        Ok(Part {
            number,
            etag: unquote(result.and_then(|r| r.e_tag()).unwrap_or_default()),
            crc32: result.and_then(|r| r.checksum_crc32()).map(str::to_string),
        })
    }

    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[Part],
        mode: PutMode<'_>,
    ) -> Result<Option<String>> {
        let parts = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(format!("\"{}\"", p.etag))
                    .set_checksum_crc32(p.crc32.clone())
                    .build()
            })
            .collect();
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        req = match mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::IfMatch(etag) => req.if_match(format!("\"{etag}\"")),
        };
        match req.send().await {
            Ok(done) => Ok(Some(unquote(done.e_tag().unwrap_or_default()))),
            Err(e) if mode != PutMode::Overwrite && precondition_failed(&e, mode) => Ok(None),
            Err(e) => Err(s3_err("CompleteMultipartUpload", bucket, key, e)),
        }
    }

    async fn abort_upload(&self, bucket: &str, key: &str, id: &str) -> Result<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // An earlier attempt's answer was lost, so the SDK's retry finds it gone.
            Err(e) if e.code() == Some("NoSuchUpload") => {
                debug!(bucket, key, upload_id = id, "upload already gone");
                Ok(())
            }
            Err(e) => Err(s3_err("AbortMultipartUpload", bucket, key, e)),
        }
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<Option<UploadPage>> {
        let (key_marker, id_marker) = marker.unzip();
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker)
            .set_upload_id_marker(id_marker)
            .send()
            .await;
        let out = match out {
            // Some S3-compatible servers (s3s-fs, for one) lack the call.
            Err(e) if e.code() == Some("NotImplemented") => return Ok(None),
            other => other.map_err(|e| s3_err("ListMultipartUploads", bucket, prefix, e))?,
        };
        let uploads = out
            .uploads()
            .iter()
            .filter_map(|u| {
                Some(OpenUpload {
                    key: u.key()?.to_string(),
                    upload_id: u.upload_id()?.to_string(),
                })
            })
            .collect();
        let next = match (
            out.is_truncated(),
            out.next_key_marker(),
            out.next_upload_id_marker(),
        ) {
            (Some(true), Some(k), id) => Some((k.to_string(), id.unwrap_or_default().to_string())),
            _ => None,
        };
        Ok(Some(UploadPage { uploads, next }))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_err("DeleteObject", bucket, key, e))?;
        Ok(())
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<()> {
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

    fn placed(&self, placement: &Placement) -> Result<std::sync::Arc<dyn ObjectStore>> {
        Ok(std::sync::Arc::new(S3Backend {
            client: self.client.clone(),
            placement: placement.clone(),
        }))
    }
}

/// Whether a conditional write failed its condition: 412 or 409 (a concurrent conditional
/// write), or 404 under If-Match (the key was removed since).
fn precondition_failed<E, R: HttpStatus>(e: &SdkError<E, R>, mode: PutMode<'_>) -> bool {
    match http_status(e) {
        Some(412 | 409) => true,
        Some(404) => matches!(mode, PutMode::IfMatch(_)),
        _ => false,
    }
}
