//! The export run: lease → plan (listing ⋈ last inventory; small changed objects are fetched
//! while the listing runs) → volumes (zip entries → multipart
//! parts) → manifest → bundle.json and the run's report → commit → signature and SHA256SUMS
//! (the far side's "complete" marker: only a committed bundle has them). Checkpoints after every
//! volume so a run stopped by its deadline (or killed) resumes the same bundle without
//! re-shipping a completed volume or skipping a key.

use std::collections::HashMap;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncSeekExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{info, warn};

use crate::archive::{VolumeWriter, entry_name};
use crate::aws::Clients;
use crate::config::{ExportConfig, S3Location};
use crate::error::{Error, Result};
use crate::inventory::{InventoryIndex, InventoryReader, InventoryWriter, ObjectRecord};
use crate::listing::Pages;
use crate::manifest::{
    BundleSummary, ChainLink, FORMAT, Final, Manifest, ManifestJson, Move, ObjectEntry, SourceInfo,
    Totals, VolumeInfo, bundle_digest, limits, sha256sums,
};
use crate::pin::Pin;
use crate::plan::{Listed, Plan, Puts, StoredPlan, VolumeEstimate};
use crate::s3::{Got, MultipartUpload, ObjectMeta, Store};
use crate::state::{Commit, CommittedBundle, JobState, StateTable, now_ms, rfc3339_ms};

/// Objects up to this size are fetched whole (and prefetched several at a time).
pub const SMALL_OBJECT: u64 = 8 * 1024 * 1024;
/// Larger objects are read as ranged GETs of this size (AWS suggests 8–16 MiB; a server that
/// reads the whole object for every range, as moto does, favours the larger)…
pub const CHUNK: u64 = 16 * 1024 * 1024;
/// …with this many in flight.
pub const CHUNKS_IN_FLIGHT: usize = 4;
/// Bytes of prefetched objects held at most.
pub const PREFETCH_BUDGET: u64 = 64 * 1024 * 1024;
/// Volume parts uploading at once.
pub const PARTS_IN_FLIGHT: usize = 3;
/// What one object weighs when the puts are cut into shards, beyond its bytes: about what a
/// GET's round trip costs in transfer time.
pub const OBJECT_WEIGHT: u64 = 1024 * 1024;

/// Where a job's bundles and state objects live in the export bucket.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dest: S3Location,
    pub job: String,
    /// Volumes are sealed with age (`.zip.age`).
    pub sealed: bool,
}

impl Layout {
    pub fn bundle_prefix(&self, seq: u64) -> String {
        self.dest.key(&format!("{}/{seq:08}/", self.job))
    }
    pub fn volume_name(&self, seq: u64, index: u32) -> String {
        let suffix = if self.sealed { crate::seal::SUFFIX } else { "" };
        format!("{}-{seq:08}-{index:04}.zip{suffix}", self.job)
    }
    pub fn state_prefix(&self, seq: u64) -> String {
        self.dest.key(&format!("_state/{}/{seq:08}/", self.job))
    }
    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.dest.bucket)
    }
    /// The inventory and the plan a run writes carry its name: a run that lost its lease
    /// while planning cannot overwrite the new holder's.
    fn inventory_key(&self, seq: u64, owner: &str) -> String {
        format!("{}inventory-{owner}.jsonl.gz", self.state_prefix(seq))
    }
    /// The inventory of what the bundle shipped (the listing's, settled by the commit).
    fn settled_inventory_key(&self, seq: u64, owner: &str) -> String {
        format!(
            "{}inventory-{owner}.shipped.jsonl.gz",
            self.state_prefix(seq)
        )
    }
    fn plan_key(&self, seq: u64, owner: &str) -> String {
        format!("{}plan-{owner}.json", self.state_prefix(seq))
    }
    /// Every put candidate as the listing found it (renames not yet paired).
    fn candidates_key(&self, seq: u64, owner: &str) -> String {
        format!("{}plan-{owner}.candidates.jsonl.gz", self.state_prefix(seq))
    }
    /// The plan's puts once renames are paired.
    fn puts_key(&self, seq: u64, owner: &str) -> String {
        format!("{}plan-{owner}.puts.jsonl.gz", self.state_prefix(seq))
    }
    /// Where checkpoints written before plans carried their run's name kept the plan.
    /// Shard `k`'s puts (a contiguous key range of the plan's).
    fn shard_puts_key(&self, seq: u64, owner: &str, k: u32) -> String {
        format!(
            "{}plan-{owner}.shard-{k:04}.jsonl.gz",
            self.state_prefix(seq)
        )
    }

    fn legacy_plan_key(&self, seq: u64) -> String {
        format!("{}plan.json", self.state_prefix(seq))
    }
    fn checkpoint_key(&self, seq: u64) -> String {
        format!("{}checkpoint.json", self.state_prefix(seq))
    }
    /// Shard `k`'s progress: written only by the worker shipping that shard.
    fn shard_doc_key(&self, seq: u64, k: usize) -> String {
        format!("{}shard-{k:04}.json", self.state_prefix(seq))
    }
    /// The list of shards the plan step hands to the Distributed Map (`[{"shard": 0}, …]`).
    pub fn shard_list_key(&self, seq: u64) -> String {
        format!("{}shards.json", self.state_prefix(seq))
    }
}

pub use crate::progress::{NoProgress, Progress};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The bundle is complete and committed.
    Complete,
    /// Nothing changed: no volume was written and the sequence did not advance.
    NoChanges,
    /// The deadline came first: call again to continue the same bundle.
    Continue,
}

/// The run's summary (`ferry export --json` prints it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub job: String,
    pub status: Status,
    /// True when the bundle is complete (or there was nothing to do).
    pub complete: bool,
    /// The bundle's sequence (for `no_changes`, the last committed one).
    pub sequence: u64,
    pub baseline: bool,
    /// `s3://` URIs of the volumes written so far, in order.
    pub volumes: Vec<String>,
    /// Name, size and SHA-256 of each of those volumes.
    pub volume_details: Vec<VolumeInfo>,
    /// The bundle folder.
    pub bundle: Option<String>,
    pub bundle_digest: Option<String>,
    pub objects: u64,
    pub bytes: u64,
    pub deleted: u64,
    pub moved: u64,
    pub skipped: u64,
    pub vanished: u64,
    pub replaced: u64,
    pub listed: u64,
    pub unchanged: u64,
    /// Objects left out of the listing because they are the export's own output (its bundles
    /// and `_state/` inside the source bucket), and the `s3://` prefixes they are under.
    pub own_output: u64,
    pub own_output_prefixes: Vec<String>,
    /// Objects skipped and why (storage class).
    pub skipped_objects: Vec<crate::manifest::Skipped>,
    pub hops: u32,
    pub duration_ms: u64,
    pub bytes_per_sec: u64,
    /// GETs that broke mid-body and were resumed from where they broke (this process).
    #[serde(default)]
    pub read_resumes: u64,
    /// Key ranges the listing ran as at once (1: one stream).
    #[serde(default)]
    pub list_ranges: u64,
    /// Key-range shards the bundle's objects were shipped in (0: nothing to ship).
    #[serde(default)]
    pub shards: u64,
    /// Settings given to this run that the bundle in progress was planned without (its
    /// checkpoint's values were kept), one line each: `--include: planned with …, given …`.
    #[serde(default)]
    pub ignored: Vec<String>,
}

/// The resumable progress of a bundle, stored beside the plan in the export bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    format: String,
    sequence: u64,
    baseline: bool,
    previous: Option<ChainLink>,
    listed_at: String,
    inventory_key: String,
    /// Index into the plan's puts of the first object not in a completed volume (older
    /// checkpoints; cursors now live in `shards`).
    cursor: usize,
    /// Planned bytes of the puts before `cursor` (sizes the parts of the next volume).
    #[serde(default)]
    cursor_bytes: u64,
    volumes: Vec<VolumeInfo>,
    totals: Totals,
    vanished: Vec<String>,
    /// The last volume is complete; only the summary files and the commit remain.
    shipped: bool,
    /// The volumes are sealed with age (a bundle is sealed throughout or not at all).
    #[serde(default)]
    sealed: bool,
    hops: u32,
    /// The run that wrote this checkpoint last (a run taking the bundle over writes its own
    /// name first: that is what fences the old run's writes off).
    #[serde(default)]
    writer: String,
    /// The plan's key (absent in older checkpoints: `plan.json`).
    #[serde(default)]
    plan_key: Option<String>,
    /// The key-range shards the puts were cut into, each with its own cursor (empty in older
    /// checkpoints: one shard, `cursor` and `cursor_bytes`).
    #[serde(default)]
    shards: Vec<ShardState>,
    /// The next volume index to hand out (0 in older checkpoints: after `volumes`). Shards
    /// claim indices as they open volumes; one claimed by a volume that never completed is
    /// filled with an empty volume when the bundle is sealed.
    #[serde(default)]
    next_volume: u32,
    /// Every shard's document has been folded into `volumes`, `totals` and `vanished` (the
    /// commit step does that once, then seals and commits).
    #[serde(default)]
    merged: bool,
    /// Shipped versions that differ from the listed ones (an object rewritten between the
    /// listing and its read): the inventory records what was shipped, not what was listed.
    #[serde(default)]
    corrected: Vec<ObjectRecord>,
    /// `inventory_key` is the inventory of what this bundle shipped (vanished keys out,
    /// corrected records in): the commit step settles it once.
    #[serde(default)]
    inventory_settled: bool,
    /// The settings the bundle was planned with (absent in older checkpoints): a run that
    /// continues it keeps them, and commits them as the job's pin.
    #[serde(default)]
    pin: Option<Pin>,
    /// The `--shards` the bundle was planned with (absent in older checkpoints).
    #[serde(default)]
    shards_asked: Option<usize>,
    /// Objects planned but found archived when read (an archive tier): skipped, reported.
    #[serde(default)]
    skipped: Vec<crate::manifest::Skipped>,
}

/// A shard's own progress, `shard-KKKK.json` beside the checkpoint: its cursor, the volumes it
/// completed, their counts and vanished keys. Only the worker shipping the shard writes it,
/// under its own fence, so shards in separate processes never write one document; the commit
/// step folds every shard's document into the checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShardDoc {
    format: String,
    sequence: u64,
    shard: usize,
    /// The worker that wrote it last (a worker taking the shard over writes its name first).
    writer: String,
    state: ShardState,
    volumes: Vec<VolumeInfo>,
    totals: Totals,
    vanished: Vec<String>,
    /// This shard wrote the bundle's last volume (the final manifest): a bundle of one shard.
    #[serde(default)]
    last: bool,
    /// Shipped versions that differ from the listed ones (see [`Checkpoint::corrected`]).
    #[serde(default)]
    corrected: Vec<ObjectRecord>,
    /// Objects found archived when read (see [`Checkpoint::skipped`]).
    #[serde(default)]
    skipped: Vec<crate::manifest::Skipped>,
    /// Keys that changed while they were being read, with how many of this shard's attempts
    /// they failed: after [`CHANGED_TRIES`] the object is skipped and reported (it ships in a
    /// later bundle), so a key rewritten faster than it can be read cannot stop the bundle.
    #[serde(default)]
    changing: std::collections::BTreeMap<String, u32>,
}

/// Attempts of a shard that an object changing while it is read may fail before it is
/// skipped.
pub const CHANGED_TRIES: u32 = 3;

/// A shard's document and the fence its worker writes it under.
struct ShardProgress {
    key: String,
    fence: Arc<crate::s3::Fence>,
    doc: ShardDoc,
}

/// One shard of a bundle's puts: a contiguous key range, shipped by its own worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShardState {
    /// Its puts file (`None`: the plan's own puts, when there is one shard).
    #[serde(default)]
    puts_key: Option<String>,
    count: u64,
    bytes: u64,
    /// Index into the shard's puts of the first object not in a completed volume.
    cursor: u64,
    /// Planned bytes of the puts before `cursor`.
    cursor_bytes: u64,
    /// Every put is in a completed volume.
    done: bool,
}

/// What a shard shipped since its last checkpoint: its cursor, and the counts and vanished
/// keys of its open volume (added to the checkpoint's when that volume completes, so a shard
/// that stops mid-volume never counts an object twice).
struct ShardDone {
    shard: usize,
    cursor: u64,
    cursor_bytes: u64,
    totals: Totals,
    vanished: Vec<String>,
    corrected: Vec<ObjectRecord>,
    skipped: Vec<crate::manifest::Skipped>,
}

impl ShardDone {
    fn advance(&mut self, cursor: usize, planned: u64) {
        self.cursor = cursor as u64;
        self.cursor_bytes += planned;
    }

    /// Skip a planned object and report it (`reason`). It is recorded in the inventory as a
    /// version no listing matches, so the next run tries it again and the far side keeps what
    /// it had.
    fn withhold(&mut self, rec: &ObjectRecord, reason: String) {
        self.corrected.push(ObjectRecord {
            etag: String::new(),
            last_modified_ms: 0,
            ..rec.clone()
        });
        self.skipped.push(crate::manifest::Skipped {
            key: rec.key.clone(),
            size: rec.size,
            storage_class: rec.storage_class.clone(),
            reason,
        });
        self.totals.skipped += 1;
    }

    /// The counts so far, leaving this one at the same cursor with none.
    fn take(&mut self) -> ShardDone {
        ShardDone {
            shard: self.shard,
            cursor: self.cursor,
            cursor_bytes: self.cursor_bytes,
            totals: std::mem::take(&mut self.totals),
            vanished: std::mem::take(&mut self.vanished),
            corrected: std::mem::take(&mut self.corrected),
            skipped: std::mem::take(&mut self.skipped),
        }
    }

    /// `totals` with this shard's counts added.
    fn add_to(&self, totals: &Totals) -> Totals {
        plus(totals, &self.totals)
    }

    /// Into the shard's document: its cursor, the counts, the vanished keys.
    fn record(self, doc: &mut ShardDoc) {
        doc.totals = self.add_to(&doc.totals);
        doc.vanished.extend(self.vanished);
        doc.corrected.extend(self.corrected);
        doc.skipped.extend(self.skipped);
        let s = &mut doc.state;
        s.cursor = self.cursor;
        s.cursor_bytes = self.cursor_bytes;
        s.done = s.cursor == s.count;
    }
}

/// `a` with `b`'s shipped counts (objects, bytes, replaced, vanished, skipped) added.
fn plus(a: &Totals, b: &Totals) -> Totals {
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
fn insert_volume(volumes: &mut Vec<VolumeInfo>, volume: VolumeInfo) -> bool {
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
    fn counter_base(&self) -> u32 {
        (self.volumes.len() as u32).max(self.next_volume.saturating_sub(1))
    }
}

/// A bundle in progress, as `ferry status` shows it (read from its checkpoint and shard
/// documents; nothing is written).
#[derive(Debug, Clone, Serialize)]
pub struct InProgress {
    pub sequence: u64,
    /// The checkpoint, `s3://…`.
    pub checkpoint: String,
    pub baseline: bool,
    pub listed_at: String,
    /// Runs that worked on it so far.
    pub hops: u32,
    pub shards: u64,
    /// Objects the plan ships, and those in completed volumes so far.
    pub planned_objects: u64,
    pub shipped_objects: u64,
    /// Completed volumes so far.
    pub volumes: u64,
    /// The run that wrote the checkpoint last.
    pub writer: String,
}

/// The bundle after the last committed one of `state`, if one is in progress. The job's pin
/// says where its checkpoints are (a state written before pins: `None`).
pub async fn in_progress(store: &Store, state: &JobState) -> Result<Option<InProgress>> {
    let Some(pin) = &state.pin else {
        return Ok(None);
    };
    let layout = Layout {
        dest: S3Location {
            bucket: pin.dest_bucket.clone(),
            prefix: pin.dest_prefix.clone(),
        },
        job: state.job.clone(),
        sealed: false,
    };
    let seq = state.sequence + 1;
    let key = layout.checkpoint_key(seq);
    let corrupt = |what: &'static str, location: String, e: serde_json::Error| Error::Corrupt {
        what,
        location,
        hint: "the next export run resumes or replaces it",
        source: Box::new(e),
    };
    let Some(body) = store.get_document(&pin.dest_bucket, &key).await? else {
        return Ok(None);
    };
    let ck: Checkpoint =
        serde_json::from_slice(&body).map_err(|e| corrupt("checkpoint", layout.uri(&key), e))?;
    let mut volumes = ck.volumes.len() as u64;
    let (mut planned, mut shipped) = (0, 0);
    for (k, cut) in ck.shards.iter().enumerate() {
        let doc_key = layout.shard_doc_key(seq, k);
        let doc = match store.get_document(&pin.dest_bucket, &doc_key).await? {
            Some(b) if !ck.merged => Some(
                serde_json::from_slice::<ShardDoc>(&b)
                    .map_err(|e| corrupt("shard progress", layout.uri(&doc_key), e))?,
            ),
            _ => None,
        };
        let state = doc.as_ref().map_or(cut, |d| &d.state);
        planned += state.count;
        shipped += state.cursor;
        volumes += doc.map_or(0, |d| d.volumes.len() as u64);
    }
    Ok(Some(InProgress {
        sequence: seq,
        checkpoint: layout.uri(&key),
        baseline: ck.baseline,
        listed_at: ck.listed_at,
        hops: ck.hops,
        shards: ck.shards.len() as u64,
        planned_objects: planned,
        shipped_objects: shipped,
        volumes,
        writer: ck.writer,
    }))
}

/// Plan what the next bundle would carry, writing nothing to S3 (`ferry plan`): the puts go
/// through a local temporary file (for rename pairing and the volume estimate) and are dropped.
pub async fn plan_only(clients: &Clients, cfg: &ExportConfig) -> Result<(JobState, Plan, u64)> {
    let state = clients
        .table(&cfg.table)
        .load(cfg.job.as_str())
        .await?
        .unwrap_or_default();
    crate::pin::check(cfg, state.pin.as_ref(), state.inventory.as_deref())?;
    let previous = if cfg.full {
        None
    } else {
        state.inventory.clone()
    };
    let local = |e: std::io::Error| Error::Stream {
        bucket: String::new(),
        key: "a temporary file for the plan".into(),
        source: Box::new(e),
    };
    let spill = tokio::fs::File::from_std(tempfile::tempfile().map_err(local)?);
    let mut candidates = InventoryWriter::new(tokio::io::BufWriter::new(spill));
    let listed = make_plan::<MultipartUpload, _>(
        &clients.s3.for_run(),
        cfg,
        previous.as_deref(),
        None,
        &mut candidates,
        &mut |_| {},
    )
    .await?;
    let mut spill = candidates.finish().await.map_err(local)?.into_inner();
    spill
        .seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(local)?;
    let mut estimate = VolumeEstimate::new(cfg.tuning.volume_size, cfg.tuning.volume_entries);
    let plan = crate::plan::pair_renames(
        &mut InventoryReader::new(tokio::io::BufReader::new(spill), "plan candidates".into()),
        listed,
        cfg.moves,
        &mut InventoryWriter::new(tokio::io::sink()),
        &mut estimate,
    )
    .await?;
    let volumes = if plan.is_empty() {
        0
    } else {
        estimate.volumes()
    };
    Ok((state, plan, volumes))
}

/// List and diff (see [`crate::plan::plan`]): candidates go to `candidates`, the new inventory
/// (when given) to `inventory`.
async fn make_plan<W, C>(
    store: &Store,
    cfg: &ExportConfig,
    previous: Option<&str>,
    inventory: Option<&mut InventoryWriter<W>>,
    candidates: &mut InventoryWriter<C>,
    changed: &mut (dyn FnMut(&ObjectRecord) + Send),
) -> Result<Listed>
where
    W: tokio::io::AsyncWrite + Unpin,
    C: tokio::io::AsyncWrite + Unpin,
{
    let reader = match previous {
        Some(key) => {
            let r = store
                .reader(&cfg.dest.bucket, key)
                .await?
                .ok_or_else(|| Error::Corrupt {
                    what: "inventory",
                    location: format!("s3://{}/{key}", cfg.dest.bucket),
                    hint: "it is missing; run the export with --full to take a new baseline",
                    source: "not found".into(),
                })?;
            Some(InventoryReader::new(
                r,
                format!("s3://{}/{key}", cfg.dest.bucket),
            ))
        }
        None => None,
    };
    let own = cfg.own_output()?;
    let filters = cfg.filters.clone().leaving_out(own.clone());
    let splits = match previous {
        Some(key) if cfg.tuning.list_ranges > 1 => {
            list_splits(store, &cfg.dest.bucket, key, cfg.tuning.list_ranges).await
        }
        _ => Vec::new(),
    };
    let (bucket, prefix) = (&cfg.source.bucket, &cfg.source.prefix);
    let mut pages: Box<dyn Pages> = if splits.is_empty() {
        Box::new(store.list(bucket, prefix))
    } else {
        info!(job = %cfg.job, ranges = splits.len() + 1, "listing the source as key ranges at once");
        Box::new(crate::listing::ranged(store, bucket, prefix, &splits))
    };
    let restores = SourceRestores {
        store: store.clone(),
        bucket: cfg.source.bucket.clone(),
    };
    let listing = crate::plan::Listing {
        lister: pages.as_mut(),
        source: &cfg.source,
        filters: &filters,
        restores: &restores,
    };
    let mut listed = crate::plan::plan(listing, reader, inventory, candidates, changed).await?;
    listed.stats.list_ranges = splits.len() as u64 + 1;
    if listed.stats.own_output > 0 {
        info!(
            job = %cfg.job,
            objects = listed.stats.own_output,
            prefixes = ?own.iter().map(|p| format!("s3://{}/{p}", cfg.source.bucket)).collect::<Vec<_>>(),
            "left out of the listing: the export's own output (bundles and _state/) is never exported"
        );
    }
    Ok(listed)
}

/// Restore states of the source's archived objects, from a HEAD of each.
struct SourceRestores {
    store: Store,
    bucket: String,
}

#[async_trait::async_trait]
impl crate::plan::Restores for SourceRestores {
    async fn restore(&self, key: &str) -> Result<crate::plan::Restore> {
        let header = self.store.restore_header(&self.bucket, key).await?;
        Ok(crate::plan::Restore::from_header(header.as_deref()))
    }
}

/// Where to cut the listing, from the index beside the previous inventory. The index is only
/// a hint: missing, too large or unreadable, the listing runs as one stream.
async fn list_splits(store: &Store, bucket: &str, inventory: &str, ranges: usize) -> Vec<String> {
    let key = InventoryIndex::key_for(inventory);
    let index = async {
        match store.head(bucket, &key).await? {
            Some((_, size)) if size <= crate::inventory::MAX_INDEX => {}
            _ => return Ok(None),
        }
        Ok::<_, Error>(match store.get_document(bucket, &key).await? {
            Some(body) => serde_json::from_slice::<InventoryIndex>(&body).ok(),
            None => None,
        })
    };
    match index.await {
        Ok(Some(ix)) => crate::listing::split_keys(&ix.keys, ix.records, ranges),
        Ok(None) => Vec::new(),
        Err(e) => {
            warn!(bucket, key, error = %e, "inventory index unreadable: listing as one stream");
            Vec::new()
        }
    }
}

/// A generous estimate of what one object adds to its volume's manifest (key, entry name,
/// headers, fixed fields) and central directory (entry name, fixed header, ZIP64 extra): the
/// writer closes a volume before either could reach a reader's limit.
fn metadata_cost(bucket: &str, key: &str, headers: &crate::manifest::ObjectHeaders) -> u64 {
    let headers = serde_json::to_vec(headers).map_or(4096, |v| v.len() as u64);
    let entry = (bucket.len() + 1 + key.len()) as u64;
    // Manifest: key (escaped up to 6x in JSON), entry, headers, fixed fields; directory: entry.
    6 * key.len() as u64 + 2 * entry + 2 * headers + 512
}

/// The `s3://` prefixes of the export's own output inside its source (see
/// [`ExportConfig::own_output`]).
fn own_output_uris(cfg: &ExportConfig) -> Vec<String> {
    cfg.own_output()
        .unwrap_or_default()
        .iter()
        .map(|p| format!("s3://{}/{p}", cfg.source.bucket))
        .collect()
}

/// Run (or continue) the job's export.
pub async fn run(clients: &Clients, cfg: &ExportConfig, progress: &dyn Progress) -> Result<Report> {
    let owner = format!("run-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let session = Session::start(clients, cfg, &owner, true).await?;
    let run = session.run(progress);
    let result = run.go().await;
    let committed = matches!(&result, Ok(r) if r.status != Status::Continue);
    session.end(!committed).await;
    log_outcome(cfg.job.as_str(), &result);
    result
}

fn log_outcome(job: &str, result: &Result<Report>) {
    match result {
        Ok(r) => info!(
            job,
            status = ?r.status,
            sequence = r.sequence,
            volumes = r.volumes.len(),
            objects = r.objects,
            bytes = r.bytes,
            deleted = r.deleted,
            moved = r.moved,
            skipped = r.skipped,
            vanished = r.vanished,
            duration_ms = r.duration_ms,
            bytes_per_sec = r.bytes_per_sec,
            "export run finished"
        ),
        // The caller reports the error (the CLI prints it once; the Lambda logs and notifies).
        Err(e) => tracing::debug!(job, error = %e, "export run failed; state unchanged"),
    }
}

/// What the plan step of a distributed export hands on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PlanStep {
    /// A bundle to ship: one shard worker per entry of the shard list, then the commit step.
    Ready {
        sequence: u64,
        shards: u64,
        /// Bucket and key of the shard list (`[{"shard": 0}, …]`).
        bucket: String,
        shard_list: String,
    },
    /// Nothing to ship (no changes: already committed by the plan step).
    Finished { report: Box<Report> },
}

/// What a shard step did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardStep {
    pub sequence: u64,
    pub shard: usize,
    /// Every put of the shard is in a completed volume.
    pub done: bool,
    pub cursor: u64,
    pub count: u64,
    pub volumes: u64,
}

/// The steps of an export run spread over several processes (AWS Step Functions: plan →
/// a Distributed Map of shard workers → commit). `owner` names the run: every step of it
/// takes (or renews) the job's lease under that name, so the lease spans the steps, and a run
/// that took the bundle over fences the old run's steps off.
pub struct Steps<'a> {
    pub clients: &'a Clients,
    pub cfg: &'a ExportConfig,
    pub owner: &'a str,
}

impl Steps<'_> {
    /// List, diff, plan and cut the bundle into shards (or resume the unfinished bundle),
    /// writing the shard list. The lease stays with the run.
    pub async fn plan(&self) -> Result<PlanStep> {
        let session = Session::start(self.clients, self.cfg, self.owner, true).await?;
        let mut run = session.run(&NoProgress);
        run.warm_up = false;
        let result = async {
            match run.open_bundle().await? {
                Opened::Finished(report) => Ok(PlanStep::Finished { report }),
                Opened::Bundle { ck, .. } => {
                    let key = run.layout.shard_list_key(ck.sequence);
                    let list: Vec<serde_json::Value> = (0..ck.shards.len())
                        .map(|k| serde_json::json!({ "shard": k }))
                        .collect();
                    run.put_json(&key, &list).await?;
                    info!(job = %run.layout.job, sequence = ck.sequence, shards = ck.shards.len(), list = %run.layout.uri(&key), "planned: shard list written");
                    Ok(PlanStep::Ready {
                        sequence: ck.sequence,
                        shards: ck.shards.len() as u64,
                        bucket: self.cfg.dest.bucket.clone(),
                        shard_list: key,
                    })
                }
            }
        }
        .await;
        // The lease goes with a finished run (its commit released it) and stays otherwise.
        session.end(false).await;
        result
    }

    /// Ship shard `shard` of bundle `sequence` from its cursor until it is done or the
    /// deadline comes (`done: false`: invoke the step again).
    pub async fn shard(&self, sequence: u64, shard: usize) -> Result<ShardStep> {
        let session = Session::start(self.clients, self.cfg, self.owner, false).await?;
        let run = session.run(&NoProgress);
        if let Err(e) = run.expect_sequence(sequence) {
            // The lease this step just took is not the run's any more: give it back.
            session.end(true).await;
            return Err(e);
        }
        let result = async {
            let (ck, plan) = run.reopen_bundle(sequence).await?;
            let writer = format!(
                "{}/{}",
                self.owner,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let mut w = run.open_shard(&ck, shard, &writer).await?;
            let only = ck.shards.len() == 1;
            run.ship_shard(&ck, &mut w, &plan, only).await?;
            let s = &w.doc.state;
            Ok(ShardStep {
                sequence,
                shard,
                done: s.done,
                cursor: s.cursor,
                count: s.count,
                volumes: w.doc.volumes.len() as u64,
            })
        }
        .await;
        session.end(false).await;
        result
    }

    /// Fold the shards' documents into the checkpoint, seal the bundle, write its summaries
    /// and commit; the lease is released by the commit.
    pub async fn commit(&self, sequence: u64) -> Result<Report> {
        let session = Session::start(self.clients, self.cfg, self.owner, true).await?;
        let run = session.run(&NoProgress);
        if sequence <= session.state.sequence {
            // A retried commit whose first attempt was applied (its answer lost): its report.
            let key = format!("{}report.json", run.layout.state_prefix(sequence));
            let report = run.get_json::<Report>(&key, "run report").await;
            let location = run.layout.uri(&key);
            drop(run);
            session.end(true).await;
            return match report? {
                Some(r) if r.sequence == sequence && r.status == Status::Complete => {
                    info!(job = %self.cfg.job, sequence, "the bundle was committed already (a retried commit step)");
                    Ok(r)
                }
                _ => Err(Error::config(
                    "sequence",
                    format!(
                        "the commit step is for bundle {sequence} of job `{}`, which was committed already (its report {} is missing)",
                        self.cfg.job, location
                    ),
                )),
            };
        }
        let result = async {
            run.expect_sequence(sequence)?;
            let (ck, plan) = run.reopen_bundle(sequence).await?;
            run.commit(ck, &plan).await
        }
        .await;
        // A failed commit keeps the lease for the retry; the run's failure step releases it.
        session.end(false).await;
        log_outcome(self.cfg.job.as_str(), &result);
        result
    }

    /// Give the lease back after a failed run (its checkpoint stays: the next run resumes).
    pub async fn abandon(&self) -> Result<()> {
        self.clients
            .table(&self.cfg.table)
            .release(self.cfg.job.as_str(), self.owner)
            .await
    }
}

/// A run's hold on the job: the lease, renewed by a heartbeat while the run works.
struct Session<'a> {
    cfg: &'a ExportConfig,
    owner: String,
    table: StateTable,
    state: JobState,
    lost: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
    signer: Option<Box<dyn crate::sign::Signer>>,
    /// The run's S3 store: the shared client, this run's own activity counters.
    store: Store,
}

impl<'a> Session<'a> {
    /// Take (or renew) the lease for `owner`; `sign`: open the signing key first (a key that
    /// cannot be used fails the run before it takes the lease).
    async fn start(
        clients: &'a Clients,
        cfg: &'a ExportConfig,
        owner: &str,
        sign: bool,
    ) -> Result<Session<'a>> {
        cfg.tuning.validate()?;
        let signer = match (&cfg.signing, sign) {
            (Some(spec), true) => Some(crate::sign::open(spec, &clients.kms).await?),
            _ => None,
        };
        let table = clients.table(&cfg.table);
        let job = cfg.job.as_str();
        let state = table.acquire(job, owner, cfg.lease_ttl).await?;
        let lost = Arc::new(AtomicBool::new(false));
        let store = clients.s3.for_run();
        let heartbeat = {
            let activity = store.activity().clone();
            let (table, job, owner, ttl, lost) = (
                table.clone(),
                job.to_string(),
                owner.to_string(),
                cfg.lease_ttl,
                lost.clone(),
            );
            let since = now_ms();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    // A run that moves no data (a request that never returns) stops renewing:
                    // its lease expires and another run can take the job over; this one will
                    // not commit.
                    let idle = activity.idle_for(since);
                    if stalled(idle, ttl) {
                        warn!(
                            job,
                            idle_s = idle.as_secs(),
                            "no data moved for too long: letting the lease expire"
                        );
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    if let Err(e) = table.renew(&job, &owner, ttl).await {
                        warn!(job, error = %e, "lease renewal failed");
                        if matches!(e, Error::LeaseLost { .. }) {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            })
        };
        Ok(Session {
            cfg,
            owner: owner.to_string(),
            table,
            state,
            lost,
            heartbeat,
            signer,
            store,
        })
    }

    fn run<'s>(&'s self, progress: &'s dyn Progress) -> Run<'s> {
        Run {
            store: self.store.clone(),
            cfg: self.cfg,
            table: &self.table,
            owner: &self.owner,
            state: &self.state,
            layout: Layout {
                dest: self.cfg.dest.clone(),
                job: self.cfg.job.as_str().to_string(),
                sealed: self.cfg.encrypt_to.is_some(),
            },
            started: Instant::now(),
            progress,
            lost: self.lost.clone(),
            signer: self.signer.as_deref(),
            fence: std::sync::OnceLock::new(),
            warm: Warm::default(),
            warm_up: true,
            claims: tokio::sync::Mutex::new(()),
        }
    }

    /// Stop renewing; `release`: give the lease back (a run that did not commit).
    async fn end(self, release: bool) {
        self.heartbeat.abort();
        if release && let Err(e) = self.table.release(self.cfg.job.as_str(), &self.owner).await {
            warn!(job = %self.cfg.job, error = %e, "could not release the lease; it expires by itself");
        }
    }
}

struct Run<'a> {
    /// The run's store (its activity counters are this run's alone).
    store: Store,
    cfg: &'a ExportConfig,
    table: &'a StateTable,
    owner: &'a str,
    state: &'a JobState,
    layout: Layout,
    started: Instant,
    progress: &'a dyn Progress,
    lost: Arc<AtomicBool>,
    signer: Option<&'a dyn crate::sign::Signer>,
    /// This run's claim on the bundle's checkpoint (set when the bundle is opened).
    fence: std::sync::OnceLock<Arc<crate::s3::Fence>>,
    /// Objects fetched while the listing ran, for the ship loop.
    warm: Warm,
    /// Fetch small changed objects while the listing runs (false in a plan step: the shard
    /// steps that ship run elsewhere).
    warm_up: bool,
    /// One volume claim at a time from this process (DynamoDB's counter is atomic; a test
    /// double's may not be, and this process's shards never need to race each other).
    claims: tokio::sync::Mutex<()>,
}

/// The bundle a run works on.
enum Opened {
    /// A bundle to ship (`fresh`: planned by this run).
    Bundle {
        ck: Box<Checkpoint>,
        plan: StoredPlan,
        fresh: bool,
    },
    /// Nothing to ship: the run is over (no changes, committed).
    Finished(Box<Report>),
}

/// What planning found.
enum Planned {
    Bundle(Box<Checkpoint>, StoredPlan),
    Empty { plan: Plan, listed_at: String },
}

/// Where the ship loop stopped.
enum Shipped {
    Done,
    Deadline,
}

struct OpenVolume {
    writer: VolumeWriter<MultipartUpload>,
    index: u32,
    key: String,
    /// Its manifest so far (compact JSON, object by object).
    objects: ManifestJson,
    bytes: u64,
    /// Estimated bytes of this volume's manifest and central directory (see
    /// [`limits::WRITER_METADATA_BUDGET`]).
    metadata: u64,
    /// Upper bounds of the bytes its entries take where they are written, and of its central
    /// directory: with the manifest and [`crate::archive::TAIL_RESERVE`], what the finished
    /// volume can weigh (so `--volume-size` is a hard cap).
    entries_bound: u64,
    central_bound: u64,
}

impl OpenVolume {
    /// At most how large this volume is once finished with `more` bytes of entries (their
    /// local and central records and manifest lines, bounds) and `final_json` bytes of final
    /// manifest; `recipients`: sealed to that many.
    fn bound(&self, more: u64, final_json: u64, recipients: Option<usize>) -> u64 {
        let plain = self.entries_bound
            + self.central_bound
            + self.objects.len()
            + more
            + final_json
            + crate::archive::TAIL_RESERVE;
        match recipients {
            Some(r) => crate::archive::sealed_size(plain, r),
            None => plain,
        }
    }
}

impl Run<'_> {
    fn store(&self) -> &Store {
        &self.store
    }

    /// How many age recipients the volumes are sealed to (`None`: not sealed).
    fn recipients(&self) -> Option<usize> {
        self.cfg.encrypt_to.as_ref().map(|r| r.len())
    }

    fn past_deadline(&self) -> bool {
        self.cfg.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// A later step of this run works on bundle `seq`: the one after the last committed.
    fn expect_sequence(&self, seq: u64) -> Result<()> {
        let next = self.state.sequence + 1;
        if seq == next {
            return Ok(());
        }
        Err(Error::config(
            "sequence",
            format!(
                "the step is for bundle {seq} of job `{}` but the next bundle is {next}{}",
                self.layout.job,
                if seq < next {
                    " (it was committed already)"
                } else {
                    ""
                }
            ),
        ))
    }

    fn check_lease(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::LeaseLost {
                job: self.layout.job.clone(),
            });
        }
        Ok(())
    }

    /// Write the checkpoint under this run's fence: `Fenced` once another run took over.
    async fn save_checkpoint(&self, ck: &Checkpoint) -> Result<()> {
        let body = serde_json::to_vec_pretty(ck).expect("serialisable");
        let held = self.fence().write(Bytes::from(body)).await?;
        self.still_held(held, ck.sequence)
    }

    /// Check that no other run has taken the bundle over (the checkpoint is still ours).
    async fn confirm_fence(&self, seq: u64) -> Result<()> {
        let held = self.fence().confirm().await?;
        self.still_held(held, seq)
    }

    fn fence(&self) -> &crate::s3::Fence {
        self.fence
            .get()
            .expect("the fence is set when the bundle is opened")
    }

    /// `Fenced` (and the run marked as having lost its lease) when the claim is gone.
    fn still_held(&self, held: bool, seq: u64) -> Result<()> {
        if held {
            return Ok(());
        }
        self.lost.store(true, Ordering::SeqCst);
        Err(Error::Fenced {
            bucket: self.cfg.dest.bucket.clone(),
            key: self.layout.checkpoint_key(seq),
        })
    }

    async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let body = serde_json::to_vec_pretty(value).expect("serialisable");
        self.store()
            .put_document(
                &self.cfg.dest.bucket,
                key,
                Bytes::from(body),
                "application/json",
            )
            .await
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>> {
        let Some(body) = self
            .store()
            .get_document(&self.cfg.dest.bucket, key)
            .await?
        else {
            return Ok(None);
        };
        self.parse_json(&body, key, what).map(Some)
    }

    /// A stored document of ours, parsed (`Corrupt`, naming it, if it does not parse).
    fn parse_json<T: for<'de> Deserialize<'de>>(
        &self,
        body: &[u8],
        key: &str,
        what: &'static str,
    ) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| Error::Corrupt {
            what,
            location: self.layout.uri(key),
            hint: "run the export with --full to start a new baseline bundle",
            source: Box::new(e),
        })
    }

    /// The whole export in this process: open (or plan) the bundle, ship its shards at once,
    /// then commit. A deadline leaves the bundle checkpointed (`Continue`).
    async fn go(&self) -> Result<Report> {
        let (ck, plan, fresh) = match self.open_bundle().await? {
            Opened::Bundle { ck, plan, fresh } => (*ck, plan, fresh),
            Opened::Finished(report) => return Ok(*report),
        };
        if fresh && self.past_deadline() {
            return Ok(self.report(&ck, &plan.plan, Status::Continue));
        }
        if !ck.merged {
            let mut workers = Vec::with_capacity(ck.shards.len());
            for k in 0..ck.shards.len() {
                workers.push(self.open_shard(&ck, k, self.owner).await?);
            }
            let only = ck.shards.len() == 1;
            let shipped = futures::future::try_join_all(
                workers
                    .iter_mut()
                    .filter(|w| !w.doc.state.done)
                    .map(|w| self.ship_shard(&ck, w, &plan, only)),
            )
            .await?;
            if shipped.iter().any(|s| matches!(s, Shipped::Deadline)) {
                let mut view = ck.clone();
                for w in workers {
                    self.fold(&mut view, w.doc)?;
                }
                return Ok(self.report(&view, &plan.plan, Status::Continue));
            }
        }
        self.commit(ck, &plan).await
    }

    /// Fold every shard's document into the checkpoint (once), seal the bundle if no shard
    /// wrote its last volume, then write the summaries and commit.
    async fn commit(&self, mut ck: Checkpoint, plan: &StoredPlan) -> Result<Report> {
        if !ck.merged {
            for k in 0..ck.shards.len() {
                let key = self.layout.shard_doc_key(ck.sequence, k);
                let doc: Option<ShardDoc> = self.get_json(&key, "shard progress").await?;
                let state = doc.as_ref().map_or(&ck.shards[k], |d| &d.state);
                if !state.done {
                    return Err(Error::ShardUnfinished {
                        job: self.layout.job.clone(),
                        sequence: ck.sequence,
                        shard: k,
                        cursor: state.cursor,
                        count: state.count,
                    });
                }
                if let Some(doc) = doc {
                    self.fold(&mut ck, doc)?;
                }
            }
            ck.merged = true;
            self.save_checkpoint(&ck).await?;
        }
        if !ck.inventory_settled {
            self.settle_inventory(&mut ck).await?;
            ck.inventory_settled = true;
            self.save_checkpoint(&ck).await?;
        }
        if !ck.shipped {
            self.seal(&mut ck, &plan.plan).await?;
        }
        self.finalize(&ck, &plan.plan).await
    }

    /// Make the bundle's inventory the inventory of what it shipped: objects that vanished
    /// before they were read leave it (they ship as deletions), objects rewritten before they
    /// were read are recorded as the version shipped. Without this the next run would diff
    /// against versions the far side never received (a rollback of the change would go
    /// unnoticed, a rename of a vanished key would become a move from a key never shipped).
    async fn settle_inventory(&self, ck: &mut Checkpoint) -> Result<()> {
        if ck.vanished.is_empty() && ck.corrected.is_empty() {
            return Ok(());
        }
        let bucket = &self.cfg.dest.bucket;
        let from = ck.inventory_key.clone();
        let reader = self
            .store()
            .reader(bucket, &from)
            .await?
            .ok_or_else(|| Error::Corrupt {
                what: "inventory",
                location: self.layout.uri(&from),
                hint: "the plan wrote it and it is gone: run the export with --full",
                source: "not found".into(),
            })?;
        let to = self.layout.settled_inventory_key(ck.sequence, self.owner);
        let mut writer = InventoryWriter::new(self.store().multipart(
            bucket,
            &to,
            crate::config::MIN_PART_SIZE,
            2,
            &jsonl_headers(),
        ));
        let records = crate::inventory::settle(
            &mut InventoryReader::new(reader, self.layout.uri(&from)),
            &mut writer,
            &ck.vanished,
            &ck.corrected,
        )
        .await?;
        let index = writer.index();
        writer
            .finish()
            .await
            .map_err(|e| Error::Stream {
                bucket: bucket.clone(),
                key: to.clone(),
                source: Box::new(e),
            })?
            .finish()
            .await?;
        self.store()
            .put_document(
                bucket,
                &InventoryIndex::key_for(&to),
                serde_json::to_vec(&index).expect("index serialises").into(),
                "application/json",
            )
            .await?;
        info!(job = %self.layout.job, key = %to, records, vanished = ck.vanished.len(),
              corrected = ck.corrected.len(), "inventory settled to what was shipped");
        ck.inventory_key = to;
        Ok(())
    }

    /// Add a shard's volumes, counts, vanished keys and cursor to `ck`.
    fn fold(&self, ck: &mut Checkpoint, doc: ShardDoc) -> Result<()> {
        let Some(state) = ck.shards.get_mut(doc.shard) else {
            return Err(self.bad_shard(ck.sequence, doc.shard, "no such shard in the checkpoint"));
        };
        *state = doc.state;
        for v in doc.volumes {
            let index = v.index;
            if !insert_volume(&mut ck.volumes, v) {
                return Err(self.bad_shard(
                    ck.sequence,
                    doc.shard,
                    &format!("volume {index} is in two shards' documents"),
                ));
            }
        }
        ck.totals = plus(&ck.totals, &doc.totals);
        ck.vanished.extend(doc.vanished);
        ck.corrected.extend(doc.corrected);
        ck.skipped.extend(doc.skipped);
        ck.shipped |= doc.last;
        Ok(())
    }

    fn bad_shard(&self, seq: u64, shard: usize, what: &str) -> Error {
        Error::Corrupt {
            what: "shard progress",
            location: self.layout.uri(&self.layout.shard_doc_key(seq, shard)),
            hint: "run the export with --full to start a new baseline bundle",
            source: what.to_string().into(),
        }
    }

    /// Open the bundle this run works on: resume its checkpoint (taking it over), or list,
    /// diff and plan a new one (a plan with no changes is committed at once). The plan's puts
    /// are cut into shards here.
    async fn open_bundle(&self) -> Result<Opened> {
        self.publish_committed().await?;
        let seq = self.state.sequence + 1;
        // We hold the lease: uploads still open under our prefixes were left by a killed run.
        self.sweep_uploads(seq).await?;
        let ck_key = self.layout.checkpoint_key(seq);
        let found = self
            .store()
            .get_document_tagged(&self.cfg.dest.bucket, &ck_key)
            .await?;
        let _ = self.fence.set(Arc::new(crate::s3::Fence::new(
            self.store(),
            &self.cfg.dest.bucket,
            &ck_key,
            found.as_ref().map(|(_, etag)| etag.clone()),
        )));
        let resumed = match found {
            Some((body, _)) if !self.cfg.full => {
                Some(self.parse_json::<Checkpoint>(&body, &ck_key, "checkpoint")?)
            }
            _ => None,
        };
        let (mut ck, plan, fresh) = match resumed {
            Some(mut ck) => {
                if let Some(pin) = &ck.pin {
                    crate::pin::refuse(
                        &self.layout.job,
                        pin.place_differences(&Pin::of(self.cfg)),
                    )?;
                }
                let plan = self.stored_plan(&ck).await?;
                if ck.sealed != self.layout.sealed {
                    return Err(Error::config(
                        "encryption",
                        format!(
                            "bundle {seq} of job `{}` was started {} age encryption and must be finished the same way: {}",
                            self.layout.job,
                            if ck.sealed { "with" } else { "without" },
                            if ck.sealed {
                                "pass the same --encrypt-to (AGE_RECIPIENTS) again"
                            } else {
                                "run without --encrypt-to to finish it, or start over with --full"
                            }
                        ),
                    ));
                }
                ck.hops += 1;
                // Take the bundle over: from this write on, the run that wrote it before
                // (killed, or stalled past its lease) cannot write the checkpoint, and its
                // shard workers stop at their next step.
                ck.writer = self.owner.to_string();
                self.save_checkpoint(&ck).await?;
                info!(job = %self.layout.job, sequence = seq, shards = ck.shards.len(), volumes = ck.volumes.len(), "resuming bundle");
                self.progress.planned(&plan.plan.stats);
                self.progress.resumed(ck.totals.objects, ck.totals.bytes);
                (ck, plan, false)
            }
            None => {
                crate::pin::check(
                    self.cfg,
                    self.state.pin.as_ref(),
                    self.state.inventory.as_deref(),
                )?;
                match self.plan_bundle(seq).await? {
                    Planned::Bundle(ck, plan) => (*ck, plan, true),
                    Planned::Empty { plan, listed_at } => {
                        return Ok(Opened::Finished(Box::new(
                            self.no_changes(&plan, listed_at).await?,
                        )));
                    }
                }
            }
        };
        if !ck.shipped {
            self.prepare_shards(&mut ck, &plan).await?;
        }
        Ok(Opened::Bundle {
            ck: Box::new(ck),
            plan,
            fresh,
        })
    }

    /// The stored plan a checkpoint refers to.
    async fn stored_plan(&self, ck: &Checkpoint) -> Result<StoredPlan> {
        let plan_key = ck
            .plan_key
            .clone()
            .unwrap_or_else(|| self.layout.legacy_plan_key(ck.sequence));
        self.get_json(&plan_key, "plan")
            .await?
            .ok_or_else(|| Error::Corrupt {
                what: "plan",
                location: self.layout.uri(&plan_key),
                hint: "it is missing; run the export with --full",
                source: "not found".into(),
            })
    }

    /// The bundle a later step works on: the checkpoint the plan step of this same run wrote
    /// (`Fenced` if another run has taken the bundle over since), and its plan.
    async fn reopen_bundle(&self, seq: u64) -> Result<(Checkpoint, StoredPlan)> {
        let ck_key = self.layout.checkpoint_key(seq);
        let Some((body, etag)) = self
            .store()
            .get_document_tagged(&self.cfg.dest.bucket, &ck_key)
            .await?
        else {
            return Err(Error::Corrupt {
                what: "checkpoint",
                location: self.layout.uri(&ck_key),
                hint: "the plan step writes it: start the export again",
                source: "not found".into(),
            });
        };
        let ck: Checkpoint = self.parse_json(&body, &ck_key, "checkpoint")?;
        if ck.writer != self.owner {
            self.lost.store(true, Ordering::SeqCst);
            return Err(Error::Fenced {
                bucket: self.cfg.dest.bucket.clone(),
                key: ck_key,
            });
        }
        // The checkpoint as read: a later step (a retried commit) confirms its claim by
        // writing these very bytes again under their ETag.
        let _ = self.fence.set(Arc::new(crate::s3::Fence::read(
            self.store(),
            &self.cfg.dest.bucket,
            &ck_key,
            etag,
            body,
        )));
        let plan = self.stored_plan(&ck).await?;
        Ok((ck, plan))
    }

    /// Shard `k`'s worker state: its document (a new one from the checkpoint's cut if the
    /// shard never started), taken over by `writer` unless the shard is done.
    async fn open_shard(&self, ck: &Checkpoint, k: usize, writer: &str) -> Result<ShardProgress> {
        let Some(cut) = ck.shards.get(k) else {
            return Err(self.bad_shard(ck.sequence, k, "no such shard in the checkpoint"));
        };
        let key = self.layout.shard_doc_key(ck.sequence, k);
        let found = self
            .store()
            .get_document_tagged(&self.cfg.dest.bucket, &key)
            .await?;
        let (doc, etag) = match found {
            Some((body, etag)) => {
                let doc: ShardDoc = self.parse_json(&body, &key, "shard progress")?;
                if doc.sequence != ck.sequence || doc.shard != k || doc.state.count != cut.count {
                    return Err(self.bad_shard(
                        ck.sequence,
                        k,
                        "it belongs to another bundle, shard or cut",
                    ));
                }
                (doc, Some(etag))
            }
            None => (
                ShardDoc {
                    format: FORMAT.to_string(),
                    sequence: ck.sequence,
                    shard: k,
                    writer: String::new(),
                    state: cut.clone(),
                    volumes: Vec::new(),
                    totals: Totals::default(),
                    vanished: Vec::new(),
                    last: false,
                    corrected: Vec::new(),
                    skipped: Vec::new(),
                    changing: Default::default(),
                },
                None,
            ),
        };
        let mut w = ShardProgress {
            fence: Arc::new(crate::s3::Fence::new(
                self.store(),
                &self.cfg.dest.bucket,
                &key,
                etag,
            )),
            key,
            doc,
        };
        if !w.doc.state.done {
            w.doc.writer = writer.to_string();
            self.save_shard(&w).await?;
        }
        Ok(w)
    }

    /// Write a shard's document under its fence: `Fenced` once another worker took it over.
    async fn save_shard(&self, w: &ShardProgress) -> Result<()> {
        let body = serde_json::to_vec_pretty(&w.doc).expect("serialisable");
        if w.fence.write(Bytes::from(body)).await? {
            return Ok(());
        }
        self.lost.store(true, Ordering::SeqCst);
        Err(Error::Fenced {
            bucket: self.cfg.dest.bucket.clone(),
            key: w.key.clone(),
        })
    }

    /// The next volume index of the bundle (the table's counter: shards anywhere share it).
    async fn claim_volume(&self, ck: &Checkpoint) -> Result<u32> {
        let _one_at_a_time = self.claims.lock().await;
        self.table
            .claim_volume(&self.layout.job, ck.sequence, ck.counter_base())
            .await
    }

    /// List, diff and write the new inventory, the plan and the first checkpoint.
    async fn plan_bundle(&self, seq: u64) -> Result<Planned> {
        let listed_at = rfc3339_ms(now_ms());
        let baseline = self.cfg.full || self.state.inventory.is_none();
        let previous = if baseline {
            None
        } else {
            self.state.inventory.as_deref()
        };
        let inventory_key = self.layout.inventory_key(seq, self.owner);
        let upload = self.store().multipart(
            &self.cfg.dest.bucket,
            &inventory_key,
            crate::config::MIN_PART_SIZE,
            2,
            &crate::manifest::ObjectHeaders {
                content_type: Some("application/x-ndjson".into()),
                ..Default::default()
            },
        );
        let mut inventory = InventoryWriter::new(upload);
        let candidates_key = self.layout.candidates_key(seq, self.owner);
        let mut candidates = InventoryWriter::new(self.store().multipart(
            &self.cfg.dest.bucket,
            &candidates_key,
            crate::config::MIN_PART_SIZE,
            2,
            &jsonl_headers(),
        ));
        // Small changed objects are fetched while the listing still runs (shipping needs the
        // whole plan: renames pair an added key with a deleted one seen later).
        // Only where this process ships the bundle too: a state machine's plan step hands the
        // shipping to other invocations, which could never use what it fetched.
        let warmer = self.warm_up.then(|| {
            Warmer::start(
                self.store().clone(),
                self.cfg.source.bucket.clone(),
                self.cfg.tuning.concurrency,
                self.warm.clone(),
            )
        });
        let planned = make_plan(
            self.store(),
            self.cfg,
            previous,
            Some(&mut inventory),
            &mut candidates,
            &mut |rec| {
                if let Some(w) = &warmer {
                    w.offer(rec);
                }
            },
        )
        .await;
        if let Some(w) = warmer {
            w.stop().await;
        }
        let listed = planned?;
        let stream_err = |key: &str, e: std::io::Error| Error::Stream {
            bucket: self.cfg.dest.bucket.clone(),
            key: key.to_string(),
            source: Box::new(e),
        };
        let records = inventory.count;
        let index = inventory.index();
        let upload = inventory
            .finish()
            .await
            .map_err(|e| stream_err(&inventory_key, e))?;
        let candidates = candidates
            .finish()
            .await
            .map_err(|e| stream_err(&candidates_key, e))?;
        if listed.stats.added == 0
            && listed.stats.modified == 0
            && listed.deleted.is_empty()
            && !baseline
        {
            drop(upload); // aborts: the inventory is unchanged
            drop(candidates);
            let plan = listed.into_plan();
            self.progress.planned(&plan.stats);
            return Ok(Planned::Empty { plan, listed_at });
        }
        candidates.finish().await?;
        let (plan, puts_key) = if listed.needs_pairing(self.cfg.moves) {
            self.pair(seq, listed, &candidates_key).await?
        } else {
            (listed.into_plan(), candidates_key)
        };
        self.progress.planned(&plan.stats);
        info!(job = %self.layout.job, listed = plan.stats.listed, added = plan.stats.added, modified = plan.stats.modified,
              deleted = plan.stats.deleted, moved = plan.stats.moved, skipped = plan.stats.skipped,
              put_bytes = plan.stats.put_bytes, "planned");
        upload.finish().await?;
        info!(key = %inventory_key, records, "inventory written");
        // Its index (every 1,000th key), for the next run to cut its listing into ranges.
        self.store()
            .put_document(
                &self.cfg.dest.bucket,
                &InventoryIndex::key_for(&inventory_key),
                serde_json::to_vec(&index).expect("index serialises").into(),
                "application/json",
            )
            .await?;
        let stored = StoredPlan {
            puts: Puts::Stored {
                key: puts_key,
                count: plan.put_count(),
            },
            plan,
        };
        let plan_key = self.layout.plan_key(seq, self.owner);
        self.put_json(&plan_key, &stored).await?;
        let plan = &stored.plan;
        let ck = Checkpoint {
            format: FORMAT.to_string(),
            sequence: seq,
            baseline,
            // A baseline links to the bundle before it too: the far side sees one chain.
            previous: self.state.bundle_digest.as_ref().map(|d| ChainLink {
                sequence: self.state.sequence,
                bundle_digest: d.clone(),
            }),
            listed_at,
            inventory_key,
            cursor: 0,
            cursor_bytes: 0,
            volumes: Vec::new(),
            totals: Totals {
                deleted: plan.stats.deleted,
                moved: plan.stats.moved,
                skipped: plan.stats.skipped,
                ..Totals::default()
            },
            vanished: Vec::new(),
            shipped: false,
            sealed: self.layout.sealed,
            hops: 1,
            writer: self.owner.to_string(),
            plan_key: Some(plan_key),
            shards: Vec::new(),
            next_volume: 1,
            merged: false,
            corrected: Vec::new(),
            inventory_settled: false,
            pin: Some(Pin::of(self.cfg)),
            shards_asked: Some(self.cfg.tuning.shards),
            skipped: Vec::new(),
        };
        self.save_checkpoint(&ck).await?;
        Ok(Planned::Bundle(Box::new(ck), stored))
    }

    /// Read the candidates back, pair renames and write the puts left as the plan's puts file
    /// (the candidates file is removed after).
    async fn pair(&self, seq: u64, listed: Listed, candidates_key: &str) -> Result<(Plan, String)> {
        let bucket = &self.cfg.dest.bucket;
        let reader = self
            .store()
            .reader(bucket, candidates_key)
            .await?
            .ok_or_else(|| Error::Corrupt {
                what: "plan candidates",
                location: self.layout.uri(candidates_key),
                hint: "it was just written and is gone: run the export again",
                source: "not found".into(),
            })?;
        let puts_key = self.layout.puts_key(seq, self.owner);
        let mut puts = InventoryWriter::new(self.store().multipart(
            bucket,
            &puts_key,
            crate::config::MIN_PART_SIZE,
            2,
            &jsonl_headers(),
        ));
        let plan = crate::plan::pair_renames(
            &mut InventoryReader::new(reader, self.layout.uri(candidates_key)),
            listed,
            self.cfg.moves,
            &mut puts,
            &mut VolumeEstimate::new(u64::MAX, u64::MAX),
        )
        .await?;
        puts.finish()
            .await
            .map_err(|e| Error::Stream {
                bucket: bucket.clone(),
                key: puts_key.clone(),
                source: Box::new(e),
            })?
            .finish()
            .await?;
        if let Err(e) = self.store().delete(bucket, candidates_key).await {
            warn!(key = candidates_key, error = %e, "the plan's candidates file could not be removed");
        }
        Ok((plan, puts_key))
    }

    async fn no_changes(&self, plan: &Plan, listed_at: String) -> Result<Report> {
        let report = Report {
            job: self.layout.job.clone(),
            status: Status::NoChanges,
            complete: true,
            sequence: self.state.sequence,
            baseline: false,
            volumes: Vec::new(),
            volume_details: Vec::new(),
            bundle: None,
            bundle_digest: self.state.bundle_digest.clone(),
            objects: 0,
            bytes: 0,
            deleted: 0,
            moved: 0,
            vanished: 0,
            replaced: 0,
            skipped: plan.stats.skipped,
            listed: plan.stats.listed,
            unchanged: plan.stats.unchanged,
            own_output: plan.stats.own_output,
            list_ranges: plan.stats.list_ranges,
            shards: 0,
            own_output_prefixes: own_output_uris(self.cfg),
            skipped_objects: plan.skipped.clone(),
            hops: 1,
            duration_ms: self.started.elapsed().as_millis() as u64,
            bytes_per_sec: 0,
            read_resumes: self.store().activity().read_resumes(),
            ignored: Vec::new(),
        };
        let report_key = format!(
            "{}no-changes-report.json",
            self.layout.state_prefix(self.state.sequence)
        );
        self.commit_run(None, listed_at, Pin::of(self.cfg), &report, &report_key)
            .await?;
        Ok(report)
    }

    /// Abort every multipart upload still open under the bundle's and the state's folders of
    /// sequence `seq`. At the start of a run they were left by a killed run; before the commit
    /// (every upload of this run is finished by then) they are uploads whose creation was
    /// applied but whose answer was lost, so the SDK's retry opened another.
    async fn sweep_uploads(&self, seq: u64) -> Result<()> {
        let bucket = &self.cfg.dest.bucket;
        for prefix in [
            self.layout.bundle_prefix(seq),
            self.layout.state_prefix(seq),
        ] {
            self.store().abort_uploads(bucket, &prefix).await?;
        }
        Ok(())
    }

    /// Write the run's full report beside its state (`report_key`), then commit the state with a
    /// bounded summary of it (counters and a pointer): the DynamoDB item stays small whatever the
    /// bucket holds (thousands of archived objects, thousands of volumes).
    async fn commit_run(
        &self,
        bundle: Option<CommittedBundle>,
        watermark: String,
        pin: Pin,
        report: &Report,
        report_key: &str,
    ) -> Result<()> {
        self.check_lease()?;
        self.sweep_uploads(self.state.sequence + 1).await?;
        self.put_json(report_key, report).await?;
        self.check_lease()?;
        self.table
            .commit(
                &self.layout.job,
                self.owner,
                self.state.version,
                &Commit {
                    bundle,
                    watermark,
                    last_run: run_summary(report, &self.layout.uri(report_key)),
                    pin: Some(pin),
                },
            )
            .await
    }

    fn report(&self, ck: &Checkpoint, plan: &Plan, status: Status) -> Report {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        Report {
            job: self.layout.job.clone(),
            status,
            complete: status != Status::Continue,
            sequence: ck.sequence,
            baseline: ck.baseline,
            volumes: ck
                .volumes
                .iter()
                .map(|v| {
                    self.layout.uri(&format!(
                        "{}{}",
                        self.layout.bundle_prefix(ck.sequence),
                        v.name
                    ))
                })
                .collect(),
            volume_details: ck.volumes.clone(),
            bundle: Some(self.layout.uri(&self.layout.bundle_prefix(ck.sequence))),
            bundle_digest: (status == Status::Complete).then(|| bundle_digest(&ck.volumes)),
            objects: ck.totals.objects,
            bytes: ck.totals.bytes,
            deleted: ck.totals.deleted,
            moved: ck.totals.moved,
            skipped: ck.totals.skipped,
            vanished: ck.totals.vanished,
            replaced: ck.totals.replaced,
            listed: plan.stats.listed,
            unchanged: plan.stats.unchanged,
            own_output: plan.stats.own_output,
            list_ranges: plan.stats.list_ranges,
            shards: ck.shards.len() as u64,
            own_output_prefixes: own_output_uris(self.cfg),
            skipped_objects: plan.skipped.iter().chain(&ck.skipped).cloned().collect(),
            hops: ck.hops,
            duration_ms,
            bytes_per_sec: ck.totals.bytes * 1000 / duration_ms.max(1),
            read_resumes: self.store().activity().read_resumes(),
            ignored: ignored_settings(ck, self.cfg),
        }
    }

    fn manifest(&self, ck: &Checkpoint, volume: u32, objects: Vec<ObjectEntry>) -> Manifest {
        Manifest {
            format: FORMAT.to_string(),
            job: self.layout.job.clone(),
            source: SourceInfo {
                bucket: self.cfg.source.bucket.clone(),
                prefix: self.cfg.source.prefix.clone(),
            },
            sequence: ck.sequence,
            previous: ck.previous.clone(),
            baseline: ck.baseline,
            volume,
            listed_at: ck.listed_at.clone(),
            objects,
            last: None,
        }
    }

    /// Start volume `index`. `first` is the size of its first object and
    /// `remaining` the bytes still to ship: they size the parts so that even a lone huge
    /// object stays within S3's 10,000 parts.
    fn open_volume(
        &self,
        ck: &Checkpoint,
        index: u32,
        first: u64,
        remaining: u64,
        fence: Arc<crate::s3::Fence>,
    ) -> Result<OpenVolume> {
        let name = self.layout.volume_name(ck.sequence, index);
        let key = format!("{}{}", self.layout.bundle_prefix(ck.sequence), name);
        let expected = first.max(remaining.min(self.cfg.tuning.volume_size));
        let part_size = self
            .cfg
            .tuning
            .part_size
            .max(expected / 9_000 + 1)
            .min(crate::config::MAX_PART_SIZE);
        // Create-only, under the fence: a run that lost its lease cannot replace this run's
        // volume, nor this run a volume while another holds the bundle.
        let upload = self.store().multipart_fenced(
            &self.cfg.dest.bucket,
            &key,
            part_size,
            PARTS_IN_FLIGHT,
            &volume_headers(self.owner),
            Some(fence),
        );
        Ok(OpenVolume {
            writer: VolumeWriter::new(
                upload,
                name,
                self.cfg.tuning.compression,
                self.cfg.encrypt_to.as_ref(),
            )?,
            index,
            key,
            objects: ManifestJson::start(&self.manifest(ck, index, Vec::new())),
            bytes: 0,
            metadata: 0,
            entries_bound: 0,
            central_bound: 0,
        })
    }

    /// Finish `v` with its manifest (the final one when `last` is given).
    async fn finish_volume(&self, v: OpenVolume, last: Option<Final>) -> Result<VolumeInfo> {
        let objects = v.objects.count();
        let json = v.objects.finish(last.as_ref());
        let name = v.writer.name().to_string();
        let written = v.writer.finish_json(&json).await?;
        drop(json);
        info!(key = %v.key, size = written.size, sha256 = %written.sha256, objects, "volume complete");
        Ok(VolumeInfo {
            index: v.index,
            name,
            size: written.size,
            sha256: written.sha256,
            objects,
            bytes: v.bytes,
        })
    }

    /// Close a shard's volume: it joins the shard's document with the shard's cursor and
    /// counts (`done`), saved under the shard's fence.
    async fn close_shard_volume(
        &self,
        w: &mut ShardProgress,
        v: OpenVolume,
        done: ShardDone,
        last: Option<Final>,
    ) -> Result<()> {
        let shipped = last.is_some();
        let info = self.finish_volume(v, last).await?;
        let index = info.index;
        if !insert_volume(&mut w.doc.volumes, info) {
            return Err(self.bad_shard(
                w.doc.sequence,
                w.doc.shard,
                &format!("volume {index} completed twice"),
            ));
        }
        done.record(&mut w.doc);
        w.doc.last = shipped;
        self.check_lease()?;
        self.save_shard(w).await
    }

    /// Close a volume the commit step writes (an empty one, or the last) into the checkpoint.
    async fn close_bundle_volume(
        &self,
        ck: &mut Checkpoint,
        v: OpenVolume,
        last: Option<Final>,
    ) -> Result<()> {
        let shipped = last.is_some();
        let info = self.finish_volume(v, last).await?;
        let index = info.index;
        if !insert_volume(&mut ck.volumes, info) {
            return Err(Error::Corrupt {
                what: "checkpoint",
                location: self.layout.uri(&self.layout.checkpoint_key(ck.sequence)),
                hint: "run the export with --full",
                source: format!("volume {index} completed twice").into(),
            });
        }
        ck.shipped = shipped;
        self.check_lease()?;
        self.save_checkpoint(ck).await
    }

    /// The final manifest after `volumes`, with the bundle's `totals` and `vanished` keys.
    async fn final_part(
        &self,
        volumes: &[VolumeInfo],
        totals: Totals,
        vanished: Vec<String>,
        skipped: Vec<crate::manifest::Skipped>,
        plan: &Plan,
    ) -> Result<Final> {
        // A rename may come with new headers: read them from each move's target.
        let store = self.store();
        let bucket = &self.cfg.source.bucket;
        let moved: Vec<Move> = futures::stream::iter(plan.moves.iter().cloned())
            .map(|mut m| async move {
                if let Some(meta) = store.stat(bucket, &m.to).await?
                    && meta.etag == m.etag
                {
                    m.headers = Some(meta.headers);
                }
                Ok::<_, Error>(m)
            })
            .buffered(self.cfg.tuning.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        Ok(Final {
            volume_count: volumes.len() as u32 + 1,
            earlier_volumes: volumes.to_vec(),
            deleted: plan.deletes.clone(),
            moved,
            skipped: plan.skipped.iter().cloned().chain(skipped).collect(),
            vanished,
            totals,
        })
    }

    /// Cut the puts into key-range shards when the bundle first ships (one shard: the plan's
    /// own puts file). A checkpoint written before shards existed is one shard at its cursor.
    async fn prepare_shards(&self, ck: &mut Checkpoint, stored: &StoredPlan) -> Result<()> {
        if !ck.shards.is_empty() {
            return Ok(());
        }
        let count = match &stored.puts {
            Puts::Stored { count, .. } => *count,
            Puts::Inline(v) => v.len() as u64,
        };
        let fresh = ck.cursor == 0 && ck.volumes.is_empty();
        if fresh {
            self.discard_earlier_attempt(ck.sequence).await?;
        }
        let n = (self.cfg.tuning.shards as u64).min(count).max(1);
        ck.shards = match (&stored.puts, n) {
            (Puts::Stored { key, .. }, 2..) if fresh => {
                self.split_puts(ck.sequence, key, count, stored.plan.stats.put_bytes, n)
                    .await?
            }
            _ => vec![ShardState {
                puts_key: None,
                count,
                bytes: stored.plan.stats.put_bytes,
                cursor: ck.cursor as u64,
                cursor_bytes: ck.cursor_bytes,
                done: false,
            }],
        };
        if ck.next_volume == 0 {
            ck.next_volume = ck.volumes.len() as u32 + 1;
        }
        info!(job = %self.layout.job, sequence = ck.sequence, shards = ck.shards.len(),
              counts = ?ck.shards.iter().map(|s| s.count).collect::<Vec<_>>(), "shards planned");
        self.save_checkpoint(ck).await
    }

    /// Before a freshly planned bundle is cut into shards: forget what an earlier attempt at
    /// this sequence left (a bundle given up by `--full`): its shards' progress documents and
    /// its volume counter. Otherwise the new bundle would resume the old shards' cursors or
    /// start its volumes after the old ones' indices (empty volumes in their place). Nothing of
    /// this checkpoint has shipped yet, so nothing of it is lost.
    async fn discard_earlier_attempt(&self, seq: u64) -> Result<()> {
        let docs: Vec<String> = (0..64)
            .map(|k| self.layout.shard_doc_key(seq, k))
            .chain([self.layout.shard_list_key(seq)])
            .collect();
        self.check_lease()?;
        self.store()
            .delete_batch(&self.cfg.dest.bucket, &docs)
            .await?;
        self.table.reset_volumes(&self.layout.job, seq).await
    }

    /// Cut the puts file (in key order) into `n` contiguous shards of about equal weight, a
    /// put weighing its bytes plus [`OBJECT_WEIGHT`] (a GET's fixed cost), each written to its
    /// own puts file; every shard gets at least one put.
    async fn split_puts(
        &self,
        seq: u64,
        key: &str,
        count: u64,
        bytes: u64,
        n: u64,
    ) -> Result<Vec<ShardState>> {
        let bucket = &self.cfg.dest.bucket;
        let location = self.layout.uri(key);
        let mut reader = self.puts_reader(key).await?;
        let weight = |size: u64| u128::from(size) + u128::from(OBJECT_WEIGHT);
        let total = u128::from(bytes) + u128::from(count) * u128::from(OBJECT_WEIGHT);
        let mut shards = Vec::new();
        let (mut seen, mut so_far) = (0u64, 0u128);
        while (shards.len() as u64) < n {
            let k = shards.len() as u64;
            let shard_key = self.layout.shard_puts_key(seq, self.owner, k as u32);
            let mut w = InventoryWriter::new(self.store().multipart(
                bucket,
                &shard_key,
                crate::config::MIN_PART_SIZE,
                2,
                &jsonl_headers(),
            ));
            let target = total * u128::from(k + 1) / u128::from(n);
            let (mut c, mut b) = (0u64, 0u64);
            // Leave at least one put for each shard after this one.
            let keep_back = n - k - 1;
            while seen < count - keep_back {
                if c > 0 && so_far >= target && k + 1 < n {
                    break;
                }
                let rec = reader.next().await?.ok_or_else(|| Error::Corrupt {
                    what: "plan",
                    location: location.clone(),
                    hint: "its puts file ends before the count the plan gives: run the export with --full",
                    source: format!("{seen} of {count} puts read").into(),
                })?;
                w.push(&rec).await.map_err(|e| Error::Stream {
                    bucket: bucket.clone(),
                    key: shard_key.clone(),
                    source: Box::new(e),
                })?;
                so_far += weight(rec.size);
                seen += 1;
                c += 1;
                b += rec.size;
            }
            w.finish()
                .await
                .map_err(|e| Error::Stream {
                    bucket: bucket.clone(),
                    key: shard_key.clone(),
                    source: Box::new(e),
                })?
                .finish()
                .await?;
            shards.push(ShardState {
                puts_key: Some(shard_key),
                count: c,
                bytes: b,
                cursor: 0,
                cursor_bytes: 0,
                done: false,
            });
        }
        Ok(shards)
    }

    /// Give every volume index handed out but never completed (a worker stopped with that
    /// volume open) an empty volume, then write the last volume: no objects, the final
    /// manifest. The far side then finds volumes 1..=n, the last one carrying `final`, whatever
    /// the number of shards.
    async fn seal(&self, ck: &mut Checkpoint, plan: &Plan) -> Result<()> {
        let fence = self
            .fence
            .get()
            .cloned()
            .expect("the fence is set when the bundle is opened");
        // Deletes follow: only while this run's claim on the bundle still holds (a run that
        // wakes after another committed must not touch the committed bundle's volumes).
        self.confirm_fence(ck.sequence).await?;
        let top = self.claim_volume(ck).await?;
        let have: std::collections::HashSet<u32> = ck.volumes.iter().map(|v| v.index).collect();
        for i in (1..top).filter(|i| !have.contains(i)) {
            info!(job = %self.layout.job, volume = i, "an interrupted volume's index gets an empty volume");
            // A worker fenced off at the last moment may have completed it all the same: that
            // volume is in no shard's document, so it goes (volumes are written create-only).
            let key = format!(
                "{}{}",
                self.layout.bundle_prefix(ck.sequence),
                self.layout.volume_name(ck.sequence, i)
            );
            self.store().delete(&self.cfg.dest.bucket, &key).await?;
            let v = self.open_volume(ck, i, 0, 0, fence.clone())?;
            self.close_bundle_volume(ck, v, None).await?;
        }
        let last = self
            .final_part(
                &ck.volumes,
                ck.totals.clone(),
                ck.vanished.clone(),
                ck.skipped.clone(),
                plan,
            )
            .await?;
        let v = self.open_volume(ck, top, 0, 0, fence)?;
        self.close_bundle_volume(ck, v, Some(last)).await
    }

    /// Stream a shard's puts from its cursor into volumes, until it is done or the deadline.
    /// `only`: the bundle's one shard, whose last volume carries the final manifest.
    async fn ship_shard(
        &self,
        ck: &Checkpoint,
        w: &mut ShardProgress,
        stored: &StoredPlan,
        only: bool,
    ) -> Result<Shipped> {
        let tuning = &self.cfg.tuning;
        let plan = &stored.plan;
        let (state, seq, shard) = (w.doc.state.clone(), ck.sequence, w.doc.shard);
        if state.done {
            return Ok(Shipped::Done);
        }
        let too_many = || Error::Corrupt {
            what: "plan",
            location: self.layout.uri(&w.key),
            hint: "run the export with --full",
            source: "more puts than this machine can count".into(),
        };
        let total = usize::try_from(state.count).map_err(|_| too_many())?;
        let skip = usize::try_from(state.cursor).map_err(|_| too_many())?;
        let own;
        let puts = match &state.puts_key {
            Some(key) => {
                own = Puts::Stored {
                    key: key.clone(),
                    count: state.count,
                };
                &own
            }
            None => &stored.puts,
        };
        let mut remaining = state.bytes.saturating_sub(state.cursor_bytes);
        let mut fetched = spawn_fetcher(
            self.store().clone(),
            self.cfg.source.bucket.clone(),
            self.puts_from(puts, skip).await?,
            tuning.concurrency,
            self.warm.clone(),
        );
        let mut volume: Option<OpenVolume> = None;
        let mut progressed = false;
        let mut done = ShardDone {
            shard,
            cursor: state.cursor,
            cursor_bytes: state.cursor_bytes,
            totals: Totals::default(),
            vanished: Vec::new(),
            corrected: Vec::new(),
            skipped: Vec::new(),
        };
        let mut i = skip;
        while i < total {
            let stop = crate::interrupt::requested();
            if (progressed && self.past_deadline()) || stop.is_some() {
                info!(
                    shard,
                    cursor = i,
                    signal = stop.map(|s| s.name()),
                    "deadline reached or stop requested: closing the volume and checkpointing"
                );
                match volume.take() {
                    Some(v) => self.close_shard_volume(w, v, done, None).await?,
                    None => {
                        done.record(&mut w.doc);
                        self.save_shard(w).await?;
                    }
                }
                return Ok(Shipped::Deadline);
            }
            self.check_lease()?;
            let item = fetched.recv().await.ok_or_else(|| Error::Corrupt {
                what: "plan",
                location: self.layout.uri(&self.layout.checkpoint_key(seq)),
                hint: "its puts file ends before the count the plan gives: run the export with --full",
                source: format!("{i} of {total} puts read (shard {shard})").into(),
            })?;
            let item = match item {
                Err(e) => return Err(self.changed_while_read(w, e).await),
                Ok(item) => item,
            };
            let (Fetched::Gone { rec } | Fetched::Found { rec, .. } | Fetched::Archived { rec }) =
                &item;
            let tries = w.doc.changing.get(&rec.key).copied().unwrap_or(0);
            if tries >= CHANGED_TRIES {
                warn!(key = %rec.key, tries, "object keeps changing while it is read: skipped, it ships in a later run");
                done.withhold(rec, format!("changed while it was being read, {tries} times: it ships in a later run once it holds still"));
                remaining = remaining.saturating_sub(rec.size);
                i += 1;
                done.advance(i, rec.size);
                progressed = true;
                continue;
            }
            let planned = match &item {
                Fetched::Gone { rec } | Fetched::Found { rec, .. } | Fetched::Archived { rec } => {
                    rec.size
                }
            };
            remaining = remaining.saturating_sub(planned);
            let (rec, meta, body, planned_etag) = match item {
                Fetched::Gone { rec } => {
                    info!(key = %rec.key, "object vanished before it was read: recorded as deleted");
                    done.vanished.push(rec.key);
                    done.totals.vanished += 1;
                    i += 1;
                    done.advance(i, planned);
                    progressed = true;
                    continue;
                }
                Fetched::Archived { rec } => {
                    warn!(key = %rec.key, class = %rec.storage_class, "object is archived (InvalidObjectState): skipped, it ships once it can be read");
                    done.withhold(&rec, "in an archive tier (InvalidObjectState on GET): restore it or move it out of the archive tier and it ships in the next run".into());
                    i += 1;
                    done.advance(i, planned);
                    progressed = true;
                    continue;
                }
                Fetched::Found {
                    rec,
                    meta,
                    body,
                    planned_etag,
                } => (rec, meta, body, planned_etag),
            };
            let metadata = metadata_cost(&self.cfg.source.bucket, &rec.key, &meta.headers);
            let entry = entry_name(&self.cfg.source.bucket, &rec.key);
            let (local, central, line) = (
                crate::archive::local_cost(&entry, meta.size, tuning.compression),
                crate::archive::central_cost(&entry),
                manifest_line_bound(&rec, &entry, &meta),
            );
            if let Some(v) = volume.as_mut()
                && v.writer.entries() > 0
                && (v.bound(local + central + line, 0, self.recipients()) > tuning.volume_size
                    || v.writer.entries() + 1 > tuning.volume_entries
                    || v.metadata + metadata > limits::WRITER_METADATA_BUDGET)
            {
                let v = volume.take().expect("open volume");
                self.close_shard_volume(w, v, done.take(), None).await?;
            }
            let v = match volume.as_mut() {
                Some(v) => v,
                None => {
                    let index = self.claim_volume(ck).await?;
                    volume.insert(self.open_volume(
                        ck,
                        index,
                        meta.size,
                        remaining + meta.size,
                        w.fence.clone(),
                    )?)
                }
            };
            v.entries_bound += local;
            v.central_bound += central;
            let digest = match body {
                Body::Whole(data, _permit) => {
                    v.writer
                        .add_whole(&entry, meta.last_modified_ms, &data)
                        .await?
                }
                Body::Ranged(first, _permit) => {
                    match self.stream_large(v, &entry, &rec.key, &meta, first).await {
                        Ok(d) => d,
                        Err(e) => return Err(self.changed_while_read(w, e).await),
                    }
                }
            };
            if planned_etag.is_some() {
                done.totals.replaced += 1;
            }
            if meta.etag != rec.etag
                || digest.size != rec.size
                || meta.last_modified_ms != rec.last_modified_ms
            {
                // The inventory records the version shipped, not the one listed.
                done.corrected.push(ObjectRecord {
                    key: rec.key.clone(),
                    size: digest.size,
                    etag: meta.etag.clone(),
                    last_modified_ms: meta.last_modified_ms,
                    storage_class: rec.storage_class.clone(),
                });
            }
            done.totals.objects += 1;
            done.totals.bytes += digest.size;
            v.bytes += digest.size;
            v.metadata += metadata;
            self.progress.object(digest.size);
            v.objects.push(&ObjectEntry {
                key: rec.key,
                entry,
                size: digest.size,
                etag: meta.etag,
                last_modified: rfc3339_ms(meta.last_modified_ms),
                sha256: digest.sha256,
                crc32: digest.crc32,
                storage_class: rec.storage_class,
                headers: meta.headers,
                planned_etag,
            });
            i += 1;
            done.advance(i, planned);
            progressed = true;
        }
        if only {
            let mut v = match volume.take() {
                Some(v) => v,
                None => {
                    let index = self.claim_volume(ck).await?;
                    self.open_volume(ck, index, 0, 0, w.fence.clone())?
                }
            };
            loop {
                let mut earlier = ck.volumes.clone();
                for e in &w.doc.volumes {
                    insert_volume(&mut earlier, e.clone());
                }
                if v.index as usize != earlier.len() + 1 {
                    // An index claimed by an interrupted worker lies before this one: the
                    // commit gives it an empty volume and writes the last volume itself.
                    self.close_shard_volume(w, v, done, None).await?;
                    break;
                }
                let totals = done.add_to(&plus(&ck.totals, &w.doc.totals));
                let vanished = ck
                    .vanished
                    .iter()
                    .chain(&w.doc.vanished)
                    .chain(&done.vanished)
                    .cloned()
                    .collect();
                let skipped = ck
                    .skipped
                    .iter()
                    .chain(&w.doc.skipped)
                    .chain(&done.skipped)
                    .cloned()
                    .collect();
                let last = self
                    .final_part(&earlier, totals, vanished, skipped, plan)
                    .await?;
                let final_json = serde_json::to_vec(&last).map_or(0, |j| j.len() as u64) + 16;
                if v.writer.entries() > 0
                    && v.bound(0, final_json, self.recipients()) > tuning.volume_size
                {
                    // The final manifest does not fit beside this volume's objects: it gets a
                    // volume of its own.
                    self.close_shard_volume(w, v, done.take(), None).await?;
                    let index = self.claim_volume(ck).await?;
                    v = self.open_volume(ck, index, 0, 0, w.fence.clone())?;
                    continue;
                }
                if v.bound(0, final_json, self.recipients()) > tuning.volume_size {
                    warn!(job = %self.layout.job, volume = v.index, final_bytes = final_json,
                          cap = tuning.volume_size, "the final manifest alone is larger than --volume-size: its volume exceeds the cap");
                }
                self.close_shard_volume(w, v, done, Some(last)).await?;
                break;
            }
        } else if let Some(v) = volume.take() {
            self.close_shard_volume(w, v, done, None).await?;
        } else {
            done.record(&mut w.doc);
            self.save_shard(w).await?;
        }
        Ok(Shipped::Done)
    }

    /// `e`, after counting an object that changed while it was read against its shard (saved
    /// in the shard's document, as of its last checkpoint): the next attempt skips it once it
    /// has failed [`CHANGED_TRIES`] of them.
    async fn changed_while_read(&self, w: &mut ShardProgress, e: Error) -> Error {
        let Error::ObjectChanged { key, .. } = &e else {
            return e;
        };
        *w.doc.changing.entry(key.clone()).or_default() += 1;
        if let Err(save) = self.save_shard(w).await {
            warn!(key = %key, error = %save, "could not count the object that changed while it was read");
        }
        e
    }

    /// A puts file of the plan (or of a shard), read in order.
    async fn puts_reader(
        &self,
        key: &str,
    ) -> Result<InventoryReader<impl tokio::io::AsyncBufRead + Unpin + Send + 'static>> {
        let location = self.layout.uri(key);
        let reader = self
            .store()
            .reader(&self.cfg.dest.bucket, key)
            .await?
            .ok_or_else(|| Error::Corrupt {
                what: "plan",
                location: location.clone(),
                hint: "its puts file is missing: run the export with --full",
                source: "not found".into(),
            })?;
        Ok(InventoryReader::new(reader, location))
    }

    /// The plan's puts from index `skip` on, read in order by a task (a stored plan streams
    /// from its file: memory holds a channel's worth).
    async fn puts_from(
        &self,
        puts: &Puts,
        skip: usize,
    ) -> Result<mpsc::Receiver<Result<ObjectRecord>>> {
        let (tx, rx) = mpsc::channel(1024);
        match puts {
            Puts::Inline(v) => {
                let v = v.get(skip..).unwrap_or_default().to_vec();
                tokio::spawn(async move {
                    for rec in v {
                        if tx.send(Ok(rec)).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Puts::Stored { key, .. } => {
                let mut reader = self.puts_reader(key).await?;
                tokio::spawn(async move {
                    let mut index = 0usize;
                    loop {
                        match reader.next().await {
                            Ok(None) => return,
                            Ok(Some(rec)) => {
                                if index >= skip && tx.send(Ok(rec)).await.is_err() {
                                    return;
                                }
                                index += 1;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                });
            }
        }
        Ok(rx)
    }

    async fn stream_large(
        &self,
        v: &mut OpenVolume,
        entry: &str,
        key: &str,
        meta: &ObjectMeta,
        first: Bytes,
    ) -> Result<crate::archive::EntryDigest> {
        let bucket = &self.cfg.source.bucket;
        let mut w = v.writer.begin_stream(entry, meta.last_modified_ms).await?;
        w.write(&first).await?;
        let ranges = (first.len() as u64..meta.size)
            .step_by(CHUNK as usize)
            .map(|start| (start, (start + CHUNK).min(meta.size) - 1));
        let mut chunks = futures::stream::iter(ranges)
            .map(|range| {
                let (store, bucket, key, etag) = (
                    self.store().clone(),
                    bucket.clone(),
                    key.to_string(),
                    meta.etag.clone(),
                );
                tokio::spawn(
                    async move { store.get(&bucket, &key, Some(&etag), Some(range)).await },
                )
            })
            .buffered(CHUNKS_IN_FLIGHT);
        while let Some(got) = chunks.next().await {
            let got = got.map_err(|e| Error::Stream {
                bucket: bucket.clone(),
                key: key.to_string(),
                source: Box::new(e),
            })??;
            match got {
                Got::Found { body, .. } => w.write(&body).await?,
                Got::Changed | Got::Gone => {
                    return Err(Error::ObjectChanged {
                        bucket: bucket.clone(),
                        key: key.to_string(),
                    });
                }
            }
        }
        let digest = w.close().await?;
        if digest.size != meta.size {
            return Err(Error::ObjectChanged {
                bucket: bucket.clone(),
                key: key.to_string(),
            });
        }
        Ok(digest)
    }

    /// Write SHA256SUMS and bundle.json, remove stray volumes of a killed run, commit.
    async fn finalize(&self, ck: &Checkpoint, plan: &Plan) -> Result<Report> {
        let bucket = &self.cfg.dest.bucket;
        let prefix = self.layout.bundle_prefix(ck.sequence);
        let names: Vec<&str> = ck.volumes.iter().map(|v| v.name.as_str()).collect();
        // As in `seal`: no delete unless the claim on the bundle still holds.
        self.confirm_fence(ck.sequence).await?;
        for key in self.store().keys(bucket, &prefix).await? {
            let name = &key[prefix.len()..];
            if crate::seal::is_volume_name(name) && !names.contains(&name) {
                warn!(key, "removing a volume left by an interrupted run");
                self.store().delete(bucket, &key).await?;
            }
        }
        let digest = bundle_digest(&ck.volumes);
        let sums = sha256sums(&ck.volumes);
        let report = self.report(ck, plan, Status::Complete);
        let summary = BundleSummary {
            format: FORMAT.to_string(),
            job: self.layout.job.clone(),
            source: SourceInfo {
                bucket: self.cfg.source.bucket.clone(),
                prefix: self.cfg.source.prefix.clone(),
            },
            sequence: ck.sequence,
            previous: ck.previous.clone(),
            baseline: ck.baseline,
            listed_at: ck.listed_at.clone(),
            completed_at: rfc3339_ms(now_ms()),
            bundle_digest: digest.clone(),
            volumes: ck.volumes.clone(),
            totals: ck.totals.clone(),
        };
        self.confirm_fence(ck.sequence).await?;
        self.put_json(&format!("{prefix}bundle.json"), &summary)
            .await?;
        self.commit_run(
            Some(CommittedBundle {
                sequence: ck.sequence,
                inventory: ck.inventory_key.clone(),
                bundle_digest: digest,
            }),
            ck.listed_at.clone(),
            ck.pin.clone().unwrap_or_else(|| Pin::of(self.cfg)),
            &report,
            &format!("{}report.json", self.layout.state_prefix(ck.sequence)),
        )
        .await?;
        // The bundle's volume counter is of no further use.
        if let Err(e) = self
            .table
            .reset_volumes(&self.layout.job, ck.sequence)
            .await
        {
            warn!(job = %self.layout.job, sequence = ck.sequence, error = %e, "the committed bundle's volume counter could not be removed");
        }
        // Only a committed bundle is published: SHA256SUMS, the far side's "complete" marker,
        // is written after the commit. Should it fail now, the next run publishes it.
        if let Err(e) = self.publish(ck.sequence, &sums).await {
            warn!(job = %self.layout.job, sequence = ck.sequence, error = %crate::error_chain(&e),
                  "committed, but SHA256SUMS could not be written: the next run writes it (the far side waits for it)");
        }
        Ok(report)
    }

    /// Sign the committed bundle and write its `SHA256SUMS`, then drop its checkpoint. Only a
    /// run whose commit succeeded gets here: a run that lost its lease never writes either.
    async fn publish(&self, seq: u64, sums: &str) -> Result<()> {
        let bucket = &self.cfg.dest.bucket;
        if let Some(signer) = self.signer {
            // The signature goes before SHA256SUMS: SHA256SUMS marks the bundle complete.
            let sig = signer.sign(sums.as_bytes()).await?;
            info!(job = %self.layout.job, sequence = seq, key = %sig.key, "bundle signed");
            self.put_json(
                &format!(
                    "{}{}",
                    self.layout.bundle_prefix(seq),
                    crate::sign::SIGNATURE_FILE
                ),
                &sig,
            )
            .await?;
        }
        self.store()
            .put_document(
                bucket,
                &format!("{}SHA256SUMS", self.layout.bundle_prefix(seq)),
                sums.to_string().into(),
                "text/plain",
            )
            .await?;
        info!(job = %self.layout.job, sequence = seq, "bundle published (SHA256SUMS written)");
        if let Err(e) = self
            .store()
            .delete(bucket, &self.layout.checkpoint_key(seq))
            .await
        {
            warn!(error = %e, "the checkpoint could not be removed (it is ignored from now on)");
        }
        Ok(())
    }

    /// The last committed bundle without its `SHA256SUMS` (the run that committed it stopped
    /// before writing it): write it now, from the checkpoint or `bundle.json`, once its digest
    /// is the committed one.
    async fn publish_committed(&self) -> Result<()> {
        let seq = self.state.sequence;
        let Some(want) = self.state.bundle_digest.as_deref() else {
            return Ok(());
        };
        let prefix = self.layout.bundle_prefix(seq);
        let bucket = &self.cfg.dest.bucket;
        if self
            .store()
            .stat(bucket, &format!("{prefix}SHA256SUMS"))
            .await?
            .is_some()
        {
            return Ok(());
        }
        let volumes = match self
            .get_json::<Checkpoint>(&self.layout.checkpoint_key(seq), "checkpoint")
            .await?
        {
            Some(ck) => Some(ck.volumes),
            None => self
                .get_json::<BundleSummary>(&format!("{prefix}bundle.json"), "bundle summary")
                .await?
                .map(|b| b.volumes),
        };
        match volumes {
            Some(v) if bundle_digest(&v) == want => {
                warn!(job = %self.layout.job, sequence = seq, "bundle was committed but not published: writing its SHA256SUMS now");
                self.publish(seq, &sha256sums(&v)).await
            }
            _ => {
                warn!(job = %self.layout.job, sequence = seq, uri = %self.layout.uri(&prefix),
                      "the last committed bundle has no SHA256SUMS and nothing it can be rebuilt from: it cannot be published");
                Ok(())
            }
        }
    }
}

/// How long a run may move no data (no listing page, no GET, no uploaded part) before its
/// heartbeat stops renewing the lease: three lease times, at least ten minutes (longer than
/// one request may wait for its response, 5 min by default).
/// The settings given to this run that the bundle in progress was planned without: its
/// checkpoint's values win (a plan cannot change halfway), and the summary says so.
fn ignored_settings(ck: &Checkpoint, cfg: &ExportConfig) -> Vec<String> {
    let mut out: Vec<String> = ck
        .pin
        .as_ref()
        .map(|p| p.differences(&Pin::of(cfg)))
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            format!(
                "{}: the bundle in progress was planned with {}, this run was given {} (kept {})",
                d.setting, d.recorded, d.given, d.recorded
            )
        })
        .collect();
    if let Some(asked) = ck.shards_asked
        && asked != cfg.tuning.shards
    {
        out.push(format!(
            "--shards: the bundle in progress was planned with {asked}, this run was given {} (kept {asked})",
            cfg.tuning.shards
        ));
    }
    out
}

pub fn stall_limit(lease_ttl: Duration) -> Duration {
    (lease_ttl * 3).max(Duration::from_secs(600))
}

fn stalled(idle: Duration, lease_ttl: Duration) -> bool {
    idle > stall_limit(lease_ttl)
}

/// What the state item keeps of a run's report: its counters, and where the full report is.
fn run_summary(report: &Report, report_uri: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(report).expect("report serialises");
    if let Some(m) = v.as_object_mut() {
        for list in [
            "volumes",
            "volume_details",
            "skipped_objects",
            "own_output_prefixes",
        ] {
            m.remove(list);
        }
        m.insert("report".into(), report_uri.into());
    }
    v
}

/// A fetched body and its share of the prefetch budget (given back when the body is dropped).
enum Body {
    Whole(Bytes, #[allow(dead_code)] OwnedSemaphorePermit),
    Ranged(Bytes, #[allow(dead_code)] OwnedSemaphorePermit),
}

// Items travel through a short channel one at a time; boxing the metadata buys nothing.
#[allow(clippy::large_enum_variant)]
enum Fetched {
    Found {
        rec: ObjectRecord,
        meta: ObjectMeta,
        body: Body,
        planned_etag: Option<String>,
    },
    Gone {
        rec: ObjectRecord,
    },
    /// In an archive tier (GET answered `InvalidObjectState`).
    Archived {
        rec: ObjectRecord,
    },
}

/// Bytes of small changed objects fetched while the listing runs, held at most this much.
pub const WARM_BUDGET: u64 = 16 * 1024 * 1024;
/// What one early fetch is charged at least (its task and metadata): at most 2,048 are held.
const WARM_MIN: u64 = 8 * 1024;

/// A fetch started while the listing ran: the listed version and the spawned fetch (which
/// holds its bytes and a permit of [`WARM_BUDGET`] until the volume writer takes them).
struct WarmFetch {
    etag: String,
    task: tokio::task::JoinHandle<Result<Fetched>>,
}

/// The fetches a run started during its listing, by key, for its ship loop.
#[derive(Clone, Default)]
struct Warm(Arc<std::sync::Mutex<HashMap<String, WarmFetch>>>);

impl Warm {
    fn insert(&self, key: String, fetch: WarmFetch) {
        self.0.lock().expect("warm map").insert(key, fetch);
    }

    /// The fetch of `key`, if one was started (each shard takes its own keys).
    fn remove(&self, key: &str) -> Option<WarmFetch> {
        self.0.lock().expect("warm map").remove(key)
    }
}

/// Fetches small changed objects as the listing finds them: a bounded queue (a full one drops
/// the offer: that object is fetched in plan order later), at most `concurrency` GETs at once,
/// at most [`WARM_BUDGET`] bytes held (past it, offers are dropped). Stopped when the plan is
/// complete, before shipping starts, so no object is fetched twice.
struct Warmer {
    tx: mpsc::Sender<ObjectRecord>,
    stopped: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Warmer {
    fn start(store: Store, bucket: String, concurrency: usize, warm: Warm) -> Self {
        let (tx, mut rx) = mpsc::channel::<ObjectRecord>(1024);
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = stopped.clone();
        let budget = Arc::new(Semaphore::new((WARM_BUDGET / 1024) as usize));
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let task = tokio::spawn(async move {
            while let Some(rec) = rx.recv().await {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                // A fetch costs its bytes, and its task and metadata (a few KiB) however
                // small the object: charged at least WARM_MIN, so tiny objects cannot pile up
                // tens of thousands of finished tasks.
                let kib = (rec.size.max(WARM_MIN) / 1024) as u32;
                let Ok(permit) = budget.clone().try_acquire_many_owned(kib) else {
                    continue; // the budget is spent: this one is fetched in plan order
                };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (store, bucket, key, etag) = (
                    store.clone(),
                    bucket.clone(),
                    rec.key.clone(),
                    rec.etag.clone(),
                );
                let task = tokio::spawn(async move {
                    let fetched = fetch_one(store, bucket, rec, permit).await;
                    drop(slot);
                    fetched
                });
                warm.insert(key, WarmFetch { etag, task });
            }
        });
        Warmer { tx, stopped, task }
    }

    /// The listing found a changed object (an added one may still be a rename: its fetch is
    /// then simply dropped).
    fn offer(&self, rec: &ObjectRecord) {
        if rec.size <= SMALL_OBJECT && !self.stopped.load(Ordering::SeqCst) {
            let _ = self.tx.try_send(rec.clone());
        }
    }

    /// No more fetches start; the ones started stay in the map.
    async fn stop(self) {
        self.stopped.store(true, Ordering::SeqCst);
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// Fetch the puts in order, several at a time: small objects whole, large ones' first chunk.
/// Memory is bounded by `PREFETCH_BUDGET`; results arrive in plan order.
fn spawn_fetcher(
    store: Store,
    bucket: String,
    mut puts: mpsc::Receiver<Result<ObjectRecord>>,
    concurrency: usize,
    warm: Warm,
) -> mpsc::Receiver<Result<Fetched>> {
    let (tx, rx) = mpsc::channel(concurrency.max(1));
    let budget = Arc::new(Semaphore::new((PREFETCH_BUDGET / 1024) as usize));
    tokio::spawn(async move {
        // Each item is a spawned fetch (so fetches proceed while the channel is full); permits
        // are taken in plan order, so the byte budget can never deadlock the ordered stream.
        #[allow(clippy::async_yields_async)]
        let results = futures::stream::poll_fn(move |cx| puts.poll_recv(cx))
            .then(|rec| {
                let (store, bucket, budget) = (store.clone(), bucket.clone(), budget.clone());
                // Fetched while the listing ran (the same listed version, its own budget).
                let early = rec.as_ref().ok().and_then(|rec| {
                    warm.remove(&rec.key)
                        .filter(|w| w.etag == rec.etag)
                        .map(|w| w.task)
                });
                async move {
                    // The plan's puts file failed to read: that error ends the stream.
                    let rec = match rec {
                        Ok(rec) => rec,
                        Err(e) => return tokio::spawn(async move { Err(e) }),
                    };
                    if let Some(task) = early {
                        return task;
                    }
                    // What the fetch will hold: the whole small object, or a large one's first
                    // chunk (held until the volume writer takes it).
                    let held = if rec.size > SMALL_OBJECT {
                        CHUNK
                    } else {
                        rec.size
                    };
                    let kib = (held.min(PREFETCH_BUDGET) / 1024).max(1) as u32;
                    let permit = budget
                        .acquire_many_owned(kib)
                        .await
                        .expect("semaphore open");
                    tokio::spawn(fetch_one(store, bucket, rec, permit))
                }
            })
            .buffered(concurrency.max(1));
        let mut results = std::pin::pin!(results);
        while let Some(res) = results.next().await {
            let res = res.unwrap_or_else(|e| {
                Err(Error::Stream {
                    bucket: bucket.clone(),
                    key: String::new(),
                    source: Box::new(e),
                })
            });
            let failed = res.is_err();
            if tx.send(res).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}

async fn fetch_one(
    store: Store,
    bucket: String,
    rec: ObjectRecord,
    permit: OwnedSemaphorePermit,
) -> Result<Fetched> {
    let (mut etag, mut size) = (rec.etag.clone(), rec.size);
    let mut planned_etag = None;
    for _ in 0..4 {
        let range = (size > SMALL_OBJECT).then_some((0, CHUNK - 1));
        let got = match store.get(&bucket, &rec.key, Some(&etag), range).await {
            Err(Error::Archived { .. }) => return Ok(Fetched::Archived { rec }),
            got => got?,
        };
        match got {
            Got::Found { meta, body } => {
                let body = match range {
                    Some(_) => Body::Ranged(body, permit),
                    None => Body::Whole(body, permit),
                };
                return Ok(Fetched::Found {
                    rec,
                    meta,
                    body,
                    planned_etag,
                });
            }
            Got::Gone => return Ok(Fetched::Gone { rec }),
            Got::Changed => match store.head(&bucket, &rec.key).await? {
                None => return Ok(Fetched::Gone { rec }),
                Some((new_etag, new_size)) => {
                    info!(bucket, key = %rec.key, planned = %rec.etag, current = %new_etag, "object changed since listing: shipping the current version");
                    planned_etag = Some(rec.etag.clone());
                    etag = new_etag;
                    size = new_size;
                }
            },
        }
    }
    Err(Error::ObjectChanged {
        bucket,
        key: rec.key,
    })
}

fn jsonl_headers() -> crate::manifest::ObjectHeaders {
    crate::manifest::ObjectHeaders {
        content_type: Some("application/x-ndjson".into()),
        ..Default::default()
    }
}

/// A volume's headers: a ZIP, tagged with the run that wrote it (so that a volume index
/// handed out twice is caught when the second writer completes, not replaced silently).
fn volume_headers(owner: &str) -> crate::manifest::ObjectHeaders {
    crate::manifest::ObjectHeaders {
        content_type: Some("application/zip".into()),
        metadata: [(crate::s3::WRITER_METADATA.to_string(), owner.to_string())].into(),
        ..Default::default()
    }
}

/// At most how long `rec`'s line in its volume's manifest is (its digests not known yet: the
/// longest they can be), with the comma before it.
fn manifest_line_bound(rec: &ObjectRecord, entry: &str, meta: &ObjectMeta) -> u64 {
    let probe = ObjectEntry {
        key: rec.key.clone(),
        entry: entry.to_string(),
        size: meta.size,
        etag: meta.etag.clone(),
        last_modified: rfc3339_ms(meta.last_modified_ms),
        sha256: "0".repeat(64),
        crc32: u32::MAX,
        storage_class: rec.storage_class.clone(),
        headers: meta.headers.clone(),
        // A replaced object records the ETag it was planned with: about as long as its own.
        planned_etag: Some(rec.etag.clone()),
    };
    serde_json::to_vec(&probe).map_or(64 * 1024, |j| j.len() as u64) + 1
}

/// Wait helper for callers that want to bound a run by wall time from now.
pub fn deadline_in(d: Duration) -> Instant {
    Instant::now() + d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_gives_up_only_after_the_stall_limit() {
        let ttl = Duration::from_secs(300);
        assert_eq!(stall_limit(ttl), Duration::from_secs(900));
        assert_eq!(
            stall_limit(Duration::from_secs(10)),
            Duration::from_secs(600)
        );
        assert!(!stalled(Duration::from_secs(899), ttl));
        assert!(stalled(Duration::from_secs(901), ttl));
    }
}
