//! Approvals: a reviewer's signed statement that one bundle may cross. `ferry approve` signs the
//! bundle digest (the SHA-256 of `SHA256SUMS`, as the exporter does) with an ECDSA P-256 key —
//! a KMS key or a PKCS#8 file, through the same [`Signer`] — but over a domain-separated
//! message: the bytes of [`DOMAIN`] then the approval's own fields, so neither an exporter's
//! signature (over 32 digest bytes) nor an approval can ever pass for the other. The file,
//! `approval-FINGERPRINT.json`, lies beside the bundle; a requirement ([`Requirement`]: N
//! distinct approvers out of a list of public keys) counts only approvals whose every byte is
//! as signed, by a listed key, for *this* bundle's digest, job and sequence.
//!
//! What an approval proves: the holder of that key signed off this exact bundle at the time it
//! says. It does not prove they read every object (`ferry review` is what they look at).

pub mod carry;
mod write;

pub use write::{ApproveReport, approve};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::format::sign::{Signer, TrustedKey};

/// The approval file's format.
pub const FORMAT: &str = "s3-ferry-approval/1";
const ALGORITHM: &str = "ECDSA_P256_SHA256";
/// What every signed approval message starts with. A bundle signature signs 32 digest bytes,
/// never a message with this prefix (and `SHA256SUMS` holds no NUL byte).
pub const DOMAIN: &[u8] = b"s3-ferry approval of a bundle/1\0";
/// An approval file larger than this is not one.
pub const MAX_APPROVAL_FILE: u64 = 64 * 1024;
/// Approval files read beside one bundle, at most (more is refused, not cut).
pub const MAX_APPROVALS: usize = 64;
/// The longest note, in bytes.
pub const MAX_NOTE: usize = 4096;

/// The file name of the approval by the key with this fingerprint.
pub fn file_name(fingerprint: &str) -> String {
    format!("approval-{fingerprint}.json")
}

/// True for a name [`file_name`] makes (`approval-<64 hex>.json`).
pub fn is_approval_name(name: &str) -> bool {
    name.strip_prefix("approval-")
        .and_then(|n| n.strip_suffix(".json"))
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What `approval-FINGERPRINT.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub format: String,
    pub algorithm: String,
    pub job: String,
    pub sequence: u64,
    /// SHA-256 of the approved bundle's `SHA256SUMS`.
    pub bundle_digest: String,
    /// SHA-256 of the reviewer's public key (DER SubjectPublicKeyInfo), hex.
    pub key: String,
    /// When it was signed (RFC 3339, UTC).
    pub time: String,
    pub note: String,
    /// ASN.1 DER ECDSA signature over [`DOMAIN`] and the fields above, hex.
    pub signature: String,
}

/// The signed fields, in their signed order.
#[derive(Serialize)]
struct Signed<'a> {
    format: &'a str,
    algorithm: &'a str,
    job: &'a str,
    sequence: u64,
    bundle_digest: &'a str,
    key: &'a str,
    time: &'a str,
    note: &'a str,
}

impl Approval {
    fn message(&self) -> Vec<u8> {
        let signed = Signed {
            format: &self.format,
            algorithm: &self.algorithm,
            job: &self.job,
            sequence: self.sequence,
            bundle_digest: &self.bundle_digest,
            key: &self.key,
            time: &self.time,
            note: &self.note,
        };
        let mut m = DOMAIN.to_vec();
        m.extend(serde_json::to_vec(&signed).expect("plain fields serialize"));
        m
    }

    /// Sign an approval of bundle `sequence` of `job` with digest `bundle_digest`.
    pub async fn sign(
        signer: &dyn Signer,
        job: &str,
        sequence: u64,
        bundle_digest: &str,
        time: String,
        note: &str,
    ) -> Result<Self> {
        if note.len() > MAX_NOTE || note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Error::config(
                "--note",
                format!("at most {MAX_NOTE} bytes of text without control characters"),
            ));
        }
        let mut a = Approval {
            format: FORMAT.into(),
            algorithm: ALGORITHM.into(),
            job: job.into(),
            sequence,
            bundle_digest: bundle_digest.into(),
            key: signer.public_key().fingerprint.clone(),
            time,
            note: note.into(),
            signature: String::new(),
        };
        // The signer signs SHA-256 of what it is given, as for SHA256SUMS.
        a.signature = signer.sign(&a.message()).await?.signature;
        Ok(a)
    }

    /// The file's bytes: pretty JSON and a newline, the one form [`parse`] accepts.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("plain fields serialize");
        b.push(b'\n');
        b
    }

    /// True when `key` made this signature over these fields.
    fn signed_by(&self, key: &TrustedKey) -> bool {
        key.fingerprint == self.key
            && hex::decode(&self.signature)
                .is_ok_and(|sig| key.verifies_message(&self.message(), &sig))
    }
}

/// Parse an approval file's bytes: refused unless they are exactly what [`Approval::to_bytes`]
/// writes (an approval altered in any byte, even white space, is not one).
pub fn parse(bytes: &[u8]) -> std::result::Result<Approval, String> {
    if bytes.len() as u64 > MAX_APPROVAL_FILE {
        return Err(format!(
            "{} bytes: an approval is at most {MAX_APPROVAL_FILE}",
            bytes.len()
        ));
    }
    let a: Approval =
        serde_json::from_slice(bytes).map_err(|e| format!("not an approval file: {e}"))?;
    if a.format != FORMAT || a.algorithm != ALGORITHM {
        return Err(format!(
            "format `{}`/`{}`; this ferry reads `{FORMAT}`/`{ALGORITHM}`",
            a.format, a.algorithm
        ));
    }
    if a.to_bytes() != bytes {
        return Err("its bytes are not as they were signed (altered)".into());
    }
    Ok(a)
}

/// How many distinct approvers, out of which keys, a bundle needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    pub required: u32,
    pub approvers: Vec<TrustedKey>,
}

impl Requirement {
    /// From `--require-approvals N --approver PEM…`: N above the number of approvers can
    /// never be met and is refused, as is N = 0 with approvers.
    pub fn new(required: u32, approvers: Vec<TrustedKey>) -> Result<Self> {
        let mut keys: Vec<TrustedKey> = Vec::new();
        for k in approvers {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        if required as usize > keys.len() {
            return Err(Error::config(
                "--require-approvals",
                format!(
                    "{required} approvals cannot be met by {} distinct --approver key(s)",
                    keys.len()
                ),
            ));
        }
        Ok(Requirement {
            required,
            approvers: keys,
        })
    }

    /// True when nothing is required.
    pub fn is_none(&self) -> bool {
        self.required == 0
    }
}

/// A valid approval, as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approved {
    /// The approver's key fingerprint.
    pub key: String,
    pub time: String,
    pub note: String,
}

/// An approval file beside a bundle that does not count, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotCounted {
    pub file: String,
    pub reason: String,
}

/// The approvals of one bundle, judged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Valid approvals by distinct listed approvers (first one per key).
    pub approved: Vec<Approved>,
    pub not_counted: Vec<NotCounted>,
}

/// Judge the approval files `(name, bytes)` found beside bundle `sequence` of `job` with digest
/// `digest` against `approvers`. With no approvers every well-formed approval for this bundle
/// is listed but none is checked as valid (`approved` stays empty): a report shows them as
/// unchecked.
pub fn tally(
    files: &[(String, Vec<u8>)],
    job: &str,
    sequence: u64,
    digest: &str,
    approvers: &[TrustedKey],
) -> Tally {
    let mut t = Tally::default();
    for (name, bytes) in files {
        let mut skip = |reason: String| {
            t.not_counted.push(NotCounted {
                file: name.clone(),
                reason,
            })
        };
        let a = match parse(bytes) {
            Ok(a) => a,
            Err(e) => {
                skip(e);
                continue;
            }
        };
        let by = crate::format::manifest::short(&a.key);
        if a.bundle_digest != digest || a.job != job || a.sequence != sequence {
            skip(format!(
                "by key {by}, it approves bundle {} of job `{}` (digest {}), not this one",
                a.sequence,
                a.job,
                crate::format::manifest::short(&a.bundle_digest)
            ));
            continue;
        }
        let Some(key) = approvers.iter().find(|k| k.fingerprint == a.key) else {
            skip(format!("by key {by}, which is not a listed approver"));
            continue;
        };
        if !a.signed_by(key) {
            skip(format!(
                "by key {by}: its signature does not match (forged or altered)"
            ));
            continue;
        }
        if t.approved.iter().any(|x| x.key == a.key) {
            skip(format!("by key {by} again: an approver counts once"));
            continue;
        }
        t.approved.push(Approved {
            key: a.key,
            time: a.time,
            note: a.note,
        });
    }
    t
}

/// An approval file as a review shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub file: String,
    /// The approver's key fingerprint, when the file could be read.
    pub key: Option<String>,
    pub time: Option<String>,
    pub note: Option<String>,
    /// `valid` (a listed approver's, for this bundle), `unchecked` (no approvers were given to
    /// check it against), or why it does not count.
    pub status: String,
}

/// Every approval file beside a bundle, judged against `approvers` (none: listed unchecked).
pub fn rows(
    files: &[(String, Vec<u8>)],
    job: &str,
    sequence: u64,
    digest: &str,
    approvers: &[TrustedKey],
) -> Vec<Row> {
    files
        .iter()
        .map(|(name, bytes)| {
            let parsed = parse(bytes).ok();
            let one = tally(
                std::slice::from_ref(&(name.clone(), bytes.clone())),
                job,
                sequence,
                digest,
                approvers,
            );
            let status = match (one.approved.is_empty(), one.not_counted.first()) {
                (false, _) => "valid".to_string(),
                (true, Some(n)) if approvers.is_empty() && n.reason.contains("not a listed") => {
                    "unchecked (give --approver keys to check it)".to_string()
                }
                (true, Some(n)) => n.reason.clone(),
                (true, None) => "unchecked".to_string(),
            };
            Row {
                file: name.clone(),
                key: parsed.as_ref().map(|a| a.key.clone()),
                time: parsed.as_ref().map(|a| a.time.clone()),
                note: parsed.map(|a| a.note),
                status,
            }
        })
        .collect()
}

/// The bundle an approval check is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub job: &'a str,
    pub sequence: u64,
    pub bundle_digest: &'a str,
    /// Where it was found.
    pub location: &'a str,
}

/// Check the bundle `of` meets `req`; the error (exit 5) names who approved and how many are
/// missing.
pub fn check(req: &Requirement, tally: &Tally, of: Subject<'_>) -> Result<()> {
    let have = tally.approved.len() as u32;
    if have >= req.required {
        return Ok(());
    }
    let who = if tally.approved.is_empty() {
        "none".to_string()
    } else {
        tally
            .approved
            .iter()
            .map(|a| format!("{} at {}", crate::format::manifest::short(&a.key), a.time))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut detail = format!(
        "it needs approvals by {} distinct listed approver(s) and has {have} ({who}): {} missing",
        req.required,
        req.required - have
    );
    for n in &tally.not_counted {
        detail.push_str(&format!("; {} does not count: {}", n.file, n.reason));
    }
    Err(Error::Unapproved {
        what: format!("{} of job `{}`", of.sequence, of.job),
        location: of.location.to_string(),
        detail,
        bundle: Box::new(crate::error::BundleId {
            job: of.job.to_string(),
            sequence: of.sequence,
            bundle_digest: of.bundle_digest.to_string(),
        }),
    })
}

/// A digest of a requirement (its number and sorted key fingerprints), for logs.
pub fn describe(req: &Requirement) -> String {
    let mut keys: Vec<&str> = req
        .approvers
        .iter()
        .map(|k| k.fingerprint.as_str())
        .collect();
    keys.sort_unstable();
    let d = hex::encode(Sha256::digest(keys.join(",").as_bytes()));
    format!(
        "{} of {} approver(s) (set {})",
        req.required,
        keys.len(),
        crate::format::manifest::short(&d)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::sign::FileSigner;

    fn signer(dir: &std::path::Path, name: &str) -> (FileSigner, TrustedKey) {
        let (private, public) = crate::format::sign::generate().unwrap();
        let path = dir.join(name);
        std::fs::write(&path, private).unwrap();
        (
            FileSigner::open(&path).unwrap(),
            TrustedKey::from_pem(&public, name).unwrap(),
        )
    }

    fn subject(digest: &str) -> Subject<'_> {
        Subject {
            job: "j",
            sequence: 3,
            bundle_digest: digest,
            location: "here",
        }
    }

    #[tokio::test]
    async fn an_approval_counts_only_for_its_bundle_by_a_listed_key_unaltered() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, alice_pub) = signer(dir.path(), "alice");
        let (bob, bob_pub) = signer(dir.path(), "bob");
        let (_, carol_pub) = signer(dir.path(), "carol");
        let digest = "ab".repeat(32);
        let at = || "2026-12-07T15:00:00Z".to_string();
        let a = Approval::sign(&alice, "j", 3, &digest, at(), "looked at it")
            .await
            .unwrap();
        let b = Approval::sign(&bob, "j", 3, &digest, at(), "")
            .await
            .unwrap();
        let file = |a: &Approval| (file_name(&a.key), a.to_bytes());
        assert!(is_approval_name(&file(&a).0));
        let listed = [alice_pub.clone(), bob_pub.clone()];
        // two distinct listed approvers
        let t = tally(&[file(&a), file(&b)], "j", 3, &digest, &listed);
        assert_eq!(t.approved.len(), 2, "{t:?}");
        let req = Requirement::new(2, listed.to_vec()).unwrap();
        assert!(check(&req, &t, subject(&digest)).is_ok());
        // the same approver twice counts once
        let t = tally(&[file(&a), file(&a)], "j", 3, &digest, &listed);
        assert_eq!(t.approved.len(), 1);
        let err = check(&req, &t, subject(&digest)).unwrap_err();
        assert!(err.to_string().contains("1 missing"), "{err}");
        // an unlisted key does not count
        let t = tally(&[file(&a)], "j", 3, &digest, &[carol_pub]);
        assert!(t.approved.is_empty());
        assert!(t.not_counted[0].reason.contains("not a listed approver"));
        // an approval of another bundle does not count, nor one moved onto this digest
        let t = tally(&[file(&a)], "j", 3, &"cd".repeat(32), &listed);
        assert!(t.approved.is_empty());
        assert!(t.not_counted[0].reason.contains("not this one"), "{t:?}");
        let mut moved = a.clone();
        moved.bundle_digest = "cd".repeat(32);
        let t = tally(
            &[(file_name(&a.key), moved.to_bytes())],
            "j",
            3,
            &"cd".repeat(32),
            &listed,
        );
        assert!(t.not_counted[0].reason.contains("does not match"), "{t:?}");
        // any byte altered: a field (the note), or only white space
        let mut bytes = a.to_bytes();
        let at_note = bytes.windows(6).position(|w| w == b"looked").unwrap();
        bytes[at_note] = b'L';
        let t = tally(&[("x".into(), bytes)], "j", 3, &digest, &listed);
        assert!(t.not_counted[0].reason.contains("does not match"), "{t:?}");
        let spaced = [b" ".as_slice(), &a.to_bytes()].concat();
        let t = tally(&[("x".into(), spaced)], "j", 3, &digest, &listed);
        assert!(t.not_counted[0].reason.contains("altered"), "{t:?}");
        // N above the approvers listed can never be met
        assert!(Requirement::new(3, listed.to_vec()).is_err());
    }

    #[tokio::test]
    async fn an_exporter_signature_never_passes_for_an_approval() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, alice_pub) = signer(dir.path(), "alice");
        let sums = b"00  j-00000003-0001.zip\n";
        let digest = hex::encode(Sha256::digest(sums));
        // the exporter's signature over the same digest, dressed as an approval
        let sig = alice.sign(sums).await.unwrap();
        let forged = Approval {
            format: FORMAT.into(),
            algorithm: ALGORITHM.into(),
            job: "j".into(),
            sequence: 3,
            bundle_digest: digest.clone(),
            key: alice_pub.fingerprint.clone(),
            time: "2026-12-07T15:00:00Z".into(),
            note: String::new(),
            signature: sig.signature,
        };
        let t = tally(
            &[("f".into(), forged.to_bytes())],
            "j",
            3,
            &digest,
            &[alice_pub],
        );
        assert!(t.approved.is_empty(), "{t:?}");
    }
}
