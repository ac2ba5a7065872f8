//! The fast tier's export logic on the in-memory stores: how volumes are cut (by bytes, by
//! entries, an object larger than the cap alone), that streamed objects keep within the cap,
//! and that multipart objects cross in their own parts. Every volume still opens in the real
//! readers.

use s3_ferry::format::manifest::ObjectHeaders;
use s3_ferry::store::{Fault, ObjectStore, Part, PutMode, Rule};

use crate::util::{assert_capped, block_on, check_readers, pseudo_random};
use crate::world::World;

#[test]
fn volumes_rotate_by_bytes_and_by_entries() {
    // GIVEN 12 objects of 400 KiB
    let w = World::new("rotate");
    let objects = (0..12)
        .map(|i| (format!("o{i:02}"), pseudo_random(400 * 1024, i)))
        .collect::<Vec<_>>();
    w.put_many(objects.clone());

    // WHEN volumes are capped at 1 MiB
    let r = w.export_with(|c| c.tuning.volume_size = 1024 * 1024);

    // THEN every volume holds 2 objects and stays under the cap, each a standalone zip
    let b = w.download(&w.job, 1);
    assert_eq!(r["volumes"].as_array().unwrap().len(), 6);
    for (v, info) in b.volume_paths().iter().zip(&b.summary.volumes) {
        assert!(
            info.size <= 1024 * 1024,
            "{} is {} bytes",
            info.name,
            info.size
        );
        assert_eq!(info.objects, 2);
        check_readers(v);
    }
    assert_eq!(b.last().earlier_volumes.len(), 5);
    assert_eq!(b.last().earlier_volumes, b.summary.volumes[..5].to_vec());
    let files = b.extract();
    for (k, body) in &objects {
        assert_eq!(&files[k], body);
    }

    // AND an object bigger than the cap travels alone in its own volume
    let lone = pseudo_random(3 * 1024 * 1024 / 2, 99);
    w.put("zz-lone", lone.clone());
    // (the final manifest then gets a volume of its own: it does not fit beside it)
    let r = w.export_with(|c| c.tuning.volume_size = 1024 * 1024);
    let b = w.download(&w.job, 2);
    assert_eq!(r["volumes"].as_array().unwrap().len(), 2);
    assert_eq!(b.summary.volumes[0].objects, 1);
    assert!(b.summary.volumes[0].size > 1024 * 1024);
    assert_eq!(b.summary.volumes[1].objects, 0);
    assert_eq!(b.extract()["zz-lone"], lone);

    // AND by entries: 5 per volume → 3 volumes
    let r = w.export_job(&format!("{}-e", w.job), |c| c.tuning.volume_entries = 5);
    assert_eq!(r["volumes"].as_array().unwrap().len(), 3);
}

#[test]
fn streamed_objects_near_the_cap_stay_within_it() {
    // GIVEN objects larger than the whole-object limit (streamed in ranges) that nearly fill a
    // 20 MiB volume two at a time, and small ones after them
    let w = World::new("capstream");
    let big = 9 * 1024 * 1024 + 900 * 1024;
    let mut objects: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("a-big{i}"), pseudo_random(big, i)))
        .collect();
    objects.extend((0..300).map(|i| (format!("b-small{i:04}"), pseudo_random(4000, 100 + i))));
    w.put_many(objects.clone());
    // WHEN exported with a 20 MiB cap
    w.export_with(|c| c.tuning.volume_size = 20 * 1024 * 1024);
    // THEN no volume is over it
    assert_capped(&w, 1, 20 * 1024 * 1024, 0.5, false);
    let files = w.download(&w.job, 1).extract();
    for (k, body) in &objects {
        assert_eq!(&files[k], body, "{k}");
    }
}

/// `bucket/key` uploaded in parts of these sizes (of `body`, in order); its ETag.
fn put_in_parts(w: &World, bucket: &str, key: &str, body: &[u8], sizes: &[usize]) -> String {
    block_on(async {
        let s = &w.objects;
        let id = s
            .create_upload(bucket, key, &ObjectHeaders::default())
            .await
            .unwrap();
        let (mut parts, mut at) = (Vec::<Part>::new(), 0);
        for (i, n) in sizes.iter().enumerate() {
            let bytes = bytes::Bytes::copy_from_slice(&body[at..at + n]);
            parts.push(
                s.upload_part(bucket, key, &id, i as i32 + 1, bytes)
                    .await
                    .unwrap(),
            );
            at += n;
        }
        assert_eq!(at, body.len());
        let parts = &parts;
        s.complete_upload(bucket, key, &id, parts, PutMode::Overwrite)
            .await
            .unwrap()
            .unwrap()
    })
}

fn etag(w: &World, bucket: &str, key: &str) -> String {
    block_on(w.objects.head(bucket, key))
        .unwrap()
        .unwrap()
        .meta
        .etag
}

#[test]
fn multipart_objects_arrive_in_their_own_parts_with_their_etags() {
    // GIVEN objects uploaded in uneven parts (5 + 6 + 1 MiB, and 5 MiB + 1 byte, which is small
    // enough for one PUT), one in a single part, and one uploaded whole
    const MIB: usize = 1024 * 1024;
    let w = World::new("layout");
    let layouts: [(&str, &[usize]); 3] = [
        ("uneven", &[5 * MIB, 6 * MIB, MIB]),
        ("small-two", &[5 * MIB, 1]),
        ("one-part", &[3 * MIB]),
    ];
    let mut source = Vec::new();
    for (i, (key, sizes)) in layouts.iter().enumerate() {
        let body = pseudo_random(sizes.iter().sum(), i as u64);
        let etag = put_in_parts(&w, &w.src, key, &body, sizes);
        assert!(etag.ends_with(&format!("-{}", sizes.len())), "{etag}");
        source.push((key.to_string(), body, etag));
    }
    w.put("whole", pseudo_random(6 * MIB, 9));
    source.push((
        "whole".into(),
        pseudo_random(6 * MIB, 9),
        etag(&w, &w.src, "whole"),
    ));

    // WHEN exported and imported into another bucket
    w.export();
    let b = w.download(&w.job, 1);
    let line = |k: &str| {
        b.manifests
            .iter()
            .flat_map(|m| &m.objects)
            .find(|o| o.key == k)
            .cloned()
    };
    let uneven = serde_json::to_value(line("uneven").unwrap()).unwrap();
    assert_eq!(
        uneven["part_layout"],
        serde_json::json!([[5 * MIB, 1], [6 * MIB, 1], [MIB, 1]])
    );
    assert!(line("whole").unwrap().part_layout.is_none());
    let dest = w.bucket("layout-dest");
    let home = tempfile::tempdir().unwrap();
    let target = w.bucket_target(&w.clients.s3, &format!("s3://{dest}"));
    w.import(&[b.dir.path()], target, &home.path().join("state.json"));

    // THEN every object has its bytes and the source's ETag, and no upload is left open
    for (key, body, want) in &source {
        assert_eq!(w.get(&dest, key).as_deref(), Some(&body[..]), "{key}");
        assert_eq!(&etag(&w, &dest, key), want, "{key}");
    }
    assert_eq!(w.open_uploads_in(&dest), 0);
}

#[test]
fn metadata_changes_ship_without_their_bytes_and_apply_in_place() {
    // GIVEN a source with Object Lock: tagged objects (one uploaded in parts), one under a
    // legal hold, one with a content type, and one whose bytes will change
    const MIB: usize = 1024 * 1024;
    let w = World::new("restate");
    w.objects.create_bucket_with_object_lock(&w.src);
    let put = |key: &str, h: ObjectHeaders| {
        let body = bytes::Bytes::from(format!("bytes of {key}").into_bytes());
        block_on(w.objects.put(&w.src, key, body, &h, PutMode::Overwrite)).unwrap();
    };
    let tags = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    put(
        "tagged",
        ObjectHeaders {
            tags: tags(&[("team", "blue")]),
            ..Default::default()
        },
    );
    put(
        "held",
        ObjectHeaders {
            object_lock_legal_hold: true,
            ..Default::default()
        },
    );
    put(
        "typed",
        ObjectHeaders {
            content_type: Some("text/plain".into()),
            ..Default::default()
        },
    );
    put("content", ObjectHeaders::default());
    let parts_body = pseudo_random(6 * MIB, 3);
    let parts_etag = put_in_parts(&w, &w.src, "parts", &parts_body, &[5 * MIB, MIB]);

    // WHEN it is exported with --scan-metadata and imported into a bucket with Object Lock and
    // into a folder
    w.export_with(|c| c.scan_metadata = true);
    let dest = w.bucket("restate-dest");
    w.objects.create_bucket_with_object_lock(&dest);
    let (home, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let import = |seq: u64| {
        let b = w.download(&w.job, seq);
        let bucket = w.bucket_target(&w.clients.s3, &format!("s3://{dest}"));
        let r = w.import(&[b.dir.path()], bucket, &home.path().join("bucket.json"));
        w.import(
            &[b.dir.path()],
            w.dir_target(dir.path()),
            &dir.path().join(".ferry/state.json"),
        );
        r
    };
    import(1);
    let files_before = crate::util::dir_snapshot(dir.path());

    // AND tags change (on the multipart object too) and the legal hold is released (ETag and
    // LastModified stay), `typed` is copied onto itself with another content type (its
    // LastModified moves) and `content` is rewritten
    let src = w.src.clone();
    w.objects.change_headers(&src, "tagged", |h| {
        h.tags = tags(&[("team", "red"), ("cost-centre", "42")])
    });
    w.objects
        .change_headers(&src, "parts", |h| h.tags = tags(&[("tier", "gold")]));
    w.objects
        .change_headers(&src, "held", |h| h.object_lock_legal_hold = false);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let typed = ObjectHeaders {
        content_type: Some("text/markdown".into()),
        ..Default::default()
    };
    block_on(w.objects.copy(&src, "typed", "typed", Some(&typed))).unwrap();
    w.put("content", b"new bytes".to_vec());

    // THEN a plan without the scan sees the copy (metadata-only) and the rewrite only; with
    // it, every change, reading each object's metadata (tags where there are any)
    let plain = w.plan_with(|_| {});
    assert_eq!(
        (plain["metadata_only"].as_u64(), plain["modified"].as_u64()),
        (Some(1), Some(1)),
        "{plain}"
    );
    let scan = w.plan_with(|c| c.scan_metadata = true);
    assert_eq!(scan["metadata_only"], 4, "{scan}");
    assert_eq!(scan["head_object"], 5, "{scan}");
    assert_eq!(scan["get_object_tagging"], 2, "{scan}");

    // WHEN exported with the scan
    let r = w.export_with(|c| c.scan_metadata = true);
    // THEN the bundle carries the new bytes of `content` only, and four metadata-only entries
    assert_eq!(
        (r["objects"].as_u64(), r["metadata_only"].as_u64()),
        (Some(1), Some(4)),
        "{r}"
    );
    let b = w.download(&w.job, 2);
    let shipped: Vec<_> = b
        .manifests
        .iter()
        .flat_map(|m| &m.objects)
        .map(|o| o.key.as_str())
        .collect();
    assert_eq!(shipped, ["content"]);
    let restated: Vec<_> = b
        .last()
        .metadata_only
        .iter()
        .map(|m| m.key.as_str())
        .collect();
    assert_eq!(restated, ["held", "parts", "tagged", "typed"]);

    // WHEN it is imported
    let r = import(2);
    assert_eq!(r["bundles"][0]["metadata_only"], 4, "{r}");
    // THEN the bucket's objects have the source's tags, legal hold and content type, the
    // multipart one keeps its ETag, and every object's bytes are the source's
    let meta = |bucket: &str, key: &str| {
        let mut m = block_on(w.clients.s3.stat_with_tags(bucket, key))
            .unwrap()
            .unwrap();
        m.headers.checksum = None;
        m.headers.checksum_algorithm = None;
        m.headers.checksum_type = None;
        m.headers
    };
    for key in ["tagged", "held", "typed", "content", "parts"] {
        assert_eq!(meta(&dest, key), meta(&src, key), "{key}");
        assert_eq!(w.get(&dest, key), w.get(&src, key), "{key}");
    }
    assert_eq!(etag(&w, &dest, "parts"), parts_etag);
    assert!(!meta(&dest, "held").object_lock_legal_hold);
    // AND the folder's files are as they were but `content`'s, and its key index records the
    // new tags
    let files = crate::util::dir_snapshot(dir.path());
    assert_eq!(files.len(), files_before.len());
    for (path, before) in &files_before {
        if !path.ends_with("content") {
            assert_eq!(&files[path], before, "{path}");
        }
    }
    let index = s3_ferry::import::ledger::file_index_entries(&dir.path().join(".ferry/state.json"))
        .unwrap();
    let kept = index["tagged"].kept.clone().unwrap();
    assert_eq!(kept.tags, tags(&[("team", "red"), ("cost-centre", "42")]));
    assert!(index["held"].kept.is_none(), "the hold is released");

    // AND the next scan finds nothing: the inventory records what was shipped
    let r = w.export_with(|c| c.scan_metadata = true);
    assert_eq!(r["status"], "no_changes", "{r}");
}

#[test]
fn the_report_counts_the_runs_own_requests_by_operation() {
    // GIVEN a source of 20 small objects, exported through a decorator that counts what the
    // store receives
    let w = World::new("requests");
    w.put_many(
        (0..20)
            .map(|i| (format!("k/{i:02}"), vec![i as u8; 64]))
            .collect(),
    );
    let (scripted, clients) = w.scripted();
    let cfg = w.export_config();
    // WHEN the baseline is exported, then a run with no changes
    let first = block_on(s3_ferry::export::run(
        &clients.for_run(),
        &cfg,
        &s3_ferry::export::NoProgress,
    ))
    .unwrap();
    let s3_first: std::collections::BTreeMap<String, u64> = scripted
        .counts()
        .into_iter()
        .map(|(op, n)| (format!("s3:{op}"), n))
        .collect();
    let second = block_on(s3_ferry::export::run(
        &clients.for_run(),
        &cfg,
        &s3_ferry::export::NoProgress,
    ))
    .unwrap();
    // THEN the report's S3 counts are exactly what the store received in that run
    let s3 = |r: &s3_ferry::export::Report| -> std::collections::BTreeMap<String, u64> {
        r.requests
            .iter()
            .filter(|(k, _)| k.starts_with("s3:"))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    assert_eq!(
        s3(&first),
        s3_first,
        "report {:?}\nstore {:?}",
        first.requests,
        s3_first
    );
    assert_eq!(first.requests["dynamodb:UpdateItem:acquire"], 1);
    assert_eq!(first.requests["dynamodb:UpdateItem:commit"], 1);
    // AND the second run counts only its own (each run in a process has its own)
    let total: u64 = scripted.counts().values().sum();
    let both: u64 = s3(&first).values().sum::<u64>() + s3(&second).values().sum::<u64>();
    assert_eq!(total, both);
    assert_eq!(second.status, s3_ferry::export::Status::NoChanges);
    assert_eq!(second.requests["dynamodb:UpdateItem:acquire"], 1);
    assert!(!second.requests.contains_key("s3:GetObject:object"));
    eprintln!(
        "baseline of 20: {:?}\nno changes: {:?}",
        first.requests, second.requests
    );
}

#[test]
fn a_small_delta_opens_no_upload_and_reads_back_nothing_it_needs_not() {
    // GIVEN a baseline of 20 small objects, and then one object added
    let w = World::new("budget");
    w.put_many(
        (0..20)
            .map(|i| (format!("k/{i:02}"), vec![i as u8; 64]))
            .collect(),
    );
    let cfg = w.export_config();
    let export = || {
        block_on(s3_ferry::export::run(
            &w.clients.for_run(),
            &cfg,
            &s3_ferry::export::NoProgress,
        ))
        .unwrap()
    };
    export();
    w.put_many(vec![("k/new".to_string(), b"one more".to_vec())]);
    // WHEN the delta is exported, then a run with no changes
    let delta = export();
    let none = export();
    // THEN every small file of the delta (inventory, candidates, volume) is one PutObject: no
    // multipart upload is opened, so none is swept for before the commit either
    let n = |r: &s3_ferry::export::Report, op: &str| r.requests.get(op).copied().unwrap_or(0);
    for op in [
        "s3:CreateMultipartUpload",
        "s3:UploadPart",
        "s3:CompleteMultipartUpload",
        "s3:AbortMultipartUpload",
    ] {
        assert_eq!(n(&delta, op), 0, "{op}: {:?}", delta.requests);
        assert_eq!(n(&none, op), 0, "{op}: {:?}", none.requests);
    }
    assert_eq!(
        n(&delta, "s3:ListMultipartUploads"),
        2,
        "{:?}",
        delta.requests
    );
    // AND the previous inventory's index is read with one GET (no HEAD before it)
    assert_eq!(n(&none, "s3:HeadObject"), 1, "{:?}", none.requests);
    // AND the whole of each stays within its budget (measured 37 and 10 on 2026-12-07;
    // before issue 29: 47 and 19)
    let total = |r: &s3_ferry::export::Report| r.requests.values().sum::<u64>();
    assert!(total(&delta) <= 37, "{:?}", delta.requests);
    assert!(total(&none) <= 10, "{:?}", none.requests);
    assert_eq!(none.status, s3_ferry::export::Status::NoChanges);
    // AND the delta's bundle holds the new object
    let got = w.download(&w.job, delta.sequence).extract();
    assert_eq!(got["k/new"], b"one more".to_vec());
}

#[test]
fn a_server_whose_listing_has_milliseconds_and_whose_reads_have_seconds_sees_no_false_changes() {
    // GIVEN a server that lists LastModified in milliseconds and answers GET and HEAD with
    // HTTP dates (whole seconds), as MinIO and other S3-compatible servers do, and a baseline
    // of 20 objects written off the whole second
    let w = World::new("dates");
    let (scripted, clients) = w.scripted();
    scripted.rule(Rule::every("GetObject", Fault::HttpDates));
    scripted.rule(Rule::every("HeadObject", Fault::HttpDates));
    while !(100..=500).contains(&(s3_ferry::clock::now_ms() % 1000)) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    w.put_many(
        (0..20)
            .map(|i| (format!("k/{i:02}"), vec![i as u8; 64]))
            .collect(),
    );
    let cfg = w.export_config();
    let export = || {
        block_on(s3_ferry::export::run(
            &clients.for_run(),
            &cfg,
            &s3_ferry::export::NoProgress,
        ))
        .unwrap()
    };
    export();
    // WHEN one object is added and the delta exported
    w.put_many(vec![("k/new".to_string(), b"one more".to_vec())]);
    let heads = scripted.count("HeadObject");
    let delta = export();
    // THEN only the new object ships: none of the 20 is read again or shipped as a
    // metadata-only change (each would be, were the GET's second recorded over the listing's
    // milliseconds)
    assert_eq!(delta.objects, 1, "{delta:?}");
    assert_eq!(delta.metadata_only, 0, "{delta:?}");
    assert!(
        scripted.count("HeadObject") - heads <= 1,
        "{:?}",
        scripted.counts()
    );
}
