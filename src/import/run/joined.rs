//! Objects split across volumes, imported whole: once the volume holding an object's last part
//! has been verified, the object is written as one, its parts read again in order from their
//! volumes, each checked against its own manifest line (size, CRC-32, SHA-256) and the whole
//! against the digest the last part carries. Nothing is visible unless every byte matched.

use super::*;
use crate::format::parts::{Joined, WholeDigest};
use crate::format::unzip::{Walk, entry_stream};

/// Write every object of `b` whose last part is in volume `volume` into the target, through
/// `shared` (what lands is drained with the volume's own objects).
pub(super) async fn import_joined(
    cfg: &ImportConfig,
    b: &Bundle,
    volume: u32,
    shared: &Arc<Shared>,
    progress: &dyn Progress,
) -> Result<()> {
    let (joined, _) = b.joined()?;
    for j in joined.iter().filter(|j| j.last_volume() == volume) {
        cfg.run.stop().check()?;
        let mut obj = j.object();
        if let Some(h) = obj.headers.for_import(cfg.skip_object_lock, now_ms()) {
            obj.headers = h;
        }
        let rel = relative(&obj.key, &b.source_prefix).to_string();
        info!(key = %obj.key, parts = j.parts.len(), bytes = j.size, "joining an object shipped in parts");
        let mut writer = cfg.target.open(&rel, &obj, shared).await?;
        if let Some(s) = &cfg.screen {
            writer = s.writer(writer, &obj, &rel, (&b.job, b.sequence))?;
        }
        match write_parts(b, j, &mut writer, progress).await {
            Ok(()) => writer.commit().await?,
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Every part of `j`, in order, into `writer`, checked part by part and as a whole.
async fn write_parts(
    b: &Bundle,
    j: &Joined,
    writer: &mut Box<dyn crate::import::target::ObjectWriter>,
    progress: &dyn Progress,
) -> Result<()> {
    let mut whole = WholeDigest::default();
    for p in &j.parts {
        let v = &b.volumes[p.volume as usize - 1];
        let name = v.source.display();
        let contents = v.contents().await?;
        let missing = || Error::Verify {
            volume: name.clone(),
            entry: Some(p.entry.entry.clone()),
            detail: "the manifest lists this part, the zip does not hold it".into(),
        };
        let i = contents.dir.find(&p.entry.entry).ok_or_else(missing)?;
        let (one, stream) = entry_stream(&v.source, &contents.dir, i);
        let mut walk = Walk::new(name.clone(), stream, &one);
        walk.next_entry().await?.ok_or_else(missing)?;
        while let Some(chunk) = walk.read_chunk().await? {
            progress.object(chunk.len() as u64);
            whole.update(&chunk);
            writer.write(chunk).await?;
        }
        let d = walk.end_entry()?;
        if (d.size, d.crc32, d.sha256.as_str())
            != (p.entry.size, p.entry.crc32, p.entry.sha256.as_str())
        {
            return Err(Error::Verify {
                volume: name,
                entry: Some(format!("{} (key `{}`)", p.entry.entry, p.entry.key)),
                detail: format!(
                    "{} bytes, CRC-32 {:08x}, SHA-256 {}; the manifest says {} bytes, {:08x}, {}",
                    d.size, d.crc32, d.sha256, p.entry.size, p.entry.crc32, p.entry.sha256
                ),
            });
        }
    }
    let (size, (sha256, crc32)) = (whole.len(), whole.finish());
    if (size, crc32, sha256.as_str()) != (j.size, j.crc32, j.sha256.as_str()) {
        let last = &j.parts[j.parts.len() - 1];
        return Err(Error::Verify {
            volume: b.volumes[last.volume as usize - 1].source.display(),
            entry: Some(format!("{} (key `{}`)", last.entry.entry, last.entry.key)),
            detail: format!(
                "its parts join into {size} bytes, CRC-32 {crc32:08x}, SHA-256 {sha256}; the last part says {} bytes, {:08x}, {}",
                j.size, j.crc32, j.sha256
            ),
        });
    }
    Ok(())
}
