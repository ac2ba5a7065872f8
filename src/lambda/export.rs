//! The export Lambda's shell around the engine: configuration from the environment, the
//! accepted events (the state machine's steps — plan, shard, commit, failed — and direct
//! invokes: EventBridge Scheduler input, classic EventBridge envelope, manual), the deadline,
//! and the run's SNS message and CloudWatch Embedded Metric Format line. The SDKs of SNS and
//! Lambda appear only here.

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

/// Default time kept free before the Lambda deadline to close the volume and checkpoint.
pub const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_secs(90);
/// Default cap on continuation hops of one bundle.
pub const DEFAULT_MAX_HOPS: u32 = 50;

/// The function's configuration, parsed once at cold start.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub export: ExportConfig,
    pub topic_arn: Option<String>,
    pub deadline_margin: Duration,
    /// Optional cap on one invocation's working time (forces short hops, e.g. in tests).
    pub run_budget: Option<Duration>,
    /// The events this function serves (`FERRY_STEPS`: plan, shard, commit, failed, direct;
    /// all when unset). A function given fewer permissions serves fewer steps.
    pub steps: Vec<&'static str>,
    pub path_style: bool,
}

fn list(v: Option<String>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

impl FunctionConfig {
    /// Read the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Parse from a variable lookup; every error names the variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let v = Vars(get);
        let job: JobName = v
            .required("FERRY_JOB")?
            .parse()
            .map_err(|e| named("FERRY_JOB", e))?;
        let mut export = ExportConfig::new(
            job,
            v.location("SOURCE_BUCKET", "SOURCE_PREFIX")?,
            v.location("EXPORT_BUCKET", "EXPORT_PREFIX")?,
            v.required("STATE_TABLE")?,
        );
        export.filters = Filters::new(
            &list(v.get("INCLUDE")),
            &list(v.get("EXCLUDE")),
            v.size("MIN_SIZE")?,
            v.size("MAX_SIZE")?,
        )
        .map_err(|e| named("INCLUDE/EXCLUDE/MIN_SIZE/MAX_SIZE", e))?;
        export.moves = match v.get("MOVES").as_deref() {
            None | Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => {
                return Err(Error::config(
                    "MOVES",
                    format!("`{other}` (use true, or false to ship a rename's bytes instead)"),
                ));
            }
        };
        let defaults = Tuning::default();
        export.tuning = Tuning {
            volume_size: v.size("VOLUME_SIZE")?.unwrap_or(defaults.volume_size),
            volume_entries: v
                .number("VOLUME_ENTRIES")?
                .unwrap_or(defaults.volume_entries),
            part_size: v.size("PART_SIZE")?.unwrap_or(defaults.part_size),
            concurrency: v
                .number("CONCURRENCY")?
                .map_or(defaults.concurrency, |n| n as usize),
            compression: match v.get("COMPRESSION") {
                Some(c) => c.parse().map_err(|e| named("COMPRESSION", e))?,
                None => defaults.compression,
            },
            list_ranges: v
                .number("LIST_RANGES")?
                .map_or(defaults.list_ranges, |n| n as usize),
            shards: v.number("SHARDS")?.map_or(defaults.shards, |n| n as usize),
        };
        export.tuning.validate()?;
        export.signing = v
            .get("SIGNING_KEY_ID")
            .map(crate::format::sign::SigningKeySpec::Kms);
        export.encrypt_to = match v.get("AGE_RECIPIENTS") {
            Some(r) => crate::format::seal::Recipients::from_env(&r)?,
            None => None,
        };
        if let Some(ttl) = v.duration("LEASE_TTL")? {
            export.lease_ttl = config::bounds::lease_ttl("LEASE_TTL", ttl)?;
        }
        Ok(FunctionConfig {
            export,
            topic_arn: v.get("NOTIFY_TOPIC_ARN"),
            deadline_margin: v
                .duration("DEADLINE_MARGIN")?
                .unwrap_or(DEFAULT_DEADLINE_MARGIN),
            run_budget: v.duration("RUN_BUDGET")?,
            steps: match v.get("FERRY_STEPS") {
                None => STEP_NAMES.to_vec(),
                Some(given) => list(Some(given))
                    .iter()
                    .map(|s| {
                        STEP_NAMES.iter().copied().find(|n| n == s).ok_or_else(|| {
                            Error::config(
                                "FERRY_STEPS",
                                format!("`{s}` is not one of {}", STEP_NAMES.join(", ")),
                            )
                        })
                    })
                    .collect::<Result<_>>()?,
            },
            path_style: v.flag("FERRY_S3_PATH_STYLE"),
        })
    }
}

/// Typed reads of configuration variables through a lookup; every error names the variable.
pub(crate) struct Vars<F: Fn(&str) -> Option<String>>(pub F);

/// Re-label a config error with the variable it came from.
pub(crate) fn named(k: &'static str, e: Error) -> Error {
    match e {
        Error::Config { detail, .. } => Error::config(k, detail),
        other => other,
    }
}

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    pub fn get(&self, k: &str) -> Option<String> {
        (self.0)(k)
    }
    pub fn required(&self, k: &str) -> Result<String> {
        self.get(k)
            .ok_or_else(|| Error::config(k, "is not set (see the README's table of variables)"))
    }
    /// `s3://$BUCKET/$PREFIX`.
    pub fn location(&self, bucket: &'static str, prefix: &'static str) -> Result<S3Location> {
        let uri = format!(
            "s3://{}/{}",
            self.required(bucket)?,
            self.get(prefix).unwrap_or_default()
        );
        uri.parse().map_err(|e| named(bucket, e))
    }
    pub fn size(&self, k: &'static str) -> Result<Option<u64>> {
        self.get(k).map(|v| config::parse_size(k, &v)).transpose()
    }
    pub fn number(&self, k: &'static str) -> Result<Option<u64>> {
        self.get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|e| Error::config(k, format!("`{v}`: {e}")))
            })
            .transpose()
    }
    pub fn duration(&self, k: &'static str) -> Result<Option<Duration>> {
        self.get(k)
            .map(|v| config::parse_duration(k, &v))
            .transpose()
    }
    pub fn flag(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| v == "true" || v == "1")
    }
}

/// What an invocation asks for. Unknown fields are an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invocation {
    /// Take a new baseline.
    #[serde(default)]
    pub full: bool,
    /// Plan only; write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Free-form label set by the schedule's input (e.g. "schedule").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Set by earlier versions when the function re-invoked itself to continue a bundle; now
    /// a direct run like any other (it resumes the bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<Continuation>,
}

/// One step of an export run driven by the state machine (`statemachine/export.asl.json`).
/// `execution` is the execution's name: the run's name (and lease owner) in every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepEvent {
    /// Plan the bundle (or resume it) and write the shard list; `input` is the execution's
    /// input (the schedule's, or a manual start's: `{"full": true}`, `{"dry_run": true}`).
    Plan {
        execution: String,
        #[serde(default)]
        input: Value,
    },
    /// Ship one shard until it is done or the deadline comes.
    Shard {
        execution: String,
        sequence: u64,
        shard: usize,
    },
    /// Seal and commit the bundle, then notify.
    Commit { execution: String, sequence: u64 },
    /// The run failed (`error`: the state machine's `{"Error", "Cause"}`): release the lease
    /// and notify. The checkpoint stays; the next run resumes the bundle.
    Failed {
        execution: String,
        #[serde(default)]
        error: Value,
    },
}

/// What the function was invoked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Step(StepEvent),
    /// A direct invoke: the whole export in this invocation, up to its deadline.
    Direct(Invocation),
}

/// The kinds of event the function serves (`FERRY_STEPS`).
pub const STEP_NAMES: [&str; 5] = ["plan", "shard", "commit", "failed", "direct"];

impl Event {
    /// Its name in `FERRY_STEPS`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Step(StepEvent::Plan { .. }) => "plan",
            Event::Step(StepEvent::Shard { .. }) => "shard",
            Event::Step(StepEvent::Commit { .. }) => "commit",
            Event::Step(StepEvent::Failed { .. }) => "failed",
            Event::Direct(_) => "direct",
        }
    }
}

/// The lease owner of the run an execution drives.
pub fn run_owner(execution: &str) -> String {
    format!("sfn-{execution}")
}

/// A bundle being continued by a later invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Continuation {
    pub sequence: u64,
    pub hop: u32,
}

/// A state machine step (an object with `step`), or a direct invoke (see [`parse_invocation`]).
pub fn parse_any(event: Value) -> Result<Event> {
    if let Value::Object(m) = &event
        && m.contains_key("step")
    {
        return serde_json::from_value(event).map(Event::Step).map_err(|e| {
            Error::config(
                "event",
                format!("{e} (steps: plan {{execution, input}}, shard {{execution, sequence, shard}}, commit {{execution, sequence}}, failed {{execution, error}})"),
            )
        });
    }
    parse_event(event).map(Event::Direct)
}

/// Accept the EventBridge Scheduler input (SAM `ScheduleV2`: our JSON as is), the classic
/// EventBridge envelope (SAM `Schedule`: our JSON, if any, in `detail`) and manual invokes.
pub fn parse_event(event: Value) -> Result<Invocation> {
    let bad = |e: serde_json::Error| {
        Error::config(
            "event",
            format!("{e} (accepted fields: full, dry_run, trigger, continuation)"),
        )
    };
    let payload = match event {
        Value::Object(ref m) if m.contains_key("detail-type") && m.contains_key("source") => {
            match m.get("detail") {
                Some(Value::Object(d)) if !d.is_empty() => Value::Object(d.clone()),
                _ => Value::Object(Default::default()),
            }
        }
        Value::Null => Value::Object(Default::default()),
        other => other,
    };
    serde_json::from_value(payload).map_err(bad)
}

/// The working deadline: the invocation's deadline less the margin, or the run budget, whichever
/// comes first. A deadline already in the past (local emulators send a fake one) is ignored.
pub fn working_deadline(
    invocation_deadline: Option<SystemTime>,
    margin: Duration,
    budget: Option<Duration>,
) -> Option<Instant> {
    let now = Instant::now();
    let from_lambda = invocation_deadline.and_then(|d| match d.duration_since(SystemTime::now()) {
        Ok(left) if left > margin => Some(now + (left - margin)),
        Ok(left) => {
            warn!(
                left_ms = left.as_millis() as u64,
                "less time left than the margin: one unit of work only"
            );
            Some(now)
        }
        Err(_) => {
            warn!("the invocation deadline is in the past (local emulator?): ignoring it");
            None
        }
    });
    let from_budget = budget.map(|b| now + b);
    match (from_lambda, from_budget) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Lambda error classes: the function's errors carry one of these as `errorType`.
pub(crate) fn diagnostic(e: &Error) -> Diagnostic {
    Diagnostic {
        error_type: if e.is_retryable() {
            "Retryable"
        } else {
            "Fatal"
        }
        .to_string(),
        error_message: crate::error_chain(e),
    }
}

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
        let step = match &event {
            Event::Step(s) => Some(s),
            Event::Direct(_) => None,
        };
        let result = match &event {
            Event::Step(s) => self.step(s, deadline).await,
            Event::Direct(inv) => self.direct(inv, deadline).await,
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
                error!(job = %self.cfg.export.job, error = %crate::error_chain(&e), retryable = e.is_retryable(), commit_unconfirmed = unconfirmed, "export step failed");
                // A step's failure is the state machine's to retry; its failure step notifies
                // once the run has failed. A direct invoke notifies itself.
                if step.is_none() {
                    emf(self.cfg.export.job.as_str(), None, started.elapsed(), true);
                    self.notify_failure(&crate::error_chain(&e), unconfirmed)
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
    async fn step(&self, step: &StepEvent, deadline: Option<SystemTime>) -> Result<Value> {
        let started = Instant::now();
        let mut cfg = self.cfg.export.clone();
        cfg.deadline = working_deadline(deadline, self.cfg.deadline_margin, self.cfg.run_budget);
        let owner;
        if let StepEvent::Plan { input, .. } = step {
            cfg.full = parse_event(input.clone())?.full;
        }
        let cfg = &cfg;
        let steps = |owner| export::Steps {
            clients: &self.clients,
            cfg,
            owner,
        };
        match step {
            StepEvent::Plan { execution, input } => {
                let inv = parse_event(input.clone())?;
                if inv.dry_run {
                    return self.dry_run(inv.full).await;
                }
                owner = run_owner(execution);
                info!(job = %cfg.job, run = %owner, full = cfg.full, trigger = inv.trigger.as_deref().unwrap_or("-"), "plan step");
                let planned = steps(&owner).plan().await?;
                if let export::PlanStep::Finished { report } = &planned {
                    emf(cfg.job.as_str(), Some(report), started.elapsed(), false);
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
                self.notify_failure(&format!("{name}: {cause}"), name == "CommitUnknown")
                    .await;
                Ok(json!({"status": "failed", "error": name, "cause": cause}))
            }
        }
    }

    async fn dry_run(&self, full: bool) -> Result<Value> {
        let mut cfg = self.cfg.export.clone();
        cfg.full = full;
        let (state, plan, volumes) = export::plan_only(&self.clients, &cfg).await?;
        Ok(
            json!({"status": "dry_run", "last_sequence": state.sequence, "plan": plan.stats, "volumes": volumes}),
        )
    }

    /// A direct invoke: the whole export in this invocation (shards in parallel), up to its
    /// deadline; an unfinished bundle is resumed by the next run.
    async fn direct(&self, inv: &Invocation, deadline: Option<SystemTime>) -> Result<Value> {
        if inv.dry_run {
            return self.dry_run(inv.full).await;
        }
        let mut cfg = self.cfg.export.clone();
        cfg.full = inv.full;
        cfg.deadline = working_deadline(deadline, self.cfg.deadline_margin, self.cfg.run_budget);
        let started = Instant::now();
        let report = export::run(&self.clients, &cfg, &NoProgress).await?;
        emf(cfg.job.as_str(), Some(&report), started.elapsed(), false);
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
        "Failed": u64::from(failed),
        "Status": r.map_or("failed".to_string(), |r| format!("{:?}", r.status).to_lowercase()),
    });
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("FERRY_JOB", "monthly"),
        ("SOURCE_BUCKET", "src-bucket"),
        ("SOURCE_PREFIX", "data"),
        ("EXPORT_BUCKET", "exp-bucket"),
        ("STATE_TABLE", "state"),
    ];

    #[test]
    fn config_from_env_and_errors_name_the_variable() {
        let c = FunctionConfig::from_lookup(env(BASE)).unwrap();
        assert_eq!(c.export.source.prefix, "data/");
        assert_eq!(c.export.dest.prefix, "");
        assert_eq!(c.deadline_margin, DEFAULT_DEADLINE_MARGIN);
        let mut bad = BASE.to_vec();
        bad.push(("VOLUME_SIZE", "lots"));
        let e = FunctionConfig::from_lookup(env(&bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("VOLUME_SIZE"), "{e}");
        let e = FunctionConfig::from_lookup(env(&BASE[1..]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("FERRY_JOB"), "{e}");
        let mut shard = BASE.to_vec();
        shard.push(("FERRY_STEPS", "shard"));
        assert_eq!(
            FunctionConfig::from_lookup(env(&shard)).unwrap().steps,
            vec!["shard"]
        );
        let mut bad = BASE.to_vec();
        bad.push(("FERRY_STEPS", "shard,ship"));
        let e = FunctionConfig::from_lookup(env(&bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("FERRY_STEPS") && e.contains("ship"), "{e}");
        let mut bad = BASE.to_vec();
        bad.push(("CONCURRENCY", "-1"));
        assert!(
            FunctionConfig::from_lookup(env(&bad))
                .unwrap_err()
                .to_string()
                .contains("CONCURRENCY")
        );
    }

    #[test]
    fn the_function_sets_what_the_cli_sets() {
        let c = FunctionConfig::from_lookup(env(BASE)).unwrap();
        assert!(c.export.moves);
        assert_eq!(c.export.tuning.compression, config::Compression::Stored);
        let mut all = BASE.to_vec();
        all.extend([
            ("MIN_SIZE", "1KiB"),
            ("MAX_SIZE", "2GiB"),
            ("MOVES", "false"),
            ("COMPRESSION", "deflate"),
        ]);
        let c = FunctionConfig::from_lookup(env(&all)).unwrap();
        assert!(!c.export.moves);
        assert_eq!(c.export.tuning.compression, config::Compression::Deflate);
        assert_eq!(
            (c.export.filters.min_size, c.export.filters.max_size),
            (Some(1024), Some(2 << 30))
        );
        for (k, v) in [
            ("MOVES", "maybe"),
            ("COMPRESSION", "zstd"),
            ("MIN_SIZE", "big"),
        ] {
            let mut bad = BASE.to_vec();
            bad.push((k, v));
            let e = FunctionConfig::from_lookup(env(&bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains(k), "{k}: {e}");
        }
    }

    #[test]
    fn events_of_every_kind_are_accepted_and_unknown_fields_refused() {
        assert_eq!(
            parse_event(json!({"trigger": "schedule"}))
                .unwrap()
                .trigger
                .as_deref(),
            Some("schedule")
        );
        let envelope = json!({"version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "1", "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [], "detail": {}});
        assert_eq!(parse_event(envelope).unwrap(), Invocation::default());
        assert!(parse_event(json!({"full": true})).unwrap().full);
        assert!(parse_event(json!({"dry_run": true})).unwrap().dry_run);
        let c = parse_event(json!({"continuation": {"sequence": 3, "hop": 2}})).unwrap();
        assert_eq!(
            c.continuation,
            Some(Continuation {
                sequence: 3,
                hop: 2
            })
        );
        let e = parse_event(json!({"ful": true})).unwrap_err().to_string();
        assert!(e.contains("ful"), "{e}");
    }

    #[test]
    fn state_machine_steps_are_parsed_and_checked() {
        let e =
            parse_any(json!({"step": "plan", "execution": "x1", "input": {"full": true}})).unwrap();
        assert_eq!(
            e,
            Event::Step(StepEvent::Plan {
                execution: "x1".into(),
                input: json!({"full": true})
            })
        );
        let e = parse_any(json!({"step": "shard", "execution": "x1", "sequence": 3, "shard": 7}))
            .unwrap();
        assert_eq!(
            e,
            Event::Step(StepEvent::Shard {
                execution: "x1".into(),
                sequence: 3,
                shard: 7
            })
        );
        let e = parse_any(json!({"step": "shard", "execution": "x1", "sequence": 3}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("shard"), "{e}");
        let e = parse_any(json!({"step": "ship", "execution": "x1"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ship"), "{e}");
        let e = parse_any(json!({"step": "commit", "execution": "x1", "sequence": 1, "extra": 1}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("extra"), "{e}");
        assert_eq!(
            parse_any(json!({"trigger": "schedule"})).unwrap(),
            Event::Direct(Invocation {
                trigger: Some("schedule".into()),
                ..Invocation::default()
            })
        );
    }

    #[test]
    fn past_deadlines_are_ignored_and_budgets_apply() {
        let past = UNIX_EPOCH + Duration::from_millis(600_000);
        assert!(working_deadline(Some(past), Duration::from_secs(60), None).is_none());
        let soon =
            working_deadline(Some(past), Duration::from_secs(60), Some(Duration::ZERO)).unwrap();
        assert!(soon <= Instant::now());
        let future = SystemTime::now() + Duration::from_secs(900);
        let d = working_deadline(Some(future), Duration::from_secs(60), None).unwrap();
        let left = d - Instant::now();
        assert!(left > Duration::from_secs(830) && left <= Duration::from_secs(840));
    }
}
