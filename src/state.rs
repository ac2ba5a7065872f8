//! DynamoDB adapter for job state: the committed watermark (sequence, listing time, inventory
//! pointer, bundle digest, last run summary), the optimistic-lock version and the run lease.
//! The only module that speaks `aws_sdk_dynamodb`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus,
};
use serde::Serialize;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// The table's partition key attribute (the job name). template.yaml uses the same schema.
pub const KEY_ATTRIBUTE: &str = "job";

/// Build a DynamoDB client from shared SDK config.
pub fn client(sdk: &aws_config::SdkConfig) -> Client {
    Client::new(sdk)
}

/// A job's committed state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobState {
    pub job: String,
    /// Sequence of the last committed bundle (0 = none yet).
    pub sequence: u64,
    /// Start time of the last committed listing (RFC 3339).
    pub watermark: Option<String>,
    /// Key of the last inventory snapshot in the export bucket.
    pub inventory: Option<String>,
    /// Digest of the last committed bundle (for the chain).
    pub bundle_digest: Option<String>,
    /// Summary of the last run (JSON).
    pub last_run: Option<serde_json::Value>,
    /// Optimistic-lock version, +1 on every commit.
    pub version: u64,
    pub lease_owner: Option<String>,
    /// Lease expiry, ms since the epoch.
    pub lease_until_ms: Option<i64>,
    /// Fencing token: +1 every time the lease is taken, so the latest holder has the largest.
    pub lease_epoch: u64,
    /// The settings the job's inventory was made with (absent in states written before pins).
    pub pin: Option<crate::pin::Pin>,
}

/// What a successful run commits.
#[derive(Debug, Clone)]
pub struct Commit {
    /// `None` keeps the current bundle fields (a run that found no changes).
    pub bundle: Option<CommittedBundle>,
    pub watermark: String,
    pub last_run: serde_json::Value,
    /// The settings the committed inventory was made with.
    pub pin: Option<crate::pin::Pin>,
}

/// The bundle part of a commit.
#[derive(Debug, Clone)]
pub struct CommittedBundle {
    pub sequence: u64,
    pub inventory: String,
    pub bundle_digest: String,
}

/// Requests of one batch (its unprocessed items sent again) before a batch read or write fails.
const BATCH_TRIES: u32 = 10;

/// The state table.
#[derive(Clone, Debug)]
pub struct StateTable {
    client: Client,
    table: String,
    /// Where the client sends requests (named when it cannot be reached).
    endpoint: std::sync::Arc<str>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn is_code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>, code: &str) -> bool {
    e.code() == Some(code)
}

impl StateTable {
    pub fn new(client: Client, table: impl Into<String>, endpoint: std::sync::Arc<str>) -> Self {
        StateTable {
            client,
            table: table.into(),
            endpoint,
        }
    }

    pub fn name(&self) -> &str {
        &self.table
    }

    /// A batch whose items stayed unprocessed (throttled) through every try: retryable.
    fn unprocessed(&self, op: &'static str, left: usize) -> Error {
        Error::Dynamo {
            op,
            table: self.table.clone(),
            class: crate::error::Class::Throttled,
            source: format!(
                "{left} items still unprocessed after {BATCH_TRIES} requests (the table is throttled)"
            )
            .into(),
        }
    }

    fn err<E, R>(&self, op: &'static str, e: SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + crate::store::sdk_error::StatusOf + 'static,
    {
        if is_code(&e, "ResourceNotFoundException") {
            return Error::TableNotFound {
                table: self.table.clone(),
            };
        }
        if matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) {
            return Error::Unreachable {
                service: "dynamodb",
                endpoint: self.endpoint.to_string(),
                op,
                source: Box::new(e),
            };
        }
        Error::Dynamo {
            op,
            table: self.table.clone(),
            class: crate::store::sdk_error::classify(&e),
            source: Box::new(e),
        }
    }

    /// Create the table if it does not exist and wait until it is active. Returns true if it
    /// was created by this call.
    pub async fn init(&self) -> Result<bool> {
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(KEY_ATTRIBUTE)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("complete attribute definition"),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(KEY_ATTRIBUTE)
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("complete key schema"),
            )
            .send()
            .await;
        let created = match created {
            Ok(_) => true,
            Err(e) if is_code(&e, "ResourceInUseException") => false,
            Err(e) => return Err(self.err("CreateTable", e)),
        };
        for _ in 0..120 {
            let d = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| self.err("DescribeTable", e))?;
            if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(created);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(created)
    }

    fn key(job: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(KEY_ATTRIBUTE.to_string(), s(job))])
    }

    fn parse(job: &str, item: &HashMap<String, AttributeValue>) -> JobState {
        let get_s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let get_n = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        JobState {
            job: job.to_string(),
            sequence: get_n("sequence").unwrap_or(0).max(0) as u64,
            watermark: get_s("watermark"),
            inventory: get_s("inventory"),
            bundle_digest: get_s("bundle_digest"),
            last_run: get_s("last_run").and_then(|j| serde_json::from_str(&j).ok()),
            version: get_n("version").unwrap_or(0).max(0) as u64,
            lease_owner: get_s("lease_owner"),
            lease_until_ms: get_n("lease_until"),
            lease_epoch: get_n("lease_epoch").unwrap_or(0).max(0) as u64,
            pin: get_s("pin").and_then(|j| serde_json::from_str(&j).ok()),
        }
    }

    /// The job's state, or `None` if it never ran.
    pub async fn load(&self, job: &str) -> Result<Option<JobState>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(job)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.err("GetItem", e))?;
        Ok(out.item().map(|i| Self::parse(job, i)))
    }

    /// Take the job's lease for `owner` (free, or expired). Fails fast with `LeaseHeld`.
    pub async fn acquire(&self, job: &str, owner: &str, ttl: Duration) -> Result<JobState> {
        let now = now_ms();
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(job)))
            .update_expression("SET lease_owner = :o, lease_until = :u ADD lease_epoch :one")
            // Our own name passes too: a retried request whose first attempt took the lease
            // (its answer lost) must not find the lease "held" by this very run.
            .condition_expression(
                "attribute_not_exists(lease_owner) OR lease_until < :now OR lease_owner = :o",
            )
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":u", n(now + ttl.as_millis() as i64))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => {
                let state = Self::parse(job, out.attributes().unwrap_or(&HashMap::new()));
                info!(job, owner, table = %self.table, sequence = state.sequence, "lease taken");
                Ok(state)
            }
            Err(e) if is_code(&e, "ConditionalCheckFailedException") => {
                let held = self.load(job).await?.unwrap_or_default();
                Err(Error::LeaseHeld {
                    job: job.to_string(),
                    owner: held.lease_owner.unwrap_or_else(|| "?".into()),
                    until: held.lease_until_ms.map(rfc3339_ms).unwrap_or_default(),
                })
            }
            Err(e) => Err(self.err("UpdateItem", e)),
        }
    }

    /// Extend the lease; `LeaseLost` if another run has taken it.
    pub async fn renew(&self, job: &str, owner: &str, ttl: Duration) -> Result<()> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(job)))
            .update_expression("SET lease_until = :u")
            .condition_expression("lease_owner = :o")
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":u", n(now_ms() + ttl.as_millis() as i64))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, "ConditionalCheckFailedException") => Err(Error::LeaseLost {
                job: job.to_string(),
            }),
            Err(e) => Err(self.err("UpdateItem", e)),
        }
    }

    /// Give the lease back without committing anything.
    pub async fn release(&self, job: &str, owner: &str) -> Result<()> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(job)))
            .update_expression("REMOVE lease_owner, lease_until")
            .condition_expression("lease_owner = :o")
            .expression_attribute_values(":o", s(owner))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, "ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(self.err("UpdateItem", e)),
        }
    }

    /// Commit a run and release the lease in one conditional write: only if `owner` still
    /// holds the lease and the version is the one read at acquire time.
    pub async fn commit(&self, job: &str, owner: &str, version: u64, c: &Commit) -> Result<()> {
        let mut set = vec!["watermark = :w", "last_run = :r", "version = :v1"];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(job)))
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":w", s(&c.watermark))
            .expression_attribute_values(":r", s(&c.last_run.to_string()))
            .expression_attribute_values(":v1", n(version + 1));
        if let Some(pin) = &c.pin {
            set.push("pin = :p");
            req = req.expression_attribute_values(
                ":p",
                s(&serde_json::to_string(pin).expect("a pin serialises")),
            );
        }
        if let Some(b) = &c.bundle {
            set.extend(["#seq = :s", "inventory = :i", "bundle_digest = :d"]);
            req = req
                .expression_attribute_names("#seq", "sequence")
                .expression_attribute_values(":s", n(b.sequence))
                .expression_attribute_values(":i", s(&b.inventory))
                .expression_attribute_values(":d", s(&b.bundle_digest));
        }
        let condition = if version == 0 {
            "lease_owner = :o AND attribute_not_exists(version)"
        } else {
            req = req.expression_attribute_values(":v", n(version));
            "lease_owner = :o AND version = :v"
        };
        let out = req
            .update_expression(format!(
                "SET {} REMOVE lease_owner, lease_until",
                set.join(", ")
            ))
            .condition_expression(condition)
            .send()
            .await;
        let Err(e) = out else {
            return Ok(());
        };
        // A failed commit may have been applied all the same: a retried request whose first
        // attempt was applied (its answer lost) fails its own condition, and one that got no
        // answer at all (time-out, lost connection, 5xx after every retry) says nothing. The
        // state says which; report that.
        let failed = if is_code(&e, "ConditionalCheckFailedException") {
            Error::StateConflict {
                job: job.to_string(),
            }
        } else {
            self.err("UpdateItem", e)
        };
        match self.load(job).await {
            Ok(Some(now)) if now.is_commit_of(version, c) => {
                info!(
                    job,
                    version = version + 1,
                    "commit was applied (its answer was lost)"
                );
                Ok(())
            }
            Ok(_) => Err(failed),
            Err(read) => {
                warn!(job, error = %read, "could not read the state back after a failed commit");
                Err(Error::CommitUnknown {
                    job: job.to_string(),
                    source: Box::new(failed),
                })
            }
        }
    }
}

impl JobState {
    /// Is this state the result of committing `c` on top of `version` (and nothing since)?
    fn is_commit_of(&self, version: u64, c: &Commit) -> bool {
        self.version == version + 1
            && self.lease_owner.is_none()
            && self.watermark.as_deref() == Some(c.watermark.as_str())
            && c.bundle.as_ref().is_none_or(|b| {
                self.sequence == b.sequence
                    && self.bundle_digest.as_deref() == Some(b.bundle_digest.as_str())
            })
    }
}

/// Volume indices handed out for one bundle.
impl StateTable {
    /// Claim the next volume index of bundle `sequence` of `job`: one atomic counter per bundle
    /// (item `JOB#volumes#SEQUENCE`), so shards in separate processes never share an index.
    /// `base` is the number of volumes already numbered before the counter existed (a bundle
    /// resumed from an older checkpoint). An index claimed by a volume that never completes is
    /// filled with an empty volume when the bundle is sealed.
    pub async fn claim_volume(&self, job: &str, sequence: u64, base: u32) -> Result<u32> {
        let key = format!("{job}#volumes#{sequence}");
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(&key)))
            .update_expression("SET claimed = if_not_exists(claimed, :base) + :one")
            .expression_attribute_values(":base", n(i64::from(base)))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| self.err("UpdateItem", e))?;
        let claimed = out
            .attributes()
            .and_then(|a| a.get("claimed"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|&i| i >= 1)
            .ok_or_else(|| Error::Corrupt {
                what: "volume counter",
                location: format!("dynamodb table {} item {key}", self.table),
                hint: "delete the item and run the export with --full",
                source: "no volume index in the answer, or not a number from 1 to 2^32-1".into(),
            })?;
        Ok(claimed)
    }

    /// Forget the volume counter of bundle `sequence` of `job` (a bundle planned afresh, or
    /// committed): its next claim is 1 again.
    pub async fn reset_volumes(&self, job: &str, sequence: u64) -> Result<()> {
        let key = format!("{job}#volumes#{sequence}");
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(&key)))
            .send()
            .await
            .map_err(|e| self.err("DeleteItem", e))?;
        Ok(())
    }
}

/// Attribute holding a JSON document on the import side's items.
const DOC_ATTRIBUTE: &str = "doc";
/// Attribute holding the fencing token of the lease holder that wrote an item.
const FENCE_ATTRIBUTE: &str = "fence";
/// Conditional document writes in flight at once.
const DOC_WRITES_IN_FLIGHT: usize = 16;

/// Generic JSON documents keyed by item key (the import side's record and key index).
impl StateTable {
    /// The `doc` of each of `keys` that exists (strongly consistent reads).
    pub async fn get_docs(&self, keys: &[String]) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut pending: Vec<HashMap<String, AttributeValue>> =
                chunk.iter().map(|k| Self::key(k)).collect();
            pending.dedup();
            let mut tries = 0;
            while !pending.is_empty() {
                let ka = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .expect("keys given");
                let res = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, ka)
                    .send()
                    .await
                    .map_err(|e| self.err("BatchGetItem", e))?;
                for item in res
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    if let (Some(k), Some(d)) = (
                        item.get(KEY_ATTRIBUTE).and_then(|v| v.as_s().ok()),
                        item.get(DOC_ATTRIBUTE).and_then(|v| v.as_s().ok()),
                    ) {
                        out.insert(k.clone(), d.clone());
                    }
                }
                if let Some(left) = res.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                    pending = left.keys().to_vec();
                    tries += 1;
                    if tries >= BATCH_TRIES && !pending.is_empty() {
                        return Err(self.unprocessed("BatchGetItem", pending.len()));
                    }
                    tokio::time::sleep(Duration::from_millis(50 << tries.min(6))).await;
                }
            }
        }
        Ok(out)
    }

    /// Write (`Some`) or remove (`None`) documents as the lease holder whose fencing token is
    /// `fence` (its `lease_epoch`). Each write is conditional: it lands only on an item that no
    /// later holder has written (`fence` ≤ ours), so a run that lost its lease and wakes up late
    /// cannot overwrite what the run that took over wrote (`LeaseLost` for `lease_item`). A key
    /// given twice keeps its last value. Several writes are in flight at once.
    pub async fn write_docs(
        &self,
        lease_item: &str,
        fence: u64,
        docs: Vec<(String, Option<String>)>,
    ) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        let mut last: HashMap<String, Option<String>> = HashMap::with_capacity(docs.len());
        for (k, d) in docs {
            last.insert(k, d);
        }
        futures::stream::iter(last)
            .map(|(k, d)| self.write_doc(lease_item, fence, k, d))
            .buffer_unordered(DOC_WRITES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    async fn write_doc(
        &self,
        lease_item: &str,
        fence: u64,
        key: String,
        doc: Option<String>,
    ) -> Result<()> {
        const CONDITION: &str = "attribute_not_exists(#f) OR #f <= :f";
        match doc {
            Some(d) => {
                let out = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .item(KEY_ATTRIBUTE, s(&key))
                    .item(DOC_ATTRIBUTE, s(&d))
                    .item(FENCE_ATTRIBUTE, n(fence as i64))
                    .condition_expression(CONDITION)
                    .expression_attribute_names("#f", FENCE_ATTRIBUTE)
                    .expression_attribute_values(":f", n(fence as i64))
                    .send()
                    .await;
                self.fenced("PutItem", lease_item, out)
            }
            None => {
                let out = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(&key)))
                    .condition_expression(CONDITION)
                    .expression_attribute_names("#f", FENCE_ATTRIBUTE)
                    .expression_attribute_values(":f", n(fence as i64))
                    .send()
                    .await;
                self.fenced("DeleteItem", lease_item, out)
            }
        }
    }

    /// The outcome of a fenced write: a failed condition means a later lease holder wrote it.
    fn fenced<T, E, R>(
        &self,
        op: &'static str,
        lease_item: &str,
        out: std::result::Result<T, SdkError<E, R>>,
    ) -> Result<()>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + crate::store::sdk_error::StatusOf + 'static,
    {
        match out {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, "ConditionalCheckFailedException") => Err(Error::LeaseLost {
                job: lease_item.to_string(),
            }),
            Err(e) => Err(self.err(op, e)),
        }
    }

    /// Set the `doc` of `key` while `owner` holds its lease.
    pub async fn save_doc(&self, key: &str, owner: &str, doc: &str) -> Result<()> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .update_expression("SET #doc = :d")
            .condition_expression("lease_owner = :o")
            .expression_attribute_names("#doc", DOC_ATTRIBUTE)
            .expression_attribute_values(":d", s(doc))
            .expression_attribute_values(":o", s(owner))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, "ConditionalCheckFailedException") => Err(Error::LeaseLost {
                job: key.to_string(),
            }),
            Err(e) => Err(self.err("UpdateItem", e)),
        }
    }
}
