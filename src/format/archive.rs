//! ZIP volumes: entry names for keys, and `VolumeWriter`, which streams object entries (whole
//! or piecewise) and the manifest into a `VolumeSink`, computing each entry's SHA-256 and
//! CRC-32 and the volume's own SHA-256 and size on the way. ZIP64 structures are written
//! whenever sizes, offsets or entry counts need them.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_zip::base::write::EntryStreamWriter;
use async_zip::tokio::write::ZipFileWriter;
use async_zip::{Compression as ZipCompression, ZipDateTime, ZipDateTimeBuilder, ZipEntryBuilder};
use futures::AsyncWriteExt as _;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;
use tokio_util::compat::Compat;

use crate::error::{Error, Result};
use crate::format::manifest::{ESCAPED_DIR, MANIFEST_ENTRY, Manifest};
use crate::format::seal::{Recipients, Sealer};
use crate::format::sink::VolumeSink;

/// Compression of object entries in the volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Stored,
    Deflate,
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stored" | "none" => Ok(Compression::Stored),
            "deflate" => Ok(Compression::Deflate),
            _ => Err(Error::config(
                "compression",
                format!("`{s}` (use stored or deflate)"),
            )),
        }
    }
}

/// Bytes a volume spends per entry beyond the object's own (headers, descriptor, central
/// directory, manifest line), used to keep volumes under their byte cap.
pub const ENTRY_OVERHEAD: u64 = 1024;

/// Cost of an object against a volume's byte cap.
pub fn entry_cost(key: &str, size: u64) -> u64 {
    size + ENTRY_OVERHEAD + 3 * key.len() as u64
}

/// Bytes of a volume's end beyond its entries' records: the manifest entry's local header and
/// central record, the ZIP64 end record and locator, the end record, and the manifest's own
/// closing bytes (an upper bound).
pub const TAIL_RESERVE: u64 = 512;

/// At most how many bytes an entry named `name` with `size` bytes of data takes where it is
/// written: local header, ZIP64 extra field, the data (deflate may grow incompressible data
/// by its block headers) and a ZIP64 data descriptor.
pub fn local_cost(name: &str, size: u64, compression: Compression) -> u64 {
    let data = match compression {
        Compression::Stored => size,
        Compression::Deflate => size + size / 1024 + 64,
    };
    30 + name.len() as u64 + 20 + data + 24
}

/// At most how many bytes the central directory record of an entry named `name` takes.
pub fn central_cost(name: &str) -> u64 {
    46 + name.len() as u64 + 32
}

/// At most how large an age-sealed file of `plain` bytes is, for `recipients` X25519
/// recipients: the header (a stanza each, the MAC), the payload nonce and a 16-byte tag per
/// 64 KiB chunk.
pub fn sealed_size(plain: u64, recipients: usize) -> u64 {
    plain + 512 + 160 * recipients as u64 + (plain / 65_536 + 1) * 16
}

/// Is `key` usable as-is as a relative path (no absolute path, `.`/`..` or empty segments,
/// backslashes, control characters, trailing `/`, or components over 255 bytes)?
pub fn is_safe_path(key: &str) -> bool {
    !key.is_empty()
        && !key.contains('\\')
        && !key.chars().any(char::is_control)
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= 255)
}

/// The zip entry name of an object: `<bucket>/<key>` when the key is a safe relative path,
/// else `_escaped/<sha256 of key>` (the exact key is always in the manifest).
pub fn entry_name(bucket: &str, key: &str) -> String {
    if is_safe_path(key) {
        format!("{bucket}/{key}")
    } else {
        format!(
            "{ESCAPED_DIR}/{}",
            hex::encode(Sha256::digest(key.as_bytes()))
        )
    }
}

/// DOS date-time of an entry (clamped to the 1980..=2107 range the format has).
pub fn zip_time(ms: i64) -> ZipDateTime {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let year = t.year().clamp(1980, 2107);
    ZipDateTimeBuilder::new()
        .year(year)
        .month(u8::from(t.month()) as u32)
        .day(t.day() as u32)
        .hour(t.hour() as u32)
        .minute(t.minute() as u32)
        .second(t.second() as u32)
        .build()
}

/// Counts and hashes every byte on its way to the sink.
pub struct Tee<S> {
    inner: S,
    hasher: Sha256,
    written: u64,
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tee<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.hasher.update(&buf[..n]);
            this.written += n as u64;
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Digests of one written entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDigest {
    pub size: u64,
    pub sha256: String,
    pub crc32: u32,
}

/// A finished volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
}

/// Writes one ZIP volume into a sink.
pub struct VolumeWriter<S: VolumeSink> {
    zip: ZipFileWriter<Sealer<Tee<S>>>,
    name: String,
    compression: ZipCompression,
    entries: u64,
}

impl<S: VolumeSink> VolumeWriter<S> {
    /// A volume into `sink`, sealed with age to `seal` when given (the tee under the seal
    /// counts and hashes what reaches the sink: the ciphertext).
    pub fn new(
        sink: S,
        name: impl Into<String>,
        compression: Compression,
        seal: Option<&Recipients>,
    ) -> Result<Self> {
        let tee = Tee {
            inner: sink,
            hasher: Sha256::new(),
            written: 0,
        };
        let layer = match seal {
            Some(r) => r.seal(tee)?,
            None => Sealer::plain(tee),
        };
        Ok(VolumeWriter {
            zip: ZipFileWriter::with_tokio(layer),
            name: name.into(),
            compression: match compression {
                Compression::Stored => ZipCompression::Stored,
                Compression::Deflate => ZipCompression::Deflate,
            },
            entries: 0,
        })
    }

    /// The volume's file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes written to the sink so far.
    pub fn written(&mut self) -> u64 {
        self.zip.inner_mut().get_ref().get_ref().written
    }

    /// Object entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn zip_err(&self, source: async_zip::error::ZipError) -> Error {
        Error::Zip {
            volume: self.name.clone(),
            source,
        }
    }

    /// Write an entry whose bytes are all in memory (CRC and size go in the local header, so
    /// even streaming readers such as Java's `ZipInputStream` accept it).
    pub async fn add_whole(
        &mut self,
        entry: &str,
        mtime_ms: i64,
        data: &[u8],
    ) -> Result<EntryDigest> {
        let digest = EntryDigest {
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
            crc32: crc32fast::hash(data),
        };
        let builder = ZipEntryBuilder::new(entry.to_string().into(), self.compression)
            .last_modification_date(zip_time(mtime_ms))
            .unix_permissions(0o644);
        self.zip
            .write_entry_whole(builder, data)
            .await
            .map_err(|e| self.zip_err(e))?;
        self.entries += 1;
        Ok(digest)
    }

    /// Start an entry whose bytes arrive piecewise (sizes and CRC go in a ZIP64 data
    /// descriptor after the data).
    pub async fn begin_stream(&mut self, entry: &str, mtime_ms: i64) -> Result<StreamEntry<'_, S>> {
        let builder = ZipEntryBuilder::new(entry.to_string().into(), self.compression)
            .last_modification_date(zip_time(mtime_ms))
            .unix_permissions(0o644);
        let name = self.name.clone();
        self.entries += 1;
        let writer = self
            .zip
            .write_entry_stream(builder)
            .await
            .map_err(|source| Error::Zip {
                volume: name.clone(),
                source,
            })?;
        Ok(StreamEntry {
            writer,
            volume: name,
            sha: Sha256::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
        })
    }

    /// Write the manifest as the last entry, close the archive and finish the sink (the
    /// volume becomes visible only now).
    pub async fn finish(self, manifest: &Manifest) -> Result<Written> {
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        self.finish_json(&json).await
    }

    /// [`VolumeWriter::finish`] with the manifest already serialised (see
    /// [`crate::format::manifest::ManifestJson`]).
    pub async fn finish_json(mut self, json: &[u8]) -> Result<Written> {
        let builder =
            ZipEntryBuilder::new(MANIFEST_ENTRY.to_string().into(), ZipCompression::Stored)
                .last_modification_date(zip_time(crate::clock::now_ms()))
                .unix_permissions(0o644);
        self.zip
            .write_entry_whole(builder, json)
            .await
            .map_err(|e| self.zip_err(e))?;
        let name = self.name.clone();
        let compat: Compat<Sealer<Tee<S>>> =
            self.zip.close().await.map_err(|source| Error::Zip {
                volume: name.clone(),
                source,
            })?;
        let mut layer = compat.into_inner();
        let io = |source| Error::Io {
            op: "finishing volume",
            path: name.clone().into(),
            source,
        };
        tokio::io::AsyncWriteExt::shutdown(&mut layer)
            .await
            .map_err(io)?;
        let tee = layer.into_inner();
        let written = Written {
            size: tee.written,
            sha256: hex::encode(tee.hasher.finalize()),
        };
        tee.inner.finish().await?;
        Ok(written)
    }
}

/// An entry being streamed into a volume.
pub struct StreamEntry<'a, S: VolumeSink> {
    writer: EntryStreamWriter<'a, Compat<Sealer<Tee<S>>>>,
    volume: String,
    sha: Sha256,
    crc: crc32fast::Hasher,
    size: u64,
}

impl<S: VolumeSink> StreamEntry<'_, S> {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.sha.update(chunk);
        self.crc.update(chunk);
        self.size += chunk.len() as u64;
        self.writer
            .write_all(chunk)
            .await
            .map_err(|source| Error::Io {
                op: "writing zip volume",
                path: self.volume.clone().into(),
                source,
            })
    }

    pub async fn close(self) -> Result<EntryDigest> {
        let volume = self.volume;
        self.writer
            .close()
            .await
            .map_err(|source| Error::Zip { volume, source })?;
        Ok(EntryDigest {
            size: self.size,
            sha256: hex::encode(self.sha.finalize()),
            crc32: self.crc.finalize(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_keys_are_escaped() {
        for bad in [
            "/abs",
            "a/../b",
            "./a",
            "a//b",
            "a\\b",
            "a\u{1}b",
            "dir/",
            "",
            "..",
            &"x".repeat(256),
        ] {
            assert!(!is_safe_path(bad), "{bad:?} should be unsafe");
            assert!(entry_name("b", bad).starts_with("_escaped/"));
        }
        for good in ["a", "a/b/c.txt", "ünïcode/名前.txt", "a..b", ".hidden"] {
            assert!(is_safe_path(good), "{good:?} should be safe");
            assert_eq!(entry_name("bkt", good), format!("bkt/{good}"));
        }
    }
}
