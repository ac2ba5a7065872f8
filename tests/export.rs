//! Export outcomes a user checks: what a baseline and a delta bundle carry, filters,
//! storage-class skips, volume rotation, hostile keys.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::StorageClass;

use crate::util::{Ctx, block_on, check_readers, pseudo_random};

/// Upload `body` as a real multipart object of 5 MiB parts.
fn put_multipart(ctx: &Ctx, key: &str, body: &[u8]) {
    use tokio::io::AsyncWriteExt;
    block_on(async {
        let mut upload = ctx.clients.s3.multipart(
            &ctx.src,
            key,
            5 * 1024 * 1024,
            2,
            &s3_ferry::format::manifest::ObjectHeaders {
                content_type: Some("application/x-tar".into()),
                ..Default::default()
            },
        );
        upload.write_all(body).await.unwrap();
        upload.finish().await.unwrap();
    });
}

#[test]
fn baseline_carries_every_object_byte_for_byte_with_headers() {
    // GIVEN a bucket with small objects, headers, metadata and a 12 MiB multipart object
    let ctx = Ctx::new("baseline");
    ctx.put_with(
        "docs/a.txt",
        "hello",
        Some("text/plain"),
        &[("owner", "ann")],
    );
    block_on(
        ctx.s3
            .put_object()
            .bucket(&ctx.src)
            .key("web/index.html")
            .body(ByteStream::from_static(b"<html></html>"))
            .content_type("text/html")
            .content_encoding("identity")
            .content_disposition("inline")
            .content_language("en")
            .cache_control("max-age=60")
            .metadata("build", "42")
            .send(),
    )
    .unwrap();
    ctx.put("empty", Vec::new());
    let big = pseudo_random(12 * 1024 * 1024 + 17, 1);
    put_multipart(&ctx, "big/archive.tar", &big);

    // WHEN it is exported for the first time
    let r = ctx.export_ok(&["--part-size", "5MiB"]);

    // THEN one complete baseline bundle carries all four objects
    assert_eq!(r["status"], "complete");
    assert_eq!(r["complete"], true);
    assert_eq!(r["sequence"], 1);
    assert_eq!(r["objects"], 4);
    assert_eq!(r["bytes"], (5 + 13 + big.len()) as u64);
    let volumes = r["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(
        volumes[0],
        format!(
            "s3://{}/bundles/{}/00000001/{}-00000001-0001.zip",
            ctx.exp, ctx.job, ctx.job
        )
    );
    let bundle = ctx.download(&ctx.job, 1);
    bundle.sha256sum_check();
    check_readers(&bundle.volume_paths()[0]);
    let files = bundle.extract();
    assert_eq!(files["docs/a.txt"], b"hello");
    assert_eq!(files["empty"], b"");
    assert_eq!(files["big/archive.tar"], big);
    let objects: BTreeMap<_, _> = bundle
        .objects()
        .into_iter()
        .map(|o| (o.key.clone(), o))
        .collect();
    let web = &objects["web/index.html"];
    assert_eq!(web.entry, format!("{}/web/index.html", ctx.src));
    assert_eq!(web.headers.content_type.as_deref(), Some("text/html"));
    assert_eq!(web.headers.content_encoding.as_deref(), Some("identity"));
    assert_eq!(web.headers.content_disposition.as_deref(), Some("inline"));
    assert_eq!(web.headers.content_language.as_deref(), Some("en"));
    assert_eq!(web.headers.cache_control.as_deref(), Some("max-age=60"));
    assert_eq!(
        web.headers.metadata.get("build").map(String::as_str),
        Some("42")
    );
    assert_eq!(objects["docs/a.txt"].headers.metadata["owner"], "ann");
    assert_eq!(
        objects["docs/a.txt"].sha256,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert!(bundle.manifests[0].baseline);
    assert_eq!(bundle.manifests[0].previous, None);
    assert_eq!(bundle.last().volume_count, 1);
    assert_eq!(ctx.state().sequence, 1);
    assert_eq!(
        ctx.state().bundle_digest,
        Some(bundle.summary.bundle_digest.clone())
    );
    assert_eq!(ctx.open_uploads(), 0);
}

#[test]
fn delta_carries_adds_overwrites_deletes_renames_and_metadata_changes() {
    // GIVEN a baseline
    let ctx = Ctx::new("delta");
    for i in 0..20 {
        ctx.put(&format!("f{i:02}"), format!("content {i}"));
    }
    ctx.export_ok(&[]);
    let first = ctx.download(&ctx.job, 1);

    // WHEN the bucket changes in every way and is exported again
    ctx.put("new", "brand new");
    ctx.put("f01", "overwritten");
    ctx.delete("f02");
    ctx.rename("f03", "renamed/f03");
    // S3 lists LastModified to the second: a metadata-only change is visible in the listing
    // once it lands in a later second than the version it replaces.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ctx.set_metadata("f04", "text/csv", &[("k", "v")]);
    let r = ctx.export_ok(&[]);

    // THEN the delta bundle carries exactly those changes, chained to the baseline: the
    // metadata-only change without its bytes
    assert_eq!(r["sequence"], 2);
    assert_eq!(
        (
            r["objects"].as_u64(),
            r["deleted"].as_u64(),
            r["moved"].as_u64(),
            r["metadata_only"].as_u64()
        ),
        (Some(2), Some(1), Some(1), Some(1))
    );
    let b = ctx.download(&ctx.job, 2);
    let keys: BTreeSet<_> = b.objects().iter().map(|o| o.key.clone()).collect();
    assert_eq!(keys, BTreeSet::from(["f01".into(), "new".into()]));
    let files = b.extract();
    assert_eq!(files["f01"], b"overwritten");
    let last = b.last();
    let f04 = &last.metadata_only[0];
    assert_eq!(f04.key, "f04");
    assert_eq!(f04.headers.content_type.as_deref(), Some("text/csv"));
    assert_eq!(f04.headers.metadata["k"], "v");
    assert_eq!(last.deleted, vec!["f02".to_string()]);
    assert_eq!(last.moved.len(), 1);
    assert_eq!(
        (last.moved[0].from.as_str(), last.moved[0].to.as_str()),
        ("f03", "renamed/f03")
    );
    let m = &b.manifests[0];
    assert!(!m.baseline);
    let prev = m.previous.as_ref().unwrap();
    assert_eq!(prev.sequence, 1);
    assert_eq!(prev.bundle_digest, first.summary.bundle_digest);

    // AND a third run with nothing changed writes nothing and keeps the sequence
    let r = ctx.export_ok(&[]);
    assert_eq!(r["status"], "no_changes");
    assert_eq!(r["volumes"].as_array().unwrap().len(), 0);
    assert_eq!(r["sequence"], 2);
    assert_eq!(ctx.state().sequence, 2);
    assert!(
        ctx.keys(&ctx.exp, &format!("bundles/{}/00000003/", ctx.job))
            .is_empty()
    );

    // AND a job exported with --no-moves ships a rename's bytes instead
    let nm = format!("{}-nm", ctx.job);
    let r = ctx.export_job(&nm, &["--no-moves"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    ctx.rename("f05", "g05");
    let r = ctx.export_job(&nm, &["--no-moves"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = r.json();
    assert_eq!(
        (
            r["moved"].as_u64(),
            r["deleted"].as_u64(),
            r["objects"].as_u64()
        ),
        (Some(0), Some(1), Some(1))
    );
}

#[test]
fn plan_prints_counts_and_writes_nothing() {
    let ctx = Ctx::new("plan");
    ctx.put("a", "1");
    ctx.put("b/c", "22");
    let (src, dest) = (ctx.source_uri(), ctx.dest_uri());
    let run = ctx.ferry(&[
        "plan", "--job", &ctx.job, "--source", &src, "--dest", &dest, "--table", &ctx.table,
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let p = run.json();
    assert_eq!(
        (
            p["added"].as_u64(),
            p["bytes"].as_u64(),
            p["volumes"].as_u64()
        ),
        (Some(2), Some(3), Some(1))
    );
    assert!(
        ctx.keys(&ctx.exp, "").is_empty(),
        "plan wrote to the export bucket"
    );
    assert_eq!(ctx.state().sequence, 0);
}

#[test]
fn filters_select_by_glob_and_size() {
    let ctx = Ctx::new("filters");
    for key in [
        "logs/a.log",
        "logs/deep/b.log",
        "data/c.csv",
        "tmp/d.csv",
        "data/big.csv",
    ] {
        ctx.put(
            key,
            if key.contains("big") {
                vec![b'x'; 5000]
            } else {
                b"x".to_vec()
            },
        );
    }
    let r = ctx.export_ok(&[
        "--include",
        "*.csv",
        "--exclude",
        "tmp/**",
        "--max-size",
        "1KiB",
    ]);
    assert_eq!(r["objects"], 1);
    let b = ctx.download(&ctx.job, 1);
    assert_eq!(b.objects()[0].key, "data/c.csv");

    // A prefix limits the listing; globs apply to the key below it.
    let ctx2 = Ctx::new("prefix");
    ctx2.put("in/x/a.log", "1");
    ctx2.put("in/b.txt", "2");
    ctx2.put("out/a.log", "3");
    let src = format!("s3://{}/in", ctx2.src);
    let run = ctx2.export_with(&src, &ctx2.table, &["--include", "x/*.log", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let b = ctx2.download(&ctx2.job, 1);
    let keys: Vec<_> = b.objects().iter().map(|o| o.key.clone()).collect();
    assert_eq!(keys, vec!["in/x/a.log".to_string()]);
    assert_eq!(b.manifests[0].source.prefix, "in/");
}

fn put_glacier(ctx: &Ctx, key: &str, body: &'static [u8]) {
    block_on(
        ctx.s3
            .put_object()
            .bucket(&ctx.src)
            .key(key)
            .storage_class(StorageClass::Glacier)
            .body(ByteStream::from_static(body))
            .send(),
    )
    .unwrap();
}

fn restore(ctx: &Ctx, key: &str) {
    block_on(
        ctx.s3
            .restore_object()
            .bucket(&ctx.src)
            .key(key)
            .restore_request(aws_sdk_s3::types::RestoreRequest::builder().days(1).build())
            .send(),
    )
    .unwrap();
}

#[test]
fn a_restored_archived_object_ships_and_one_not_restored_is_skipped() {
    // GIVEN two GLACIER objects, one of them restored (HeadObject: ongoing-request="false")
    let ctx = Ctx::new("restored");
    put_glacier(&ctx, "cold/restored", b"thawed bytes");
    put_glacier(&ctx, "cold/frozen", b"still frozen");
    restore(&ctx, "cold/restored");
    let head = block_on(
        ctx.s3
            .head_object()
            .bucket(&ctx.src)
            .key("cold/restored")
            .send(),
    )
    .unwrap();
    assert!(
        head.restore()
            .unwrap()
            .contains("ongoing-request=\"false\""),
        "{head:?}"
    );

    // WHEN exported
    let r = ctx.export_ok(&[]);

    // THEN the restored one ships (it was skipped with "restore it and it ships in the next
    // run" however often it ran) and the other is reported
    assert_eq!(
        (r["objects"].as_u64(), r["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(r["skipped_objects"][0]["key"], "cold/frozen");
    let b = ctx.download(&ctx.job, 1);
    assert_eq!(b.extract()["cold/restored"], b"thawed bytes");

    // AND once the other is restored, it ships in the next run; the shipped one does not again
    restore(&ctx, "cold/frozen");
    let r = ctx.export_ok(&[]);
    assert_eq!(
        (r["objects"].as_u64(), r["skipped"].as_u64()),
        (Some(1), Some(0)),
        "{r}"
    );
    assert_eq!(
        ctx.download(&ctx.job, 2).extract()["cold/frozen"],
        b"still frozen"
    );
    // AND a run that finds them unchanged asks about no restore (no HEAD of either)
    let heads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = heads.clone();
    let proxy = crate::proxy::start(
        &crate::util::moto().endpoint,
        std::sync::Arc::new(move |m: &hyper::Method, pq: &str| {
            if m == hyper::Method::HEAD && pq.contains("/cold/") {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            crate::proxy::Action::Forward
        }),
    );
    let r = ctx.via(&proxy.endpoint).export(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["status"], "no_changes");
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn an_object_archived_between_listing_and_read_is_skipped_not_fatal_and_ships_later() {
    // GIVEN a planned bundle (a zero deadline stops after planning)
    let ctx = Ctx::new("tiered");
    ctx.put("hot", "hot");
    ctx.put("tiered", "goes to an archive tier");
    let run = ctx.export(&["--deadline", "0s"]);
    assert_eq!(run.code, 4, "{}", run.stderr);

    // WHEN `tiered` moves to an archive class before it is read (GET: InvalidObjectState, as
    // Intelligent-Tiering's archive tiers answer)
    block_on(
        ctx.s3
            .copy_object()
            .bucket(&ctx.src)
            .key("tiered")
            .copy_source(format!("{}/tiered", ctx.src))
            .storage_class(StorageClass::Glacier)
            .send(),
    )
    .unwrap();
    let r = ctx.export_ok(&[]);

    // THEN the bundle completes with it skipped and reported
    assert_eq!(
        (r["objects"].as_u64(), r["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    let reason = r["skipped_objects"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("InvalidObjectState"), "{reason}");
    assert_eq!(ctx.download(&ctx.job, 1).last().skipped[0].key, "tiered");

    // AND after a restore it ships in the next run
    restore(&ctx, "tiered");
    let r = ctx.export_ok(&[]);
    assert_eq!(r["objects"], 1, "{r}");
    assert_eq!(
        ctx.download(&ctx.job, 2).extract()["tiered"],
        b"goes to an archive tier"
    );
}

#[test]
fn archived_storage_classes_are_skipped_and_reported_not_fatal() {
    let ctx = Ctx::new("glacier");
    ctx.put("hot", "1");
    block_on(
        ctx.s3
            .put_object()
            .bucket(&ctx.src)
            .key("cold")
            .storage_class(StorageClass::Glacier)
            .body(ByteStream::from_static(b"frozen"))
            .send(),
    )
    .unwrap();
    let r = ctx.export_ok(&[]);
    assert_eq!(r["objects"], 1);
    assert_eq!(r["skipped"], 1);
    assert_eq!(r["skipped_objects"][0]["key"], "cold");
    assert!(
        r["skipped_objects"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("GLACIER")
    );
    let b = ctx.download(&ctx.job, 1);
    assert_eq!(b.last().skipped[0].key, "cold");
    assert_eq!(b.last().skipped[0].storage_class, "GLACIER");
}

#[test]
fn hostile_keys_get_safe_entry_names_and_exact_keys_in_the_manifest() {
    let ctx = Ctx::new("hostile");
    let long = format!("dir/{}", "n".repeat(300));
    let unsafe_keys = [
        "/absolute",
        "../escape",
        "a/../../b",
        "./dot",
        "a//b",
        "back\\slash",
        "ctl\u{1}char",
        "folder/",
        long.as_str(),
    ];
    let keys: Vec<&str> = unsafe_keys
        .iter()
        .copied()
        .chain(["ünïcödé/名前.txt", "spaces and+plus%.txt"])
        .collect();
    for (i, k) in keys.iter().enumerate() {
        ctx.put(k, format!("body {i}"));
    }
    ctx.put(
        s3_ferry::format::manifest::MANIFEST_ENTRY,
        "not the manifest",
    );
    let r = ctx.export_ok(&[]);
    assert_eq!(r["objects"], keys.len() as u64 + 1);
    let b = ctx.download(&ctx.job, 1);
    check_readers(&b.volume_paths()[0]);
    // Extracting never writes outside the target directory.
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    std::fs::create_dir(&out).unwrap();
    crate::util::run_ok(
        std::process::Command::new("unzip")
            .arg("-q")
            .arg(&b.volume_paths()[0])
            .arg("-d")
            .arg(&out),
    );
    let outside: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("out")]);
    let files = b.extract();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(files[*k], format!("body {i}").as_bytes(), "key {k:?}");
    }
    let by_key: BTreeMap<_, _> = b
        .objects()
        .into_iter()
        .map(|o| (o.key.clone(), o.entry))
        .collect();
    assert_eq!(
        by_key["ünïcödé/名前.txt"],
        format!("{}/ünïcödé/名前.txt", ctx.src)
    );
    assert_eq!(
        by_key["spaces and+plus%.txt"],
        format!("{}/spaces and+plus%.txt", ctx.src)
    );
    for bad in unsafe_keys {
        assert!(
            by_key[bad].starts_with("_escaped/"),
            "{bad:?} → {}",
            by_key[bad]
        );
    }
    assert!(by_key[s3_ferry::format::manifest::MANIFEST_ENTRY].starts_with(&ctx.src));
    assert_eq!(b.manifests[0].objects.len(), keys.len() + 1);
}

#[test]
fn bad_input_fails_with_a_message_naming_it() {
    let ctx = Ctx::new("badinput");
    let run = ctx.export_with("s3://no-such-bucket-here", &ctx.table, &[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no-such-bucket-here"), "{}", run.stderr);
    assert_eq!(ctx.state().sequence, 0);
    assert!(
        ctx.state().lease_owner.is_none(),
        "a failed run must release its lease"
    );

    let src = ctx.source_uri();
    let run = ctx.export_with(&src, "no-such-table", &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("ferry init --table no-such-table"),
        "{}",
        run.stderr
    );

    let run = ctx.export_with("bucket-without-scheme", &ctx.table, &[]);
    assert_eq!(run.code, 2, "a bad flag value is a usage error");
    assert!(run.stderr.contains("s3://"), "{}", run.stderr);

    let run = ctx.export_with(&src, &ctx.table, &["--part-size", "1MiB"]);
    assert_eq!(run.code, 2, "a bad flag value is a usage error");
    assert!(run.stderr.contains("part size"), "{}", run.stderr);
}

#[test]
fn deflate_volumes_round_trip_in_every_reader() {
    // GIVEN compressible small objects and one large object (streamed, so it has a descriptor)
    let ctx = Ctx::new("deflate");
    let text = "the same line again and again\n".repeat(2000);
    ctx.put("a.txt", text.clone());
    let big: Vec<u8> = text
        .as_bytes()
        .iter()
        .cycle()
        .take(9 * 1024 * 1024)
        .copied()
        .collect();
    ctx.put("big.log", big.clone());

    // WHEN exported with --compression deflate
    let r = ctx.export_ok(&["--compression", "deflate"]);

    // THEN the volume is much smaller than the data and every reader gets the bytes back
    let b = ctx.download(&ctx.job, 1);
    assert!(b.summary.volumes[0].size * 10 < r["bytes"].as_u64().unwrap());
    check_readers(&b.volume_paths()[0]);
    let files = b.extract();
    assert_eq!(files["a.txt"], text.as_bytes());
    assert_eq!(files["big.log"], big);

    // AND ferry's own reader verifies and imports them (entries inflating past one read)
    let dir = b.dir.path().to_str().unwrap();
    let run = ctx.ferry(&["verify", dir]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mirror = tempfile::tempdir().unwrap();
    let run = ctx.ferry(&["import", dir, "--to-dir", mirror.path().to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read(mirror.path().join("a.txt")).unwrap(),
        text.as_bytes()
    );
    assert_eq!(std::fs::read(mirror.path().join("big.log")).unwrap(), big);
    let dest = ctx.bucket("deflate-dest");
    let run = ctx.ferry(&[
        "import",
        dir,
        "--to",
        &format!("s3://{dest}"),
        "--state",
        mirror.path().join("s3-state.json").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ctx.get(&dest, "big.log").unwrap(), big);
}

#[test]
fn a_versioned_source_ships_its_current_versions_and_a_delete_marker_as_a_deletion() {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    // GIVEN a versioned source: an object with two versions, one deleted (a delete marker)
    let ctx = Ctx::new("versions");
    block_on(
        ctx.s3
            .put_bucket_versioning()
            .bucket(&ctx.src)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send(),
    )
    .unwrap();
    ctx.put("doc.txt", "version one");
    ctx.put("gone.txt", "soon deleted");
    ctx.export_ok(&[]);
    ctx.put("doc.txt", "version two");
    ctx.delete("gone.txt");
    let current = block_on(ctx.s3.head_object().bucket(&ctx.src).key("doc.txt").send())
        .unwrap()
        .version_id()
        .unwrap()
        .to_string();

    // WHEN the delta is exported
    let r = ctx.export_ok(&[]);

    // THEN it carries the current version, naming it, and the delete marker as a deletion;
    // the version before is not shipped
    assert_eq!(
        (r["objects"].as_u64(), r["deleted"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    let b = ctx.download(&ctx.job, 2);
    let objects = b.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].key, "doc.txt");
    assert_eq!(objects[0].version_id.as_deref(), Some(current.as_str()));
    assert_eq!(b.extract()["doc.txt"], b"version two");
    assert_eq!(b.last().deleted, ["gone.txt"]);
}
