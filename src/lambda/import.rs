//! The import Lambda's shell (the far side, when it is also AWS): configuration from the
//! environment, the accepted events (S3 "Object Created" through EventBridge, S3 notifications,
//! a schedule sweep, manual invokes, continuations), finding the bundles in the import bucket
//! that are complete (`SHA256SUMS` and every volume it lists present) and follow the last one
//! applied, importing them with the invocation's deadline, re-invoking itself to continue, and
//! the run's SNS message.

use std::time::{Duration, Instant, UNIX_EPOCH};

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{Value, json};
use tracing::{error, info};

use crate::config::{self, JobName, S3Location};
use crate::error::{Error, Result};
use crate::import::bundle::{self, Bundle};
use crate::import::ledger::{Ledger, Record, TableLedger};
use crate::import::target::Bucket;
use crate::import::{self, BundleStatus, ImportConfig, ImportReport};
use crate::lambda::export::{
    DEFAULT_DEADLINE_MARGIN, DEFAULT_MAX_HOPS, Hops, Vars, diagnostic, named, working_deadline,
};
use crate::progress::NoProgress;
use crate::store::aws::Clients;
use crate::store::secrets::{SdkConfig, Services};

/// Default lease of the import state (longer than one invocation may run).
pub const DEFAULT_IMPORT_LEASE: Duration = Duration::from_secs(20 * 60);

/// The import function's configuration, parsed once at cold start.
#[derive(Debug, Clone)]
pub struct ImportFunctionConfig {
    pub job: JobName,
    /// Where operators upload carried bundles.
    pub import: S3Location,
    /// The bucket (and prefix) the bundles are replayed into.
    pub dest: S3Location,
    pub table: String,
    pub topic_arn: Option<String>,
    pub concurrency: usize,
    pub part_size: u64,
    pub deadline_margin: Duration,
    pub max_hops: u32,
    pub run_budget: Option<Duration>,
    pub lease_ttl: Duration,
    pub path_style: bool,
    /// Public keys whose signatures are accepted (`TRUSTED_KEYS`).
    pub trust: Vec<crate::format::sign::TrustedKey>,
    /// The Secrets Manager secret (name or ARN) holding the age identity that opens sealed
    /// volumes (`AGE_IDENTITY_SECRET`); never the identity itself.
    pub identity_secret: Option<String>,
    /// A baseline removes everything under the destination it does not list, not only what
    /// ferry wrote there (`DELETE_UNLISTED`, default false).
    pub delete_unlisted: bool,
    /// Encryption and storage class of what is written (`SSE`, `SSE_KMS_KEY_ID`, `BUCKET_KEY`,
    /// `STORAGE_CLASS`; default: the destination bucket's).
    pub placement: crate::store::Placement,
    /// `OBJECT_LOCK=skip`: import locked objects without their lock (otherwise a destination
    /// without Object Lock refuses them).
    pub skip_object_lock: bool,
    /// The far side's own content policy (`POLICY`: inline TOML or `s3://BUCKET/KEY`).
    pub policy: Option<crate::lambda::policy::PolicySpec>,
    /// Where what the policy keeps out goes (`QUARANTINE`, `s3://BUCKET/PREFIX`); without it
    /// it is not written anywhere. (A scanner needs a binary the Lambda runtime does not
    /// have: `ferry import --scan` runs one.)
    pub quarantine: Option<crate::config::S3Location>,
    /// The approvals every bundle needs (`REQUIRED_APPROVALS` of the public keys in
    /// `APPROVERS`, PEM or base64 DER as `TRUSTED_KEYS`); the import state remembers it.
    pub approvals: Option<crate::approval::Requirement>,
    /// Where each invocation writes its audit lines (`AUDIT_PREFIX`: `s3://BUCKET/PREFIX`, or
    /// a prefix in the import bucket).
    pub audit: Option<S3Location>,
}

impl ImportFunctionConfig {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Parse from a variable lookup; every error names the variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let v = Vars(get);
        let import = v.location("IMPORT_BUCKET", "IMPORT_PREFIX")?;
        let approvals = match (v.number("REQUIRED_APPROVALS")?, v.get("APPROVERS")) {
            (None | Some(0), None) => None,
            (n, keys) => {
                let keys = match keys {
                    Some(text) => crate::format::sign::TrustedKey::parse_list(&text)
                        .map_err(|e| named("APPROVERS", e))?,
                    None => Vec::new(),
                };
                Some(
                    crate::approval::Requirement::new(n.unwrap_or(0) as u32, keys)
                        .map_err(|e| named("REQUIRED_APPROVALS", e))?,
                )
            }
        };
        Ok(ImportFunctionConfig {
            audit: crate::lambda::audit::location(v.get("AUDIT_PREFIX"), &import.bucket)?,
            approvals,
            job: v
                .required("FERRY_JOB")?
                .parse()
                .map_err(|e| named("FERRY_JOB", e))?,
            import,
            dest: v.location("DEST_BUCKET", "DEST_PREFIX")?,
            table: v.required("STATE_TABLE")?,
            topic_arn: v.get("NOTIFY_TOPIC_ARN"),
            concurrency: config::bounds::concurrency(
                "CONCURRENCY",
                v.number("CONCURRENCY")?.map_or(16, |n| n as usize),
            )?,
            part_size: config::bounds::part_size(
                "PART_SIZE",
                v.size("PART_SIZE")?.unwrap_or(config::DEFAULT_PART_SIZE),
            )?,
            deadline_margin: v
                .duration("DEADLINE_MARGIN")?
                .unwrap_or(DEFAULT_DEADLINE_MARGIN),
            max_hops: v.number("MAX_HOPS")?.map_or(DEFAULT_MAX_HOPS, |n| n as u32),
            run_budget: v.duration("RUN_BUDGET")?,
            lease_ttl: config::bounds::lease_ttl(
                "LEASE_TTL",
                v.duration("LEASE_TTL")?.unwrap_or(DEFAULT_IMPORT_LEASE),
            )?,
            path_style: v.flag("FERRY_S3_PATH_STYLE"),
            trust: match v.get("TRUSTED_KEYS") {
                Some(text) => crate::format::sign::TrustedKey::parse_list(&text)
                    .map_err(|e| named("TRUSTED_KEYS", e))?,
                None => Vec::new(),
            },
            identity_secret: v.get("AGE_IDENTITY_SECRET"),
            delete_unlisted: v.flag("DELETE_UNLISTED"),
            placement: crate::store::Placement::parse(
                v.get("SSE").as_deref(),
                v.get("SSE_KMS_KEY_ID").as_deref(),
                v.flag("BUCKET_KEY"),
                v.get("STORAGE_CLASS").as_deref(),
                ["SSE", "SSE_KMS_KEY_ID", "BUCKET_KEY", "STORAGE_CLASS"],
            )?,
            policy: crate::lambda::policy::PolicySpec::parse(v.get("POLICY").as_deref())
                .map_err(|e| named("POLICY", e))?,
            quarantine: match (v.get("QUARANTINE"), v.get("POLICY")) {
                (Some(_), None) => {
                    return Err(Error::config(
                        "QUARANTINE",
                        "it needs POLICY to decide what goes there",
                    ));
                }
                (q, _) => q
                    .map(|q| q.parse().map_err(|e| named("QUARANTINE", e)))
                    .transpose()?,
            },
            skip_object_lock: match v.get("OBJECT_LOCK").as_deref() {
                None | Some("apply") => false,
                Some("skip") => true,
                Some(other) => {
                    return Err(Error::config(
                        "OBJECT_LOCK",
                        format!("`{other}`: use apply or skip"),
                    ));
                }
            },
        })
    }
}

/// The continuation hop an event carries (1 for every outside trigger), and the key that
/// triggered it, if any (for the log).
pub fn parse_event(event: &Value) -> (u32, Option<String>) {
    let hop = event
        .pointer("/continuation/hop")
        .and_then(Value::as_u64)
        .map_or(1, |h| h as u32);
    let key = event
        .pointer("/detail/object/key")
        .or_else(|| event.pointer("/Records/0/s3/object/key"))
        .and_then(Value::as_str)
        .map(str::to_string);
    (hop, key)
}

/// The function: clients and config built once.
pub struct ImportHandler {
    cfg: ImportFunctionConfig,
    clients: Clients,
    services: Services,
    /// The age identity, read from the secret on first need and kept for the container's life.
    identities: tokio::sync::OnceCell<Option<crate::format::seal::Identities>>,
    function_name: String,
}

impl ImportHandler {
    pub fn new(cfg: ImportFunctionConfig, sdk: &SdkConfig, function_name: String) -> Self {
        ImportHandler {
            clients: Clients::new(sdk, cfg.path_style),
            services: Services::new(sdk),
            identities: tokio::sync::OnceCell::new(),
            cfg,
            function_name,
        }
    }

    pub async fn handle(
        &self,
        event: LambdaEvent<Value>,
    ) -> std::result::Result<Value, Diagnostic> {
        let deadline = UNIX_EPOCH.checked_add(Duration::from_millis(event.context.deadline));
        let (hop, key) = parse_event(&event.payload);
        info!(job = %self.cfg.job, hop, trigger_key = key.as_deref().unwrap_or("-"), "import invoked");
        let working = working_deadline(deadline, self.cfg.deadline_margin, self.cfg.run_budget);
        match self.run(hop, working).await {
            Ok(v) => Ok(v),
            Err(Error::LeaseHeld { job, owner, until }) => {
                info!(
                    job,
                    owner, until, "another invocation is importing: nothing to do"
                );
                Ok(json!({"status": "lease_held", "owner": owner, "until": until}))
            }
            Err(e) => {
                error!(job = %self.cfg.job, error = %crate::lambda::describe(&e), "import failed; the destination's state is unchanged");
                self.notify(
                    &format!("s3-ferry {}: import FAILED", self.cfg.job),
                    &format!(
                        "Importing job {} into {} failed. No bundle was recorded as applied; objects already verified and written stay. Fix the cause and upload again or wait for the next sweep.\n\n{}\n",
                        self.cfg.job,
                        self.cfg.dest,
                        crate::lambda::describe(&e)
                    ),
                )
                .await;
                Err(diagnostic(&e))
            }
        }
    }

    async fn notify(&self, subject: &str, message: &str) {
        self.services
            .publish(self.cfg.topic_arn.as_deref(), subject, message)
            .await
    }

    async fn run(&self, hop: u32, deadline: Option<Instant>) -> Result<Value> {
        let table = self.clients.table(&self.cfg.table);
        // This invocation's own run context (a warm container serves many): its counters, and
        // the token the import lease's heartbeat stops when the lease is lost.
        let store = self.clients.s3.for_run();
        let mut ledger = TableLedger::open(
            table,
            self.cfg.job.as_str(),
            self.cfg.lease_ttl,
            store.run().stop(),
        )
        .await?;
        let result = self.import(ledger.as_mut(), &store, deadline).await;
        let closed = ledger.close().await;
        if let Some(at) = &self.cfg.audit {
            let who = crate::lambda::audit::who(&self.clients).await;
            let events = match &result {
                Ok((report, _)) => crate::audit::events::import(&who, report),
                Err(e) => {
                    let mut ev = crate::audit::Event::new("import", &who).failed(e);
                    ev.job = Some(self.cfg.job.to_string());
                    ev.location = Some(self.cfg.dest.to_string());
                    vec![ev]
                }
            };
            let job = self.cfg.job.as_str();
            crate::lambda::audit::write(&self.clients, at, "import", job, &events).await?;
        }
        let (report, waiting) = result?;
        closed?;
        let applied: Vec<u64> = report
            .bundles
            .iter()
            .filter(|b| b.status == BundleStatus::Applied)
            .map(|b| b.sequence)
            .collect();
        let status = if !report.complete {
            let payload = serde_json::to_vec(&json!({"continuation": {"hop": hop + 1}}))
                .expect("payload serialises");
            Hops {
                services: &self.services,
                topic: self.cfg.topic_arn.as_deref(),
                function: &self.function_name,
                max: self.cfg.max_hops,
            }
            .next(hop, payload, &format!("import of job {}", self.cfg.job))
            .await?;
            "continue"
        } else if applied.is_empty() {
            "nothing_to_import"
        } else {
            self.notify(
                &format!("s3-ferry {}: bundle(s) {applied:?} imported", self.cfg.job),
                &import_message(&self.cfg, &report, &waiting),
            )
            .await;
            "imported"
        };
        for w in &waiting {
            info!(job = %self.cfg.job, folder = %w, "bundle not complete yet");
        }
        Ok(json!({"status": status, "applied": applied, "waiting": waiting, "report": report}))
    }

    async fn import(
        &self,
        ledger: &mut dyn Ledger,
        store: &crate::store::Store,
        deadline: Option<Instant>,
    ) -> Result<(ImportReport, Vec<String>)> {
        let rec = ledger.record().clone();
        // A bundle being applied (pending) is picked up again: it is newer than `sequence`.
        let (ready, waiting) =
            bundle::complete_folders(store, &self.cfg.import, self.cfg.job.as_str(), rec.sequence)
                .await?;
        let bundles = if ready.is_empty() {
            Vec::new()
        } else {
            let ids = self
                .identities
                .get_or_try_init(|| async {
                    match &self.cfg.identity_secret {
                        Some(id) => self.services.identity(id).await.map(Some),
                        None => Ok(None),
                    }
                })
                .await?;
            bundle::discover(&ready, Some(store), ids.as_ref()).await?
        };
        let (chain, mut notes) = next_in_chain(&rec, bundles).await?;
        notes.extend(waiting);
        let cfg = ImportConfig {
            target: std::sync::Arc::new(Bucket {
                // no write or delete once the import lease is lost
                store: store
                    .placed(&self.cfg.placement)?
                    .leased(self.cfg.job.as_str()),
                dest: self.cfg.dest.clone(),
                part_size: self.cfg.part_size,
            }),
            run: store.run().clone(),
            dry_run: false,
            force: false,
            force_reason: None,
            approvals: self.cfg.approvals.clone(),
            trust: self.cfg.trust.clone(),
            concurrency: self.cfg.concurrency,
            deadline,
            delete_unlisted: self.cfg.delete_unlisted,
            skip_object_lock: self.cfg.skip_object_lock,
            screen: match &self.cfg.policy {
                Some(spec) => Some(crate::import::screen::Screen::new(
                    Some(spec.load(store).await?),
                    None,
                    self.cfg
                        .quarantine
                        .clone()
                        .map(|q| crate::import::screen::Quarantine::Bucket(store.clone(), q)),
                    1,
                )),
                None => None,
            },
        };
        let report = import::run(ledger, &cfg, &chain, &NoProgress).await?;
        Ok((report, notes))
    }
}

/// The bundles that extend the chain from `rec`, in order; notes on the ones left waiting.
pub async fn next_in_chain(
    rec: &Record,
    bundles: Vec<Bundle>,
) -> Result<(Vec<Bundle>, Vec<String>)> {
    let (mut seq, mut digest) = (rec.sequence, rec.bundle_digest.clone());
    let mut chain = Vec::new();
    let mut notes = Vec::new();
    for b in bundles {
        let d = import::bundle_digest(&b).await?;
        if import::extends(&b, seq, digest.as_deref()) {
            seq = b.sequence;
            digest = Some(d);
            chain.push(b);
        } else {
            notes.push(format!(
                "bundle {} at {} does not follow bundle {seq}: waiting for the bundles between",
                b.sequence, b.location
            ));
        }
    }
    Ok((chain, notes))
}

fn import_message(cfg: &ImportFunctionConfig, r: &ImportReport, waiting: &[String]) -> String {
    let mut m = format!(
        "Job {} imported into {}; it now holds bundle {}.\n\n",
        cfg.job, cfg.dest, r.sequence
    );
    for b in &r.bundles {
        m.push_str(&format!(
            "Bundle {}: {:?}: {} objects ({} bytes), {} deleted, {} moved, {} removed, {} ms\n",
            b.sequence, b.status, b.objects, b.bytes, b.deleted, b.moved, b.removed, b.duration_ms
        ));
    }
    for w in waiting {
        m.push_str(&format!("Waiting: {w}\n"));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_missing_variable_and_events_of_every_kind_parse() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let e = ImportFunctionConfig::from_lookup(env(&[("FERRY_JOB", "j")])).unwrap_err();
        assert!(e.to_string().contains("IMPORT_BUCKET"), "{e}");
        let c = ImportFunctionConfig::from_lookup(env(&[
            ("FERRY_JOB", "j"),
            ("IMPORT_BUCKET", "inbox"),
            ("DEST_BUCKET", "mirror"),
            ("DEST_PREFIX", "mirror/"),
            ("STATE_TABLE", "t"),
        ]))
        .unwrap();
        assert_eq!(c.dest.key("a"), "mirror/a");
        assert_eq!(c.lease_ttl, DEFAULT_IMPORT_LEASE);
        assert!(c.placement.is_default());
        assert!(c.policy.is_none() && c.quarantine.is_none());
        assert!(c.approvals.is_none() && c.audit.is_none());
        // approvals: N of the listed keys; more than listed is refused, naming the variable
        let (_, public) = crate::format::sign::generate().unwrap();
        let der: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
        let der: &'static str = Box::leak(der.into_boxed_str());
        let base = [
            ("FERRY_JOB", "j"),
            ("IMPORT_BUCKET", "inbox"),
            ("DEST_BUCKET", "mirror"),
            ("STATE_TABLE", "t"),
            ("APPROVERS", der),
            ("AUDIT_PREFIX", "audit/"),
        ];
        let with = |n: &'static str| -> &'static [(&'static str, &'static str)] {
            let mut v = base.to_vec();
            v.push(("REQUIRED_APPROVALS", n));
            Box::leak(v.into_boxed_slice())
        };
        let c = ImportFunctionConfig::from_lookup(env(with("1"))).unwrap();
        assert_eq!(c.approvals.as_ref().map(|r| r.required), Some(1));
        let audit = c.audit.unwrap();
        assert_eq!(
            (audit.bucket.as_str(), audit.prefix.as_str()),
            ("inbox", "audit/")
        );
        let e = ImportFunctionConfig::from_lookup(env(with("2"))).unwrap_err();
        assert!(e.to_string().contains("REQUIRED_APPROVALS"), "{e}");
        let c = ImportFunctionConfig::from_lookup(env(&[
            ("FERRY_JOB", "j"),
            ("IMPORT_BUCKET", "inbox"),
            ("DEST_BUCKET", "mirror"),
            ("STATE_TABLE", "t"),
            ("POLICY", "deny_types = [\"application/x-executable\"]"),
            ("QUARANTINE", "s3://held/review/"),
        ]))
        .unwrap();
        assert!(c.policy.is_some());
        assert_eq!(c.quarantine.unwrap().key("a"), "review/a");
        let e = ImportFunctionConfig::from_lookup(env(&[
            ("FERRY_JOB", "j"),
            ("IMPORT_BUCKET", "inbox"),
            ("DEST_BUCKET", "mirror"),
            ("STATE_TABLE", "t"),
            ("QUARANTINE", "s3://held/review/"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("QUARANTINE"), "{e}");
        let c = ImportFunctionConfig::from_lookup(env(&[
            ("FERRY_JOB", "j"),
            ("IMPORT_BUCKET", "inbox"),
            ("DEST_BUCKET", "mirror"),
            ("STATE_TABLE", "t"),
            ("SSE", "aws:kms"),
            ("SSE_KMS_KEY_ID", "alias/mirror"),
            ("BUCKET_KEY", "true"),
            ("STORAGE_CLASS", "GLACIER_IR"),
        ]))
        .unwrap();
        assert_eq!(
            c.placement,
            crate::store::Placement {
                sse: Some(crate::store::Sse::Kms {
                    key_id: Some("alias/mirror".into()),
                    bucket_key: true
                }),
                storage_class: Some("GLACIER_IR".into()),
            }
        );
        let e = ImportFunctionConfig::from_lookup(env(&[
            ("FERRY_JOB", "j"),
            ("IMPORT_BUCKET", "inbox"),
            ("DEST_BUCKET", "mirror"),
            ("STATE_TABLE", "t"),
            ("SSE", "AES256"),
            ("BUCKET_KEY", "true"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("BUCKET_KEY"), "{e}");
        let eb = json!({"source": "aws.s3", "detail-type": "Object Created", "detail": {"object": {"key": "j/1/SHA256SUMS"}}});
        assert_eq!(parse_event(&eb), (1, Some("j/1/SHA256SUMS".into())));
        let s3 = json!({"Records": [{"s3": {"object": {"key": "k"}}}]});
        assert_eq!(parse_event(&s3).1.as_deref(), Some("k"));
        assert_eq!(parse_event(&json!({"continuation": {"hop": 3}})).0, 3);
        assert_eq!(parse_event(&json!({})), (1, None));
    }
}
