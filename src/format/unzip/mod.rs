//! Reading ZIP volumes: the central directory (ZIP64 aware) from the volume's tail, single
//! entries by byte range, and `Walk`, one sequential pass over a whole volume that yields each
//! entry's (inflated) bytes and checks its CRC-32 and size while hashing the volume itself.
//! It reads from a `VolumeSource` (a local file, or an S3 object read by ranged GETs in the
//! store's adapter: anything that is a [`RangeSource`]); what the
//! bytes should be (the manifest) is the caller's business.
mod directory;
mod volume;
mod walk;
use directory::*;

use std::io::SeekFrom;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, BufReader};

use crate::error::{Error, Result};
use crate::format::manifest::limits;
use crate::format::seal::Identities;
use std::sync::Arc;

pub use directory::{
    CentralEntry, Directory, EntryDigest, entry_stream, read_directory, read_entry,
};
pub use volume::{Tap, Volume};
pub use walk::Walk;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
const METHOD_STORED: u16 = 0;
const METHOD_DEFLATE: u16 = 8;
/// Bytes read per step of a walk.
const CHUNK: usize = 256 * 1024;
/// The largest single read of a volume's structures (its central directory is capped lower).
pub const MAX_RANGE: u64 = limits::CENTRAL_DIRECTORY + limits::MANIFEST;

/// Where a volume's bytes are: anything that reads byte ranges ([`RangeSource`]: a local file
/// here, an S3 object in the store's adapter), with the bounds every read is checked against.
#[derive(Debug, Clone)]
pub struct VolumeSource(Arc<dyn RangeSource>);

/// Something a volume can be read from by byte range.
#[async_trait::async_trait]
pub trait RangeSource: Send + Sync + std::fmt::Debug + 'static {
    /// How a user would name it.
    fn display(&self) -> String;
    /// Its file name (last path segment).
    fn file_name(&self) -> String;
    /// Size in bytes.
    async fn size(&self) -> Result<u64>;
    /// Bytes `offset..offset+len`, inside the source and at most a few MiB (checked by the
    /// caller); `volume` names it in errors.
    async fn read(&self, volume: &VolumeSource, offset: u64, len: u64) -> Result<Bytes>;
    /// The whole source as one stream (`volume` is this source, for ranged reads of it).
    async fn stream(&self, volume: &VolumeSource) -> Result<Stream>;
}

/// A volume as a local file.
#[derive(Debug)]
struct LocalFile(PathBuf);

pub type Stream = Box<dyn AsyncRead + Unpin + Send>;

impl VolumeSource {
    /// A volume read from `source`.
    pub fn new(source: Arc<dyn RangeSource>) -> Self {
        VolumeSource(source)
    }

    /// A volume in a local file.
    pub fn file(path: PathBuf) -> Self {
        VolumeSource(Arc::new(LocalFile(path)))
    }

    /// How a user would name it.
    pub fn display(&self) -> String {
        self.0.display()
    }

    /// The volume's file name (last path segment).
    pub fn file_name(&self) -> String {
        self.0.file_name()
    }

    pub(crate) fn bad(&self, detail: impl Into<String>) -> Error {
        Error::Archive {
            volume: self.display(),
            detail: detail.into(),
        }
    }

    /// Size in bytes.
    pub async fn len(&self) -> Result<u64> {
        self.0.size().await
    }

    /// Bytes `offset..offset+len`. The range must lie inside the volume and be at most
    /// `max` bytes (what the caller can hold); a range the volume's own bytes point outside of
    /// is damage (exit 5), never an allocation or an I/O error.
    pub async fn read_range(&self, offset: u64, len: u64) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let size = self.len().await?;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(self.bad(format!(
                "bytes {offset}+{len} lie past its end ({size} bytes): truncated or forged offsets"
            )));
        }
        if len > MAX_RANGE {
            return Err(self.bad(format!(
                "a structure of {len} bytes is larger than any a volume holds ({MAX_RANGE})"
            )));
        }
        self.0.read(self, offset, len).await
    }

    /// The whole volume as one stream.
    pub async fn stream(&self) -> Result<Stream> {
        self.0.stream(self).await
    }
}

#[async_trait::async_trait]
impl RangeSource for LocalFile {
    fn display(&self) -> String {
        self.0.display().to_string()
    }

    fn file_name(&self) -> String {
        self.0
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    async fn size(&self) -> Result<u64> {
        tokio::fs::metadata(&self.0)
            .await
            .map(|m| m.len())
            .map_err(|source| Error::Io {
                op: "reading",
                path: self.0.clone(),
                source,
            })
    }

    async fn read(&self, volume: &VolumeSource, offset: u64, len: u64) -> Result<Bytes> {
        let p = &self.0;
        let io = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::UnexpectedEof => volume.bad(format!(
                "ends before byte {} (it shrank while being read?)",
                offset + len
            )),
            _ => Error::Io {
                op: "reading",
                path: p.clone(),
                source,
            },
        };
        let mut f = tokio::fs::File::open(p).await.map_err(io)?;
        f.seek(SeekFrom::Start(offset)).await.map_err(io)?;
        let mut buf = vec![0; len as usize];
        f.read_exact(&mut buf).await.map_err(io)?;
        Ok(buf.into())
    }

    async fn stream(&self, _: &VolumeSource) -> Result<Stream> {
        let f = tokio::fs::File::open(&self.0)
            .await
            .map_err(|source| Error::Io {
                op: "opening",
                path: self.0.clone(),
                source,
            })?;
        Ok(Box::new(BufReader::with_capacity(CHUNK, f)))
    }
}
