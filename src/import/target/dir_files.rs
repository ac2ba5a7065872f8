//! The directory target's writers: a large file streams into a temporary name beside its
//! place and is renamed on commit; a small one is held until verified, then created, written
//! and renamed in one blocking call. Folders are made as needed; one emptied and removed by a
//! concurrent removal in the meantime is made again ([`in_parents`]).

use super::*;

/// Run `op` on the path of `place` (under `root`) once its folders exist. Another task of the
/// same import that empties a folder removes it (`prune_empty`): between the two steps that
/// makes `op` fail with NotFound, and the folders are made again and `op` retried (at most 8
/// times). The outcome of `op` is returned as it came otherwise.
pub(super) fn in_parents<T>(
    root: &Path,
    place: &str,
    mut op: impl FnMut(&Path) -> std::io::Result<T>,
) -> Result<(PathBuf, std::io::Result<T>)> {
    let mut tries = 0;
    loop {
        let path = Dir::make_parents_now(root, place)?;
        match op(&path) {
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && tries < 8
                    && path.parent().is_some_and(|p| !p.is_dir()) =>
            {
                tries += 1;
            }
            r => return Ok((path, r)),
        }
    }
}

/// A temporary file removed on drop unless persisted.
pub struct TempPath(pub(super) Option<PathBuf>);

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A large file: written under a temporary name, renamed into place on commit.
pub(super) struct TempFile {
    pub(super) shared: Arc<Shared>,
    pub(super) file: tokio::io::BufWriter<tokio::fs::File>,
    pub(super) tmp: TempPath,
    pub(super) path: PathBuf,
    pub(super) key: String,
    pub(super) entry: IndexEntry,
    pub(super) mtime: Option<std::time::SystemTime>,
}

#[async_trait]
impl ObjectWriter for TempFile {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let p = self.tmp.0.clone().unwrap_or_default();
        self.file
            .write_all(&chunk)
            .await
            .map_err(io_at("writing", &p))
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let TempFile {
            shared,
            mut file,
            mut tmp,
            path,
            key,
            entry,
            mtime,
        } = *self;
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

    /// Dropping the temporary path removes the file.
    async fn abort(self: Box<Self>) {}
}

/// A small file: held until verified, then created, written and renamed in one blocking call.
pub(super) struct SmallFile {
    pub(super) shared: Arc<Shared>,
    pub(super) root: PathBuf,
    pub(super) place: String,
    pub(super) key: String,
    pub(super) buf: BytesMut,
    pub(super) entry: IndexEntry,
    pub(super) mtime: Option<std::time::SystemTime>,
}

#[async_trait]
impl ObjectWriter for SmallFile {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let SmallFile {
            shared,
            root,
            place,
            key,
            buf,
            entry,
            mtime,
        } = *self;
        let at = root.join(&place);
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut tmp = TempPath(None);
            let (path, f) = in_parents(&root, &place, |path| {
                let t = Dir::temp_name(path);
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&t);
                tmp.0 = Some(t);
                f
            })?;
            let t = tmp.0.clone().unwrap_or_default();
            let mut f = f.map_err(io_at("creating", &t))?;
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

    /// Nothing was written yet.
    async fn abort(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_removed_between_its_making_and_the_rename_into_it_is_made_again() {
        // GIVEN a file to move into `d/`, and a removal that empties and removes `d/` right
        // after it is made, as a concurrent move out of `d/` prunes it
        let root = tempfile::tempdir().unwrap();
        let from = root.path().join("a.txt");
        std::fs::write(&from, "a").unwrap();
        let mut calls = 0;
        // WHEN the rename runs in its folders
        let (to, r) = in_parents(root.path(), "d/a.txt", |to| {
            calls += 1;
            if calls == 1 {
                std::fs::remove_dir(to.parent().unwrap()).unwrap();
            }
            std::fs::rename(&from, to)
        })
        .unwrap();
        // THEN the folder is made again and the rename lands
        r.unwrap();
        assert_eq!(calls, 2);
        assert_eq!(std::fs::read_to_string(to).unwrap(), "a");
        // AND a missing source is still an error (its folder is there)
        let (_, r) = in_parents(root.path(), "d/b.txt", |to| std::fs::rename(&from, to)).unwrap();
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    }
}
