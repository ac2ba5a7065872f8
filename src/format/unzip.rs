//! Reading ZIP volumes: the central directory (ZIP64 aware) from the volume's tail, single
//! entries by byte range, and `Walk`, one sequential pass over a whole volume that yields each
//! entry's (inflated) bytes and checks its CRC-32 and size while hashing the volume itself.
//! It reads from a `VolumeSource` (a local file, or an S3 object read by ranged GETs in the
//! store's adapter: anything that is a [`RangeSource`]); what the
//! bytes should be (the manifest) is the caller's business.

use std::io::SeekFrom;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, BufReader};

use crate::error::{Error, Result};
use crate::format::manifest::limits;
use crate::format::seal::Identities;
use std::sync::Arc;

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

/// A volume as the reader sees it: a zip, on its media either as it is (`.zip`) or sealed with
/// age (`.zip.age`, opened with the far side's identities). Offsets, lengths and streams are
/// the zip's; `media` is what lies on the stick or in the bucket (what `SHA256SUMS` covers).
#[derive(Debug, Clone)]
pub struct Volume {
    pub media: VolumeSource,
    unseal: Option<Arc<Unseal>>,
}

/// The decryption of a sealed volume: the identities, and a seekable plaintext reader opened
/// on first use (reads of the tail and the manifest go through it).
struct Unseal {
    ids: Identities,
    reader: std::sync::Mutex<Option<age::stream::StreamReader<MediaReader>>>,
}

impl std::fmt::Debug for Unseal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Unseal({:?})", self.ids)
    }
}

/// The SHA-256 and length of the media bytes a stream has read (for a sealed volume, the
/// ciphertext under the plaintext the walk sees).
#[derive(Clone, Default)]
pub struct Tap(Arc<std::sync::Mutex<(Sha256, u64)>>);

impl Tap {
    /// Length and SHA-256 of what was read; the whole media of `expected` bytes must have been.
    pub fn finish(&self, volume: &str, expected: u64) -> Result<(u64, String)> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (sha, len) = std::mem::take(&mut *g);
        if len != expected {
            return Err(Error::Archive {
                volume: volume.to_string(),
                detail: format!(
                    "its encrypted stream ends at byte {len} of {expected}: bytes were added after it"
                ),
            });
        }
        Ok((len, hex::encode(sha.finalize())))
    }
}

struct TapReader {
    inner: Stream,
    tap: Tap,
}

impl AsyncRead for TapReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = res {
            let new = &buf.filled()[before..];
            let mut g = self.tap.0.lock().unwrap_or_else(|p| p.into_inner());
            g.0.update(new);
            g.1 += new.len() as u64;
        }
        res
    }
}

impl Volume {
    /// A `.zip` as it lies on the media.
    pub fn plain(media: VolumeSource) -> Self {
        Volume {
            media,
            unseal: None,
        }
    }

    /// A `.zip.age`, opened with `ids`.
    pub fn sealed(media: VolumeSource, ids: Identities) -> Self {
        Volume {
            media,
            unseal: Some(Arc::new(Unseal {
                ids,
                reader: std::sync::Mutex::new(None),
            })),
        }
    }

    pub fn is_sealed(&self) -> bool {
        self.unseal.is_some()
    }

    pub fn display(&self) -> String {
        self.media.display()
    }

    pub fn file_name(&self) -> String {
        self.media.file_name()
    }

    fn bad(&self, detail: impl Into<String>) -> Error {
        self.media.bad(detail)
    }

    /// Run `f` on the sealed volume's plaintext reader (opened on first use), off the runtime.
    async fn with_plain<T: Send + 'static>(
        &self,
        u: &Arc<Unseal>,
        f: impl FnOnce(&mut age::stream::StreamReader<MediaReader>) -> std::io::Result<T>
        + Send
        + 'static,
    ) -> Result<T> {
        let (u, media) = (u.clone(), self.media.clone());
        let handle = tokio::runtime::Handle::current();
        let display = self.display();
        tokio::task::spawn_blocking(move || {
            let mut g = u.reader.lock().unwrap_or_else(|p| p.into_inner());
            if g.is_none() {
                let r = MediaReader::new(media.clone(), handle)
                    .and_then(|r| open_sealed(&media, r, &u.ids))
                    .map_err(|e| sealed_read_error(&display, e))?;
                *g = Some(r);
            }
            let r = g.as_mut().expect("opened above");
            f(r).map_err(|e| sealed_read_error(&display, e))
        })
        .await
        .map_err(|e| Error::Io {
            op: "decrypting",
            path: self.display().into(),
            source: std::io::Error::other(e),
        })?
    }

    /// Size of the zip in bytes.
    pub async fn len(&self) -> Result<u64> {
        match &self.unseal {
            None => self.media.len().await,
            Some(u) => {
                self.with_plain(u, |r| std::io::Seek::seek(r, SeekFrom::End(0)))
                    .await
            }
        }
    }

    /// Zip bytes `offset..offset+len`, bounded as `VolumeSource::read_range` is.
    pub async fn read_range(&self, offset: u64, len: u64) -> Result<Bytes> {
        let Some(u) = &self.unseal else {
            return self.media.read_range(offset, len).await;
        };
        if len == 0 {
            return Ok(Bytes::new());
        }
        let size = self.len().await?;
        if offset.checked_add(len).is_none_or(|end| end > size) || len > MAX_RANGE {
            return Err(self.bad(format!(
                "bytes {offset}+{len} lie past its end ({size} bytes) or exceed what a volume \
                 structure holds: truncated or forged offsets"
            )));
        }
        self.with_plain(u, move |r| {
            std::io::Seek::seek(r, SeekFrom::Start(offset))?;
            let mut buf = vec![0; len as usize];
            std::io::Read::read_exact(r, &mut buf)?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    /// The whole zip as one stream, and (for a sealed volume) the tap on its media bytes.
    pub async fn stream(&self) -> Result<(Stream, Option<Tap>)> {
        let media = self.media.stream().await?;
        let Some(u) = &self.unseal else {
            return Ok((media, None));
        };
        let tap = Tap::default();
        let tapped = TapReader {
            inner: media,
            tap: tap.clone(),
        };
        use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
        let d = age::Decryptor::new_async_buffered(futures::io::BufReader::with_capacity(
            CHUNK,
            tapped.compat(),
        ))
        .await
        .map_err(|e| decrypt_error(&self.media, e))?;
        let plain = d
            .decrypt_async(u.ids.iter())
            .map_err(|e| decrypt_error(&self.media, e))?;
        let volume = self.display();
        let plain = plain.compat();
        let mapped = MapErr {
            inner: plain,
            volume,
        };
        Ok((Box::new(BufReader::with_capacity(CHUNK, mapped)), Some(tap)))
    }
}

/// Turns age's authentication failures into volume damage while keeping media errors whole.
struct MapErr<R> {
    inner: R,
    volume: String,
}

impl<R: AsyncRead + Unpin> AsyncRead for MapErr<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) => {
                let e = sealed_read_error(&this.volume, e);
                std::task::Poll::Ready(Err(std::io::Error::other(e)))
            }
            other => other,
        }
    }
}

/// An I/O error from age's reader: the media's own error (carried through), or damage.
fn sealed_read_error(volume: &str, e: std::io::Error) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        return *e
            .into_inner()
            .expect("checked above")
            .downcast::<Error>()
            .expect("checked above");
    }
    Error::Archive {
        volume: volume.to_string(),
        detail: format!(
            "its encryption does not check out ({e}): the ciphertext was altered, truncated or damaged"
        ),
    }
}

fn decrypt_error(media: &VolumeSource, e: age::DecryptError) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => Error::Sealed {
            volume: media.display(),
            detail: "none of the given identities opens it (it is encrypted to other recipients)"
                .into(),
        },
        age::DecryptError::Io(e) => sealed_read_error(&media.display(), e),
        other => media.bad(format!("it is not a readable age file ({other})")),
    }
}

fn open_sealed(
    media: &VolumeSource,
    r: MediaReader,
    ids: &Identities,
) -> std::io::Result<age::stream::StreamReader<MediaReader>> {
    let into_io = |e: age::DecryptError| std::io::Error::other(decrypt_error(media, e));
    age::Decryptor::new(r)
        .map_err(into_io)?
        .decrypt(ids.iter())
        .map_err(into_io)
}

/// Blocking `Read + Seek` over a volume's media, by window-sized ranged reads (used from a
/// blocking thread, for age's seekable reader).
struct MediaReader {
    media: VolumeSource,
    handle: tokio::runtime::Handle,
    len: u64,
    pos: u64,
    window: Bytes,
    window_at: u64,
}

/// Bytes per read of a sealed volume's media by position.
const WINDOW: u64 = 1024 * 1024;

impl MediaReader {
    fn new(media: VolumeSource, handle: tokio::runtime::Handle) -> std::io::Result<Self> {
        let len = handle
            .block_on(media.len())
            .map_err(std::io::Error::other)?;
        Ok(MediaReader {
            media,
            handle,
            len,
            pos: 0,
            window: Bytes::new(),
            window_at: 0,
        })
    }
}

impl std::io::Read for MediaReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let in_window =
            self.pos >= self.window_at && self.pos < self.window_at + self.window.len() as u64;
        if !in_window {
            let n = WINDOW.min(self.len - self.pos);
            self.window = self
                .handle
                .block_on(self.media.read_range(self.pos, n))
                .map_err(std::io::Error::other)?;
            self.window_at = self.pos;
        }
        let from = (self.pos - self.window_at) as usize;
        let n = buf.len().min(self.window.len() - from);
        buf[..n].copy_from_slice(&self.window[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for MediaReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

/// One entry of the central directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralEntry {
    pub name: String,
    pub method: u16,
    pub crc32: u32,
    pub compressed_size: u64,
    pub size: u64,
    pub header_offset: u64,
}

/// A volume's central directory, entries in file order.
#[derive(Debug, Clone)]
pub struct Directory {
    pub entries: Vec<CentralEntry>,
    /// Where the central directory starts (the end of the last entry's span).
    pub central_offset: u64,
    pub len: u64,
}

impl Directory {
    /// The entry named `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// The byte span `start..end` of entry `i` (local header, data, descriptor).
    pub fn span(&self, i: usize) -> (u64, u64) {
        let start = self.entries[i].header_offset;
        let end = self
            .entries
            .get(i + 1)
            .map(|e| e.header_offset)
            .unwrap_or(self.central_offset);
        (start, end)
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Read and parse the central directory.
pub async fn read_directory(src: &Volume) -> Result<Directory> {
    let len = src.len().await?;
    if len < 22 {
        return Err(src.bad(format!("{len} bytes is too short for a zip file")));
    }
    let tail_len = len.min(22 + 65_535 + 20);
    let tail = src.read_range(len - tail_len, tail_len).await?;
    let at = (0..=tail.len() - 22)
        .rev()
        .find(|&i| {
            u32_at(&tail, i) == EOCD_SIG && i + 22 + u16_at(&tail, i + 20) as usize == tail.len()
        })
        .ok_or_else(|| {
            src.bad("no end-of-central-directory record (truncated or not a zip file)")
        })?;
    let eocd = &tail[at..];
    let mut count = u16_at(eocd, 10) as u64;
    let mut cd_size = u32_at(eocd, 12) as u64;
    let mut cd_offset = u32_at(eocd, 16) as u64;
    let eocd_pos = len - tail_len + at as u64;
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        if at < 20 || u32_at(&tail, at - 20) != ZIP64_LOCATOR_SIG {
            return Err(src.bad("zip64 end-of-central-directory locator missing"));
        }
        let z64_pos = u64_at(&tail, at - 20 + 8);
        if z64_pos.checked_add(56).is_none_or(|end| end > eocd_pos) {
            return Err(src.bad("zip64 end-of-central-directory record out of range"));
        }
        let z = src.read_range(z64_pos, 56).await?;
        if u32_at(&z, 0) != ZIP64_EOCD_SIG {
            return Err(src.bad("zip64 end-of-central-directory record missing"));
        }
        count = u64_at(&z, 32);
        cd_size = u64_at(&z, 40);
        cd_offset = u64_at(&z, 48);
    }
    if cd_offset
        .checked_add(cd_size)
        .is_none_or(|end| end > eocd_pos)
        || count > cd_size / 46 + 1
    {
        return Err(src.bad("central directory out of range"));
    }
    if cd_size > limits::CENTRAL_DIRECTORY || count > limits::ENTRIES {
        return Err(src.bad(format!(
            "central directory of {cd_size} bytes and {count} entries is larger than a volume has \
             (at most {} bytes, {} entries)",
            limits::CENTRAL_DIRECTORY,
            limits::ENTRIES
        )));
    }
    let cd = src.read_range(cd_offset, cd_size).await?;
    let mut entries = Vec::with_capacity(count as usize);
    let mut p = 0usize;
    for _ in 0..count {
        if p + 46 > cd.len() || u32_at(&cd, p) != CENTRAL_SIG {
            return Err(src.bad("corrupt central directory entry"));
        }
        let h = &cd[p..];
        let (name_len, extra_len, comment_len) = (
            u16_at(h, 28) as usize,
            u16_at(h, 30) as usize,
            u16_at(h, 32) as usize,
        );
        if p + 46 + name_len + extra_len + comment_len > cd.len() {
            return Err(src.bad("corrupt central directory entry"));
        }
        let name = std::str::from_utf8(&h[46..46 + name_len])
            .map_err(|_| src.bad("entry name is not UTF-8"))?
            .to_string();
        let mut e = CentralEntry {
            name,
            method: u16_at(h, 10),
            crc32: u32_at(h, 16),
            compressed_size: u32_at(h, 20) as u64,
            size: u32_at(h, 24) as u64,
            header_offset: u32_at(h, 42) as u64,
        };
        // ZIP64 extended information: only the fields that overflowed, in this order.
        let mut extra = &h[46 + name_len..46 + name_len + extra_len];
        while extra.len() >= 4 {
            let (id, size) = (u16_at(extra, 0), u16_at(extra, 2) as usize);
            let data = extra.get(4..4 + size).unwrap_or(&[]);
            if id == 0x0001 {
                let mut q = 0;
                let mut take = |field: &mut u64| {
                    if *field == 0xFFFF_FFFF && q + 8 <= data.len() {
                        *field = u64_at(data, q);
                        q += 8;
                    }
                };
                take(&mut e.size);
                take(&mut e.compressed_size);
                take(&mut e.header_offset);
            }
            extra = extra.get(4 + size..).unwrap_or(&[]);
        }
        if e.method != METHOD_STORED && e.method != METHOD_DEFLATE {
            return Err(src.bad(format!(
                "entry `{}` uses compression method {} (only stored and deflate are written)",
                e.name, e.method
            )));
        }
        // Declared sizes are bounded by the bytes really there: a stored entry is as long as
        // its data, a deflated one inflates at most 1032:1.
        let plausible = match e.method {
            METHOD_STORED => e.size == e.compressed_size,
            _ => {
                e.size
                    <= e.compressed_size
                        .saturating_mul(limits::DEFLATE_RATIO)
                        .saturating_add(1024)
            }
        };
        if !plausible {
            return Err(src.bad(format!(
                "entry `{}` declares {} bytes from {} stored bytes",
                e.name, e.size, e.compressed_size
            )));
        }
        entries.push(e);
        p += 46 + name_len + extra_len + comment_len;
    }
    let mut names = std::collections::HashSet::with_capacity(entries.len());
    if let Some(e) = entries.iter().find(|e| !names.insert(e.name.as_str())) {
        return Err(src.bad(format!("entry `{}` appears twice", e.name)));
    }
    entries.sort_by_key(|e| e.header_offset);
    let mut end = cd_offset;
    for e in entries.iter().rev() {
        let entry_end = e
            .header_offset
            .checked_add(30)
            .and_then(|x| x.checked_add(e.compressed_size));
        if entry_end.is_none_or(|x| x > end) {
            return Err(src.bad(format!("entry `{}` overlaps the next one", e.name)));
        }
        end = e.header_offset;
    }
    Ok(Directory {
        entries,
        central_offset: cd_offset,
        len,
    })
}

/// Size, SHA-256 and CRC-32 of an entry's inflated bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDigest {
    pub size: u64,
    pub sha256: String,
    pub crc32: u32,
}

/// Read entry `i` whole (for the manifest and other small entries), CRC-checked; an entry
/// declared (or inflating) past `max` bytes is refused.
pub async fn read_entry(src: &Volume, dir: &Directory, i: usize, max: u64) -> Result<Bytes> {
    let e = &dir.entries[i];
    if e.size > max || e.compressed_size > max {
        return Err(src.bad(format!(
            "entry `{}` declares {} bytes; at most {max} are allowed",
            e.name, e.size
        )));
    }
    let (start, end) = dir.span(i);
    // Local header (30), name and extra (each < 64 KiB), data, data descriptor (24).
    if end - start > max + 30 + 2 * 65_535 + 24 {
        return Err(src.bad(format!(
            "entry `{}` spans {} bytes for {} bytes of data",
            e.name,
            end - start,
            e.compressed_size
        )));
    }
    let bytes = src.read_range(start, end - start).await?;
    let entries = vec![CentralEntry {
        header_offset: 0,
        ..dir.entries[i].clone()
    }];
    let one = Directory {
        entries,
        central_offset: end - start,
        len: end - start,
    };
    let mut walk = Walk::new(src.display(), Box::new(std::io::Cursor::new(bytes)), &one);
    walk.next_entry().await?;
    let mut out = BytesMut::new();
    while let Some(chunk) = walk.read_chunk().await? {
        out.extend_from_slice(&chunk);
    }
    walk.end_entry()?;
    Ok(out.freeze())
}

struct Current {
    index: usize,
    remaining: u64,
    inflate: Option<flate2::Decompress>,
    input: BytesMut,
    input_pos: usize,
    sha: Sha256,
    crc: crc32fast::Hasher,
    size: u64,
    finished: bool,
}

/// One sequential pass over a volume: entries in file order, their inflated bytes, and the
/// volume's SHA-256.
pub struct Walk<'d> {
    volume: String,
    reader: Stream,
    dir: &'d Directory,
    pos: u64,
    sha: Sha256,
    next: usize,
    current: Option<Current>,
}

impl<'d> Walk<'d> {
    pub fn new(volume: String, reader: Stream, dir: &'d Directory) -> Self {
        Walk {
            volume,
            reader,
            dir,
            pos: 0,
            sha: Sha256::new(),
            next: 0,
            current: None,
        }
    }

    fn bad(&self, detail: impl Into<String>) -> Error {
        Error::Archive {
            volume: self.volume.clone(),
            detail: detail.into(),
        }
    }

    /// A failed read keeps its class: an S3 volume's transport or server error (carried through
    /// the byte stream) stays retryable, a local read error is an I/O error, and only a volume
    /// that ends early is damage.
    fn read_error(&self, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return self.bad(format!("ends early, at byte {}", self.pos));
        }
        match e.downcast::<Error>() {
            Ok(inner) => inner,
            Err(e) => Error::Io {
                op: "reading",
                path: self.volume.clone().into(),
                source: e,
            },
        }
    }

    fn mismatch(&self, entry: &str, detail: String) -> Error {
        Error::Verify {
            volume: self.volume.clone(),
            entry: Some(entry.to_string()),
            detail,
        }
    }

    async fn read_some(&mut self, max: usize) -> Result<Bytes> {
        let mut buf = BytesMut::with_capacity(max);
        let n = (&mut self.reader)
            .take(max as u64)
            .read_buf(&mut buf)
            .await
            .map_err(|e| self.read_error(e))?;
        if n == 0 && max > 0 {
            return Err(self.bad(format!(
                "ends at byte {} but the directory says it is {} bytes (truncated)",
                self.pos, self.dir.len
            )));
        }
        self.sha.update(&buf);
        self.pos += n as u64;
        Ok(buf.freeze())
    }

    async fn read_exact(&mut self, n: usize) -> Result<BytesMut> {
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let b = self.read_some(n - out.len()).await?;
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    async fn skip_to(&mut self, offset: u64) -> Result<()> {
        while self.pos < offset {
            let n = (offset - self.pos).min(CHUNK as u64) as usize;
            self.read_some(n).await?;
        }
        Ok(())
    }

    /// Move to the next entry; `None` after the last.
    pub async fn next_entry(&mut self) -> Result<Option<&'d CentralEntry>> {
        // An entry the caller did not read to its end is read (and dropped) now.
        while self.current.is_some() && self.read_chunk().await?.is_some() {}
        self.current = None;
        let dir = self.dir;
        let Some(e) = dir.entries.get(self.next) else {
            return Ok(None);
        };
        self.skip_to(e.header_offset).await?;
        let h = self.read_exact(30).await?;
        if u32_at(&h, 0) != LOCAL_SIG {
            return Err(self.bad(format!(
                "no local header for `{}` at byte {}",
                e.name, e.header_offset
            )));
        }
        let (name_len, extra_len) = (u16_at(&h, 26) as usize, u16_at(&h, 28) as usize);
        let name = self.read_exact(name_len).await?;
        if name[..] != *e.name.as_bytes() {
            return Err(self.bad(format!(
                "local header at byte {} names `{}`, the directory `{}`",
                e.header_offset,
                String::from_utf8_lossy(&name),
                e.name
            )));
        }
        self.read_exact(extra_len).await?;
        self.current = Some(Current {
            index: self.next,
            remaining: e.compressed_size,
            inflate: (e.method == METHOD_DEFLATE).then(|| flate2::Decompress::new(false)),
            input: BytesMut::new(),
            input_pos: 0,
            sha: Sha256::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
            finished: false,
        });
        self.next += 1;
        Ok(Some(e))
    }

    /// The next piece of the current entry's (inflated) bytes; `None` at its end.
    pub async fn read_chunk(&mut self) -> Result<Option<Bytes>> {
        let Some(mut c) = self.current.take() else {
            return Ok(None);
        };
        let res = self.read_chunk_of(&mut c).await;
        self.current = Some(c);
        res
    }

    async fn read_chunk_of(&mut self, c: &mut Current) -> Result<Option<Bytes>> {
        if c.finished {
            return Ok(None);
        }
        let name = &self.dir.entries[c.index].name;
        let out = match c.inflate.as_mut() {
            None => {
                if c.remaining == 0 {
                    c.finished = true;
                    return Ok(None);
                }
                let n = c.remaining.min(CHUNK as u64) as usize;
                let b = self.read_some(n).await?;
                c.remaining -= b.len() as u64;
                b
            }
            Some(_) => loop {
                if c.input_pos == c.input.len() && c.remaining > 0 {
                    let n = c.remaining.min(CHUNK as u64) as usize;
                    let b = self.read_some(n).await?;
                    c.remaining -= b.len() as u64;
                    c.input = BytesMut::from(&b[..]);
                    c.input_pos = 0;
                }
                let z = c.inflate.as_mut().expect("deflate entry");
                let mut out = Vec::with_capacity(CHUNK);
                let (in0, out0) = (z.total_in(), z.total_out());
                // Never `Finish`: it needs the whole output to fit in one call, and an entry
                // larger than one chunk would read as corrupt.
                let status = z
                    .decompress_vec(
                        &c.input[c.input_pos..],
                        &mut out,
                        flate2::FlushDecompress::None,
                    )
                    .map_err(|e| self.mismatch(name, format!("deflate data is corrupt: {e}")))?;
                let consumed = (z.total_in() - in0) as usize;
                let produced = (z.total_out() - out0) as usize;
                c.input_pos += consumed;
                if produced > 0 {
                    break Bytes::from(out);
                }
                if status == flate2::Status::StreamEnd {
                    c.finished = true;
                    break Bytes::new();
                }
                if consumed == 0 && c.remaining == 0 {
                    return Err(self.mismatch(name, "deflate data ends early".into()));
                }
            },
        };
        if out.is_empty() {
            return Ok(None);
        }
        let declared = self.dir.entries[c.index].size;
        if c.size + out.len() as u64 > declared {
            // Cut off the moment it passes its declared size: nothing past it is handed on.
            return Err(self.mismatch(name, format!("inflates past its declared {declared} bytes")));
        }
        c.sha.update(&out);
        c.crc.update(&out);
        c.size += out.len() as u64;
        Ok(Some(out))
    }

    /// Finish the current entry (its bytes must have been read to the end): checks the CRC-32
    /// and size against the directory and returns the digest.
    pub fn end_entry(&mut self) -> Result<EntryDigest> {
        let mut c = self.current.take().expect("end_entry after next_entry");
        assert!(c.finished, "end_entry before the entry was read to its end");
        let e = &self.dir.entries[c.index];
        let crc32 = std::mem::replace(&mut c.crc, crc32fast::Hasher::new()).finalize();
        if c.size != e.size {
            return Err(self.mismatch(
                &e.name,
                format!("{} bytes, the directory says {}", c.size, e.size),
            ));
        }
        if crc32 != e.crc32 {
            return Err(self.mismatch(
                &e.name,
                format!("CRC-32 {crc32:08x}, the directory says {:08x}", e.crc32),
            ));
        }
        Ok(EntryDigest {
            size: e.size,
            sha256: hex::encode(std::mem::take(&mut c.sha).finalize()),
            crc32,
        })
    }

    /// Read the rest of the volume (central directory) and return its size and SHA-256.
    pub async fn finish(mut self) -> Result<(u64, String)> {
        let len = self.dir.len;
        self.skip_to(len).await?;
        let mut probe = [0u8; 1];
        if self.reader.read(&mut probe).await.unwrap_or(0) != 0 {
            return Err(self.bad(format!("has bytes past its end ({len})")));
        }
        Ok((self.pos, hex::encode(self.sha.finalize())))
    }
}
