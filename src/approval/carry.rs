//! Carrying approvals: `ferry download` copies a bundle's approval files from the export bucket
//! beside its volumes on the media, and `--approvals-only` brings the approvals added since to
//! bundles already on the media (their `SHA256SUMS` the same as the bucket's).

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::Store;

/// An approval file in the bucket: its name and key, and size as listed.
pub struct Remote<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub size: u64,
}

/// Copy `files` (approval files of one bundle in `bucket`) into `dir`, each bounded and written
/// durably; returns how many were written. One too large or too many are refused.
pub async fn fetch(store: &Store, bucket: &str, files: &[Remote<'_>], dir: &Path) -> Result<u64> {
    if files.len() > super::MAX_APPROVALS {
        return Err(Error::Archive {
            volume: format!("s3://{bucket}/{}", files[0].key),
            detail: format!(
                "more than {} approval files beside one bundle",
                super::MAX_APPROVALS
            ),
        });
    }
    let mut n = 0;
    for f in files {
        if f.size > super::MAX_APPROVAL_FILE {
            return Err(Error::Archive {
                volume: format!("s3://{bucket}/{}", f.key),
                detail: format!(
                    "{} bytes; an approval file is at most {}",
                    f.size,
                    super::MAX_APPROVAL_FILE
                ),
            });
        }
        let Some(bytes) = store.get_document(bucket, f.key).await? else {
            continue;
        };
        let path = dir.join(f.name);
        if std::fs::read(&path).is_ok_and(|have| have == bytes.as_ref()) {
            continue;
        }
        crate::format::durable::replace(&path, bytes.to_vec()).await?;
        n += 1;
    }
    Ok(n)
}

/// The digest of the `SHA256SUMS` in `dir`, when there is one (a bundle on the media).
pub fn local_digest(dir: &Path) -> Option<String> {
    let sums = dir.join("SHA256SUMS");
    let len = std::fs::metadata(&sums).ok()?.len();
    if len > 16 * 1024 * 1024 {
        return None;
    }
    let bytes = std::fs::read(&sums).ok()?;
    Some(hex::encode(Sha256::digest(&bytes)))
}
