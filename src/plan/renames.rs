//! Renames: an added and a deleted key with the same ETag and size are one move, paired after
//! the listing from the candidates read back in key order; and the volume estimate of the puts
//! left (`ferry plan`).

use std::collections::{HashMap, VecDeque};

use tokio::io::{AsyncBufRead, AsyncWrite};

use crate::clock::rfc3339_ms;
use crate::error::{Error, Result};
use crate::format::manifest::Move;
use crate::plan::inventory::{InventoryReader, InventoryWriter, ObjectRecord};
use crate::plan::{Candidate, Listed, Plan};

/// Pair each added candidate with a deleted key of the same ETag and size: a rename (the
/// first deleted key in key order for the first added one, and so on). Reads the candidates
/// back in key order and writes the puts left to `puts` (and to `estimate`). A listing without
/// ETags (some S3-compatible servers) proves nothing about content, so it pairs nothing.
/// Memory holds the deleted keys, as the last manifest does, never the puts.
pub async fn pair_renames<R, W>(
    candidates: &mut InventoryReader<R>,
    listed: Listed,
    detect_moves: bool,
    puts: &mut InventoryWriter<W>,
    estimate: &mut VolumeEstimate,
) -> Result<Plan>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Listed {
        mut stats,
        deleted,
        skipped,
        metadata_only,
        withheld,
        ..
    } = listed;
    let mut by_content: HashMap<(String, u64), VecDeque<usize>> = HashMap::new();
    if detect_moves {
        for (i, d) in deleted.iter().enumerate() {
            // A withheld version never crossed: nothing on the far side to move.
            if !d.etag.is_empty() && d.withheld.is_none() {
                by_content
                    .entry((d.etag.clone(), d.size))
                    .or_default()
                    .push_back(i);
            }
        }
    }
    let mut moved_from = vec![false; deleted.len()];
    let mut moves = Vec::new();
    let (mut added, mut put_bytes) = (0u64, 0u64);
    while let Some(c) = candidates.next_as::<Candidate>(|c| &c.rec.key).await? {
        let a = &c.rec;
        let source_index = if c.added && !a.etag.is_empty() {
            by_content
                .get_mut(&(a.etag.clone(), a.size))
                .and_then(VecDeque::pop_front)
        } else {
            None
        };
        match source_index {
            Some(i) => {
                moved_from[i] = true;
                moves.push(Move {
                    from: deleted[i].key.clone(),
                    to: a.key.clone(),
                    etag: a.etag.clone(),
                    size: a.size,
                    last_modified: rfc3339_ms(a.last_modified_ms),
                    headers: None,
                });
            }
            None => {
                added += u64::from(c.added);
                put_bytes += a.size;
                estimate.push(a);
                puts.push(a).await.map_err(|e| Error::Stream {
                    bucket: String::new(),
                    key: "plan puts".into(),
                    source: Box::new(e),
                })?;
            }
        }
    }
    drop(by_content);
    let deletes: Vec<String> = deleted
        .into_iter()
        .zip(moved_from)
        .filter(|(_, moved)| !moved)
        .map(|(d, _)| d.key)
        .collect();
    stats.added = added;
    stats.put_bytes = put_bytes;
    stats.deleted = deletes.len() as u64;
    stats.moved = moves.len() as u64;
    stats.skipped = skipped.len() as u64;
    Ok(Plan {
        deletes,
        moves,
        skipped,
        metadata_only,
        withheld,
        stats,
    })
}

/// How many volumes the puts need under the given caps (the same packing `export` does), fed
/// one put at a time.
#[derive(Debug, Clone)]
pub struct VolumeEstimate {
    volume_size: u64,
    volume_entries: u64,
    volumes: u64,
    bytes: u64,
    entries: u64,
}

impl VolumeEstimate {
    pub fn new(volume_size: u64, volume_entries: u64) -> Self {
        VolumeEstimate {
            volume_size,
            volume_entries,
            volumes: 1,
            bytes: 0,
            entries: 0,
        }
    }

    pub fn push(&mut self, p: &ObjectRecord) {
        let cost = crate::format::archive::entry_cost(&p.key, p.size);
        if self.entries > 0
            && (self.bytes.saturating_add(cost) > self.volume_size
                || self.entries + 1 > self.volume_entries)
        {
            self.volumes += 1;
            self.bytes = 0;
            self.entries = 0;
        }
        self.bytes = self.bytes.saturating_add(cost);
        self.entries += 1;
    }

    pub fn volumes(&self) -> u64 {
        self.volumes
    }
}
