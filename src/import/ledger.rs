//! The import side's record of a target: the last bundle applied (job, sequence, digest), the
//! progress of a bundle being applied (volumes done), and the key index (what content each
//! destination key holds and where). Two kinds behind one trait, [`Ledger`]: a local JSON file
//! (the record) with its key index in an embedded database beside it (`FILE.index`, redb: memory
//! stays flat however many keys), guarded by a lock file; or the state table (a leased item per
//! job plus one item per key). The chain rules are `import`'s.

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

/// The state file's content: the record, and the generation of the key index it goes with.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    format: String,
    record: Record,
    /// Saves so far; the index stores the same number (or one more, after a crash between the
    /// index's commit and this file's).
    #[serde(default)]
    generation: u64,
    /// Format 1 kept the key index here; it moves into the index database when opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    objects: Option<BTreeMap<String, IndexEntry>>,
}

const FILE_FORMAT: &str = "s3-ferry-import/2";
const FILE_FORMAT_1: &str = "s3-ferry-import/1";

/// Destination key → its [`IndexEntry`] (JSON).
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// The index's page cache (redb's default is 1 GiB, which a big index would fill: memory would
/// grow with the key count). Lookups come a volume at a time, so a small cache costs little.
const INDEX_CACHE: usize = 16 * 1024 * 1024;
/// `generation` → the save count.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The record in a local JSON file, the key index in `FILE.index` beside it.
pub struct FileLedger {
    path: PathBuf,
    index_path: PathBuf,
    #[allow(dead_code)] // held for its Drop
    lock: LockFile,
    state: StateFile,
    index: Arc<redb::Database>,
    /// What this open created (no state file, no index before it), removed again by `close`
    /// when nothing was saved: a refused import leaves no `FILE.index`, `FILE.lock` or folder.
    created: Option<Created>,
}

/// The files and folder a first open of a local state made.
struct Created {
    lock: PathBuf,
    dir: Option<PathBuf>,
}

fn index_err(path: &Path, e: impl Into<redb::Error>) -> Error {
    Error::Corrupt {
        what: "import key index",
        location: path.display().to_string(),
        hint: "restore it and the state file from the same backup; without them the next import must be a baseline applied with --force",
        source: Box::new(e.into()),
    }
}

impl FileLedger {
    /// Open (or start) the record in a local file; takes `<file>.lock` until `close`.
    pub async fn open(path: &Path) -> Result<Box<dyn Ledger>> {
        let mut made_dir = None;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if tokio::fs::symlink_metadata(parent).await.is_err() {
                made_dir = Some(parent.to_path_buf());
            }
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_at("creating directory", parent))?;
        }
        let mut lock = path.as_os_str().to_owned();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        let had_lock = lock.exists();
        let lock_path = lock.clone();
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
        let corrupt = |e: serde_json::Error| Error::Corrupt {
            what: "import state",
            location: path.display().to_string(),
            hint: "restore it from a backup; without it the next import must be a baseline applied with --force",
            source: Box::new(e),
        };
        let (state, existed) = match tokio::fs::read(path).await {
            Ok(bytes) => (
                serde_json::from_slice::<StateFile>(&bytes).map_err(corrupt)?,
                true,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                StateFile {
                    format: FILE_FORMAT.into(),
                    ..Default::default()
                },
                false,
            ),
            Err(e) => return Err(io_at("reading", path)(e)),
        };
        if state.format != FILE_FORMAT && state.format != FILE_FORMAT_1 {
            return Err(Error::config(
                path.display().to_string(),
                format!(
                    "import state format `{}`: this ferry reads `{FILE_FORMAT}` (and `{FILE_FORMAT_1}`)",
                    state.format
                ),
            ));
        }
        let mut index_path = path.as_os_str().to_owned();
        index_path.push(".index");
        let index_path = PathBuf::from(index_path);
        let had_index = index_path.exists();
        if existed && state.format == FILE_FORMAT && !had_index && state.generation > 0 {
            return Err(Error::Corrupt {
                what: "import key index",
                location: index_path.display().to_string(),
                hint: "copy it back beside the state file (it travels with it); without it the next import must be a baseline applied with --force",
                source: "missing".into(),
            });
        }
        let ip = index_path.clone();
        let index = tokio::task::spawn_blocking(move || {
            redb::Builder::new()
                .set_cache_size(INDEX_CACHE)
                .create(&ip)
                .map_err(|e| index_err(&ip, e))
        })
        .await
        .expect("index open task")?;
        let created = (!existed && !had_index && !had_lock).then_some(Created {
            lock: lock_path,
            dir: made_dir,
        });
        let mut ledger = FileLedger {
            path: path.to_path_buf(),
            index_path,
            lock,
            state,
            index: Arc::new(index),
            created,
        };
        let stored = ledger.generation().await?;
        let legacy = ledger.state.objects.take();
        if let Some(objects) = legacy {
            // Format 1: its key index moves into the database (again, if a move was cut off).
            let record = ledger.state.record.clone();
            ledger.state.generation = stored;
            let changes = objects.into_iter().map(|(k, e)| (k, Some(e))).collect();
            ledger.save(record, changes).await?;
        } else if stored != ledger.state.generation && stored != ledger.state.generation + 1 {
            return Err(Error::Corrupt {
                what: "import key index",
                location: ledger.index_path.display().to_string(),
                hint: "the index and the state file come from different times: restore both from the same backup, or start again with a baseline applied with --force",
                source: format!(
                    "index generation {stored}, state file generation {}",
                    ledger.state.generation
                )
                .into(),
            });
        }
        Ok(Box::new(ledger))
    }

    async fn generation(&self) -> Result<u64> {
        let db = self.index.clone();
        let path = self.index_path.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(|e| index_err(&path, e))?;
            match tx.open_table(META) {
                Ok(t) => Ok(t
                    .get("generation")
                    .map_err(|e| index_err(&path, e))?
                    .map(|g| g.value())
                    .unwrap_or(0)),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
                Err(e) => Err(index_err(&path, e)),
            }
        })
        .await
        .expect("index read task")
    }
}

/// Every entry of a state file's key index (`FILE.index`), in key order: for inspection and
/// tests; the import itself looks keys up a volume at a time.
pub fn file_index_entries(state: &Path) -> Result<BTreeMap<String, IndexEntry>> {
    let mut p = state.as_os_str().to_owned();
    p.push(".index");
    let path = PathBuf::from(p);
    let db = redb::Builder::new()
        .set_cache_size(INDEX_CACHE)
        .open(&path)
        .map_err(|e| index_err(&path, e))?;
    let mut out = BTreeMap::new();
    let Some(table) = keys_table(&db, &path)? else {
        return Ok(out);
    };
    for row in table.iter().map_err(|e| index_err(&path, e))? {
        let (k, v) = row.map_err(|e| index_err(&path, e))?;
        out.insert(
            k.value().to_string(),
            parse_entry(&path, k.value(), v.value())?,
        );
    }
    Ok(out)
}

/// The index's key table for reading; `None` before the first save.
fn keys_table(
    db: &redb::Database,
    path: &Path,
) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>> {
    let tx = db.begin_read().map_err(|e| index_err(path, e))?;
    match tx.open_table(KEYS) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(index_err(path, e)),
    }
}

/// One index entry, decoded.
fn parse_entry(path: &Path, key: &str, bytes: &[u8]) -> Result<IndexEntry> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: "import key index",
        location: format!("{} key `{key}`", path.display()),
        hint: "restore it from a backup; the next import must then be a baseline applied with --force",
        source: Box::new(e),
    })
}

impl Ledger for FileLedger {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn record(&self) -> &Record {
        &self.state.record
    }

    fn lookup<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, IndexEntry>>> {
        let db = self.index.clone();
        let path = self.index_path.clone();
        let keys = keys.to_vec();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut out = HashMap::new();
                let Some(table) = keys_table(&db, &path)? else {
                    return Ok(out);
                };
                for k in keys {
                    if let Some(v) = table.get(k.as_str()).map_err(|e| index_err(&path, e))? {
                        let e = parse_entry(&path, &k, v.value())?;
                        out.insert(k, e);
                    }
                }
                Ok(out)
            })
            .await
            .expect("index read task")
        })
    }

    fn save(
        &mut self,
        record: Record,
        changes: Vec<(String, Option<IndexEntry>)>,
    ) -> BoxFuture<'_, Result<()>> {
        // Something is recorded: the state's files stay.
        self.created = None;
        Box::pin(async move {
            let generation = self.state.generation + 1;
            let db = self.index.clone();
            let path = self.index_path.clone();
            tokio::task::spawn_blocking(move || {
                let err = |e: redb::Error| index_err(&path, e);
                let tx = db.begin_write().map_err(|e| err(e.into()))?;
                {
                    let mut keys = tx.open_table(KEYS).map_err(|e| err(e.into()))?;
                    for (k, e) in changes {
                        match e {
                            Some(e) => {
                                let v = serde_json::to_vec(&e).expect("entry serialises");
                                keys.insert(k.as_str(), v.as_slice())
                                    .map_err(|e| err(e.into()))?;
                            }
                            None => {
                                keys.remove(k.as_str()).map_err(|e| err(e.into()))?;
                            }
                        }
                    }
                    let mut meta = tx.open_table(META).map_err(|e| err(e.into()))?;
                    meta.insert("generation", generation)
                        .map_err(|e| err(e.into()))?;
                }
                // Durable on return (redb's default durability syncs the commit).
                tx.commit().map_err(|e| err(e.into()))
            })
            .await
            .expect("index write task")?;
            self.state.record = record;
            self.state.format = FILE_FORMAT.into();
            self.state.generation = generation;
            let json = serde_json::to_vec(&self.state).expect("state serialises");
            crate::format::durable::replace(&self.path, json).await
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let this = *self;
        let Some(created) = this.created else {
            drop(this);
            return Box::pin(async { Ok(()) });
        };
        let index_path = this.index_path.clone();
        // The index first (its database closed), then the lock file while it is still held:
        // an import that opened it meanwhile finds it locked and stops, having written nothing.
        drop(this.index);
        Box::pin(async move {
            let _ = tokio::fs::remove_file(&index_path).await;
            let _ = tokio::fs::remove_file(&created.lock).await;
            drop(this.lock);
            if let Some(dir) = created.dir {
                let _ = tokio::fs::remove_dir(&dir).await; // only when empty
            }
            Ok(())
        })
    }
}

/// The record in the state table: a leased item per job, one item per key.
pub struct TableLedger {
    table: StateTable,
    item: String,
    owner: String,
    /// The lease's fencing token: every key-index write is conditional on it.
    fence: u64,
    ttl: Duration,
    record: Record,
}

impl TableLedger {
    /// Open the record of `job` in the state table, taking its import lease.
    pub async fn open(table: StateTable, job: &str, ttl: Duration) -> Result<Box<dyn Ledger>> {
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
        Ok(Box::new(TableLedger {
            table,
            item,
            owner,
            fence,
            ttl,
            record,
        }))
    }
}

impl Ledger for TableLedger {
    fn location(&self) -> String {
        format!("table `{}` item `{}`", self.table.name(), self.item)
    }

    fn record(&self) -> &Record {
        &self.record
    }

    fn lookup<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, IndexEntry>>> {
        Box::pin(async move {
            let prefix = format!("{}/k/", self.item);
            let ids: Vec<String> = keys.iter().map(|k| format!("{prefix}{k}")).collect();
            let mut out = HashMap::new();
            for (id, doc) in self.table.get_docs(&ids).await? {
                let entry: IndexEntry = serde_json::from_str(&doc).map_err(|e| Error::Corrupt {
                    what: "import key index",
                    location: format!("table `{}` item `{id}`", self.table.name()),
                    hint: "delete the item; the next import must then be a baseline",
                    source: Box::new(e),
                })?;
                out.insert(id[prefix.len()..].to_string(), entry);
            }
            Ok(out)
        })
    }

    fn save(
        &mut self,
        record: Record,
        changes: Vec<(String, Option<IndexEntry>)>,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.table.renew(&self.item, &self.owner, self.ttl).await?;
            let docs = changes
                .into_iter()
                .map(|(k, e)| {
                    (
                        format!("{}/k/{k}", self.item),
                        e.map(|e| serde_json::to_string(&e).expect("entry serialises")),
                    )
                })
                .collect();
            self.table.write_docs(&self.item, self.fence, docs).await?;
            let doc = serde_json::to_string(&record).expect("record serialises");
            self.table.save_doc(&self.item, &self.owner, &doc).await?;
            self.record = record;
            Ok(())
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { self.table.release(&self.item, &self.owner).await })
    }
}

/// A lock file, removed when dropped (also when an import fails).
/// The open, OS-locked `<file>.lock`; closing it (or the process ending) releases the lock.
pub struct LockFile(#[allow(dead_code)] std::fs::File);

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> IndexEntry {
        IndexEntry {
            etag: format!("\"e{n}\""),
            sha256: "00".repeat(32),
            crc32: n,
            size: u64::from(n),
            place: format!("k{n}"),
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
}
