//! The body of one read, chunk by chunk, resumed from the byte it broke at.

use bytes::Bytes;
use futures::StreamExt;
use tracing::warn;

use super::Store;
use super::object::{ByteStream, Got};
use crate::error::{Error, Result};

/// How many times a broken body is asked for again (from where it broke) before the read fails.
pub(super) const BODY_RESUMES: u32 = 3;

/// The body of one read, chunk by chunk, resuming a broken body from the byte it stopped at
/// (pinned to the version first read, at most three times).
pub struct Body {
    pub(super) store: Store,
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) etag: Option<String>,
    pub(super) start: u64,
    pub(super) want: u64,
    pub(super) got: u64,
    pub(super) resumed: u32,
    pub(super) stream: ByteStream,
    /// Set when the object changed or vanished before a resumed read: the body is cut short.
    pub lost: Option<Got>,
}

impl Body {
    /// The bytes this read asks for (the range, or the whole object).
    pub fn wanted(&self) -> u64 {
        self.want
    }

    /// The next chunk, or `None` at the end (check [`Body::lost`] then).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.lost.is_some() {
                return Ok(None);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.got += chunk.len() as u64;
                    return Ok(Some(chunk));
                }
                None => return Ok(None),
                Some(Err(e)) => {
                    let (bucket, key) = (self.bucket.as_str(), self.key.as_str());
                    if self.resumed >= BODY_RESUMES || self.got >= self.want {
                        return Err(Error::Stream {
                            bucket: bucket.to_string(),
                            key: key.to_string(),
                            source: e,
                        });
                    }
                    self.resumed += 1;
                    self.store.activity().resumed();
                    let at = self.start + self.got;
                    warn!(bucket, key, at, attempt = self.resumed, error = %e, "read broke mid-body: resuming from there");
                    let range = Some((at, self.start + self.want - 1));
                    match self
                        .store
                        .backend
                        .get(bucket, key, self.etag.as_deref(), range)
                        .await?
                    {
                        Got::Found { body, .. } => self.stream = body,
                        Got::Changed => self.lost = Some(Got::Changed),
                        Got::Gone => self.lost = Some(Got::Gone),
                    }
                }
            }
        }
    }
}
