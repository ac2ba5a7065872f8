//! The inventory snapshot: one record per object (key, size, ETag, LastModified, storage class),
//! key-sorted, stored as gzip-compressed JSON lines and read and written as streams so memory
//! does not grow with the bucket.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use async_compression::tokio::bufread::GzipDecoder;
use async_compression::tokio::write::GzipEncoder;

use crate::error::{BoxError, Error, Result};

pub use crate::store::ObjectRecord;

impl ObjectRecord {
    /// Same content and version as far as the listing can tell.
    pub fn same_version(&self, other: &ObjectRecord) -> bool {
        self.size == other.size
            && self.etag == other.etag
            && self.last_modified_ms == other.last_modified_ms
    }

    /// Objects in these classes cannot be read without a restore.
    pub fn needs_restore(&self) -> bool {
        matches!(self.storage_class.as_str(), "GLACIER" | "DEEP_ARCHIVE")
    }
}

/// Streams records out of a gzip JSON-lines inventory.
pub struct InventoryReader<R: AsyncBufRead + Unpin> {
    lines: tokio::io::Lines<BufReader<GzipDecoder<R>>>,
    location: String,
    previous: Option<String>,
}

impl<R: AsyncBufRead + Unpin> InventoryReader<R> {
    pub fn new(reader: R, location: String) -> Self {
        let mut decoder = GzipDecoder::new(reader);
        decoder.multiple_members(true);
        InventoryReader {
            lines: BufReader::new(decoder).lines(),
            location,
            previous: None,
        }
    }

    fn corrupt(&self, source: BoxError) -> Error {
        Error::Corrupt {
            what: "inventory",
            location: self.location.clone(),
            hint: "take a new baseline",
            source,
        }
    }

    /// The next record, in key order; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<ObjectRecord>> {
        self.next_as::<ObjectRecord>(|r| &r.key).await
    }

    /// The next line as a `T` (keyed by `key`, checked to be in key order); `None` at the end.
    pub async fn next_as<T: serde::de::DeserializeOwned>(
        &mut self,
        key: fn(&T) -> &str,
    ) -> Result<Option<T>> {
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .map_err(|e| self.corrupt(e.into()))?;
            let Some(line) = line else { return Ok(None) };
            if line.is_empty() {
                continue;
            }
            let rec: T = serde_json::from_str(&line).map_err(|e| self.corrupt(e.into()))?;
            let k = key(&rec);
            if let Some(prev) = &self.previous
                && prev.as_str() >= k
            {
                return Err(self.corrupt(format!("`{k}` out of order").into()));
            }
            self.previous = Some(k.to_string());
            return Ok(Some(rec));
        }
    }
}

/// Every how many records the index keeps a key.
pub const INDEX_EVERY: u64 = 1_000;

/// The most index bytes a run reads (a larger one is ignored: it is only a hint).
pub const MAX_INDEX: u64 = 64 * 1024 * 1024;

/// An inventory's index, stored beside it: every [`INDEX_EVERY`]-th key and the record count.
/// The next run cuts its listing into key ranges with it; it is never trusted for anything
/// else (a missing, damaged or unsorted index only means one listing stream).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryIndex {
    pub records: u64,
    pub every: u64,
    pub keys: Vec<String>,
}

impl InventoryIndex {
    /// The index's key beside the inventory `key` (`….jsonl.gz` → `….index.json`).
    pub fn key_for(inventory: &str) -> String {
        format!(
            "{}.index.json",
            inventory.strip_suffix(".jsonl.gz").unwrap_or(inventory)
        )
    }
}

/// Writes records as gzip JSON lines.
pub struct InventoryWriter<W: AsyncWrite + Unpin> {
    encoder: GzipEncoder<W>,
    line: Vec<u8>,
    pub count: u64,
    /// Every [`INDEX_EVERY`]-th key written.
    pub index: Vec<String>,
}

impl<W: AsyncWrite + Unpin> InventoryWriter<W> {
    pub fn new(writer: W) -> Self {
        InventoryWriter {
            encoder: GzipEncoder::new(writer),
            line: Vec::with_capacity(256),
            count: 0,
            index: Vec::new(),
        }
    }

    /// A writer whose output follows `count` records already written (with their `index`)
    /// by another: its records count and index on from them.
    pub fn continuing(writer: W, count: u64, index: Vec<String>) -> Self {
        InventoryWriter {
            count,
            index,
            ..InventoryWriter::new(writer)
        }
    }

    pub async fn push(&mut self, rec: &ObjectRecord) -> std::io::Result<()> {
        self.push_as(rec, &rec.key).await
    }

    /// Write any record keyed by `key` (the plan's candidates carry a flag beside the record).
    pub async fn push_as<T: Serialize>(&mut self, value: &T, key: &str) -> std::io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value)?;
        self.line.push(b'\n');
        self.count += 1;
        if self.count.is_multiple_of(INDEX_EVERY) {
            self.index.push(key.to_string());
        }
        self.encoder.write_all(&self.line).await
    }

    /// What the index of this inventory holds so far.
    pub fn index(&self) -> InventoryIndex {
        InventoryIndex {
            records: self.count,
            every: INDEX_EVERY,
            keys: self.index.clone(),
        }
    }

    /// Flush the gzip trailer and shut the inner writer down; returns it.
    pub async fn finish(mut self) -> std::io::Result<W> {
        self.encoder.shutdown().await?;
        Ok(self.encoder.into_inner())
    }
}

/// Copy an inventory, leaving out the keys in `gone` and putting each record of `shipped` in
/// the place of the listed one with its key: the inventory of what a bundle shipped, not of
/// what its listing saw (an object deleted or rewritten between the listing and its read).
/// Returns how many records were written. A key in `shipped` that the inventory does not hold
/// is an error: every shipped object was listed.
pub async fn settle<R, W>(
    from: &mut InventoryReader<R>,
    to: &mut InventoryWriter<W>,
    gone: &[String],
    shipped: &[ObjectRecord],
) -> Result<u64>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let gone: std::collections::HashSet<&str> = gone.iter().map(String::as_str).collect();
    let mut shipped: std::collections::HashMap<&str, &ObjectRecord> =
        shipped.iter().map(|r| (r.key.as_str(), r)).collect();
    let write_err = |e: std::io::Error| Error::Stream {
        bucket: String::new(),
        key: "settled inventory".into(),
        source: Box::new(e),
    };
    while let Some(rec) = from.next().await? {
        if let Some(s) = shipped.remove(rec.key.as_str()) {
            to.push(s).await.map_err(write_err)?;
        } else if !gone.contains(rec.key.as_str()) {
            to.push(&rec).await.map_err(write_err)?;
        }
    }
    if let Some(key) = shipped.keys().next() {
        return Err(
            from.corrupt(format!("shipped `{key}` is not in the listing's inventory").into())
        );
    }
    Ok(to.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_order_check() {
        let recs: Vec<ObjectRecord> = ["a", "b/c", "é"]
            .iter()
            .enumerate()
            .map(|(i, k)| ObjectRecord {
                key: k.to_string(),
                size: i as u64,
                etag: format!("e{i}"),
                last_modified_ms: 1000 * i as i64,
                storage_class: "STANDARD".into(),
                state: None,
                withheld: None,
            })
            .collect();
        let mut w = InventoryWriter::new(Vec::new());
        for r in &recs {
            w.push(r).await.unwrap();
        }
        let bytes = w.finish().await.unwrap();
        let mut r = InventoryReader::new(&bytes[..], "mem".into());
        let mut back = Vec::new();
        while let Some(x) = r.next().await.unwrap() {
            back.push(x);
        }
        assert_eq!(back, recs);

        let mut w = InventoryWriter::new(Vec::new());
        w.push(&recs[1]).await.unwrap();
        w.push(&recs[0]).await.unwrap();
        let bytes = w.finish().await.unwrap();
        let mut r = InventoryReader::new(&bytes[..], "mem".into());
        r.next().await.unwrap();
        assert!(r.next().await.is_err());
    }

    #[tokio::test]
    async fn a_settled_inventory_drops_the_vanished_and_records_the_shipped_version() {
        let rec = |k: &str, e: &str| ObjectRecord {
            key: k.into(),
            size: 1,
            etag: e.into(),
            last_modified_ms: 1,
            storage_class: "STANDARD".into(),
            state: None,
            withheld: None,
        };
        let mut w = InventoryWriter::new(Vec::new());
        for r in [rec("a", "1"), rec("b", "1"), rec("c", "1")] {
            w.push(&r).await.unwrap();
        }
        let bytes = w.finish().await.unwrap();
        let mut out = InventoryWriter::new(Vec::new());
        let n = settle(
            &mut InventoryReader::new(&bytes[..], "mem".into()),
            &mut out,
            &["b".to_string()],
            &[rec("c", "2")],
        )
        .await
        .unwrap();
        assert_eq!(n, 2);
        let out = out.finish().await.unwrap();
        let mut r = InventoryReader::new(&out[..], "mem".into());
        let mut back = Vec::new();
        while let Some(x) = r.next().await.unwrap() {
            back.push(x);
        }
        assert_eq!(back, [rec("a", "1"), rec("c", "2")]);

        let mut out = InventoryWriter::new(Vec::new());
        let err = settle(
            &mut InventoryReader::new(&bytes[..], "mem".into()),
            &mut out,
            &[],
            &[rec("z", "2")],
        )
        .await;
        assert!(
            err.is_err(),
            "a shipped key the listing never saw is refused"
        );
    }
}
