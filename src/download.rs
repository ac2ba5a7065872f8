//! Fetching bundles from the export bucket to a local folder for carrying: picks the complete
//! bundles of a job (those with `SHA256SUMS`), downloads each volume with parallel ranged GETs
//! into `<name>.partial` (resuming one left by an interrupted download), checks it against
//! `SHA256SUMS` and only then renames it. `SHA256SUMS` and `bundle.json` are written last.
//! Layout on disk: `<DIR>/<job>/<sequence>/`, as in the bucket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::config::S3Location;
use crate::error::{Error, Result, io_at};
use crate::progress::Progress;
use crate::s3::{Got, Store};

/// Bytes per ranged GET.
pub const RANGE: u64 = 8 * 1024 * 1024;

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
}

/// One volume's fate.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// `downloaded`, `resumed` (a partial file was continued) or `present` (already complete).
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct DownloadedBundle {
    pub sequence: u64,
    pub dir: PathBuf,
    pub bundle_digest: String,
    pub volumes: Vec<VolumeFile>,
    pub bytes: u64,
}

/// `ferry download --json`.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
    pub job: String,
    pub bundles: Vec<DownloadedBundle>,
    /// Bytes fetched by this run (not counting what was already on disk).
    pub bytes_fetched: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    /// Bundles of the job still being exported (no `SHA256SUMS` yet), skipped.
    pub incomplete: Vec<u64>,
    /// Ranged GETs that broke mid-body and were resumed from where they broke.
    pub read_resumes: u64,
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
            .filter(|(n, _)| crate::seal::is_volume_name(n))
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
        read_resumes: crate::s3::read_resumes(),
        job: cfg.job.clone(),
        bytes: bundles.iter().map(|b| b.bytes).sum(),
        bundles,
        bytes_fetched: fetched,
        duration_ms: started.elapsed().as_millis() as u64,
        incomplete,
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
    let mut volumes = Vec::new();
    let mut fetched = 0;
    for line in sums_text.lines().filter(|l| !l.trim().is_empty()) {
        let (sha, name) = line.split_once("  ").ok_or_else(|| Error::Bundle {
            what: format!("{} of job `{}`", r.sequence, cfg.job),
            location: format!("s3://{bucket}/{}", doc("SHA256SUMS")),
            detail: format!("SHA256SUMS line `{line}` is not `<sha256>  <name>`"),
        })?;
        let Some((key, etag, size)) = r.files.get(name) else {
            return Err(Error::Bundle {
                what: format!("{} of job `{}`", r.sequence, cfg.job),
                location: format!("s3://{bucket}/{}", r.prefix),
                detail: format!("SHA256SUMS lists `{name}`, which is not in the bucket"),
            });
        };
        let (status, got) = fetch_volume(
            store,
            bucket,
            key,
            etag,
            *size,
            sha,
            &dir.join(name),
            cfg.concurrency,
            progress,
        )
        .await?;
        fetched += got;
        volumes.push(VolumeFile {
            name: name.to_string(),
            size: *size,
            sha256: sha.to_string(),
            status,
        });
    }
    // A sealed bundle's summary (source bucket, counts) stays in the export bucket: the media
    // carries only ciphertext, SHA256SUMS and the signature.
    let sealed = volumes.iter().any(|v| crate::seal::is_sealed_name(&v.name));
    if let Some(s) = summary.filter(|_| !sealed) {
        crate::durable::replace(&dir.join("bundle.json"), s.to_vec()).await?;
    }
    let sig_name = crate::sign::SIGNATURE_FILE;
    if r.files.contains_key(sig_name)
        && let Some(sig) = store.get_document(bucket, &doc(sig_name)).await?
    {
        crate::durable::replace(&dir.join(sig_name), sig.to_vec()).await?;
    }
    // Written last, durably: its presence on the media says the bundle is complete.
    crate::durable::replace(&dir.join("SHA256SUMS"), sums.to_vec()).await?;
    let bundle = DownloadedBundle {
        sequence: r.sequence,
        bundle_digest: hex::encode(Sha256::digest(&sums)),
        bytes: volumes.iter().map(|v| v.size).sum(),
        dir,
        volumes,
    };
    info!(job = %cfg.job, sequence = r.sequence, volumes = bundle.volumes.len(), bytes = bundle.bytes, "bundle downloaded");
    Ok((bundle, fetched))
}

/// Hash an existing file's first `len` bytes.
async fn hash_prefix(path: &Path, sha: &mut Sha256, progress: &dyn Progress) -> Result<u64> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(io_at("reading", path))?;
    let mut buf = vec![0u8; 1024 * 1024];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf).await.map_err(io_at("reading", path))?;
        if got == 0 {
            return Ok(n);
        }
        sha.update(&buf[..got]);
        progress.object(got as u64);
        n += got as u64;
    }
}

#[allow(clippy::too_many_arguments)]
async fn fetch_volume(
    store: &Store,
    bucket: &str,
    key: &str,
    etag: &str,
    size: u64,
    expected: &str,
    path: &Path,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<(&'static str, u64)> {
    let bad = |detail: String| Error::Verify {
        volume: path.display().to_string(),
        entry: None,
        detail,
    };
    // Already complete?
    if let Ok(m) = tokio::fs::metadata(path).await
        && m.len() == size
    {
        let mut sha = Sha256::new();
        hash_prefix(path, &mut sha, progress).await?;
        if hex::encode(sha.finalize()) == expected {
            info!(path = %path.display(), "already downloaded and verified");
            return Ok(("present", 0));
        }
        warn!(path = %path.display(), "existing file does not match SHA256SUMS: downloading it again");
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut sha = Sha256::new();
    let mut start = match tokio::fs::metadata(&partial).await {
        Ok(m) if m.len() <= size => hash_prefix(&partial, &mut sha, progress).await?,
        _ => 0,
    };
    let status = if start > 0 { "resumed" } else { "downloaded" };
    if start == 0 {
        sha = Sha256::new();
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .await
        .map_err(io_at("creating", &partial))?;
    if start == 0 {
        file.set_len(0)
            .await
            .map_err(io_at("truncating", &partial))?;
    }
    let resumed_from = start;
    let ranges = (start..size)
        .step_by(RANGE as usize)
        .map(|s| (s, (s + RANGE).min(size) - 1));
    let mut chunks = futures::stream::iter(ranges)
        .map(|range| {
            let (store, bucket, key, etag) = (
                store.clone(),
                bucket.to_string(),
                key.to_string(),
                etag.to_string(),
            );
            tokio::spawn(async move { store.get(&bucket, &key, Some(&etag), Some(range)).await })
        })
        .buffered(concurrency.max(1));
    while let Some(got) = chunks.next().await {
        // A stop request leaves the partial file to be resumed by the next download.
        if let Err(e) = crate::interrupt::check() {
            file.flush().await.map_err(io_at("writing", &partial))?;
            return Err(e);
        }
        let got = got.map_err(|e| Error::Stream {
            bucket: bucket.to_string(),
            key: key.to_string(),
            source: Box::new(e),
        })??;
        let body = match got {
            Got::Found { body, .. } => body,
            Got::Changed | Got::Gone => {
                return Err(Error::ObjectChanged {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                });
            }
        };
        file.write_all(&body)
            .await
            .map_err(io_at("writing", &partial))?;
        sha.update(&body);
        progress.object(body.len() as u64);
        start += body.len() as u64;
    }
    file.flush().await.map_err(io_at("writing", &partial))?;
    file.sync_all().await.map_err(io_at("syncing", &partial))?;
    drop(file);
    let got = hex::encode(sha.finalize());
    if start != size || got != expected {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(bad(format!(
            "downloaded {start} bytes with SHA-256 {got}; SHA256SUMS says {expected} ({size} bytes). The partial file was removed: run the download again"
        )));
    }
    tokio::fs::rename(&partial, path)
        .await
        .map_err(io_at("renaming", &partial))?;
    crate::durable::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok((status, size - resumed_from))
}
