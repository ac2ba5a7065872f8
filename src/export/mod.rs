//! The export run: lease → plan (listing ⋈ last inventory; small changed objects are fetched
//! while the listing runs) → volumes (zip entries → multipart parts) → manifest → bundle.json
//! and the run's report → commit → signature and SHA256SUMS (the far side's "complete" marker:
//! only a committed bundle has them). Checkpoints after every volume so a run stopped by its
//! deadline (or killed) resumes the same bundle without re-shipping a completed volume or
//! skipping a key.
//!
//! One file a phase, in the order a run goes through them: `steps` (the entry points: one
//! process, or the state machine's plan / shard / commit steps) → `session` (lease and
//! heartbeat) → `run` (what a run holds) → `open` (resume or plan the bundle, ship its shards,
//! fold and settle at commit) → `plan_step` (list, diff, pair renames, first checkpoint;
//! `planning` holds the listing itself, `listing` a plan step's listing across calls) → `shards` (cut the puts, shard documents, volume
//! claims) → `ship` (a shard's puts into volumes; `fetch` reads them, `stream` streams a large
//! object, in parts when a deadline cuts it) → `volumes` (open,
//! finish, close; the report and the commit write) → `publish` (seal, finalize, sign,
//! `SHA256SUMS`). `checkpoint`, `layout` and `report` are the documents and names they share.

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

use crate::config::{ExportConfig, S3Location};
use crate::error::{Error, Result};
use crate::format::archive::{VolumeWriter, entry_name};
use crate::format::manifest::{
    BundleSummary, ChainLink, FORMAT, Final, Manifest, ManifestJson, Move, ObjectEntry, SourceInfo,
    Totals, VolumeInfo, bundle_digest, limits, sha256sums,
};
use crate::plan::inventory::{InventoryIndex, InventoryReader, InventoryWriter, ObjectRecord};
use crate::plan::listing::Pages;
use crate::plan::pin::Pin;
use crate::plan::{Listed, Plan, Puts, StoredPlan, VolumeEstimate};
use crate::state::{Commit, CommittedBundle, JobState, StateTable, now_ms, rfc3339_ms};
use crate::store::aws::Clients;
use crate::store::{Got, MultipartUpload, ObjectMeta, Store};

mod checkpoint;
mod fetch;
mod judge;
mod layout;
mod listing;
mod open;
mod plan_step;
mod planning;
mod publish;
mod report;
mod run;
mod session;
mod shards;
mod ship;
mod steps;
mod stream;
mod volumes;

pub use checkpoint::*;
pub use fetch::*;
use judge::*;
pub use layout::*;
pub use planning::*;
pub use report::*;
use run::*;
pub use session::*;
pub use steps::*;
use stream::*;

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

pub use crate::progress::{NoProgress, Progress};

/// Wait helper for callers that want to bound a run by wall time from now.
pub fn deadline_in(d: Duration) -> Instant {
    Instant::now() + d
}
