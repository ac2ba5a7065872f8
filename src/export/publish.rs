//! The end of a bundle: the seal (empty volumes for unused indices, the last volume) and the
//! commit, then the publication of the committed bundle: strays removed, `bundle.json`, the
//! signature and `SHA256SUMS`.

use super::*;

impl Run<'_> {
    /// Give every volume index handed out but never completed (a worker stopped with that
    /// volume open) an empty volume, then write the last volume: no objects, the final
    /// manifest. The far side then finds volumes 1..=n, the last one carrying `final`, whatever
    /// the number of shards.
    pub(super) async fn seal(&self, ck: &mut Checkpoint, plan: &Plan) -> Result<()> {
        let fence = self
            .fence
            .get()
            .cloned()
            .expect("the fence is set when the bundle is opened");
        // Deletes follow: only while this run's claim on the bundle still holds (a run that
        // wakes after another committed must not touch the committed bundle's volumes).
        self.confirm_fence(ck.sequence).await?;
        let top = self.claim_volume(ck).await?;
        let have: std::collections::HashSet<u32> = ck.volumes.iter().map(|v| v.index).collect();
        for i in (1..top).filter(|i| !have.contains(i)) {
            info!(job = %self.layout.job, volume = i, "an interrupted volume's index gets an empty volume");
            // A worker fenced off at the last moment may have completed it all the same: that
            // volume is in no shard's document, so it goes (volumes are written create-only).
            let key = format!(
                "{}{}",
                self.layout.bundle_prefix(ck.sequence),
                self.layout.volume_name(ck.sequence, i)
            );
            self.store().delete(&self.cfg.dest.bucket, &key).await?;
            let v = self.open_volume(ck, i, 0, 0, fence.clone())?;
            self.close_bundle_volume(ck, v, None).await?;
        }
        let last = self
            .final_part(
                &ck.volumes,
                ck.totals.clone(),
                ck.vanished.clone(),
                ck.skipped.clone(),
                plan,
            )
            .await?;
        let v = self.open_volume(ck, top, 0, 0, fence)?;
        self.close_bundle_volume(ck, v, Some(last)).await
    }

    /// Commit the bundle, then publish it: remove stray volumes of a killed run, write
    /// `bundle.json`, the signature and `SHA256SUMS`. Nothing of the bundle's folder is
    /// removed or replaced before the commit: a run that wakes after another committed fails
    /// its own commit and never touches the committed bundle.
    pub(super) async fn finalize(&self, ck: &Checkpoint, plan: &Plan) -> Result<Report> {
        let digest = bundle_digest(&ck.volumes);
        let sums = sha256sums(&ck.volumes);
        let report = self.report(ck, plan, Status::Complete);
        let summary = self.summary(ck, &digest);
        self.confirm_fence(ck.sequence).await?;
        self.commit_run(
            Some(CommittedBundle {
                sequence: ck.sequence,
                inventory: ck.inventory_key.clone(),
                bundle_digest: digest,
            }),
            ck.listed_at.clone(),
            ck.pin.clone().unwrap_or_else(|| Pin::of(self.cfg)),
            &report,
            &format!("{}report.json", self.layout.state_prefix(ck.sequence)),
        )
        .await?;
        // The bundle's volume counter is of no further use.
        if let Err(e) = self
            .table
            .reset_volumes(&self.layout.job, ck.sequence)
            .await
        {
            warn!(job = %self.layout.job, sequence = ck.sequence, error = %e, "the committed bundle's volume counter could not be removed");
        }
        // Only a committed bundle is published: SHA256SUMS, the far side's "complete" marker,
        // is written after the commit. Should it fail now, the next run publishes it.
        match self.publish(ck.sequence, &sums, &summary).await {
            Ok(signer) => {
                if let Err(e) = self
                    .write_review(ck, plan, &summary.bundle_digest, signer)
                    .await
                {
                    warn!(job = %self.layout.job, sequence = ck.sequence, error = %crate::error_chain(&e),
                          "the bundle is published, but its review report could not be written");
                }
            }
            Err(e) => {
                warn!(job = %self.layout.job, sequence = ck.sequence, error = %crate::error_chain(&e),
                      "committed, but SHA256SUMS could not be written: the next run writes it (the far side waits for it)");
            }
        }
        Ok(report)
    }

    /// The export's review report of the committed bundle, `review.json` and `review.html`
    /// beside `bundle.json` (never fetched onto the media): from the plaintext copies of its
    /// manifests, with what the screening withheld.
    async fn write_review(
        &self,
        ck: &Checkpoint,
        plan: &Plan,
        digest: &str,
        signer: Option<String>,
    ) -> Result<()> {
        let bucket = &self.cfg.dest.bucket;
        let copies = self.layout.manifests_prefix(ck.sequence);
        let mut manifests = Vec::new();
        for v in &ck.volumes {
            let key = format!("{copies}{:05}.json", v.index);
            let Some(body) = self.store().get_document(bucket, &key).await? else {
                // Written by a run from before the copies were kept.
                return Ok(());
            };
            manifests.push(serde_json::from_slice::<Manifest>(&body).map_err(|e| {
                Error::Corrupt {
                    what: "manifest copy",
                    location: self.layout.uri(&key),
                    hint: "it is only the review report's input: the bundle is not affected",
                    source: Box::new(e),
                }
            })?);
        }
        let withheld: Vec<_> = plan.withheld.iter().chain(&ck.withheld).cloned().collect();
        let prefix = self.layout.bundle_prefix(ck.sequence);
        let exported = crate::review::ExportedBundle {
            location: self.layout.uri(&prefix),
            bundle_digest: digest.to_string(),
            signer,
            sealed: self.layout.sealed,
            withheld: &withheld,
        };
        let Some(review) = crate::review::of_export(&manifests, exported) else {
            return Ok(());
        };
        let reviews = [review];
        self.put_json(
            &format!("{prefix}review.json"),
            &serde_json::json!({ "bundles": reviews }),
        )
        .await?;
        self.store()
            .put_document(
                bucket,
                &format!("{prefix}review.html"),
                crate::review::html::page(&reviews).into(),
                "text/html; charset=utf-8",
            )
            .await?;
        info!(job = %self.layout.job, sequence = ck.sequence, uri = %self.layout.uri(&format!("{prefix}review.html")), "review report written");
        Ok(())
    }

    /// The bundle's `bundle.json`.
    fn summary(&self, ck: &Checkpoint, digest: &str) -> BundleSummary {
        BundleSummary {
            format: FORMAT.to_string(),
            job: self.layout.job.clone(),
            source: SourceInfo {
                bucket: self.cfg.source.bucket.clone(),
                prefix: self.cfg.source.prefix.clone(),
            },
            sequence: ck.sequence,
            previous: ck.previous.clone(),
            baseline: ck.baseline,
            listed_at: ck.listed_at.clone(),
            completed_at: rfc3339_ms(now_ms()),
            bundle_digest: digest.to_string(),
            volumes: ck.volumes.clone(),
            totals: ck.totals.clone(),
        }
    }

    /// Remove what lies among the committed bundle's volumes without being one of them (left
    /// by a run that was interrupted or fenced off): only after the commit, by the run that
    /// committed or the next holder, so a committed volume is never removed.
    async fn remove_strays(&self, seq: u64, names: &[&str]) -> Result<()> {
        let bucket = &self.cfg.dest.bucket;
        let prefix = self.layout.bundle_prefix(seq);
        for key in self.store().keys(bucket, &prefix).await? {
            let name = &key[prefix.len()..];
            if crate::format::seal::is_volume_name(name) && !names.contains(&name) {
                warn!(key, "removing a volume left by an interrupted run");
                self.store().delete(bucket, &key).await?;
            }
        }
        Ok(())
    }

    /// Sign the committed bundle and write its `SHA256SUMS`, then drop its checkpoint. Only a
    /// run whose commit succeeded gets here: a run that lost its lease never writes either.
    /// Returns the signing key's fingerprint when it signed.
    pub(super) async fn publish(
        &self,
        seq: u64,
        sums: &str,
        summary: &BundleSummary,
    ) -> Result<Option<String>> {
        let bucket = &self.cfg.dest.bucket;
        let names: Vec<&str> = summary.volumes.iter().map(|v| v.name.as_str()).collect();
        self.remove_strays(seq, &names).await?;
        let mut signed_by = None;
        self.put_json(
            &format!("{}bundle.json", self.layout.bundle_prefix(seq)),
            summary,
        )
        .await?;
        if let Some(signer) = self.signer {
            // The signature goes before SHA256SUMS: SHA256SUMS marks the bundle complete.
            let sig = signer.sign(sums.as_bytes()).await?;
            info!(job = %self.layout.job, sequence = seq, key = %sig.key, "bundle signed");
            signed_by = Some(sig.key.clone());
            self.put_json(
                &format!(
                    "{}{}",
                    self.layout.bundle_prefix(seq),
                    crate::format::sign::SIGNATURE_FILE
                ),
                &sig,
            )
            .await?;
        }
        self.store()
            .put_document(
                bucket,
                &format!("{}SHA256SUMS", self.layout.bundle_prefix(seq)),
                sums.to_string().into(),
                "text/plain",
            )
            .await?;
        info!(job = %self.layout.job, sequence = seq, "bundle published (SHA256SUMS written)");
        if let Err(e) = self
            .store()
            .delete(bucket, &self.layout.checkpoint_key(seq))
            .await
        {
            warn!(error = %e, "the checkpoint could not be removed (it is ignored from now on)");
        }
        Ok(signed_by)
    }

    /// The last committed bundle without its `SHA256SUMS` (the run that committed it stopped
    /// before writing it): write it now, from the checkpoint or `bundle.json`, once its digest
    /// is the committed one.
    pub(super) async fn publish_committed(&self) -> Result<()> {
        let seq = self.state.sequence;
        let Some(want) = self.state.bundle_digest.as_deref() else {
            return Ok(());
        };
        let prefix = self.layout.bundle_prefix(seq);
        let bucket = &self.cfg.dest.bucket;
        if self
            .store()
            .stat(bucket, &format!("{prefix}SHA256SUMS"))
            .await?
            .is_some()
        {
            return Ok(());
        }
        let summary = match self
            .get_json::<Checkpoint>(&self.layout.checkpoint_key(seq), "checkpoint")
            .await?
        {
            Some(ck) => Some(self.summary(&ck, want)),
            None => {
                self.get_json::<BundleSummary>(&format!("{prefix}bundle.json"), "bundle summary")
                    .await?
            }
        };
        match summary {
            Some(b) if bundle_digest(&b.volumes) == want => {
                warn!(job = %self.layout.job, sequence = seq, "bundle was committed but not published: writing its SHA256SUMS now");
                self.publish(seq, &sha256sums(&b.volumes), &b)
                    .await
                    .map(|_| ())
            }
            _ => {
                warn!(job = %self.layout.job, sequence = seq, uri = %self.layout.uri(&prefix),
                      "the last committed bundle has no SHA256SUMS and nothing it can be rebuilt from: it cannot be published");
                Ok(())
            }
        }
    }
}
