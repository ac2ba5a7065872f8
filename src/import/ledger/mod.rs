//! The import side's record of a target: the last bundle applied (job, sequence, digest), the
//! progress of a bundle being applied (volumes done), and the key index (what content each
//! destination key holds and where). Two kinds behind one trait, [`Ledger`]: a local JSON file
//! (the record) with its key index in an embedded database beside it (`FILE.index`, redb: memory
//! stays flat however many keys), guarded by a lock file; or the state table (a leased item per
//! job plus one item per key). The chain rules are `import`'s.
mod file;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io_at};
use crate::state::StateTable;

/// What a destination key holds, as the import wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The source object's ETag (moves name content by it).
    pub etag: String,
    pub sha256: String,
    pub crc32: u32,
    pub size: u64,
    /// Where it is: the destination ETag (S3) or the path relative to the directory.
    pub place: String,
    /// What a folder cannot hold (a bucket holds it on the object): the object's tags, Object
    /// Lock and S3 checksum as it was imported. Absent for a bucket and for objects without any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<Box<Kept>>,
}

/// The tags, Object Lock and S3 checksum of an object imported into a folder (field names and
/// meanings as in the manifest's headers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_retain_until: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub object_lock_legal_hold: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

impl Kept {
    /// What of `h` a folder keeps in its index; `None` when there is nothing.
    pub fn of(h: &crate::format::manifest::ObjectHeaders) -> Option<Box<Kept>> {
        let k = Kept {
            tags: h.tags.clone(),
            object_lock_mode: h.object_lock_mode.clone(),
            object_lock_retain_until: h.object_lock_retain_until.clone(),
            object_lock_legal_hold: h.object_lock_legal_hold,
            checksum_algorithm: h.checksum_algorithm.clone(),
            checksum_type: h.checksum_type.clone(),
            checksum: h.checksum.clone(),
        };
        (k != Kept::default()).then(|| Box::new(k))
    }
}

/// A bundle being applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub sequence: u64,
    pub bundle_digest: String,
    /// Volumes whose objects are all in place.
    pub volumes_done: Vec<u32>,
    /// Moves of the bundle's tail already applied (in the bundle's order).
    #[serde(default)]
    pub moves_done: u64,
    /// Metadata-only entries already applied (in the bundle's order).
    #[serde(default)]
    pub metadata_done: u64,
    /// Deletions of the bundle's tail already applied (in the bundle's order).
    #[serde(default)]
    pub deletions_done: u64,
}

/// The target's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub job: Option<String>,
    pub target: Option<String>,
    /// Last bundle applied (0 = none).
    pub sequence: u64,
    pub bundle_digest: Option<String>,
    pub applied_at: Option<String>,
    pub pending: Option<Pending>,
    /// Every bundle applied, in order: `[sequence, digest]` (an older bundle of this chain is
    /// recognised as applied rather than refused).
    #[serde(default)]
    pub history: Vec<(u64, String)>,
    /// The key that signed the last bundle applied: once set, only signed bundles apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<SignerRecord>,
    /// The approvals every bundle needs here, once an import required them: leaving the flags
    /// off later does not lower it (only `--force` with `--reason` and a new requirement does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalRecord>,
    /// What the screening kept out of the target in the last bundle applied (or the one being
    /// applied), the first [`QUARANTINE_RECORDED`] of them: nothing of it is in the key index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<crate::import::screen::Quarantined>,
}

/// Objects kept out that the import state lists by name, at most (the run's `--json` lists
/// them all).
pub const QUARANTINE_RECORDED: usize = 1_000;

/// An approval requirement as the import state remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub required: u32,
    pub approvers: Vec<SignerRecord>,
}

impl ApprovalRecord {
    pub fn of(req: &crate::approval::Requirement) -> Self {
        ApprovalRecord {
            required: req.required,
            approvers: req.approvers.iter().map(SignerRecord::of).collect(),
        }
    }

    /// The requirement (every key checked against its recorded fingerprint).
    pub fn requirement(&self) -> Result<crate::approval::Requirement> {
        let keys = self
            .approvers
            .iter()
            .map(SignerRecord::key)
            .collect::<Result<Vec<_>>>()?;
        crate::approval::Requirement::new(self.required, keys)
    }
}

/// A signer as the import state remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerRecord {
    /// SHA-256 of the public key (DER SubjectPublicKeyInfo), hex.
    pub key: String,
    /// The public key, PEM.
    pub public_key: String,
}

impl SignerRecord {
    pub fn of(k: &crate::format::sign::TrustedKey) -> Self {
        SignerRecord {
            key: k.fingerprint.clone(),
            public_key: k.to_pem(),
        }
    }

    /// The key itself (checked against its recorded fingerprint).
    pub fn key(&self) -> Result<crate::format::sign::TrustedKey> {
        let k = crate::format::sign::TrustedKey::from_pem(
            &self.public_key,
            "the import state's signer",
        )?;
        if k.fingerprint != self.key {
            return Err(Error::config(
                "import state",
                "its recorded signer key does not match its fingerprint: the state was altered",
            ));
        }
        Ok(k)
    }
}

/// Where the import's record and key index live.
pub trait Ledger: Send + Sync {
    /// Where the record is, for messages.
    fn location(&self) -> String;

    fn record(&self) -> &Record;

    /// Index entries of those `keys` that have one.
    fn lookup<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, IndexEntry>>>;

    /// Apply index changes (`None` removes a key), then store `record`: a crash between the
    /// two leaves the index ahead of the record, which the import's resume tolerates (it redoes
    /// a volume or move the record does not list as done, and they are idempotent).
    fn save(
        &mut self,
        record: Record,
        changes: Vec<(String, Option<IndexEntry>)>,
    ) -> BoxFuture<'_, Result<()>>;

    /// Release the lock or lease.
    fn close(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
}

pub use file::{FileLedger, file_index_entries};
pub use table::TableLedger;

/// A lock file, removed when dropped (also when an import fails).
/// The open, OS-locked `<file>.lock`; closing it (or the process ending) releases the lock.
pub struct LockFile(#[allow(dead_code)] std::fs::File);

#[cfg(test)]
mod tests {
    use super::file::{FILE_FORMAT, FILE_FORMAT_1};
    use super::*;

    fn entry(n: u32) -> IndexEntry {
        IndexEntry {
            etag: format!("\"e{n}\""),
            sha256: "00".repeat(32),
            crc32: n,
            size: u64::from(n),
            place: format!("k{n}"),
            kept: None,
        }
    }

    fn record(sequence: u64) -> Record {
        Record {
            sequence,
            bundle_digest: Some("d".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_key_index_lives_beside_the_state_file_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut l = FileLedger::open(&path).await.unwrap();
        l.save(
            record(1),
            vec![("a".into(), Some(entry(1))), ("b".into(), Some(entry(2)))],
        )
        .await
        .unwrap();
        l.save(record(2), vec![("a".into(), None)]).await.unwrap();
        l.close().await.unwrap();
        let l = FileLedger::open(&path).await.unwrap();
        assert_eq!(l.record().sequence, 2);
        let keys = ["a".to_string(), "b".to_string()];
        let found = l.lookup(&keys).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found["b"], entry(2));
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(state["format"], FILE_FORMAT);
        assert!(state.get("objects").is_none(), "{state}");
        drop(l);
        assert_eq!(file_index_entries(&path).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_format_1_state_file_moves_its_keys_into_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let old = serde_json::json!({
            "format": FILE_FORMAT_1,
            "record": record(3),
            "objects": {"x/y": entry(7)},
        });
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        let l = FileLedger::open(&path).await.unwrap();
        assert_eq!(l.record().sequence, 3);
        let found = l.lookup(&["x/y".to_string()]).await.unwrap();
        assert_eq!(found["x/y"], entry(7));
        drop(l);
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(state["format"], FILE_FORMAT);
        assert!(state.get("objects").is_none(), "{state}");
    }

    #[tokio::test]
    async fn a_missing_or_foreign_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut l = FileLedger::open(&path).await.unwrap();
        for s in 1..=3 {
            l.save(record(s), vec![(format!("k{s}"), Some(entry(s as u32)))])
                .await
                .unwrap();
        }
        drop(l);
        // the state file from an earlier time (a backup) with today's index
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut old = state.clone();
        old["generation"] = 1.into();
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        let err = FileLedger::open(&path).await.err().unwrap().to_string();
        assert!(err.contains("different times"), "{err}");
        // the state file without its index
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        std::fs::remove_file(dir.path().join("state.json.index")).unwrap();
        let err = FileLedger::open(&path).await.err().unwrap().to_string();
        assert!(err.contains("state.json.index"), "{err}");
    }
    #[tokio::test]
    async fn an_index_creation_cut_off_by_a_kill_leaves_nothing_the_next_open_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // what a kill -9 during redb's creation leaves: a file whose header was never finished
        let fresh = dir.path().join("state.json.index.new");
        std::fs::write(&fresh, vec![0x5a; 4096]).unwrap();
        let mut l = FileLedger::open(&path).await.unwrap();
        assert!(!fresh.exists());
        l.save(record(1), vec![("a".into(), Some(entry(1)))])
            .await
            .unwrap();
        l.close().await.unwrap();
        let l = FileLedger::open(&path).await.unwrap();
        assert_eq!(l.record().sequence, 1);
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".new"))
            .collect();
        assert!(entries.is_empty(), "{entries:?}");
    }
}
