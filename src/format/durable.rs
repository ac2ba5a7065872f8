//! Durability on local disks: a file replaced through a temporary name is synced before the
//! rename and its directory after it, and a directory import flushes its filesystem before the
//! import state records what it wrote — so a USB stick pulled after "done" keeps it all.

use std::path::{Path, PathBuf};

use crate::error::{Result, io_at};

/// Write `bytes` to `path` through `path.tmp`: data synced, renamed, directory synced.
pub async fn replace(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io_at("creating", &tmp))?;
        f.write_all(&bytes).map_err(io_at("writing", &tmp))?;
        f.sync_all().map_err(io_at("syncing", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io_at("replacing", &path))?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    })
    .await
    .expect("durable write task")
}

/// Sync a directory (its entries: names created or renamed in it).
pub fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at("syncing directory", dir))
}

/// Flush everything written to the filesystem that holds `root` (one `syncfs`, cheaper than a
/// sync per file for thousands of small files).
pub async fn sync_filesystem(root: &Path) -> Result<()> {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let dir = std::fs::File::open(&root).map_err(io_at("opening", &root))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: `dir` is an open file descriptor for the duration of the call.
            if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                return Err(io_at("syncing the filesystem of", &root)(
                    std::io::Error::last_os_error(),
                ));
            }
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        {
            dir.sync_all().map_err(io_at("syncing", &root))
        }
    })
    .await
    .expect("sync task")
}
