//! Archived objects in a listing (GLACIER, DEEP_ARCHIVE): where each one's restore stands,
//! asked by a HEAD only for those new or changed since the previous inventory; those that
//! cannot be read are skipped and reported.

use std::collections::HashMap;

use crate::error::Result;
use crate::format::manifest::Skipped;
use crate::plan::inventory::ObjectRecord;

/// Where an archived object's restore stands (HeadObject's `x-amz-restore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// No restore was asked for (or it expired): the object cannot be read.
    Archived,
    /// A restore is under way (`ongoing-request="true"`).
    Ongoing,
    /// A restored copy can be read (`ongoing-request="false"`): it ships.
    Restored,
}

impl Restore {
    /// From the `x-amz-restore` header, if any.
    pub fn from_header(h: Option<&str>) -> Restore {
        match h {
            Some(h) if h.contains("ongoing-request=\"false\"") => Restore::Restored,
            Some(h) if h.contains("ongoing-request=\"true\"") => Restore::Ongoing,
            _ => Restore::Archived,
        }
    }
}

/// Asks where an archived object's restore stands (a HEAD of it).
#[async_trait::async_trait]
pub trait Restores: Send + Sync {
    async fn restore(&self, key: &str) -> Result<Restore>;
}

/// Archived objects of a listing page whose restore is asked for at once.
const RESTORE_CHECKS: usize = 16;

pub(super) fn skip(rec: &ObjectRecord, restore: Restore) -> Skipped {
    let reason = match restore {
        Restore::Ongoing => format!(
            "storage class {}: its restore is in progress; it ships in the first run after the restore completes",
            rec.storage_class
        ),
        _ => format!(
            "storage class {} cannot be read without a restore: restore it and it ships in the next run",
            rec.storage_class
        ),
    };
    Skipped {
        key: rec.key.clone(),
        size: rec.size,
        storage_class: rec.storage_class.clone(),
        reason,
    }
}

/// The restore state of every archived object of a joined page that is new or changed since
/// the previous inventory (by key): an unchanged one needs no HEAD.
pub(super) async fn restores_of(
    joined: &[(ObjectRecord, Option<ObjectRecord>)],
    restores: &dyn Restores,
) -> Result<HashMap<String, Restore>> {
    use futures::StreamExt;
    let asked = joined.iter().filter(|(r, before)| {
        r.needs_restore() && !before.as_ref().is_some_and(|b| b.same_version(r))
    });
    futures::stream::iter(asked)
        .map(|(r, _)| async move { Ok((r.key.clone(), restores.restore(&r.key).await?)) })
        .buffer_unordered(RESTORE_CHECKS)
        .collect::<Vec<Result<(String, Restore)>>>()
        .await
        .into_iter()
        .collect()
}
