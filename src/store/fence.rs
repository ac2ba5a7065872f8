//! A run's fencing token: its claim on its checkpoint document, as conditional writes.

use bytes::Bytes;

use super::Store;
use super::object::ObjectHeaders;
use super::object::{Got, PutMode};
use crate::error::Result;

/// A run's claim on its checkpoint document: every write is conditional on the ETag this run
/// last wrote (or on there being none), so once another run has taken the job over — and
/// rewritten the checkpoint with its own name — every write of the old run fails and it
/// stops. This is the fencing token of the run's S3 writes.
pub struct Fence {
    store: Store,
    bucket: String,
    key: String,
    held: tokio::sync::Mutex<Held>,
}

struct Held {
    etag: Option<String>,
    body: Bytes,
}

impl Fence {
    /// A fence over `bucket/key`, as read with `etag` (`None`: the document does not exist).
    pub fn new(store: &Store, bucket: &str, key: &str, etag: Option<String>) -> Self {
        Fence {
            store: store.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            held: tokio::sync::Mutex::new(Held {
                etag,
                body: Bytes::new(),
            }),
        }
    }

    /// A fence over `bucket/key` as read: `body` with `etag`. Its claim can be confirmed at
    /// once (a later step of the run that wrote it, such as a retried commit).
    pub fn read(store: &Store, bucket: &str, key: &str, etag: String, body: Bytes) -> Self {
        Fence {
            store: store.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            held: tokio::sync::Mutex::new(Held {
                etag: Some(etag),
                body,
            }),
        }
    }

    /// Write the JSON document `body` if it is still the one this run last saw. `false`:
    /// another run wrote it since (this run is fenced off and must stop).
    pub async fn write(&self, body: Bytes) -> Result<bool> {
        let mut held = self.held.lock().await;
        let headers = ObjectHeaders {
            content_type: Some("application/json".to_string()),
            ..Default::default()
        };
        let mode = match &held.etag {
            Some(etag) => PutMode::IfMatch(etag),
            None => PutMode::Create,
        };
        let written = self
            .store
            .backend
            .put(&self.bucket, &self.key, body.clone(), &headers, mode)
            .await?;
        match written {
            Some(etag) => {
                held.etag = Some(etag);
                held.body = body;
                Ok(true)
            }
            // Written by another since, or removed since (published by another).
            None => {
                // Our own write, if an earlier attempt's answer was lost: the body is ours.
                match self.store.get(&self.bucket, &self.key, None, None).await? {
                    Got::Found { body: now, meta } if now == body => {
                        held.etag = Some(meta.etag);
                        held.body = body;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
        }
    }

    /// Confirm the claim still holds by writing the last body again under the same condition.
    pub async fn confirm(&self) -> Result<bool> {
        let body = self.held.lock().await.body.clone();
        if body.is_empty() {
            return Ok(false);
        }
        self.write(body).await
    }
}
