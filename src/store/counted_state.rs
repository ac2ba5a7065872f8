//! A decorator over any [`StateStore`] (and [`Tables`]) that counts a run's requests into its
//! [`Activity`], as `dynamodb:OPERATION:what` (`dynamodb:UpdateItem:renew`): the DynamoDB
//! request each call makes, and what the state layer asked for.

use std::collections::HashMap;
use std::sync::Arc;

use super::state_store::{CommitRecord, JobRecord, StateStore, Tables};
use crate::activity::Activity;
use crate::error::Result;

/// Tables whose stores count into `activity`.
#[derive(Debug)]
pub struct CountedTables {
    pub inner: Arc<dyn Tables>,
    pub activity: Arc<Activity>,
}

impl Tables for CountedTables {
    fn table(&self, name: &str) -> Arc<dyn StateStore> {
        Arc::new(CountedState {
            inner: self.inner.table(name),
            activity: self.activity.clone(),
        })
    }
}

/// Requests through `inner`, counted into `activity`.
#[derive(Debug)]
struct CountedState {
    inner: Arc<dyn StateStore>,
    activity: Arc<Activity>,
}

impl CountedState {
    fn count(&self, op: &str, n: u64) {
        tracing::trace!(target: "ferry::requests", op, n, table = self.inner.table());
        self.activity.request(&format!("dynamodb:{op}"), n);
    }
}

#[async_trait::async_trait]
impl StateStore for CountedState {
    fn table(&self) -> &str {
        self.inner.table()
    }

    async fn init(&self) -> Result<bool> {
        self.count("DescribeTable:init", 1);
        self.inner.init().await
    }

    async fn load(&self, job: &str) -> Result<Option<JobRecord>> {
        self.count("GetItem:load", 1);
        self.inner.load(job).await
    }

    async fn acquire(
        &self,
        job: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<Option<JobRecord>> {
        self.count("UpdateItem:acquire", 1);
        self.inner.acquire(job, owner, until_ms, now_ms).await
    }

    async fn renew(&self, job: &str, owner: &str, until_ms: i64) -> Result<bool> {
        self.count("UpdateItem:renew", 1);
        self.inner.renew(job, owner, until_ms).await
    }

    async fn release(&self, job: &str, owner: &str) -> Result<()> {
        self.count("UpdateItem:release", 1);
        self.inner.release(job, owner).await
    }

    async fn commit(&self, job: &str, owner: &str, version: u64, c: &CommitRecord) -> Result<bool> {
        self.count("UpdateItem:commit", 1);
        self.inner.commit(job, owner, version, c).await
    }

    async fn increment(&self, key: &str, base: u32) -> Result<Option<u32>> {
        self.count("UpdateItem:increment", 1);
        self.inner.increment(key, base).await
    }

    async fn remove(&self, key: &str) -> Result<()> {
        self.count("DeleteItem:remove", 1);
        self.inner.remove(key).await
    }

    async fn get_docs(&self, keys: &[String]) -> Result<HashMap<String, String>> {
        // One BatchGetItem per 100 keys.
        self.count("BatchGetItem:get_docs", keys.len().div_ceil(100) as u64);
        self.inner.get_docs(keys).await
    }

    async fn write_doc(&self, key: &str, fence: u64, doc: Option<&str>) -> Result<bool> {
        let op = if doc.is_some() {
            "PutItem"
        } else {
            "DeleteItem"
        };
        self.count(&format!("{op}:write_doc"), 1);
        self.inner.write_doc(key, fence, doc).await
    }

    async fn save_doc(&self, key: &str, owner: &str, doc: &str) -> Result<bool> {
        self.count("UpdateItem:save_doc", 1);
        self.inner.save_doc(key, owner, doc).await
    }
}
