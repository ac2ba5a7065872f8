//! An audit log under an `s3://` prefix, for the Lambda functions: each invocation writes its
//! lines as one JSON-lines object, `PREFIX<time>-<id>.jsonl` (keys sort in time order), whose
//! first line goes on from the last line of the newest object before it. A function's runs of
//! one job do not overlap (its lease), so one prefix per function and job holds one chain;
//! `ferry audit` checks the objects in key order.

use bytes::Bytes;

use super::Event;
use crate::error::Result;
use crate::store::Store;

/// An invocation's lines, written by [`S3Log::flush`].
pub struct S3Log {
    store: Store,
    bucket: String,
    prefix: String,
    prev: Option<String>,
    lines: String,
}

impl S3Log {
    /// The log under `prefix` of `bucket`, chained to its newest object's last line.
    pub async fn open(store: Store, bucket: &str, prefix: &str) -> Result<Self> {
        let mut newest: Option<String> = None;
        let mut lister = store.list(bucket, prefix);
        while let Some(page) = lister.next_page().await? {
            for rec in page {
                if rec.key.ends_with(".jsonl") && newest.as_deref() < Some(rec.key.as_str()) {
                    newest = Some(rec.key);
                }
            }
        }
        let mut prev = None;
        if let Some(key) = newest
            && let Some(body) = store.get_document(bucket, &key).await?
        {
            let checked = super::check(&[(format!("s3://{bucket}/{key}"), body.to_vec())]);
            // An object that does not check on its own may still go on from an earlier one:
            // only its last hash matters here; `ferry audit` judges the whole chain.
            prev = match checked {
                Ok(c) => c.head,
                Err(_) => last_hash(&body),
            };
        }
        Ok(S3Log {
            store,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            prev,
            lines: String::new(),
        })
    }

    /// Add `event`'s line.
    pub fn append(&mut self, event: &Event) {
        let (line, hash) = event.line(self.prev.as_deref());
        self.lines.push_str(&line);
        self.lines.push('\n');
        self.prev = Some(hash);
    }

    /// Write the lines added as one new object (nothing when there are none); returns its key.
    pub async fn flush(&mut self) -> Result<Option<String>> {
        if self.lines.is_empty() {
            return Ok(None);
        }
        let stamp = crate::clock::rfc3339_ms(crate::clock::now_ms()).replace(':', "");
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let key = format!("{}{stamp}-{id}.jsonl", self.prefix);
        let body = Bytes::from(std::mem::take(&mut self.lines));
        self.store
            .put_document(&self.bucket, &key, body, "application/x-ndjson")
            .await?;
        Ok(Some(key))
    }
}

/// The `hash` of the last line of `body`.
fn last_hash(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let last = text.lines().rfind(|l| !l.is_empty())?;
    let v: serde_json::Value = serde_json::from_str(last).ok()?;
    v.get("hash")?.as_str().map(str::to_string)
}
