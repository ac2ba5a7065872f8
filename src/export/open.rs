//! Opening a bundle (resume or plan it), shipping its shards in one process, and the commit
//! step's fold, inventory settle and seal-or-finalize.

use super::*;

impl Run<'_> {
    /// The whole export in this process: open (or plan) the bundle, ship its shards at once,
    /// then commit. A deadline leaves the bundle checkpointed (`Continue`).
    pub(super) async fn go(&self) -> Result<Report> {
        let (ck, plan, fresh) = match self.open_bundle().await? {
            Opened::Bundle { ck, plan, fresh } => (*ck, *plan, fresh),
            Opened::Finished(report) => return Ok(*report),
            Opened::Listing { .. } => {
                unreachable!("a run in one process lists to the end (listing_hops is off)")
            }
        };
        if fresh && self.past_deadline() {
            return Ok(self.report(&ck, &plan.plan, Status::Continue));
        }
        let mut shipped_here = None;
        if !ck.merged {
            let mut workers = Vec::with_capacity(ck.shards.len());
            for k in 0..ck.shards.len() {
                workers.push(self.open_shard(&ck, k, self.owner).await?);
            }
            let only = ck.shards.len() == 1;
            let shipped = futures::future::try_join_all(
                workers
                    .iter_mut()
                    .filter(|w| !w.doc.state.done)
                    .map(|w| self.ship_shard(&ck, w, &plan, only)),
            )
            .await?;
            if shipped.iter().any(|s| matches!(s, Shipped::Deadline)) {
                let mut view = ck.clone();
                for w in workers {
                    self.fold(&mut view, w.doc)?;
                }
                return Ok(self.report(&view, &plan.plan, Status::Continue));
            }
            // Every shard's document as this run last wrote it under the shard's fence (or
            // read it, done already): the commit folds these, without reading them back.
            shipped_here = Some(workers.into_iter().map(|w| w.doc).collect());
        }
        self.commit(ck, &plan, shipped_here).await
    }

    /// Fold every shard's document into the checkpoint (once), seal the bundle if no shard
    /// wrote its last volume, then write the summaries and commit. `docs`: the shards'
    /// documents, in shard order, when this process holds them (else they are read).
    pub(super) async fn commit(
        &self,
        mut ck: Checkpoint,
        plan: &StoredPlan,
        docs: Option<Vec<ShardDoc>>,
    ) -> Result<Report> {
        if !ck.merged {
            let mut held = docs.map(Vec::into_iter);
            for k in 0..ck.shards.len() {
                let doc: Option<ShardDoc> = match held.as_mut() {
                    Some(docs) => docs.next(),
                    None => {
                        let key = self.layout.shard_doc_key(ck.sequence, k);
                        self.get_json(&key, "shard progress").await?
                    }
                };
                let state = doc.as_ref().map_or(&ck.shards[k], |d| &d.state);
                if !state.done {
                    return Err(Error::ShardUnfinished {
                        job: self.layout.job.clone(),
                        sequence: ck.sequence,
                        shard: k,
                        cursor: state.cursor,
                        count: state.count,
                    });
                }
                if let Some(doc) = doc {
                    self.fold(&mut ck, doc)?;
                }
            }
            ck.merged = true;
            self.save_checkpoint(&ck).await?;
        }
        if !ck.inventory_settled {
            self.settle_inventory(&mut ck).await?;
            ck.inventory_settled = true;
            self.save_checkpoint(&ck).await?;
        }
        if !ck.shipped {
            self.seal(&mut ck, &plan.plan).await?;
        }
        self.finalize(&ck, &plan.plan).await
    }

    /// Make the bundle's inventory the inventory of what it shipped: objects that vanished
    /// before they were read leave it (they ship as deletions), objects rewritten before they
    /// were read are recorded as the version shipped. Without this the next run would diff
    /// against versions the far side never received (a rollback of the change would go
    /// unnoticed, a rename of a vanished key would become a move from a key never shipped).
    pub(super) async fn settle_inventory(&self, ck: &mut Checkpoint) -> Result<()> {
        if ck.vanished.is_empty() && ck.corrected.is_empty() {
            return Ok(());
        }
        let bucket = &self.cfg.dest.bucket;
        let from = ck.inventory_key.clone();
        let reader = self
            .store()
            .reader(bucket, &from)
            .await?
            .ok_or_else(|| Error::Corrupt {
                what: "inventory",
                location: self.layout.uri(&from),
                hint: "the plan wrote it and it is gone: take a new baseline",
                source: "not found".into(),
            })?;
        let to = self.layout.settled_inventory_key(ck.sequence, self.owner);
        let mut writer = InventoryWriter::new(self.store().multipart(
            bucket,
            &to,
            crate::config::MIN_PART_SIZE,
            2,
            &jsonl_headers(),
        ));
        let records = crate::plan::inventory::settle(
            &mut InventoryReader::new(reader, self.layout.uri(&from)),
            &mut writer,
            &ck.vanished,
            &ck.corrected,
        )
        .await?;
        let index = writer.index();
        writer
            .finish()
            .await
            .map_err(|e| Error::Stream {
                bucket: bucket.clone(),
                key: to.clone(),
                source: Box::new(e),
            })?
            .finish()
            .await?;
        self.store()
            .put_document(
                bucket,
                &InventoryIndex::key_for(&to),
                serde_json::to_vec(&index).expect("index serialises").into(),
                "application/json",
            )
            .await?;
        info!(job = %self.layout.job, key = %to, records, vanished = ck.vanished.len(),
              corrected = ck.corrected.len(), "inventory settled to what was shipped");
        ck.inventory_key = to;
        Ok(())
    }

    /// Add a shard's volumes, counts, vanished keys and cursor to `ck`.
    pub(super) fn fold(&self, ck: &mut Checkpoint, doc: ShardDoc) -> Result<()> {
        let Some(state) = ck.shards.get_mut(doc.shard) else {
            return Err(self.bad_shard(ck.sequence, doc.shard, "no such shard in the checkpoint"));
        };
        *state = doc.state;
        for v in doc.volumes {
            let index = v.index;
            if !insert_volume(&mut ck.volumes, v) {
                return Err(self.bad_shard(
                    ck.sequence,
                    doc.shard,
                    &format!("volume {index} is in two shards' documents"),
                ));
            }
        }
        ck.totals = plus(&ck.totals, &doc.totals);
        ck.vanished.extend(doc.vanished);
        ck.corrected.extend(doc.corrected);
        ck.skipped.extend(doc.skipped);
        ck.withheld.extend(doc.withheld);
        ck.shipped |= doc.last;
        Ok(())
    }

    pub(super) fn bad_shard(&self, seq: u64, shard: usize, what: &str) -> Error {
        Error::Corrupt {
            what: "shard progress",
            location: self.layout.uri(&self.layout.shard_doc_key(seq, shard)),
            hint: "take a new baseline",
            source: what.to_string().into(),
        }
    }

    /// Open the bundle this run works on: resume its checkpoint (taking it over), or list,
    /// diff and plan a new one (a plan with no changes is committed at once). The plan's puts
    /// are cut into shards here.
    pub(super) async fn open_bundle(&self) -> Result<Opened> {
        self.publish_committed().await?;
        let seq = self.state.sequence + 1;
        // We hold the lease: uploads still open under our prefixes were left by a killed run.
        self.sweep_uploads(seq).await?;
        let ck_key = self.layout.checkpoint_key(seq);
        let found = self
            .store()
            .get_document_tagged(&self.cfg.dest.bucket, &ck_key)
            .await?;
        let _ = self.fence.set(Arc::new(crate::store::Fence::new(
            self.store(),
            &self.cfg.dest.bucket,
            &ck_key,
            found.as_ref().map(|(_, etag)| etag.clone()),
        )));
        let resumed = match found {
            Some((body, _)) if !self.cfg.full => {
                Some(self.parse_json::<Checkpoint>(&body, &ck_key, "checkpoint")?)
            }
            _ => None,
        };
        let (mut ck, plan, fresh) = match resumed {
            Some(mut ck) => {
                if let Some(pin) = &ck.pin {
                    crate::plan::pin::refuse(
                        &self.layout.job,
                        pin.place_differences(&Pin::of(self.cfg)),
                    )?;
                }
                let plan = self.stored_plan(&ck).await?;
                if ck.sealed != self.layout.sealed {
                    return Err(Error::config(
                        "encryption",
                        format!(
                            "bundle {seq} of job `{}` was started {} age encryption and must be finished the same way: {}",
                            self.layout.job,
                            if ck.sealed { "with" } else { "without" },
                            if ck.sealed {
                                "pass the same --encrypt-to (AGE_RECIPIENTS) again"
                            } else {
                                "run without --encrypt-to to finish it, or start over with --full"
                            }
                        ),
                    ));
                }
                ck.hops += 1;
                // Take the bundle over: from this write on, the run that wrote it before
                // (killed, or stalled past its lease) cannot write the checkpoint, and its
                // shard workers stop at their next step.
                ck.writer = self.owner.to_string();
                self.save_checkpoint(&ck).await?;
                info!(job = %self.layout.job, sequence = seq, shards = ck.shards.len(), volumes = ck.volumes.len(), "resuming bundle");
                self.progress.planned(&plan.plan.stats);
                self.progress.resumed(ck.totals.objects, ck.totals.bytes);
                (ck, plan, false)
            }
            None => {
                crate::plan::pin::check(
                    self.cfg,
                    self.state.pin.as_ref(),
                    self.state.inventory.as_deref(),
                )?;
                match self.plan_bundle(seq).await? {
                    Planned::Bundle(ck, plan) => (*ck, plan, true),
                    Planned::Listing { hop } => {
                        return Ok(Opened::Listing { sequence: seq, hop });
                    }
                    Planned::Empty { plan, listed_at } => {
                        return Ok(Opened::Finished(Box::new(
                            self.no_changes(&plan, listed_at).await?,
                        )));
                    }
                }
            }
        };
        if !ck.shipped {
            self.prepare_shards(&mut ck, &plan).await?;
        }
        Ok(Opened::Bundle {
            ck: Box::new(ck),
            plan: Box::new(plan),
            fresh,
        })
    }

    /// The stored plan a checkpoint refers to.
    pub(super) async fn stored_plan(&self, ck: &Checkpoint) -> Result<StoredPlan> {
        let plan_key = ck
            .plan_key
            .clone()
            .unwrap_or_else(|| self.layout.legacy_plan_key(ck.sequence));
        self.get_json(&plan_key, "plan")
            .await?
            .ok_or_else(|| Error::Corrupt {
                what: "plan",
                location: self.layout.uri(&plan_key),
                hint: "it is missing: take a new baseline",
                source: "not found".into(),
            })
    }

    /// The bundle a later step works on: the checkpoint the plan step of this same run wrote
    /// (`Fenced` if another run has taken the bundle over since), and its plan.
    pub(super) async fn reopen_bundle(&self, seq: u64) -> Result<(Checkpoint, StoredPlan)> {
        let ck_key = self.layout.checkpoint_key(seq);
        let Some((body, etag)) = self
            .store()
            .get_document_tagged(&self.cfg.dest.bucket, &ck_key)
            .await?
        else {
            return Err(Error::Corrupt {
                what: "checkpoint",
                location: self.layout.uri(&ck_key),
                hint: "the plan step writes it: start the export again",
                source: "not found".into(),
            });
        };
        let ck: Checkpoint = self.parse_json(&body, &ck_key, "checkpoint")?;
        if ck.writer != self.owner {
            self.store().run().stop().lease_lost();
            return Err(Error::Fenced {
                bucket: self.cfg.dest.bucket.clone(),
                key: ck_key,
            });
        }
        // The checkpoint as read: a later step (a retried commit) confirms its claim by
        // writing these very bytes again under their ETag.
        let _ = self.fence.set(Arc::new(crate::store::Fence::read(
            self.store(),
            &self.cfg.dest.bucket,
            &ck_key,
            etag,
            body,
        )));
        let plan = self.stored_plan(&ck).await?;
        Ok((ck, plan))
    }
}
