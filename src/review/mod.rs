//! The review report (`ferry review`): what bundles hold, for the transfer officer who
//! releases them — per bundle its job, sequence, signer, sealing and policy digest; counts and
//! bytes by operation, by top-level prefix and by the type detected from the bytes; the
//! largest objects; and one row per object with the verdict of a policy when one is given.
//! Every byte is verified on the way (the same pass as `ferry verify`). As JSON, CSV or one
//! self-contained HTML page ([`html`]).

mod export;
pub mod html;

pub use export::{ExportedBundle, of_export};

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use crate::error::Result;
use crate::format::manifest::ObjectEntry;
use crate::import::bundle::Bundle;
use crate::import::verify::{EntrySink, EntryWriter, check_volume};
use crate::policy::{HEAD_BYTES, Inspector, Policy, detect};
use crate::progress::Progress;

/// The largest objects listed by size in each bundle's summary.
pub const LARGEST: usize = 10;

/// One object of a bundle, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectRow {
    pub key: String,
    /// `put` (new or overwritten: the far side's state knows which), `move` (its new key),
    /// `metadata` (new headers, no bytes), `delete`.
    pub op: String,
    pub size: u64,
    pub sha256: String,
    /// The Content-Type the object declares.
    pub content_type: Option<String>,
    /// The type its bytes are (`-` for an operation without bytes).
    pub detected_type: String,
    pub tags: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    /// What `--policy` says of it: `ok`, or the rule it breaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// A move's old key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Objects and bytes of one group (a top-level prefix, a type, an operation).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Group {
    pub name: String,
    pub objects: u64,
    pub bytes: u64,
}

/// One bundle, reviewed.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReview {
    pub job: String,
    pub sequence: u64,
    pub baseline: bool,
    pub location: String,
    pub bundle_digest: String,
    /// SHA-256 of the public key the bundle's signature names (`None`: unsigned).
    pub signer: Option<String>,
    /// The signature was checked against a `--trust` key.
    pub signature_verified: bool,
    /// The approval files beside it, each judged (`valid`, `unchecked`, or why not).
    pub approvals: Vec<crate::approval::Row>,
    pub sealed: bool,
    /// SHA-256 of the policy the export applied.
    pub policy_digest: Option<String>,
    /// SHA-256 of the policy this review judged with (`--policy`).
    pub review_policy: Option<String>,
    pub by_op: Vec<Group>,
    pub by_prefix: Vec<Group>,
    pub by_type: Vec<Group>,
    /// Objects `--policy` refuses.
    pub refused: u64,
    pub largest: Vec<ObjectRow>,
    pub objects: Vec<ObjectRow>,
}

/// The objects a review pass saw: each with its first bytes and the policy's verdict.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(ObjectEntry, Bytes, Option<String>)>>>;

/// Collects, per object, its first bytes and the policy's verdict on all of them.
struct ReviewSink<'p> {
    policy: Option<&'p Policy>,
    source_prefix: String,
    done: Seen,
}

struct ReviewWriter<'p> {
    obj: ObjectEntry,
    rel: String,
    head: Vec<u8>,
    inspector: Option<Inspector<&'p Policy>>,
    done: Seen,
}

impl<'p> EntrySink for ReviewSink<'p> {
    type Writer = ReviewWriter<'p>;
    async fn open(&mut self, obj: &ObjectEntry) -> Result<Option<ReviewWriter<'p>>> {
        // A later part of an object split across volumes: its first part is its row.
        if obj.split.as_ref().is_some_and(|s| s.offset > 0) {
            return Ok(None);
        }
        let rel = obj
            .key
            .strip_prefix(self.source_prefix.as_str())
            .unwrap_or(&obj.key)
            .to_string();
        Ok(Some(ReviewWriter {
            obj: obj.clone(),
            rel,
            head: Vec::new(),
            inspector: self.policy.map(|p| p.inspector()),
            done: self.done.clone(),
        }))
    }
}

impl EntryWriter for ReviewWriter<'_> {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        if let Some(i) = self.inspector.as_mut() {
            i.update(&chunk);
        }
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        let verdict = self.inspector.map(|i| {
            i.finish(&self.rel, self.obj.headers.content_type.as_deref())
                .1
                .unwrap_or_else(|| "ok".into())
        });
        self.done
            .lock()
            .expect("lock")
            .push((self.obj, Bytes::from(self.head), verdict));
        Ok(())
    }

    async fn abort(self) {}
}

/// The first path segment of `key` (relative to the prefix), or `(root)`.
fn top_prefix(rel: &str) -> String {
    match rel.split_once('/') {
        Some((top, _)) => format!("{top}/"),
        None => "(root)".into(),
    }
}

fn add(groups: &mut BTreeMap<String, Group>, name: &str, bytes: u64) {
    let g = groups.entry(name.to_string()).or_insert_with(|| Group {
        name: name.to_string(),
        ..Default::default()
    });
    g.objects += 1;
    g.bytes += bytes;
}

/// Review `bundle`: verify every byte, detect each object's type, judge it by `policy`.
pub async fn review_bundle(
    bundle: &Bundle,
    trusted: &[crate::format::sign::TrustedKey],
    approvers: &[crate::format::sign::TrustedKey],
    policy: Option<&Policy>,
    progress: &dyn Progress,
    stop: &crate::interrupt::Stop,
) -> Result<BundleReview> {
    let signature_verified = bundle.signed_by(trusted)?.is_some();
    let signer = bundle.signature.as_deref().and_then(|s| {
        crate::format::sign::parse(s, &bundle.location)
            .ok()
            .map(|f| f.key)
    });
    let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut sink = ReviewSink {
        policy,
        source_prefix: bundle.source_prefix.clone(),
        done: done.clone(),
    };
    let mut volume_shas = Vec::new();
    let mut policy_digest = None;
    for v in &bundle.volumes {
        policy_digest = policy_digest.or_else(|| v.manifest.policy_digest.clone());
        let contents = v.contents().await?;
        let report = check_volume(bundle, v, &contents, &mut sink, progress, stop).await?;
        volume_shas.push(report.sha256);
    }
    let bundle_digest = bundle
        .digest(volume_shas.last().map(String::as_str))
        .unwrap_or_default();
    let found = std::mem::take(&mut *done.lock().expect("lock"));
    let rel = |k: &str| {
        k.strip_prefix(bundle.source_prefix.as_str())
            .unwrap_or(k)
            .to_string()
    };
    let mut objects: Vec<ObjectRow> = found
        .into_iter()
        .map(|(o, head, verdict)| ObjectRow {
            key: o.key.clone(),
            op: "put".into(),
            size: o.split.as_ref().map_or(o.size, |s| s.object_size),
            sha256: o
                .split
                .as_ref()
                .and_then(|s| s.object_sha256.clone())
                .unwrap_or(o.sha256.clone()),
            content_type: o.headers.content_type.clone(),
            detected_type: detect(&head).mime,
            tags: o.headers.tags.clone(),
            metadata: o.headers.metadata.clone(),
            verdict,
            from: None,
        })
        .collect();
    let judge_headers = |h: &crate::format::manifest::ObjectHeaders, key: &str| {
        policy.map(|p| {
            p.judge_key(&rel(key), 0)
                .or_else(|| p.judge_headers(h))
                .unwrap_or_else(|| "ok".into())
        })
    };
    objects.extend(tail_rows(&bundle.last, judge_headers));
    Ok(summarize(
        BundleReview {
            job: bundle.job.clone(),
            sequence: bundle.sequence,
            baseline: bundle.baseline,
            location: bundle.location.clone(),
            signer,
            signature_verified,
            approvals: crate::approval::rows(
                &bundle.approvals,
                &bundle.job,
                bundle.sequence,
                &bundle_digest,
                approvers,
            ),
            bundle_digest,
            sealed: bundle.sealed(),
            policy_digest,
            review_policy: policy.map(|p| p.digest.clone()),
            by_op: Vec::new(),
            by_prefix: Vec::new(),
            by_type: Vec::new(),
            refused: 0,
            largest: Vec::new(),
            objects,
        },
        &bundle.source_prefix,
    ))
}

/// An object row without bytes (a deletion, say).
fn bare(key: &str, op: &str) -> ObjectRow {
    ObjectRow {
        key: key.to_string(),
        op: op.into(),
        size: 0,
        sha256: String::new(),
        content_type: None,
        detected_type: "-".into(),
        tags: BTreeMap::new(),
        metadata: BTreeMap::new(),
        verdict: None,
        from: None,
    }
}

/// The rows of a bundle's tail — its moves, metadata-only entries and deletions — with what
/// `judge` says of a row's headers at its key.
pub(crate) fn tail_rows(
    last: &crate::format::manifest::Final,
    judge: impl Fn(&crate::format::manifest::ObjectHeaders, &str) -> Option<String>,
) -> Vec<ObjectRow> {
    let mut objects = Vec::new();
    for m in &last.moved {
        let h = m.headers.clone().unwrap_or_default();
        objects.push(ObjectRow {
            size: m.size,
            content_type: h.content_type.clone(),
            verdict: judge(&h, &m.to),
            tags: h.tags,
            metadata: h.metadata,
            from: Some(m.from.clone()),
            ..bare(&m.to, "move")
        });
    }
    for m in &last.metadata_only {
        objects.push(ObjectRow {
            size: m.size,
            content_type: m.headers.content_type.clone(),
            verdict: judge(&m.headers, &m.key),
            tags: m.headers.tags.clone(),
            metadata: m.headers.metadata.clone(),
            ..bare(&m.key, "metadata")
        });
    }
    for k in last.deleted.iter().chain(&last.vanished) {
        objects.push(bare(k, "delete"));
    }
    objects
}

/// `r` with its rows in key order and its groups, largest objects and refusals counted.
pub(crate) fn summarize(mut r: BundleReview, source_prefix: &str) -> BundleReview {
    let rel = |k: &str| k.strip_prefix(source_prefix).unwrap_or(k).to_string();
    r.objects
        .sort_by(|a, b| a.key.cmp(&b.key).then(a.op.cmp(&b.op)));
    let (mut by_op, mut by_prefix, mut by_type) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for o in &r.objects {
        add(&mut by_op, &o.op, o.size);
        if o.op == "put" {
            add(&mut by_prefix, &top_prefix(&rel(&o.key)), o.size);
            add(&mut by_type, &o.detected_type, o.size);
        }
    }
    let mut largest: Vec<ObjectRow> = r
        .objects
        .iter()
        .filter(|o| o.op == "put")
        .cloned()
        .collect();
    largest.sort_by(|a, b| b.size.cmp(&a.size).then(a.key.cmp(&b.key)));
    largest.truncate(LARGEST);
    let sorted = |m: BTreeMap<String, Group>| {
        let mut v: Vec<Group> = m.into_values().collect();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
        v
    };
    r.refused = r
        .objects
        .iter()
        .filter(|o| o.verdict.as_deref().is_some_and(|v| v != "ok"))
        .count() as u64;
    r.by_op = sorted(by_op);
    r.by_prefix = sorted(by_prefix);
    r.by_type = sorted(by_type);
    r.largest = largest;
    r
}

/// One CSV row per object of every bundle.
pub fn csv(bundles: &[BundleReview]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let row = |w: &mut csv::Writer<Vec<u8>>, r: &[String]| w.write_record(r);
    let io = |e: csv::Error| crate::error::Error::Stream {
        bucket: String::new(),
        key: "review CSV".into(),
        source: Box::new(e),
    };
    row(
        &mut w,
        &[
            "job",
            "sequence",
            "key",
            "op",
            "from",
            "size",
            "sha256",
            "content_type",
            "detected_type",
            "tags",
            "metadata",
            "verdict",
        ]
        .map(String::from),
    )
    .map_err(io)?;
    for b in bundles {
        for o in &b.objects {
            let pairs = |m: &BTreeMap<String, String>| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&")
            };
            row(
                &mut w,
                &[
                    b.job.clone(),
                    b.sequence.to_string(),
                    o.key.clone(),
                    o.op.clone(),
                    o.from.clone().unwrap_or_default(),
                    o.size.to_string(),
                    o.sha256.clone(),
                    o.content_type.clone().unwrap_or_default(),
                    o.detected_type.clone(),
                    pairs(&o.tags),
                    pairs(&o.metadata),
                    o.verdict.clone().unwrap_or_default(),
                ],
            )
            .map_err(io)?;
        }
    }
    w.into_inner().map_err(|e| io(e.into_error().into()))
}
