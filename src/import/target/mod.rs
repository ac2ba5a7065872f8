//! Where an import lands: an S3 bucket/prefix or a local directory. Each target writes an
//! object so that it becomes visible only once committed (S3: a PUT or a multipart upload
//! completed on commit; directory: a temporary file renamed on commit), checks that a key holds
//! the content the key index says, moves, deletes, and finds keys a baseline does not list.
//! A directory target never writes outside its root: unsafe keys get escaped names.

mod bucket;
mod dir;
mod dir_files;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::S3Location;
use crate::error::{Error, Result, io_at};
use crate::format::archive::is_safe_path;
use crate::format::manifest::{ESCAPED_DIR, ObjectEntry, ObjectHeaders};
use crate::import::ledger::{IndexEntry, Kept};
use crate::import::verify::{EntrySink, EntryWriter};
use crate::store::{MultipartUpload, Store};

pub use bucket::Bucket;
pub use dir::{Dir, ESCAPED_MAP, file_sha256, read_escaped_map};
pub use dir_files::TempPath;
use dir_files::{SmallFile, TempFile, in_parents};

/// Objects up to this size are buffered and PUT whole (several at once).
pub const SMALL_OBJECT: u64 = 8 * 1024 * 1024;

/// Files up to this size are held in memory until verified and written with one blocking call
/// (create, write, mtime, rename), rather than a round trip to a blocking thread per step.
pub const SMALL_FILE: u64 = 1024 * 1024;
/// Folder of the import's own files inside a directory target (never a key's path).
pub const STATE_DIR: &str = ".ferry";

/// An import destination: where a verified object lands, and the moves, deletions and
/// checks an import makes there. [`Bucket`] and [`Dir`] are the two kinds.
#[async_trait]
pub trait Target: Send + Sync + std::fmt::Debug {
    /// How a user names it.
    fn display(&self) -> String;

    /// The name `rel` is known by in [`Target::strays`] (a bucket: the relative key; a
    /// directory: the path it gets).
    fn keep_name(&self, rel: &str) -> String;

    /// Make what was written so far durable before the import state records it.
    async fn make_durable(&self) -> Result<()>;

    /// Can objects written here carry an Object Lock (a bucket made with it)? A folder keeps
    /// none and refuses none.
    async fn takes_object_lock(&self) -> Result<bool> {
        Ok(true)
    }

    /// Abort multipart uploads left open under the target (by an interrupted import); how
    /// many. Only called while the import holds its state's lock or lease.
    async fn sweep_uploads(&self) -> Result<usize>;

    /// A writer for `obj` at `rel` (its bytes become visible on commit).
    async fn open(
        &self,
        rel: &str,
        obj: &ObjectEntry,
        shared: &Arc<Shared>,
    ) -> Result<Box<dyn ObjectWriter>>;

    /// Does the destination hold exactly `entry` for `rel`?
    async fn holds(&self, rel: &str, entry: &IndexEntry) -> Result<bool>;

    /// Where a move to `to_rel` of `entry`'s content landed when its record was lost (an
    /// interrupted call, the original already gone).
    async fn moved_unrecorded(&self, to_rel: &str, entry: &IndexEntry) -> Result<Option<String>>;

    /// Put the content of `from_rel` (holding `entry`) at `to_rel`, with `headers` when the
    /// bundle gives them and `last_modified`; returns the new place.
    async fn move_object(
        &self,
        from_rel: &str,
        entry: &IndexEntry,
        to_rel: &str,
        headers: Option<&ObjectHeaders>,
        last_modified: &str,
    ) -> Result<String>;

    /// Give the object at `rel` (holding `entry`, confirmed) `headers`, its bytes untouched (a
    /// metadata-only entry, the object now `last_modified`); its new key index entry.
    async fn restate(
        &self,
        rel: &str,
        entry: &IndexEntry,
        headers: &ObjectHeaders,
        last_modified: &str,
    ) -> Result<IndexEntry>;

    /// When `rel` no longer is `entry`'s place: does it hold `entry`'s content with `headers`
    /// already (restated by an interrupted call that did not record it)? Its entry then.
    async fn restated_unrecorded(
        &self,
        rel: &str,
        entry: &IndexEntry,
        headers: &ObjectHeaders,
    ) -> Result<Option<IndexEntry>>;

    /// Remove `rel` (at `entry`'s place when known); a missing key is fine.
    async fn delete(&self, rel: &str, entry: Option<&IndexEntry>) -> Result<()>;

    /// Remove many keys (each at its entry's place when known). Missing keys are fine.
    async fn delete_many(&self, items: &[(&str, Option<&IndexEntry>)]) -> Result<()>;

    /// Everything in the destination whose [`Target::keep_name`] is not in `keep`.
    async fn strays(&self, keep: &KeepSet) -> Result<Vec<String>>;

    /// Remove strays found by [`Target::strays`] (a bucket: DeleteObjects of 1,000 keys, four
    /// at once; a directory: 16 files at once).
    async fn remove_strays(&self, strays: &[String]) -> Result<()>;

    /// The relative key ferry would have written at each of `strays` (a bucket: the stray
    /// itself; a directory: its path, or for an `_escaped/` name the key its map records),
    /// `None` where no key would have been written. With the import state's index entry of that
    /// key, [`Target::is_place`] tells whether ferry wrote what is there.
    async fn stray_keys(&self, strays: &[String]) -> Result<Vec<Option<String>>>;

    /// Is `stray` the place `entry` (the index entry of its key) records?
    fn is_place(&self, _stray: &str, _entry: &IndexEntry) -> bool {
        true
    }
}

/// The key relative to the source prefix (what is replayed under the destination prefix).
pub fn relative<'k>(key: &'k str, source_prefix: &str) -> &'k str {
    key.strip_prefix(source_prefix).unwrap_or(key)
}

/// State shared by the writers of one import pass: PUTs in flight and what landed.
pub struct Shared {
    puts: Mutex<JoinSet<Result<(String, IndexEntry)>>>,
    landed: Mutex<Vec<(String, IndexEntry)>>,
    slots: Arc<Semaphore>,
}

impl Shared {
    pub fn new(concurrency: usize) -> Arc<Self> {
        Arc::new(Shared {
            puts: Mutex::new(JoinSet::new()),
            landed: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    fn landed(&self, key: String, entry: IndexEntry) {
        self.landed.lock().expect("lock").push((key, entry));
    }

    /// Report a failed PUT as soon as it is known.
    fn check(&self) -> Result<()> {
        let mut set = self.puts.lock().expect("lock");
        while let Some(done) = set.try_join_next() {
            let (k, e) = done.expect("put task")?;
            self.landed(k, e);
        }
        Ok(())
    }

    /// Wait for every PUT; returns what landed since the last call.
    pub async fn drain(&self) -> Result<Vec<(String, IndexEntry)>> {
        let mut set = std::mem::take(&mut *self.puts.lock().expect("lock"));
        let mut first_err = None;
        while let Some(done) = set.join_next().await {
            match done.expect("put task") {
                Ok((k, e)) => self.landed(k, e),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let landed = std::mem::take(&mut *self.landed.lock().expect("lock"));
        match first_err {
            Some(e) => Err(e),
            None => Ok(landed),
        }
    }
}

/// One object on its way into a target: [`EntryWriter`] for a boxed writer of any kind.
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Make the object visible (or hand it to a PUT in flight, see [`Shared::drain`]).
    async fn commit(self: Box<Self>) -> Result<()>;
    /// Undo what was started and wait until it is undone.
    async fn abort(self: Box<Self>);
}

impl EntryWriter for Box<dyn ObjectWriter> {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        ObjectWriter::write(self.as_mut(), chunk).await
    }
    async fn commit(self) -> Result<()> {
        ObjectWriter::commit(self).await
    }
    async fn abort(self) {
        ObjectWriter::abort(self).await
    }
}

/// The key index entry of `obj` written at `place`; a folder (`kept`) also records the tags,
/// Object Lock and checksum it cannot hold.
fn index_entry(obj: &ObjectEntry, place: String, kept: bool) -> IndexEntry {
    IndexEntry {
        etag: obj.etag.clone(),
        sha256: obj.sha256.clone(),
        crc32: obj.crc32,
        size: obj.size,
        place,
        kept: if kept { Kept::of(&obj.headers) } else { None },
    }
}

/// The import pass's sink: every object of a volume into the target.
pub struct TargetSink {
    pub target: Arc<dyn Target>,
    pub source_prefix: String,
    pub shared: Arc<Shared>,
    /// Write objects without their Object Lock (`--object-lock skip`).
    pub unlock: bool,
    /// The import's screening, and the bundle's job and sequence (where quarantined objects
    /// go).
    pub screen: Option<Arc<crate::import::screen::Screen>>,
    pub bundle: (String, u64),
}

impl EntrySink for TargetSink {
    type Writer = Box<dyn ObjectWriter>;
    async fn open(&mut self, obj: &ObjectEntry) -> Result<Option<Box<dyn ObjectWriter>>> {
        self.shared.check()?;
        if obj.split.is_some() {
            // A part of an object split across volumes: verified here, written whole once
            // the volume of its last part is (see `import::run::joined`).
            return Ok(None);
        }
        let rel = relative(&obj.key, &self.source_prefix).to_string();
        let writer = match obj.headers.for_import(self.unlock, crate::clock::now_ms()) {
            Some(headers) => {
                let written = ObjectEntry {
                    headers,
                    ..obj.clone()
                };
                self.target.open(&rel, &written, &self.shared).await?
            }
            None => self.target.open(&rel, obj, &self.shared).await?,
        };
        match &self.screen {
            Some(s) => s
                .writer(writer, obj, &rel, (&self.bundle.0, self.bundle.1))
                .map(Some),
            None => Ok(Some(writer)),
        }
    }
}
/// Keys (or paths) to keep, as the first 128 bits of their SHA-256: 16 bytes a key however
/// long it is, and no collision anyone can find. A sorted list, not a hash set: 16 bytes a key
/// instead of ~34 (a hash table's spare capacity), and no second table while it grows.
#[derive(Default)]
pub struct KeepSet {
    keys: Vec<[u8; 16]>,
    sorted: bool,
}

impl KeepSet {
    fn digest(key: &str) -> [u8; 16] {
        let d = Sha256::digest(key.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    }

    pub fn insert(&mut self, key: &str) {
        self.keys.push(Self::digest(key));
        self.sorted = false;
    }

    /// Sort it for [`KeepSet::contains`] (after the last insert).
    pub fn finish(&mut self) {
        self.keys.sort_unstable();
        self.keys.dedup();
        self.keys.shrink_to_fit();
        self.sorted = true;
    }

    pub fn contains(&self, key: &str) -> bool {
        assert!(self.sorted, "KeepSet::finish is called before contains");
        self.keys.binary_search(&Self::digest(key)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::KeepSet;

    #[test]
    fn a_keep_set_holds_what_was_inserted_and_nothing_else() {
        let mut keep = KeepSet::default();
        for k in ["b/2", "a/1", "c/3", "a/1"] {
            keep.insert(k);
        }
        keep.finish();
        assert_eq!(keep.keys.len(), 3);
        assert!(keep.contains("a/1") && keep.contains("b/2") && keep.contains("c/3"));
        assert!(!keep.contains("a/2") && !keep.contains(""));
    }
}
