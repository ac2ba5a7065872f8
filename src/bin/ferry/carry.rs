//! `ferry download`: bundles (and their approvals) from the export bucket onto the media.

use std::process::ExitCode;

use s3_ferry::import::download::{self, DownloadConfig, Select};
use s3_ferry::store::aws::Clients;

use crate::args::DownloadArgs;
use crate::output::{Bar, human, interactive, out, short};
use crate::release::AuditLog;

pub async fn download(clients: &Clients, a: DownloadArgs, json: bool) -> anyhow::Result<ExitCode> {
    let audit = AuditLog::new(&a.audit, Some(clients));
    let cfg = DownloadConfig {
        approvals_only: a.approvals_only,
        from: a.from.clone(),
        job: a.job.to_string(),
        select: match (a.sequence, a.since) {
            (Some(n), _) => Select::Sequence(n),
            (_, Some(n)) => Select::Since(n),
            _ => Select::Latest,
        },
        to: a.to.clone(),
        concurrency: a.concurrency,
    };
    let bar = Bar::bytes(interactive(json), 0, "downloading");
    let result = download::run(&clients.s3, &cfg, &bar).await;
    bar.done();
    let to = a.to.display().to_string();
    let report = audit
        .outcome(
            "download",
            Some(&cfg.job),
            Some(&to),
            result.map_err(Into::into),
        )
        .await?;
    audit
        .record(|who| s3_ferry::audit::events::download(who, &report))
        .await?;
    if json {
        crate::output::json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    if report.approvals_only {
        for b in &report.bundles {
            out!(
                "{} bundle {}: {} approval file(s) written in {}",
                report.job,
                b.sequence,
                b.approvals,
                b.dir.display()
            );
        }
        out!(
            "total: {} bundle(s) on the media brought up to date with the export bucket's approvals",
            report.bundles.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if report.bundles.is_empty() {
        out!("{}: no complete bundle to download", report.job);
    }
    for b in &report.bundles {
        out!(
            "{} bundle {}: {} volume(s), {} in {} (digest {}){}",
            report.job,
            b.sequence,
            b.volumes.len(),
            human(b.bytes),
            b.dir.display(),
            short(&b.bundle_digest),
            match b.approvals {
                0 => String::new(),
                n => format!("; {n} approval file(s) written"),
            }
        );
        for v in &b.volumes {
            out!(
                "  {:<10} {}  {}  sha256 {}",
                v.status,
                v.name,
                human(v.size),
                short(&v.sha256)
            );
        }
    }
    for s in &report.incomplete {
        out!("  bundle {s} is still being exported: not downloaded");
    }
    out!(
        "total: {} bundle(s), {} ({} fetched) in {:.1}s; every volume matches SHA256SUMS",
        report.bundles.len(),
        human(report.bytes),
        human(report.bytes_fetched),
        report.duration_ms as f64 / 1000.0
    );
    Ok(ExitCode::SUCCESS)
}
