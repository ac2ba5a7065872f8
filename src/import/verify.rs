//! Judging a bundle's bytes: one sequential pass per volume that checks every entry's size,
//! CRC-32 and SHA-256 against the manifest and the volume's own size and SHA-256 against the
//! bundle (final manifest, `SHA256SUMS`). The import rides the same pass: an `EntrySink` gets
//! each object's bytes and is told to commit only after they matched.

use std::collections::HashMap;
use std::future::Future;

use bytes::Bytes;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::manifest::{MANIFEST_ENTRY, ObjectEntry};
use crate::format::parts::WholeDigest;
use crate::format::unzip::{VolumeSource, Walk};
use crate::import::bundle::{Bundle, Contents, MediaFolder, OpenVolume};
use crate::progress::Progress;
use sha2::Digest;

/// Receives each object's bytes during a volume pass.
pub trait EntrySink: Send {
    type Writer: EntryWriter;
    /// A writer for `obj`, or `None` to only verify it.
    fn open(
        &mut self,
        obj: &ObjectEntry,
    ) -> impl Future<Output = Result<Option<Self::Writer>>> + Send;
}

/// One object's bytes on their way somewhere. Dropped without `commit` (on a mismatch or an
/// error), it must leave nothing visible.
pub trait EntryWriter: Send {
    fn write(&mut self, chunk: Bytes) -> impl Future<Output = Result<()>> + Send;
    /// Called only once every byte matched the manifest.
    fn commit(self) -> impl Future<Output = Result<()>> + Send;
    /// Called when the entry failed (bad bytes, a read error): undo what was started (abort the
    /// multipart upload, remove the temporary file) and wait until it is undone.
    fn abort(self) -> impl Future<Output = ()> + Send;
}

/// Verifies only.
pub struct NoSink;
/// The writer `NoSink` never opens.
pub enum NoWriter {}

impl EntryWriter for NoWriter {
    async fn write(&mut self, _chunk: Bytes) -> Result<()> {
        match *self {}
    }
    async fn commit(self) -> Result<()> {
        match self {}
    }
    async fn abort(self) {
        match self {}
    }
}

impl EntrySink for NoSink {
    type Writer = NoWriter;
    async fn open(&mut self, _obj: &ObjectEntry) -> Result<Option<NoWriter>> {
        Ok(None)
    }
}

/// Verifies, and joins the parts of objects split across volumes as the volumes go by (in
/// volume order), so that the size and digests an object's last part carries are checked
/// against its parts' bytes, as the import checks them: `ferry verify` and `ferry import`
/// judge such a bundle alike.
#[derive(Default)]
struct JoinCheck {
    /// Per key: the digest of its parts so far.
    running: std::sync::Arc<std::sync::Mutex<HashMap<String, WholeDigest>>>,
    /// The volume being checked.
    volume: String,
}

/// A part's bytes into its object's running digest.
struct PartDigest {
    running: std::sync::Arc<std::sync::Mutex<HashMap<String, WholeDigest>>>,
    obj: ObjectEntry,
    digest: WholeDigest,
    volume: String,
}

impl EntrySink for JoinCheck {
    type Writer = PartDigest;
    async fn open(&mut self, obj: &ObjectEntry) -> Result<Option<PartDigest>> {
        let Some(split) = &obj.split else {
            return Ok(None);
        };
        let mut running = self.running.lock().expect("join digests");
        // A first part starts the object (again, after a sequence the exporter abandoned).
        let digest = match split.part {
            1 => Some(WholeDigest::default()),
            _ => running.remove(&obj.key),
        };
        Ok(digest.map(|digest| PartDigest {
            running: self.running.clone(),
            obj: obj.clone(),
            digest,
            volume: self.volume.clone(),
        }))
    }
}

impl EntryWriter for PartDigest {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.digest.update(&chunk);
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        let Some(split) = &self.obj.split else {
            return Ok(());
        };
        let (Some(sha256), Some(crc32)) = (&split.object_sha256, split.object_crc32) else {
            let mut running = self.running.lock().expect("join digests");
            running.insert(self.obj.key.clone(), self.digest);
            return Ok(());
        };
        let size = self.digest.len();
        let (got_sha, got_crc) = self.digest.finish();
        if (size, got_crc, got_sha.as_str()) == (split.object_size, crc32, sha256.as_str()) {
            return Ok(());
        }
        Err(Error::Verify {
            volume: self.volume,
            entry: Some(format!("{} (key `{}`)", self.obj.entry, self.obj.key)),
            detail: format!(
                "its parts join into {size} bytes, CRC-32 {got_crc:08x}, SHA-256 {got_sha}; the last part says {} bytes, {crc32:08x}, {sha256}",
                split.object_size
            ),
        })
    }

    async fn abort(self) {}
}

/// A verified volume.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeReport {
    pub index: u32,
    pub name: String,
    pub location: String,
    pub size: u64,
    pub sha256: String,
    pub objects: u64,
    pub bytes: u64,
}

/// A verified bundle.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    pub job: String,
    pub sequence: u64,
    pub baseline: bool,
    pub location: String,
    pub previous_sequence: Option<u64>,
    pub previous_digest: Option<String>,
    pub bundle_digest: String,
    /// True when `SHA256SUMS` was found and checked.
    pub sha256sums: bool,
    /// SHA-256 of the trusted public key whose signature was checked (with `--trust`).
    pub signed_by: Option<String>,
    /// The volumes are sealed with age (`.zip.age`).
    pub encrypted: bool,
    /// Every entry was read and checked against its manifest (false when sealed volumes were
    /// checked without an identity: then only `SHA256SUMS` and the signature were).
    pub contents_checked: bool,
    pub volumes: Vec<VolumeReport>,
    pub objects: u64,
    pub bytes: u64,
    pub deleted: u64,
    pub moved: u64,
    /// With `--policy`: the objects it refuses (key, reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_objects: Option<Vec<(String, String)>>,
    /// With `--require-approvals`: the valid approvals by listed approvers it carries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<crate::approval::Approved>,
}

/// Pass over volume `v` of `bundle` (its `contents`, read again for this pass): every entry
/// checked, objects handed to `sink`.
pub async fn check_volume<S: EntrySink>(
    bundle: &Bundle,
    v: &OpenVolume,
    contents: &Contents,
    sink: &mut S,
    progress: &dyn Progress,
    stop: &crate::interrupt::Stop,
) -> Result<VolumeReport> {
    let volume = v.source.display();
    let by_entry: HashMap<&str, &ObjectEntry> = contents
        .objects
        .iter()
        .map(|o| (o.entry.as_str(), o))
        .collect();
    let (reader, tap) = v.source.stream().await?;
    let mut walk = Walk::new(volume.clone(), reader, &contents.dir);
    let (mut objects, mut bytes) = (0u64, 0u64);
    while let Some(e) = walk.next_entry().await? {
        // A stop request ends the pass between entries (nothing of an entry is half-written).
        stop.check()?;
        if e.name == MANIFEST_ENTRY {
            while walk.read_chunk().await?.is_some() {}
            walk.end_entry()?;
            continue;
        }
        let obj = by_entry.get(e.name.as_str()).ok_or_else(|| Error::Verify {
            volume: volume.clone(),
            entry: Some(e.name.clone()),
            detail: "the entry is not in the volume's manifest".into(),
        })?;
        let mut writer = sink.open(obj).await?;
        let checked: Result<crate::format::unzip::EntryDigest> = async {
            while let Some(chunk) = walk.read_chunk().await? {
                progress.object(chunk.len() as u64);
                if let Some(w) = writer.as_mut() {
                    w.write(chunk).await?;
                }
            }
            let d = walk.end_entry()?;
            let mismatch = |detail: String| Error::Verify {
                volume: volume.clone(),
                entry: Some(format!("{} (key `{}`)", e.name, obj.key)),
                detail,
            };
            if d.size != obj.size {
                return Err(mismatch(format!(
                    "{} bytes, the manifest says {}",
                    d.size, obj.size
                )));
            }
            if d.crc32 != obj.crc32 {
                return Err(mismatch(format!(
                    "CRC-32 {:08x}, the manifest says {:08x}",
                    d.crc32, obj.crc32
                )));
            }
            if d.sha256 != obj.sha256 {
                return Err(mismatch(format!(
                    "SHA-256 {}, the manifest says {}",
                    d.sha256, obj.sha256
                )));
            }
            Ok(d)
        }
        .await;
        let d = match checked {
            Ok(d) => d,
            Err(e) => {
                // Nothing of a failed entry stays: its upload is aborted (awaited) first.
                if let Some(w) = writer {
                    w.abort().await;
                }
                return Err(e);
            }
        };
        if let Some(w) = writer {
            w.commit().await?;
        }
        // An object in parts counts once, at its last part.
        if !crate::format::parts::is_early_part(obj) {
            objects += 1;
        }
        bytes += d.size;
    }
    let (mut size, mut sha256) = walk.finish().await?;
    if let Some(tap) = tap {
        // A sealed volume: the bundle names its ciphertext.
        (size, sha256) = tap.finish(&volume, v.source.media.len().await?)?;
    }
    let (want_size, want_sha) = bundle.expected(v.manifest.volume);
    let bad = |detail: String| Error::Verify {
        volume: volume.clone(),
        entry: None,
        detail,
    };
    if let Some(s) = want_size
        && s != size
    {
        return Err(bad(format!("{size} bytes, the bundle says {s}")));
    }
    if let Some(s) = want_sha
        && s != sha256
    {
        return Err(bad(format!("SHA-256 {sha256}, the bundle says {s}")));
    }
    Ok(VolumeReport {
        index: v.manifest.volume,
        name: bundle.volume_name(v.manifest.volume),
        location: volume,
        size,
        sha256,
        objects,
        bytes,
    })
}

/// Verify every byte of `bundle`.
/// Verify every byte of `bundle`; with `trusted` keys, first its signature (a bundle no trusted
/// key signed is refused before any volume is read).
pub async fn verify_bundle(
    bundle: &Bundle,
    trusted: &[crate::format::sign::TrustedKey],
    progress: &dyn Progress,
    stop: &crate::interrupt::Stop,
) -> Result<BundleReport> {
    let signed_by = bundle.signed_by(trusted)?.map(|k| k.fingerprint.clone());
    let mut volumes = Vec::new();
    let mut joins = JoinCheck::default();
    for v in &bundle.volumes {
        let contents = v.contents().await?;
        joins.volume = v.source.display();
        volumes.push(check_volume(bundle, v, &contents, &mut joins, progress, stop).await?);
    }
    let last = volumes.last().map(|v| v.sha256.clone());
    let digest = bundle
        .digest(last.as_deref())
        .expect("the last volume's digest is known");
    Ok(BundleReport {
        job: bundle.job.clone(),
        sequence: bundle.sequence,
        baseline: bundle.baseline,
        location: bundle.location.clone(),
        previous_sequence: bundle.previous.as_ref().map(|p| p.sequence),
        previous_digest: bundle.previous.as_ref().map(|p| p.bundle_digest.clone()),
        bundle_digest: digest,
        sha256sums: bundle.sums.is_some(),
        signed_by,
        encrypted: bundle.sealed(),
        contents_checked: true,
        objects: volumes.iter().map(|v| v.objects).sum(),
        bytes: volumes.iter().map(|v| v.bytes).sum(),
        deleted: bundle.last.deleted.len() as u64 + bundle.last.vanished.len() as u64,
        moved: bundle.last.moved.len() as u64,
        volumes,
        refused_objects: None,
        approved_by: Vec::new(),
    })
}

/// SHA-256 of a whole volume (when `SHA256SUMS` is not at hand to name the bundle).
pub async fn volume_sha256(source: &VolumeSource) -> Result<String> {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let mut r = source.stream().await?;
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| match e.downcast::<Error>() {
                // An S3 volume's transport error stays what it is (retryable).
                Ok(inner) => inner,
                Err(e) => Error::Io {
                    op: "reading",
                    path: source.display().into(),
                    source: e,
                },
            })?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    Ok(hex::encode(sha.finalize()))
}

/// What can be checked of bundles without opening their volumes (sealed volumes without an
/// identity): every volume in a folder is listed in its `SHA256SUMS` and matches it, and, with
/// `trusted` keys, `SHA256SUMS` carries a valid signature by one of them.
pub async fn verify_media(
    folders: &[MediaFolder],
    trusted: &[crate::format::sign::TrustedKey],
    progress: &dyn Progress,
) -> Result<Vec<BundleReport>> {
    let mut out = Vec::new();
    for f in folders {
        let bad = |detail: String| Error::Bundle {
            what: "of sealed volumes".into(),
            location: f.location.clone(),
            detail,
        };
        let Some(sums) = &f.sums else {
            return Err(bad(
                "no SHA256SUMS beside the volumes: without it (or an --identity to open them) nothing can be checked".into(),
            ));
        };
        let listed: Vec<(&str, &str)> = crate::format::manifest::parse_sha256sums(sums)
            .map_err(bad)?
            .into_iter()
            .map(|l| (l.sha256, l.name))
            .collect();
        for v in &f.volumes {
            if !listed.iter().any(|(_, n)| *n == v.file_name()) {
                return Err(bad(format!(
                    "`{}` is not listed in SHA256SUMS",
                    v.file_name()
                )));
            }
        }
        let (job, sequence) = listed
            .first()
            .and_then(|(_, n)| crate::format::manifest::volume_name_parts(n))
            .map(|(job, sequence, _)| (job.to_string(), sequence))
            .unwrap_or_default();
        let label = format!("{sequence} of job `{job}`");
        let signed_by = if trusted.is_empty() {
            None
        } else {
            let untrusted = |detail: String| Error::Untrusted {
                what: label.clone(),
                location: f.location.clone(),
                detail,
            };
            let Some(sig) = &f.signature else {
                return Err(untrusted(format!(
                    "it carries no signature (`SHA256SUMS` and `{}` must travel beside the volumes)",
                    crate::format::sign::SIGNATURE_FILE
                )));
            };
            let sig = crate::format::sign::parse(sig, crate::format::sign::SIGNATURE_FILE)
                .map_err(untrusted)?;
            let k =
                crate::format::sign::verify(sums.as_bytes(), &sig, trusted).map_err(untrusted)?;
            Some(k.fingerprint.clone())
        };
        let mut volumes = Vec::new();
        for (i, (sha, name)) in listed.iter().enumerate() {
            let Some(v) = f.volumes.iter().find(|v| v.file_name() == *name) else {
                return Err(bad(format!(
                    "SHA256SUMS lists `{name}`, which is not there: copy the whole bundle folder"
                )));
            };
            let size = v.len().await?;
            let got = volume_sha256(v).await?;
            progress.object(size);
            if got != *sha {
                return Err(Error::Verify {
                    volume: v.display(),
                    entry: None,
                    detail: format!("SHA-256 {got}, SHA256SUMS says {sha}"),
                });
            }
            volumes.push(VolumeReport {
                index: i as u32 + 1,
                name: name.to_string(),
                location: v.display(),
                size,
                sha256: got,
                objects: 0,
                bytes: 0,
            });
        }
        out.push(BundleReport {
            job,
            sequence,
            baseline: false,
            location: f.location.clone(),
            previous_sequence: None,
            previous_digest: None,
            bundle_digest: hex::encode(sha2::Sha256::digest(sums.as_bytes())),
            sha256sums: true,
            signed_by,
            encrypted: f
                .volumes
                .iter()
                .any(|v| crate::format::seal::is_sealed_name(&v.file_name())),
            contents_checked: false,
            volumes,
            objects: 0,
            bytes: 0,
            deleted: 0,
            moved: 0,
            refused_objects: None,
            approved_by: Vec::new(),
        });
    }
    Ok(out)
}
