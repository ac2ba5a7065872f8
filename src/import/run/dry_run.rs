//! A dry run: what an import would change, bundle by bundle, changing nothing.

use super::*;

pub(super) async fn dry_run(
    ledger: &dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
    out: &mut BundleOutcome,
    simulated: &mut HashMap<String, bool>,
) -> Result<()> {
    for v in &b.volumes {
        let contents = v.contents().await?;
        dry_run_volume(ledger, &contents, out, simulated).await?;
    }
    dry_run_tail(ledger, cfg, b, out, simulated).await
}

/// What a dry run reports of one volume's objects.
pub(super) async fn dry_run_volume(
    ledger: &dyn Ledger,
    contents: &crate::import::bundle::Contents,
    out: &mut BundleOutcome,
    simulated: &mut HashMap<String, bool>,
) -> Result<()> {
    let keys: Vec<String> = contents.objects.iter().map(|o| o.key.clone()).collect();
    let known = ledger.lookup(&keys).await?;
    for o in &contents.objects {
        out.bytes += o.size;
        if crate::format::parts::is_early_part(o) {
            continue;
        }
        let bytes = o.split.as_ref().map_or(o.size, |s| s.object_size);
        let overwrite = simulated
            .get(&o.key)
            .copied()
            .unwrap_or_else(|| known.contains_key(&o.key));
        simulated.insert(o.key.clone(), true);
        out.objects += 1;
        if overwrite {
            out.overwritten += 1;
        } else {
            out.new += 1;
        }
        out.changes.push(Change {
            op: if overwrite { "overwrite" } else { "put" },
            key: o.key.clone(),
            to: None,
            bytes,
        });
    }
    Ok(())
}

/// What a dry run reports of a bundle's moves, metadata-only entries, deletions and (baseline)
/// removals.
pub(super) async fn dry_run_tail(
    ledger: &dyn Ledger,
    cfg: &ImportConfig,
    b: &Bundle,
    out: &mut BundleOutcome,
    simulated: &mut HashMap<String, bool>,
) -> Result<()> {
    for m in &b.last.moved {
        out.moved += 1;
        simulated.insert(m.from.clone(), false);
        simulated.insert(m.to.clone(), true);
        out.changes.push(Change {
            op: "move",
            key: m.from.clone(),
            to: Some(m.to.clone()),
            bytes: m.size,
        });
    }
    for m in &b.last.metadata_only {
        out.metadata_only += 1;
        out.changes.push(Change {
            op: "metadata",
            key: m.key.clone(),
            to: None,
            bytes: 0,
        });
    }
    for k in b.last.deleted.iter().chain(&b.last.vanished) {
        out.deleted += 1;
        simulated.insert(k.clone(), false);
        out.changes.push(Change {
            op: "delete",
            key: k.clone(),
            to: None,
            bytes: 0,
        });
    }
    if b.baseline {
        let removals = baseline_removals(ledger, cfg, b).await?;
        for (stray, _) in removals.remove {
            out.removed += 1;
            out.changes.push(Change {
                op: "remove",
                key: stray,
                to: None,
                bytes: 0,
            });
        }
        out.kept_unlisted = removals.kept;
        out.kept_unlisted_keys = removals.kept_first;
    }
    Ok(())
}
