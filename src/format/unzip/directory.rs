//! The central directory (ZIP64 aware) read from a volume's tail, and single entries by
//! byte range.

use super::*;

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

pub(super) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
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
        let (e, next) = central_entry(src, &cd, p)?;
        entries.push(e);
        p = next;
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

/// The central directory entry at `p` of `cd`, checked, and where the next one starts.
fn central_entry(src: &Volume, cd: &[u8], p: usize) -> Result<(CentralEntry, usize)> {
    if p + 46 > cd.len() || u32_at(cd, p) != CENTRAL_SIG {
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
    Ok((e, p + 46 + name_len + extra_len + comment_len))
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

/// Entry `i` of `dir` alone: a directory of that one entry and a stream of its span, read in
/// ranges of [`CHUNK`] × 32 so that an entry of any size streams. Walk it with [`Walk`]
/// (which checks its CRC-32 and gives its SHA-256).
pub fn entry_stream(src: &Volume, dir: &Directory, i: usize) -> (Directory, Stream) {
    let (start, end) = dir.span(i);
    let one = Directory {
        entries: vec![CentralEntry {
            header_offset: 0,
            ..dir.entries[i].clone()
        }],
        central_offset: end - start,
        len: end - start,
    };
    let piece = CHUNK as u64 * 32;
    let src = src.clone();
    let ranges = futures::stream::try_unfold(start, move |at| {
        let src = src.clone();
        async move {
            if at >= end {
                return Ok(None);
            }
            let len = piece.min(end - at);
            let bytes = src
                .read_range(at, len)
                .await
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(Some((bytes, at + len)))
        }
    });
    let reader = tokio_util::io::StreamReader::new(Box::pin(ranges));
    (one, Box::new(reader))
}
