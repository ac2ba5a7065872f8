//! A decorator over any [`ObjectStore`] that counts requests by operation and, by rules the
//! caller sets, fails them, loses their answer (the request is applied, the caller sees an
//! error), delays them or pauses them at a [`Gate`] until released: deterministic fault
//! injection and interleavings for tests, and request counts for reports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::object::ObjectHeaders;
use super::object::{ByteStream, Got, Head, ListPage, ObjectStore, Part, PutMode, UploadPage};
use crate::error::{Class, Error, Result};

/// What a rule does to a request it matches.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Fail before the store sees it, with an error of this class.
    Fail(Class),
    /// Apply it, then fail as if the answer never came (a transient error).
    LoseAnswer,
    /// Wait this long first.
    Delay(Duration),
    /// Stop at the gate until it is opened.
    Pause(Arc<Gate>),
    /// A GET answers that the object changed since (its If-Match failed); any other request
    /// fails with a precondition error.
    Changed,
    /// Apply it; a GET's or HEAD's LastModified comes back in whole seconds, as an HTTP
    /// server's `Last-Modified` header gives it while its listings show milliseconds.
    HttpDates,
}

/// A point where paused requests wait: [`Gate::reached`] tells the test one is there, and
/// [`Gate::open`] lets every waiting and later request through.
#[derive(Debug)]
pub struct Gate {
    arrived: tokio::sync::Semaphore,
    open: tokio::sync::watch::Sender<bool>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            arrived: tokio::sync::Semaphore::new(0),
            open: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// Wait until a request has stopped at the gate.
    pub async fn reached(&self) {
        if let Ok(permit) = self.arrived.acquire().await {
            permit.forget();
        }
    }

    /// Let every request through, now and later.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    async fn wait(&self) {
        self.arrived.add_permits(1);
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
    }
}

/// Which requests a rule applies to, and how many times.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The operation (`"GetObject"`, `"PutObject"`, `"DeleteObjects"`, …).
    pub op: &'static str,
    /// Only keys containing this (`None`: every key).
    pub key_contains: Option<String>,
    /// Matching requests let through before the rule applies.
    pub skip: u32,
    /// Matching requests it applies to after that (`u32::MAX`: all).
    pub times: u32,
    /// Only ranged GETs that start past the object's first byte.
    pub later_ranges: bool,
    pub fault: Fault,
}

impl Rule {
    /// Apply `fault` to every `op` request.
    pub fn every(op: &'static str, fault: Fault) -> Rule {
        Rule {
            op,
            key_contains: None,
            skip: 0,
            times: u32::MAX,
            later_ranges: false,
            fault,
        }
    }

    /// Only to ranged GETs that start past the first byte (the later ranges of a big object).
    pub fn on_later_ranges(mut self) -> Rule {
        self.later_ranges = true;
        self
    }

    /// Only to keys containing `part`.
    pub fn on_keys(mut self, part: &str) -> Rule {
        self.key_contains = Some(part.to_string());
        self
    }

    /// Only to the `n`th matching request (from 1) and the `times - 1` after it.
    pub fn from_the(mut self, n: u32, times: u32) -> Rule {
        self.skip = n.saturating_sub(1);
        self.times = times;
        self
    }
}

/// The decorator.
#[derive(Debug)]
pub struct Scripted {
    inner: Arc<dyn ObjectStore>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    rules: Mutex<Vec<Rule>>,
    /// Every request as (operation, key or prefix), in the order they came.
    log: Mutex<Vec<(&'static str, String)>>,
}

impl Scripted {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Scripted> {
        Arc::new(Scripted {
            inner,
            counts: Mutex::default(),
            rules: Mutex::default(),
            log: Mutex::default(),
        })
    }

    /// Add a rule (rules apply in the order added; the first that matches wins).
    pub fn rule(&self, rule: Rule) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rule);
    }

    /// Remove every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Requests of `op` so far.
    pub fn count(&self, op: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(op).copied().unwrap_or(0)
    }

    /// Requests so far by operation.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every request so far as (operation, key or prefix), in order.
    pub fn log(&self) -> Vec<(&'static str, String)> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Count the request and find what to do with it.
    fn fault_for(&self, op: &'static str, key: &str, later_range: bool) -> Option<Fault> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((op, key.to_string()));
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(op)
            .or_default() += 1;
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let rule = rules.iter_mut().find(|r| {
            r.op == op
                && r.times > 0
                && (!r.later_ranges || later_range)
                && r.key_contains.as_deref().is_none_or(|p| key.contains(p))
        })?;
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        rule.times -= 1;
        Some(rule.fault.clone())
    }

    /// Run `call` under the rules for `op` on `bucket/key`.
    async fn run<T>(
        &self,
        op: &'static str,
        bucket: &str,
        key: &str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let fault = self.fault_for(op, key, false);
        self.apply(op, bucket, key, fault, call).await
    }

    /// Run `call` with `fault` (if any) applied.
    async fn apply<T>(
        &self,
        op: &'static str,
        bucket: &str,
        key: &str,
        fault: Option<Fault>,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let injected = |class| Error::S3 {
            op,
            bucket: bucket.to_string(),
            key: key.to_string(),
            class,
            source: "injected by the scripted store".into(),
        };
        match fault {
            None | Some(Fault::HttpDates) => call.await,
            Some(Fault::Fail(class)) => Err(injected(class)),
            Some(Fault::Changed) => Err(injected(Class::Precondition)),
            Some(Fault::LoseAnswer) => {
                call.await?;
                Err(injected(Class::Transient))
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                call.await
            }
            Some(Fault::Pause(gate)) => {
                gate.wait().await;
                call.await
            }
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for Scripted {
    async fn head_bucket(&self, bucket: &str) -> Result<()> {
        self.run("HeadBucket", bucket, "", self.inner.head_bucket(bucket))
            .await
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage> {
        let call = self.inner.list_page(bucket, prefix, start_after, token);
        self.run("ListObjectsV2", bucket, prefix, call).await
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<Got<ByteStream>> {
        let later = range.is_some_and(|(start, _)| start > 0);
        match self.fault_for("GetObject", key, later) {
            Some(Fault::Changed) => Ok(Got::Changed),
            Some(Fault::HttpDates) => {
                Ok(match self.inner.get(bucket, key, if_match, range).await? {
                    Got::Found { mut meta, body } => {
                        meta.last_modified_ms = whole_seconds(meta.last_modified_ms);
                        Got::Found { meta, body }
                    }
                    other => other,
                })
            }
            fault => {
                let call = self.inner.get(bucket, key, if_match, range);
                self.apply("GetObject", bucket, key, fault, call).await
            }
        }
    }

    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool> {
        self.run(
            "GetObjectLockConfiguration",
            bucket,
            "",
            self.inner.object_lock_enabled(bucket),
        )
        .await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<Head>> {
        let fault = self.fault_for("HeadObject", key, false);
        let dates = matches!(fault, Some(Fault::HttpDates));
        let mut head = self
            .apply(
                "HeadObject",
                bucket,
                key,
                fault,
                self.inner.head(bucket, key),
            )
            .await?;
        if let Some(h) = head.as_mut().filter(|_| dates) {
            h.meta.last_modified_ms = whole_seconds(h.meta.last_modified_ms);
        }
        Ok(head)
    }

    async fn part_sizes(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        parts: u64,
    ) -> Result<Option<Vec<u64>>> {
        let call = self.inner.part_sizes(bucket, key, etag, parts);
        self.run("HeadObjectPart", bucket, key, call).await
    }

    async fn tags(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        self.run(
            "GetObjectTagging",
            bucket,
            key,
            self.inner.tags(bucket, key),
        )
        .await
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        headers: &ObjectHeaders,
        mode: PutMode<'_>,
    ) -> Result<Option<String>> {
        let call = self.inner.put(bucket, key, body, headers, mode);
        self.run("PutObject", bucket, key, call).await
    }

    async fn copy(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        headers: Option<&ObjectHeaders>,
    ) -> Result<String> {
        let call = self.inner.copy(bucket, from, to, headers);
        self.run("CopyObject", bucket, to, call).await
    }

    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        headers: &ObjectHeaders,
    ) -> Result<String> {
        let call = self.inner.create_upload(bucket, key, headers);
        self.run("CreateMultipartUpload", bucket, key, call).await
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part> {
        let call = self.inner.upload_part(bucket, key, upload_id, number, body);
        self.run("UploadPart", bucket, key, call).await
    }

    async fn copy_part(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        upload_id: &str,
        number: i32,
        range: (u64, u64),
    ) -> Result<Part> {
        let call = self
            .inner
            .copy_part(bucket, from, to, upload_id, number, range);
        self.run("UploadPartCopy", bucket, to, call).await
    }

    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[Part],
        mode: PutMode<'_>,
    ) -> Result<Option<String>> {
        let call = self
            .inner
            .complete_upload(bucket, key, upload_id, parts, mode);
        self.run("CompleteMultipartUpload", bucket, key, call).await
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        let call = self.inner.abort_upload(bucket, key, upload_id);
        self.run("AbortMultipartUpload", bucket, key, call).await
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<Option<UploadPage>> {
        let call = self.inner.list_uploads(bucket, prefix, marker);
        self.run("ListMultipartUploads", bucket, prefix, call).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.run("DeleteObject", bucket, key, self.inner.delete(bucket, key))
            .await
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<()> {
        let first = keys.first().map(String::as_str).unwrap_or_default();
        let call = self.inner.delete_many(bucket, keys);
        self.run("DeleteObjects", bucket, first, call).await
    }
}

/// `ms` rounded down to its second.
fn whole_seconds(ms: i64) -> i64 {
    ms.div_euclid(1000) * 1000
}
