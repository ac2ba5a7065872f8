//! A volume in a bucket as a [`RangeSource`]: every read a ranged GET conditional on the
//! version listed, the whole volume as ordered, parallel ranged GETs.

use bytes::Bytes;
use futures::StreamExt;

use super::{Got, Store};
use crate::error::{Error, Result};
use crate::format::unzip::{RangeSource, Stream, VolumeSource};

/// Ranged GETs of a streamed volume: size of each…
const RANGE: u64 = 8 * 1024 * 1024;
/// …and how many are in flight.
const RANGES_IN_FLIGHT: usize = 4;

/// A volume object, at the version listed.
#[derive(Debug, Clone)]
pub struct S3Volume {
    pub store: Store,
    pub bucket: String,
    pub key: String,
    /// The version read (every ranged GET is conditional on it).
    pub etag: String,
    pub size: u64,
}

impl S3Volume {
    /// This object as a volume to read.
    pub fn source(self) -> VolumeSource {
        VolumeSource::new(std::sync::Arc::new(self))
    }
}

#[async_trait::async_trait]
impl RangeSource for S3Volume {
    fn display(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    fn file_name(&self) -> String {
        let key = &self.key;
        key.rsplit('/').next().unwrap_or(key).to_string()
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    async fn read(&self, volume: &VolumeSource, offset: u64, len: u64) -> Result<Bytes> {
        let range = Some((offset, offset + len - 1));
        let (bucket, key) = (&self.bucket, &self.key);
        match self.store.get(bucket, key, Some(&self.etag), range).await? {
            Got::Found { body, .. } if body.len() as u64 == len => Ok(body),
            Got::Found { .. } => Err(volume.bad("short ranged read")),
            Got::Changed | Got::Gone => Err(Error::ObjectChanged {
                bucket: bucket.clone(),
                key: key.clone(),
            }),
        }
    }

    async fn stream(&self, volume: &VolumeSource) -> Result<Stream> {
        let size = self.size;
        let me = volume.clone();
        let chunks = futures::stream::iter((0..size).step_by(RANGE as usize))
            .map(move |start| {
                let me = me.clone();
                tokio::spawn(async move { me.read_range(start, RANGE.min(size - start)).await })
            })
            .buffered(RANGES_IN_FLIGHT)
            .map(|r| match r {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(std::io::Error::other(e)),
                Err(e) => Err(std::io::Error::other(e)),
            });
        Ok(Box::new(tokio_util::io::StreamReader::new(chunks)))
    }
}
