//! `ferry review`: the report a transfer officer reads before releasing bundles.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use s3_ferry::context::RunContext;
use s3_ferry::format::seal::Identities;
use s3_ferry::import::bundle::{self, Bundle};
use s3_ferry::review::{BundleReview, review_bundle};
use s3_ferry::store::aws::Clients;

use crate::output::{Bar, human, interactive, out, short};

/// Where the report goes besides stdout, and the policy it judges by.
pub struct Outputs {
    pub html: Option<PathBuf>,
    pub csv: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    /// Reviewers whose approvals are checked (none: listed unchecked).
    pub approvers: Vec<s3_ferry::format::sign::TrustedKey>,
}

pub async fn review(
    clients: Option<&Clients>,
    ctx: &RunContext,
    sources: &[String],
    trust: &[s3_ferry::format::sign::TrustedKey],
    identity: &[PathBuf],
    outputs: Outputs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let policy = match &outputs.policy {
        Some(p) => Some(s3_ferry::policy::Policy::from_file(p)?),
        None => None,
    };
    let store = clients.map(|c| &c.s3);
    let ids = Identities::from_files(identity)?;
    let bundles = bundle::discover(sources, store, ids.as_ref()).await?;
    let total: u64 = bundles.iter().map(Bundle::object_bytes).sum();
    let bar = Bar::bytes(interactive(json), total, "reviewing");
    let mut reviews: Vec<BundleReview> = Vec::new();
    for b in &bundles {
        let r = review_bundle(
            b,
            trust,
            &outputs.approvers,
            policy.as_ref(),
            &bar,
            ctx.stop(),
        )
        .await;
        match r {
            Ok(r) => reviews.push(r),
            Err(e) => {
                bar.done();
                return Err(e.into());
            }
        }
    }
    bar.done();
    if let Some(path) = &outputs.html {
        std::fs::write(path, s3_ferry::review::html::page(&reviews))
            .with_context(|| format!("writing the HTML report to {}", path.display()))?;
    }
    if let Some(path) = &outputs.csv {
        std::fs::write(path, s3_ferry::review::csv(&reviews)?)
            .with_context(|| format!("writing the CSV report to {}", path.display()))?;
    }
    if json {
        crate::output::json(&serde_json::json!({ "bundles": reviews }))?;
        return Ok(ExitCode::SUCCESS);
    }
    for b in &reviews {
        let count = |op: &str| b.by_op.iter().find(|g| g.name == op);
        let puts = count("put").map_or((0, 0), |g| (g.objects, g.bytes));
        out!(
            "bundle {} of job {}{}: {} put ({}), {} moved, {} metadata-only, {} deleted; {}, {}{}; digest {}",
            b.sequence,
            b.job,
            if b.baseline { " (baseline)" } else { "" },
            puts.0,
            human(puts.1),
            count("move").map_or(0, |g| g.objects),
            count("metadata").map_or(0, |g| g.objects),
            count("delete").map_or(0, |g| g.objects),
            match (&b.signer, b.signature_verified) {
                (Some(_), true) => "signed by a trusted key".to_string(),
                (Some(k), false) => format!("signed by {} (not checked: no --trust)", short(k)),
                (None, _) => "unsigned".to_string(),
            },
            if b.sealed { "sealed" } else { "not sealed" },
            if b.review_policy.is_some() {
                format!(", {} refused by --policy", b.refused)
            } else {
                String::new()
            },
            short(&b.bundle_digest)
        );
        for a in &b.approvals {
            out!(
                "  approval by key {} at {}: {}{}",
                a.key.as_deref().map_or("-", short),
                a.time.as_deref().unwrap_or("-"),
                a.status,
                a.note
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
        }
        for g in &b.by_type {
            out!("  {:<40} {:>8} {:>12}", g.name, g.objects, human(g.bytes));
        }
    }
    Ok(ExitCode::SUCCESS)
}
