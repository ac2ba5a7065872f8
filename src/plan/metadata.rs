//! Changes the listing cannot show: an object whose bytes are as shipped (same ETag and size)
//! but whose headers, metadata, tags or Object Lock changed. The listing shows such a change
//! only when LastModified moved (CopyObject onto itself); a tag change or a legal hold's
//! release leaves it alone. `--scan-metadata` HEADs every object the listing calls unchanged
//! (and GetObjectTagging where it has tags) and compares the digest of what it read
//! ([`crate::format::manifest::ObjectHeaders::state_digest`]) with the one the inventory keeps. Either way, what
//! changed ships as a metadata-only entry, without the bytes.

use std::collections::HashMap;

use crate::clock::rfc3339_ms;
use crate::error::Result;
use crate::format::manifest::MetadataOnly;
use crate::plan::PlanStats;
use crate::plan::inventory::ObjectRecord;
use crate::store::ObjectMeta;

/// Metadata-only entries one bundle carries at most (they live in its last manifest, beside
/// the deletions): the rest are found again, and ship, in the next runs.
pub const MAX_METADATA_ONLY: usize = 10_000;

/// Objects whose metadata is read at once.
const METADATA_READS: usize = 32;

/// Reads an object's current headers, metadata, tags and Object Lock (a HEAD, and a
/// GetObjectTagging when it has tags); `None` when it is gone.
#[async_trait::async_trait]
pub trait MetadataReader: Send + Sync {
    /// The metadata and whether its tags took a second request.
    async fn metadata(&self, key: &str) -> Result<Option<(ObjectMeta, bool)>>;
}

/// What the plan does with a listed object, as far as its metadata goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// Nothing to read.
    No,
    /// Unchanged by the listing: read it to compare its metadata (`--scan-metadata`).
    Scan,
    /// LastModified moved, ETag and size did not: read it, it may be metadata-only.
    Moved,
    /// A put (added or modified): read it to record the state it ships with
    /// (`--scan-metadata`).
    Record,
}

impl Ask {
    /// What to read of `rec` (listed) against `before` (the inventory's record of its key).
    pub(super) fn of(
        rec: &ObjectRecord,
        before: Option<&ObjectRecord>,
        archived: bool,
        scan: bool,
    ) -> Ask {
        // An archived object cannot be copied onto itself; its metadata waits for its bytes.
        // A withheld one never crossed: it has no metadata there to change.
        if archived || rec.needs_restore() || before.is_some_and(|b| b.withheld.is_some()) {
            return Ask::No;
        }
        match before {
            Some(b) if b.same_version(rec) => {
                if scan {
                    Ask::Scan
                } else {
                    Ask::No
                }
            }
            Some(b) if b.etag == rec.etag && b.size == rec.size && !rec.etag.is_empty() => {
                Ask::Moved
            }
            _ if scan => Ask::Record,
            _ => Ask::No,
        }
    }
}

/// The metadata of every object of a page that `asks` names, read [`METADATA_READS`] at a
/// time; counted into `stats`.
pub(super) async fn read_all<'a>(
    asks: impl Iterator<Item = &'a str>,
    reader: &dyn MetadataReader,
    stats: &mut PlanStats,
) -> Result<HashMap<String, ObjectMeta>> {
    use futures::StreamExt;
    type Read = Result<(String, Option<(ObjectMeta, bool)>)>;
    let read: Vec<Read> = futures::stream::iter(asks)
        .map(|key| async move { Ok((key.to_string(), reader.metadata(key).await?)) })
        .buffer_unordered(METADATA_READS)
        .collect()
        .await;
    let mut out = HashMap::new();
    for r in read {
        let (key, meta) = r?;
        stats.metadata_heads += 1;
        if let Some((meta, tagged)) = meta {
            stats.tag_reads += u64::from(tagged);
            out.insert(key, meta);
        }
    }
    Ok(out)
}

/// The outcome for a listed object the listing calls unchanged (`Scan`) or whose
/// LastModified alone moved (`Moved`): the record the new inventory keeps, and whether it is
/// still a put after all (its bytes changed since the listing: the fetch reads them).
pub(super) enum Restated {
    /// Keep this record; nothing ships.
    Keep(ObjectRecord),
    /// Keep this record; `entry` ships as metadata-only.
    Ship(ObjectRecord, Box<MetadataOnly>),
    /// A put after all.
    Put,
}

/// Decide for `rec` (listed), `before` (the inventory's) and `read` (its metadata now, if it
/// was read), with `entries` metadata-only entries in the bundle so far.
pub(super) fn restate(
    ask: Ask,
    rec: ObjectRecord,
    before: &ObjectRecord,
    read: Option<&ObjectMeta>,
    stats: &mut PlanStats,
    entries: usize,
) -> Restated {
    let same_bytes = |m: &ObjectMeta| m.etag == rec.etag && m.size == rec.size;
    let meta = match read {
        Some(m) if same_bytes(m) => m,
        // Gone or rewritten since the listing: the next run sees it as it is then.
        _ if ask == Ask::Scan => {
            return Restated::Keep(ObjectRecord {
                state: before.state.clone(),
                ..rec
            });
        }
        _ => return Restated::Put,
    };
    let state = meta.headers.state_digest();
    if before.state.as_deref() == Some(state.as_str()) {
        return Restated::Keep(ObjectRecord {
            state: Some(state),
            ..rec
        });
    }
    if ask == Ask::Scan && before.state.is_none() {
        stats.metadata_unknown += 1;
    }
    if entries >= MAX_METADATA_ONLY {
        // Left for the next run: the inventory keeps what it had.
        stats.metadata_deferred += 1;
        return Restated::Keep(before.clone());
    }
    stats.metadata_only += 1;
    let entry = Box::new(entry_of(&rec.key, meta));
    Restated::Ship(
        ObjectRecord {
            state: Some(state),
            ..rec
        },
        entry,
    )
}

fn entry_of(key: &str, meta: &ObjectMeta) -> MetadataOnly {
    MetadataOnly {
        key: key.to_string(),
        etag: meta.etag.clone(),
        size: meta.size,
        last_modified: rfc3339_ms(meta.last_modified_ms),
        // With the checksum the object has (its bytes' own, unchanged): the copy keeps its
        // algorithm.
        headers: meta.headers.clone(),
        version_id: meta.version_id.clone(),
    }
}

/// The state a put's record carries when its metadata was read with the same bytes.
pub(super) fn recorded(rec: &ObjectRecord, read: Option<&ObjectMeta>) -> Option<String> {
    read.filter(|m| m.etag == rec.etag && m.size == rec.size)
        .map(|m| m.headers.state_digest())
}
