//! The S3 operations the benchmark's tools use, over [`Store`]: buckets; PUT, GET (ranges,
//! `If-Match`), HEAD, DELETE, batch DELETE, CopyObject; ListObjects v1 and v2 (one page costs
//! its own length); multipart uploads (parts kept, not copied, on completion) with UploadPartCopy
//! and ListMultipartUploads; tags. ETags and checksums as S3 computes them: MD5 (of the part
//! MD5s, `-N`, for a multipart object); the checksum a client asks for, checked against the
//! value it sent (header or trailer), CRC64NVME when it asks for none; a multipart checksum
//! `COMPOSITE` (of the part checksums, `-N`) or, for CRC64NVME, `FULL_OBJECT`.

use std::sync::Arc;
use std::time::SystemTime;

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

use crate::store::{self, Object, Store};
use crate::wire::{
    algorithm_of, attrs_of_put, blob, check, check_write, parse_tags, quoted_match, receive,
    sent_checksum, whole_checksum,
};

/// The server: one [`Store`].
#[derive(Clone, Default)]
pub struct Mem(pub Arc<Store>);

impl Mem {
    pub(crate) fn object(&self, bucket: &str, key: &str) -> S3Result<Arc<Object>> {
        let buckets = self.0.read()?;
        let b = buckets.get(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        b.objects
            .get(key)
            .cloned()
            .ok_or_else(|| s3_error!(NoSuchKey))
    }

    /// Store `object` at `key` once the conditions hold (checked under the same lock).
    pub(crate) fn store(
        &self,
        bucket: &str,
        key: &str,
        object: Object,
        if_none_match: Option<&ETagCondition>,
        if_match: Option<&ETagCondition>,
    ) -> S3Result<Arc<Object>> {
        let mut buckets = self.0.write()?;
        let b = buckets
            .get_mut(bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        check_write(b.objects.get(key).map(|o| &**o), if_none_match, if_match)?;
        let object = Arc::new(object);
        b.objects.insert(key.to_string(), object.clone());
        Ok(object)
    }

    /// The object a CopyObject or UploadPartCopy reads (`bucket/key`; access points and
    /// outposts are not served).
    pub(crate) fn copy_source(&self, source: &CopySource) -> S3Result<Arc<Object>> {
        let CopySource::Bucket { bucket, key, .. } = source else {
            return Err(s3_error!(NotImplemented));
        };
        self.object(bucket, key)
    }

    pub(crate) fn bucket_exists(&self, bucket: &str) -> S3Result<()> {
        let buckets = self.0.read()?;
        buckets
            .contains_key(bucket)
            .then_some(())
            .ok_or_else(|| s3_error!(NoSuchBucket))
    }
}

#[async_trait::async_trait]
impl S3 for Mem {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let mut buckets = self.0.write()?;
        if buckets.contains_key(&req.input.bucket) {
            return Err(s3_error!(BucketAlreadyOwnedByYou));
        }
        buckets.insert(
            req.input.bucket,
            store::Bucket {
                created: SystemTime::now(),
                objects: Default::default(),
            },
        );
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let mut buckets = self.0.write()?;
        match buckets.get(&req.input.bucket) {
            None => return Err(s3_error!(NoSuchBucket)),
            Some(b) if !b.objects.is_empty() => return Err(s3_error!(BucketNotEmpty)),
            Some(_) => {}
        }
        buckets.remove(&req.input.bucket);
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        Err(s3_error!(ObjectLockConfigurationNotFoundError))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self.0.read()?;
        let list = buckets
            .iter()
            .map(|(name, b)| s3s::dto::Bucket {
                name: Some(name.clone()),
                creation_date: Some(Timestamp::from(b.created)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(list),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let trailers = req.trailing_headers.clone();
        let mut input = req.input;
        let sent = crate::checksum_of!(input, take);
        let algorithm = algorithm_of(input.checksum_algorithm.as_ref(), &sent);
        let received = receive(input.body.take(), algorithm.as_deref()).await?;
        check(&received.checksum, &sent_checksum(sent, trailers.as_ref()))?;
        let (checksum, checksum_type) = whole_checksum(&received, algorithm.as_deref());
        let object = Object {
            e_tag: hex::encode(received.md5),
            last_modified: store::now(),
            attrs: attrs_of_put(&input),
            checksum_type: Some(checksum_type),
            checksum,
            parts: None,
            body: received.body,
        };
        let stored = self.store(
            &input.bucket,
            &input.key,
            object,
            input.if_none_match.as_ref(),
            input.if_match.as_ref(),
        )?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(stored.e_tag.clone())),
            checksum_crc32: stored.checksum.checksum_crc32.clone(),
            checksum_crc32c: stored.checksum.checksum_crc32c.clone(),
            checksum_sha1: stored.checksum.checksum_sha1.clone(),
            checksum_sha256: stored.checksum.checksum_sha256.clone(),
            checksum_crc64nvme: stored.checksum.checksum_crc64nvme.clone(),
            checksum_type: stored.checksum_type.clone().map(ChecksumType::from),
            size: Some(stored.body.len() as i64),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let o = self.object(&input.bucket, &input.key)?;
        if let Some(c) = &input.if_match
            && !quoted_match(c, &o.e_tag)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        if let Some(c) = &input.if_none_match
            && quoted_match(c, &o.e_tag)
        {
            return Err(s3_error!(NotModified));
        }
        let size = o.body.len();
        let (range, content_range) = match &input.range {
            None => (0..size, None),
            Some(r) => {
                let r = r.check(size)?;
                let cr = format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1));
                (r, Some(cr))
            }
        };
        // S3 gives no checksum for a part of an object.
        let with = content_range.is_none() && checksum_mode(input.checksum_mode.as_ref());
        Ok(S3Response::new(
            crate::described!(GetObjectOutput, o, with, {
                content_length: Some((range.end - range.start) as i64),
                body: Some(blob(o.body.slice(range.start, range.end))),
                content_range,
                tag_count: (!o.attrs.tags.is_empty()).then_some(o.attrs.tags.len() as i32),
            }),
        ))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let o = self.object(&input.bucket, &input.key)?;
        if let Some(c) = &input.if_match
            && !quoted_match(c, &o.e_tag)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        let with = checksum_mode(input.checksum_mode.as_ref());
        Ok(S3Response::new(
            crate::described!(HeadObjectOutput, o, with, {
                content_length: Some(o.body.len() as i64),
            }),
        ))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let mut buckets = self.0.write()?;
        let b = buckets
            .get_mut(&req.input.bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        b.objects.remove(&req.input.key);
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "more than 1,000 keys"));
        }
        let mut buckets = self.0.write()?;
        let b = buckets
            .get_mut(&input.bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        for id in input.delete.objects {
            b.objects.remove(&id.key);
            if !quiet {
                deleted.push(DeletedObject {
                    key: Some(id.key),
                    ..Default::default()
                });
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.list_objects_v2_(req).await
    }
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.list_objects_(req).await
    }
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let src = self.copy_source(&input.copy_source)?;
        if let Some(c) = &input.copy_source_if_match
            && !quoted_match(c, &src.e_tag)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let mut attrs = if replace {
            crate::attrs_of!(input, storage_class: None, tags: src.attrs.tags.clone())
        } else {
            src.attrs.clone()
        };
        if input
            .tagging_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == TaggingDirective::REPLACE)
        {
            attrs.tags = parse_tags(input.tagging.as_deref());
        }
        attrs.storage_class = input
            .storage_class
            .as_ref()
            .map(|s| s.as_str().to_string())
            .or(attrs.storage_class);
        let (checksum, checksum_type) = match input.checksum_algorithm.as_ref() {
            Some(a) => {
                let mut h = store::hasher(a.as_str())
                    .ok_or_else(|| s3_error!(InvalidArgument, "unknown checksum"))?;
                for c in src.body.chunks() {
                    h.update(c);
                }
                (h.finalize(), Some("FULL_OBJECT".to_string()))
            }
            None => (src.checksum.clone(), src.checksum_type.clone()),
        };
        let object = Object {
            body: src.body.clone(),
            e_tag: src.e_tag.clone(),
            last_modified: store::now(),
            attrs,
            checksum,
            checksum_type,
            parts: src.parts,
        };
        let stored = self.store(&input.bucket, &input.key, object, None, None)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(stored.e_tag.clone())),
                last_modified: Some(Timestamp::from(stored.last_modified)),
                checksum_crc32: stored.checksum.checksum_crc32.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let o = self.object(&req.input.bucket, &req.input.key)?;
        let tag_set = o
            .attrs
            .tags
            .iter()
            .map(|(k, v)| Tag {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect();
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set,
            ..Default::default()
        }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let input = req.input;
        let mut buckets = self.0.write()?;
        let b = buckets
            .get_mut(&input.bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        let o = b
            .objects
            .get_mut(&input.key)
            .ok_or_else(|| s3_error!(NoSuchKey))?;
        let mut attrs = o.attrs.clone();
        attrs.tags = input
            .tagging
            .tag_set
            .into_iter()
            .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
            .collect();
        // A tag change leaves the ETag and LastModified as they were, as S3 does.
        *o = Arc::new(Object {
            body: o.body.clone(),
            e_tag: o.e_tag.clone(),
            last_modified: o.last_modified,
            attrs,
            checksum: o.checksum.clone(),
            checksum_type: o.checksum_type.clone(),
            parts: o.parts,
        });
        Ok(S3Response::new(PutObjectTaggingOutput::default()))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.create_multipart_upload_(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.upload_part_(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.upload_part_copy_(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.complete_multipart_upload_(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.abort_multipart_upload_(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.list_multipart_uploads_(req).await
    }
}

/// Whether a GET or HEAD asked for the object's checksum.
fn checksum_mode(mode: Option<&ChecksumMode>) -> bool {
    mode.is_some_and(|m| m.as_str() == ChecksumMode::ENABLED)
}
