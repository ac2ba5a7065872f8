//! The state seam: a job's committed state, its lease with a fencing epoch, the volume
//! counters and fenced documents, as one trait with a DynamoDB adapter
//! ([`super::dynamo::DynamoState`]) and an in-memory implementation
//! ([`super::mem_state::MemoryState`]) whose conditions are checked atomically. The rules
//! above it (errors, the read-back of a commit whose answer was lost) live once in the state
//! layer's `StateTable`.

use std::collections::HashMap;

use crate::error::Result;

/// A job's item as a state store keeps it; its JSON fields (`last_run`, `pin`) as text, which
/// the state layer parses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRecord {
    pub job: String,
    pub sequence: u64,
    pub watermark: Option<String>,
    pub inventory: Option<String>,
    pub bundle_digest: Option<String>,
    pub last_run: Option<String>,
    pub version: u64,
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub lease_epoch: u64,
    pub pin: Option<String>,
}

/// The bundle part of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedBundle {
    pub sequence: u64,
    pub inventory: String,
    pub bundle_digest: String,
}

/// What a commit writes, as the store keeps it.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    /// `None` keeps the current bundle fields.
    pub bundle: Option<CommittedBundle>,
    pub watermark: String,
    /// JSON.
    pub last_run: String,
    /// JSON; `None` keeps the current pin.
    pub pin: Option<String>,
}

/// The table operations a state store answers, each one conditional request.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug + 'static {
    /// The table's name (in messages).
    fn table(&self) -> &str;

    /// Create the table if needed and wait until it is usable; whether this call created it.
    async fn init(&self) -> Result<bool>;

    /// The job's state, strongly consistent; `None` if it never ran.
    async fn load(&self, job: &str) -> Result<Option<JobRecord>>;

    /// Take the lease for `owner` until `until_ms` if it is free, expired at `now_ms`, or
    /// `owner`'s already, adding 1 to the epoch: the state after. `None`: another holds it.
    async fn acquire(
        &self,
        job: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<Option<JobRecord>>;

    /// Extend `owner`'s lease to `until_ms`; `false` if `owner` does not hold it.
    async fn renew(&self, job: &str, owner: &str, until_ms: i64) -> Result<bool>;

    /// Remove `owner`'s lease (nothing if another holds it).
    async fn release(&self, job: &str, owner: &str) -> Result<()>;

    /// Apply `c` and remove the lease if `owner` holds it and the version is `version`
    /// (0: none yet); `false` when the condition failed.
    async fn commit(&self, job: &str, owner: &str, version: u64, c: &CommitRecord) -> Result<bool>;

    /// Add 1 to the counter `key` (starting from `base`): the new value.
    async fn increment(&self, key: &str, base: u32) -> Result<Option<u32>>;

    /// Remove the counter or document `key` unconditionally.
    async fn remove(&self, key: &str) -> Result<()>;

    /// The documents of those `keys` that exist (strongly consistent).
    async fn get_docs(&self, keys: &[String]) -> Result<HashMap<String, String>>;

    /// Write (`Some`) or remove (`None`) document `key` unless a later lease holder (fence
    /// larger than `fence`) wrote it; `false` when one did.
    async fn write_doc(&self, key: &str, fence: u64, doc: Option<&str>) -> Result<bool>;

    /// Set the document of item `key` while `owner` holds that item's lease; `false` if not.
    async fn save_doc(&self, key: &str, owner: &str, doc: &str) -> Result<bool>;
}

/// Where the state tables are: each name is one [`StateStore`].
pub trait Tables: Send + Sync + std::fmt::Debug + 'static {
    /// The table called `name`.
    fn table(&self, name: &str) -> std::sync::Arc<dyn StateStore>;
}
