//! An exact mirror by every measure S3 exposes (moto): a lock-enabled, versioned source with
//! tags, every additional checksum, a multipart object of uneven parts, a redirect and locks
//! is exported, imported into a lock-enabled bucket and compared field by field; then tags, a
//! legal hold, metadata (a copy onto itself) and content change, a delete marker is laid, and
//! `--scan-metadata` ships the metadata-only changes without their bytes.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, ObjectLockLegalHold,
    ObjectLockLegalHoldStatus, ObjectLockMode, Tag, Tagging,
};

use sha2::Digest;

use crate::util::{Ctx, block_on, pseudo_random};

const MIB: usize = 1024 * 1024;

/// The fields compared, in the closing note's order.
const FIELDS: [&str; 19] = [
    "bytes (SHA-256)",
    "size",
    "ETag",
    "Content-Type",
    "Cache-Control",
    "Content-Disposition",
    "user metadata",
    "tags",
    "Object Lock mode",
    "retain-until",
    "legal hold",
    "WebsiteRedirectLocation",
    "checksum type",
    "CRC32",
    "CRC32C",
    "CRC64NVME",
    "SHA1",
    "SHA256",
    "version read (manifest)",
];

/// Every field S3 shows of `bucket/key` (HeadObject with ChecksumMode, GetObjectTagging,
/// GetObject for the bytes).
fn fields(ctx: &Ctx, bucket: &str, key: &str) -> BTreeMap<&'static str, String> {
    let h = block_on(
        ctx.s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send(),
    )
    .unwrap_or_else(|e| panic!("HEAD {bucket}/{key}: {e:?}"));
    let tags = block_on(ctx.s3.get_object_tagging().bucket(bucket).key(key).send()).unwrap();
    let mut tags: Vec<String> = tags
        .tag_set()
        .iter()
        .map(|t| format!("{}={}", t.key(), t.value()))
        .collect();
    tags.sort();
    let body = ctx.get(bucket, key).unwrap();
    let meta: BTreeMap<_, _> = h
        .metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let s = |v: Option<&str>| v.unwrap_or("-").to_string();
    BTreeMap::from([
        ("bytes (SHA-256)", hex::encode(sha2::Sha256::digest(&body))),
        ("size", h.content_length().unwrap_or(0).to_string()),
        ("ETag", s(h.e_tag())),
        ("Content-Type", s(h.content_type())),
        ("Cache-Control", s(h.cache_control())),
        ("Content-Disposition", s(h.content_disposition())),
        ("user metadata", format!("{meta:?}")),
        ("tags", tags.join("&")),
        (
            "Object Lock mode",
            s(h.object_lock_mode().map(|m| m.as_str())),
        ),
        (
            "retain-until",
            h.object_lock_retain_until_date()
                .map_or("-".into(), |d| d.secs().to_string()),
        ),
        // A released hold reads OFF, a copy written without one reads nothing: both are no
        // legal hold (the bundle carries whether there is one).
        (
            "legal hold",
            s(h.object_lock_legal_hold_status()
                .map(|m| m.as_str())
                .filter(|m| *m != "OFF")),
        ),
        ("WebsiteRedirectLocation", s(h.website_redirect_location())),
        ("checksum type", s(h.checksum_type().map(|t| t.as_str()))),
        ("CRC32", s(h.checksum_crc32())),
        ("CRC32C", s(h.checksum_crc32_c())),
        ("CRC64NVME", s(h.checksum_crc64_nvme())),
        ("SHA1", s(h.checksum_sha1())),
        ("SHA256", s(h.checksum_sha256())),
        ("version read (manifest)", s(h.version_id())),
    ])
}

/// Compare every key of `src` and `dst` field by field; a table row per field (objects with a
/// value at the source, and how many the destination equals), and every difference.
fn compare(
    ctx: &Ctx,
    keys: &[&str],
    src: &str,
    dst: &str,
    versions: &BTreeMap<String, String>,
) -> (String, Vec<String>) {
    let mut rows: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut diffs = Vec::new();
    for key in keys {
        let (a, mut b) = (fields(ctx, src, key), fields(ctx, dst, key));
        // The version read is the source's own; the bundle records it (not the copy's id).
        b.insert(
            "version read (manifest)",
            versions.get(*key).cloned().unwrap_or("-".into()),
        );
        for f in FIELDS {
            let row = rows.entry(f).or_default();
            if a[f] != "-" && a[f] != "{}" && !a[f].is_empty() {
                row.0 += 1;
                if a[f] == b[f] {
                    row.1 += 1;
                }
            }
            if a[f] != b[f] {
                diffs.push(format!("{key}: {f}: source {} destination {}", a[f], b[f]));
            }
        }
    }
    let mut table =
        String::from("| field | objects with it | equal at the destination |\n|---|---|---|\n");
    for f in FIELDS {
        let (n, eq) = rows[f];
        table.push_str(&format!("| {f} | {n} | {eq} |\n"));
    }
    (table, diffs)
}

fn put_tagging(ctx: &Ctx, key: &str, tags: &[(&str, &str)]) {
    let set = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap())
        .collect();
    block_on(
        ctx.s3
            .put_object_tagging()
            .bucket(&ctx.src)
            .key(key)
            .tagging(Tagging::builder().set_tag_set(Some(set)).build().unwrap())
            .send(),
    )
    .unwrap();
}

#[test]
fn a_mirror_is_exact_by_every_measure_s3_exposes_and_metadata_changes_cross_without_bytes() {
    // GIVEN a source bucket made with Object Lock (and so versioned)
    let mut ctx = Ctx::new("fidelity");
    let src = format!("lock-{}", &ctx.src[4..]);
    ctx.lock_bucket(&src);
    ctx.src = src.clone();
    let until = aws_sdk_s3::primitives::DateTime::from_secs(1_924_991_999); // 2030-12-31
    let put = |key: &str, body: &[u8]| {
        ctx.s3
            .put_object()
            .bucket(&src)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
    };
    // tags, headers and user metadata
    block_on(
        put("tagged.txt", b"tagged")
            .tagging("team=blue&cost-centre=42")
            .content_type("text/plain")
            .cache_control("max-age=60")
            .content_disposition("attachment")
            .metadata("owner", "ops")
            .send(),
    )
    .unwrap();
    // a GOVERNANCE retention with a legal hold
    block_on(
        put("held.txt", b"held")
            .object_lock_mode(ObjectLockMode::Governance)
            .object_lock_retain_until_date(until)
            .object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On)
            .tagging("hold=yes")
            .send(),
    )
    .unwrap();
    // a redirect
    block_on(
        put("redirect.html", b"<html></html>")
            .website_redirect_location("/elsewhere.html")
            .content_type("text/html")
            .send(),
    )
    .unwrap();
    // every additional checksum
    let algorithms = [
        ("crc32.txt", ChecksumAlgorithm::Crc32),
        ("crc32c.txt", ChecksumAlgorithm::Crc32C),
        ("crc64.txt", ChecksumAlgorithm::Crc64Nvme),
        ("sha1.txt", ChecksumAlgorithm::Sha1),
        ("sha256.txt", ChecksumAlgorithm::Sha256),
    ];
    for (key, alg) in &algorithms {
        block_on(
            put(key, format!("bytes of {key}").as_bytes())
                .checksum_algorithm(alg.clone())
                .send(),
        )
        .unwrap();
    }
    // an object overwritten (two versions: the current one ships) and one to be deleted
    block_on(put("overwritten.txt", b"version one").send()).unwrap();
    block_on(put("overwritten.txt", b"version two").send()).unwrap();
    block_on(put("doomed.txt", b"doomed").send()).unwrap();
    // a multipart object of uneven parts (5 + 6 + 1 MiB) with CRC-32s, tagged
    let body = pseudo_random(12 * MIB, 7);
    let up = block_on(
        ctx.s3
            .create_multipart_upload()
            .bucket(&src)
            .key("parts.bin")
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .tagging("tier=gold")
            .send(),
    )
    .unwrap();
    let mut parts = Vec::new();
    for (n, range) in [
        (1, 0..5 * MIB),
        (2, 5 * MIB..11 * MIB),
        (3, 11 * MIB..12 * MIB),
    ] {
        let p = block_on(
            ctx.s3
                .upload_part()
                .bucket(&src)
                .key("parts.bin")
                .upload_id(up.upload_id().unwrap())
                .part_number(n)
                .body(ByteStream::from(body[range].to_vec()))
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .send(),
        )
        .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(p.e_tag().unwrap())
                .set_checksum_crc32(p.checksum_crc32().map(str::to_string))
                .build(),
        );
    }
    block_on(
        ctx.s3
            .complete_multipart_upload()
            .bucket(&src)
            .key("parts.bin")
            .upload_id(up.upload_id().unwrap())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send(),
    )
    .unwrap();
    let mut keys: Vec<&str> = vec![
        "tagged.txt",
        "held.txt",
        "redirect.html",
        "overwritten.txt",
        "doomed.txt",
        "parts.bin",
    ];
    keys.extend(algorithms.iter().map(|(k, _)| *k));
    keys.sort();

    // WHEN it is exported with --scan-metadata and imported into a bucket with Object Lock
    let r = ctx.export_ok(&["--scan-metadata"]);
    assert_eq!(r["objects"], keys.len(), "{r}");
    let dst = format!("lockdst-{}", &ctx.src[5..]);
    ctx.lock_bucket(&dst);
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state.json");
    let import = |seq: u64| {
        let b = ctx.download(&ctx.job, seq);
        let r = ctx.ferry(&[
            "import",
            b.dir.path().to_str().unwrap(),
            "--to",
            &format!("s3://{dst}"),
            "--state",
            state.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        (b, r.json())
    };
    let (b1, _) = import(1);
    let versions = |b: &crate::util::Bundle| -> BTreeMap<String, String> {
        b.objects()
            .into_iter()
            .filter_map(|o| o.version_id.map(|v| (o.key, v)))
            .collect()
    };

    // THEN every field of every object equals the source's: bytes, ETags (the multipart one's
    // `-3` too), headers, metadata, tags, Object Lock, the redirect, every checksum, and the
    // bundle records the version it read
    let (table, diffs) = compare(&ctx, &keys, &src, &dst, &versions(&b1));
    eprintln!("after the first bundle ({} objects):\n{table}", keys.len());
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert!(fields(&ctx, &dst, "parts.bin")["ETag"].ends_with("-3\""));
    assert_eq!(ctx.open_uploads_in(&dst), 0);

    // WHEN tags change and a legal hold is released (ETag and LastModified stay), an object is
    // copied onto itself with new metadata, one is rewritten and one deleted (a delete marker)
    put_tagging(&ctx, "tagged.txt", &[("team", "red")]);
    put_tagging(
        &ctx,
        "parts.bin",
        &[("tier", "silver"), ("reviewed", "yes")],
    );
    block_on(
        ctx.s3
            .put_object_legal_hold()
            .bucket(&src)
            .key("held.txt")
            .legal_hold(
                ObjectLockLegalHold::builder()
                    .status(ObjectLockLegalHoldStatus::Off)
                    .build(),
            )
            .send(),
    )
    .unwrap();
    block_on(
        ctx.s3
            .copy_object()
            .bucket(&src)
            .key("redirect.html")
            .copy_source(format!("{src}/redirect.html"))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .content_type("text/html; charset=utf-8")
            .website_redirect_location("/moved.html")
            .metadata("edited", "yes")
            .send(),
    )
    .unwrap();
    block_on(put("overwritten.txt", b"version three").send()).unwrap();
    block_on(ctx.s3.delete_object().bucket(&src).key("doomed.txt").send()).unwrap();

    // THEN the plan states the requests the scan makes
    let args = ctx.export_args(
        &ctx.job,
        &ctx.source_uri(),
        &ctx.table,
        &["--scan-metadata", "--json"],
    );
    let mut plan: Vec<&str> = args.iter().map(String::as_str).collect();
    plan[0] = "plan";
    let p = ctx.ferry(&plan);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    let p = p.json();
    assert_eq!(p["metadata_only"], 4, "{p}");
    assert_eq!(p["requests"]["head_object"], keys.len() - 1, "{p}");

    // WHEN it is exported with --scan-metadata
    let r = ctx.export_ok(&["--scan-metadata"]);
    // THEN the bundle carries the rewritten object's bytes only, four metadata-only entries
    // and the deletion
    assert_eq!(
        (
            r["objects"].as_u64(),
            r["metadata_only"].as_u64(),
            r["deleted"].as_u64()
        ),
        (Some(1), Some(4), Some(1)),
        "{r}"
    );
    let (b2, out) = import(2);
    let shipped: Vec<String> = b2.objects().into_iter().map(|o| o.key).collect();
    assert_eq!(shipped, ["overwritten.txt"]);
    let restated: Vec<&str> = b2
        .last()
        .metadata_only
        .iter()
        .map(|m| m.key.as_str())
        .collect();
    assert_eq!(
        restated,
        ["held.txt", "parts.bin", "redirect.html", "tagged.txt"]
    );
    let volume_bytes: u64 = b2.summary.volumes.iter().map(|v| v.size).sum();
    eprintln!(
        "second bundle: {} volume(s), {volume_bytes} bytes, {} object entries ({} bytes of objects), {} metadata-only entries, {} deleted",
        b2.summary.volumes.len(),
        shipped.len(),
        b2.objects().iter().map(|o| o.size).sum::<u64>(),
        restated.len(),
        b2.last().deleted.len()
    );
    assert!(
        volume_bytes < MIB as u64,
        "{volume_bytes} bytes: no object's bytes but one travel"
    );
    assert_eq!(out["bundles"][0]["metadata_only"], 4, "{out}");

    // AND the mirror is exact again, field by field, and the deleted key is gone
    let keys: Vec<&str> = keys.into_iter().filter(|k| *k != "doomed.txt").collect();
    let mut seen = versions(&b1);
    seen.extend(versions(&b2));
    for m in &b2.last().metadata_only {
        if let Some(v) = &m.version_id {
            seen.insert(m.key.clone(), v.clone());
        }
    }
    let (table, diffs) = compare(&ctx, &keys, &src, &dst, &seen);
    eprintln!("after the second bundle ({} objects):\n{table}", keys.len());
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert!(ctx.get(&dst, "doomed.txt").is_none());
    assert_eq!(ctx.open_uploads_in(&dst), 0);
}
