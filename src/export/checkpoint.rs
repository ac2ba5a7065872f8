//! The resumable progress of a bundle: its checkpoint (beside the plan in the export bucket) and
//! each shard's own progress document, and how a shard's counts join them.

use super::*;

/// The resumable progress of a bundle, stored beside the plan in the export bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    pub(super) format: String,
    pub(super) sequence: u64,
    pub(super) baseline: bool,
    pub(super) previous: Option<ChainLink>,
    pub(super) listed_at: String,
    pub(super) inventory_key: String,
    /// Index into the plan's puts of the first object not in a completed volume (older
    /// checkpoints; cursors now live in `shards`).
    pub(super) cursor: usize,
    /// Planned bytes of the puts before `cursor` (sizes the parts of the next volume).
    #[serde(default)]
    pub(super) cursor_bytes: u64,
    pub(super) volumes: Vec<VolumeInfo>,
    pub(super) totals: Totals,
    pub(super) vanished: Vec<String>,
    /// The last volume is complete; only the summary files and the commit remain.
    pub(super) shipped: bool,
    /// The volumes are sealed with age (a bundle is sealed throughout or not at all).
    #[serde(default)]
    pub(super) sealed: bool,
    pub(super) hops: u32,
    /// The run that wrote this checkpoint last (a run taking the bundle over writes its own
    /// name first: that is what fences the old run's writes off).
    #[serde(default)]
    pub(super) writer: String,
    /// The plan's key (absent in older checkpoints: `plan.json`).
    #[serde(default)]
    pub(super) plan_key: Option<String>,
    /// The key-range shards the puts were cut into, each with its own cursor (empty in older
    /// checkpoints: one shard, `cursor` and `cursor_bytes`).
    #[serde(default)]
    pub(super) shards: Vec<ShardState>,
    /// The next volume index to hand out (0 in older checkpoints: after `volumes`). Shards
    /// claim indices as they open volumes; one claimed by a volume that never completed is
    /// filled with an empty volume when the bundle is sealed.
    #[serde(default)]
    pub(super) next_volume: u32,
    /// Every shard's document has been folded into `volumes`, `totals` and `vanished` (the
    /// commit step does that once, then seals and commits).
    #[serde(default)]
    pub(super) merged: bool,
    /// Shipped versions that differ from the listed ones (an object rewritten between the
    /// listing and its read): the inventory records what was shipped, not what was listed.
    #[serde(default)]
    pub(super) corrected: Vec<ObjectRecord>,
    /// `inventory_key` is the inventory of what this bundle shipped (vanished keys out,
    /// corrected records in): the commit step settles it once.
    #[serde(default)]
    pub(super) inventory_settled: bool,
    /// The settings the bundle was planned with (absent in older checkpoints): a run that
    /// continues it keeps them, and commits them as the job's pin.
    #[serde(default)]
    pub(super) pin: Option<Pin>,
    /// The `--shards` the bundle was planned with (absent in older checkpoints).
    #[serde(default)]
    pub(super) shards_asked: Option<usize>,
    /// Objects planned but found archived when read (an archive tier): skipped, reported.
    #[serde(default)]
    pub(super) skipped: Vec<crate::format::manifest::Skipped>,
    /// Objects the policy withheld when read (their bytes or headers break it): reported on
    /// this side only, never in the bundle.
    #[serde(default)]
    pub(super) withheld: Vec<crate::format::manifest::Skipped>,
}

/// A shard's own progress, `shard-KKKK.json` beside the checkpoint: its cursor, the volumes it
/// completed, their counts and vanished keys. Only the worker shipping the shard writes it,
/// under its own fence, so shards in separate processes never write one document; the commit
/// step folds every shard's document into the checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ShardDoc {
    pub(super) format: String,
    pub(super) sequence: u64,
    pub(super) shard: usize,
    /// The worker that wrote it last (a worker taking the shard over writes its name first).
    pub(super) writer: String,
    pub(super) state: ShardState,
    pub(super) volumes: Vec<VolumeInfo>,
    pub(super) totals: Totals,
    pub(super) vanished: Vec<String>,
    /// This shard wrote the bundle's last volume (the final manifest): a bundle of one shard.
    #[serde(default)]
    pub(super) last: bool,
    /// Shipped versions that differ from the listed ones (see [`Checkpoint::corrected`]).
    #[serde(default)]
    pub(super) corrected: Vec<ObjectRecord>,
    /// Objects found archived when read (see [`Checkpoint::skipped`]).
    #[serde(default)]
    pub(super) skipped: Vec<crate::format::manifest::Skipped>,
    /// Objects the policy withheld when read (see [`Checkpoint::withheld`]).
    #[serde(default)]
    pub(super) withheld: Vec<crate::format::manifest::Skipped>,
    /// Keys that changed while they were being read, with how many of this shard's attempts
    /// they failed: after [`CHANGED_TRIES`] the object is skipped and reported (it ships in a
    /// later bundle), so a key rewritten faster than it can be read cannot stop the bundle.
    #[serde(default)]
    pub(super) changing: std::collections::BTreeMap<String, u32>,
}

/// Attempts of a shard that an object changing while it is read may fail before it is
/// skipped.
pub const CHANGED_TRIES: u32 = 3;

/// A shard's document and the fence its worker writes it under.
pub(super) struct ShardProgress {
    pub(super) key: String,
    pub(super) fence: Arc<crate::store::Fence>,
    pub(super) doc: ShardDoc,
}

/// One shard of a bundle's puts: a contiguous key range, shipped by its own worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ShardState {
    /// Its puts file (`None`: the plan's own puts, when there is one shard).
    #[serde(default)]
    pub(super) puts_key: Option<String>,
    pub(super) count: u64,
    pub(super) bytes: u64,
    /// Index into the shard's puts of the first object not in a completed volume.
    pub(super) cursor: u64,
    /// Planned bytes of the puts before `cursor`.
    pub(super) cursor_bytes: u64,
    /// Every put is in a completed volume.
    pub(super) done: bool,
    /// The object at `cursor` when a deadline cut it into parts: how far it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) partial: Option<Partial>,
}

/// An object a step's deadline cut into parts (see [`crate::format::parts`]): the version
/// being shipped, the bytes in completed volumes and their running digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Partial {
    pub(super) key: String,
    pub(super) etag: String,
    /// Bytes of the object in completed volumes.
    pub(super) offset: u64,
    /// Parts in completed volumes.
    pub(super) parts: u32,
    pub(super) digest: crate::format::parts::SavedDigest,
}

/// What a shard shipped since its last checkpoint: its cursor, and the counts and vanished
/// keys of its open volume (added to the checkpoint's when that volume completes, so a shard
/// that stops mid-volume never counts an object twice).
pub(super) struct ShardDone {
    pub(super) shard: usize,
    pub(super) cursor: u64,
    pub(super) cursor_bytes: u64,
    pub(super) totals: Totals,
    pub(super) vanished: Vec<String>,
    pub(super) corrected: Vec<ObjectRecord>,
    pub(super) skipped: Vec<crate::format::manifest::Skipped>,
    pub(super) withheld: Vec<crate::format::manifest::Skipped>,
    /// The object at `cursor` is in parts, this far (recorded with the cursor).
    pub(super) partial: Option<Partial>,
}

impl ShardDone {
    pub(super) fn advance(&mut self, cursor: usize, planned: u64) {
        self.cursor = cursor as u64;
        self.partial = None;
        self.cursor_bytes += planned;
    }

    /// Withhold an object the policy (of digest `policy`) refuses for `reason`, as read
    /// (`meta`): not shipped, reported on this side, and recorded in the inventory as withheld,
    /// so that the next runs report it again without reading it while neither it nor the
    /// policy changes, and judge it again once either does.
    pub(super) fn withhold_by_policy(
        &mut self,
        rec: &ObjectRecord,
        meta: &ObjectMeta,
        policy: &str,
        reason: String,
    ) {
        self.corrected.push(ObjectRecord {
            key: rec.key.clone(),
            size: meta.size,
            etag: meta.etag.clone(),
            last_modified_ms: meta.last_modified_ms,
            storage_class: rec.storage_class.clone(),
            state: None,
            withheld: Some(crate::store::Withheld {
                policy: policy.to_string(),
                reason: reason.clone(),
            }),
        });
        self.withheld.push(crate::format::manifest::Skipped {
            key: rec.key.clone(),
            size: rec.size,
            storage_class: rec.storage_class.clone(),
            reason,
        });
    }

    /// Skip a planned object and report it (`reason`). It is recorded in the inventory as a
    /// version no listing matches, so the next run tries it again and the far side keeps what
    /// it had.
    pub(super) fn withhold(&mut self, rec: &ObjectRecord, reason: String) {
        self.corrected.push(ObjectRecord {
            etag: String::new(),
            last_modified_ms: 0,
            ..rec.clone()
        });
        self.skipped.push(crate::format::manifest::Skipped {
            key: rec.key.clone(),
            size: rec.size,
            storage_class: rec.storage_class.clone(),
            reason,
        });
        self.totals.skipped += 1;
    }

    /// The counts so far, leaving this one at the same cursor with none.
    pub(super) fn take(&mut self) -> ShardDone {
        ShardDone {
            shard: self.shard,
            cursor: self.cursor,
            cursor_bytes: self.cursor_bytes,
            totals: std::mem::take(&mut self.totals),
            vanished: std::mem::take(&mut self.vanished),
            corrected: std::mem::take(&mut self.corrected),
            skipped: std::mem::take(&mut self.skipped),
            withheld: std::mem::take(&mut self.withheld),
            partial: self.partial.clone(),
        }
    }

    /// `totals` with this shard's counts added.
    pub(super) fn add_to(&self, totals: &Totals) -> Totals {
        plus(totals, &self.totals)
    }

    /// Into the shard's document: its cursor, the counts, the vanished keys.
    pub(super) fn record(self, doc: &mut ShardDoc) {
        doc.totals = self.add_to(&doc.totals);
        doc.vanished.extend(self.vanished);
        doc.corrected.extend(self.corrected);
        doc.skipped.extend(self.skipped);
        doc.withheld.extend(self.withheld);
        let s = &mut doc.state;
        s.cursor = self.cursor;
        s.cursor_bytes = self.cursor_bytes;
        s.partial = self.partial;
        s.done = s.cursor == s.count;
    }
}

/// `a` with `b`'s shipped counts (objects, bytes, replaced, vanished, skipped) added.
pub(super) fn plus(a: &Totals, b: &Totals) -> Totals {
    Totals {
        objects: a.objects + b.objects,
        bytes: a.bytes + b.bytes,
        replaced: a.replaced + b.replaced,
        vanished: a.vanished + b.vanished,
        skipped: a.skipped + b.skipped,
        ..a.clone()
    }
}

/// `volume` into `volumes`, kept in index order; `false` if the index is there already.
pub(super) fn insert_volume(volumes: &mut Vec<VolumeInfo>, volume: VolumeInfo) -> bool {
    match volumes.binary_search_by_key(&volume.index, |v| v.index) {
        Ok(_) => false,
        Err(at) => {
            volumes.insert(at, volume);
            true
        }
    }
}

impl Checkpoint {
    /// Volumes numbered before the table's counter existed (older checkpoints).
    pub(super) fn counter_base(&self) -> u32 {
        (self.volumes.len() as u32).max(self.next_volume.saturating_sub(1))
    }
}
