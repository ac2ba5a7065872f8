//! Where an import lands: an S3 bucket/prefix or a local directory. Each target writes an
//! object so that it becomes visible only once committed (S3: a PUT or a multipart upload
//! completed on commit; directory: a temporary file renamed on commit), checks that a key holds
//! the content the key index says, moves, deletes, and finds keys a baseline does not list.
//! A directory target never writes outside its root: unsafe keys get escaped names.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::archive::is_safe_path;
use crate::config::S3Location;
use crate::error::{Error, Result, io_at};
use crate::ledger::IndexEntry;
use crate::manifest::{ESCAPED_DIR, ObjectEntry, ObjectHeaders};
use crate::s3::{MultipartUpload, Store};
use crate::verify::{EntrySink, EntryWriter};

/// Objects up to this size are buffered and PUT whole (several at once).
pub const SMALL_OBJECT: u64 = 8 * 1024 * 1024;

/// Files up to this size are held in memory until verified and written with one blocking call
/// (create, write, mtime, rename), rather than a round trip to a blocking thread per step.
pub const SMALL_FILE: u64 = 1024 * 1024;
/// Folder of the import's own files inside a directory target (never a key's path).
pub const STATE_DIR: &str = ".ferry";

/// An import destination.
#[derive(Debug, Clone)]
pub enum Target {
    S3 {
        store: Store,
        dest: S3Location,
        part_size: u64,
    },
    Dir {
        root: PathBuf,
    },
}

/// The key relative to the source prefix (what is replayed under the destination prefix).
pub fn relative<'k>(key: &'k str, source_prefix: &str) -> &'k str {
    key.strip_prefix(source_prefix).unwrap_or(key)
}

impl Target {
    /// Make what was written so far durable before the import state records it (a directory:
    /// one filesystem sync; a bucket: nothing to do, S3 acknowledges only durable writes).
    pub async fn make_durable(&self) -> Result<()> {
        match self {
            Target::S3 { .. } => Ok(()),
            Target::Dir { root } => crate::durable::sync_filesystem(root).await,
        }
    }

    /// How a user names it.
    pub fn display(&self) -> String {
        match self {
            Target::S3 { dest, .. } => dest.to_string(),
            Target::Dir { root } => root.display().to_string(),
        }
    }

    /// The destination key of a source key (S3 targets).
    pub fn dest_key(&self, rel: &str) -> String {
        match self {
            Target::S3 { dest, .. } => dest.key(rel),
            Target::Dir { .. } => rel.to_string(),
        }
    }

    /// The path (relative to the root) a key gets: the key itself when it is a safe relative
    /// path that does not collide with a file, a folder or a symlink already there; else
    /// `_escaped/<sha256 of the key>`.
    pub fn place(root: &Path, rel: &str) -> String {
        let first = rel.split('/').next().unwrap_or_default();
        let escaped = format!(
            "{ESCAPED_DIR}/{}",
            hex::encode(Sha256::digest(rel.as_bytes()))
        );
        if !is_safe_path(rel) || first == STATE_DIR || first == ESCAPED_DIR {
            return escaped;
        }
        let mut p = root.to_path_buf();
        let parts: Vec<&str> = rel.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            p.push(part);
            match std::fs::symlink_metadata(&p) {
                Err(_) => return rel.to_string(),
                Ok(m) if m.file_type().is_symlink() => return escaped,
                Ok(m) if i + 1 < parts.len() && !m.is_dir() => return escaped,
                Ok(m) if i + 1 == parts.len() && !m.is_file() => return escaped,
                Ok(_) => {}
            }
        }
        rel.to_string()
    }

    /// Refuse any path that could leave the root.
    fn inside(root: &Path, place: &str) -> Result<PathBuf> {
        let p = Path::new(place);
        if p.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(Error::config(
                "key index",
                format!(
                    "path `{place}` would leave {}; the index is damaged",
                    root.display()
                ),
            ));
        }
        Ok(root.join(p))
    }

    /// Create the folders of `place` under `root`, refusing symlinks.
    async fn make_parents(root: &Path, place: &str) -> Result<PathBuf> {
        let (root, place) = (root.to_path_buf(), place.to_string());
        let at = root.clone();
        tokio::task::spawn_blocking(move || Self::make_parents_now(&root, &place))
            .await
            .map_err(|e| Error::Io {
                op: "creating directory",
                path: at,
                source: std::io::Error::other(e),
            })?
    }

    /// [`Target::make_parents`], on the calling (blocking) thread.
    fn make_parents_now(root: &Path, place: &str) -> Result<PathBuf> {
        let path = Self::inside(root, place)?;
        let mut dir = root.to_path_buf();
        let parts: Vec<&str> = place.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() && !m.file_type().is_symlink() => {}
                Ok(_) => {
                    return Err(Error::config(
                        "directory target",
                        format!(
                            "`{}` is not a plain folder; refusing to write through it",
                            dir.display()
                        ),
                    ));
                }
                Err(_) => match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_at("creating directory", &dir)(e)),
                },
            }
        }
        Ok(path)
    }

    /// The temporary name a file is written under before it is renamed into place.
    fn temp_name(path: &Path) -> PathBuf {
        path.with_file_name(format!(
            ".{}.ferry-{}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// Open a writer for `obj` (its bytes become visible on commit).
    async fn open(
        &self,
        rel: &str,
        obj: &ObjectEntry,
        shared: &Arc<Shared>,
    ) -> Result<ImportWriter> {
        let entry = |place: String| IndexEntry {
            etag: obj.etag.clone(),
            sha256: obj.sha256.clone(),
            crc32: obj.crc32,
            size: obj.size,
            place,
        };
        Ok(match self {
            Target::S3 {
                store,
                dest,
                part_size,
            } => {
                let key = dest.key(rel);
                if obj.size <= SMALL_OBJECT {
                    ImportWriter::Buffer {
                        shared: shared.clone(),
                        store: store.clone(),
                        bucket: dest.bucket.clone(),
                        key,
                        obj: obj.clone(),
                        // At most SMALL_OBJECT: sized by the manifest only below that.
                        buf: BytesMut::with_capacity(obj.size.min(SMALL_OBJECT) as usize),
                    }
                } else {
                    let part = (*part_size)
                        .max(obj.size / 9_000 + 1)
                        .min(crate::config::MAX_PART_SIZE);
                    ImportWriter::Multipart {
                        shared: shared.clone(),
                        upload: store.multipart(&dest.bucket, &key, part, 4, &obj.headers),
                        obj: obj.clone(),
                    }
                }
            }
            Target::Dir { root } => {
                let place = Self::place(root, rel);
                let mtime = time::OffsetDateTime::parse(
                    &obj.last_modified,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
                .map(std::time::SystemTime::from);
                if obj.size <= SMALL_FILE {
                    // Held until verified, then written in one go on a blocking thread.
                    Self::inside(root, &place)?;
                    return Ok(ImportWriter::SmallFile {
                        shared: shared.clone(),
                        root: root.clone(),
                        key: obj.key.clone(),
                        buf: BytesMut::with_capacity(obj.size as usize),
                        entry: entry(place.clone()),
                        place,
                        mtime,
                    });
                }
                let path = Self::make_parents(root, &place).await?;
                let tmp = Self::temp_name(&path);
                let tmp_path = tmp.clone();
                let file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .await
                    .map_err(io_at("creating", &tmp))?;
                ImportWriter::File {
                    shared: shared.clone(),
                    file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
                    tmp: TempPath(Some(tmp_path)),
                    path,
                    key: obj.key.clone(),
                    entry: entry(place),
                    mtime,
                }
            }
        })
    }

    /// Does the destination hold exactly `entry` for `rel`?
    pub async fn holds(&self, rel: &str, entry: &IndexEntry) -> Result<bool> {
        match self {
            Target::S3 { store, dest, .. } => {
                Ok(match store.head(&dest.bucket, &dest.key(rel)).await? {
                    Some((etag, size)) => etag == entry.place && size == entry.size,
                    None => false,
                })
            }
            Target::Dir { root } => {
                let path = Self::inside(root, &entry.place)?;
                Ok(file_sha256(&path).await? == Some((entry.size, entry.sha256.clone())))
            }
        }
    }

    /// Where a move to `to_rel` of `entry`'s content landed when its record was lost (an
    /// interrupted call, the original already gone). A directory renames, so the file at
    /// `to_rel` is hashed. A bucket never gets here: the copy is recorded before the original
    /// is removed, so an unrecorded copy without its original is not this import's.
    pub async fn moved_unrecorded(
        &self,
        to_rel: &str,
        entry: &IndexEntry,
    ) -> Result<Option<String>> {
        match self {
            Target::S3 { .. } => Ok(None),
            Target::Dir { root } => {
                let place = Self::place(root, to_rel);
                let path = Self::inside(root, &place)?;
                Ok(
                    (file_sha256(&path).await? == Some((entry.size, entry.sha256.clone())))
                        .then_some(place),
                )
            }
        }
    }

    /// Put the content of `from` (holding `entry`) at `to_rel`, with `headers` when the bundle
    /// gives them; returns the new place. A bucket copies (the caller removes the original once
    /// the copy is recorded); a directory renames, and gives the file `to`'s LastModified.
    pub async fn move_object(
        &self,
        from_rel: &str,
        entry: &IndexEntry,
        to_rel: &str,
        headers: Option<&ObjectHeaders>,
        last_modified: &str,
    ) -> Result<String> {
        match self {
            Target::S3 { store, dest, .. } => {
                let (from, to) = (dest.key(from_rel), dest.key(to_rel));
                store
                    .copy(&dest.bucket, &from, &to, entry.size, headers)
                    .await
            }
            Target::Dir { root } => {
                let from = Self::inside(root, &entry.place)?;
                let place = Self::place(root, to_rel);
                let to = Self::make_parents(root, &place).await?;
                tokio::fs::rename(&from, &to)
                    .await
                    .map_err(io_at("renaming", &from))?;
                if let Ok(m) = time::OffsetDateTime::parse(
                    last_modified,
                    &time::format_description::well_known::Rfc3339,
                ) {
                    let (to, m) = (to.clone(), std::time::SystemTime::from(m));
                    let _ = tokio::task::spawn_blocking(move || {
                        std::fs::File::options()
                            .write(true)
                            .open(&to)
                            .and_then(|f| f.set_modified(m))
                    })
                    .await;
                }
                prune_empty(root, &from).await;
                Ok(place)
            }
        }
    }

    /// Remove `rel` (at `entry`'s place when known); a missing key is fine.
    pub async fn delete(&self, rel: &str, entry: Option<&IndexEntry>) -> Result<()> {
        match self {
            Target::S3 { store, dest, .. } => store.delete(&dest.bucket, &dest.key(rel)).await,
            Target::Dir { root } => {
                let place = match entry {
                    Some(e) => e.place.clone(),
                    None => Self::place(root, rel),
                };
                let path = Self::inside(root, &place)?;
                match tokio::fs::symlink_metadata(&path).await {
                    Ok(m) if m.is_file() => {
                        tokio::fs::remove_file(&path)
                            .await
                            .map_err(io_at("removing", &path))?;
                        prune_empty(root, &path).await;
                    }
                    _ => {}
                }
                Ok(())
            }
        }
    }

    /// Remove many keys (each at its entry's place when known): a bucket by DeleteObjects of
    /// up to 1,000 keys, a directory several files at a time. Missing keys are fine.
    pub async fn delete_many(&self, items: &[(&str, Option<&IndexEntry>)]) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        match self {
            Target::S3 { store, dest, .. } => {
                let keys: Vec<String> = items.iter().map(|(rel, _)| dest.key(rel)).collect();
                futures::stream::iter(keys.chunks(1000))
                    .map(|chunk| store.delete_batch(&dest.bucket, chunk))
                    .buffer_unordered(4)
                    .try_collect::<Vec<()>>()
                    .await
                    .map(drop)
            }
            Target::Dir { .. } => futures::stream::iter(items.iter())
                .map(|(rel, e)| self.delete(rel, *e))
                .buffer_unordered(16)
                .try_collect::<Vec<()>>()
                .await
                .map(drop),
        }
    }

    /// Everything in the destination that is not in `keep` (relative keys for S3, places
    /// for a directory), as (relative key or place) strings.
    pub async fn strays(&self, keep: &KeepSet) -> Result<Vec<String>> {
        match self {
            Target::S3 { store, dest, .. } => {
                let mut out = Vec::new();
                let mut lister = store.list(&dest.bucket, &dest.prefix);
                while let Some(page) = lister.next_page().await? {
                    for r in page {
                        let rel = relative(&r.key, &dest.prefix);
                        if !keep.contains(rel) {
                            out.push(rel.to_string());
                        }
                    }
                }
                Ok(out)
            }
            Target::Dir { root } => {
                let mut out = Vec::new();
                let mut stack = vec![(root.clone(), String::new())];
                while let Some((dir, rel)) = stack.pop() {
                    let mut rd = tokio::fs::read_dir(&dir)
                        .await
                        .map_err(io_at("reading directory", &dir))?;
                    while let Some(e) = rd
                        .next_entry()
                        .await
                        .map_err(io_at("reading directory", &dir))?
                    {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let place = if rel.is_empty() {
                            name.clone()
                        } else {
                            format!("{rel}/{name}")
                        };
                        if rel.is_empty() && name == STATE_DIR {
                            continue;
                        }
                        let kind = e.file_type().await.map_err(io_at("reading", &e.path()))?;
                        if kind.is_dir() {
                            stack.push((e.path(), place));
                        } else if !keep.contains(&place) {
                            out.push(place);
                        }
                    }
                }
                out.sort();
                Ok(out)
            }
        }
    }

    /// Remove a stray found by `strays`.
    pub async fn remove_stray(&self, stray: &str) -> Result<()> {
        match self {
            Target::S3 { .. } => self.delete(stray, None).await,
            Target::Dir { root } => {
                let path = Self::inside(root, stray)?;
                tokio::fs::remove_file(&path)
                    .await
                    .map_err(io_at("removing", &path))?;
                prune_empty(root, &path).await;
                Ok(())
            }
        }
    }
}

/// Remove folders left empty by a removal, up to the root.
async fn prune_empty(root: &Path, removed: &Path) {
    let mut dir = removed.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || tokio::fs::remove_dir(d).await.is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Size and SHA-256 of a regular file (not through a symlink); `None` if it is not there.
pub async fn file_sha256(path: &Path) -> Result<Option<(u64, String)>> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) if m.is_file() => {}
        _ => return Ok(None),
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path).map_err(io_at("reading", &path))?;
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let got = std::io::Read::read(&mut f, &mut buf).map_err(io_at("reading", &path))?;
            if got == 0 {
                break;
            }
            sha.update(&buf[..got]);
            n += got as u64;
        }
        Ok(Some((n, hex::encode(sha.finalize()))))
    })
    .await
    .expect("hashing task")
}

/// A temporary file removed on drop unless persisted.
pub struct TempPath(Option<PathBuf>);

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
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

/// One object on its way into the target.
pub enum ImportWriter {
    Buffer {
        shared: Arc<Shared>,
        store: Store,
        bucket: String,
        key: String,
        obj: ObjectEntry,
        buf: BytesMut,
    },
    Multipart {
        shared: Arc<Shared>,
        upload: MultipartUpload,
        obj: ObjectEntry,
    },
    File {
        shared: Arc<Shared>,
        file: tokio::io::BufWriter<tokio::fs::File>,
        tmp: TempPath,
        path: PathBuf,
        key: String,
        entry: IndexEntry,
        mtime: Option<std::time::SystemTime>,
    },
    SmallFile {
        shared: Arc<Shared>,
        root: PathBuf,
        place: String,
        key: String,
        buf: BytesMut,
        entry: IndexEntry,
        mtime: Option<std::time::SystemTime>,
    },
}

impl EntryWriter for ImportWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        match self {
            ImportWriter::Buffer { buf, .. } | ImportWriter::SmallFile { buf, .. } => {
                buf.extend_from_slice(&chunk);
                Ok(())
            }
            ImportWriter::Multipart { upload, .. } => {
                upload.write_all(&chunk).await.map_err(|e| Error::Stream {
                    bucket: upload.bucket().to_string(),
                    key: upload.key().to_string(),
                    source: Box::new(e),
                })
            }
            ImportWriter::File { file, tmp, .. } => {
                let p = tmp.0.clone().unwrap_or_default();
                file.write_all(&chunk).await.map_err(io_at("writing", &p))
            }
        }
    }

    async fn commit(self) -> Result<()> {
        match self {
            ImportWriter::Buffer {
                shared,
                store,
                bucket,
                key,
                obj,
                buf,
            } => {
                shared.check()?;
                let permit = shared.slots.clone().acquire_owned().await.expect("open");
                shared.puts.lock().expect("lock").spawn(async move {
                    let etag = store
                        .put_object(&bucket, &key, buf.freeze(), &obj.headers)
                        .await?;
                    drop(permit);
                    Ok((obj.key.clone(), index_entry(&obj, etag)))
                });
                Ok(())
            }
            ImportWriter::Multipart {
                shared,
                upload,
                obj,
            } => {
                let etag = upload.finish_etag().await?;
                shared.landed(obj.key.clone(), index_entry(&obj, etag));
                Ok(())
            }
            ImportWriter::File {
                shared,
                mut file,
                mut tmp,
                path,
                key,
                entry,
                mtime,
            } => {
                let t = tmp.0.clone().unwrap_or_default();
                file.flush().await.map_err(io_at("writing", &t))?;
                let file = file.into_inner();
                if let Some(m) = mtime {
                    let std = file.into_std().await;
                    let _ = std.set_modified(m);
                }
                tokio::fs::rename(&t, &path)
                    .await
                    .map_err(io_at("renaming", &t))?;
                tmp.0 = None;
                shared.landed(key, entry);
                Ok(())
            }
            ImportWriter::SmallFile {
                shared,
                root,
                place,
                key,
                buf,
                entry,
                mtime,
            } => {
                let at = root.join(&place);
                tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    let path = Target::make_parents_now(&root, &place)?;
                    let mut tmp = TempPath(Some(Target::temp_name(&path)));
                    let t = tmp.0.clone().unwrap_or_default();
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&t)
                        .map_err(io_at("creating", &t))?;
                    f.write_all(&buf).map_err(io_at("writing", &t))?;
                    if let Some(m) = mtime {
                        let _ = f.set_modified(m);
                    }
                    drop(f);
                    std::fs::rename(&t, &path).map_err(io_at("renaming", &t))?;
                    tmp.0 = None;
                    Ok::<_, Error>(())
                })
                .await
                .map_err(|e| Error::Io {
                    op: "writing",
                    path: at,
                    source: std::io::Error::other(e),
                })??;
                shared.landed(key, entry);
                Ok(())
            }
        }
    }

    async fn abort(self) {
        match self {
            // Nothing was sent yet.
            ImportWriter::Buffer { .. } => {}
            ImportWriter::Multipart { upload, .. } => upload.abort().await,
            // Dropping the temporary path removes the file; a small file was never written.
            ImportWriter::File { .. } | ImportWriter::SmallFile { .. } => {}
        }
    }
}

fn index_entry(obj: &ObjectEntry, place: String) -> IndexEntry {
    IndexEntry {
        etag: obj.etag.clone(),
        sha256: obj.sha256.clone(),
        crc32: obj.crc32,
        size: obj.size,
        place,
    }
}

/// The import pass's sink: every object of a volume into the target.
pub struct TargetSink {
    pub target: Target,
    pub source_prefix: String,
    pub shared: Arc<Shared>,
}

impl EntrySink for TargetSink {
    type Writer = ImportWriter;
    async fn open(&mut self, obj: &ObjectEntry) -> Result<Option<ImportWriter>> {
        self.shared.check()?;
        let rel = relative(&obj.key, &self.source_prefix).to_string();
        self.target.open(&rel, obj, &self.shared).await.map(Some)
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
