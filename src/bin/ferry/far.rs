//! The far side: `verify`, `import`.

use std::process::ExitCode;

use anyhow::Context;
use s3_ferry::context::RunContext;
use s3_ferry::format::seal::Identities;
use s3_ferry::import::bundle::{self, Bundle};
use s3_ferry::import::ledger::{FileLedger, TableLedger};
use s3_ferry::import::target::{Bucket, Dir, STATE_DIR, Target};
use s3_ferry::import::verify;
use s3_ferry::import::{self, BundleStatus, ImportConfig};
use s3_ferry::store::aws::Clients;

use s3_ferry::approval::Requirement;
use sha2::Digest;

use crate::args::ImportArgs;
use crate::exit;
use crate::output::{Bar, human, interactive, out, short};
use crate::release::AuditLog;

/// What `ferry verify` checks.
pub struct VerifyRequest<'a> {
    pub sources: &'a [String],
    pub trust: &'a [s3_ferry::format::sign::TrustedKey],
    pub identity: &'a [std::path::PathBuf],
    pub policy: Option<&'a s3_ferry::policy::Policy>,
    pub approvals: Option<&'a Requirement>,
}

pub async fn verify(
    clients: Option<&Clients>,
    ctx: &RunContext,
    req: &VerifyRequest<'_>,
    audit: &AuditLog<'_>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let where_ = req.sources.join(" ");
    let result = verify_all(clients, ctx, req, json).await;
    let reports = audit.outcome("verify", None, Some(&where_), result).await?;
    audit
        .record(|who| s3_ferry::audit::events::verify(who, &reports))
        .await?;
    print_verified(&reports, json)
}

async fn verify_all(
    clients: Option<&Clients>,
    ctx: &RunContext,
    req: &VerifyRequest<'_>,
    json: bool,
) -> anyhow::Result<Vec<verify::BundleReport>> {
    let VerifyRequest {
        sources,
        trust,
        identity,
        policy,
        approvals,
    } = *req;
    let store = clients.map(|c| &c.s3);
    let ids = Identities::from_files(identity)?;
    let mut reports: Vec<verify::BundleReport> = Vec::new();
    if ids.is_none() && bundle::any_sealed(sources, store).await? {
        // Sealed volumes and no secret: what the media can prove without one.
        let folders = bundle::media_folders(sources, store).await?;
        // Approvals are judged before any volume is read.
        let mut approved = Vec::new();
        for f in &folders {
            approved.push(match approvals {
                Some(req) => media_approvals(f, req)?,
                None => Vec::new(),
            });
        }
        let bar = Bar::bytes(interactive(json), 0, "verifying");
        let result = verify::verify_media(&folders, trust, &bar).await;
        bar.done();
        reports = result?;
        for (r, a) in reports.iter_mut().zip(approved) {
            r.approved_by = a;
        }
        return Ok(reports);
    }
    let bundles = bundle::discover(sources, store, ids.as_ref()).await?;
    let total: u64 = bundles.iter().map(Bundle::object_bytes).sum();
    let bar = Bar::bytes(interactive(json), total, "verifying");
    let mut approved = Vec::new();
    for b in &bundles {
        approved.push(match approvals {
            Some(req) => {
                let digest = import::bundle_digest(b).await?;
                b.check_approvals(&digest, req)?.approved
            }
            None => Vec::new(),
        });
    }
    for (b, approved_by) in bundles.iter().zip(approved) {
        let mut r = verify::verify_bundle(b, trust, &bar, ctx.stop()).await?;
        r.approved_by = approved_by;
        if let Some(prev) = reports.last()
            && prev.job == r.job
            && r.previous_sequence == Some(prev.sequence)
            && r.previous_digest.as_deref() != Some(prev.bundle_digest.as_str())
        {
            bar.done();
            anyhow::bail!(s3_ferry::Error::Bundle {
                what: format!("{} of job `{}`", r.sequence, r.job),
                location: r.location.clone(),
                detail: format!(
                    "follows a bundle {} with digest {}, but the bundle {} given has digest {}: they are not the same chain",
                    prev.sequence,
                    short(r.previous_digest.as_deref().unwrap_or("-")),
                    prev.sequence,
                    short(&prev.bundle_digest)
                ),
            });
        }
        if let Some(p) = policy {
            let review = s3_ferry::review::review_bundle(
                b,
                trust,
                &[],
                Some(p),
                &s3_ferry::progress::NoProgress,
                ctx.stop(),
            )
            .await?;
            r.refused_objects = Some(
                review
                    .objects
                    .into_iter()
                    .filter_map(|o| match o.verdict {
                        Some(v) if v != "ok" => Some((o.key, v)),
                        _ => None,
                    })
                    .collect(),
            );
        }
        reports.push(r);
    }
    bar.done();
    Ok(reports)
}

/// The approvals of a folder of sealed volumes (judged without opening them), or the refusal.
fn media_approvals(
    f: &bundle::MediaFolder,
    req: &Requirement,
) -> anyhow::Result<Vec<s3_ferry::approval::Approved>> {
    let sums = f.sums.as_deref().unwrap_or_default();
    let digest = hex::encode(sha2::Sha256::digest(sums.as_bytes()));
    let (job, sequence) = s3_ferry::format::manifest::parse_sha256sums(sums)
        .ok()
        .and_then(|l| {
            let first = l.first()?;
            let (j, s, _) = s3_ferry::format::manifest::volume_name_parts(first.name)?;
            Some((j.to_string(), s))
        })
        .unwrap_or_default();
    let t = s3_ferry::approval::tally(&f.approvals, &job, sequence, &digest, &req.approvers);
    let of = s3_ferry::approval::Subject {
        job: &job,
        sequence,
        bundle_digest: &digest,
        location: &f.location,
    };
    s3_ferry::approval::check(req, &t, of)?;
    Ok(t.approved)
}

fn print_verified(reports: &[verify::BundleReport], json: bool) -> anyhow::Result<ExitCode> {
    if json {
        crate::output::json(&serde_json::json!({"ok": true, "bundles": reports}))?;
        return Ok(ExitCode::SUCCESS);
    }
    for r in reports {
        if !r.contents_checked {
            out!(
                "{} bundle {}: OK (media only): {} sealed volume(s) match SHA256SUMS{}; digest {}; \
                 contents not opened (pass --identity to check every entry)",
                r.job,
                r.sequence,
                r.volumes.len(),
                match &r.signed_by {
                    Some(k) => format!(", signed by trusted key {}", short(k)),
                    None => String::new(),
                },
                short(&r.bundle_digest)
            );
            for v in &r.volumes {
                out!(
                    "  {}  {}  sha256 {}",
                    v.location,
                    human(v.size),
                    short(&v.sha256)
                );
            }
            continue;
        }
        out!(
            "{} bundle {}{}: OK: {} volume(s), {} objects ({}), {} deleted, {} moved; {}; digest {}{}",
            r.job,
            r.sequence,
            if r.baseline { " (baseline)" } else { "" },
            r.volumes.len(),
            r.objects,
            human(r.bytes),
            r.deleted,
            r.moved,
            match (r.previous_sequence, &r.previous_digest) {
                (Some(s), Some(d)) => format!("follows bundle {s} (digest {})", short(d)),
                _ => "starts a chain".into(),
            },
            short(&r.bundle_digest),
            match (&r.signed_by, r.sha256sums) {
                (Some(k), _) => format!("; signed by trusted key {}", short(k)),
                (None, true) => String::new(),
                (None, false) => " (no SHA256SUMS beside the volumes)".into(),
            }
        );
        for v in &r.volumes {
            out!(
                "  {}  {}  {} objects  sha256 {}",
                v.location,
                human(v.size),
                v.objects,
                short(&v.sha256)
            );
        }
        for a in &r.approved_by {
            out!(
                "  approved by key {} at {}{}",
                short(&a.key),
                a.time,
                if a.note.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.note)
                }
            );
        }
        if let Some(refused) = &r.refused_objects {
            out!("  --policy refuses {} object(s)", refused.len());
            for (key, why) in refused {
                out!("    {key}: {why}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn import(
    clients: Option<&Clients>,
    ctx: &RunContext,
    a: ImportArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // The run's store: its activity counters and stop token are this import's.
    let store = clients.map(|c| c.s3.for_run());
    let run = store
        .as_ref()
        .map(|s| s.run().clone())
        .unwrap_or_else(|| ctx.child());
    // The screening is read before anything is opened: a bad policy changes nothing.
    let screen = screen(store.as_ref(), &a)?;
    let target = open_target(store.as_ref(), &a).await?;
    let mut ledger = open_ledger(clients, &a, run.stop()).await?;
    let cfg = ImportConfig {
        approvals: a.approvals.requirement()?,
        force_reason: a.reason.clone(),
        target,
        dry_run: a.dry_run,
        force: a.force,
        concurrency: a.concurrency,
        deadline: None,
        trust: a.trust.clone(),
        delete_unlisted: a.delete_unlisted,
        run,
        skip_object_lock: a.object_lock == "skip",
        screen,
    };
    // The state is locked first, then the bundles are read; the lock (or lease) is given back
    // whatever happens.
    let result = async {
        let ids = Identities::from_files(&a.identity)?;
        let found = bundle::discover(&a.sources, store.as_ref(), ids.as_ref()).await?;
        let bundles = bundle::one_job(
            found,
            a.job.as_ref().map(|j| j.as_str()),
            &a.sources.join(", "),
        )?;
        let total: u64 = bundles.iter().map(Bundle::object_bytes).sum();
        let bar = Bar::bytes(interactive(json) && !a.dry_run, total, "importing");
        let result = import::run(ledger.as_mut(), &cfg, &bundles, &bar).await;
        bar.done();
        result
    }
    .await;
    let closed = ledger.close().await;
    let audit = AuditLog::new(&a.audit, clients);
    let target_name = cfg.target.display();
    let job = a.job.as_ref().map(|j| j.to_string());
    let result = audit
        .outcome(
            "import",
            job.as_deref(),
            Some(&target_name),
            result.map_err(Into::into),
        )
        .await;
    let report = result?;
    closed?;
    audit
        .record(|who| {
            let mut events = s3_ferry::audit::events::import(who, &report);
            if a.force {
                let why = a.reason.as_deref().unwrap_or("no reason given");
                for e in &mut events {
                    let was = e
                        .reason
                        .take()
                        .map(|r| format!("; {r}"))
                        .unwrap_or_default();
                    e.reason = Some(format!("--force: {why}{was}"));
                }
            }
            events
        })
        .await?;
    if json {
        crate::output::json(&report)?;
    } else {
        print_import(&report)?;
    }
    Ok(if report.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::CONTINUE)
    })
}

/// The import's target: `--to` a bucket (named before anything is read or written when it
/// is missing) or `--to-dir` a folder.
async fn open_target(
    store: Option<&s3_ferry::store::Store>,
    a: &ImportArgs,
) -> anyhow::Result<std::sync::Arc<dyn Target>> {
    Ok(match (&a.to, &a.to_dir) {
        (Some(dest), _) => {
            let store = store.cloned().expect("--to needs AWS");
            // A missing destination bucket is named before anything is read or written.
            store.check_bucket(&dest.bucket).await?;
            // No write or delete once an import lease (`--table`) is lost.
            let job = a.job.as_ref().map_or("import", |j| j.as_str());
            std::sync::Arc::new(Bucket {
                store: store.placed(&a.placement()?)?.leased(job),
                dest: dest.clone(),
                part_size: a.part_size,
            })
        }
        (None, Some(dir)) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating --to-dir `{}`", dir.display()))?;
            std::sync::Arc::new(Dir {
                root: dir
                    .canonicalize()
                    .with_context(|| format!("resolving --to-dir `{}`", dir.display()))?,
            })
        }
        (None, None) => unreachable!("clap requires --to or --to-dir"),
    })
}

/// The import's state: `--state FILE`, `--table TABLE --job NAME`, or the folder's own.
async fn open_ledger(
    clients: Option<&Clients>,
    a: &ImportArgs,
    stop: &s3_ferry::interrupt::Stop,
) -> anyhow::Result<Box<dyn s3_ferry::import::ledger::Ledger>> {
    Ok(match (&a.state, &a.table, &a.to_dir) {
        (Some(path), _, _) => FileLedger::open(path).await?,
        (None, Some(table), _) => {
            let job = a.job.as_ref().expect("clap requires --job with --table");
            let clients = clients.expect("--table needs AWS");
            TableLedger::open(clients.table(table), job.as_str(), a.lease_ttl, stop).await?
        }
        (None, None, Some(dir)) => {
            FileLedger::open(&dir.join(STATE_DIR).join("state.json")).await?
        }
        (None, None, None) => anyhow::bail!(s3_ferry::Error::Config {
            what: "import state".into(),
            detail: "say where it is kept: --state FILE, or --table TABLE --job NAME".into(),
        }),
    })
}

/// The human summary of an import.
fn print_import(report: &import::ImportReport) -> std::io::Result<()> {
    for b in &report.bundles {
        let name = format!(
            "{} bundle {}{}",
            b.job,
            b.sequence,
            if b.baseline { " (baseline)" } else { "" }
        );
        match b.status {
            BundleStatus::AlreadyApplied => {
                out!("{name}: already applied; nothing changed")
            }
            BundleStatus::DryRun => {
                out!(
                    "{name}: would write {} objects ({}; {} new, {} overwritten), delete {}, move {}, give {} new metadata, remove {} not in the baseline",
                    b.objects,
                    human(b.bytes),
                    b.new,
                    b.overwritten,
                    b.deleted,
                    b.moved,
                    b.metadata_only,
                    b.removed
                );
                kept_unlisted(b)?;
                for c in &b.changes {
                    match &c.to {
                        Some(to) => out!("  {:<9} {} -> {to}", c.op, c.key),
                        None if c.bytes > 0 => {
                            out!("  {:<9} {} ({})", c.op, c.key, human(c.bytes))
                        }
                        None => out!("  {:<9} {}", c.op, c.key),
                    }
                }
            }
            BundleStatus::Applied | BundleStatus::Continue => out!(
                "{name}: {}: {} objects ({}; {} new, {} overwritten), {} deleted, {} moved, {} metadata-only, {} removed, {} volume(s){}, {:.1}s",
                if b.status == BundleStatus::Applied {
                    "applied"
                } else {
                    "not finished (deadline): run again"
                },
                b.objects,
                human(b.bytes),
                b.new,
                b.overwritten,
                b.deleted,
                b.moved,
                b.metadata_only,
                b.removed,
                b.volumes,
                if b.volumes_resumed > 0 {
                    format!(" ({} resumed)", b.volumes_resumed)
                } else {
                    String::new()
                },
                b.duration_ms as f64 / 1000.0
            ),
        }
        if b.status != BundleStatus::DryRun {
            kept_unlisted(b)?;
        }
    }
    if report.dry_run {
        out!("dry run: {} unchanged", report.target);
    } else {
        out!(
            "{} holds bundle {} (digest {}); state in {}",
            report.target,
            report.sequence,
            short(report.bundle_digest.as_deref().unwrap_or("-")),
            report.state
        );
    }
    Ok(())
}

/// What a baseline left under the target because ferry did not write it, and how to remove it.
fn kept_unlisted(b: &import::BundleOutcome) -> std::io::Result<()> {
    if b.unlocked > 0 {
        out!(
            "  {} object(s) imported without their Object Lock (--object-lock skip)",
            b.unlocked
        );
    }
    if b.kept_unlisted == 0 {
        return Ok(());
    }
    let more = b.kept_unlisted - b.kept_unlisted_keys.len() as u64;
    out!(
        "  kept {} not listed by the baseline and not written by ferry: {}{}",
        b.kept_unlisted,
        b.kept_unlisted_keys.join(", "),
        if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        }
    );
    out!(
        "  to remove them too (exact mirror), run with --delete-unlisted; --dry-run --delete-unlisted shows what it would remove"
    );
    Ok(())
}

/// The import's screening (`--policy`, `--scan`, `--quarantine`), or `None` without any.
fn screen(
    store: Option<&s3_ferry::store::Store>,
    a: &ImportArgs,
) -> anyhow::Result<Option<std::sync::Arc<s3_ferry::import::screen::Screen>>> {
    use s3_ferry::import::screen::{Quarantine, Screen};
    if a.policy.is_none() && a.scan.is_none() {
        anyhow::ensure!(
            a.quarantine.is_none(),
            s3_ferry::error::Error::Policy {
                origin: "--quarantine".into(),
                detail: "it needs --policy or --scan to decide what goes there".into(),
            }
        );
        return Ok(None);
    }
    let policy = match &a.policy {
        Some(p) => Some(std::sync::Arc::new(s3_ferry::policy::Policy::from_file(p)?)),
        None => None,
    };
    let quarantine = match a.quarantine.as_deref() {
        None => None,
        Some(q) if q.starts_with("s3://") => {
            let loc: s3_ferry::config::S3Location = q.parse()?;
            let store = store.ok_or_else(|| s3_ferry::error::Error::Policy {
                origin: "--quarantine".into(),
                detail: "an s3:// quarantine needs AWS configuration (a region)".into(),
            })?;
            Some(Quarantine::Bucket(store.clone(), loc))
        }
        Some(dir) => Some(Quarantine::Dir(dir.into())),
    };
    Ok(Some(Screen::new(
        policy,
        a.scan.clone(),
        quarantine,
        a.scan_concurrency as usize,
    )))
}
