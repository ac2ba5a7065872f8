//! The far side: download, verify and import against moto, through the CLI (the round-trip
//! property itself runs on the fast tier: `fast_roundtrip.rs`).

use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;

use crate::util::{Ctx, block_on};

/// Export three bundles (baseline, then two deltas) and download them all.
fn three_bundles(name: &str) -> (Ctx, tempfile::TempDir) {
    let ctx = Ctx::new(name);
    for i in 0..6 {
        ctx.put(&format!("f/{i}.txt"), format!("one {i}"));
    }
    ctx.export_ok(&[]);
    ctx.put("f/0.txt", "two");
    ctx.delete("f/1.txt");
    ctx.export_ok(&[]);
    ctx.put("f/9.txt", "three");
    ctx.rename("f/2.txt", "g/2.txt");
    ctx.export_ok(&[]);
    let carry = tempfile::tempdir().unwrap();
    let r = ctx.ferry(&[
        "download",
        "--from",
        &ctx.dest_uri(),
        "--job",
        &ctx.job,
        "--since",
        "0",
        "--to",
        carry.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["bundles"].as_array().unwrap().len(), 3);
    (ctx, carry)
}

/// `ferry download` of the job's bundle 1 into a new folder: the folder, and the bundle's.
fn carry_first_bundle(ctx: &Ctx) -> (tempfile::TempDir, String) {
    let carry = tempfile::tempdir().unwrap();
    let r = ctx.ferry(&[
        "download",
        "--from",
        &ctx.dest_uri(),
        "--job",
        &ctx.job,
        "--to",
        carry.path().to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let bundle = bundle_dir(carry.path(), &ctx.job, 1);
    (carry, bundle)
}

fn bundle_dir(carry: &Path, job: &str, seq: u64) -> String {
    carry
        .join(job)
        .join(format!("{seq:08}"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn bundles_apply_only_in_chain_order_and_reapplying_changes_nothing() {
    let (ctx, carry) = three_bundles("order");
    let dst = ctx.bucket("dst");
    let to = format!("s3://{dst}");
    let state = carry.path().join("state.json");
    let st = state.to_str().unwrap();
    let b = |n| bundle_dir(carry.path(), &ctx.job, n);
    // GIVEN an empty target WHEN bundle 2 comes first THEN it is refused naming both ends
    let r = ctx.ferry(&["import", &b(2), "--to", &to, "--state", st]);
    assert_eq!(r.code, 6, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("bundle 2 of job") && r.stderr.contains("follows bundle 1"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("none (the target has no bundle yet)"),
        "{}",
        r.stderr
    );
    assert!(ctx.keys(&dst, "").is_empty(), "nothing may be written");
    // WHEN the baseline 1 is applied over a key ferry did not write THEN a dry run says it is
    // kept, `--dry-run --delete-unlisted` shows its removal, and `--delete-unlisted` removes it
    block_on(
        ctx.s3
            .put_object()
            .bucket(&dst)
            .key("stray.txt")
            .body(ByteStream::from_static(b"not in the source"))
            .send(),
    )
    .unwrap();
    let r = ctx.ferry(&[
        "import",
        &b(1),
        "--to",
        &to,
        "--state",
        st,
        "--dry-run",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = &r.json()["bundles"][0];
    assert_eq!(
        (out["removed"].as_u64(), out["kept_unlisted"].as_u64()),
        (Some(0), Some(1)),
        "{}",
        r.stdout
    );
    assert_eq!(out["kept_unlisted_keys"][0], "stray.txt");
    let r = ctx.ferry(&["import", &b(1), "--to", &to, "--state", st, "--dry-run"]);
    assert!(
        r.stdout.contains("kept 1") && r.stdout.contains("--delete-unlisted"),
        "{}",
        r.stdout
    );
    let r = ctx.ferry(&[
        "import",
        &b(1),
        "--to",
        &to,
        "--state",
        st,
        "--dry-run",
        "--delete-unlisted",
        "--json",
    ]);
    let changes = r.json()["bundles"][0]["changes"].clone();
    assert!(
        changes
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["op"] == "remove" && c["key"] == "stray.txt"),
        "{changes}"
    );
    assert!(
        ctx.get(&dst, "stray.txt").is_some(),
        "a dry run removes nothing"
    );
    let r = ctx.ferry(&[
        "import",
        &b(1),
        "--to",
        &to,
        "--state",
        st,
        "--delete-unlisted",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["bundles"][0]["removed"], 1, "{}", r.stdout);
    assert!(ctx.get(&dst, "stray.txt").is_none());
    // AND 3 is still refused; THEN 2, 3 apply
    let r = ctx.ferry(&["import", &b(3), "--to", &to, "--state", st]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(
        r.stderr.contains("follows bundle 2") && r.stderr.contains("is 1 (digest"),
        "{}",
        r.stderr
    );
    let r = ctx.ferry(&["import", &b(2), &b(3), "--to", &to, "--state", st, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["sequence"], 3);
    assert_eq!(j["bundles"][0]["deleted"], 1);
    assert_eq!(j["bundles"][1]["moved"], 1);
    assert_eq!(ctx.snapshot(&dst, ""), ctx.snapshot(&ctx.src, ""));
    // WHEN everything is given again THEN all three are recognised and nothing changes
    let heads = ctx.keys(&dst, "");
    let r = ctx.ferry(&[
        "import",
        carry.path().to_str().unwrap(),
        "--to",
        &to,
        "--state",
        st,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let statuses: Vec<String> = r.json()["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["already_applied"; 3]);
    assert_eq!(heads, ctx.keys(&dst, ""));
    // AND --dry-run of an out-of-order bundle (onto a fresh state) with --force lists its
    // changes and changes nothing
    let fresh = carry.path().join("fresh.json");
    let r = ctx.ferry(&[
        "import",
        &b(2),
        "--to",
        &to,
        "--state",
        fresh.to_str().unwrap(),
        "--dry-run",
        "--force",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["bundles"][0]["status"], "dry_run");
    let changes = j["bundles"][0]["changes"].as_array().unwrap().clone();
    assert!(
        changes
            .iter()
            .any(|c| c["op"] == "put" && c["key"] == "f/0.txt"),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["op"] == "delete" && c["key"] == "f/1.txt"),
        "{changes:?}"
    );
    assert_eq!(ctx.snapshot(&dst, ""), ctx.snapshot(&ctx.src, ""));
}

/// Offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn a_tampered_volume_is_refused_and_no_corrupt_object_is_written() {
    // GIVEN a downloaded bundle in which one byte of one object was changed
    let ctx = Ctx::new("tamper");
    ctx.put("a.txt", "alpha alpha alpha");
    ctx.put("b.txt", "bravo bravo bravo BRAVO");
    ctx.put("c.txt", "charlie charlie charlie");
    ctx.export_ok(&[]);
    let carry = tempfile::tempdir().unwrap();
    let r = ctx.ferry(&[
        "download",
        "--from",
        &ctx.dest_uri(),
        "--job",
        &ctx.job,
        "--latest",
        "--to",
        carry.path().to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("every volume matches SHA256SUMS"),
        "{}",
        r.stdout
    );
    let b = bundle_dir(carry.path(), &ctx.job, 1);
    let vol = Path::new(&b).join(format!("{}-00000001-0001.zip", ctx.job));
    let mut bytes = std::fs::read(&vol).unwrap();
    let at = find(&bytes, b"BRAVO");
    bytes[at] = b'X';
    std::fs::write(&vol, &bytes).unwrap();
    // WHEN it is verified THEN exit 5 names the volume, the entry and the key
    let r = ctx.ferry(&["verify", &b]);
    assert_eq!(r.code, 5, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("b.txt") && r.stderr.contains("0001.zip"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("CRC-32"), "{}", r.stderr);
    // WHEN it is imported THEN it is refused, `b.txt` is not written and the state is unchanged
    let dst = ctx.bucket("dst");
    let state = carry.path().join("state.json");
    let r = ctx.ferry(&[
        "import",
        &b,
        "--to",
        &format!("s3://{dst}"),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 5, "{}\n{}", r.stdout, r.stderr);
    assert!(
        ctx.get(&dst, "b.txt").is_none(),
        "the corrupt object must not land"
    );
    if let Some(body) = ctx.get(&dst, "a.txt") {
        assert_eq!(body, b"alpha alpha alpha");
    }
    let st: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&state).unwrap_or_else(|_| b"{\"record\":{\"sequence\":0}}".to_vec()),
    )
    .unwrap();
    assert_eq!(
        st["record"]["sequence"], 0,
        "the bundle must not be recorded as applied"
    );
    // (a first import that recorded nothing leaves no lock file; another one is unlocked)
    if let Ok(lock) = std::fs::OpenOptions::new()
        .write(true)
        .open(carry.path().join("state.json.lock"))
    {
        assert!(lock.try_lock().is_ok(), "the lock is released on failure");
    }
    assert!(
        !carry.path().join("state.json.index").exists(),
        "no index debris"
    );
    // AND into a directory: no file holds the tampered bytes, no temporary file is left
    let dir = tempfile::tempdir().unwrap();
    let r = ctx.ferry(&["import", &b, "--to-dir", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(!dir.path().join("b.txt").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ferry-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // AND a truncated volume is refused as unreadable
    std::fs::write(&vol, &bytes[..bytes.len() - 10]).unwrap();
    let r = ctx.ferry(&["verify", &b]);
    assert_eq!(r.code, 5, "{}", r.stderr);
}

#[test]
fn download_resumes_a_partial_volume_and_import_reads_s3_volumes_in_place() {
    // GIVEN a bundle of several volumes, one of them partly downloaded already
    let ctx = Ctx::new("resume");
    let objects: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            (
                format!("d/{i:02}"),
                (0..300_000u32).map(|b| (b * 7 + i) as u8).collect(),
            )
        })
        .collect();
    ctx.put_many(objects);
    let r = ctx.export_ok(&["--volume-size", "1MiB"]);
    let volumes = r["volume_details"].as_array().unwrap().clone();
    assert!(volumes.len() >= 3, "{r}");
    let carry = tempfile::tempdir().unwrap();
    let dir = carry.path().join(&ctx.job).join("00000001");
    std::fs::create_dir_all(&dir).unwrap();
    let first = volumes[1]["name"].as_str().unwrap();
    let whole = ctx
        .get(&ctx.exp, &format!("bundles/{}/00000001/{first}", ctx.job))
        .unwrap();
    // (ranges land out of order: the partial file holds the first half, then a hole where a
    // range was still in flight, then bytes of a later range; `.partial.at` says how much of
    // it is hashed and contiguous)
    let half = whole.len() / 2;
    let mut partial = whole[..half].to_vec();
    partial.resize(whole.len() - 1000, 0);
    partial.extend_from_slice(&whole[whole.len() - 1000..]);
    std::fs::write(dir.join(format!("{first}.partial")), &partial).unwrap();
    std::fs::write(dir.join(format!("{first}.partial.at")), half.to_string()).unwrap();
    // WHEN it is downloaded THEN that volume resumes, the others download, all verified
    let args = [
        "download",
        "--from",
        &ctx.dest_uri(),
        "--job",
        &ctx.job,
        "--sequence",
        "1",
        "--to",
        carry.path().to_str().unwrap(),
        "--json",
    ];
    let r = ctx.ferry(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    let statuses: Vec<&str> = j["bundles"][0]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[1], "resumed", "{j}");
    assert!(
        statuses
            .iter()
            .enumerate()
            .all(|(i, s)| i == 1 || *s == "downloaded"),
        "{j}"
    );
    assert_eq!(std::fs::read(dir.join(first)).unwrap(), whole);
    crate::util::run_ok(
        std::process::Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(&dir),
    );
    // AND again: everything is already present
    let r = ctx.ferry(&args);
    assert!(
        r.json()["bundles"][0]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["status"] == "present")
    );
    assert_eq!(r.json()["bytes_fetched"], 0);
    // AND a partial file with wrong bytes is caught and removed, never renamed into place
    std::fs::remove_file(dir.join(first)).unwrap();
    std::fs::write(dir.join(format!("{first}.partial")), vec![0u8; 1000]).unwrap();
    std::fs::write(dir.join(format!("{first}.partial.at")), "1000").unwrap();
    let r = ctx.ferry(&args);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(!dir.join(first).exists() && !dir.join(format!("{first}.partial")).exists());
    // AND nothing but the carried files is left beside them
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial"))
        .collect();
    names.sort();
    assert!(names.is_empty(), "{names:?}");
    // WHEN imported straight from the export bucket with state in the table THEN it mirrors
    let dst = ctx.bucket("dst");
    let src_uri = format!("{}/{}/00000001/", ctx.dest_uri(), ctx.job);
    let r = ctx.ferry(&[
        "import",
        &src_uri,
        "--to",
        &format!("s3://{dst}/copy"),
        "--table",
        &ctx.table,
        "--job",
        &ctx.job,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["bundles"][0]["objects"], 12);
    assert_eq!(ctx.snapshot(&dst, "copy/"), ctx.snapshot(&ctx.src, ""));
    let r = ctx.ferry(&[
        "import",
        &src_uri,
        "--to",
        &format!("s3://{dst}/copy"),
        "--table",
        &ctx.table,
        "--job",
        &ctx.job,
        "--json",
    ]);
    assert_eq!(
        r.json()["bundles"][0]["status"],
        "already_applied",
        "{}",
        r.stderr
    );
}

#[test]
fn a_directory_import_never_writes_outside_its_root() {
    // GIVEN hostile keys and a symlink inside the target pointing outside it
    let ctx = Ctx::new("dirsafe");
    for k in [
        "../up.txt",
        "a/../../up2.txt",
        "/etc/abs.txt",
        "link/inside.txt",
        "ok/fine.txt",
    ] {
        ctx.put(k, format!("body of {k}"));
    }
    ctx.export_ok(&[]);
    let outside = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
    // WHEN the bundle is imported into the directory straight from the bucket
    let src = format!("{}/{}/", ctx.dest_uri(), ctx.job);
    let r = ctx.ferry(&["import", &src, "--to-dir", root.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // THEN nothing was written outside it or through the symlink, and every key is there
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
    assert_eq!(
        std::fs::read(root.join("ok/fine.txt")).unwrap(),
        b"body of ok/fine.txt"
    );
    let index =
        s3_ferry::import::ledger::file_index_entries(&root.join(".ferry/state.json")).unwrap();
    for k in [
        "../up.txt",
        "a/../../up2.txt",
        "/etc/abs.txt",
        "link/inside.txt",
    ] {
        let place = index[k].place.as_str();
        assert!(place.starts_with("_escaped/"), "{k} → {place}");
        assert_eq!(
            std::fs::read(root.join(place)).unwrap(),
            format!("body of {k}").as_bytes()
        );
    }
}

#[test]
fn the_destination_encryption_and_storage_class_are_chosen_at_import() {
    // GIVEN a bundle of a small object and a multipart one (over the 16 MiB part size)
    let ctx = Ctx::new("placement");
    ctx.put("small.txt", "small");
    ctx.put("big.bin", vec![7u8; 17 << 20]);
    ctx.export_ok(&[]);
    let (carry, bundle) = carry_first_bundle(&ctx);
    let kms = aws_sdk_kms::Client::new(&crate::util::sdk_config(&ctx.endpoint));
    let key = block_on(kms.create_key().send())
        .unwrap()
        .key_metadata()
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let head = |bucket: &str, k: &str| {
        let h = block_on(ctx.s3.head_object().bucket(bucket).key(k).send()).unwrap();
        (
            h.server_side_encryption().map(|s| s.as_str().to_string()),
            h.ssekms_key_id().map(str::to_string),
            h.storage_class().map(|s| s.as_str().to_string()),
        )
    };

    // WHEN it is imported with SSE-KMS under a named key into STANDARD_IA, and with SSE-S3
    let kms_dst = ctx.bucket("kms");
    let r = ctx.ferry(&[
        "import",
        &bundle,
        "--to",
        &format!("s3://{kms_dst}"),
        "--state",
        carry.path().join("kms.state").to_str().unwrap(),
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        &key,
        "--storage-class",
        "STANDARD_IA",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let s3_dst = ctx.bucket("sses3");
    let r = ctx.ferry(&[
        "import",
        &bundle,
        "--to",
        &format!("s3://{s3_dst}"),
        "--state",
        carry.path().join("s3.state").to_str().unwrap(),
        "--sse",
        "AES256",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // THEN every object, single PUT or multipart, is stored as asked, with its bytes
    for k in ["small.txt", "big.bin"] {
        assert_eq!(
            head(&kms_dst, k),
            (
                Some("aws:kms".to_string()),
                Some(key.clone()),
                Some("STANDARD_IA".to_string())
            ),
            "{k}"
        );
        let (sse, _, class) = head(&s3_dst, k);
        assert_eq!(sse.as_deref(), Some("AES256"), "{k}");
        assert_ne!(class.as_deref(), Some("STANDARD_IA"), "{k}");
        assert_eq!(ctx.get(&kms_dst, k), ctx.get(&ctx.src, k), "{k}");
    }

    // AND a setting that does not fit is refused before anything is written, naming it
    for (args, names) in [
        (
            vec!["--sse", "AES256", "--sse-kms-key-id", "k"],
            "--sse-kms-key-id",
        ),
        (vec!["--storage-class", "COLD"], "--storage-class"),
        (vec!["--sse", "aws:s3"], "--sse"),
    ] {
        let fresh = ctx.bucket("refused");
        let mut all = vec![
            "import",
            bundle.as_str(),
            "--to",
            fresh.as_str(),
            "--state",
            "/nonexistent/never-written.state",
        ];
        let to = format!("s3://{fresh}");
        all[3] = to.as_str();
        all.extend(args.iter().copied());
        let r = ctx.ferry(&all);
        assert_eq!(r.code, 2, "{args:?}: {}\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(names), "{args:?}: {}", r.stderr);
        assert!(ctx.keys(&fresh, "").is_empty(), "{args:?}");
    }
}

#[test]
fn object_lock_and_tags_cross_between_buckets_with_object_lock_on_moto() {
    use aws_sdk_s3::types::{ObjectLockLegalHoldStatus, ObjectLockMode};
    // GIVEN a source bucket made with Object Lock: an object under GOVERNANCE retention with
    // a legal hold and tags, and a plain one
    let ctx = Ctx::new("lockmoto");
    let src = format!("lock-{}", &ctx.src[4..]);
    let lock_bucket = |name: &str| ctx.lock_bucket(name);
    lock_bucket(&src);
    let until = aws_sdk_s3::primitives::DateTime::from_secs(1_924_991_999); // 2030-12-31
    block_on(
        ctx.s3
            .put_object()
            .bucket(&src)
            .key("held.txt")
            .body(ByteStream::from_static(b"held"))
            .object_lock_mode(ObjectLockMode::Governance)
            .object_lock_retain_until_date(until)
            .object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On)
            .tagging("team=blue&cost-centre=42")
            .send(),
    )
    .unwrap();
    block_on(
        ctx.s3
            .put_object()
            .bucket(&src)
            .key("plain.txt")
            .body(ByteStream::from_static(b"plain"))
            .send(),
    )
    .unwrap();
    let r = ctx.export_with(&format!("s3://{src}"), &ctx.table, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (carry, bundle) = carry_first_bundle(&ctx);
    let state = |n: &str| carry.path().join(n).to_str().unwrap().to_string();
    let lock_of = |bucket: &str, key: &str| {
        let h = block_on(ctx.s3.head_object().bucket(bucket).key(key).send()).unwrap();
        (
            h.object_lock_mode().map(|m| m.as_str().to_string()),
            h.object_lock_retain_until_date().map(|d| d.secs()),
            h.object_lock_legal_hold_status()
                .map(|s| s.as_str().to_string()),
        )
    };
    let tags_of = |bucket: &str, key: &str| {
        let t = block_on(ctx.s3.get_object_tagging().bucket(bucket).key(key).send()).unwrap();
        let mut v: Vec<(String, String)> = t
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        v.sort();
        v
    };

    // WHEN it is imported into a bucket without Object Lock
    let plain = ctx.bucket("nolock");
    let r = ctx.ferry(&[
        "import",
        &bundle,
        "--to",
        &format!("s3://{plain}"),
        "--state",
        &state("a"),
    ]);
    // THEN it is refused (exit 2) naming Object Lock and the flag, and nothing is written
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("Object Lock") && r.stderr.contains("--object-lock skip"),
        "{}",
        r.stderr
    );
    assert!(ctx.keys(&plain, "").is_empty());

    // WHEN it is imported there with --object-lock skip, and into a bucket with Object Lock
    let r = ctx.ferry(&[
        "import",
        &bundle,
        "--to",
        &format!("s3://{plain}"),
        "--state",
        &state("b"),
        "--object-lock",
        "skip",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["bundles"][0]["unlocked"], 1, "{}", r.stdout);
    let locked = format!("locked-{}", &ctx.src[4..]);
    lock_bucket(&locked);
    let r = ctx.ferry(&[
        "import",
        &bundle,
        "--to",
        &format!("s3://{locked}"),
        "--state",
        &state("c"),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // THEN with Object Lock: the mode, the retain-until date, the legal hold and the tags are
    // the source's; unlocked: the tags only
    let want = (
        Some("GOVERNANCE".to_string()),
        Some(until.secs()),
        Some("ON".to_string()),
    );
    assert_eq!(lock_of(&src, "held.txt"), want);
    assert_eq!(lock_of(&locked, "held.txt"), want);
    assert_eq!(lock_of(&plain, "held.txt").0, None);
    let tags = vec![
        ("cost-centre".to_string(), "42".to_string()),
        ("team".to_string(), "blue".to_string()),
    ];
    for b in [&src, &locked, &plain] {
        assert_eq!(tags_of(b, "held.txt"), tags, "{b}");
        assert!(tags_of(b, "plain.txt").is_empty(), "{b}");
    }
    assert_eq!(lock_of(&locked, "plain.txt"), (None, None, None));
}
