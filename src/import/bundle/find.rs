//! Finding bundles: volume files in local folders or `s3://` prefixes, opened two at a time,
//! grouped by job and sequence, one job picked.

use super::*;

/// Volumes opened at once: an opening holds its directory and whole manifest (about 60 MB for
/// 50,000 entries) until its checks are done, so this bounds the import's memory; eight at once
/// peaked at 287 MiB importing 1,000,000 objects.
pub(super) const OPENING_AT_ONCE: usize = 2;

/// A volume as found: its folder, what lay beside it, and the opened volume.
pub(super) type Found = (String, Beside, OpenVolume);

/// `SHA256SUMS`, `SHA256SUMS.sig` and the approval files found in a folder or prefix.
#[derive(Default, Clone)]
pub(super) struct Beside {
    sums: Option<String>,
    sig: Option<Vec<u8>>,
    approvals: Vec<(String, Vec<u8>)>,
    approvals_read: bool,
}

/// More approval files beside one bundle than a bundle may carry: refused, not cut.
fn too_many_approvals(location: &str) -> Error {
    Error::Archive {
        volume: location.to_string(),
        detail: format!(
            "more than {} approval files beside one bundle",
            crate::approval::MAX_APPROVALS
        ),
    }
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
        if !self.approvals_read {
            self.approvals_read = true;
            self.approvals = read_approvals(dir)?;
        }
        Ok(())
    }
}

/// The approval files (`approval-FINGERPRINT.json`) in a local folder, each bounded, in name
/// order.
pub(super) fn read_approvals(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io_at("reading directory", dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| crate::approval::is_approval_name(n))
        .collect();
    names.sort_unstable();
    if names.len() > crate::approval::MAX_APPROVALS {
        return Err(too_many_approvals(&dir.display().to_string()));
    }
    names
        .into_iter()
        .map(|n| {
            let bytes = read_small(&dir.join(&n), crate::approval::MAX_APPROVAL_FILE)?;
            Ok((n, bytes))
        })
        .collect()
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
        || crate::approval::is_approval_name(&name)
    {
        folder.beside.read_local(parent)?;
    }
    Ok(())
}

/// One folder (prefix) of an `s3://` source as listed: its volumes, and its `SHA256SUMS` and
/// `SHA256SUMS.sig` if they are there (not read yet).
#[derive(Debug, Default)]
pub struct ListedFolder {
    pub volumes: Vec<crate::store::ObjectRecord>,
    pub sums: Option<crate::store::ObjectRecord>,
    pub sig: Option<crate::store::ObjectRecord>,
    /// `approval-FINGERPRINT.json` files.
    pub approvals: Vec<crate::store::ObjectRecord>,
}

impl ListedFolder {
    /// The job and sequence of the first volume named after `job`.
    pub fn sequence_of(&self, job: &str) -> Option<u64> {
        self.volumes.iter().find_map(|r| {
            let name = r.key.rsplit_once('/').map_or(r.key.as_str(), |(_, n)| n);
            crate::format::manifest::volume_name_parts(name)
                .filter(|(j, _, _)| *j == job)
                .map(|(_, seq, _)| seq)
        })
    }

    /// The approval files `(name, bytes)`; one over the bound is refused (exit 5).
    pub async fn read_approvals(
        &self,
        store: &Store,
        bucket: &str,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        if self.approvals.len() > crate::approval::MAX_APPROVALS {
            return Err(too_many_approvals(&format!("s3://{bucket}/")));
        }
        let mut out = Vec::new();
        for rec in &self.approvals {
            let name = rec
                .key
                .rsplit_once('/')
                .map_or(rec.key.as_str(), |(_, n)| n);
            if rec.size > crate::approval::MAX_APPROVAL_FILE {
                return Err(Error::Archive {
                    volume: format!("s3://{bucket}/{}", rec.key),
                    detail: format!(
                        "{} bytes; an approval file is at most {}",
                        rec.size,
                        crate::approval::MAX_APPROVAL_FILE
                    ),
                });
            }
            if let Some(b) = store.get_document(bucket, &rec.key).await? {
                out.push((name.to_string(), b.to_vec()));
            }
        }
        Ok(out)
    }

    /// `SHA256SUMS` as text, read (at most [`MAX_SUMS`] bytes); `None` when there is none.
    pub async fn read_sums(&self, store: &Store, bucket: &str) -> Result<Option<String>> {
        let Some(rec) = self.sums.as_ref().filter(|r| r.size <= MAX_SUMS) else {
            return Ok(None);
        };
        Ok(store
            .get_document(bucket, &rec.key)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

/// `prefix` as a folder to list: with a trailing `/` unless empty, already one, or a volume's
/// own key.
pub fn folder_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') || crate::format::seal::is_volume_name(prefix) {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

/// List `bucket` under `prefix` into its folders, keyed `s3://BUCKET/FOLDER/`, leaving out the
/// export's `_state/`: the one scan of an `s3://` source, for the CLI's verify, import and
/// download and for the import function's poll.
pub async fn scan_s3(
    store: &Store,
    bucket: &str,
    prefix: &str,
) -> Result<BTreeMap<String, ListedFolder>> {
    let mut folders: BTreeMap<String, ListedFolder> = BTreeMap::new();
    let mut lister = store.list(bucket, prefix);
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
                .entry(format!("s3://{bucket}/{folder_key}"))
                .or_default();
            if crate::format::seal::is_volume_name(&name) {
                folder.volumes.push(rec);
            } else if name == "SHA256SUMS" {
                folder.sums = Some(rec);
            } else if name == crate::format::sign::SIGNATURE_FILE {
                folder.sig = Some(rec);
            } else if crate::approval::is_approval_name(&name) {
                folder.approvals.push(rec);
            }
        }
    }
    Ok(folders)
}

/// Folders under `import` holding a complete bundle of `job` newer than `after` (every volume
/// its `SHA256SUMS` lists is there), and what the others wait for: the import function's poll
/// of its bucket, through the one scan of an `s3://` source ([`scan_s3`]).
pub async fn complete_folders(
    store: &Store,
    import: &S3Location,
    job: &str,
    after: u64,
) -> Result<(Vec<String>, Vec<String>)> {
    let bucket = &import.bucket;
    let prefix = folder_prefix(&import.prefix);
    let (mut ready, mut waiting) = (Vec::new(), Vec::new());
    for (location, folder) in scan_s3(store, bucket, &prefix).await? {
        match folder.sequence_of(job) {
            Some(seq) if seq > after => {}
            _ => continue,
        }
        let Some(sums) = folder.read_sums(store, bucket).await? else {
            waiting.push(match &folder.sums {
                Some(r) => format!(
                    "{location}: its SHA256SUMS of {} bytes is larger than a bundle's ({MAX_SUMS} at most)",
                    r.size
                ),
                None => format!("{location}: no SHA256SUMS yet"),
            });
            continue;
        };
        let listed = match crate::format::manifest::parse_sha256sums(&sums) {
            Ok(lines) => lines,
            Err(e) => {
                waiting.push(format!("{location}: {e}"));
                continue;
            }
        };
        let here: std::collections::HashSet<&str> = folder
            .volumes
            .iter()
            .map(|r| r.key.rsplit_once('/').map_or(r.key.as_str(), |(_, n)| n))
            .collect();
        let missing: Vec<&str> = listed
            .iter()
            .map(|l| l.name)
            .filter(|n| !here.contains(n))
            .collect();
        if missing.is_empty() {
            ready.push(location);
        } else {
            waiting.push(format!("{location}: waiting for {}", missing.join(", ")));
        }
    }
    Ok((ready, waiting))
}

pub(super) async fn add_s3(
    store: &Store,
    uri: &str,
    folders: &mut BTreeMap<String, Folder>,
) -> Result<()> {
    let loc: S3Location = uri.parse()?;
    let listed = scan_s3(store, &loc.bucket, &folder_prefix(&loc.prefix)).await?;
    let mut found = 0;
    for (location, listed) in listed {
        let sums = listed.read_sums(store, &loc.bucket).await?;
        let folder = folders.entry(location).or_default();
        for rec in &listed.volumes {
            found += 1;
            let volume = crate::store::S3Volume {
                store: store.clone(),
                bucket: loc.bucket.clone(),
                key: rec.key.clone(),
                etag: rec.etag.clone(),
                size: rec.size,
            };
            folder.volumes.push(volume.source());
        }
        if sums.is_some() {
            folder.beside.sums = sums;
        }
        folder.beside.approvals = listed.read_approvals(store, &loc.bucket).await?;
        if let Some(rec) = listed
            .sig
            .filter(|r| r.size <= crate::format::sign::MAX_SIGNATURE_FILE)
            && let Some(bytes) = store.get_document(&loc.bucket, &rec.key).await?
        {
            folder.beside.sig = Some(bytes.to_vec());
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
    /// The approval files beside the volumes.
    pub approvals: Vec<(String, Vec<u8>)>,
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
                approvals: f.beside.approvals,
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
            approvals: beside.approvals,
        };
        bundle.check()?;
        bundles.push(bundle);
    }
    Ok(bundles)
}
