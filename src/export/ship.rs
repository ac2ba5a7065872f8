//! Shipping a shard: stream its puts from its cursor into volumes, until it is done or the
//! deadline comes.

use super::*;

impl Run<'_> {
    /// Stream a shard's puts from its cursor into volumes, until it is done or the deadline.
    /// `only`: the bundle's one shard, whose last volume carries the final manifest.
    pub(super) async fn ship_shard(
        &self,
        ck: &Checkpoint,
        w: &mut ShardProgress,
        stored: &StoredPlan,
        only: bool,
    ) -> Result<Shipped> {
        let tuning = &self.cfg.tuning;
        let plan = &stored.plan;
        let (state, seq, shard) = (w.doc.state.clone(), ck.sequence, w.doc.shard);
        if state.done {
            return Ok(Shipped::Done);
        }
        let too_many = || Error::Corrupt {
            what: "plan",
            location: self.layout.uri(&w.key),
            hint: "take a new baseline",
            source: "more puts than this machine can count".into(),
        };
        let total = usize::try_from(state.count).map_err(|_| too_many())?;
        let skip = usize::try_from(state.cursor).map_err(|_| too_many())?;
        let own;
        let puts = match &state.puts_key {
            Some(key) => {
                own = Puts::Stored {
                    key: key.clone(),
                    count: state.count,
                };
                &own
            }
            None => &stored.puts,
        };
        let mut remaining = state.bytes.saturating_sub(state.cursor_bytes);
        let mut fetched = spawn_fetcher(
            self.store().clone(),
            self.cfg.source.bucket.clone(),
            self.puts_from(puts, skip).await?,
            tuning.concurrency,
            self.warm.clone(),
        );
        let mut volume: Option<OpenVolume> = None;
        let mut progressed = false;
        let mut done = ShardDone {
            shard,
            cursor: state.cursor,
            cursor_bytes: state.cursor_bytes,
            totals: Totals::default(),
            vanished: Vec::new(),
            corrected: Vec::new(),
            skipped: Vec::new(),
            withheld: Vec::new(),
            partial: state.partial.clone(),
        };
        let mut i = skip;
        while i < total {
            let stop = self.store().run().stop().requested();
            if (progressed && self.past_deadline()) || stop.is_some() {
                info!(
                    shard,
                    cursor = i,
                    signal = stop.map(|s| s.name()),
                    "deadline reached or stop requested: closing the volume and checkpointing"
                );
                match volume.take() {
                    Some(v) => self.close_shard_volume(w, v, done, None).await?,
                    None => {
                        done.record(&mut w.doc);
                        self.save_shard(w).await?;
                    }
                }
                return Ok(Shipped::Deadline);
            }
            self.check_lease()?;
            let item = fetched.recv().await.ok_or_else(|| Error::Corrupt {
                what: "plan",
                location: self.layout.uri(&self.layout.checkpoint_key(seq)),
                hint: "its puts file ends before the count the plan gives: take a new baseline",
                source: format!("{i} of {total} puts read (shard {shard})").into(),
            })?;
            let item = match item {
                Err(e) => return Err(self.changed_while_read(w, e).await),
                Ok(item) => item,
            };
            let planned = match &item {
                Fetched::Gone { rec } | Fetched::Found { rec, .. } | Fetched::Archived { rec } => {
                    rec.size
                }
            };
            remaining = remaining.saturating_sub(planned);
            let found = match set_aside(w, &mut done, item) {
                Some(found) => match self.judged(&mut done, found).await {
                    Ok(judged) => judged,
                    Err(e) => return Err(self.changed_while_read(w, e).await),
                },
                None => None,
            };
            if let Some(found) = found
                && self
                    .add_object(ck, w, &mut volume, &mut done, remaining, found)
                    .await?
                    == Added::Cut
            {
                // The deadline (or a stop) came mid-object: its part ends this volume, and
                // the shard's next step ships the rest from where it got.
                info!(
                    shard,
                    cursor = i,
                    "object cut into parts: checkpointing mid-object"
                );
                let v = volume.take().expect("a cut object's volume is open");
                self.close_shard_volume(w, v, done, None).await?;
                return Ok(Shipped::Deadline);
            }
            i += 1;
            done.advance(i, planned);
            progressed = true;
        }
        if only {
            self.close_last(ck, w, volume, done, plan).await?;
        } else if let Some(v) = volume.take() {
            self.close_shard_volume(w, v, done, None).await?;
        } else {
            done.record(&mut w.doc);
            self.save_shard(w).await?;
        }
        Ok(Shipped::Done)
    }

    /// Add one object read for shard `w` to its open volume (closing a full one and opening
    /// the next first): its entry, manifest line and the inventory's correction when the
    /// version read is not the one listed. An object the shard's previous step cut into parts
    /// goes on from where it got; [`Added::Cut`] when this step's deadline cuts it again.
    async fn add_object(
        &self,
        ck: &Checkpoint,
        w: &mut ShardProgress,
        volume: &mut Option<OpenVolume>,
        done: &mut ShardDone,
        remaining: u64,
        (rec, meta, body, planned_etag): Found,
    ) -> Result<Added> {
        let tuning = &self.cfg.tuning;
        let resume = done.partial.take().filter(|p| p.key == rec.key);
        if let Some(p) = &resume
            && (p.etag != meta.etag
                || p.offset >= meta.size
                || matches!(body, Body::Whole(..))
                || crate::format::parts::WholeDigest::restore(&p.digest).is_none())
        {
            // Rewritten between two steps: its parts so far are abandoned (the far side leaves
            // a sequence of parts without its last one out) and it ships again from its start.
            warn!(key = %rec.key, shipped = %p.etag, now = %meta.etag, parts = p.parts,
                  "object changed between the steps shipping it in parts: it ships again");
            w.doc.state.partial = None;
            let e = Error::ObjectChanged {
                bucket: self.cfg.source.bucket.clone(),
                key: rec.key.clone(),
            };
            return Err(self.changed_while_read(w, e).await);
        }
        let (offset, part) = resume.as_ref().map_or((0, 1), |p| (p.offset, p.parts + 1));
        let metadata = metadata_cost(&self.cfg.source.bucket, &rec.key, &meta.headers);
        let entry =
            crate::format::parts::part_entry(&entry_name(&self.cfg.source.bucket, &rec.key), part);
        let left = meta.size - offset;
        let (local, central, line) = (
            crate::format::archive::local_cost(&entry, left, tuning.compression),
            crate::format::archive::central_cost(&entry),
            manifest_line_bound(&rec, &entry, &meta),
        );
        if let Some(v) = volume.as_mut()
            && v.writer.entries() > 0
            && (v.bound(local + central + line, 0, self.recipients()) > tuning.volume_size
                || v.writer.entries() + 1 > tuning.volume_entries
                || v.metadata + metadata > limits::WRITER_METADATA_BUDGET)
        {
            let v = volume.take().expect("open volume");
            self.close_shard_volume(w, v, done.take(), None).await?;
        }
        let v = match volume.as_mut() {
            Some(v) => v,
            None => {
                let index = self.claim_volume(ck).await?;
                volume.insert(self.open_volume(
                    ck,
                    index,
                    left,
                    remaining + left,
                    w.fence.clone(),
                )?)
            }
        };
        v.entries_bound += local;
        v.central_bound += central;
        // The type of its bytes, for the export's own report (from its start only).
        let detected_type = (offset == 0).then(|| {
            let first = match &body {
                Body::Whole(data, _) => data,
                Body::Ranged(first, _) => first,
            };
            crate::policy::detect(first).mime
        });
        let streamed = match body {
            Body::Whole(data, _permit) => Streamed::Whole(
                v.writer
                    .add_whole(&entry, meta.last_modified_ms, &data)
                    .await?,
            ),
            Body::Ranged(first, _permit) => {
                match self
                    .stream_large(v, &entry, &rec.key, &meta, first, resume.as_ref())
                    .await
                {
                    Ok(s) => s,
                    Err(e) => return Err(self.changed_while_read(w, e).await),
                }
            }
        };
        let (digest, split) = match streamed {
            Streamed::Whole(d) => (d, None),
            Streamed::Part {
                digest,
                split,
                next,
            } => {
                done.partial = next;
                (digest, Some(split))
            }
        };
        v.bytes += digest.size;
        v.metadata += metadata;
        done.totals.bytes += digest.size;
        self.progress.object(digest.size);
        let cut = done.partial.is_some();
        if !cut {
            self.count_shipped(done, &rec, &meta, planned_etag.is_some());
        }
        v.objects.push(&ObjectEntry {
            key: rec.key,
            entry,
            size: digest.size,
            etag: meta.etag,
            last_modified: rfc3339_ms(meta.last_modified_ms),
            sha256: digest.sha256,
            crc32: digest.crc32,
            storage_class: rec.storage_class,
            headers: meta.headers,
            planned_etag,
            version_id: meta.version_id,
            split,
            part_layout: meta.part_layout,
            detected_type,
        });
        Ok(if cut { Added::Cut } else { Added::Whole })
    }

    /// Count an object whose last byte is in a volume now: one more object, and the inventory's
    /// correction when the version read is not the one listed.
    fn count_shipped(
        &self,
        done: &mut ShardDone,
        rec: &ObjectRecord,
        meta: &ObjectMeta,
        replaced: bool,
    ) {
        if replaced {
            done.totals.replaced += 1;
        }
        // The plan read the state of its headers (`--scan-metadata`): the version shipped may
        // have other ones (changed between the plan's HEAD and this read).
        let state = rec.state.as_ref().map(|_| meta.headers.state_digest());
        let same_time = same_second(rec.last_modified_ms, meta.last_modified_ms);
        if meta.etag != rec.etag || meta.size != rec.size || !same_time || state != rec.state {
            // The inventory records the version shipped, not the one listed.
            done.corrected.push(ObjectRecord {
                key: rec.key.clone(),
                size: meta.size,
                etag: meta.etag.clone(),
                last_modified_ms: if same_time {
                    rec.last_modified_ms
                } else {
                    meta.last_modified_ms
                },
                storage_class: rec.storage_class.clone(),
                state,
                withheld: None,
            });
        }
        done.totals.objects += 1;
    }

    /// The only (or last) shard's end: its open volume closed with the final manifest, or the
    /// final manifest in a volume of its own when it does not fit (or when an index an
    /// interrupted worker claimed lies before it: then the commit writes the last volume).
    async fn close_last(
        &self,
        ck: &Checkpoint,
        w: &mut ShardProgress,
        mut volume: Option<OpenVolume>,
        mut done: ShardDone,
        plan: &Plan,
    ) -> Result<()> {
        let tuning = &self.cfg.tuning;
        let mut v = match volume.take() {
            Some(v) => v,
            None => {
                let index = self.claim_volume(ck).await?;
                self.open_volume(ck, index, 0, 0, w.fence.clone())?
            }
        };
        // Built once (it reads each move's headers); a split only renumbers it.
        let mut built: Option<Final> = None;
        loop {
            let mut earlier = ck.volumes.clone();
            for e in &w.doc.volumes {
                insert_volume(&mut earlier, e.clone());
            }
            if v.index as usize != earlier.len() + 1 {
                // An index claimed by an interrupted worker lies before this one: the
                // commit gives it an empty volume and writes the last volume itself.
                self.close_shard_volume(w, v, done, None).await?;
                break;
            }
            let last = match built.take() {
                Some(mut last) => {
                    // The objects' counts moved into the volume just closed: the totals
                    // and lists are the same, the volumes before it one more.
                    last.volume_count = earlier.len() as u32 + 1;
                    last.earlier_volumes = earlier;
                    last
                }
                None => {
                    let totals = done.add_to(&plus(&ck.totals, &w.doc.totals));
                    let vanished = ck
                        .vanished
                        .iter()
                        .chain(&w.doc.vanished)
                        .chain(&done.vanished)
                        .cloned()
                        .collect();
                    let skipped = ck
                        .skipped
                        .iter()
                        .chain(&w.doc.skipped)
                        .chain(&done.skipped)
                        .cloned()
                        .collect();
                    self.final_part(&earlier, totals, vanished, skipped, plan)
                        .await?
                }
            };
            let final_json = serde_json::to_vec(&last).map_or(0, |j| j.len() as u64) + 16;
            if v.writer.entries() > 0
                && v.bound(0, final_json, self.recipients()) > tuning.volume_size
            {
                // The final manifest does not fit beside this volume's objects: it gets a
                // volume of its own.
                self.close_shard_volume(w, v, done.take(), None).await?;
                let index = self.claim_volume(ck).await?;
                v = self.open_volume(ck, index, 0, 0, w.fence.clone())?;
                built = Some(last);
                continue;
            }
            if v.bound(0, final_json, self.recipients()) > tuning.volume_size {
                warn!(job = %self.layout.job, volume = v.index, final_bytes = final_json,
                      cap = tuning.volume_size, "the final manifest alone is larger than --volume-size: its volume exceeds the cap");
            }
            self.close_shard_volume(w, v, done, Some(last)).await?;
            break;
        }
        Ok(())
    }

    /// `e`, after counting an object that changed while it was read against its shard (saved
    /// in the shard's document, as of its last checkpoint): the next attempt skips it once it
    /// has failed [`CHANGED_TRIES`] of them.
    pub(super) async fn changed_while_read(&self, w: &mut ShardProgress, e: Error) -> Error {
        let Error::ObjectChanged { key, .. } = &e else {
            return e;
        };
        *w.doc.changing.entry(key.clone()).or_default() += 1;
        if let Err(save) = self.save_shard(w).await {
            warn!(key = %key, error = %save, "could not count the object that changed while it was read");
        }
        e
    }

    /// A puts file of the plan (or of a shard), read in order.
    pub(super) async fn puts_reader(
        &self,
        key: &str,
    ) -> Result<InventoryReader<impl tokio::io::AsyncBufRead + Unpin + Send + 'static>> {
        let location = self.layout.uri(key);
        let reader = self
            .store()
            .reader(&self.cfg.dest.bucket, key)
            .await?
            .ok_or_else(|| Error::Corrupt {
                what: "plan",
                location: location.clone(),
                hint: "its puts file is missing: take a new baseline",
                source: "not found".into(),
            })?;
        Ok(InventoryReader::new(reader, location))
    }

    /// The plan's puts from index `skip` on, read in order by a task (a stored plan streams
    /// from its file: memory holds a channel's worth).
    pub(super) async fn puts_from(
        &self,
        puts: &Puts,
        skip: usize,
    ) -> Result<mpsc::Receiver<Result<ObjectRecord>>> {
        let (tx, rx) = mpsc::channel(1024);
        match puts {
            Puts::Inline(v) => {
                let v = v.get(skip..).unwrap_or_default().to_vec();
                tokio::spawn(async move {
                    for rec in v {
                        if tx.send(Ok(rec)).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Puts::Stored { key, .. } => {
                let mut reader = self.puts_reader(key).await?;
                tokio::spawn(async move {
                    let mut index = 0usize;
                    loop {
                        match reader.next().await {
                            Ok(None) => return,
                            Ok(Some(rec)) => {
                                if index >= skip && tx.send(Ok(rec)).await.is_err() {
                                    return;
                                }
                                index += 1;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                });
            }
        }
        Ok(rx)
    }
}

/// An object read for a shard that is not added to a volume — one that keeps changing while
/// it is read, vanished, or archived — recorded as such in `done`; `None` then, else the object
/// read.
fn set_aside(w: &ShardProgress, done: &mut ShardDone, item: Fetched) -> Option<Found> {
    let (Fetched::Gone { rec } | Fetched::Found { rec, .. } | Fetched::Archived { rec }) = &item;
    let tries = w.doc.changing.get(&rec.key).copied().unwrap_or(0);
    if tries >= CHANGED_TRIES {
        warn!(key = %rec.key, tries, "object keeps changing while it is read: skipped, it ships in a later run");
        done.withhold(rec, format!("changed while it was being read, {tries} times: it ships in a later run once it holds still"));
        return None;
    }
    match item {
        Fetched::Gone { rec } => {
            info!(key = %rec.key, "object vanished before it was read: recorded as deleted");
            done.vanished.push(rec.key);
            done.totals.vanished += 1;
            None
        }
        Fetched::Archived { rec } => {
            warn!(key = %rec.key, class = %rec.storage_class, "object is archived (InvalidObjectState): skipped, it ships once it can be read");
            done.withhold(&rec, "in an archive tier (InvalidObjectState on GET): restore it or move it out of the archive tier and it ships in the next run".into());
            None
        }
        Fetched::Found {
            rec,
            meta,
            body,
            planned_etag,
        } => Some((rec, meta, body, planned_etag)),
    }
}

/// Whether a GET's LastModified (`read_ms`) is the listed one (`listed_ms`). A GET answers with
/// an HTTP date, whole seconds; a listing may give milliseconds (S3's are `.000`, other
/// servers' are not), so the same second is the same time. Recording the GET's value instead
/// would make the next listing see every shipped object's time move, read its headers again
/// and ship it as a metadata-only change that never happened.
fn same_second(listed_ms: i64, read_ms: i64) -> bool {
    listed_ms == read_ms
        || (read_ms.rem_euclid(1000) == 0 && listed_ms.div_euclid(1000) == read_ms.div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::same_second;

    #[test]
    fn an_http_date_is_the_same_time_as_the_listed_milliseconds_of_its_second() {
        assert!(same_second(1_767_225_600_123, 1_767_225_600_000));
        assert!(same_second(1_767_225_600_123, 1_767_225_600_123));
        assert!(!same_second(1_767_225_600_123, 1_767_225_601_000));
        assert!(!same_second(1_767_225_601_000, 1_767_225_600_000));
        // A read with milliseconds of its own is compared exactly.
        assert!(!same_second(1_767_225_600_123, 1_767_225_600_124));
        assert!(same_second(-1_500, -2_000));
    }
}
