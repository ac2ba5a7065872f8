//! Fetching bundles from the export bucket to a local folder for carrying: picks the complete
//! bundles of a job (those with `SHA256SUMS`), downloads several volumes at once, each with
//! parallel ranged GETs streamed to their place in `<name>.partial` (one budget of GETs for
//! all), while a hasher follows the contiguous written prefix in order; `<name>.partial.at`
//! records how far that prefix is hashed, so an interrupted download resumes from there. A
//! volume is renamed into place only once its SHA-256 matches `SHA256SUMS`. `SHA256SUMS` and
//! `bundle.json` are written last.
//! Layout on disk: `<DIR>/<job>/<sequence>/`, as in the bucket.

mod approvals;
mod report;
use approvals::*;
pub use report::*;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

use crate::config::S3Location;
use crate::error::{Error, Result, io_at};
use crate::progress::Progress;
use crate::store::{Got, Store};

/// Bytes per ranged GET.
pub const RANGE: u64 = 64 * 1024 * 1024;

/// Bytes a ranged GET gathers before writing them to the file (and a hasher reads at once).
const WRITE_CHUNK: usize = 1024 * 1024;

/// How often (in hashed bytes) `<name>.partial.at` records the hashed prefix.
const AT_EVERY: u64 = 8 * 1024 * 1024;

/// Volumes fetched at once (their GETs share the `--concurrency` budget, first volume first).
const VOLUMES_AT_ONCE: usize = 4;

/// Which bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Latest,
    Sequence(u64),
    /// Every complete bundle after this sequence.
    Since(u64),
}

#[derive(Debug, Clone)]
pub struct DownloadConfig {
    /// The export bucket and prefix (as given to `ferry export --dest`).
    pub from: S3Location,
    pub job: String,
    pub select: Select,
    pub to: PathBuf,
    /// Ranged GETs in flight.
    pub concurrency: usize,
    /// Fetch only the approval files of the selected bundles already in `to` (`Latest`: all
    /// of them), none of their volumes.
    pub approvals_only: bool,
}

struct Remote {
    sequence: u64,
    prefix: String,
    /// name → (key, etag, size)
    files: BTreeMap<String, (String, String, u64)>,
}

/// Bundles of the job in the export bucket, by sequence.
async fn remote_bundles(store: &Store, cfg: &DownloadConfig) -> Result<BTreeMap<u64, Remote>> {
    let base = cfg.from.key(&format!("{}/", cfg.job));
    let mut out: BTreeMap<u64, Remote> = BTreeMap::new();
    let mut lister = store.list(&cfg.from.bucket, &base);
    while let Some(page) = lister.next_page().await? {
        for r in page {
            let rest = &r.key[base.len()..];
            let Some((seq, name)) = rest.split_once('/') else {
                continue;
            };
            let Ok(sequence) = seq.parse::<u64>() else {
                continue;
            };
            if name.contains('/') {
                continue;
            }
            out.entry(sequence)
                .or_insert_with(|| Remote {
                    sequence,
                    prefix: format!("{base}{seq}/"),
                    files: BTreeMap::new(),
                })
                .files
                .insert(name.to_string(), (r.key.clone(), r.etag.clone(), r.size));
        }
    }
    Ok(out)
}

/// Download the selected bundles.
pub async fn run(
    store: &Store,
    cfg: &DownloadConfig,
    progress: &dyn Progress,
) -> Result<DownloadReport> {
    let started = Instant::now();
    // This run's own counters (the store's client is shared).
    let store = &store.for_run();
    let remote = remote_bundles(store, cfg).await?;
    let location = format!(
        "s3://{}/{}",
        cfg.from.bucket,
        cfg.from.key(&format!("{}/", cfg.job))
    );
    let (complete, incomplete): (Vec<&Remote>, Vec<&Remote>) = remote
        .values()
        .partition(|r| r.files.contains_key("SHA256SUMS"));
    let incomplete: Vec<u64> = incomplete.iter().map(|r| r.sequence).collect();
    if cfg.approvals_only {
        return approvals_only(store, cfg, &complete, started).await;
    }
    let chosen: Vec<&Remote> = match cfg.select {
        Select::Latest => complete.last().copied().into_iter().collect(),
        Select::Sequence(n) => match remote.get(&n) {
            Some(r) if r.files.contains_key("SHA256SUMS") => vec![r],
            Some(_) => {
                return Err(Error::Missing {
                    what: format!("bundle {n} of job `{}`", cfg.job),
                    location,
                    detail: "is not complete yet (no SHA256SUMS): wait for the export to finish"
                        .into(),
                });
            }
            None => vec![],
        },
        Select::Since(n) => complete.into_iter().filter(|r| r.sequence > n).collect(),
    };
    if chosen.is_empty() && !matches!(cfg.select, Select::Since(_)) {
        return Err(Error::Missing {
            what: match cfg.select {
                Select::Sequence(n) => format!("bundle {n} of job `{}`", cfg.job),
                _ => format!("no complete bundle of job `{}`", cfg.job),
            },
            location,
            detail: "not found: check --from (the export bucket and prefix) and --job; `ferry status` shows the last sequence".into(),
        });
    }
    for s in &incomplete {
        warn!(job = %cfg.job, sequence = s, "bundle is still being exported (no SHA256SUMS): skipped");
    }
    progress.total(
        chosen
            .iter()
            .flat_map(|r| r.files.iter())
            .filter(|(n, _)| crate::format::seal::is_volume_name(n))
            .map(|(_, (_, _, size))| *size)
            .sum(),
    );
    let mut bundles = Vec::new();
    let mut fetched = 0;
    for r in chosen {
        let (b, f) = download_bundle(store, cfg, r, progress).await?;
        fetched += f;
        bundles.push(b);
    }
    Ok(DownloadReport {
        read_resumes: store.activity().read_resumes(),
        job: cfg.job.clone(),
        bytes: bundles.iter().map(|b| b.bytes).sum(),
        bundles,
        bytes_fetched: fetched,
        duration_ms: started.elapsed().as_millis() as u64,
        incomplete,
        approvals_only: false,
    })
}

async fn download_bundle(
    store: &Store,
    cfg: &DownloadConfig,
    r: &Remote,
    progress: &dyn Progress,
) -> Result<(DownloadedBundle, u64)> {
    let bucket = &cfg.from.bucket;
    let doc = |name: &str| format!("{}{name}", r.prefix);
    let sums = store
        .get_document(bucket, &doc("SHA256SUMS"))
        .await?
        .unwrap_or_default();
    let sums_text = String::from_utf8_lossy(&sums).into_owned();
    let summary = store.get_document(bucket, &doc("bundle.json")).await?;
    let dir = cfg.to.join(&cfg.job).join(format!("{:08}", r.sequence));
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(io_at("creating directory", &dir))?;
    let mut wanted = Vec::new();
    let lines =
        crate::format::manifest::parse_sha256sums(&sums_text).map_err(|detail| Error::Bundle {
            what: format!("{} of job `{}`", r.sequence, cfg.job),
            location: format!("s3://{bucket}/{}", doc("SHA256SUMS")),
            detail,
        })?;
    for crate::format::manifest::SumLine { sha256: sha, name } in lines {
        let Some((key, etag, size)) = r.files.get(name) else {
            return Err(Error::Bundle {
                what: format!("{} of job `{}`", r.sequence, cfg.job),
                location: format!("s3://{bucket}/{}", r.prefix),
                detail: format!("SHA256SUMS lists `{name}`, which is not in the bucket"),
            });
        };
        wanted.push(Wanted {
            bucket,
            key,
            etag,
            size: *size,
            sha256: sha,
            path: dir.join(name),
            name,
        });
    }
    let gets = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let got: Vec<(VolumeFile, u64)> = futures::stream::iter(wanted.iter())
        .map(|w| {
            let gets = gets.clone();
            async move {
                let (status, fetched) =
                    fetch_volume(store, w, gets, cfg.concurrency, progress).await?;
                Ok::<_, Error>((
                    VolumeFile {
                        name: w.name.to_string(),
                        size: w.size,
                        sha256: w.sha256.to_string(),
                        status,
                    },
                    fetched,
                ))
            }
        })
        .buffered(VOLUMES_AT_ONCE)
        .try_collect()
        .await?;
    let fetched = got.iter().map(|(_, f)| f).sum();
    let volumes: Vec<VolumeFile> = got.into_iter().map(|(v, _)| v).collect();
    // A sealed bundle's summary (source bucket, counts) stays in the export bucket: the media
    // carries only ciphertext, SHA256SUMS and the signature.
    let sealed = volumes
        .iter()
        .any(|v| crate::format::seal::is_sealed_name(&v.name));
    if let Some(s) = summary.filter(|_| !sealed) {
        crate::format::durable::replace(&dir.join("bundle.json"), s.to_vec()).await?;
    }
    let sig_name = crate::format::sign::SIGNATURE_FILE;
    if r.files.contains_key(sig_name)
        && let Some(sig) = store.get_document(bucket, &doc(sig_name)).await?
    {
        crate::format::durable::replace(&dir.join(sig_name), sig.to_vec()).await?;
    }
    let approvals = crate::approval::carry::fetch(store, bucket, &approval_files(r), &dir).await?;
    // Written last, durably: its presence on the media says the bundle is complete.
    crate::format::durable::replace(&dir.join("SHA256SUMS"), sums.to_vec()).await?;
    let bundle = DownloadedBundle {
        sequence: r.sequence,
        bundle_digest: hex::encode(Sha256::digest(&sums)),
        bytes: volumes.iter().map(|v| v.size).sum(),
        dir,
        volumes,
        approvals,
    };
    info!(job = %cfg.job, sequence = r.sequence, volumes = bundle.volumes.len(), bytes = bundle.bytes, "bundle downloaded");
    Ok((bundle, fetched))
}

/// One volume to fetch.
struct Wanted<'a> {
    bucket: &'a str,
    key: &'a str,
    etag: &'a str,
    size: u64,
    sha256: &'a str,
    name: &'a str,
    path: PathBuf,
}

/// Run blocking file I/O on a blocking thread; errors name `op` and `path`.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(io_at(op, path)),
        Err(e) => Err(Error::Io {
            op,
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        }),
    }
}

/// Hash `file`'s bytes `from..to` into `sha`.
async fn hash_range(
    file: &Arc<std::fs::File>,
    path: &Path,
    mut sha: Sha256,
    from: u64,
    to: u64,
) -> Result<Sha256> {
    if from >= to {
        return Ok(sha);
    }
    let file = file.clone();
    blocking("reading", path, move || {
        let mut buf = vec![0u8; WRITE_CHUNK.min(to.saturating_sub(from) as usize)];
        let mut at = from;
        while at < to {
            let n = buf.len().min((to - at) as usize);
            file.read_exact_at(&mut buf[..n], at)?;
            sha.update(&buf[..n]);
            at += n as u64;
        }
        Ok(sha)
    })
    .await
}

/// How much of each range is on disk, and so the end of the contiguous written prefix.
struct Written {
    /// (start, length, written) of each range, in order.
    ranges: Vec<(u64, u64, u64)>,
    /// The first range not yet complete.
    first: usize,
}

impl Written {
    fn wrote(&mut self, range: usize, n: u64) -> u64 {
        self.ranges[range].2 += n;
        while self
            .ranges
            .get(self.first)
            .is_some_and(|(_, len, done)| done == len)
        {
            self.first += 1;
        }
        match self.ranges.get(self.first) {
            Some((start, _, done)) => start + done,
            None => self.ranges.last().map_or(0, |(s, l, _)| s + l),
        }
    }
}

/// `<name>.partial` and `<name>.partial.at` (how much of the partial file is known hashed).
fn partial_paths(path: &Path) -> (PathBuf, PathBuf) {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let mut at = partial.clone();
    at.push(".at");
    (PathBuf::from(partial), PathBuf::from(at))
}

/// Where a partial download can resume: the hashed prefix its `.at` file records, if that
/// is a number no larger than the partial file and the volume (anything else starts over).
fn resume_point(partial: &Path, at: &Path, size: u64) -> u64 {
    let len = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    let text = std::fs::read(at).unwrap_or_default();
    std::str::from_utf8(&text[..text.len().min(24)])
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|n| *n <= len && *n <= size)
        .unwrap_or(0)
}

/// GET range `i` (`len` bytes at `from`) of the volume and write it to its place in `file`,
/// telling `mark` how far the contiguous written prefix reaches.
#[allow(clippy::too_many_arguments)]
async fn fetch_range(
    store: &Store,
    w: &Wanted<'_>,
    file: &Arc<std::fs::File>,
    partial: &Path,
    written: &Mutex<Written>,
    mark: &watch::Sender<u64>,
    (i, from, len): (usize, u64, u64),
    progress: &dyn Progress,
) -> Result<()> {
    let bad = |detail: String| Error::Verify {
        volume: w.path.display().to_string(),
        entry: None,
        detail,
    };
    let got = store
        .get_body(w.bucket, w.key, Some(w.etag), Some((from, from + len - 1)))
        .await?;
    let changed = || Error::ObjectChanged {
        bucket: w.bucket.to_string(),
        key: w.key.to_string(),
    };
    let Got::Found { mut body, .. } = got else {
        return Err(changed());
    };
    let mut at = from;
    let mut buf = bytes::BytesMut::with_capacity(WRITE_CHUNK);
    loop {
        let chunk = body.chunk().await?;
        if let Some(c) = &chunk {
            buf.extend_from_slice(c);
        }
        if buf.len() >= WRITE_CHUNK || (chunk.is_none() && !buf.is_empty()) {
            let data = buf.split().freeze();
            let n = data.len() as u64;
            if at + n > from + len {
                return Err(bad(format!(
                    "the server sent more than the {len} bytes asked for at offset {from}"
                )));
            }
            let file = file.clone();
            blocking("writing", partial, move || file.write_all_at(&data, at)).await?;
            at += n;
            progress.object(n);
            let m = written
                .lock()
                .map_err(|_| bad("a writer panicked".into()))?
                .wrote(i, n);
            mark.send_replace(m);
        }
        if chunk.is_none() {
            break;
        }
    }
    if body.lost.is_some() {
        return Err(changed());
    }
    if at != from + len {
        return Err(bad(format!(
            "the server sent {} of the {len} bytes asked for at offset {from}: run the download again",
            at - from
        )));
    }
    Ok(())
}

async fn fetch_volume(
    store: &Store,
    w: &Wanted<'_>,
    gets: Arc<Semaphore>,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<(&'static str, u64)> {
    let (path, size) = (w.path.as_path(), w.size);
    let bad = |detail: String| Error::Verify {
        volume: path.display().to_string(),
        entry: None,
        detail,
    };
    let open = |p: &Path, create: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(create)
            .create(create)
            .truncate(false)
            .open(p)
            .map(Arc::new)
            .map_err(io_at(if create { "creating" } else { "reading" }, p))
    };
    // Already complete?
    if let Ok(m) = tokio::fs::metadata(path).await
        && m.len() == size
    {
        let sha = hash_range(&open(path, false)?, path, Sha256::new(), 0, size).await?;
        progress.object(size);
        if hex::encode(sha.finalize()) == w.sha256 {
            info!(path = %path.display(), "already downloaded and verified");
            return Ok(("present", 0));
        }
        warn!(path = %path.display(), "existing file does not match SHA256SUMS: downloading it again");
    }
    let (partial, at_file) = partial_paths(path);
    let start = resume_point(&partial, &at_file, size);
    let file = open(&partial, true)?;
    // Whatever lies past the hashed prefix (ranges that were in flight) is fetched again.
    file.set_len(start).map_err(io_at("truncating", &partial))?;
    let mut sha = hash_range(&file, &partial, Sha256::new(), 0, start).await?;
    progress.object(start);
    let status = if start > 0 { "resumed" } else { "downloaded" };
    let ranges: Vec<(u64, u64, u64)> = (start..size)
        .step_by(RANGE as usize)
        .map(|s| (s, RANGE.min(size - s), 0))
        .collect();
    let written = Mutex::new(Written {
        ranges: ranges.clone(),
        first: 0,
    });
    let (mark, mut marks) = watch::channel(start);
    // Ranged GETs, each streamed to its place in the file.
    let writers = futures::stream::iter(ranges.iter().enumerate())
        .map(|(i, &(from, len, _))| {
            let (gets, file, partial, written, mark) =
                (gets.clone(), file.clone(), &partial, &written, &mark);
            async move {
                // (the semaphore is never closed)
                let _permit = gets
                    .acquire_owned()
                    .await
                    .map_err(|_| bad("the download's GET budget was closed".into()))?;
                fetch_range(
                    store,
                    w,
                    &file,
                    partial,
                    written,
                    mark,
                    (i, from, len),
                    progress,
                )
                .await
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>();
    // The hasher follows the contiguous written prefix, in order.
    let hasher = async {
        let mut hashed = start;
        while hashed < size {
            let upto = *marks
                .wait_for(|m| *m > hashed)
                .await
                .map_err(|_| bad("the writers stopped early".into()))?;
            sha = hash_range(&file, &partial, std::mem::take(&mut sha), hashed, upto).await?;
            let crossed = hashed / AT_EVERY != upto / AT_EVERY;
            hashed = upto;
            if crossed {
                let (at, text) = (at_file.clone(), hashed.to_string());
                blocking("writing", &at_file, move || std::fs::write(at, text)).await?;
            }
        }
        Ok::<_, Error>(())
    };
    // A stop request drops the GETs in flight (they may be waiting on a slow network); the
    // hashed prefix recorded in `.partial.at` is where the next download resumes.
    tokio::select! {
        done = async { futures::try_join!(writers, hasher) } => { done?; }
        stopped = store.run().stop().interrupted() => return Err(stopped),
    }
    let got = hex::encode(sha.finalize());
    if got != w.sha256 {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&at_file);
        return Err(bad(format!(
            "downloaded {size} bytes with SHA-256 {got}; SHA256SUMS says {} ({size} bytes). The partial file was removed: run the download again",
            w.sha256
        )));
    }
    let f = file.clone();
    blocking("syncing", &partial, move || f.sync_all()).await?;
    drop(file);
    tokio::fs::rename(&partial, path)
        .await
        .map_err(io_at("renaming", &partial))?;
    let _ = std::fs::remove_file(&at_file);
    crate::format::durable::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok((status, size - start))
}
