//! Entry points: the whole export in one process (`run`) and the state machine's steps (plan,
//! shard, commit, abandon).

use super::*;

/// Run (or continue) the job's export.
pub async fn run(clients: &Clients, cfg: &ExportConfig, progress: &dyn Progress) -> Result<Report> {
    let owner = format!("run-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let session = Session::start(clients, cfg, &owner, true).await?;
    let run = session.run(progress);
    let result = run.go().await;
    let committed = matches!(&result, Ok(r) if r.status != Status::Continue);
    session.end(!committed).await;
    log_outcome(cfg.job.as_str(), &result);
    result.map(|mut r| {
        r.requests = clients.s3.activity().requests();
        r
    })
}

pub(super) fn log_outcome(job: &str, result: &Result<Report>) {
    match result {
        Ok(r) => info!(
            job,
            status = ?r.status,
            sequence = r.sequence,
            volumes = r.volumes.len(),
            objects = r.objects,
            bytes = r.bytes,
            deleted = r.deleted,
            moved = r.moved,
            skipped = r.skipped,
            vanished = r.vanished,
            duration_ms = r.duration_ms,
            bytes_per_sec = r.bytes_per_sec,
            "export run finished"
        ),
        // The caller reports the error (the CLI prints it once; the Lambda logs and notifies).
        Err(e) => tracing::debug!(job, error = %e, "export run failed; state unchanged"),
    }
}

/// What the plan step of a distributed export hands on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PlanStep {
    /// A bundle to ship: one shard worker per entry of the shard list, then the commit step.
    Ready {
        sequence: u64,
        shards: u64,
        /// Bucket and key of the shard list (`[{"shard": 0}, …]`).
        bucket: String,
        shard_list: String,
    },
    /// Nothing to ship (no changes: already committed by the plan step).
    Finished { report: Box<Report> },
    /// The listing reached the step's deadline after `hop` calls and was saved: invoke the
    /// plan step again (it lists on from there).
    Listing { sequence: u64, hop: u32 },
}

/// What a shard step did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardStep {
    pub sequence: u64,
    pub shard: usize,
    /// Every put of the shard is in a completed volume.
    pub done: bool,
    pub cursor: u64,
    pub count: u64,
    pub volumes: u64,
}

/// The steps of an export run spread over several processes (AWS Step Functions: plan →
/// a Distributed Map of shard workers → commit). `owner` names the run: every step of it
/// takes (or renews) the job's lease under that name, so the lease spans the steps, and a run
/// that took the bundle over fences the old run's steps off.
pub struct Steps<'a> {
    pub clients: &'a Clients,
    pub cfg: &'a ExportConfig,
    pub owner: &'a str,
}

impl Steps<'_> {
    /// List, diff, plan and cut the bundle into shards (or resume the unfinished bundle),
    /// writing the shard list. The lease stays with the run.
    pub async fn plan(&self) -> Result<PlanStep> {
        let session = Session::start(self.clients, self.cfg, self.owner, true).await?;
        let mut run = session.run(&NoProgress);
        run.warm_up = false;
        run.listing_hops = true;
        run.one_process = false;
        let result = async {
            match run.open_bundle().await? {
                Opened::Finished(report) => Ok(PlanStep::Finished { report }),
                Opened::Listing { sequence, hop } => Ok(PlanStep::Listing { sequence, hop }),
                Opened::Bundle { ck, .. } => {
                    let key = run.layout.shard_list_key(ck.sequence);
                    let list: Vec<serde_json::Value> = (0..ck.shards.len())
                        .map(|k| serde_json::json!({ "shard": k }))
                        .collect();
                    run.put_json(&key, &list).await?;
                    info!(job = %run.layout.job, sequence = ck.sequence, shards = ck.shards.len(), list = %run.layout.uri(&key), "planned: shard list written");
                    Ok(PlanStep::Ready {
                        sequence: ck.sequence,
                        shards: ck.shards.len() as u64,
                        bucket: self.cfg.dest.bucket.clone(),
                        shard_list: key,
                    })
                }
            }
        }
        .await;
        // The lease goes with a finished run (its commit released it) and stays otherwise.
        session.end(false).await;
        result
    }

    /// Ship shard `shard` of bundle `sequence` from its cursor until it is done or the
    /// deadline comes (`done: false`: invoke the step again).
    pub async fn shard(&self, sequence: u64, shard: usize) -> Result<ShardStep> {
        let session = Session::start(self.clients, self.cfg, self.owner, false).await?;
        let mut run = session.run(&NoProgress);
        run.one_process = false;
        if let Err(e) = run.expect_sequence(sequence) {
            // The lease this step just took is not the run's any more: give it back.
            session.end(true).await;
            return Err(e);
        }
        let result = async {
            let (ck, plan) = run.reopen_bundle(sequence).await?;
            let writer = format!(
                "{}/{}",
                self.owner,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let mut w = run.open_shard(&ck, shard, &writer).await?;
            let only = ck.shards.len() == 1;
            run.ship_shard(&ck, &mut w, &plan, only).await?;
            let s = &w.doc.state;
            Ok(ShardStep {
                sequence,
                shard,
                done: s.done,
                cursor: s.cursor,
                count: s.count,
                volumes: w.doc.volumes.len() as u64,
            })
        }
        .await;
        session.end(false).await;
        result
    }

    /// Fold the shards' documents into the checkpoint, seal the bundle, write its summaries
    /// and commit; the lease is released by the commit.
    pub async fn commit(&self, sequence: u64) -> Result<Report> {
        let session = Session::start(self.clients, self.cfg, self.owner, true).await?;
        let mut run = session.run(&NoProgress);
        run.one_process = false;
        if sequence <= session.state.sequence {
            // A retried commit whose first attempt was applied (its answer lost): its report.
            let key = format!("{}report.json", run.layout.state_prefix(sequence));
            let report = run.get_json::<Report>(&key, "run report").await;
            let location = run.layout.uri(&key);
            drop(run);
            session.end(true).await;
            return match report? {
                Some(r) if r.sequence == sequence && r.status == Status::Complete => {
                    info!(job = %self.cfg.job, sequence, "the bundle was committed already (a retried commit step)");
                    Ok(r)
                }
                _ => Err(Error::config(
                    "sequence",
                    format!(
                        "the commit step is for bundle {sequence} of job `{}`, which was committed already (its report {} is missing)",
                        self.cfg.job, location
                    ),
                )),
            };
        }
        let result = async {
            run.expect_sequence(sequence)?;
            let (ck, plan) = run.reopen_bundle(sequence).await?;
            run.commit(ck, &plan, None).await
        }
        .await;
        // A failed commit keeps the lease for the retry; the run's failure step releases it.
        session.end(false).await;
        log_outcome(self.cfg.job.as_str(), &result);
        result
    }

    /// Give the lease back after a failed run (its checkpoint stays: the next run resumes).
    pub async fn abandon(&self) -> Result<()> {
        self.clients
            .table(&self.cfg.table)
            .release(self.cfg.job.as_str(), self.owner)
            .await
    }
}
