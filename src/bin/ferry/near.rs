//! The export side: `init`, `status`, `plan`, `export`.

use std::process::ExitCode;

use anyhow::Context;
use s3_ferry::config::{ExportConfig, Filters, JobName, Tuning};
use s3_ferry::export::{self, Status};
use s3_ferry::store::aws::Clients;

use crate::args::{ExportArgs, JobArgs};
use crate::exit;
use crate::output::{Bar, human, interactive, out};

impl JobArgs {
    fn config(&self) -> anyhow::Result<ExportConfig> {
        let mut cfg = ExportConfig::new(
            self.job.clone(),
            self.source.clone(),
            self.dest.clone(),
            self.table.clone(),
        );
        cfg.filters = Filters::new(&self.include, &self.exclude, self.min_size, self.max_size)?;
        cfg.full = self.full;
        cfg.moves = !self.no_moves;
        cfg.scan_metadata = self.scan_metadata;
        cfg.policy = match &self.policy {
            Some(path) => Some(std::sync::Arc::new(s3_ferry::policy::Policy::from_file(
                path,
            )?)),
            None => None,
        };
        cfg.tuning = Tuning {
            volume_size: self
                .volume_size
                .unwrap_or(s3_ferry::config::DEFAULT_VOLUME_SIZE),
            volume_entries: self.volume_entries,
            part_size: self.part_size,
            concurrency: self.concurrency,
            compression: self.compression.parse()?,
            list_ranges: self.list_ranges,
            shards: self.shards,
        };
        cfg.tuning.validate()?;
        // A source inside the export's own output is refused before anything runs.
        cfg.own_output()?;
        Ok(cfg)
    }
}

pub async fn init(clients: &Clients, table: &str, json: bool) -> anyhow::Result<ExitCode> {
    let created = clients.table(table).init().await?;
    if json {
        crate::output::json(&serde_json::json!({"ok": true, "table": table, "created": created}))?;
    } else {
        out!(
            "state table `{table}` {}",
            if created { "created" } else { "already exists" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(
    clients: &Clients,
    job: &JobName,
    table: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let state = clients.table(table).load(job.as_str()).await?;
    let exists = state.is_some();
    let s = state.unwrap_or_else(|| s3_ferry::state::JobState {
        job: job.to_string(),
        ..Default::default()
    });
    let progress = s3_ferry::export::in_progress(&clients.s3, &s).await?;
    if json {
        // The same fields whether or not the job has run.
        let mut v = serde_json::to_value(&s)?;
        v["exists"] = exists.into();
        v["in_progress"] = serde_json::to_value(&progress)?;
        crate::output::json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !exists {
        out!("job `{job}` has not run yet");
        return Ok(ExitCode::SUCCESS);
    }
    out!("job        {}", s.job);
    out!("sequence   {}", s.sequence);
    out!("watermark  {}", s.watermark.as_deref().unwrap_or("-"));
    out!("inventory  {}", s.inventory.as_deref().unwrap_or("-"));
    out!("digest     {}", s.bundle_digest.as_deref().unwrap_or("-"));
    if let Some(owner) = &s.lease_owner {
        out!("lease      held by {owner}");
    }
    if let Some(pin) = &s.pin {
        out!("source     {}", pin.source_uri());
        out!("dest       {}", pin.dest_uri());
    }
    if let Some(p) = &progress {
        out!(
            "in progress bundle {}{}: {} of {} objects shipped in {} volume(s), {} shard(s), {} run(s) so far, listed at {} (checkpoint {})",
            p.sequence,
            if p.baseline { " (baseline)" } else { "" },
            p.shipped_objects,
            p.planned_objects,
            p.volumes,
            p.shards,
            p.hops,
            p.listed_at,
            p.checkpoint
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn plan(clients: &Clients, args: &JobArgs, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = args.config()?;
    let (state, plan, volumes) = export::plan_only(clients, &cfg).await?;
    let s = &plan.stats;
    if json {
        crate::output::json(&serde_json::json!({
            "job": cfg.job.as_str(), "last_sequence": state.sequence,
            "baseline": cfg.full || state.inventory.is_none(),
            "listed": s.listed, "unchanged": s.unchanged, "added": s.added,
            "modified": s.modified, "deleted": s.deleted, "moved": s.moved,
            "skipped": s.skipped, "bytes": s.put_bytes, "volumes": volumes,
            "own_output": s.own_output, "list_ranges": s.list_ranges,
            "skipped_objects": plan.skipped,
            "metadata_only": s.metadata_only, "metadata_deferred": s.metadata_deferred,
            "scan_metadata": cfg.scan_metadata,
            "requests": {"head_object": s.metadata_heads, "get_object_tagging": s.tag_reads},
            "metadata_unknown": s.metadata_unknown,
            "withheld": plan.withheld.len(), "withheld_objects": plan.withheld,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{}: {} listed, {} unchanged; to ship: {} added, {} modified ({}), {} deleted, {} moved, {} skipped; ~{} volume(s)",
        cfg.job,
        s.listed,
        s.unchanged,
        s.added,
        s.modified,
        human(s.put_bytes),
        s.deleted,
        s.moved,
        s.skipped,
        volumes
    );
    if s.metadata_heads > 0 || s.metadata_only > 0 {
        out!(
            "  metadata-only: {} (without their bytes){}; reading metadata takes {} HeadObject and {} GetObjectTagging requests{}",
            s.metadata_only,
            if s.metadata_deferred > 0 {
                format!(", {} more in the next runs", s.metadata_deferred)
            } else {
                String::new()
            },
            s.metadata_heads,
            s.tag_reads,
            if cfg.scan_metadata {
                " (--scan-metadata: every object the listing calls unchanged, each run)"
            } else {
                " (objects whose LastModified alone moved)"
            }
        );
    }
    withheld(
        plan.withheld.len() as u64,
        &plan.withheld,
        "would be withheld",
    )?;
    if s.metadata_unknown > 0 {
        out!(
            "  {} objects have no record of their metadata yet (shipped before a scan): theirs ships once",
            s.metadata_unknown
        );
    }
    if s.own_output > 0 {
        out!(
            "  left out {} objects of the export's own output (bundles and _state/ under --dest)",
            s.own_output
        );
    }
    for sk in &plan.skipped {
        out!("  skipped {}: {}", sk.key, sk.reason);
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry keygen --out FILE`: a P-256 key pair for signing bundles without KMS.
pub fn keygen(out: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let (private, public) = s3_ferry::format::sign::generate()?;
    let mut public_path = out.as_os_str().to_owned();
    public_path.push(".pub");
    let public_path = std::path::PathBuf::from(public_path);
    for p in [out, public_path.as_path()] {
        anyhow::ensure!(
            !p.exists(),
            "`{}` exists: keygen never overwrites a key",
            p.display()
        );
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(out)
        .with_context(|| format!("creating `{}`", out.display()))?;
    f.write_all(private.as_bytes())?;
    f.sync_all()?;
    std::fs::write(&public_path, &public)
        .with_context(|| format!("writing `{}`", public_path.display()))?;
    let key = s3_ferry::format::sign::TrustedKey::from_pem(&public, "the new key")?;
    if json {
        crate::output::json(&serde_json::json!({
            "ok": true, "private_key": out, "public_key": public_path, "key": key.fingerprint,
        }))?;
    } else {
        out!(
            "private key {} (keep it secret; sign with --signing-key file:{})",
            out.display(),
            out.display()
        );
        out!(
            "public key  {} (the far side trusts it: --trust {})",
            public_path.display(),
            public_path.display()
        );
        out!("key         {}", key.fingerprint);
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry public-key --signing-key SPEC`: the PEM the far side passes to `--trust`.
pub async fn public_key(
    clients: Option<&Clients>,
    spec: &s3_ferry::format::sign::SigningKeySpec,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let key = match spec {
        s3_ferry::format::sign::SigningKeySpec::File(p) => {
            s3_ferry::format::sign::Signer::public_key(&s3_ferry::format::sign::FileSigner::open(
                p,
            )?)
            .clone()
        }
        s3_ferry::format::sign::SigningKeySpec::Kms(id) => {
            let kms = clients.expect("kms needs AWS").kms.clone();
            s3_ferry::format::sign::Signer::public_key(
                &s3_ferry::store::kms::KmsSigner::open(kms, id).await?,
            )
            .clone()
        }
    };
    if json {
        crate::output::json(
            &serde_json::json!({"ok": true, "key": key.fingerprint, "pem": key.to_pem()}),
        )?;
    } else {
        out!("{}", key.to_pem().trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn export(clients: &Clients, args: &ExportArgs, json: bool) -> anyhow::Result<ExitCode> {
    let mut cfg = args.job.config()?;
    cfg.lease_ttl = args.lease_ttl;
    cfg.signing = args.signing_key.clone();
    cfg.encrypt_to =
        s3_ferry::format::seal::Recipients::parse(&args.encrypt_to, &args.encrypt_to_file)?;
    cfg.deadline = args.deadline.map(export::deadline_in);
    cfg.scan = args.scan.clone();
    let bar = Bar::new(interactive(json));
    let result = export::run(clients, &cfg, &bar).await;
    bar.done();
    let report = result.map_err(|e| {
        // Only an unanswered commit leaves the outcome open; every other failure leaves the
        // state as it was.
        let outcome = if matches!(e, s3_ferry::Error::CommitUnknown { .. }) {
            "its commit is unconfirmed"
        } else {
            "state unchanged"
        };
        anyhow::Error::new(e).context(format!("export of job `{}` failed; {outcome}", cfg.job))
    });
    let audit = crate::release::AuditLog::new(&args.audit, Some(clients));
    let report = audit
        .outcome("export", Some(cfg.job.as_str()), None, report)
        .await?;
    audit
        .record(|who| vec![s3_ferry::audit::events::export(who, &report)])
        .await?;
    if json {
        crate::output::json(&report)?;
    } else {
        print_report(&report)?;
    }
    Ok(match report.status {
        Status::Continue => ExitCode::from(exit::CONTINUE),
        _ => ExitCode::SUCCESS,
    })
}

fn print_report(r: &export::Report) -> std::io::Result<()> {
    match r.status {
        Status::NoChanges => out!(
            "{}: no changes since bundle {}; nothing written",
            r.job,
            r.sequence
        ),
        Status::Continue => out!(
            "{}: bundle {} not finished (deadline): {} volume(s) so far; run the same command again to continue",
            r.job,
            r.sequence,
            r.volumes.len()
        ),
        Status::Complete => out!(
            "{}: bundle {}{} complete: {} objects ({}), {} deleted, {} moved, {} metadata-only, {} skipped, {} vanished in {} volume(s), {:.1}s",
            r.job,
            r.sequence,
            if r.baseline { " (baseline)" } else { "" },
            r.objects,
            human(r.bytes),
            r.deleted,
            r.moved,
            r.metadata_only,
            r.skipped,
            r.vanished,
            r.volumes.len(),
            r.duration_ms as f64 / 1000.0
        ),
    }
    if r.own_output > 0 {
        out!(
            "  left out {} objects under {}: the export's own output is never exported",
            r.own_output,
            r.own_output_prefixes.join(", ")
        );
    }
    for i in &r.ignored {
        out!("  ignored {i}");
    }
    withheld(r.withheld, &r.withheld_objects, "withheld")?;
    if r.status == Status::NoChanges {
        return Ok(());
    }
    for v in &r.volumes {
        out!("  {v}");
    }
    for s in &r.skipped_objects {
        out!("  skipped {}: {}", s.key, s.reason);
    }
    if let Some(b) = &r.bundle
        && r.status == Status::Complete
    {
        out!(
            "  bundle {b} (digest {})",
            r.bundle_digest.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// The objects the policy withholds, the first 20 with their reasons.
fn withheld(
    n: u64,
    objects: &[s3_ferry::format::manifest::Skipped],
    verb: &str,
) -> std::io::Result<()> {
    if n == 0 {
        return Ok(());
    }
    out!(
        "  {n} objects {verb} by the policy (all of them: --json `withheld_objects`, and the run's report in the export bucket):"
    );
    for o in objects.iter().take(20) {
        out!("    {}: {}", o.key, o.reason);
    }
    if objects.len() > 20 {
        out!("    … and {} more", objects.len() - 20);
    }
    Ok(())
}
