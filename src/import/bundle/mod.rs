//! Bundles as they are found on the far side: volume files in local folders or `s3://`
//! prefixes, grouped by job and sequence from their manifests, with their `SHA256SUMS`, and
//! checked for completeness and consistency (every volume once, the same chain fields in every
//! manifest, the manifest and the zip directory listing the same entries). Reading the bytes
//! is `unzip`'s; judging them is `verify`'s.
mod find;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::S3Location;
use crate::error::{Error, Result, io_at};
use crate::format::manifest::{
    ChainLink, FORMAT, Final, MANIFEST_ENTRY, Manifest, ObjectEntry, ObjectHeaders, VolumeInfo,
    key_problem,
};
use crate::format::parts::{Joined, join};
use crate::format::seal::Identities;
use crate::format::sign::TrustedKey;
use crate::format::unzip::{Directory, Volume, VolumeSource, read_directory, read_entry};
use crate::store::Store;

/// A volume as the bundle keeps it: where it is, its manifest's header (the objects emptied:
/// memory holds one volume's objects at a time, read again by [`OpenVolume::contents`]) and
/// what that manifest said in numbers.
#[derive(Debug, Clone)]
pub struct OpenVolume {
    pub source: Volume,
    /// The manifest with `objects` emptied (counted in `objects` and `bytes`).
    pub manifest: Manifest,
    /// Bytes on the media (the zip's, or for a sealed volume its ciphertext's).
    pub media_len: u64,
    /// Length of the zip (the plaintext's, for a sealed volume).
    pub zip_len: u64,
    /// Objects the manifest lists, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Objects carrying an Object Lock (a retention or a legal hold).
    pub locked: u64,
    /// The manifest's lines that are parts of an object split across volumes (few: one
    /// begins and one ends a volume at most), joined by [`Bundle::joined`].
    pub parts: Vec<ObjectEntry>,
    /// SHA-256 of the manifest's bytes as first read: a second read must give the same.
    manifest_sha256: [u8; 32],
}

/// A volume's directory and objects, read (and checked) again when its turn comes.
#[derive(Debug)]
pub struct Contents {
    pub dir: Directory,
    pub objects: Vec<ObjectEntry>,
}

impl OpenVolume {
    /// The directory and the manifest's objects, read again from the media and checked as at
    /// opening; refused when the manifest's bytes changed since (media is not trusted to hold
    /// still).
    pub async fn contents(&self) -> Result<Contents> {
        let (dir, manifest, sha) = read_checked(&self.source).await?;
        if sha != self.manifest_sha256 || dir.len != self.zip_len {
            return Err(Error::Verify {
                volume: self.source.display(),
                entry: Some(MANIFEST_ENTRY.into()),
                detail:
                    "the volume changed while it was being imported: its manifest or directory \
                         differs from when it was first read. Copy the bundle again"
                        .into(),
            });
        }
        Ok(Contents {
            dir,
            objects: manifest.objects,
        })
    }
}

/// A complete, consistent bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The folder or prefix it was found in.
    pub location: String,
    pub job: String,
    pub sequence: u64,
    pub previous: Option<ChainLink>,
    pub baseline: bool,
    pub source_bucket: String,
    pub source_prefix: String,
    /// Volumes in order (index 1..=n).
    pub volumes: Vec<OpenVolume>,
    pub last: Final,
    /// The `SHA256SUMS` text, when it was found beside the volumes.
    pub sums: Option<String>,
    /// The `SHA256SUMS.sig` bytes found beside that `SHA256SUMS`.
    pub signature: Option<Vec<u8>>,
    /// The approval files `(name, bytes)` found there (judged by [`Bundle::approvals`]).
    pub approvals: Vec<(String, Vec<u8>)>,
}

impl Bundle {
    /// "bundle 3 of job `x`".
    pub fn label(&self) -> String {
        format!("{} of job `{}`", self.sequence, self.job)
    }

    /// The name volume `index` has in the export bucket (and in `SHA256SUMS`).
    pub fn volume_name(&self, index: u32) -> String {
        match self.last.earlier_volumes.get(index as usize - 1) {
            Some(v) => v.name.clone(),
            None => format!(
                "{}-{:08}-{index:04}.zip{}",
                self.job,
                self.sequence,
                if self.sealed() {
                    crate::format::seal::SUFFIX
                } else {
                    ""
                }
            ),
        }
    }

    /// Expected size and SHA-256 of volume `index`, as far as the bundle says.
    pub fn expected(&self, index: u32) -> (Option<u64>, Option<String>) {
        if let Some(v) = self.last.earlier_volumes.get(index as usize - 1) {
            return (Some(v.size), Some(v.sha256.clone()));
        }
        let name = self.volume_name(index);
        let sha = self.sums.as_deref().and_then(|s| {
            crate::format::manifest::parse_sha256sums(s)
                .ok()?
                .into_iter()
                .find(|l| l.name == name)
                .map(|l| l.sha256.to_string())
        });
        (None, sha)
    }

    /// True when its volumes are sealed (age-encrypted).
    pub fn sealed(&self) -> bool {
        self.volumes.iter().any(|v| v.source.is_sealed())
    }

    /// Bytes of all object entries.
    pub fn object_bytes(&self) -> u64 {
        self.volumes.iter().map(|v| v.bytes).sum()
    }

    /// Objects (and moves' new keys, and metadata-only entries) carrying an Object Lock.
    pub fn locked(&self) -> u64 {
        let moved = self.last.moved.iter();
        let moved = moved.filter(|m| m.headers.as_ref().is_some_and(|h| h.is_locked()));
        let restated = self.last.metadata_only.iter();
        let restated = restated.filter(|m| m.headers.is_locked());
        self.volumes.iter().map(|v| v.locked).sum::<u64>()
            + moved.count() as u64
            + restated.count() as u64
    }

    /// Objects of all volumes.
    pub fn object_count(&self) -> u64 {
        self.volumes.iter().map(|v| v.objects).sum()
    }

    /// The bundle digest (SHA-256 of `SHA256SUMS`), given the last volume's SHA-256 when
    /// `SHA256SUMS` is not at hand.
    pub fn digest(&self, last_sha256: Option<&str>) -> Option<String> {
        if let Some(s) = &self.sums {
            return Some(hex::encode(Sha256::digest(s.as_bytes())));
        }
        let last = last_sha256?;
        let mut infos = self.last.earlier_volumes.clone();
        let n = self.volumes.len() as u32;
        infos.push(VolumeInfo {
            index: n,
            name: self.volume_name(n),
            size: 0,
            sha256: last.to_string(),
            objects: 0,
            bytes: 0,
        });
        Some(crate::format::manifest::bundle_digest(&infos))
    }

    /// The trusted key that signed this bundle; `None` when `trusted` is empty (no check asked
    /// for). A bundle without a valid signature by one of `trusted` is refused (exit 5).
    pub fn signed_by<'k>(&self, trusted: &'k [TrustedKey]) -> Result<Option<&'k TrustedKey>> {
        if trusted.is_empty() {
            return Ok(None);
        }
        let untrusted = |detail: String| Error::Untrusted {
            what: self.label(),
            location: self.location.clone(),
            detail,
        };
        let (Some(sums), Some(sig)) = (&self.sums, &self.signature) else {
            return Err(untrusted(format!(
                "it carries no signature (`SHA256SUMS` and `{}` must travel beside the volumes)",
                crate::format::sign::SIGNATURE_FILE
            )));
        };
        let sig = crate::format::sign::parse(sig, crate::format::sign::SIGNATURE_FILE)
            .map_err(untrusted)?;
        crate::format::sign::verify(sums.as_bytes(), &sig, trusted)
            .map(Some)
            .map_err(untrusted)
    }

    /// Its approval files judged against `approvers`, for the bundle digest `digest`.
    pub fn approvals(&self, digest: &str, approvers: &[TrustedKey]) -> crate::approval::Tally {
        crate::approval::tally(&self.approvals, &self.job, self.sequence, digest, approvers)
    }

    /// Refuse the bundle (exit 5) unless it meets `req`; the approvals that count.
    pub fn check_approvals(
        &self,
        digest: &str,
        req: &crate::approval::Requirement,
    ) -> Result<crate::approval::Tally> {
        let t = self.approvals(digest, &req.approvers);
        let of = crate::approval::Subject {
            job: &self.job,
            sequence: self.sequence,
            bundle_digest: digest,
            location: &self.location,
        };
        crate::approval::check(req, &t, of)?;
        Ok(t)
    }

    fn bad(&self, detail: impl Into<String>) -> Error {
        Error::Bundle {
            what: self.label(),
            location: self.location.clone(),
            detail: detail.into(),
        }
    }

    /// The objects split across its volumes, joined from their parts, and how many sequences
    /// of parts were abandoned by the exporter (left out). Parts that do not fit together are
    /// refused (exit 5).
    pub fn joined(&self) -> Result<(Vec<Joined>, u64)> {
        let parts = self
            .volumes
            .iter()
            .flat_map(|v| v.parts.iter().map(|p| (v.manifest.volume, p.clone())))
            .collect();
        join(parts).map_err(|detail| Error::Verify {
            volume: self.location.clone(),
            entry: None,
            detail: format!("its objects split across volumes do not fit together: {detail}"),
        })
    }

    /// Completeness and consistency, without reading the entries' bytes.
    fn check(&self) -> Result<()> {
        self.joined()?;
        if self.sealed() && self.volumes.iter().any(|v| !v.source.is_sealed()) {
            return Err(self.bad(
                "mixes encrypted (.zip.age) and plain (.zip) volumes: a bundle is one or the other",
            ));
        }
        let count = u64::from(self.last.volume_count);
        if count == 0 || count > crate::format::manifest::limits::VOLUMES {
            return Err(self.bad(format!(
                "final manifest claims {count} volumes (a bundle has 1 to {})",
                crate::format::manifest::limits::VOLUMES
            )));
        }
        let n = count as usize;
        let found: Vec<u32> = self.volumes.iter().map(|v| v.manifest.volume).collect();
        if !found.iter().copied().eq(1..=n as u32) {
            let missing: Vec<String> = (1..=n as u32)
                .filter(|i| !found.contains(i))
                .take(10)
                .map(|i| format!("{i} (`{}`)", self.volume_name(i)))
                .collect();
            let more = (n - found.len().min(n)).saturating_sub(missing.len());
            return Err(self.bad(format!(
                "is incomplete: it has {n} volume(s); missing volume(s) {}{}. Copy them beside the others",
                missing.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            )));
        }
        if self.last.earlier_volumes.len() != n - 1 {
            return Err(self.bad("final manifest lists a different number of earlier volumes"));
        }
        let first = &self.volumes[0].manifest;
        for v in &self.volumes {
            let m = &v.manifest;
            if m.previous != first.previous
                || m.baseline != first.baseline
                || m.source != first.source
                || m.listed_at != first.listed_at
            {
                return Err(self.bad(format!(
                    "`{}` disagrees with volume 1 about the bundle's chain fields",
                    v.source.display()
                )));
            }
            if m.volume as usize != n && m.last.is_some() {
                return Err(self.bad(format!(
                    "`{}` carries a final manifest but is not the last volume",
                    v.source.display()
                )));
            }
            if let (Some(size), _) = self.expected(m.volume)
                && size != v.media_len
            {
                return Err(Error::Verify {
                    volume: v.source.display(),
                    entry: None,
                    detail: format!("{} bytes, the bundle says {size}", v.media_len),
                });
            }
        }
        let last = &self.last;
        let keys = last
            .deleted
            .iter()
            .chain(&last.vanished)
            .chain(last.moved.iter().flat_map(|m| [&m.from, &m.to]))
            .chain(last.metadata_only.iter().map(|m| &m.key));
        for k in keys {
            if let Some(p) = key_problem(k) {
                return Err(self.bad(format!("final manifest names {p}")));
            }
        }
        if let Some(p) = last
            .moved
            .iter()
            .find_map(|m| m.headers.as_ref().and_then(ObjectHeaders::problem))
        {
            return Err(self.bad(format!("a move's new headers cannot be written: {p}")));
        }
        let mut restated = std::collections::HashSet::new();
        for m in &last.metadata_only {
            if let Some(p) = m.headers.problem() {
                return Err(self.bad(format!(
                    "the metadata-only entry of `{}` cannot be written: {p}",
                    m.key
                )));
            }
            if !restated.insert(m.key.as_str()) {
                return Err(self.bad(format!(
                    "the final manifest lists `{}` twice among metadata-only entries",
                    m.key
                )));
            }
        }
        if let Some(sums) = &self.sums {
            let names: Vec<&str> = crate::format::manifest::parse_sha256sums(sums)
                .map_err(|e| self.bad(e))?
                .into_iter()
                .map(|l| l.name)
                .collect();
            let expected: Vec<String> = (1..=n as u32).map(|i| self.volume_name(i)).collect();
            if names != expected {
                return Err(self.bad(format!(
                    "SHA256SUMS lists {names:?}, the manifests {expected:?}"
                )));
            }
            for (i, v) in self.last.earlier_volumes.iter().enumerate() {
                let (_, sha) = self.expected(i as u32 + 1);
                if sha.as_deref() != Some(v.sha256.as_str())
                    || !sums.contains(&format!("{}  {}", v.sha256, v.name))
                {
                    return Err(self.bad(format!(
                        "SHA256SUMS and the final manifest disagree about `{}`",
                        v.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Open a volume: its directory and manifest read and checked against each other, the
/// objects counted, and only the manifest's header kept.
pub async fn open_volume(source: Volume) -> Result<OpenVolume> {
    let (dir, mut manifest, manifest_sha256) = read_checked(&source).await?;
    let objects = std::mem::take(&mut manifest.objects);
    let bytes = objects
        .iter()
        .try_fold(0u64, |sum, o| sum.checked_add(o.size))
        .ok_or_else(|| Error::Verify {
            volume: source.display(),
            entry: None,
            detail: "the manifest's object sizes add up past 2^64 bytes".into(),
        })?;
    let parts: Vec<ObjectEntry> = objects
        .iter()
        .filter(|o| o.split.is_some())
        .cloned()
        .collect();
    // The exporter ends a volume with a part and begins the next with one: never more than
    // two a volume (memory holds every volume's parts, so a forged manifest cannot add more).
    if parts.len() > 2 {
        return Err(Error::Verify {
            volume: source.display(),
            entry: Some(parts[2].entry.clone()),
            detail: format!(
                "the manifest marks {} entries as parts of split objects; a volume holds at most 2",
                parts.len()
            ),
        });
    }
    Ok(OpenVolume {
        media_len: source.media.len().await?,
        zip_len: dir.len,
        objects: objects.len() as u64,
        bytes,
        locked: objects.iter().filter(|o| o.headers.is_locked()).count() as u64,
        parts,
        source,
        manifest,
        manifest_sha256,
    })
}

/// Read a volume's directory and manifest and check them on their own: the format, keys and
/// headers an import can write, and the manifest and the directory listing the same entries
/// with the same sizes and CRC-32s. Also gives the SHA-256 of the manifest's bytes.
async fn read_checked(source: &Volume) -> Result<(Directory, Manifest, [u8; 32])> {
    let dir = read_directory(source).await?;
    let Some(i) = dir.find(MANIFEST_ENTRY) else {
        return Err(Error::Archive {
            volume: source.display(),
            detail: format!("no `{MANIFEST_ENTRY}` entry: not an s3-ferry volume"),
        });
    };
    let json = read_entry(source, &dir, i, crate::format::manifest::limits::MANIFEST).await?;
    let sha: [u8; 32] = Sha256::digest(&json).into();
    // A manifest that does not parse is damage to the volume (exit 5), like a bad CRC.
    let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| Error::Archive {
        volume: source.display(),
        detail: format!("its manifest `{MANIFEST_ENTRY}` is not an s3-ferry manifest ({e})"),
    })?;
    drop(json);
    check_contents(source, &dir, &manifest)?;
    Ok((dir, manifest, sha))
}

/// One volume's own consistency (what needs its objects; the bundle's checks need only headers).
fn check_contents(source: &Volume, dir: &Directory, m: &Manifest) -> Result<()> {
    // A manifest cannot describe more objects than the volume's directory holds, so memory
    // follows the volume's real size.
    if m.objects.len() + 1 != dir.entries.len() {
        return Err(Error::Verify {
            volume: source.display(),
            entry: None,
            detail: format!(
                "the manifest lists {} objects, the zip holds {}",
                m.objects.len(),
                dir.entries.len() - 1
            ),
        });
    }
    if m.format != FORMAT {
        return Err(Error::Bundle {
            what: format!("{} of job `{}`", m.sequence, m.job),
            location: source.display(),
            detail: format!(
                "`{}` has format `{}`; this ferry reads `{FORMAT}`",
                source.display(),
                m.format
            ),
        });
    }
    // Whatever verify accepts, import can write: keys S3 can hold, headers HTTP can carry.
    for o in &m.objects {
        // A part layout must fit the whole object (a split object's too).
        let whole = o.split.as_ref().map_or(o.size, |s| s.object_size);
        let layout = o.part_layout.as_ref().and_then(|l| l.problem(whole));
        // The export's detected type is a MIME type: short, printable (never trusted here).
        let detected = o
            .detected_type
            .as_ref()
            .filter(|t| t.len() > 255 || !t.bytes().all(|b| b.is_ascii_graphic()))
            .map(|t| {
                format!(
                    "a detected type of {} bytes that is not a MIME type",
                    t.len()
                )
            });
        if let Some(p) = key_problem(&o.key)
            .or_else(|| o.headers.problem())
            .or(layout)
            .or(detected)
        {
            return Err(Error::Verify {
                volume: source.display(),
                entry: Some(o.entry.clone()),
                detail: format!("the manifest describes {p}: no bucket or folder can take it"),
            });
        }
    }
    // The manifest and the zip directory must list the same entries.
    let listed: HashMap<&str, &ObjectEntry> =
        m.objects.iter().map(|o| (o.entry.as_str(), o)).collect();
    if listed.len() != m.objects.len() {
        return Err(Error::Bundle {
            what: format!("{} of job `{}`", m.sequence, m.job),
            location: source.display(),
            detail: format!(
                "`{}` lists an entry twice in its manifest",
                source.display()
            ),
        });
    }
    let mut in_zip = 0;
    for e in &dir.entries {
        if e.name == MANIFEST_ENTRY {
            continue;
        }
        let Some(o) = listed.get(e.name.as_str()) else {
            return Err(Error::Verify {
                volume: source.display(),
                entry: Some(e.name.clone()),
                detail: "the entry is not in the volume's manifest".into(),
            });
        };
        if o.size != e.size || o.crc32 != e.crc32 {
            return Err(Error::Verify {
                volume: source.display(),
                entry: Some(e.name.clone()),
                detail: format!(
                    "directory says {} bytes, CRC-32 {:08x}; manifest says {} bytes, {:08x}",
                    e.size, e.crc32, o.size, o.crc32
                ),
            });
        }
        in_zip += 1;
    }
    if in_zip != m.objects.len() {
        return Err(Error::Verify {
            volume: source.display(),
            entry: None,
            detail: format!(
                "the manifest lists {} objects, the zip holds {in_zip}",
                m.objects.len()
            ),
        });
    }
    Ok(())
}

pub use find::{
    ListedFolder, MediaFolder, any_sealed, complete_folders, discover, folder_prefix,
    media_folders, one_job, scan_s3,
};
