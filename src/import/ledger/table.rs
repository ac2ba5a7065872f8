//! The table ledger: a leased item per job in the state table, one fenced item per key.

use super::*;

/// The record in the state table: a leased item per job, one item per key.
pub struct TableLedger {
    table: StateTable,
    item: String,
    owner: String,
    /// The lease's fencing token: every key-index write is conditional on it.
    fence: u64,
    ttl: Duration,
    record: Record,
    /// Renews the lease every third of its time while the import runs; stops the run's token
    /// when the lease is found lost (so its target's writes are refused: `Store::leased`).
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for TableLedger {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl TableLedger {
    /// Open the record of `job` in the state table, taking its import lease; `stop` is the
    /// import run's token, stopped should the lease be lost while it runs.
    pub async fn open(
        table: StateTable,
        job: &str,
        ttl: Duration,
        stop: &crate::interrupt::Stop,
    ) -> Result<Box<dyn Ledger>> {
        let item = format!("import/{job}");
        let owner = uuid::Uuid::new_v4().to_string();
        let fence = table.acquire(&item, &owner, ttl).await?.lease_epoch;
        let heartbeat = {
            let (table, item, owner, stop) =
                (table.clone(), item.clone(), owner.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match table.renew(&item, &owner, ttl).await {
                        Err(Error::LeaseLost { .. }) => {
                            tracing::warn!(%item, "import lease lost: stopping its writes");
                            stop.lease_lost();
                            return;
                        }
                        Err(e) => tracing::warn!(%item, error = %e, "import lease renewal failed"),
                        Ok(_) => {}
                    }
                }
            })
        };
        let docs = table.get_docs(std::slice::from_ref(&item)).await?;
        let record = match docs.get(&item) {
            Some(d) => serde_json::from_str(d).map_err(|e| Error::Corrupt {
                what: "import record",
                location: format!("table `{}` item `{item}`", table.name()),
                hint: "fix or delete the item (the next import must then be a baseline)",
                source: Box::new(e),
            })?,
            None => Record::default(),
        };
        Ok(Box::new(TableLedger {
            table,
            item,
            owner,
            fence,
            ttl,
            record,
            heartbeat,
        }))
    }
}

impl Ledger for TableLedger {
    fn location(&self) -> String {
        format!("table `{}` item `{}`", self.table.name(), self.item)
    }

    fn record(&self) -> &Record {
        &self.record
    }

    fn lookup<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, IndexEntry>>> {
        Box::pin(async move {
            let prefix = format!("{}/k/", self.item);
            let ids: Vec<String> = keys.iter().map(|k| format!("{prefix}{k}")).collect();
            let mut out = HashMap::new();
            for (id, doc) in self.table.get_docs(&ids).await? {
                let entry: IndexEntry = serde_json::from_str(&doc).map_err(|e| Error::Corrupt {
                    what: "import key index",
                    location: format!("table `{}` item `{id}`", self.table.name()),
                    hint: "delete the item; the next import must then be a baseline",
                    source: Box::new(e),
                })?;
                out.insert(id[prefix.len()..].to_string(), entry);
            }
            Ok(out)
        })
    }

    fn save(
        &mut self,
        record: Record,
        changes: Vec<(String, Option<IndexEntry>)>,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.table.renew(&self.item, &self.owner, self.ttl).await?;
            let docs = changes
                .into_iter()
                .map(|(k, e)| {
                    (
                        format!("{}/k/{k}", self.item),
                        e.map(|e| serde_json::to_string(&e).expect("entry serialises")),
                    )
                })
                .collect();
            self.table.write_docs(&self.item, self.fence, docs).await?;
            let doc = serde_json::to_string(&record).expect("record serialises");
            self.table.save_doc(&self.item, &self.owner, &doc).await?;
            self.record = record;
            Ok(())
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        self.heartbeat.abort();
        Box::pin(async move { self.table.release(&self.item, &self.owner).await })
    }
}
