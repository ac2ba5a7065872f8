//! A plan step's listing across calls: a listing that reaches the step's deadline stops
//! between pages, completes what it wrote so far (the new inventory and the put candidates, up
//! to its last key) and saves where it got in `listing-RUN.json`, beside the checkpoint; the
//! state machine invokes the plan step again, which copies those two files into its own and
//! lists on after that key. So a bucket of any size plans, however short the steps.

use super::*;

/// Where a plan step's listing got (`listing-RUN.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ListingDoc {
    pub(super) format: String,
    pub(super) sequence: u64,
    /// Calls of the plan step so far.
    pub(super) hop: u32,
    pub(super) baseline: bool,
    /// When the first call started listing (the bundle's `listed_at`).
    pub(super) listed_at: String,
    /// The counts, deletions and skips so far, and the last key listed.
    pub(super) listed: Listed,
    pub(super) inventory: Written,
    pub(super) candidates: Written,
}

/// A gzip JSON-lines file a call completed: where, how many records, its index so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Written {
    pub(super) key: String,
    pub(super) records: u64,
    #[serde(default)]
    pub(super) index: Vec<String>,
}

impl Run<'_> {
    fn listing_key(&self, seq: u64) -> String {
        format!(
            "{}listing-{}.json",
            self.layout.state_prefix(seq),
            self.owner
        )
    }

    /// The listing an earlier call of this run's plan step stopped, if it is one for this
    /// bundle (sequence and baseline).
    pub(super) async fn stopped_listing(
        &self,
        seq: u64,
        baseline: bool,
    ) -> Result<Option<ListingDoc>> {
        if !self.listing_hops {
            return Ok(None);
        }
        let doc: Option<ListingDoc> = self.get_json(&self.listing_key(seq), "listing").await?;
        Ok(doc.filter(|d| {
            d.format == FORMAT
                && d.sequence == seq
                && d.baseline == baseline
                && d.listed.stopped_after.is_some()
        }))
    }

    /// The name this call's files carry (the first call's: the run's own).
    pub(super) fn hop_owner(&self, hop: u32) -> String {
        match hop {
            0 | 1 => self.owner.to_string(),
            n => format!("{}.{n}", self.owner),
        }
    }

    /// A gzip JSON-lines writer into `key` that starts with what `earlier` holds (its bytes
    /// copied as they are: gzip members in a row read as one file) and counts on from it.
    pub(super) async fn continued_writer(
        &self,
        key: &str,
        earlier: Option<&Written>,
        headers: &crate::format::manifest::ObjectHeaders,
    ) -> Result<InventoryWriter<MultipartUpload>> {
        let bucket = &self.cfg.dest.bucket;
        let mut upload =
            self.store()
                .multipart(bucket, key, crate::config::MIN_PART_SIZE, 2, headers);
        let Some(w) = earlier else {
            return Ok(InventoryWriter::new(upload));
        };
        let mut reader =
            self.store()
                .reader(bucket, &w.key)
                .await?
                .ok_or_else(|| Error::Corrupt {
                    what: "listing",
                    location: self.layout.uri(&w.key),
                    hint: "the plan step's earlier call wrote it: start the export again",
                    source: "not found".into(),
                })?;
        tokio::io::copy_buf(&mut reader, &mut upload)
            .await
            .map_err(|e| Error::Stream {
                bucket: bucket.clone(),
                key: key.to_string(),
                source: Box::new(e),
            })?;
        Ok(InventoryWriter::continuing(
            upload,
            w.records,
            w.index.clone(),
        ))
    }

    /// Complete what this call wrote and save where the listing got.
    pub(super) async fn save_listing(
        &self,
        seq: u64,
        (hop, baseline, listed_at): (u32, bool, String),
        listed: Listed,
        (inventory_key, inventory): (String, InventoryWriter<MultipartUpload>),
        (candidates_key, candidates): (String, InventoryWriter<MultipartUpload>),
    ) -> Result<()> {
        let stream_err = |key: &str, e: std::io::Error| Error::Stream {
            bucket: self.cfg.dest.bucket.clone(),
            key: key.to_string(),
            source: Box::new(e),
        };
        let inventory_written = Written {
            key: inventory_key.clone(),
            records: inventory.count,
            index: inventory.index.clone(),
        };
        let candidates_written = Written {
            key: candidates_key.clone(),
            records: candidates.count,
            index: Vec::new(),
        };
        for (key, w) in [(inventory_key, inventory), (candidates_key, candidates)] {
            w.finish()
                .await
                .map_err(|e| stream_err(&key, e))?
                .finish()
                .await?;
        }
        self.check_lease()?;
        info!(job = %self.layout.job, sequence = seq, hop, after = ?listed.stopped_after,
              listed = listed.stats.listed, "deadline: the listing stops here and goes on in the plan step's next call");
        self.put_json(
            &self.listing_key(seq),
            &ListingDoc {
                format: FORMAT.to_string(),
                sequence: seq,
                hop,
                baseline,
                listed_at,
                listed,
                inventory: inventory_written,
                candidates: candidates_written,
            },
        )
        .await
    }
}
