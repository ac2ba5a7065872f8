//! The file ledger: the record in a JSON file replaced atomically, the key index in a redb
//! database beside it (`FILE.index`), both guarded by `FILE.lock`.

use super::*;

/// The state file's content: the record, and the generation of the key index it goes with.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct StateFile {
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

pub(super) const FILE_FORMAT: &str = "s3-ferry-import/2";
pub(super) const FILE_FORMAT_1: &str = "s3-ferry-import/1";

/// Destination key → its [`IndexEntry`] (JSON).
pub(super) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// The index's page cache (redb's default is 1 GiB, which a big index would fill: memory would
/// grow with the key count). Lookups come a volume at a time, so a small cache costs little.
pub(super) const INDEX_CACHE: usize = 16 * 1024 * 1024;
/// `generation` → the save count.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

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
pub(super) struct Created {
    lock: PathBuf,
    dir: Option<PathBuf>,
}

/// Opens the key index, making a new one whole: redb writes its header's magic number last, so
/// a kill -9 while it creates `FILE.index` in place would leave a file the next import has to call
/// corrupt. A new index is made at `FILE.index.new` and renamed into place; a `.new` left by a
/// creation cut off before is removed first (the caller holds the lock).
async fn open_index(path: PathBuf, exists: bool) -> Result<redb::Database> {
    tokio::task::spawn_blocking(move || {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(INDEX_CACHE);
        if !exists {
            let mut fresh = path.as_os_str().to_owned();
            fresh.push(".new");
            let fresh = PathBuf::from(fresh);
            match std::fs::remove_file(&fresh) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at("removing", &fresh)(e)),
            }
            drop(builder.create(&fresh).map_err(|e| index_err(&fresh, e))?);
            std::fs::rename(&fresh, &path).map_err(io_at("renaming", &fresh))?;
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            crate::format::durable::sync_dir(dir)?;
        }
        builder.open(&path).map_err(|e| index_err(&path, e))
    })
    .await
    .expect("index open task")
}

pub(super) fn index_err(path: &Path, e: impl Into<redb::Error>) -> Error {
    Error::Corrupt {
        what: "import key index",
        location: path.display().to_string(),
        hint: "restore it and the state file from the same backup; without them the next import must be a baseline applied by force",
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
            hint: "restore it from a backup; without it the next import must be a baseline applied by force",
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
                hint: "copy it back beside the state file (it travels with it); without it the next import must be a baseline applied by force",
                source: "missing".into(),
            });
        }
        let index = open_index(index_path.clone(), had_index).await?;
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
                hint: "the index and the state file come from different times: restore both from the same backup, or start again with a baseline applied by force",
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
pub(super) fn keys_table(
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
pub(super) fn parse_entry(path: &Path, key: &str, bytes: &[u8]) -> Result<IndexEntry> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: "import key index",
        location: format!("{} key `{key}`", path.display()),
        hint: "restore it from a backup; the next import must then be a baseline applied by force",
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
