//! Listing and diffing for an export (`ferry plan` and the plan step): the previous inventory,
//! the listing as key ranges, archived objects' restore states.

use super::*;

/// Plan what the next bundle would carry, writing nothing to S3 (`ferry plan`): the puts go
/// through a local temporary file (for rename pairing and the volume estimate) and are dropped.
pub async fn plan_only(clients: &Clients, cfg: &ExportConfig) -> Result<(JobState, Plan, u64)> {
    let state = clients
        .table(&cfg.table)
        .load(cfg.job.as_str())
        .await?
        .unwrap_or_default();
    crate::plan::pin::check(cfg, state.pin.as_ref(), state.inventory.as_deref())?;
    let previous = if cfg.full {
        None
    } else {
        state.inventory.clone()
    };
    let local = |e: std::io::Error| Error::Stream {
        bucket: String::new(),
        key: "a temporary file for the plan".into(),
        source: Box::new(e),
    };
    let spill = tokio::fs::File::from_std(tempfile::tempfile().map_err(local)?);
    let mut candidates = InventoryWriter::new(tokio::io::BufWriter::new(spill));
    let listed = make_plan::<MultipartUpload, _>(
        &clients.s3,
        cfg,
        previous.as_deref(),
        None,
        &mut candidates,
        &mut |_| {},
        (None, None),
    )
    .await?;
    let mut spill = candidates.finish().await.map_err(local)?.into_inner();
    spill
        .seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(local)?;
    let mut estimate = VolumeEstimate::new(cfg.tuning.volume_size, cfg.tuning.volume_entries);
    let plan = crate::plan::pair_renames(
        &mut InventoryReader::new(tokio::io::BufReader::new(spill), "plan candidates".into()),
        listed,
        cfg.moves,
        &mut InventoryWriter::new(tokio::io::sink()),
        &mut estimate,
    )
    .await?;
    let volumes = if plan.is_empty() {
        0
    } else {
        estimate.volumes()
    };
    Ok((state, plan, volumes))
}

/// List and diff (see [`crate::plan::plan`]): candidates go to `candidates`, the new inventory
/// (when given) to `inventory`.
pub(super) async fn make_plan<W, C>(
    store: &Store,
    cfg: &ExportConfig,
    previous: Option<&str>,
    inventory: Option<&mut InventoryWriter<W>>,
    candidates: &mut InventoryWriter<C>,
    changed: &mut (dyn FnMut(&ObjectRecord) + Send),
    (deadline, so_far): (Option<Instant>, Option<Listed>),
) -> Result<Listed>
where
    W: tokio::io::AsyncWrite + Unpin,
    C: tokio::io::AsyncWrite + Unpin,
{
    let reader = match previous {
        Some(key) => {
            let r = store
                .reader(&cfg.dest.bucket, key)
                .await?
                .ok_or_else(|| Error::Corrupt {
                    what: "inventory",
                    location: format!("s3://{}/{key}", cfg.dest.bucket),
                    hint: "it is missing: take a new baseline",
                    source: "not found".into(),
                })?;
            Some(InventoryReader::new(
                r,
                format!("s3://{}/{key}", cfg.dest.bucket),
            ))
        }
        None => None,
    };
    let own = cfg.own_output()?;
    let filters = cfg.filters.clone().leaving_out(own.clone());
    // A listing an earlier call stopped goes on after its last key.
    let after = so_far.as_ref().and_then(|l| l.stopped_after.clone());
    let splits: Vec<String> = match previous {
        Some(key) if cfg.tuning.list_ranges > 1 => {
            list_splits(store, &cfg.dest.bucket, key, cfg.tuning.list_ranges).await
        }
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|s| after.as_ref().is_none_or(|a| s > a))
    .collect();
    let (bucket, prefix) = (&cfg.source.bucket, &cfg.source.prefix);
    let mut pages: Box<dyn Pages> = if splits.is_empty() {
        Box::new(store.list_range(bucket, prefix, after, None))
    } else {
        info!(job = %cfg.job, ranges = splits.len() + 1, "listing the source as key ranges at once");
        Box::new(crate::plan::listing::ranged(
            store, bucket, prefix, after, &splits,
        ))
    };
    let restores = SourceRestores {
        store: store.clone(),
        bucket: cfg.source.bucket.clone(),
    };
    let screen = cfg.screen_digest();
    let listing = crate::plan::Listing {
        lister: pages.as_mut(),
        source: &cfg.source,
        filters: &filters,
        restores: &restores,
        metadata: &restores,
        scan_metadata: cfg.scan_metadata,
        policy: cfg.policy.as_deref(),
        screen: screen.as_deref(),
        stop: store.run().stop(),
        deadline,
        so_far,
    };
    let mut listed = crate::plan::plan(listing, reader, inventory, candidates, changed).await?;
    listed.stats.list_ranges = listed.stats.list_ranges.max(splits.len() as u64 + 1);
    if listed.stats.own_output > 0 {
        info!(
            job = %cfg.job,
            objects = listed.stats.own_output,
            prefixes = ?own.iter().map(|p| format!("s3://{}/{p}", cfg.source.bucket)).collect::<Vec<_>>(),
            "left out of the listing: the export's own output (bundles and _state/) is never exported"
        );
    }
    Ok(listed)
}

/// Restore states of the source's archived objects, from a HEAD of each.
pub(super) struct SourceRestores {
    pub(super) store: Store,
    pub(super) bucket: String,
}

#[async_trait::async_trait]
impl crate::plan::Restores for SourceRestores {
    async fn restore(&self, key: &str) -> Result<crate::plan::Restore> {
        let header = self.store.restore_header(&self.bucket, key).await?;
        Ok(crate::plan::Restore::from_header(header.as_deref()))
    }
}

#[async_trait::async_trait]
impl crate::plan::MetadataReader for SourceRestores {
    async fn metadata(&self, key: &str) -> Result<Option<(crate::store::ObjectMeta, bool)>> {
        self.store.stat_state(&self.bucket, key).await
    }
}

/// Where to cut the listing, from the index beside the previous inventory. The index is only
/// a hint: missing, too large or unreadable, the listing runs as one stream.
pub(super) async fn list_splits(
    store: &Store,
    bucket: &str,
    inventory: &str,
    ranges: usize,
) -> Vec<String> {
    let key = InventoryIndex::key_for(inventory);
    // One GET: its answer's size is checked before the body is read.
    let index = async {
        let max = crate::plan::inventory::MAX_INDEX;
        let Got::Found { meta, mut body } = store.get_body(bucket, &key, None, None).await? else {
            return Ok(None);
        };
        if meta.size > max {
            return Ok(None);
        }
        let mut read = Vec::with_capacity(meta.size as usize);
        while let Some(chunk) = body.chunk().await? {
            read.extend_from_slice(&chunk);
            if read.len() as u64 > max {
                return Ok(None);
            }
        }
        if body.lost.is_some() {
            return Ok(None);
        }
        Ok::<_, Error>(serde_json::from_slice::<InventoryIndex>(&read).ok())
    };
    match index.await {
        Ok(Some(ix)) => crate::plan::listing::split_keys(&ix.keys, ix.records, ranges),
        Ok(None) => Vec::new(),
        Err(e) => {
            warn!(bucket, key, error = %e, "inventory index unreadable: listing as one stream");
            Vec::new()
        }
    }
}

/// A generous estimate of what one object adds to its volume's manifest (key, entry name,
/// headers, fixed fields) and central directory (entry name, fixed header, ZIP64 extra): the
/// writer closes a volume before either could reach a reader's limit.
pub(super) fn metadata_cost(
    bucket: &str,
    key: &str,
    headers: &crate::format::manifest::ObjectHeaders,
) -> u64 {
    let headers = serde_json::to_vec(headers).map_or(4096, |v| v.len() as u64);
    let entry = (bucket.len() + 1 + key.len()) as u64;
    // Manifest: key (escaped up to 6x in JSON), entry, headers, fixed fields; directory: entry.
    6 * key.len() as u64 + 2 * entry + 2 * headers + 512
}

/// The `s3://` prefixes of the export's own output inside its source (see
/// [`ExportConfig::own_output`]).
pub(super) fn own_output_uris(cfg: &ExportConfig) -> Vec<String> {
    cfg.own_output()
        .unwrap_or_default()
        .iter()
        .map(|p| format!("s3://{}/{p}", cfg.source.bucket))
        .collect()
}
