//! Volumes of a bundle: opening, finishing and closing them into a shard's document or the
//! checkpoint, the final manifest, the run's report and the commit write.

use super::*;

impl Run<'_> {
    /// Abort every multipart upload still open under the bundle's and the state's folders of
    /// sequence `seq`. At the start of a run they were left by a killed run; before the commit
    /// (every upload of this run is finished by then) they are uploads whose creation was
    /// applied but whose answer was lost, so the SDK's retry opened another.
    pub(super) async fn sweep_uploads(&self, seq: u64) -> Result<()> {
        let bucket = &self.cfg.dest.bucket;
        for prefix in [
            self.layout.bundle_prefix(seq),
            self.layout.state_prefix(seq),
        ] {
            self.store().abort_uploads(bucket, &prefix).await?;
        }
        Ok(())
    }

    /// Write the run's full report beside its state (`report_key`), then commit the state with a
    /// bounded summary of it (counters and a pointer): the DynamoDB item stays small whatever the
    /// bucket holds (thousands of archived objects, thousands of volumes).
    pub(super) async fn commit_run(
        &self,
        bundle: Option<CommittedBundle>,
        watermark: String,
        pin: Pin,
        report: &Report,
        report_key: &str,
    ) -> Result<()> {
        self.check_lease()?;
        // Only uploads that were opened can have been left open: a run in one process that
        // opened none (small objects are sent whole) needs no second sweep.
        let opened = self
            .store()
            .activity()
            .requests_of("s3:CreateMultipartUpload");
        if !self.one_process || opened > 0 {
            self.sweep_uploads(self.state.sequence + 1).await?;
        }
        self.put_json(report_key, report).await?;
        self.check_lease()?;
        self.table
            .commit(
                &self.layout.job,
                self.owner,
                self.state.version,
                &Commit {
                    bundle,
                    watermark,
                    last_run: run_summary(report, &self.layout.uri(report_key)),
                    pin: Some(pin),
                },
            )
            .await
    }

    pub(super) fn report(&self, ck: &Checkpoint, plan: &Plan, status: Status) -> Report {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        Report {
            job: self.layout.job.clone(),
            status,
            complete: status != Status::Continue,
            sequence: ck.sequence,
            baseline: ck.baseline,
            volumes: ck
                .volumes
                .iter()
                .map(|v| {
                    self.layout.uri(&format!(
                        "{}{}",
                        self.layout.bundle_prefix(ck.sequence),
                        v.name
                    ))
                })
                .collect(),
            volume_details: ck.volumes.clone(),
            bundle: Some(self.layout.uri(&self.layout.bundle_prefix(ck.sequence))),
            bundle_digest: (status == Status::Complete).then(|| bundle_digest(&ck.volumes)),
            objects: ck.totals.objects,
            bytes: ck.totals.bytes,
            deleted: ck.totals.deleted,
            moved: ck.totals.moved,
            metadata_only: ck.totals.metadata_only,
            skipped: ck.totals.skipped,
            vanished: ck.totals.vanished,
            replaced: ck.totals.replaced,
            listed: plan.stats.listed,
            unchanged: plan.stats.unchanged,
            own_output: plan.stats.own_output,
            list_ranges: plan.stats.list_ranges,
            shards: ck.shards.len() as u64,
            own_output_prefixes: own_output_uris(self.cfg),
            skipped_objects: plan.skipped.iter().chain(&ck.skipped).cloned().collect(),
            withheld: (plan.withheld.len() + ck.withheld.len()) as u64,
            withheld_objects: plan.withheld.iter().chain(&ck.withheld).cloned().collect(),
            hops: ck.hops,
            duration_ms,
            bytes_per_sec: ck.totals.bytes * 1000 / duration_ms.max(1),
            read_resumes: self.store().activity().read_resumes(),
            requests: self.store().activity().requests(),
            ignored: ignored_settings(ck, self.cfg),
        }
    }

    pub(super) fn manifest(
        &self,
        ck: &Checkpoint,
        volume: u32,
        objects: Vec<ObjectEntry>,
    ) -> Manifest {
        Manifest {
            format: FORMAT.to_string(),
            job: self.layout.job.clone(),
            source: SourceInfo {
                bucket: self.cfg.source.bucket.clone(),
                prefix: self.cfg.source.prefix.clone(),
            },
            sequence: ck.sequence,
            previous: ck.previous.clone(),
            baseline: ck.baseline,
            volume,
            listed_at: ck.listed_at.clone(),
            policy_digest: self.cfg.policy.as_ref().map(|p| p.digest.clone()),
            objects,
            last: None,
        }
    }

    /// Start volume `index`. `first` is the size of its first object and
    /// `remaining` the bytes still to ship: they size the parts so that even a lone huge
    /// object stays within S3's 10,000 parts.
    pub(super) fn open_volume(
        &self,
        ck: &Checkpoint,
        index: u32,
        first: u64,
        remaining: u64,
        fence: Arc<crate::store::Fence>,
    ) -> Result<OpenVolume> {
        let name = self.layout.volume_name(ck.sequence, index);
        let key = format!("{}{}", self.layout.bundle_prefix(ck.sequence), name);
        let expected = first.max(remaining.min(self.cfg.tuning.volume_size));
        let part_size = self
            .cfg
            .tuning
            .part_size
            .max(expected / 9_000 + 1)
            .min(crate::config::MAX_PART_SIZE);
        // Create-only, under the fence: a run that lost its lease cannot replace this run's
        // volume, nor this run a volume while another holds the bundle.
        let upload = self.store().multipart_fenced(
            &self.cfg.dest.bucket,
            &key,
            part_size,
            PARTS_IN_FLIGHT,
            &volume_headers(self.owner),
            Some(fence),
        );
        Ok(OpenVolume {
            writer: VolumeWriter::new(
                upload,
                name,
                self.cfg.tuning.compression,
                self.cfg.encrypt_to.as_ref(),
            )?,
            index,
            key,
            sequence: ck.sequence,
            objects: ManifestJson::start(&self.manifest(ck, index, Vec::new())),
            bytes: 0,
            metadata: 0,
            entries_bound: 0,
            central_bound: 0,
        })
    }

    /// Finish `v` with its manifest (the final one when `last` is given).
    pub(super) async fn finish_volume(
        &self,
        v: OpenVolume,
        last: Option<Final>,
    ) -> Result<VolumeInfo> {
        let objects = v.objects.count();
        let json = v.objects.finish(last.as_ref());
        let name = v.writer.name().to_string();
        let written = v.writer.finish_json(&json).await?;
        // A plaintext copy beside the bundle's state (never in its folder, so never on the
        // media): the export's review report is made from these.
        let copy = format!(
            "{}{:05}.json",
            self.layout.manifests_prefix(v.sequence),
            v.index
        );
        self.store()
            .put_document(
                &self.cfg.dest.bucket,
                &copy,
                json.into(),
                "application/json",
            )
            .await?;
        info!(key = %v.key, size = written.size, sha256 = %written.sha256, objects, "volume complete");
        Ok(VolumeInfo {
            index: v.index,
            name,
            size: written.size,
            sha256: written.sha256,
            objects,
            bytes: v.bytes,
        })
    }

    /// Close a shard's volume: it joins the shard's document with the shard's cursor and
    /// counts (`done`), saved under the shard's fence.
    pub(super) async fn close_shard_volume(
        &self,
        w: &mut ShardProgress,
        v: OpenVolume,
        done: ShardDone,
        last: Option<Final>,
    ) -> Result<()> {
        let shipped = last.is_some();
        let info = self.finish_volume(v, last).await?;
        let index = info.index;
        if !insert_volume(&mut w.doc.volumes, info) {
            return Err(self.bad_shard(
                w.doc.sequence,
                w.doc.shard,
                &format!("volume {index} completed twice"),
            ));
        }
        done.record(&mut w.doc);
        w.doc.last = shipped;
        self.check_lease()?;
        self.save_shard(w).await
    }

    /// Close a volume the commit step writes (an empty one, or the last) into the checkpoint.
    pub(super) async fn close_bundle_volume(
        &self,
        ck: &mut Checkpoint,
        v: OpenVolume,
        last: Option<Final>,
    ) -> Result<()> {
        let shipped = last.is_some();
        let info = self.finish_volume(v, last).await?;
        let index = info.index;
        if !insert_volume(&mut ck.volumes, info) {
            return Err(Error::Corrupt {
                what: "checkpoint",
                location: self.layout.uri(&self.layout.checkpoint_key(ck.sequence)),
                hint: "take a new baseline",
                source: format!("volume {index} completed twice").into(),
            });
        }
        ck.shipped = shipped;
        self.check_lease()?;
        self.save_checkpoint(ck).await
    }

    /// The final manifest after `volumes`, with the bundle's `totals` and `vanished` keys.
    pub(super) async fn final_part(
        &self,
        volumes: &[VolumeInfo],
        totals: Totals,
        vanished: Vec<String>,
        skipped: Vec<crate::format::manifest::Skipped>,
        plan: &Plan,
    ) -> Result<Final> {
        // A rename may come with new headers: read them from each move's target.
        let store = self.store();
        let bucket = &self.cfg.source.bucket;
        let moved: Vec<Move> = futures::stream::iter(plan.moves.iter().cloned())
            .map(|mut m| async move {
                if let Some(meta) = store.stat_with_tags(bucket, &m.to).await?
                    && meta.etag == m.etag
                {
                    m.headers = Some(meta.headers);
                }
                Ok::<_, Error>(m)
            })
            .buffered(self.cfg.tuning.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        Ok(Final {
            volume_count: volumes.len() as u32 + 1,
            earlier_volumes: volumes.to_vec(),
            deleted: plan.deletes.clone(),
            moved,
            skipped: plan.skipped.iter().cloned().chain(skipped).collect(),
            vanished,
            totals,
            metadata_only: plan.metadata_only.clone(),
        })
    }
}
