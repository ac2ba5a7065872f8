//! A volume as the reader sees it: plain or age-sealed, its zip bytes by range or as one
//! stream, the media bytes hashed as they pass.

use super::*;

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
pub(super) struct Unseal {
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

pub(super) struct TapReader {
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

    pub(super) fn bad(&self, detail: impl Into<String>) -> Error {
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
pub(super) struct MapErr<R> {
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
pub(super) fn sealed_read_error(volume: &str, e: std::io::Error) -> Error {
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

pub(super) fn decrypt_error(media: &VolumeSource, e: age::DecryptError) -> Error {
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

pub(super) fn open_sealed(
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
pub(super) struct MediaReader {
    media: VolumeSource,
    handle: tokio::runtime::Handle,
    len: u64,
    pos: u64,
    window: Bytes,
    window_at: u64,
}

/// Bytes per read of a sealed volume's media by position.
pub(super) const WINDOW: u64 = 1024 * 1024;

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
