//! A listing, page by page, checked as it comes: in strict key order, within its range.

use std::sync::Arc;

use super::object::ObjectRecord;
use super::object::ObjectStore;
use crate::activity::Activity;
use crate::error::{Error, Result};

/// A listing, page by page, as inventory records in key order: the whole prefix, or one key
/// range of it (after one key, up to and including another).
pub struct Lister {
    pub(super) backend: Arc<dyn ObjectStore>,
    pub(super) activity: Arc<Activity>,
    pub(super) bucket: String,
    pub(super) prefix: String,
    pub(super) token: Option<String>,
    pub(super) done: bool,
    pub(super) previous: Option<String>,
    /// Keys after this one only (`StartAfter`, sent with the first request; keys at or before
    /// it are dropped too, should a server ignore it).
    pub(super) floor: Option<String>,
    /// Keys up to and including this one only (the listing stops past it).
    pub(super) until: Option<String>,
}

impl Lister {
    /// The next page of records; `None` when the listing is over.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ObjectRecord>>> {
        if self.done {
            return Ok(None);
        }
        let token = self.token.take();
        let out = self
            .backend
            .list_page(
                &self.bucket,
                &self.prefix,
                self.floor.as_deref(),
                token.as_deref(),
            )
            .await?;
        self.activity.tick();
        let mut page = Vec::with_capacity(out.records.len());
        for record in out.records {
            if let Some(prev) = &self.previous
                && prev.as_str() >= record.key.as_str()
            {
                return Err(Error::UnsortedListing {
                    bucket: self.bucket.clone(),
                    previous: prev.clone(),
                    key: record.key,
                });
            }
            if self
                .floor
                .as_ref()
                .is_some_and(|f| record.key.as_str() <= f.as_str())
            {
                continue;
            }
            if self
                .until
                .as_ref()
                .is_some_and(|u| record.key.as_str() > u.as_str())
            {
                // Past the range: the rest belongs to the next one.
                self.done = true;
                return Ok(Some(page));
            }
            self.previous = Some(record.key.clone());
            page.push(record);
        }
        match out.next {
            Some(t) => self.token = Some(t),
            None => self.done = true,
        }
        Ok(Some(page))
    }
}
