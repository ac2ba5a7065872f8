//! A bundle's shards: each shard's progress document and fence, volume index claims, and the
//! cut of the plan's puts into key-range shards.

use super::*;

impl Run<'_> {
    /// Shard `k`'s worker state: its document (a new one from the checkpoint's cut if the
    /// shard never started), taken over by `writer` unless the shard is done.
    pub(super) async fn open_shard(
        &self,
        ck: &Checkpoint,
        k: usize,
        writer: &str,
    ) -> Result<ShardProgress> {
        let Some(cut) = ck.shards.get(k) else {
            return Err(self.bad_shard(ck.sequence, k, "no such shard in the checkpoint"));
        };
        let key = self.layout.shard_doc_key(ck.sequence, k);
        let found = self
            .store()
            .get_document_tagged(&self.cfg.dest.bucket, &key)
            .await?;
        let (doc, etag) = match found {
            Some((body, etag)) => {
                let doc: ShardDoc = self.parse_json(&body, &key, "shard progress")?;
                if doc.sequence != ck.sequence || doc.shard != k || doc.state.count != cut.count {
                    return Err(self.bad_shard(
                        ck.sequence,
                        k,
                        "it belongs to another bundle, shard or cut",
                    ));
                }
                (doc, Some(etag))
            }
            None => (
                ShardDoc {
                    format: FORMAT.to_string(),
                    sequence: ck.sequence,
                    shard: k,
                    writer: String::new(),
                    state: cut.clone(),
                    volumes: Vec::new(),
                    totals: Totals::default(),
                    vanished: Vec::new(),
                    last: false,
                    corrected: Vec::new(),
                    skipped: Vec::new(),
                    withheld: Vec::new(),
                    changing: Default::default(),
                },
                None,
            ),
        };
        let mut w = ShardProgress {
            fence: Arc::new(crate::store::Fence::new(
                self.store(),
                &self.cfg.dest.bucket,
                &key,
                etag,
            )),
            key,
            doc,
        };
        if !w.doc.state.done {
            w.doc.writer = writer.to_string();
            self.save_shard(&w).await?;
        }
        Ok(w)
    }

    /// Write a shard's document under its fence: `Fenced` once another worker took it over.
    pub(super) async fn save_shard(&self, w: &ShardProgress) -> Result<()> {
        let body = serde_json::to_vec_pretty(&w.doc).expect("serialisable");
        if w.fence.write(Bytes::from(body)).await? {
            return Ok(());
        }
        self.store().run().stop().lease_lost();
        Err(Error::Fenced {
            bucket: self.cfg.dest.bucket.clone(),
            key: w.key.clone(),
        })
    }

    /// The next volume index of the bundle (the table's counter: shards anywhere share it).
    pub(super) async fn claim_volume(&self, ck: &Checkpoint) -> Result<u32> {
        let _one_at_a_time = self.claims.lock().await;
        self.table
            .claim_volume(&self.layout.job, ck.sequence, ck.counter_base())
            .await
    }

    /// Cut the puts into key-range shards when the bundle first ships (one shard: the plan's
    /// own puts file). A checkpoint written before shards existed is one shard at its cursor.
    pub(super) async fn prepare_shards(
        &self,
        ck: &mut Checkpoint,
        stored: &StoredPlan,
    ) -> Result<()> {
        if !ck.shards.is_empty() {
            return Ok(());
        }
        let count = match &stored.puts {
            Puts::Stored { count, .. } => *count,
            Puts::Inline(v) => v.len() as u64,
        };
        let fresh = ck.cursor == 0 && ck.volumes.is_empty();
        if fresh {
            self.discard_earlier_attempt(ck.sequence).await?;
        }
        let n = (self.cfg.tuning.shards as u64).min(count).max(1);
        ck.shards = match (&stored.puts, n) {
            (Puts::Stored { key, .. }, 2..) if fresh => {
                self.split_puts(ck.sequence, key, count, stored.plan.stats.put_bytes, n)
                    .await?
            }
            _ => vec![ShardState {
                puts_key: None,
                count,
                bytes: stored.plan.stats.put_bytes,
                cursor: ck.cursor as u64,
                cursor_bytes: ck.cursor_bytes,
                done: false,
                partial: None,
            }],
        };
        if ck.next_volume == 0 {
            ck.next_volume = ck.volumes.len() as u32 + 1;
        }
        info!(job = %self.layout.job, sequence = ck.sequence, shards = ck.shards.len(),
              counts = ?ck.shards.iter().map(|s| s.count).collect::<Vec<_>>(), "shards planned");
        self.save_checkpoint(ck).await
    }

    /// Before a freshly planned bundle is cut into shards: forget what an earlier attempt at
    /// this sequence left (a bundle given up by `--full`): its shards' progress documents and
    /// its volume counter. Otherwise the new bundle would resume the old shards' cursors or
    /// start its volumes after the old ones' indices (empty volumes in their place). Nothing of
    /// this checkpoint has shipped yet, so nothing of it is lost.
    pub(super) async fn discard_earlier_attempt(&self, seq: u64) -> Result<()> {
        let docs: Vec<String> = (0..64)
            .map(|k| self.layout.shard_doc_key(seq, k))
            .chain([self.layout.shard_list_key(seq)])
            .collect();
        self.check_lease()?;
        self.store()
            .delete_batch(&self.cfg.dest.bucket, &docs)
            .await?;
        self.table.reset_volumes(&self.layout.job, seq).await
    }

    /// Cut the puts file (in key order) into `n` contiguous shards of about equal weight, a
    /// put weighing its bytes plus [`OBJECT_WEIGHT`] (a GET's fixed cost), each written to its
    /// own puts file; every shard gets at least one put.
    pub(super) async fn split_puts(
        &self,
        seq: u64,
        key: &str,
        count: u64,
        bytes: u64,
        n: u64,
    ) -> Result<Vec<ShardState>> {
        let bucket = &self.cfg.dest.bucket;
        let location = self.layout.uri(key);
        let mut reader = self.puts_reader(key).await?;
        let weight = |size: u64| u128::from(size) + u128::from(OBJECT_WEIGHT);
        let total = u128::from(bytes) + u128::from(count) * u128::from(OBJECT_WEIGHT);
        let mut shards = Vec::new();
        let (mut seen, mut so_far) = (0u64, 0u128);
        while (shards.len() as u64) < n {
            let k = shards.len() as u64;
            let shard_key = self.layout.shard_puts_key(seq, self.owner, k as u32);
            let mut w = InventoryWriter::new(self.store().multipart(
                bucket,
                &shard_key,
                crate::config::MIN_PART_SIZE,
                2,
                &jsonl_headers(),
            ));
            let target = total * u128::from(k + 1) / u128::from(n);
            let (mut c, mut b) = (0u64, 0u64);
            // Leave at least one put for each shard after this one.
            let keep_back = n - k - 1;
            while seen < count - keep_back {
                if c > 0 && so_far >= target && k + 1 < n {
                    break;
                }
                let rec = reader.next().await?.ok_or_else(|| Error::Corrupt {
                    what: "plan",
                    location: location.clone(),
                    hint: "its puts file ends before the count the plan gives: take a new baseline",
                    source: format!("{seen} of {count} puts read").into(),
                })?;
                w.push(&rec).await.map_err(|e| Error::Stream {
                    bucket: bucket.clone(),
                    key: shard_key.clone(),
                    source: Box::new(e),
                })?;
                so_far += weight(rec.size);
                seen += 1;
                c += 1;
                b += rec.size;
            }
            w.finish()
                .await
                .map_err(|e| Error::Stream {
                    bucket: bucket.clone(),
                    key: shard_key.clone(),
                    source: Box::new(e),
                })?
                .finish()
                .await?;
            shards.push(ShardState {
                puts_key: Some(shard_key),
                count: c,
                bytes: b,
                cursor: 0,
                cursor_bytes: 0,
                done: false,
                partial: None,
            });
        }
        Ok(shards)
    }
}
