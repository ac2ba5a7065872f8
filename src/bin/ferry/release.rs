//! Release controls on the command line: `ferry approve`, `ferry audit`, and the audit log every
//! command given `--audit-log` appends its lines to.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use s3_ferry::audit::{self, Event, Who};
use s3_ferry::format::sign::{FileSigner, Signer, SigningKeySpec};
use s3_ferry::store::aws::Clients;

use crate::args::AuditArgs;
use crate::output::{out, short};

/// Where a command's audit lines go (nowhere without `--audit-log`).
pub struct AuditLog<'a> {
    path: Option<PathBuf>,
    clients: Option<&'a Clients>,
}

impl<'a> AuditLog<'a> {
    pub fn new(args: &AuditArgs, clients: Option<&'a Clients>) -> Self {
        AuditLog {
            path: args.audit_log.clone(),
            clients,
        }
    }

    async fn who(&self) -> Who {
        let arn = match self.clients {
            Some(c) => c.caller_arn().await,
            None => None,
        };
        Who::local(arn)
    }

    /// Append the lines `events` makes for this command's actor.
    pub async fn record(&self, events: impl FnOnce(&Who) -> Vec<Event>) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let who = self.who().await;
        for e in events(&who) {
            audit::append(path, &e).with_context(|| {
                format!(
                    "the audit log {} was not written (the {} itself is done)",
                    path.display(),
                    e.action
                )
            })?;
        }
        Ok(())
    }

    /// Pass `result` on; a failure is logged first as a `failed` or `refused` line of `action`.
    pub async fn outcome<T>(
        &self,
        action: &str,
        job: Option<&str>,
        location: Option<&str>,
        result: anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let Err(e) = result else {
            return result;
        };
        let logged = self
            .record(|who| {
                let mut ev = Event::new(action, who).failed(e.as_ref());
                if let Some(j) = job {
                    ev.job = Some(j.to_string());
                }
                ev.location = location.map(str::to_string);
                vec![ev]
            })
            .await;
        if let Err(le) = logged {
            tracing::error!(error = %format!("{le:#}"), "the failure could not be logged to the audit log");
        }
        Err(e)
    }
}

/// `ferry approve SOURCE --signing-key SPEC [--note TEXT]`.
pub async fn approve(
    clients: Option<&Clients>,
    source: &str,
    spec: &SigningKeySpec,
    note: &str,
    audit: &AuditLog<'_>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let work = async {
        let signer: Box<dyn Signer> = match spec {
            SigningKeySpec::File(p) => Box::new(FileSigner::open(p)?),
            SigningKeySpec::Kms(_) => {
                let kms = &clients.context("a KMS key needs AWS access")?.kms;
                s3_ferry::store::kms::open_signer(spec, kms).await?
            }
        };
        let store = clients.map(|c| &c.s3);
        Ok::<_, anyhow::Error>(
            s3_ferry::approval::approve(store, source, signer.as_ref(), note).await?,
        )
    };
    let done = audit
        .outcome("approve", None, Some(source), work.await)
        .await?;
    let r = &done.approval;
    audit
        .record(|who| {
            let mut e = Event::new("approve", who);
            e.job = Some(r.job.clone());
            e.sequence = Some(r.sequence);
            e.bundle_digest = Some(r.bundle_digest.clone());
            e.location = Some(done.file.clone());
            e.reason = (!r.note.is_empty()).then(|| r.note.clone());
            vec![e]
        })
        .await?;
    if json {
        crate::output::json(&serde_json::json!({"ok": true, "approval": done}))?;
    } else {
        out!(
            "{} bundle {}: approved by key {} (digest {}){}: {}",
            r.job,
            r.sequence,
            short(&r.key),
            short(&r.bundle_digest),
            if done.replaced {
                ", replacing this key's earlier approval"
            } else {
                ""
            },
            done.file
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The largest log `ferry audit` reads.
const MAX_LOG: u64 = 4 * 1024 * 1024 * 1024;

/// `ferry audit FILE…`.
pub async fn check(
    clients: Option<&Clients>,
    files: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut logs = Vec::new();
    for f in files {
        if f.starts_with("s3://") {
            let store = &clients.context("s3:// logs need AWS access")?.s3;
            let loc: s3_ferry::config::S3Location = f.parse()?;
            let mut keys = Vec::new();
            let mut lister = store.list(&loc.bucket, &loc.prefix);
            while let Some(page) = lister.next_page().await? {
                keys.extend(
                    page.into_iter()
                        .filter(|r| r.key.ends_with(".jsonl"))
                        .map(|r| r.key),
                );
            }
            keys.sort();
            if keys.is_empty() {
                anyhow::bail!("no .jsonl audit object under {f}: check the AUDIT_PREFIX");
            }
            for k in keys {
                let body = store
                    .get_document(&loc.bucket, &k)
                    .await?
                    .unwrap_or_default();
                logs.push((format!("s3://{}/{k}", loc.bucket), body.to_vec()));
            }
            continue;
        }
        let len = std::fs::metadata(f)
            .with_context(|| format!("cannot read the audit log {f}"))?
            .len();
        if len > MAX_LOG {
            anyhow::bail!("the audit log {f} is {len} bytes, over {MAX_LOG}: check it in parts");
        }
        logs.push((
            f.clone(),
            std::fs::read(f).with_context(|| format!("cannot read the audit log {f}"))?,
        ));
    }
    let checked = audit::check(&logs)?;
    if json {
        crate::output::json(&serde_json::json!({
            "ok": true,
            "files": files,
            "lines": checked.lines,
            "count": checked.lines.len(),
            "head": checked.head,
        }))?;
    } else {
        out!(
            "audit log OK: {} line(s) in {} log(s), every hash and link checked; head {}",
            checked.lines.len(),
            logs.len(),
            checked.head.as_deref().unwrap_or("(empty)")
        );
    }
    Ok(ExitCode::SUCCESS)
}
