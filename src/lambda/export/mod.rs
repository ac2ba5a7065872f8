//! The export Lambda's shell around the engine: configuration from the environment, the
//! accepted events (the state machine's steps — plan, shard, commit, failed — and direct
//! invokes: EventBridge Scheduler input, classic EventBridge envelope, manual), the deadline,
//! and the run's SNS message and CloudWatch Embedded Metric Format line (SNS and Lambda
//! through the store's `Services`).
mod event;
mod settings;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::config::{self, ExportConfig, Filters, JobName, S3Location, Tuning};
use crate::error::{Error, Result};
use crate::export::{self, NoProgress, Report, Status};
use crate::store::aws::Clients;
use crate::store::secrets::{SdkConfig, Services};

pub use event::*;
pub use settings::*;

/// The function: clients and config built once, one `handle` per invocation.
pub struct Handler {
    cfg: FunctionConfig,
    clients: Clients,
    services: Services,
}

impl Handler {
    pub fn new(cfg: FunctionConfig, sdk: &SdkConfig) -> Self {
        Handler {
            clients: Clients::new(sdk, cfg.path_style),
            services: Services::new(sdk),
            cfg,
        }
    }

    /// Handle one invocation.
    pub async fn handle(
        &self,
        event: LambdaEvent<Value>,
    ) -> std::result::Result<Value, Diagnostic> {
        let deadline = UNIX_EPOCH.checked_add(Duration::from_millis(event.context.deadline));
        let started = Instant::now();
        let event = parse_any(event.payload).map_err(|e| diagnostic(&e))?;
        if !self.cfg.steps.contains(&event.name()) {
            let e = Error::config(
                "event",
                format!(
                    "this function serves {} (FERRY_STEPS), not `{}`: invoke the function that does",
                    self.cfg.steps.join(", "),
                    event.name()
                ),
            );
            return Err(diagnostic(&e));
        }
        // This invocation's run context (a warm container serves many): its own counters and
        // stop token.
        let clients = self.clients.for_run();
        let step = match &event {
            Event::Step(s) => Some(s),
            Event::Direct(_) => None,
        };
        let result = match &event {
            Event::Step(s) => self.step(s, deadline, &clients).await,
            Event::Direct(inv) => self.direct(inv, deadline, &clients).await,
        };
        match result {
            Ok(v) => Ok(v),
            Err(Error::LeaseHeld { job, owner, until })
                if matches!(step, None | Some(StepEvent::Plan { .. })) =>
            {
                info!(
                    job,
                    owner, until, "another run holds the lease: nothing to do"
                );
                Ok(json!({"status": "lease_held", "job": job, "owner": owner, "until": until}))
            }
            Err(e) => {
                let unconfirmed = matches!(e, Error::CommitUnknown { .. });
                error!(job = %self.cfg.export.job, error = %crate::lambda::describe(&e), retryable = e.is_retryable(), commit_unconfirmed = unconfirmed, "export step failed");
                // A step's failure is the state machine's to retry; its failure step notifies
                // once the run has failed. A direct invoke notifies itself.
                if step.is_none() {
                    emf(self.cfg.export.job.as_str(), None, started.elapsed(), true);
                    self.notify_failure(&crate::lambda::describe(&e), unconfirmed)
                        .await;
                }
                Err(diagnostic(&e))
            }
        }
    }

    async fn notify_failure(&self, detail: &str, unconfirmed: bool) {
        self.notify(
            &format!("s3-ferry {}: export FAILED", self.cfg.export.job),
            &format!(
                "The export of job {} failed; {} and the next run resumes it.\n\n{detail}\n",
                self.cfg.export.job,
                if unconfirmed {
                    "whether its commit was applied could not be confirmed (`ferry status` tells)"
                } else {
                    "nothing was committed"
                },
            ),
        )
        .await;
    }

    /// One step of a run the state machine drives.
    async fn step(
        &self,
        step: &StepEvent,
        deadline: Option<SystemTime>,
        clients: &Clients,
    ) -> Result<Value> {
        let started = Instant::now();
        let mut cfg = self.export_config(clients).await?;
        cfg.deadline = working_deadline(deadline, self.cfg.deadline_margin, self.cfg.run_budget);
        let owner;
        if let StepEvent::Plan { input, .. } = step {
            cfg.full = parse_event(input.clone())?.full;
        }
        let cfg = &cfg;
        let steps = |owner| export::Steps {
            clients,
            cfg,
            owner,
        };
        match step {
            StepEvent::Plan { execution, input } => {
                let inv = parse_event(input.clone())?;
                if inv.dry_run {
                    return self.dry_run(inv.full, clients).await;
                }
                owner = run_owner(execution);
                info!(job = %cfg.job, run = %owner, full = cfg.full, trigger = inv.trigger.as_deref().unwrap_or("-"), "plan step");
                let planned = steps(&owner).plan().await?;
                if let export::PlanStep::Finished { report } = &planned {
                    emf(cfg.job.as_str(), Some(report), started.elapsed(), false);
                    self.audit(clients, Ok(report)).await;
                }
                Ok(serde_json::to_value(&planned).expect("plan step serialises"))
            }
            StepEvent::Shard {
                execution,
                sequence,
                shard,
            } => {
                owner = run_owner(execution);
                let s = steps(&owner).shard(*sequence, *shard).await?;
                info!(job = %cfg.job, run = %owner, sequence, shard, done = s.done, cursor = s.cursor, count = s.count, "shard step");
                Ok(serde_json::to_value(&s).expect("shard step serialises"))
            }
            StepEvent::Commit {
                execution,
                sequence,
            } => {
                owner = run_owner(execution);
                let report = steps(&owner).commit(*sequence).await?;
                emf(cfg.job.as_str(), Some(&report), started.elapsed(), false);
                self.audit(clients, Ok(&report)).await;
                self.notify(
                    &format!("s3-ferry {}: bundle {} ready", cfg.job, report.sequence),
                    &completion_message(cfg, &report),
                )
                .await;
                Ok(serde_json::to_value(&report).expect("report serialises"))
            }
            StepEvent::Failed { execution, error } => {
                owner = run_owner(execution);
                steps(&owner).abandon().await?;
                let text = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or("-");
                let (name, cause) = (text("Error"), text("Cause"));
                // A Lambda error's cause is its JSON error object: show its message.
                let cause = serde_json::from_str::<Value>(cause)
                    .ok()
                    .and_then(|c| {
                        c.get("errorMessage")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| cause.to_string());
                error!(job = %cfg.job, run = %owner, error = name, cause = %cause, "export run failed");
                emf(cfg.job.as_str(), None, started.elapsed(), true);
                self.audit(clients, Err(format!("{name}: {cause}"))).await;
                self.notify_failure(&format!("{name}: {cause}"), name == "CommitUnknown")
                    .await;
                Ok(json!({"status": "failed", "error": name, "cause": cause}))
            }
        }
    }

    /// The export's settings for this invocation, with its policy (`POLICY`).
    async fn export_config(&self, clients: &Clients) -> Result<ExportConfig> {
        let mut cfg = self.cfg.export.clone();
        if let Some(spec) = &self.cfg.policy {
            cfg.policy = Some(spec.load(&clients.s3).await?);
        }
        Ok(cfg)
    }

    async fn dry_run(&self, full: bool, clients: &Clients) -> Result<Value> {
        let mut cfg = self.export_config(clients).await?;
        cfg.full = full;
        let (state, plan, volumes) = export::plan_only(clients, &cfg).await?;
        Ok(
            json!({"status": "dry_run", "last_sequence": state.sequence, "plan": plan.stats, "volumes": volumes}),
        )
    }

    /// A direct invoke: the whole export in this invocation (shards in parallel), up to its
    /// deadline; an unfinished bundle is resumed by the next run.
    async fn direct(
        &self,
        inv: &Invocation,
        deadline: Option<SystemTime>,
        clients: &Clients,
    ) -> Result<Value> {
        if inv.dry_run {
            return self.dry_run(inv.full, clients).await;
        }
        let mut cfg = self.export_config(clients).await?;
        cfg.full = inv.full;
        cfg.deadline = working_deadline(deadline, self.cfg.deadline_margin, self.cfg.run_budget);
        let started = Instant::now();
        let report = match export::run(clients, &cfg, &NoProgress).await {
            Ok(r) => r,
            Err(e) => {
                self.audit(clients, Err(crate::lambda::describe(&e))).await;
                return Err(e);
            }
        };
        emf(cfg.job.as_str(), Some(&report), started.elapsed(), false);
        self.audit(clients, Ok(&report)).await;
        match report.status {
            Status::Continue => warn!(job = %cfg.job, sequence = report.sequence,
                "the bundle is unfinished at the deadline: the next run (the state machine, or another invoke) resumes it"),
            Status::Complete => {
                self.notify(
                    &format!("s3-ferry {}: bundle {} ready", cfg.job, report.sequence),
                    &completion_message(&cfg, &report),
                )
                .await
            }
            Status::NoChanges => {}
        }
        Ok(serde_json::to_value(&report).expect("report serialises"))
    }

    /// Write the audit line of a run's end (`AUDIT_PREFIX`): its report, or why it failed. A
    /// line that cannot be written is logged as an error (the bundle's fate is settled).
    async fn audit(&self, clients: &Clients, outcome: std::result::Result<&Report, String>) {
        let Some(at) = &self.cfg.audit else {
            return;
        };
        let who = crate::lambda::audit::who(clients).await;
        let job = self.cfg.export.job.as_str();
        let event = match outcome {
            Ok(r) => crate::audit::events::export(&who, r),
            Err(why) => {
                let mut e = crate::audit::Event::new("export", &who);
                e.job = Some(job.to_string());
                e.outcome = "failed".into();
                e.reason = Some(why);
                e
            }
        };
        if let Err(e) = crate::lambda::audit::write(clients, at, "export", job, &[event]).await {
            error!(job, error = %crate::lambda::describe(&e), "the audit line was not written");
        }
    }

    async fn notify(&self, subject: &str, message: &str) {
        self.services
            .publish(self.cfg.topic_arn.as_deref(), subject, message)
            .await
    }
}

/// Where a run that needs more time goes on: a new asynchronous invocation of the function,
/// or, after `max` invocations, a warning and a notification (the next run picks it up).
pub(crate) struct Hops<'a> {
    pub services: &'a Services,
    pub topic: Option<&'a str>,
    pub function: &'a str,
    pub max: u32,
}

impl Hops<'_> {
    /// After invocation `hop` of the work `what`: invoke again with `payload`, or stop at `max`.
    pub(crate) async fn next(&self, hop: u32, payload: Vec<u8>, what: &str) -> Result<()> {
        if hop >= self.max {
            let msg = format!(
                "{what} still unfinished after {hop} invocations (MAX_HOPS): the next scheduled run continues it"
            );
            warn!("{msg}");
            let subject = format!("s3-ferry: {what} needs more time");
            self.services.publish(self.topic, &subject, &msg).await;
            Ok(())
        } else {
            info!(function = %self.function, hop = hop + 1, "continuing the {what} in a new invocation");
            self.services.invoke_async(self.function, payload).await
        }
    }
}

/// The SNS message of a completed bundle: where it is, its volumes, counts, and the command
/// that downloads it.
pub fn completion_message(cfg: &ExportConfig, r: &Report) -> String {
    let mut m = format!(
        "Bundle {} of job {} is ready{}.\n\nLocation: {}\nObjects: {} ({} bytes)\nDeleted: {}  Moved: {}  Skipped: {}  Vanished: {}\nDigest: {}\n\nVolumes:\n",
        r.sequence,
        r.job,
        if r.baseline { " (baseline)" } else { "" },
        r.bundle.as_deref().unwrap_or("-"),
        r.objects,
        r.bytes,
        r.deleted,
        r.moved,
        r.skipped,
        r.vanished,
        r.bundle_digest.as_deref().unwrap_or("-"),
    );
    for v in &r.volume_details {
        m.push_str(&format!(
            "  {}  {} bytes  sha256 {}\n",
            v.name, v.size, v.sha256
        ));
    }
    for s in &r.skipped_objects {
        m.push_str(&format!("Skipped {}: {}\n", s.key, s.reason));
    }
    if r.withheld > 0 {
        // Counts only: a withheld object's key may itself be what the policy keeps here.
        m.push_str(&format!(
            "Withheld by the policy: {} objects, listed with the rule each breaks in the run's report (`withheld_objects` in _state/{}/{:08}/report.json under the export prefix).\n",
            r.withheld, r.job, r.sequence
        ));
    }
    if r.own_output > 0 {
        m.push_str(&format!(
            "Left out {} objects under {}: the export's own output is never exported.\n",
            r.own_output,
            r.own_output_prefixes.join(", ")
        ));
    }
    m.push_str(&format!(
        "\nDownload it with:\n  ferry download --from {} --job {} --sequence {} --to ./bundle-{}\n",
        cfg.dest, r.job, r.sequence, r.sequence
    ));
    m
}

/// One CloudWatch Embedded Metric Format line on stdout.
fn emf(job: &str, r: Option<&Report>, took: Duration, failed: bool) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let n = |f: fn(&Report) -> u64| r.map_or(0, f);
    let line = json!({
        "_aws": {
            "Timestamp": ms,
            "CloudWatchMetrics": [{
                "Namespace": "s3-ferry",
                "Dimensions": [["Job"]],
                "Metrics": [
                    {"Name": "Objects", "Unit": "Count"},
                    {"Name": "Bytes", "Unit": "Bytes"},
                    {"Name": "Volumes", "Unit": "Count"},
                    {"Name": "Duration", "Unit": "Milliseconds"},
                    {"Name": "Deleted", "Unit": "Count"},
                    {"Name": "Skipped", "Unit": "Count"},
                    {"Name": "Failed", "Unit": "Count"}
                ]
            }]
        },
        "Job": job,
        "Objects": n(|r| r.objects),
        "Bytes": n(|r| r.bytes),
        "Volumes": n(|r| r.volumes.len() as u64),
        "Duration": took.as_millis() as u64,
        "Deleted": n(|r| r.deleted),
        "Skipped": n(|r| r.skipped),
        "Withheld": n(|r| r.withheld),
        "Failed": u64::from(failed),
        "Status": r.map_or("failed".to_string(), |r| format!("{:?}", r.status).to_lowercase()),
    });
    println!("{line}");
}

#[cfg(test)]
mod tests;
