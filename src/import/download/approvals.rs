//! The approvals a download carries: those beside each bundle it fetches, and with
//! `--approvals-only` those of bundles already on the media.

use super::*;

/// The approval files beside a bundle in the bucket.
pub(super) fn approval_files(r: &Remote) -> Vec<crate::approval::carry::Remote<'_>> {
    r.files
        .iter()
        .filter(|(n, _)| crate::approval::is_approval_name(n))
        .map(|(name, (key, _, size))| crate::approval::carry::Remote {
            name,
            key,
            size: *size,
        })
        .collect()
}

/// `--approvals-only`: the approvals of bundles already on the media (the same `SHA256SUMS` as
/// in the bucket), no volume.
pub(super) async fn approvals_only(
    store: &Store,
    cfg: &DownloadConfig,
    complete: &[&Remote],
    started: Instant,
) -> Result<DownloadReport> {
    let mut bundles = Vec::new();
    for r in complete.iter().filter(|r| match cfg.select {
        Select::Latest => true,
        Select::Sequence(n) => r.sequence == n,
        Select::Since(n) => r.sequence > n,
    }) {
        let dir = cfg.to.join(&cfg.job).join(format!("{:08}", r.sequence));
        let Some(local) = crate::approval::carry::local_digest(&dir) else {
            continue;
        };
        let sums = store
            .get_document(&cfg.from.bucket, &format!("{}SHA256SUMS", r.prefix))
            .await?
            .unwrap_or_default();
        if hex::encode(Sha256::digest(&sums)) != local {
            warn!(job = %cfg.job, sequence = r.sequence, dir = %dir.display(), "the bundle on the media is not the one in the bucket (SHA256SUMS differ): its approvals are not fetched");
            continue;
        }
        let approvals =
            crate::approval::carry::fetch(store, &cfg.from.bucket, &approval_files(r), &dir)
                .await?;
        bundles.push(DownloadedBundle {
            sequence: r.sequence,
            dir,
            bundle_digest: local,
            volumes: Vec::new(),
            bytes: 0,
            approvals,
        });
    }
    Ok(DownloadReport {
        read_resumes: 0,
        job: cfg.job.clone(),
        bytes: 0,
        bundles,
        bytes_fetched: 0,
        duration_ms: started.elapsed().as_millis() as u64,
        incomplete: Vec::new(),
        approvals_only: true,
    })
}
