//! The directory target: a file is written under a temporary name and renamed on commit, and
//! nothing is ever written outside the root (unsafe keys get escaped names, recorded in the
//! escaped map).

use super::*;

/// A local directory: a file is written under a temporary name and renamed on commit, and
/// nothing is ever written outside the root (unsafe keys get escaped names).
#[derive(Debug, Clone)]
pub struct Dir {
    pub root: PathBuf,
}

impl Dir {
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

    /// Create the folders of `place` under `root`, refusing symlinks; the path of `place`.
    pub(super) fn make_parents_now(root: &Path, place: &str) -> Result<PathBuf> {
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
    pub(super) fn temp_name(path: &Path) -> PathBuf {
        path.with_file_name(format!(
            ".{}.ferry-{}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            uuid::Uuid::new_v4().simple()
        ))
    }
}

#[async_trait]
impl Target for Dir {
    fn display(&self) -> String {
        self.root.display().to_string()
    }

    fn keep_name(&self, rel: &str) -> String {
        Self::place(&self.root, rel)
    }

    /// One filesystem sync.
    async fn make_durable(&self) -> Result<()> {
        crate::format::durable::sync_filesystem(&self.root).await
    }

    async fn sweep_uploads(&self) -> Result<usize> {
        Ok(0)
    }

    async fn open(
        &self,
        rel: &str,
        obj: &ObjectEntry,
        shared: &Arc<Shared>,
    ) -> Result<Box<dyn ObjectWriter>> {
        let root = &self.root;
        let place = Self::place(root, rel);
        note_escaped(root, &place, rel).await?;
        let entry = index_entry(obj, place.clone(), true);
        let mtime = time::OffsetDateTime::parse(
            &obj.last_modified,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()
        .map(std::time::SystemTime::from);
        if obj.size <= SMALL_FILE {
            // Held until verified, then written in one go on a blocking thread.
            Self::inside(root, &place)?;
            return Ok(Box::new(SmallFile {
                shared: shared.clone(),
                root: root.clone(),
                key: obj.key.clone(),
                buf: BytesMut::with_capacity(obj.size as usize),
                entry,
                place,
                mtime,
            }));
        }
        let (r, p) = (root.clone(), place.clone());
        let (path, file) = tokio::task::spawn_blocking(move || {
            in_parents(&r, &p, |path| {
                let tmp = Self::temp_name(path);
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .map(|f| (tmp, f))
            })
        })
        .await
        .map_err(|e| Error::Io {
            op: "creating",
            path: root.join(&place),
            source: std::io::Error::other(e),
        })??;
        let (tmp_path, file) = file.map_err(io_at("creating", &path))?;
        let file = tokio::fs::File::from_std(file);
        Ok(Box::new(TempFile {
            shared: shared.clone(),
            file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
            tmp: TempPath(Some(tmp_path)),
            path,
            key: obj.key.clone(),
            entry,
            mtime,
        }))
    }

    async fn holds(&self, _rel: &str, entry: &IndexEntry) -> Result<bool> {
        let path = Self::inside(&self.root, &entry.place)?;
        Ok(file_sha256(&path).await? == Some((entry.size, entry.sha256.clone())))
    }

    /// A directory renames, so the file at `to_rel` is hashed.
    async fn moved_unrecorded(&self, to_rel: &str, entry: &IndexEntry) -> Result<Option<String>> {
        let place = Self::place(&self.root, to_rel);
        let path = Self::inside(&self.root, &place)?;
        Ok(
            (file_sha256(&path).await? == Some((entry.size, entry.sha256.clone())))
                .then_some(place),
        )
    }

    /// A rename; the file gets `to`'s LastModified.
    async fn move_object(
        &self,
        _from_rel: &str,
        entry: &IndexEntry,
        to_rel: &str,
        _headers: Option<&ObjectHeaders>,
        last_modified: &str,
    ) -> Result<String> {
        let root = &self.root;
        let from = Self::inside(root, &entry.place)?;
        let place = Self::place(root, to_rel);
        note_escaped(root, &place, to_rel).await?;
        let (r, p, f) = (root.clone(), place.clone(), from.clone());
        let (to, renamed) =
            tokio::task::spawn_blocking(move || in_parents(&r, &p, |to| std::fs::rename(&f, to)))
                .await
                .map_err(|e| Error::Io {
                    op: "renaming",
                    path: from.clone(),
                    source: std::io::Error::other(e),
                })??;
        renamed.map_err(io_at("renaming", &from))?;
        set_mtime(to, last_modified).await;
        prune_empty(root, &from).await;
        Ok(place)
    }

    /// The file's bytes stay as they are; it gets the object's LastModified, and the key
    /// index records the tags, Object Lock and checksum (the rest of the headers a folder does
    /// not keep).
    async fn restate(
        &self,
        _rel: &str,
        entry: &IndexEntry,
        headers: &ObjectHeaders,
        last_modified: &str,
    ) -> Result<IndexEntry> {
        use crate::import::ledger::Kept;
        set_mtime(Self::inside(&self.root, &entry.place)?, last_modified).await;
        let mut kept = Kept::of(headers).map(|k| *k).unwrap_or_default();
        // The checksum belongs to the bytes, which did not change.
        if let Some(old) = &entry.kept {
            kept.checksum_algorithm = old.checksum_algorithm.clone();
            kept.checksum_type = old.checksum_type.clone();
            kept.checksum = old.checksum.clone();
        }
        Ok(IndexEntry {
            kept: (kept != Kept::default()).then(|| Box::new(kept)),
            ..entry.clone()
        })
    }

    /// A restate leaves the file alone: it is still `entry`'s place, or not this import's.
    async fn restated_unrecorded(
        &self,
        _rel: &str,
        _entry: &IndexEntry,
        _headers: &ObjectHeaders,
    ) -> Result<Option<IndexEntry>> {
        Ok(None)
    }

    async fn delete(&self, rel: &str, entry: Option<&IndexEntry>) -> Result<()> {
        let root = &self.root;
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

    /// Sixteen files at a time.
    async fn delete_many(&self, items: &[(&str, Option<&IndexEntry>)]) -> Result<()> {
        for sixteen in items.chunks(16) {
            let files = sixteen.iter().map(|(rel, e)| self.delete(rel, *e));
            futures::future::try_join_all(files).await?;
        }
        Ok(())
    }

    async fn strays(&self, keep: &KeepSet) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.clone(), String::new())];
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

    async fn stray_keys(&self, strays: &[String]) -> Result<Vec<Option<String>>> {
        let escaped = format!("{ESCAPED_DIR}/");
        let wanted: std::collections::HashSet<&str> = strays
            .iter()
            .filter(|s| s.starts_with(&escaped))
            .map(String::as_str)
            .collect();
        let mut map = if wanted.is_empty() {
            HashMap::new()
        } else {
            read_escaped_map(&self.root, &wanted).await?
        };
        Ok(strays
            .iter()
            .map(|s| {
                if s.starts_with(&escaped) {
                    map.remove(s.as_str())
                } else {
                    Some(s.clone())
                }
            })
            .collect())
    }

    fn is_place(&self, stray: &str, entry: &IndexEntry) -> bool {
        entry.place == stray
    }

    async fn remove_strays(&self, strays: &[String]) -> Result<()> {
        for sixteen in strays.chunks(16) {
            let files = sixteen.iter().map(|stray| async move {
                let path = Self::inside(&self.root, stray)?;
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => {}
                    // Removed already (a resumed removal).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_at("removing", &path)(e)),
                }
                prune_empty(&self.root, &path).await;
                Ok(())
            });
            futures::future::try_join_all(files).await?;
        }
        Ok(())
    }
}

/// The map of `_escaped/` names to the keys they hold, one JSON line each
/// (`{"place": "_escaped/…", "key": "…"}`, the key relative to the source prefix), so a person
/// can tell what an escaped file is and a baseline can tell that ferry wrote it.
pub const ESCAPED_MAP: &str = "escaped.jsonl";

/// The longest line of the escaped map that is read (a key is at most 1,024 bytes; a longer
/// line is not one ferry wrote and is skipped).
pub(super) const MAX_ESCAPED_LINE: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
pub(super) struct EscapedLine {
    place: String,
    key: String,
}

/// Record in the escaped map that `place` holds `rel` (before its file is written, so a file
/// under `_escaped/` is always named in the map). An escaped name is the digest of its key: a
/// line never goes stale, and a repeated one is harmless.
pub(super) async fn note_escaped(root: &Path, place: &str, rel: &str) -> Result<()> {
    if !place.starts_with(&format!("{ESCAPED_DIR}/")) {
        return Ok(());
    }
    let dir = root.join(STATE_DIR);
    let path = dir.join(ESCAPED_MAP);
    let mut line = serde_json::to_vec(&EscapedLine {
        place: place.to_string(),
        key: rel.to_string(),
    })
    .expect("a line serialises");
    line.push(b'\n');
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        std::fs::create_dir_all(&dir).map_err(io_at("creating", &dir))?;
        // One write of one line in append mode: concurrent writers never interleave a line.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&line))
            .map_err(io_at("appending to", &path))
    })
    .await
    .map_err(|e| Error::Io {
        op: "appending to",
        path: root.join(STATE_DIR).join(ESCAPED_MAP),
        source: std::io::Error::other(e),
    })?
}

/// The keys of those `wanted` places the escaped map of the directory at `root` names (place →
/// key); empty if there is no map. The map is read line by line (memory holds what is wanted,
/// however long it grew); lines that do not parse, are too long, or whose place is not the
/// digest of their key are skipped.
pub async fn read_escaped_map(
    root: &Path,
    wanted: &std::collections::HashSet<&str>,
) -> Result<HashMap<String, String>> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let path = root.join(STATE_DIR).join(ESCAPED_MAP);
    let file = match tokio::fs::symlink_metadata(&path).await {
        Ok(m) if m.is_file() => tokio::fs::File::open(&path)
            .await
            .map_err(io_at("reading", &path))?,
        _ => return Ok(HashMap::new()),
    };
    let mut reader = tokio::io::BufReader::new(file);
    let mut out = HashMap::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_ESCAPED_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(io_at("reading", &path))?;
        if n == 0 {
            break;
        }
        if line.len() > MAX_ESCAPED_LINE && !line.ends_with(b"\n") {
            // Too long: skip to the end of this line.
            let mut rest = Vec::new();
            reader
                .read_until(b'\n', &mut rest)
                .await
                .map_err(io_at("reading", &path))?;
            continue;
        }
        if let Ok(l) = serde_json::from_slice::<EscapedLine>(line.trim_ascii_end())
            && wanted.contains(l.place.as_str())
            && l.place
                == format!(
                    "{ESCAPED_DIR}/{}",
                    hex::encode(Sha256::digest(l.key.as_bytes()))
                )
        {
            out.insert(l.place, l.key);
        }
    }
    Ok(out)
}

/// Remove folders left empty by a removal, up to the root.
pub(super) async fn prune_empty(root: &Path, removed: &Path) {
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

/// Give the file at `path` the mtime `last_modified` (RFC 3339; ignored when it is not one).
async fn set_mtime(path: PathBuf, last_modified: &str) {
    if let Ok(m) = time::OffsetDateTime::parse(
        last_modified,
        &time::format_description::well_known::Rfc3339,
    ) {
        let m = std::time::SystemTime::from(m);
        let _ = tokio::task::spawn_blocking(move || {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(m))
        })
        .await;
    }
}
