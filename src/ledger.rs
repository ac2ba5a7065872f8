//! The import side's record of a target: the last bundle applied (job, sequence, digest), the
//! progress of a bundle being applied (volumes done), and the key index (what content each
//! destination key holds and where). Kept in a local JSON file guarded by a lock file, or in the
//! state table (a leased item per job plus one item per key). The chain rules are `import`'s.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    pub fn of(k: &crate::sign::TrustedKey) -> Self {
        SignerRecord {
            key: k.fingerprint.clone(),
            public_key: k.to_pem(),
        }
    }

    /// The key itself (checked against its recorded fingerprint).
    pub fn key(&self) -> Result<crate::sign::TrustedKey> {
        let k = crate::sign::TrustedKey::from_pem(&self.public_key, "the import state's signer")?;
        if k.fingerprint != self.key {
            return Err(Error::config(
                "import state",
                "its recorded signer key does not match its fingerprint: the state was altered",
            ));
        }
        Ok(k)
    }
}

/// The state file's content: the record and the key index.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StateFile {
    format: String,
    record: Record,
    objects: BTreeMap<String, IndexEntry>,
}

const FILE_FORMAT: &str = "s3-ferry-import/1";

/// Where the record lives.
pub enum Ledger {
    File {
        path: PathBuf,
        #[allow(dead_code)] // held for its Drop
        lock: LockFile,
        state: StateFile,
    },
    Table {
        table: StateTable,
        item: String,
        owner: String,
        /// The lease's fencing token: every key-index write is conditional on it.
        fence: u64,
        ttl: Duration,
        record: Record,
    },
}

impl Ledger {
    /// Open (or start) the record in a local file; takes `<file>.lock` until `close`.
    pub async fn open_file(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_at("creating directory", parent))?;
        }
        let mut lock = path.as_os_str().to_owned();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        // An OS lock on `<file>.lock`: it dies with the process holding it (a killed import
        // needs no hand work), and the file itself stays (removing it would let two imports
        // lock two different files).
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io_at("opening", &lock))?;
        match file.try_lock() {
            Ok(()) => {
                use std::io::{Seek, Write};
                let _ = file.set_len(0);
                let _ = file.seek(std::io::SeekFrom::Start(0));
                let _ = writeln!(file, "{}", std::process::id());
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::StateLocked {
                    path: path.to_path_buf(),
                    lock,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_at("locking", &lock)(e)),
        }
        let lock = LockFile(file);
        let state = match tokio::fs::read(path).await {
            Ok(bytes) => serde_json::from_slice::<StateFile>(&bytes).map_err(|e| {
                Error::Corrupt {
                    what: "import state",
                    location: path.display().to_string(),
                    hint: "restore it from a backup; without it the next import must be a baseline applied with --force",
                    source: Box::new(e),
                }
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile {
                format: FILE_FORMAT.into(),
                ..Default::default()
            },
            Err(e) => return Err(io_at("reading", path)(e)),
        };
        Ok(Ledger::File {
            path: path.to_path_buf(),
            lock,
            state,
        })
    }

    /// Open the record of `job` in the state table, taking its import lease.
    pub async fn open_table(table: StateTable, job: &str, ttl: Duration) -> Result<Self> {
        let item = format!("import/{job}");
        let owner = uuid::Uuid::new_v4().to_string();
        let fence = table.acquire(&item, &owner, ttl).await?.lease_epoch;
        let docs = table.get_docs(std::slice::from_ref(&item)).await?;
        let record = match docs.get(&item) {
            Some(d) => serde_json::from_str(d).map_err(|e| Error::Corrupt {
                what: "import record",
                location: format!("table `{}` item `{item}`", table.name()),
                hint: "fix or delete the item (the next import must then be a baseline)",
                source: Box::new(e),
            })?,
            None => Record::default(),
        };
        Ok(Ledger::Table {
            table,
            item,
            owner,
            fence,
            ttl,
            record,
        })
    }

    /// Where the record is, for messages.
    pub fn location(&self) -> String {
        match self {
            Ledger::File { path, .. } => path.display().to_string(),
            Ledger::Table { table, item, .. } => format!("table `{}` item `{item}`", table.name()),
        }
    }

    pub fn record(&self) -> &Record {
        match self {
            Ledger::File { state, .. } => &state.record,
            Ledger::Table { record, .. } => record,
        }
    }

    /// Index entries of those `keys` that have one.
    pub async fn lookup(&self, keys: &[String]) -> Result<HashMap<String, IndexEntry>> {
        match self {
            Ledger::File { state, .. } => Ok(keys
                .iter()
                .filter_map(|k| state.objects.get(k).map(|e| (k.clone(), e.clone())))
                .collect()),
            Ledger::Table { table, item, .. } => {
                let prefix = format!("{item}/k/");
                let ids: Vec<String> = keys.iter().map(|k| format!("{prefix}{k}")).collect();
                let mut out = HashMap::new();
                for (id, doc) in table.get_docs(&ids).await? {
                    let entry: IndexEntry =
                        serde_json::from_str(&doc).map_err(|e| Error::Corrupt {
                            what: "import key index",
                            location: format!("table `{}` item `{id}`", table.name()),
                            hint: "delete the item; the next import must then be a baseline",
                            source: Box::new(e),
                        })?;
                    out.insert(id[prefix.len()..].to_string(), entry);
                }
                Ok(out)
            }
        }
    }

    /// Apply index changes (`None` removes a key) and store `record`.
    pub async fn save(
        &mut self,
        record: Record,
        changes: Vec<(String, Option<IndexEntry>)>,
    ) -> Result<()> {
        match self {
            Ledger::File { path, state, .. } => {
                for (k, e) in changes {
                    match e {
                        Some(e) => state.objects.insert(k, e),
                        None => state.objects.remove(&k),
                    };
                }
                state.record = record;
                state.format = FILE_FORMAT.into();
                let json = serde_json::to_vec(state).expect("state serialises");
                crate::durable::replace(path, json).await
            }
            Ledger::Table {
                table,
                item,
                owner,
                fence,
                ttl,
                record: current,
            } => {
                table.renew(item, owner, *ttl).await?;
                let docs = changes
                    .into_iter()
                    .map(|(k, e)| {
                        (
                            format!("{item}/k/{k}"),
                            e.map(|e| serde_json::to_string(&e).expect("entry serialises")),
                        )
                    })
                    .collect();
                table.write_docs(item, *fence, docs).await?;
                let doc = serde_json::to_string(&record).expect("record serialises");
                table.save_doc(item, owner, &doc).await?;
                *current = record;
                Ok(())
            }
        }
    }

    /// Release the lock or lease.
    pub async fn close(self) -> Result<()> {
        match self {
            Ledger::File { lock, .. } => {
                drop(lock);
                Ok(())
            }
            Ledger::Table {
                table, item, owner, ..
            } => table.release(&item, &owner).await,
        }
    }
}

/// A lock file, removed when dropped (also when an import fails).
/// The open, OS-locked `<file>.lock`; closing it (or the process ending) releases the lock.
pub struct LockFile(#[allow(dead_code)] std::fs::File);
