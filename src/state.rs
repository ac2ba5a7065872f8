//! Job state: the committed watermark (sequence, listing time, inventory pointer, bundle
//! digest, last run summary), the optimistic-lock version and the run lease, over any
//! [`StateStore`] (DynamoDB, or in memory). The rules are here, once: which failed condition
//! means what, and how a commit whose answer was lost is recognised.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use crate::clock::{now_ms, rfc3339_ms};

use serde::Serialize;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::store::{CommitRecord, JobRecord, StateStore};

/// A job's committed state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobState {
    pub job: String,
    /// Sequence of the last committed bundle (0 = none yet).
    pub sequence: u64,
    /// Start time of the last committed listing (RFC 3339).
    pub watermark: Option<String>,
    /// Key of the last inventory snapshot in the export bucket.
    pub inventory: Option<String>,
    /// Digest of the last committed bundle (for the chain).
    pub bundle_digest: Option<String>,
    /// Summary of the last run (JSON).
    pub last_run: Option<serde_json::Value>,
    /// Optimistic-lock version, +1 on every commit.
    pub version: u64,
    pub lease_owner: Option<String>,
    /// Lease expiry, ms since the epoch.
    pub lease_until_ms: Option<i64>,
    /// Fencing token: +1 every time the lease is taken, so the latest holder has the largest.
    pub lease_epoch: u64,
    /// The settings the job's inventory was made with (absent in states written before pins).
    pub pin: Option<crate::plan::pin::Pin>,
}

/// What a successful run commits.
#[derive(Debug, Clone)]
pub struct Commit {
    /// `None` keeps the current bundle fields (a run that found no changes).
    pub bundle: Option<CommittedBundle>,
    pub watermark: String,
    pub last_run: serde_json::Value,
    /// The settings the committed inventory was made with.
    pub pin: Option<crate::plan::pin::Pin>,
}

pub use crate::store::CommittedBundle;

/// Conditional document writes in flight at once.
const DOC_WRITES_IN_FLIGHT: usize = 16;

/// The state table, over any [`StateStore`].
#[derive(Clone, Debug)]
pub struct StateTable {
    backend: Arc<dyn StateStore>,
}

impl StateTable {
    /// The state table over `backend`.
    pub fn new(backend: Arc<dyn StateStore>) -> Self {
        StateTable { backend }
    }

    pub fn name(&self) -> &str {
        self.backend.table()
    }

    /// Create the table if it does not exist and wait until it is active. Returns true if it
    /// was created by this call.
    pub async fn init(&self) -> Result<bool> {
        self.backend.init().await
    }

    /// The job's state, or `None` if it never ran.
    pub async fn load(&self, job: &str) -> Result<Option<JobState>> {
        Ok(self.backend.load(job).await?.map(JobState::from))
    }

    /// Take the job's lease for `owner` (free, or expired). Fails fast with `LeaseHeld`.
    pub async fn acquire(&self, job: &str, owner: &str, ttl: Duration) -> Result<JobState> {
        let now = now_ms();
        let until = now + ttl.as_millis() as i64;
        match self.backend.acquire(job, owner, until, now).await? {
            Some(record) => {
                let state = JobState::from(record);
                info!(job, owner, table = %self.name(), sequence = state.sequence, "lease taken");
                Ok(state)
            }
            None => {
                let held = self.load(job).await?.unwrap_or_default();
                Err(Error::LeaseHeld {
                    job: job.to_string(),
                    owner: held.lease_owner.unwrap_or_else(|| "?".into()),
                    until: held.lease_until_ms.map(rfc3339_ms).unwrap_or_default(),
                })
            }
        }
    }

    /// Extend the lease; `LeaseLost` if another run has taken it.
    pub async fn renew(&self, job: &str, owner: &str, ttl: Duration) -> Result<()> {
        let until = now_ms() + ttl.as_millis() as i64;
        match self.backend.renew(job, owner, until).await? {
            true => Ok(()),
            false => Err(Error::LeaseLost {
                job: job.to_string(),
            }),
        }
    }

    /// Give the lease back without committing anything.
    pub async fn release(&self, job: &str, owner: &str) -> Result<()> {
        self.backend.release(job, owner).await
    }

    /// Commit a run and release the lease in one conditional write: only if `owner` still
    /// holds the lease and the version is the one read at acquire time.
    pub async fn commit(&self, job: &str, owner: &str, version: u64, c: &Commit) -> Result<()> {
        let record = CommitRecord {
            bundle: c.bundle.clone(),
            watermark: c.watermark.clone(),
            last_run: c.last_run.to_string(),
            pin: c
                .pin
                .as_ref()
                .map(|p| serde_json::to_string(p).expect("a pin serialises")),
        };
        let failed = match self.backend.commit(job, owner, version, &record).await {
            Ok(true) => return Ok(()),
            Ok(false) => Error::StateConflict {
                job: job.to_string(),
            },
            Err(e) => e,
        };
        // A failed commit may have been applied all the same: a retried request whose first
        // attempt was applied (its answer lost) fails its own condition, and one that got no
        // answer at all (time-out, lost connection, 5xx after every retry) says nothing. The
        // state says which; report that.
        match self.load(job).await {
            Ok(Some(now)) if now.is_commit_of(version, c) => {
                info!(
                    job,
                    version = version + 1,
                    "commit was applied (its answer was lost)"
                );
                Ok(())
            }
            Ok(_) => Err(failed),
            Err(read) => {
                warn!(job, error = %read, "could not read the state back after a failed commit");
                Err(Error::CommitUnknown {
                    job: job.to_string(),
                    source: Box::new(failed),
                })
            }
        }
    }

    /// Claim the next volume index of bundle `sequence` of `job`: one atomic counter per bundle
    /// (item `JOB#volumes#SEQUENCE`), so shards in separate processes never share an index.
    /// `base` is the number of volumes already numbered before the counter existed (a bundle
    /// resumed from an older checkpoint). An index claimed by a volume that never completes is
    /// filled with an empty volume when the bundle is sealed.
    pub async fn claim_volume(&self, job: &str, sequence: u64, base: u32) -> Result<u32> {
        let key = format!("{job}#volumes#{sequence}");
        self.backend
            .increment(&key, base)
            .await?
            .filter(|&i| i >= 1)
            .ok_or_else(|| Error::Corrupt {
                what: "volume counter",
                location: format!("state table {} item {key}", self.name()),
                hint: "delete the item and take a new baseline",
                source: "no volume index in the answer, or not a number from 1 to 2^32-1".into(),
            })
    }

    /// Forget the volume counter of bundle `sequence` of `job` (a bundle planned afresh, or
    /// committed): its next claim is 1 again.
    pub async fn reset_volumes(&self, job: &str, sequence: u64) -> Result<()> {
        self.backend
            .remove(&format!("{job}#volumes#{sequence}"))
            .await
    }

    /// The `doc` of each of `keys` that exists (strongly consistent reads).
    pub async fn get_docs(&self, keys: &[String]) -> Result<HashMap<String, String>> {
        self.backend.get_docs(keys).await
    }

    /// Write (`Some`) or remove (`None`) documents as the lease holder whose fencing token is
    /// `fence` (its `lease_epoch`). Each write is conditional: it lands only on an item that no
    /// later holder has written (`fence` ≤ ours), so a run that lost its lease and wakes up late
    /// cannot overwrite what the run that took over wrote (`LeaseLost` for `lease_item`). A key
    /// given twice keeps its last value. Several writes are in flight at once.
    pub async fn write_docs(
        &self,
        lease_item: &str,
        fence: u64,
        docs: Vec<(String, Option<String>)>,
    ) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        let mut last: HashMap<String, Option<String>> = HashMap::with_capacity(docs.len());
        for (k, d) in docs {
            last.insert(k, d);
        }
        futures::stream::iter(last)
            .map(|(k, d)| async move {
                match self.backend.write_doc(&k, fence, d.as_deref()).await? {
                    true => Ok(()),
                    false => Err(Error::LeaseLost {
                        job: lease_item.to_string(),
                    }),
                }
            })
            .buffer_unordered(DOC_WRITES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// Set the `doc` of `key` while `owner` holds its lease.
    pub async fn save_doc(&self, key: &str, owner: &str, doc: &str) -> Result<()> {
        match self.backend.save_doc(key, owner, doc).await? {
            true => Ok(()),
            false => Err(Error::LeaseLost {
                job: key.to_string(),
            }),
        }
    }
}

impl From<JobRecord> for JobState {
    /// The state a store's item holds; JSON fields that do not parse are left out.
    fn from(r: JobRecord) -> Self {
        JobState {
            job: r.job,
            sequence: r.sequence,
            watermark: r.watermark,
            inventory: r.inventory,
            bundle_digest: r.bundle_digest,
            last_run: r.last_run.and_then(|j| serde_json::from_str(&j).ok()),
            version: r.version,
            lease_owner: r.lease_owner,
            lease_until_ms: r.lease_until_ms,
            lease_epoch: r.lease_epoch,
            pin: r.pin.and_then(|j| serde_json::from_str(&j).ok()),
        }
    }
}

impl JobState {
    /// Is this state the result of committing `c` on top of `version` (and nothing since)?
    fn is_commit_of(&self, version: u64, c: &Commit) -> bool {
        self.version == version + 1
            && self.lease_owner.is_none()
            && self.watermark.as_deref() == Some(c.watermark.as_str())
            && c.bundle.as_ref().is_none_or(|b| {
                self.sequence == b.sequence
                    && self.bundle_digest.as_deref() == Some(b.bundle_digest.as_str())
            })
    }
}

impl crate::store::aws::Clients {
    /// The state table `table`.
    pub fn table(&self, table: &str) -> StateTable {
        StateTable::new(self.tables().table(table))
    }
}
