//! What a run reports: its status and summary (`ferry export --json`), the settings a continued
//! bundle ignored, a bundle in progress for `ferry status`, and the state item's last-run summary.

use super::*;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The bundle is complete and committed.
    Complete,
    /// Nothing changed: no volume was written and the sequence did not advance.
    NoChanges,
    /// The deadline came first: call again to continue the same bundle.
    Continue,
}

/// The run's summary (`ferry export --json` prints it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub job: String,
    pub status: Status,
    /// True when the bundle is complete (or there was nothing to do).
    pub complete: bool,
    /// The bundle's sequence (for `no_changes`, the last committed one).
    pub sequence: u64,
    pub baseline: bool,
    /// `s3://` URIs of the volumes written so far, in order.
    pub volumes: Vec<String>,
    /// Name, size and SHA-256 of each of those volumes.
    pub volume_details: Vec<VolumeInfo>,
    /// The bundle folder.
    pub bundle: Option<String>,
    pub bundle_digest: Option<String>,
    pub objects: u64,
    pub bytes: u64,
    pub deleted: u64,
    pub moved: u64,
    /// Metadata-only entries: objects whose headers, metadata, tags or Object Lock changed
    /// and bytes did not (shipped without the bytes).
    #[serde(default)]
    pub metadata_only: u64,
    pub skipped: u64,
    pub vanished: u64,
    pub replaced: u64,
    pub listed: u64,
    pub unchanged: u64,
    /// Objects left out of the listing because they are the export's own output (its bundles
    /// and `_state/` inside the source bucket), and the `s3://` prefixes they are under.
    pub own_output: u64,
    pub own_output_prefixes: Vec<String>,
    /// Objects skipped and why (storage class).
    pub skipped_objects: Vec<crate::format::manifest::Skipped>,
    /// Objects the policy (`--policy`) withheld, and the rule each breaks (`max_size`, `type …`,
    /// `key …`, `keyword …`): not shipped, reported by every run while they stay so.
    #[serde(default)]
    pub withheld: u64,
    #[serde(default)]
    pub withheld_objects: Vec<crate::format::manifest::Skipped>,
    pub hops: u32,
    pub duration_ms: u64,
    pub bytes_per_sec: u64,
    /// GETs that broke mid-body and were resumed from where they broke (this process).
    #[serde(default)]
    pub read_resumes: u64,
    /// Requests this run sent, by operation (`s3:GetObject`, `dynamodb:UpdateItem:renew`, …),
    /// counted when it ended (`ferry export`: the whole run, lease release included).
    #[serde(default)]
    pub requests: std::collections::BTreeMap<String, u64>,
    /// Key ranges the listing ran as at once (1: one stream).
    #[serde(default)]
    pub list_ranges: u64,
    /// Key-range shards the bundle's objects were shipped in (0: nothing to ship).
    #[serde(default)]
    pub shards: u64,
    /// Settings given to this run that the bundle in progress was planned without (its
    /// checkpoint's values were kept), one line each: `--include: planned with …, given …`.
    #[serde(default)]
    pub ignored: Vec<String>,
}

/// A bundle in progress, as `ferry status` shows it (read from its checkpoint and shard
/// documents; nothing is written).
#[derive(Debug, Clone, Serialize)]
pub struct InProgress {
    pub sequence: u64,
    /// The checkpoint, `s3://…`.
    pub checkpoint: String,
    pub baseline: bool,
    pub listed_at: String,
    /// Runs that worked on it so far.
    pub hops: u32,
    pub shards: u64,
    /// Objects the plan ships, and those in completed volumes so far.
    pub planned_objects: u64,
    pub shipped_objects: u64,
    /// Completed volumes so far.
    pub volumes: u64,
    /// The run that wrote the checkpoint last.
    pub writer: String,
}

/// The bundle after the last committed one of `state`, if one is in progress. The job's pin
/// says where its checkpoints are (a state written before pins: `None`).
pub async fn in_progress(store: &Store, state: &JobState) -> Result<Option<InProgress>> {
    let Some(pin) = &state.pin else {
        return Ok(None);
    };
    let layout = Layout {
        dest: S3Location {
            bucket: pin.dest_bucket.clone(),
            prefix: pin.dest_prefix.clone(),
        },
        job: state.job.clone(),
        sealed: false,
    };
    let seq = state.sequence + 1;
    let key = layout.checkpoint_key(seq);
    let corrupt = |what: &'static str, location: String, e: serde_json::Error| Error::Corrupt {
        what,
        location,
        hint: "the next export run resumes or replaces it",
        source: Box::new(e),
    };
    let Some(body) = store.get_document(&pin.dest_bucket, &key).await? else {
        return Ok(None);
    };
    let ck: Checkpoint =
        serde_json::from_slice(&body).map_err(|e| corrupt("checkpoint", layout.uri(&key), e))?;
    let mut volumes = ck.volumes.len() as u64;
    let (mut planned, mut shipped) = (0, 0);
    for (k, cut) in ck.shards.iter().enumerate() {
        let doc_key = layout.shard_doc_key(seq, k);
        let doc = match store.get_document(&pin.dest_bucket, &doc_key).await? {
            Some(b) if !ck.merged => Some(
                serde_json::from_slice::<ShardDoc>(&b)
                    .map_err(|e| corrupt("shard progress", layout.uri(&doc_key), e))?,
            ),
            _ => None,
        };
        let state = doc.as_ref().map_or(cut, |d| &d.state);
        planned += state.count;
        shipped += state.cursor;
        volumes += doc.map_or(0, |d| d.volumes.len() as u64);
    }
    Ok(Some(InProgress {
        sequence: seq,
        checkpoint: layout.uri(&key),
        baseline: ck.baseline,
        listed_at: ck.listed_at,
        hops: ck.hops,
        shards: ck.shards.len() as u64,
        planned_objects: planned,
        shipped_objects: shipped,
        volumes,
        writer: ck.writer,
    }))
}

/// How long a run may move no data (no listing page, no GET, no uploaded part) before its
/// heartbeat stops renewing the lease: three lease times, at least ten minutes (longer than
/// one request may wait for its response, 5 min by default).
/// The settings given to this run that the bundle in progress was planned without: its
/// checkpoint's values win (a plan cannot change halfway), and the summary says so.
pub(super) fn ignored_settings(ck: &Checkpoint, cfg: &ExportConfig) -> Vec<String> {
    let mut out: Vec<String> = ck
        .pin
        .as_ref()
        .map(|p| p.differences(&Pin::of(cfg)))
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            format!(
                "{}: the bundle in progress was planned with {}, this run was given {} (kept {})",
                d.setting, d.recorded, d.given, d.recorded
            )
        })
        .collect();
    if let Some(asked) = ck.shards_asked
        && asked != cfg.tuning.shards
    {
        out.push(format!(
            "--shards: the bundle in progress was planned with {asked}, this run was given {} (kept {asked})",
            cfg.tuning.shards
        ));
    }
    out
}

/// What the state item keeps of a run's report: its counters, and where the full report is.
pub(super) fn run_summary(report: &Report, report_uri: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(report).expect("report serialises");
    if let Some(m) = v.as_object_mut() {
        for list in [
            "volumes",
            "volume_details",
            "skipped_objects",
            "own_output_prefixes",
        ] {
            m.remove(list);
        }
        m.insert("report".into(), report_uri.into());
    }
    v
}
