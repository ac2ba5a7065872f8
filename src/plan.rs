//! The delta: a streaming merge of the source listing with the previous inventory (both
//! key-sorted) into puts (added or modified), deletions, moves (renames: a deleted and an added
//! key with the same ETag and size) and skipped objects, while the new inventory is written out.
//! Memory holds the delta only, never the whole bucket.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncWrite};

use crate::config::{Filters, S3Location};
use crate::error::{Error, Result};
use crate::inventory::{InventoryReader, InventoryWriter, ObjectRecord};
use crate::listing::Pages;
use crate::manifest::{Move, Skipped};
use crate::state::rfc3339_ms;

/// Counts of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStats {
    /// Objects listed that pass the filters.
    pub listed: u64,
    pub unchanged: u64,
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub moved: u64,
    pub skipped: u64,
    /// Bytes the puts will ship.
    pub put_bytes: u64,
    /// Objects left out because they are the export's own output (bundles, `_state/`).
    #[serde(default)]
    pub own_output: u64,
    /// Key ranges the listing ran as at once (cut at the previous inventory's index; 1: one
    /// stream).
    #[serde(default)]
    pub list_ranges: u64,
}

/// What a bundle must carry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Objects to ship, in key order.
    pub puts: Vec<ObjectRecord>,
    pub deletes: Vec<String>,
    pub moves: Vec<Move>,
    pub skipped: Vec<Skipped>,
    pub stats: PlanStats,
}

impl Plan {
    /// Nothing to carry.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty() && self.moves.is_empty()
    }
}

fn skip(rec: &ObjectRecord) -> Skipped {
    Skipped {
        key: rec.key.clone(),
        size: rec.size,
        storage_class: rec.storage_class.clone(),
        reason: format!(
            "storage class {} cannot be read without a restore: restore it and it ships in the next run",
            rec.storage_class
        ),
    }
}

/// Diff the listing against `previous` (or take a baseline when `None`). When `inventory` is
/// given, the new inventory snapshot is written to it as the listing streams by. `changed` sees
/// each added or modified object as soon as the listing shows it (an added one may still turn
/// out to be a rename), so its bytes can be fetched while the listing runs.
pub async fn plan<R, W>(
    lister: &mut dyn Pages,
    source: &S3Location,
    filters: &Filters,
    mut previous: Option<InventoryReader<R>>,
    detect_moves: bool,
    mut inventory: Option<&mut InventoryWriter<W>>,
    changed: &mut (dyn FnMut(&ObjectRecord) + Send),
) -> Result<Plan>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let inv_err = |e: std::io::Error| Error::Stream {
        bucket: source.bucket.clone(),
        key: "inventory".into(),
        source: Box::new(e),
    };
    let mut plan = Plan::default();
    let mut added: Vec<ObjectRecord> = Vec::new();
    let mut deleted: Vec<ObjectRecord> = Vec::new();
    let mut old = match previous.as_mut() {
        Some(p) => p.next().await?,
        None => None,
    };
    while let Some(page) = lister.next_page().await? {
        crate::interrupt::check()?;
        for rec in page {
            if filters.is_own_output(&rec.key) {
                plan.stats.own_output += 1;
                continue;
            }
            let relative = rec
                .key
                .strip_prefix(source.prefix.as_str())
                .unwrap_or(&rec.key);
            if !filters.matches(relative, rec.size) {
                continue;
            }
            plan.stats.listed += 1;
            while let Some(o) = old.take_if(|o| o.key < rec.key) {
                deleted.push(o);
                old = next(&mut previous).await?;
            }
            let before = match old.take_if(|o| o.key == rec.key) {
                Some(o) => {
                    old = next(&mut previous).await?;
                    Some(o)
                }
                None => None,
            };
            let keep = match before {
                Some(b) if b.same_version(&rec) => {
                    plan.stats.unchanged += 1;
                    Some(rec)
                }
                Some(b) if rec.needs_restore() => {
                    plan.skipped.push(skip(&rec));
                    Some(b)
                }
                Some(_) => {
                    plan.stats.modified += 1;
                    changed(&rec);
                    plan.puts.push(rec.clone());
                    Some(rec)
                }
                None if rec.needs_restore() => {
                    plan.skipped.push(skip(&rec));
                    None
                }
                None => {
                    changed(&rec);
                    added.push(rec.clone());
                    Some(rec)
                }
            };
            if let (Some(inv), Some(r)) = (inventory.as_deref_mut(), keep) {
                inv.push(&r).await.map_err(inv_err)?;
            }
        }
    }
    while let Some(o) = old.take() {
        deleted.push(o);
        old = next(&mut previous).await?;
    }

    let (moves, added, deletes) = pair_renames(added, deleted, detect_moves);
    plan.stats.added = added.len() as u64;
    plan.moves = moves;
    plan.puts.extend(added);
    plan.deletes = deletes;
    plan.puts.sort_by(|a, b| a.key.cmp(&b.key));
    plan.stats.deleted = plan.deletes.len() as u64;
    plan.stats.moved = plan.moves.len() as u64;
    plan.stats.skipped = plan.skipped.len() as u64;
    plan.stats.put_bytes = plan.puts.iter().map(|p| p.size).sum();
    Ok(plan)
}

/// Pair each added key with a deleted key of the same ETag and size: a rename. Returns the
/// moves, the added keys left to put and the deleted keys left to delete. A listing without
/// ETags (some S3-compatible servers) proves nothing about content, so it pairs nothing.
fn pair_renames(
    added: Vec<ObjectRecord>,
    deleted: Vec<ObjectRecord>,
    detect_moves: bool,
) -> (Vec<Move>, Vec<ObjectRecord>, Vec<String>) {
    let mut by_content: HashMap<(String, u64), VecDeque<usize>> = HashMap::new();
    if detect_moves {
        for (i, d) in deleted.iter().enumerate() {
            if !d.etag.is_empty() {
                by_content
                    .entry((d.etag.clone(), d.size))
                    .or_default()
                    .push_back(i);
            }
        }
    }
    let mut moved_from = vec![false; deleted.len()];
    let (mut moves, mut puts) = (Vec::new(), Vec::new());
    for a in added {
        let source_index = by_content
            .get_mut(&(a.etag.clone(), a.size))
            .filter(|_| !a.etag.is_empty())
            .and_then(VecDeque::pop_front);
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
            None => puts.push(a),
        }
    }
    let deletes = deleted
        .into_iter()
        .zip(moved_from)
        .filter(|(_, moved)| !moved)
        .map(|(d, _)| d.key)
        .collect();
    (moves, puts, deletes)
}

async fn next<R: AsyncBufRead + Unpin>(
    previous: &mut Option<InventoryReader<R>>,
) -> Result<Option<ObjectRecord>> {
    match previous.as_mut() {
        Some(p) => p.next().await,
        None => Ok(None),
    }
}

/// How many volumes the puts need under the given caps (the same packing `export` does).
pub fn estimate_volumes(puts: &[ObjectRecord], volume_size: u64, volume_entries: u64) -> u64 {
    let mut volumes = 1;
    let (mut bytes, mut entries) = (0u64, 0u64);
    for p in puts {
        let cost = crate::archive::entry_cost(&p.key, p.size);
        if entries > 0 && (bytes + cost > volume_size || entries + 1 > volume_entries) {
            volumes += 1;
            bytes = 0;
            entries = 0;
        }
        bytes += cost;
        entries += 1;
    }
    volumes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, etag: &str, size: u64) -> ObjectRecord {
        ObjectRecord {
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified_ms: 1,
            storage_class: "STANDARD".into(),
        }
    }

    #[test]
    fn renames_pair_by_etag_and_size_but_never_without_an_etag() {
        let added = vec![
            rec("new/a", "e1", 5),
            rec("new/b", "", 7),
            rec("new/c", "e3", 9),
        ];
        let deleted = vec![
            rec("old/a", "e1", 5),
            rec("old/b", "", 7),
            rec("old/c", "e3", 8),
        ];
        let (moves, puts, deletes) = pair_renames(added.clone(), deleted.clone(), true);
        assert_eq!(moves.len(), 1);
        assert_eq!(
            (moves[0].from.as_str(), moves[0].to.as_str()),
            ("old/a", "new/a")
        );
        let puts: Vec<_> = puts.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(puts, ["new/b", "new/c"]);
        assert_eq!(deletes, ["old/b", "old/c"]);

        let (moves, puts, deletes) = pair_renames(added, deleted, false);
        assert!(moves.is_empty());
        assert_eq!((puts.len(), deletes.len()), (3, 3));
    }
}
