//! An in-memory [`StateStore`]: the DynamoDB table's items in a map under one lock, so every
//! condition (lease owner and expiry, version, fencing epoch) is checked and applied
//! atomically, as DynamoDB does for one item.

use std::collections::HashMap;
use std::sync::Mutex;

use super::state_store::{CommitRecord, JobRecord, StateStore};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
struct Item {
    state: JobRecord,
    /// Whether the job item has a version attribute (a commit happened).
    versioned: bool,
    counter: Option<u32>,
    doc: Option<String>,
    fence: Option<u64>,
}

/// The in-memory state table.
#[derive(Debug, Default)]
pub struct MemoryState {
    table: String,
    items: Mutex<Option<HashMap<String, Item>>>,
}

impl MemoryState {
    /// A table called `table`, not created yet ([`StateStore::init`] creates it).
    pub fn new(table: &str) -> Self {
        MemoryState {
            table: table.to_string(),
            items: Mutex::new(None),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Item>) -> T) -> Result<T> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        match items.as_mut() {
            Some(items) => Ok(f(items)),
            None => Err(Error::TableNotFound {
                table: self.table.clone(),
            }),
        }
    }
}

fn held_by_other(s: &JobRecord, owner: &str, now_ms: i64) -> bool {
    match (&s.lease_owner, s.lease_until_ms) {
        (None, _) => false,
        (Some(o), _) if o == owner => false,
        (Some(_), Some(until)) => until >= now_ms,
        (Some(_), None) => true,
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryState {
    fn table(&self) -> &str {
        &self.table
    }

    async fn init(&self) -> Result<bool> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let created = items.is_none();
        items.get_or_insert_with(HashMap::new);
        Ok(created)
    }

    async fn load(&self, job: &str) -> Result<Option<JobRecord>> {
        self.with(|items| {
            items.get(job).map(|i| JobRecord {
                job: job.to_string(),
                ..i.state.clone()
            })
        })
    }

    async fn acquire(
        &self,
        job: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<Option<JobRecord>> {
        self.with(|items| {
            let item = items.entry(job.to_string()).or_default();
            item.state.job = job.to_string();
            if held_by_other(&item.state, owner, now_ms) {
                return None;
            }
            item.state.lease_owner = Some(owner.to_string());
            item.state.lease_until_ms = Some(until_ms);
            item.state.lease_epoch += 1;
            Some(item.state.clone())
        })
    }

    async fn renew(&self, job: &str, owner: &str, until_ms: i64) -> Result<bool> {
        self.with(|items| match items.get_mut(job) {
            Some(i) if i.state.lease_owner.as_deref() == Some(owner) => {
                i.state.lease_until_ms = Some(until_ms);
                true
            }
            _ => false,
        })
    }

    async fn release(&self, job: &str, owner: &str) -> Result<()> {
        self.with(|items| {
            if let Some(i) = items.get_mut(job)
                && i.state.lease_owner.as_deref() == Some(owner)
            {
                i.state.lease_owner = None;
                i.state.lease_until_ms = None;
            }
        })
    }

    async fn commit(&self, job: &str, owner: &str, version: u64, c: &CommitRecord) -> Result<bool> {
        self.with(|items| {
            let Some(i) = items.get_mut(job) else {
                return false;
            };
            let version_holds = if version == 0 {
                !i.versioned
            } else {
                i.versioned && i.state.version == version
            };
            if i.state.lease_owner.as_deref() != Some(owner) || !version_holds {
                return false;
            }
            let s = &mut i.state;
            s.watermark = Some(c.watermark.clone());
            s.last_run = Some(c.last_run.clone());
            s.version = version + 1;
            if let Some(pin) = &c.pin {
                s.pin = Some(pin.clone());
            }
            if let Some(b) = &c.bundle {
                s.sequence = b.sequence;
                s.inventory = Some(b.inventory.clone());
                s.bundle_digest = Some(b.bundle_digest.clone());
            }
            s.lease_owner = None;
            s.lease_until_ms = None;
            i.versioned = true;
            true
        })
    }

    async fn increment(&self, key: &str, base: u32) -> Result<Option<u32>> {
        self.with(|items| {
            let i = items.entry(key.to_string()).or_default();
            let next = i.counter.unwrap_or(base).checked_add(1);
            i.counter = next;
            next
        })
    }

    async fn remove(&self, key: &str) -> Result<()> {
        self.with(|items| {
            items.remove(key);
        })
    }

    async fn get_docs(&self, keys: &[String]) -> Result<HashMap<String, String>> {
        self.with(|items| {
            keys.iter()
                .filter_map(|k| Some((k.clone(), items.get(k)?.doc.clone()?)))
                .collect()
        })
    }

    async fn write_doc(&self, key: &str, fence: u64, doc: Option<&str>) -> Result<bool> {
        self.with(|items| {
            if items
                .get(key)
                .and_then(|i| i.fence)
                .is_some_and(|f| f > fence)
            {
                return false;
            }
            match doc {
                Some(d) => {
                    // A PutItem replaces the whole item.
                    let item = Item {
                        doc: Some(d.to_string()),
                        fence: Some(fence),
                        ..Default::default()
                    };
                    items.insert(key.to_string(), item);
                }
                None => {
                    items.remove(key);
                }
            }
            true
        })
    }

    async fn save_doc(&self, key: &str, owner: &str, doc: &str) -> Result<bool> {
        self.with(|items| match items.get_mut(key) {
            Some(i) if i.state.lease_owner.as_deref() == Some(owner) => {
                i.doc = Some(doc.to_string());
                true
            }
            _ => false,
        })
    }
}

/// In-memory tables by name: the same name is the same table.
#[derive(Debug, Default)]
pub struct MemoryTables {
    tables: Mutex<HashMap<String, std::sync::Arc<MemoryState>>>,
}

impl super::state_store::Tables for MemoryTables {
    fn table(&self, name: &str) -> std::sync::Arc<dyn StateStore> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables
            .entry(name.to_string())
            .or_insert_with(|| std::sync::Arc::new(MemoryState::new(name)))
            .clone()
    }
}
