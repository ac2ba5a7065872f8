//! The export's own review of a bundle it committed: made from the plaintext copies of the
//! bundle's manifests (with the types the export detected as it shipped) and what its
//! screening withheld, and written beside `bundle.json` in the export bucket — never onto the
//! media (`ferry download` fetches only the volumes, `SHA256SUMS`, the signature and, for a
//! bundle that is not sealed, `bundle.json`).

use crate::format::manifest::{Manifest, Skipped};

use super::{BundleReview, ObjectRow, bare, summarize, tail_rows};

/// What the export knows of the bundle besides its manifests.
pub struct ExportedBundle<'a> {
    pub location: String,
    pub bundle_digest: String,
    /// SHA-256 of the signing key's public key, when the bundle is signed.
    pub signer: Option<String>,
    pub sealed: bool,
    pub withheld: &'a [Skipped],
}

/// The review of a bundle the export wrote, from its manifests in volume order.
pub fn of_export(manifests: &[Manifest], b: ExportedBundle<'_>) -> Option<BundleReview> {
    let head = manifests.first()?;
    let last = manifests.last()?.last.as_ref()?;
    let mut objects: Vec<ObjectRow> = manifests
        .iter()
        .flat_map(|m| &m.objects)
        // A later part of an object in parts: its first part is its row.
        .filter(|o| o.split.as_ref().is_none_or(|s| s.offset == 0))
        .map(|o| ObjectRow {
            size: o.split.as_ref().map_or(o.size, |s| s.object_size),
            sha256: o.split.as_ref().map_or(o.sha256.clone(), |_| String::new()),
            content_type: o.headers.content_type.clone(),
            detected_type: o.detected_type.clone().unwrap_or_else(|| "-".into()),
            tags: o.headers.tags.clone(),
            metadata: o.headers.metadata.clone(),
            ..bare(&o.key, "put")
        })
        .collect();
    objects.extend(tail_rows(last, |_, _| None));
    objects.extend(b.withheld.iter().map(|w| ObjectRow {
        size: w.size,
        verdict: Some(w.reason.clone()),
        ..bare(&w.key, "withheld")
    }));
    Some(summarize(
        BundleReview {
            job: head.job.clone(),
            sequence: head.sequence,
            baseline: head.baseline,
            location: b.location,
            bundle_digest: b.bundle_digest,
            signature_verified: b.signer.is_some(),
            approvals: Vec::new(),
            signer: b.signer,
            sealed: b.sealed,
            policy_digest: head.policy_digest.clone(),
            review_policy: None,
            by_op: Vec::new(),
            by_prefix: Vec::new(),
            by_type: Vec::new(),
            refused: 0,
            largest: Vec::new(),
            objects,
        },
        &head.source.prefix,
    ))
}
