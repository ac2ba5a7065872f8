//! Planning a bundle: list, diff, pair renames, write the inventory, the plan and the first
//! checkpoint (or commit a run that found no changes).

use super::*;

impl Run<'_> {
    /// List, diff and write the new inventory, the plan and the first checkpoint. In a plan
    /// step, a listing that reaches the deadline stops and is saved ([`Planned::Listing`]);
    /// the step's next call goes on from there (see `listing`).
    pub(super) async fn plan_bundle(&self, seq: u64) -> Result<Planned> {
        let baseline = self.cfg.full || self.state.inventory.is_none();
        let previous = if baseline {
            None
        } else {
            self.state.inventory.as_deref()
        };
        let stopped = self.stopped_listing(seq, baseline).await?;
        let hop = stopped.as_ref().map_or(1, |d| d.hop + 1);
        let listed_at = stopped
            .as_ref()
            .map_or_else(|| rfc3339_ms(now_ms()), |d| d.listed_at.clone());
        let inventory_key = self.layout.inventory_key(seq, &self.hop_owner(hop));
        let mut inventory = self
            .continued_writer(
                &inventory_key,
                stopped.as_ref().map(|d| &d.inventory),
                &crate::format::manifest::ObjectHeaders {
                    content_type: Some("application/x-ndjson".into()),
                    ..Default::default()
                },
            )
            .await?;
        let candidates_key = self.layout.candidates_key(seq, &self.hop_owner(hop));
        let mut candidates = self
            .continued_writer(
                &candidates_key,
                stopped.as_ref().map(|d| &d.candidates),
                &jsonl_headers(),
            )
            .await?;
        let deadline = self.cfg.deadline.filter(|_| self.listing_hops);
        let so_far = stopped.map(|d| d.listed);
        let listed = self
            .list_and_warm(
                previous,
                &mut inventory,
                &mut candidates,
                (deadline, so_far),
            )
            .await?;
        if listed.stopped_after.is_some() {
            self.save_listing(
                seq,
                (hop, baseline, listed_at),
                listed,
                (inventory_key, inventory),
                (candidates_key, candidates),
            )
            .await?;
            return Ok(Planned::Listing { hop });
        }
        let stream_err = |key: &str, e: std::io::Error| Error::Stream {
            bucket: self.cfg.dest.bucket.clone(),
            key: key.to_string(),
            source: Box::new(e),
        };
        let records = inventory.count;
        let index = inventory.index();
        let upload = inventory
            .finish()
            .await
            .map_err(|e| stream_err(&inventory_key, e))?;
        let candidates = candidates
            .finish()
            .await
            .map_err(|e| stream_err(&candidates_key, e))?;
        if listed.stats.added == 0
            && listed.stats.modified == 0
            && listed.deleted.is_empty()
            && !baseline
        {
            drop(upload); // aborts: the inventory is unchanged
            drop(candidates);
            let plan = listed.into_plan();
            self.progress.planned(&plan.stats);
            return Ok(Planned::Empty { plan, listed_at });
        }
        candidates.finish().await?;
        let (plan, puts_key) = if listed.needs_pairing(self.cfg.moves) {
            self.pair(seq, listed, &candidates_key).await?
        } else {
            (listed.into_plan(), candidates_key)
        };
        self.progress.planned(&plan.stats);
        info!(job = %self.layout.job, listed = plan.stats.listed, added = plan.stats.added, modified = plan.stats.modified,
              deleted = plan.stats.deleted, moved = plan.stats.moved, skipped = plan.stats.skipped,
              put_bytes = plan.stats.put_bytes, "planned");
        upload.finish().await?;
        info!(key = %inventory_key, records, "inventory written");
        // Its index (every 1,000th key), for the next run to cut its listing into ranges.
        self.store()
            .put_document(
                &self.cfg.dest.bucket,
                &InventoryIndex::key_for(&inventory_key),
                serde_json::to_vec(&index).expect("index serialises").into(),
                "application/json",
            )
            .await?;
        let stored = StoredPlan {
            puts: Puts::Stored {
                key: puts_key,
                count: plan.put_count(),
            },
            plan,
        };
        let plan_key = self.layout.plan_key(seq, self.owner);
        self.put_json(&plan_key, &stored).await?;
        let plan = &stored.plan.stats;
        let ck = self.first_checkpoint(seq, baseline, listed_at, inventory_key, plan_key, plan);
        self.save_checkpoint(&ck).await?;
        Ok(Planned::Bundle(Box::new(ck), stored))
    }

    /// List and diff (see [`make_plan`]) into `inventory` and `candidates`.
    async fn list_and_warm(
        &self,
        previous: Option<&str>,
        inventory: &mut InventoryWriter<MultipartUpload>,
        candidates: &mut InventoryWriter<MultipartUpload>,
        resume: (Option<Instant>, Option<Listed>),
    ) -> Result<Listed> {
        // Small changed objects are fetched while the listing still runs (shipping needs the
        // whole plan: renames pair an added key with a deleted one seen later).
        // Only where this process ships the bundle too: a state machine's plan step hands the
        // shipping to other invocations, which could never use what it fetched.
        let warmer = self.warm_up.then(|| {
            Warmer::start(
                self.store().clone(),
                self.cfg.source.bucket.clone(),
                self.cfg.tuning.concurrency,
                self.warm.clone(),
            )
        });
        let planned = make_plan(
            self.store(),
            self.cfg,
            previous,
            Some(inventory),
            candidates,
            &mut |rec| {
                if let Some(w) = &warmer {
                    w.offer(rec);
                }
            },
            resume,
        )
        .await;
        if let Some(w) = warmer {
            w.stop().await;
        }
        planned
    }

    /// The checkpoint a planned bundle starts from.
    fn first_checkpoint(
        &self,
        seq: u64,
        baseline: bool,
        listed_at: String,
        inventory_key: String,
        plan_key: String,
        plan: &crate::plan::PlanStats,
    ) -> Checkpoint {
        Checkpoint {
            format: FORMAT.to_string(),
            sequence: seq,
            baseline,
            // A baseline links to the bundle before it too: the far side sees one chain.
            previous: self.state.bundle_digest.as_ref().map(|d| ChainLink {
                sequence: self.state.sequence,
                bundle_digest: d.clone(),
            }),
            listed_at,
            inventory_key,
            cursor: 0,
            cursor_bytes: 0,
            volumes: Vec::new(),
            totals: Totals {
                deleted: plan.deleted,
                moved: plan.moved,
                skipped: plan.skipped,
                metadata_only: plan.metadata_only,
                ..Totals::default()
            },
            vanished: Vec::new(),
            shipped: false,
            sealed: self.layout.sealed,
            hops: 1,
            writer: self.owner.to_string(),
            plan_key: Some(plan_key),
            shards: Vec::new(),
            next_volume: 1,
            merged: false,
            corrected: Vec::new(),
            inventory_settled: false,
            pin: Some(Pin::of(self.cfg)),
            shards_asked: Some(self.cfg.tuning.shards),
            skipped: Vec::new(),
            withheld: Vec::new(),
        }
    }

    /// Read the candidates back, pair renames and write the puts left as the plan's puts file
    /// (the candidates file is removed after).
    pub(super) async fn pair(
        &self,
        seq: u64,
        listed: Listed,
        candidates_key: &str,
    ) -> Result<(Plan, String)> {
        let bucket = &self.cfg.dest.bucket;
        let reader = self
            .store()
            .reader(bucket, candidates_key)
            .await?
            .ok_or_else(|| Error::Corrupt {
                what: "plan candidates",
                location: self.layout.uri(candidates_key),
                hint: "it was just written and is gone: run the export again",
                source: "not found".into(),
            })?;
        let puts_key = self.layout.puts_key(seq, self.owner);
        let mut puts = InventoryWriter::new(self.store().multipart(
            bucket,
            &puts_key,
            crate::config::MIN_PART_SIZE,
            2,
            &jsonl_headers(),
        ));
        let plan = crate::plan::pair_renames(
            &mut InventoryReader::new(reader, self.layout.uri(candidates_key)),
            listed,
            self.cfg.moves,
            &mut puts,
            &mut VolumeEstimate::new(u64::MAX, u64::MAX),
        )
        .await?;
        puts.finish()
            .await
            .map_err(|e| Error::Stream {
                bucket: bucket.clone(),
                key: puts_key.clone(),
                source: Box::new(e),
            })?
            .finish()
            .await?;
        if let Err(e) = self.store().delete(bucket, candidates_key).await {
            warn!(key = candidates_key, error = %e, "the plan's candidates file could not be removed");
        }
        Ok((plan, puts_key))
    }

    pub(super) async fn no_changes(&self, plan: &Plan, listed_at: String) -> Result<Report> {
        let report = Report {
            job: self.layout.job.clone(),
            status: Status::NoChanges,
            complete: true,
            sequence: self.state.sequence,
            baseline: false,
            volumes: Vec::new(),
            volume_details: Vec::new(),
            bundle: None,
            bundle_digest: self.state.bundle_digest.clone(),
            objects: 0,
            bytes: 0,
            deleted: 0,
            moved: 0,
            metadata_only: 0,
            vanished: 0,
            replaced: 0,
            skipped: plan.stats.skipped,
            listed: plan.stats.listed,
            unchanged: plan.stats.unchanged,
            own_output: plan.stats.own_output,
            list_ranges: plan.stats.list_ranges,
            shards: 0,
            own_output_prefixes: own_output_uris(self.cfg),
            skipped_objects: plan.skipped.clone(),
            withheld: plan.withheld.len() as u64,
            withheld_objects: plan.withheld.clone(),
            hops: 1,
            duration_ms: self.started.elapsed().as_millis() as u64,
            bytes_per_sec: 0,
            read_resumes: self.store().activity().read_resumes(),
            requests: self.store().activity().requests(),
            ignored: Vec::new(),
        };
        let report_key = format!(
            "{}no-changes-report.json",
            self.layout.state_prefix(self.state.sequence)
        );
        self.commit_run(None, listed_at, Pin::of(self.cfg), &report, &report_key)
            .await?;
        Ok(report)
    }
}
