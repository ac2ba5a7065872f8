//! The DynamoDB adapter of [`StateStore`]: the only module that speaks `aws_sdk_dynamodb`.
//! One item per job (watermark, version, lease with epoch), one per volume counter, one per
//! document (with the fencing epoch of the holder that wrote it).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus,
};

use super::state_store::{CommitRecord, JobRecord, StateStore};
use crate::error::{Error, Result};

/// The table's partition key attribute (the job name). template.yaml uses the same schema.
pub const KEY_ATTRIBUTE: &str = "job";

/// Build a DynamoDB client from shared SDK config.
pub fn client(sdk: &aws_config::SdkConfig) -> Client {
    Client::new(sdk)
}

/// Requests of one batch (its unprocessed items sent again) before a batch read fails.
const BATCH_TRIES: u32 = 10;
/// Attribute holding a JSON document on the import side's items.
const DOC_ATTRIBUTE: &str = "doc";
/// Attribute holding the fencing token of the lease holder that wrote an item.
const FENCE_ATTRIBUTE: &str = "fence";

/// [`StateStore`] over a DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoState {
    client: Client,
    table: String,
    /// Where the client sends requests (named when it cannot be reached).
    endpoint: std::sync::Arc<str>,
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

fn key(job: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(KEY_ATTRIBUTE.to_string(), s(job))])
}

fn parse(job: &str, item: &HashMap<String, AttributeValue>) -> JobRecord {
    let get_s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let get_n = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    JobRecord {
        job: job.to_string(),
        sequence: get_n("sequence").unwrap_or(0).max(0) as u64,
        watermark: get_s("watermark"),
        inventory: get_s("inventory"),
        bundle_digest: get_s("bundle_digest"),
        last_run: get_s("last_run"),
        version: get_n("version").unwrap_or(0).max(0) as u64,
        lease_owner: get_s("lease_owner"),
        lease_until_ms: get_n("lease_until"),
        lease_epoch: get_n("lease_epoch").unwrap_or(0).max(0) as u64,
        pin: get_s("pin"),
    }
}

impl DynamoState {
    pub fn new(client: Client, table: impl Into<String>, endpoint: std::sync::Arc<str>) -> Self {
        DynamoState {
            client,
            table: table.into(),
            endpoint,
        }
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
        R: std::fmt::Debug + Send + Sync + super::sdk_error::StatusOf + 'static,
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
            class: super::sdk_error::classify(&e),
            source: Box::new(e),
        }
    }

    /// `Ok(true)` on success, `Ok(false)` when the condition failed.
    fn conditional<T, E, R>(
        &self,
        op: &'static str,
        out: std::result::Result<T, SdkError<E, R>>,
    ) -> Result<bool>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + super::sdk_error::StatusOf + 'static,
    {
        match out {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, "ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(self.err(op, e)),
        }
    }
}

#[async_trait::async_trait]
impl StateStore for DynamoState {
    fn table(&self) -> &str {
        &self.table
    }

    async fn init(&self) -> Result<bool> {
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

    async fn load(&self, job: &str) -> Result<Option<JobRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(job)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.err("GetItem", e))?;
        Ok(out.item().map(|i| parse(job, i)))
    }

    async fn acquire(
        &self,
        job: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<Option<JobRecord>> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(job)))
            .update_expression("SET lease_owner = :o, lease_until = :u ADD lease_epoch :one")
            // Our own name passes too: a retried request whose first attempt took the lease
            // (its answer lost) must not find the lease "held" by this very run.
            .condition_expression(
                "attribute_not_exists(lease_owner) OR lease_until < :now OR lease_owner = :o",
            )
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":u", n(until_ms))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => Ok(Some(parse(
                job,
                out.attributes().unwrap_or(&HashMap::new()),
            ))),
            Err(e) if is_code(&e, "ConditionalCheckFailedException") => Ok(None),
            Err(e) => Err(self.err("UpdateItem", e)),
        }
    }

    async fn renew(&self, job: &str, owner: &str, until_ms: i64) -> Result<bool> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(job)))
            .update_expression("SET lease_until = :u")
            .condition_expression("lease_owner = :o")
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":u", n(until_ms))
            .send()
            .await;
        self.conditional("UpdateItem", out)
    }

    async fn release(&self, job: &str, owner: &str) -> Result<()> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(job)))
            .update_expression("REMOVE lease_owner, lease_until")
            .condition_expression("lease_owner = :o")
            .expression_attribute_values(":o", s(owner))
            .send()
            .await;
        self.conditional("UpdateItem", out).map(drop)
    }

    async fn commit(&self, job: &str, owner: &str, version: u64, c: &CommitRecord) -> Result<bool> {
        let mut set = vec!["watermark = :w", "last_run = :r", "version = :v1"];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(job)))
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":w", s(&c.watermark))
            .expression_attribute_values(":r", s(&c.last_run))
            .expression_attribute_values(":v1", n(version + 1));
        if let Some(pin) = &c.pin {
            set.push("pin = :p");
            req = req.expression_attribute_values(":p", s(pin));
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
        self.conditional("UpdateItem", out)
    }

    async fn increment(&self, item: &str, base: u32) -> Result<Option<u32>> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(item)))
            .update_expression("SET claimed = if_not_exists(claimed, :base) + :one")
            .expression_attribute_values(":base", n(i64::from(base)))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| self.err("UpdateItem", e))?;
        Ok(out
            .attributes()
            .and_then(|a| a.get("claimed"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u32>().ok()))
    }

    async fn remove(&self, item: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(item)))
            .send()
            .await
            .map_err(|e| self.err("DeleteItem", e))?;
        Ok(())
    }

    async fn get_docs(&self, keys: &[String]) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut pending: Vec<HashMap<String, AttributeValue>> =
                chunk.iter().map(|k| key(k)).collect();
            pending.sort_by(|a, b| {
                a[KEY_ATTRIBUTE]
                    .as_s()
                    .ok()
                    .cmp(&b[KEY_ATTRIBUTE].as_s().ok())
            });
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

    async fn write_doc(&self, item: &str, fence: u64, doc: Option<&str>) -> Result<bool> {
        const CONDITION: &str = "attribute_not_exists(#f) OR #f <= :f";
        match doc {
            Some(d) => {
                let out = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .item(KEY_ATTRIBUTE, s(item))
                    .item(DOC_ATTRIBUTE, s(d))
                    .item(FENCE_ATTRIBUTE, n(fence as i64))
                    .condition_expression(CONDITION)
                    .expression_attribute_names("#f", FENCE_ATTRIBUTE)
                    .expression_attribute_values(":f", n(fence as i64))
                    .send()
                    .await;
                self.conditional("PutItem", out)
            }
            None => {
                let out = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key(item)))
                    .condition_expression(CONDITION)
                    .expression_attribute_names("#f", FENCE_ATTRIBUTE)
                    .expression_attribute_values(":f", n(fence as i64))
                    .send()
                    .await;
                self.conditional("DeleteItem", out)
            }
        }
    }

    async fn save_doc(&self, item: &str, owner: &str, doc: &str) -> Result<bool> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(item)))
            .update_expression("SET #doc = :d")
            .condition_expression("lease_owner = :o")
            .expression_attribute_names("#doc", DOC_ATTRIBUTE)
            .expression_attribute_values(":d", s(doc))
            .expression_attribute_values(":o", s(owner))
            .send()
            .await;
        self.conditional("UpdateItem", out)
    }
}

/// Every table of one DynamoDB endpoint.
#[derive(Clone, Debug)]
pub struct DynamoTables {
    pub client: Client,
    pub endpoint: std::sync::Arc<str>,
}

impl super::state_store::Tables for DynamoTables {
    fn table(&self, name: &str) -> std::sync::Arc<dyn StateStore> {
        std::sync::Arc::new(DynamoState::new(
            self.client.clone(),
            name,
            self.endpoint.clone(),
        ))
    }
}
