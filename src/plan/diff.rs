//! The delta: a streaming merge of the source listing with the previous inventory (both
//! key-sorted) into puts (added or modified), deletions and skipped objects, while the new
//! inventory is written out (renames are paired after, in `renames`).
//! The puts stream out to a file as the listing finds them; memory holds the deletions and skips
//! only (what the last volume's manifest lists), never the puts nor the bucket.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncWrite};

use crate::config::{Filters, S3Location};
use crate::error::{Error, Result};
use crate::format::manifest::{MetadataOnly, Move, Skipped};
use crate::plan::inventory::{InventoryReader, InventoryWriter, ObjectRecord};
use crate::plan::listing::Pages;
pub use crate::plan::metadata::MAX_METADATA_ONLY;
use crate::plan::metadata::{Ask, MetadataReader, Restated, read_all, recorded, restate};
use crate::plan::restore::{Restore, Restores, restores_of, skip};

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
    /// Metadata-only entries: objects whose bytes are unchanged and headers, metadata, tags or
    /// Object Lock are not (see [`Listed::metadata_only`]).
    #[serde(default)]
    pub metadata_only: u64,
    /// Metadata-only changes found beyond [`MAX_METADATA_ONLY`]: left for the next runs.
    #[serde(default)]
    pub metadata_deferred: u64,
    /// HeadObject requests the plan made to read objects' metadata (`--scan-metadata`, and
    /// objects whose LastModified moved while ETag and size did not).
    #[serde(default)]
    pub metadata_heads: u64,
    /// GetObjectTagging requests it made (objects with tags among those).
    #[serde(default)]
    pub tag_reads: u64,
    /// Objects scanned that had no digest of their metadata in the inventory (shipped before
    /// any scan): their metadata ships once.
    #[serde(default)]
    pub metadata_unknown: u64,
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

/// What a bundle carries besides its objects: the puts themselves are not held here but
/// streamed, in key order, to a gzip JSON-lines file (see [`StoredPlan`]); this holds what the
/// last volume's manifest lists anyway.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    pub deletes: Vec<String>,
    pub moves: Vec<Move>,
    pub skipped: Vec<Skipped>,
    #[serde(default)]
    pub metadata_only: Vec<MetadataOnly>,
    /// Changed objects the policy withholds by their key or size (or a metadata-only change by
    /// its new headers), and why.
    #[serde(default)]
    pub withheld: Vec<Skipped>,
    pub stats: PlanStats,
}

impl Plan {
    /// Nothing to carry.
    pub fn is_empty(&self) -> bool {
        self.stats.added == 0
            && self.stats.modified == 0
            && self.deletes.is_empty()
            && self.moves.is_empty()
            && self.metadata_only.is_empty()
    }

    /// Objects to ship.
    pub fn put_count(&self) -> u64 {
        self.stats.added + self.stats.modified
    }
}

/// Where a stored plan's puts are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Puts {
    /// A gzip JSON-lines file of inventory records, in key order, in the export bucket.
    Stored { key: String, count: u64 },
    /// Inline (plans written before puts were spilled to a file).
    Inline(Vec<ObjectRecord>),
}

/// The plan as the export keeps it beside its checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPlan {
    #[serde(flatten)]
    pub plan: Plan,
    pub puts: Puts,
}

/// A changed object as the listing writes it out: its record and whether its key is new (an
/// added key may still turn out to be a rename). Read as an [`ObjectRecord`] the flag is
/// ignored, so a candidates file without renames to pair is already the plan's puts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Candidate {
    #[serde(flatten)]
    pub rec: ObjectRecord,
    #[serde(rename = "a", default, skip_serializing_if = "std::ops::Not::not")]
    pub added: bool,
}

/// What the listing found, the put candidates aside (those were written out as it ran).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Listed {
    /// `added` and `put_bytes` count every candidate, renames included.
    pub stats: PlanStats,
    /// Keys of the previous inventory that are gone (renames among them), in key order.
    pub deleted: Vec<ObjectRecord>,
    pub skipped: Vec<Skipped>,
    /// Objects whose bytes are as shipped and whose metadata is not, with what they have now
    /// (at most [`MAX_METADATA_ONLY`] a bundle), in key order.
    #[serde(default)]
    pub metadata_only: Vec<MetadataOnly>,
    /// Changed objects the policy withholds (see [`Plan::withheld`]).
    #[serde(default)]
    pub withheld: Vec<Skipped>,
    /// Set when the listing stopped at its deadline: the last key listed (everything up to it
    /// is counted here and written out). Given back in [`Listing::so_far`], the listing goes
    /// on after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_after: Option<String>,
}

impl Listed {
    /// Some added key may be a rename of a deleted one: the candidates must go through
    /// [`pair_renames`]. Otherwise they are the puts as written.
    pub fn needs_pairing(&self, detect_moves: bool) -> bool {
        detect_moves
            && self.stats.added > 0
            && self
                .deleted
                .iter()
                .any(|d| !d.etag.is_empty() && d.withheld.is_none())
    }

    /// The plan when there is nothing to pair: the candidates are the puts.
    pub fn into_plan(self) -> Plan {
        let mut stats = self.stats;
        stats.deleted = self.deleted.len() as u64;
        stats.moved = 0;
        stats.skipped = self.skipped.len() as u64;
        Plan {
            deletes: self.deleted.into_iter().map(|d| d.key).collect(),
            moves: Vec::new(),
            skipped: self.skipped,
            metadata_only: self.metadata_only,
            withheld: self.withheld,
            stats,
        }
    }
}

/// A changed object the policy withholds, and why.
fn withheld_entry(rec: &ObjectRecord, reason: String) -> Skipped {
    Skipped {
        key: rec.key.clone(),
        size: rec.size,
        storage_class: rec.storage_class.clone(),
        reason,
    }
}

/// What a plan lists: the pages of the source, where it is, which objects take part, and
/// where to ask about archived objects' restores.
pub struct Listing<'a> {
    pub lister: &'a mut dyn Pages,
    pub source: &'a S3Location,
    pub filters: &'a Filters,
    pub restores: &'a dyn Restores,
    /// Reads objects' metadata: those whose LastModified alone moved, and with `scan_metadata`
    /// every object the listing calls unchanged (and the puts, to record their state).
    pub metadata: &'a dyn MetadataReader,
    pub scan_metadata: bool,
    /// The content policy: a changed object it refuses by key or size is withheld.
    pub policy: Option<&'a crate::policy::Policy>,
    /// What the run's screening withholds under ([`crate::config::ExportConfig::screen_digest`]):
    /// an object the inventory records as withheld under it is withheld again without a read.
    pub screen: Option<&'a str>,
    /// The run's stop token, checked between pages.
    pub stop: &'a crate::interrupt::Stop,
    /// Stop between pages once this has passed (at least one page a call), with
    /// [`Listed::stopped_after`] set.
    pub deadline: Option<std::time::Instant>,
    /// What an earlier call found before it stopped: the lister starts after its
    /// `stopped_after`, and the previous inventory is read from there.
    pub so_far: Option<Listed>,
}

/// Diff the listing against `previous` (or take a baseline when `None`). Every added or
/// modified object is written to `candidates` in key order as the listing shows it, so memory
/// holds the deletions and skips only, never the puts. When `inventory` is given, the new
/// inventory snapshot is written to it as the listing streams by. `changed` sees each
/// candidate too, so its bytes can be fetched while the listing runs.
pub async fn plan<R, W, C>(
    listing: Listing<'_>,
    mut previous: Option<InventoryReader<R>>,
    mut inventory: Option<&mut InventoryWriter<W>>,
    candidates: &mut InventoryWriter<C>,
    changed: &mut (dyn FnMut(&ObjectRecord) + Send),
) -> Result<Listed>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
    C: AsyncWrite + Unpin,
{
    let Listing {
        lister,
        source,
        filters,
        restores,
        metadata,
        scan_metadata,
        policy,
        screen,
        stop,
        deadline,
        so_far,
    } = listing;
    let inv_err = |what: &str, e: std::io::Error| Error::Stream {
        bucket: source.bucket.clone(),
        key: what.into(),
        source: Box::new(e),
    };
    let mut listed = so_far.unwrap_or_default();
    let after = listed.stopped_after.take();
    let mut old = next(&mut previous).await?;
    // What the earlier calls consumed of the previous inventory.
    while old
        .as_ref()
        .is_some_and(|o| after.as_ref().is_some_and(|a| o.key <= *a))
    {
        old = next(&mut previous).await?;
    }
    let stats = &mut listed.stats;
    while let Some(page) = lister.next_page().await? {
        stop.check()?;
        let last = page.last().map(|r| r.key.clone());
        // The page joined with the previous inventory first, so that only an archived object
        // that is new or changed since is asked about its restore.
        let mut joined = Vec::with_capacity(page.len());
        for rec in page {
            if filters.is_own_output(&rec.key) {
                stats.own_output += 1;
                continue;
            }
            let relative = rec
                .key
                .strip_prefix(source.prefix.as_str())
                .unwrap_or(&rec.key);
            if !filters.matches(relative, rec.size) {
                continue;
            }
            stats.listed += 1;
            while let Some(o) = old.take_if(|o| o.key < rec.key) {
                listed.deleted.push(o);
                old = next(&mut previous).await?;
            }
            let before = match old.take_if(|o| o.key == rec.key) {
                Some(o) => {
                    old = next(&mut previous).await?;
                    Some(o)
                }
                None => None,
            };
            joined.push((rec, before));
        }
        let restore = restores_of(&joined, restores).await?;
        // An archived object whose restore completed reads like any other.
        let archived_of = |rec: &ObjectRecord| {
            rec.needs_restore()
                .then(|| restore.get(&rec.key).copied().unwrap_or(Restore::Archived))
                .filter(|r| *r != Restore::Restored)
        };
        let asks: Vec<Ask> = joined
            .iter()
            .map(|(rec, before)| {
                Ask::of(
                    rec,
                    before.as_ref(),
                    archived_of(rec).is_some(),
                    scan_metadata,
                )
            })
            .collect();
        let read = read_all(
            joined
                .iter()
                .zip(&asks)
                .filter(|(_, a)| **a != Ask::No)
                .map(|((r, _), _)| r.key.as_str()),
            metadata,
            stats,
        )
        .await?;
        // What the policy withholds by key and size alone (and, for a metadata-only change,
        // by its new headers).
        let withheld_key = |rec: &ObjectRecord| {
            let p = policy?;
            let rel = rec
                .key
                .strip_prefix(source.prefix.as_str())
                .unwrap_or(&rec.key);
            p.judge_key(rel, rec.size)
                .map(|reason| withheld_entry(rec, reason))
        };
        let withheld = |rec: &ObjectRecord, h: &crate::format::manifest::ObjectHeaders| {
            withheld_key(rec).or_else(|| {
                policy?
                    .judge_headers(h)
                    .map(|reason| withheld_entry(rec, reason))
            })
        };
        for ((mut rec, before), ask) in joined.into_iter().zip(asks) {
            let archived = archived_of(&rec);
            let now = read.get(&rec.key);
            let restated = match (&before, ask) {
                (Some(b), Ask::Scan | Ask::Moved) => Some(restate(
                    ask,
                    rec.clone(),
                    b,
                    now,
                    stats,
                    listed.metadata_only.len(),
                )),
                _ => None,
            };
            if ask == Ask::Record {
                rec.state = recorded(&rec, now);
            }
            let (keep, candidate) = match (before, restated) {
                (Some(_), Some(Restated::Keep(r))) => {
                    stats.unchanged += 1;
                    (Some(r), None)
                }
                (Some(b), Some(Restated::Ship(r, entry))) => match withheld(&rec, &entry.headers) {
                    Some(w) => {
                        stats.metadata_only -= 1;
                        listed.withheld.push(w);
                        (Some(b), None)
                    }
                    None => {
                        listed.metadata_only.push(*entry);
                        (Some(r), None)
                    }
                },
                (Some(b), _) if b.withheld.is_some() && b.same_version(&rec) => {
                    let w = b.withheld.as_ref().expect("withheld");
                    if screen.is_some_and(|d| d == w.policy) {
                        // Withheld as read under this policy, and unchanged since: again.
                        listed.withheld.push(withheld_entry(&rec, w.reason.clone()));
                        (Some(b), None)
                    } else {
                        // Another policy, or none: it is judged (and maybe shipped) now.
                        stats.modified += 1;
                        (Some(rec.clone()), Some(Candidate { rec, added: false }))
                    }
                }
                (Some(b), _) if b.same_version(&rec) => {
                    stats.unchanged += 1;
                    // What the inventory knew of its metadata still holds.
                    rec.state = b.state;
                    (Some(rec), None)
                }
                (Some(b), _) if archived.is_some() => {
                    listed
                        .skipped
                        .push(skip(&rec, archived.unwrap_or(Restore::Archived)));
                    (Some(b), None)
                }
                (Some(b), _) if let Some(w) = withheld_key(&rec) => {
                    // The far side keeps the version it has; every run judges it again.
                    listed.withheld.push(w);
                    (Some(b), None)
                }
                (Some(_), _) => {
                    stats.modified += 1;
                    (Some(rec.clone()), Some(Candidate { rec, added: false }))
                }
                (None, _) if archived.is_some() => {
                    listed
                        .skipped
                        .push(skip(&rec, archived.unwrap_or(Restore::Archived)));
                    (None, None)
                }
                (None, _) if let Some(w) = withheld_key(&rec) => {
                    listed.withheld.push(w);
                    (None, None)
                }
                (None, _) => {
                    stats.added += 1;
                    (Some(rec.clone()), Some(Candidate { rec, added: true }))
                }
            };
            if let Some(c) = candidate {
                changed(&c.rec);
                stats.put_bytes += c.rec.size;
                candidates
                    .push_as(&c, &c.rec.key)
                    .await
                    .map_err(|e| inv_err("plan candidates", e))?;
            }
            if let (Some(inv), Some(r)) = (inventory.as_deref_mut(), keep) {
                inv.push(&r).await.map_err(|e| inv_err("inventory", e))?;
            }
        }
        if let Some(last) = last
            && deadline.is_some_and(|d| std::time::Instant::now() >= d)
        {
            // The listing has passed every previous key up to the page's last: gone.
            while let Some(o) = old.take_if(|o| o.key <= last) {
                listed.deleted.push(o);
                old = next(&mut previous).await?;
            }
            listed.stopped_after = Some(last);
            return Ok(listed);
        }
    }
    while let Some(o) = old.take() {
        listed.deleted.push(o);
        old = next(&mut previous).await?;
    }
    Ok(listed)
}

pub(super) async fn next<R: AsyncBufRead + Unpin>(
    previous: &mut Option<InventoryReader<R>>,
) -> Result<Option<ObjectRecord>> {
    match previous.as_mut() {
        Some(p) => p.next().await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{VolumeEstimate, pair_renames};

    fn rec(key: &str, etag: &str, size: u64) -> ObjectRecord {
        ObjectRecord {
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified_ms: 1,
            storage_class: "STANDARD".into(),
            state: None,
            withheld: None,
        }
    }

    async fn pair(
        added: &[ObjectRecord],
        deleted: &[ObjectRecord],
        detect: bool,
    ) -> (Plan, Vec<ObjectRecord>) {
        let mut w = InventoryWriter::new(Vec::new());
        // A modified key, in key order among the added ones: never a rename.
        let mut all: Vec<Candidate> = added
            .iter()
            .map(|r| Candidate {
                rec: r.clone(),
                added: true,
            })
            .collect();
        all.push(Candidate {
            rec: rec("new/m", "e1", 5),
            added: false,
        });
        all.sort_by(|a, b| a.rec.key.cmp(&b.rec.key));
        for c in &all {
            w.push_as(c, &c.rec.key).await.unwrap();
        }
        let bytes = w.finish().await.unwrap();
        let listed = Listed {
            stats: PlanStats {
                added: added.len() as u64,
                modified: 1,
                ..Default::default()
            },
            deleted: deleted.to_vec(),
            skipped: Vec::new(),
            metadata_only: Vec::new(),
            withheld: Vec::new(),
            stopped_after: None,
        };
        let mut out = InventoryWriter::new(Vec::new());
        let mut est = VolumeEstimate::new(u64::MAX, 2);
        let plan = pair_renames(
            &mut InventoryReader::new(&bytes[..], "mem".into()),
            listed,
            detect,
            &mut out,
            &mut est,
        )
        .await
        .unwrap();
        let out = out.finish().await.unwrap();
        let mut r = InventoryReader::new(&out[..], "mem".into());
        let mut puts = Vec::new();
        while let Some(p) = r.next().await.unwrap() {
            puts.push(p);
        }
        assert_eq!(est.volumes(), puts.len().div_ceil(2) as u64);
        (plan, puts)
    }

    #[test]
    fn the_restore_header_says_where_a_restore_stands() {
        assert_eq!(Restore::from_header(None), Restore::Archived);
        assert_eq!(
            Restore::from_header(Some("ongoing-request=\"true\"")),
            Restore::Ongoing
        );
        assert_eq!(
            Restore::from_header(Some(
                "ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""
            )),
            Restore::Restored
        );
        let ongoing = skip(&rec("k", "e", 1), Restore::Ongoing);
        assert!(ongoing.reason.contains("in progress"), "{}", ongoing.reason);
    }

    #[tokio::test]
    async fn renames_pair_by_etag_and_size_but_never_without_an_etag() {
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
        let (plan, puts) = pair(&added, &deleted, true).await;
        assert_eq!(plan.moves.len(), 1);
        assert_eq!(
            (plan.moves[0].from.as_str(), plan.moves[0].to.as_str()),
            ("old/a", "new/a")
        );
        let puts: Vec<_> = puts.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(puts, ["new/b", "new/c", "new/m"]);
        assert_eq!(plan.deletes, ["old/b", "old/c"]);
        assert_eq!(
            (plan.stats.added, plan.stats.moved, plan.stats.put_bytes),
            (2, 1, 21)
        );

        let (plan, puts) = pair(&added, &deleted, false).await;
        assert!(plan.moves.is_empty());
        assert_eq!((puts.len(), plan.deletes.len()), (4, 3));
    }
}
