//! Multipart uploads: parts kept as they arrived and joined without a copy on completion,
//! checked as S3 checks them (ascending numbers, matching ETags and checksums, every part but
//! the last at least 5 MiB); UploadPartCopy from a range of an object; ListMultipartUploads.

use std::sync::Arc;
use std::time::SystemTime;

use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use crate::s3::Mem;
use crate::store::{self, Body, Object, Part, Upload};
use crate::wire::{algorithm_of, check, parse_tags, receive, sent_checksum};

impl Mem {
    pub(crate) async fn create_multipart_upload_(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        self.bucket_exists(&input.bucket)?;
        let algorithm = input
            .checksum_algorithm
            .as_ref()
            .map(|a| a.as_str().to_string());
        if let Some(a) = &algorithm
            && store::hasher(a).is_none()
        {
            return Err(s3_error!(InvalidArgument, "unknown checksum {a}"));
        }
        let checksum_type = input
            .checksum_type
            .as_ref()
            .map(|t| t.as_str().to_string())
            .or_else(|| {
                algorithm.as_ref().map(|a| {
                    if a == ChecksumAlgorithm::CRC64NVME {
                        "FULL_OBJECT".to_string()
                    } else {
                        "COMPOSITE".to_string()
                    }
                })
            });
        let id = {
            let mut n = self
                .0
                .next_upload
                .lock()
                .map_err(|_| s3_error!(InternalError))?;
            *n += 1;
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            format!("{:016x}{nanos:08x}", *n)
        };
        let upload = Upload {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            initiated: SystemTime::now(),
            attrs: crate::attrs_of!(input,
                storage_class: input.storage_class.as_ref().map(|s| s.as_str().to_string()),
                tags: parse_tags(input.tagging.as_deref())),
            algorithm: algorithm.clone(),
            checksum_type: checksum_type.clone(),
            parts: Default::default(),
        };
        self.0.uploads()?.insert(id.clone(), upload);
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            checksum_algorithm: algorithm.map(ChecksumAlgorithm::from),
            checksum_type: checksum_type.map(ChecksumType::from),
            ..Default::default()
        }))
    }

    pub(crate) async fn upload_part_(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let trailers = req.trailing_headers.clone();
        let mut input = req.input;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part numbers are 1 to 10,000"));
        }
        let algorithm = self.upload_algorithm(&input.upload_id, &input.bucket, &input.key)?;
        let sent = crate::checksum_of!(input, take);
        let algorithm =
            algorithm.or_else(|| algorithm_of(input.checksum_algorithm.as_ref(), &sent));
        let received = receive(input.body.take(), algorithm.as_deref()).await?;
        check(&received.checksum, &sent_checksum(sent, trailers.as_ref()))?;
        let part = Part {
            md5: received.md5,
            checksum: received.checksum,
            body: received.body,
        };
        let out = UploadPartOutput {
            e_tag: Some(ETag::Strong(hex::encode(part.md5))),
            checksum_crc32: part.checksum.checksum_crc32.clone(),
            checksum_crc32c: part.checksum.checksum_crc32c.clone(),
            checksum_sha1: part.checksum.checksum_sha1.clone(),
            checksum_sha256: part.checksum.checksum_sha256.clone(),
            checksum_crc64nvme: part.checksum.checksum_crc64nvme.clone(),
            ..Default::default()
        };
        self.add_part(&input.upload_id, input.part_number, part)?;
        Ok(S3Response::new(out))
    }

    pub(crate) async fn upload_part_copy_(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        let src = self.copy_source(&input.copy_source)?;
        let algorithm = self.upload_algorithm(&input.upload_id, &input.bucket, &input.key)?;
        let (start, end) = match input.copy_source_range.as_deref() {
            None => (0, src.body.len()),
            Some(r) => {
                let r = Range::parse(r)
                    .map_err(|_| s3_error!(InvalidArgument, "bad x-amz-copy-source-range"))?
                    .check(src.body.len())?;
                (r.start, r.end)
            }
        };
        let body = Body::from_chunks(src.body.slice(start, end));
        let mut md5 = Md5::new();
        let mut h = algorithm
            .as_deref()
            .and_then(store::hasher)
            .unwrap_or_default();
        for c in body.chunks() {
            md5.update(c);
            h.update(c);
        }
        let part = Part {
            md5: md5.finalize(),
            checksum: h.finalize(),
            body,
        };
        let result = CopyPartResult {
            e_tag: Some(ETag::Strong(hex::encode(part.md5))),
            last_modified: Some(Timestamp::from(store::now())),
            checksum_crc32: part.checksum.checksum_crc32.clone(),
            checksum_crc32c: part.checksum.checksum_crc32c.clone(),
            checksum_sha1: part.checksum.checksum_sha1.clone(),
            checksum_sha256: part.checksum.checksum_sha256.clone(),
            checksum_crc64nvme: part.checksum.checksum_crc64nvme.clone(),
        };
        self.add_part(&input.upload_id, input.part_number, part)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(result),
            ..Default::default()
        }))
    }

    pub(crate) async fn complete_multipart_upload_(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| s3_error!(InvalidPart, "name at least one part"))?;
        let object = self.assemble(&input.upload_id, &input.bucket, &input.key, &listed)?;
        let stored = self.store(
            &input.bucket,
            &input.key,
            object,
            input.if_none_match.as_ref(),
            input.if_match.as_ref(),
        )?;
        self.0.uploads()?.remove(&input.upload_id);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(stored.e_tag.clone())),
            checksum_crc32: stored.checksum.checksum_crc32.clone(),
            checksum_crc32c: stored.checksum.checksum_crc32c.clone(),
            checksum_sha1: stored.checksum.checksum_sha1.clone(),
            checksum_sha256: stored.checksum.checksum_sha256.clone(),
            checksum_crc64nvme: stored.checksum.checksum_crc64nvme.clone(),
            checksum_type: stored.checksum_type.clone().map(ChecksumType::from),
            ..Default::default()
        }))
    }

    pub(crate) async fn abort_multipart_upload_(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let mut uploads = self.0.uploads()?;
        match uploads.get(&req.input.upload_id) {
            Some(u) if u.bucket == req.input.bucket && u.key == req.input.key => {
                uploads.remove(&req.input.upload_id);
                Ok(S3Response::new(AbortMultipartUploadOutput::default()))
            }
            _ => Err(s3_error!(NoSuchUpload)),
        }
    }

    pub(crate) async fn list_multipart_uploads_(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.bucket_exists(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let uploads = self.0.uploads()?;
        let mut matching: Vec<(&String, &Upload)> = uploads
            .iter()
            .filter(|(_, u)| u.bucket == input.bucket && u.key.starts_with(&prefix))
            .filter(
                |(id, u)| match (&input.key_marker, &input.upload_id_marker) {
                    (Some(k), Some(i)) => (&u.key, *id) > (k, i),
                    (Some(k), None) => &u.key > k,
                    _ => true,
                },
            )
            .collect();
        matching.sort_by(|a, b| (&a.1.key, a.0).cmp(&(&b.1.key, b.0)));
        let truncated = matching.len() > max;
        matching.truncate(max);
        let next = matching
            .last()
            .map(|(id, u)| (u.key.clone(), (*id).clone()));
        let list = matching
            .iter()
            .map(|(id, u)| MultipartUpload {
                key: Some(u.key.clone()),
                upload_id: Some((*id).clone()),
                initiated: Some(Timestamp::from(u.initiated)),
                checksum_algorithm: u.algorithm.clone().map(ChecksumAlgorithm::from),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: next.as_ref().filter(|_| truncated).map(|n| n.0.clone()),
            next_upload_id_marker: next.filter(|_| truncated).map(|n| n.1),
            uploads: Some(list),
            ..Default::default()
        }))
    }
}

impl Mem {
    /// The checksum algorithm of upload `id` of `bucket`/`key`.
    fn upload_algorithm(&self, id: &str, bucket: &str, key: &str) -> S3Result<Option<String>> {
        let uploads = self.0.uploads()?;
        match uploads.get(id) {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u.algorithm.clone()),
            _ => Err(s3_error!(NoSuchUpload)),
        }
    }

    fn add_part(&self, id: &str, number: i32, part: Part) -> S3Result<()> {
        let mut uploads = self.0.uploads()?;
        let u = uploads.get_mut(id).ok_or_else(|| s3_error!(NoSuchUpload))?;
        u.parts.insert(number, Arc::new(part));
        Ok(())
    }

    /// The object the listed parts of upload `id` make (checked as S3 checks them: ascending
    /// numbers, matching ETags and checksums, every part but the last at least 5 MiB).
    fn assemble(
        &self,
        id: &str,
        bucket: &str,
        key: &str,
        listed: &[CompletedPart],
    ) -> S3Result<Object> {
        let (parts, attrs, algorithm, checksum_type) = {
            let uploads = self.0.uploads()?;
            let u = match uploads.get(id) {
                Some(u) if u.bucket == bucket && u.key == key => u,
                _ => return Err(s3_error!(NoSuchUpload)),
            };
            let mut parts = Vec::with_capacity(listed.len());
            let mut previous = 0;
            for p in listed {
                let n = p.part_number.unwrap_or(0);
                if n <= previous {
                    return Err(s3_error!(InvalidPartOrder));
                }
                previous = n;
                let part = u.parts.get(&n).ok_or_else(|| s3_error!(InvalidPart))?;
                if p.e_tag
                    .as_ref()
                    .is_some_and(|t| t.value() != hex::encode(part.md5))
                {
                    return Err(s3_error!(InvalidPart, "part {n}: the ETag does not match"));
                }
                let sent = crate::checksum_of!(p, clone);
                check(&part.checksum, &sent)
                    .map_err(|_| s3_error!(InvalidPart, "part {n}: the checksum does not match"))?;
                parts.push(part.clone());
            }
            (
                parts,
                u.attrs.clone(),
                u.algorithm.clone(),
                u.checksum_type.clone(),
            )
        };
        if parts[..parts.len() - 1]
            .iter()
            .any(|p| p.body.len() < 5 << 20)
        {
            return Err(s3_error!(EntityTooSmall));
        }
        let mut md5s = Md5::new();
        for p in &parts {
            md5s.update(&p.md5);
        }
        let n = parts.len();
        let body = Body::join(parts.iter().map(|p| &p.body));
        let algorithm = algorithm.unwrap_or_else(|| ChecksumAlgorithm::CRC64NVME.to_string());
        let full = checksum_type.as_deref() != Some("COMPOSITE");
        let mut h = store::hasher(&algorithm).unwrap_or_default();
        if full {
            for c in body.chunks() {
                h.update(c);
            }
        } else {
            use base64::Engine as _;
            for p in &parts {
                let v = store::value_of(&p.checksum, &algorithm)
                    .cloned()
                    .unwrap_or_default();
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|_| s3_error!(InternalError))?;
                h.update(&raw);
            }
        }
        let mut checksum = h.finalize();
        if !full && let Some(v) = store::value_of(&checksum, &algorithm).cloned() {
            checksum = store::with_value(checksum, &algorithm, format!("{v}-{n}"));
        }
        Ok(Object {
            body,
            e_tag: format!("{}-{n}", hex::encode(md5s.finalize())),
            last_modified: store::now(),
            attrs,
            checksum,
            checksum_type: Some(if full { "FULL_OBJECT" } else { "COMPOSITE" }.to_string()),
            parts: Some(n as i32),
        })
    }
}
