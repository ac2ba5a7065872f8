//! Finding bundles: volume files in local folders or `s3://` prefixes, opened two at a time,
//! grouped by job and sequence, one job picked.

use super::*;

/// Volumes opened at once: an opening holds its directory and whole manifest (about 60 MB for
/// 50,000 entries) until its checks are done, so this bounds the import's memory; eight at once
/// peaked at 287 MiB importing 1,000,000 objects.
pub(super) const OPENING_AT_ONCE: usize = 2;

/// A volume as found: its folder, what lay beside it, and the opened volume.
pub(super) type Found = (String, Beside, OpenVolume);

/// `SHA256SUMS` and `SHA256SUMS.sig` found in a folder or prefix.
#[derive(Default, Clone)]
pub(super) struct Beside {
    sums: Option<String>,
    sig: Option<Vec<u8>>,
}

/// Volume files and what lies beside them in one folder or prefix.
#[derive(Default)]
pub(super) struct Folder {
    volumes: Vec<VolumeSource>,
    beside: Beside,
}

/// The largest `SHA256SUMS` (100,000 volumes' lines fit).
pub(super) const MAX_SUMS: u64 = 16 * 1024 * 1024;

/// A small file from the media, refused (exit 5) past `max` bytes before it is read.
pub(super) fn read_small(path: &Path, max: u64) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .map_err(io_at("reading", path))?
        .len();
    if len > max {
        return Err(Error::Archive {
            volume: path.display().to_string(),
            detail: format!("{len} bytes; a file of this name is at most {max}"),
        });
    }
    std::fs::read(path).map_err(io_at("reading", path))
}

impl Beside {
    /// Take `SHA256SUMS` / `SHA256SUMS.sig` from a local folder (once).
    fn read_local(&mut self, dir: &Path) -> Result<()> {
        let sums = dir.join("SHA256SUMS");
        if self.sums.is_none() && sums.is_file() {
            let bytes = read_small(&sums, MAX_SUMS)?;
            self.sums = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
        let sig = dir.join(crate::format::sign::SIGNATURE_FILE);
        if self.sig.is_none() && sig.is_file() {
            self.sig = Some(read_small(&sig, crate::format::sign::MAX_SIGNATURE_FILE)?);
        }
        Ok(())
    }
}

pub(super) fn walk_dir(
    dir: &Path,
    depth: u32,
    folders: &mut BTreeMap<String, Folder>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_at("reading directory", dir))?
        .collect::<std::result::Result<_, _>>()
        .map_err(io_at("reading directory", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let kind = e.file_type().map_err(io_at("reading", &path))?;
        if kind.is_dir() {
            if depth < 4 && !name.starts_with('.') && name != "_state" {
                walk_dir(&path, depth + 1, folders)?;
            }
        } else if kind.is_file() {
            add_local_file(&path, folders)?;
        }
    }
    Ok(())
}

pub(super) fn add_local_file(path: &Path, folders: &mut BTreeMap<String, Folder>) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = path.parent().unwrap_or(Path::new("."));
    let folder = folders.entry(parent.display().to_string()).or_default();
    if crate::format::seal::is_volume_name(&name) {
        folder.volumes.push(VolumeSource::file(path.to_path_buf()));
    }
    if crate::format::seal::is_volume_name(&name)
        || name == "SHA256SUMS"
        || name == crate::format::sign::SIGNATURE_FILE
    {
        folder.beside.read_local(parent)?;
    }
    Ok(())
}

pub(super) async fn add_s3(
    store: &Store,
    uri: &str,
    folders: &mut BTreeMap<String, Folder>,
) -> Result<()> {
    let loc: S3Location = uri.parse()?;
    let prefix = if loc.prefix.is_empty()
        || loc.prefix.ends_with('/')
        || crate::format::seal::is_volume_name(&loc.prefix)
    {
        loc.prefix.clone()
    } else {
        format!("{}/", loc.prefix)
    };
    let mut lister = store.list(&loc.bucket, &prefix);
    let mut found = 0;
    while let Some(page) = lister.next_page().await? {
        for rec in page {
            let (folder_key, name) = match rec.key.rsplit_once('/') {
                Some((f, n)) => (format!("{f}/"), n.to_string()),
                None => (String::new(), rec.key.clone()),
            };
            if folder_key.contains("_state/") {
                continue;
            }
            let folder = folders
                .entry(format!("s3://{}/{folder_key}", loc.bucket))
                .or_default();
            if crate::format::seal::is_volume_name(&name) {
                found += 1;
                let volume = crate::store::S3Volume {
                    store: store.clone(),
                    bucket: loc.bucket.clone(),
                    key: rec.key.clone(),
                    etag: rec.etag.clone(),
                    size: rec.size,
                };
                folder.volumes.push(volume.source());
            } else if name == "SHA256SUMS"
                && rec.size <= MAX_SUMS
                && let Some(text) = store.get_document(&loc.bucket, &rec.key).await?
            {
                folder.beside.sums = Some(String::from_utf8_lossy(&text).into_owned());
            } else if name == crate::format::sign::SIGNATURE_FILE
                && rec.size <= crate::format::sign::MAX_SIGNATURE_FILE
                && let Some(bytes) = store.get_document(&loc.bucket, &rec.key).await?
            {
                folder.beside.sig = Some(bytes.to_vec());
            }
        }
    }
    if found == 0 {
        return Err(Error::Missing {
            what: "volumes".into(),
            location: uri.to_string(),
            detail:
                "no .zip volume under this prefix: check the URI (s3://BUCKET/PREFIX/JOB/SEQUENCE/)"
                    .into(),
        });
    }
    Ok(())
}

/// The bundles of one job: `job`'s when it is given (an error if there is none), else all of
/// them, provided they are of one job. Sources holding bundles of several jobs are refused
/// before anything is written (an import applies one job's chain).
pub fn one_job(bundles: Vec<Bundle>, job: Option<&str>, location: &str) -> Result<Vec<Bundle>> {
    let mut jobs: Vec<&str> = bundles.iter().map(|b| b.job.as_str()).collect();
    jobs.sort_unstable();
    jobs.dedup();
    match job {
        Some(job) => {
            if !jobs.contains(&job) {
                return Err(Error::Missing {
                    what: format!("bundles of job `{job}`"),
                    location: location.to_string(),
                    detail: format!("none there; the bundles there are of {}", jobs.join(", ")),
                });
            }
            Ok(bundles.into_iter().filter(|b| b.job == job).collect())
        }
        None if jobs.len() > 1 => Err(Error::SeveralJobs {
            location: location.to_string(),
            jobs: jobs.join(", "),
        }),
        None => Ok(bundles),
    }
}

/// Find the bundles in `sources` (volume files, folders, `s3://` prefixes), complete and
/// consistent, in (job, sequence) order. `store` is needed only for `s3://` sources.
/// Sealed (`.zip.age`) volumes are opened with `identities`; without them they are refused
/// (`Error::Sealed`: `media_check` is what can be checked without a secret).
pub async fn discover(
    sources: &[String],
    store: Option<&Store>,
    identities: Option<&Identities>,
) -> Result<Vec<Bundle>> {
    let folders = find(sources, store).await?;
    // Open every volume (tail + manifest), two at a time.
    let mut opened: Vec<Found> = Vec::new();
    for (location, folder) in folders {
        let mut seen = std::collections::HashSet::new();
        let mut volumes = Vec::new();
        for media in folder.volumes {
            if !seen.insert(media.display()) {
                continue;
            }
            if crate::format::seal::is_sealed_name(&media.file_name()) {
                let Some(ids) = identities else {
                    return Err(Error::Sealed {
                        volume: media.display(),
                        detail: "no identity was given".into(),
                    });
                };
                volumes.push(Volume::sealed(media, ids.clone()));
            } else {
                volumes.push(Volume::plain(media));
            }
        }
        let mut vols =
            futures::stream::iter(volumes.into_iter().map(open_volume)).buffered(OPENING_AT_ONCE);
        use futures::StreamExt;
        while let Some(v) = vols.next().await {
            opened.push((location.clone(), folder.beside.clone(), v?));
        }
    }
    if opened.is_empty() {
        return Err(Error::Missing {
            what: "volumes".into(),
            location: sources.join(" "),
            detail: "no .zip volume found: pass volume files, a folder holding a bundle, or an s3:// prefix".into(),
        });
    }
    group(opened)
}

/// A folder (or prefix) of volumes as it lies on the media, unopened.
pub struct MediaFolder {
    pub location: String,
    pub volumes: Vec<VolumeSource>,
    pub sums: Option<String>,
    pub signature: Option<Vec<u8>>,
}

/// The folders holding volumes among `sources`, without opening any volume (what can be
/// checked of sealed volumes without a secret).
pub async fn media_folders(sources: &[String], store: Option<&Store>) -> Result<Vec<MediaFolder>> {
    Ok(find(sources, store)
        .await?
        .into_iter()
        .filter(|(_, f)| !f.volumes.is_empty())
        .map(|(location, f)| {
            let mut seen = std::collections::HashSet::new();
            MediaFolder {
                location,
                volumes: f
                    .volumes
                    .into_iter()
                    .filter(|v| seen.insert(v.display()))
                    .collect(),
                sums: f.beside.sums,
                signature: f.beside.sig,
            }
        })
        .collect())
}

/// True when any volume among `sources` is sealed (`.zip.age`).
pub async fn any_sealed(sources: &[String], store: Option<&Store>) -> Result<bool> {
    Ok(find(sources, store).await?.values().any(|f| {
        f.volumes
            .iter()
            .any(|v| crate::format::seal::is_sealed_name(&v.file_name()))
    }))
}

/// The folders (or prefixes) holding volumes among `sources`.
pub(super) async fn find(
    sources: &[String],
    store: Option<&Store>,
) -> Result<BTreeMap<String, Folder>> {
    let mut folders: BTreeMap<String, Folder> = BTreeMap::new();
    for s in sources {
        if s.starts_with("s3://") {
            let store =
                store.ok_or_else(|| Error::config(s.as_str(), "s3:// sources need AWS access"))?;
            add_s3(store, s, &mut folders).await?;
            continue;
        }
        let path = PathBuf::from(s);
        let meta = std::fs::metadata(&path).map_err(io_at("reading", &path))?;
        if meta.is_dir() {
            walk_dir(&path, 0, &mut folders)?;
        } else {
            add_local_file(&path, &mut folders)?;
        }
    }
    Ok(folders)
}

/// Opened volumes grouped into complete, consistent bundles.
pub(super) fn group(opened: Vec<Found>) -> Result<Vec<Bundle>> {
    let mut groups: BTreeMap<(String, u64), Vec<Found>> = BTreeMap::new();
    for o in opened {
        groups
            .entry((o.2.manifest.job.clone(), o.2.manifest.sequence))
            .or_default()
            .push(o);
    }
    let mut bundles = Vec::new();
    for ((job, sequence), mut vols) in groups {
        vols.sort_by_key(|(_, _, v)| v.manifest.volume);
        vols.dedup_by(|a, b| {
            a.2.manifest.volume == b.2.manifest.volume && a.2.zip_len == b.2.zip_len
        });
        let location = vols[0].0.clone();
        let Some(last) = vols.iter().find_map(|(_, _, v)| v.manifest.last.clone()) else {
            let have: Vec<String> = vols
                .iter()
                .map(|(_, _, v)| v.manifest.volume.to_string())
                .collect();
            return Err(Error::Bundle {
                what: format!("{sequence} of job `{job}`"),
                location,
                detail: format!(
                    "is incomplete: the last volume (it carries the final manifest) is missing; found volume(s) {}",
                    have.join(", ")
                ),
            });
        };
        let beside = vols
            .iter()
            .map(|(_, b, _)| b.clone())
            .find(|b| b.sums.is_some())
            .filter(|b| {
                b.sums
                    .as_deref()
                    .is_some_and(|s| s.contains(&format!("{job}-{sequence:08}-")))
            })
            .unwrap_or_default();
        let first = vols[0].2.manifest.clone();
        let bundle = Bundle {
            location,
            job,
            sequence,
            previous: first.previous,
            baseline: first.baseline,
            source_bucket: first.source.bucket,
            source_prefix: first.source.prefix,
            volumes: vols.into_iter().map(|(_, _, v)| v).collect(),
            last,
            sums: beside.sums,
            signature: beside.sig,
        };
        bundle.check()?;
        bundles.push(bundle);
    }
    Ok(bundles)
}
