//! `Walk`: one sequential pass over a whole volume that yields each entry's (inflated)
//! bytes and checks its CRC-32 and size.

use super::*;

pub(super) struct Current {
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
