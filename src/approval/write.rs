//! `ferry approve`: read the bundle's `SHA256SUMS` (its folder, or its `s3://` prefix), sign
//! its digest as an approval, and write `approval-FINGERPRINT.json` beside it (replacing this
//! key's earlier approval of it).

use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Approval, file_name};
use crate::config::S3Location;
use crate::error::{Error, Result, io_at};
use crate::format::sign::Signer;
use crate::store::Store;

/// The largest `SHA256SUMS` read.
const MAX_SUMS: u64 = 16 * 1024 * 1024;

/// What `ferry approve` did: the approval written (its fields), where, and whether it replaced
/// one.
#[derive(Debug, Clone, Serialize)]
pub struct ApproveReport {
    #[serde(flatten)]
    pub approval: Approval,
    /// Where the approval file was written.
    pub file: String,
    /// True when it replaced an earlier approval by the same key.
    pub replaced: bool,
}

/// Where a bundle is.
enum At {
    Dir(PathBuf),
    S3(S3Location),
}

/// Approve the bundle at `source` with `signer`, noting `note`.
pub async fn approve(
    store: Option<&Store>,
    source: &str,
    signer: &dyn Signer,
    note: &str,
) -> Result<ApproveReport> {
    let at = if source.starts_with("s3://") {
        let mut loc: S3Location = source.parse()?;
        if !loc.prefix.is_empty() && !loc.prefix.ends_with('/') {
            loc.prefix.push('/');
        }
        At::S3(loc)
    } else {
        At::Dir(PathBuf::from(source))
    };
    let missing = || {
        Error::Missing {
        what: "SHA256SUMS".into(),
        location: source.to_string(),
        detail: "none there: approve one complete bundle, its folder or its s3:// prefix (…/JOB/SEQUENCE/)".into(),
    }
    };
    let sums = match &at {
        At::Dir(dir) => {
            let path = dir.join("SHA256SUMS");
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(_) => return Err(missing()),
            };
            if len > MAX_SUMS {
                return Err(too_large(&path.display().to_string(), len));
            }
            std::fs::read(&path).map_err(io_at("reading", &path))?
        }
        At::S3(loc) => {
            let store = store.ok_or_else(|| Error::config(source, "s3:// needs AWS access"))?;
            let bytes = store
                .get_document(&loc.bucket, &loc.key("SHA256SUMS"))
                .await?
                .ok_or_else(missing)?;
            if bytes.len() as u64 > MAX_SUMS {
                return Err(too_large(source, bytes.len() as u64));
            }
            bytes.to_vec()
        }
    };
    let text = String::from_utf8_lossy(&sums);
    let bad = |detail: String| Error::Bundle {
        what: "to approve".into(),
        location: source.to_string(),
        detail,
    };
    let lines = crate::format::manifest::parse_sha256sums(&text).map_err(bad)?;
    let (job, sequence) = lines
        .first()
        .and_then(|l| crate::format::manifest::volume_name_parts(l.name))
        .map(|(j, s, _)| (j.to_string(), s))
        .ok_or_else(|| bad("its SHA256SUMS names no ferry volume".into()))?;
    let digest = hex::encode(Sha256::digest(&sums));
    let time = crate::clock::rfc3339_ms(crate::clock::now_ms());
    let a = Approval::sign(signer, &job, sequence, &digest, time, note).await?;
    let name = file_name(&a.key);
    let (file, replaced) = match &at {
        At::Dir(dir) => {
            let path = dir.join(&name);
            let replaced = path.exists();
            crate::format::durable::replace(&path, a.to_bytes()).await?;
            (path.display().to_string(), replaced)
        }
        At::S3(loc) => {
            let store = store.expect("checked above");
            let key = loc.key(&name);
            let replaced = store.head(&loc.bucket, &key).await?.is_some();
            store
                .put_document(&loc.bucket, &key, a.to_bytes().into(), "application/json")
                .await?;
            (format!("s3://{}/{key}", loc.bucket), replaced)
        }
    };
    tracing::info!(job = %a.job, sequence, key = %a.key, %file, "bundle approved");
    Ok(ApproveReport {
        approval: a,
        file,
        replaced,
    })
}

fn too_large(location: &str, len: u64) -> Error {
    Error::Archive {
        volume: location.to_string(),
        detail: format!("its SHA256SUMS is {len} bytes; a bundle's is at most {MAX_SUMS}"),
    }
}
