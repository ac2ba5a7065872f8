//! The fast tier's run logic (in process, on the in-memory stores, faults through the
//! `Scripted` decorator): what a run does when it is stopped between batches, and when an
//! object will not hold still while it is read.

use std::sync::Arc;

use s3_ferry::store::{Fault, Rule};

use crate::util::{block_on, content};
use crate::world::World;

#[test]
fn a_baselines_removals_go_in_batches_and_a_deadline_stops_between_them() {
    // GIVEN 1,200 objects imported into a bucket, then deleted from the source, and a new
    // baseline (`--full`) that no longer lists them: 1,200 keys ferry wrote to remove
    let w = World::new("strays");
    w.put("keep", "kept");
    w.put_many(
        (0..1_200)
            .map(|i| (format!("s/{i:05}"), b"stray".to_vec()))
            .collect(),
    );
    w.export();
    let dest = w.bucket("strays-dest");
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("s.json");
    let b1 = w.download(&w.job, 1);
    let to = format!("s3://{dest}");
    let r = w.import(
        &[b1.dir.path()],
        w.bucket_target(&w.clients.s3, &to),
        &state_file,
    );
    assert_eq!(r["complete"], true, "{r}");
    w.delete_keys((0..1_200).map(|i| format!("s/{i:05}")));
    w.export_with(|c| c.full = true);
    let b2 = w.download(&w.job, 2);

    // WHEN it is imported with a deadline that has passed (as the import function's hop ends),
    // its delete requests counted
    let (counted, clients) = w.scripted();
    let cfg = s3_ferry::import::ImportConfig {
        approvals: None,
        force_reason: None,
        target: w.bucket_target(&clients.s3, &to),
        dry_run: false,
        force: false,
        concurrency: 8,
        deadline: Some(std::time::Instant::now()),
        trust: Vec::new(),
        delete_unlisted: false,
        run: clients.s3.run().clone(),
        skip_object_lock: false,
        screen: None,
    };
    let bundles = block_on(s3_ferry::import::bundle::discover(
        &[b2.dir.path().to_str().unwrap().to_string()],
        None,
        None,
    ))
    .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let mut ledger = block_on(s3_ferry::import::ledger::FileLedger::open(&state_file)).unwrap();
        let report = block_on(s3_ferry::import::run(
            ledger.as_mut(),
            &cfg,
            &bundles,
            &s3_ferry::progress::NoProgress,
        ))
        .unwrap();
        block_on(ledger.close()).unwrap();
        statuses.push(report.bundles[0].status);
        if report.complete {
            break;
        }
    }

    // THEN the first call writes the volume and stops before the removals, the next two
    // remove the strays 1,000 at a time, one DeleteObjects request each, stopping between
    // them (it was 1,200 DeleteObject requests, with no deadline check), and only the kept
    // key is left
    use s3_ferry::import::BundleStatus::{Applied, Continue};
    assert_eq!(statuses, [Continue, Continue, Applied]);
    assert_eq!(counted.count("DeleteObject"), 0);
    assert_eq!(counted.count("DeleteObjects"), 2);
    assert_eq!(w.keys(&dest, ""), ["keep"]);
}

#[test]
fn an_object_that_changes_every_time_it_is_read_is_skipped_after_three_runs() {
    // GIVEN a large object (read in ranges) whose every later range finds it changed, as an
    // object rewritten faster than it can be streamed does, and a small steady one
    let w = World::new("b6");
    w.put("steady", "steady");
    w.put("hot.bin", vec![3u8; 20 << 20]);
    let (faults, clients) = w.scripted();
    faults.rule(
        Rule::every("GetObject", Fault::Changed)
            .on_keys("hot.bin")
            .on_later_ranges(),
    );
    let cfg = w.export_config();

    // WHEN the export runs again and again
    let mut outcomes = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        match block_on(s3_ferry::export::run(
            &clients.for_run(),
            &cfg,
            &s3_ferry::progress::NoProgress,
        )) {
            Ok(r) => {
                outcomes.push("complete".to_string());
                last = Some(serde_json::to_value(&r).unwrap());
                break;
            }
            Err(e) => {
                let message = s3_ferry::error_chain(&e);
                assert!(
                    message.contains("changed while it was being read"),
                    "{message}"
                );
                assert!(e.is_retryable(), "{message}");
                outcomes.push("retryable".to_string());
            }
        }
    }

    // THEN three runs fail on it (retryable: run again), and the fourth completes the bundle
    // with it skipped and reported (every run failed on it: the bundle could never complete)
    assert_eq!(
        outcomes,
        ["retryable", "retryable", "retryable", "complete"]
    );
    let r = last.unwrap();
    assert_eq!(
        (r["objects"].as_u64(), r["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(r["skipped_objects"][0]["key"], "hot.bin");
    // AND once it holds still, the next run ships it
    faults.clear();
    let r = w.export();
    assert_eq!(r["objects"], 1, "{r}");
    assert_eq!(w.download(&w.job, 2).extract()["hot.bin"].len(), 20 << 20);
}

#[test]
fn small_changed_objects_are_fetched_while_the_listing_still_runs() {
    use s3_ferry::store::Gate;
    // GIVEN 2,500 new objects: three listing pages of 1,000, the third held at a gate
    let w = World::new("overlap");
    w.put_many(
        (0..2_500)
            .map(|i| (format!("k/{i:05}"), format!("object {i}").into_bytes()))
            .collect(),
    );
    let (seen, clients) = w.scripted();
    let gate = Gate::new();
    seen.rule(Rule::every("ListObjectsV2", Fault::Pause(gate.clone())).from_the(3, 1));
    let cfg = w.export_config();

    // WHEN exported
    let run = crate::world::export_in_thread(clients.for_run(), cfg);
    block_on(gate.reached());

    // THEN objects are read while the listing's last page is still to come
    let read = |log: &[(&str, String)]| {
        log.iter()
            .any(|(op, key)| *op == "GetObject" && key.starts_with("k/"))
    };
    let waited = std::time::Instant::now();
    while !read(&seen.log()) {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "no object was read before the last of three listing pages"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    gate.open();
    let report = run.join().unwrap().unwrap();
    assert_eq!(report.objects, 2_500);
    let pages = seen
        .log()
        .iter()
        .filter(|(op, key)| *op == "ListObjectsV2" && key.is_empty())
        .count();
    assert_eq!(pages, 3);
}

/// `n` objects `k/0000…` of `size + i` bytes each.
fn seed(w: &World, n: usize, size: usize) {
    w.put_many(
        (0..n)
            .map(|i| (format!("k/{i:04}"), vec![(i % 251) as u8; size + i]))
            .collect(),
    );
}

/// `ferry verify DIR --json` of a downloaded bundle (no AWS needed); fails the test unless it
/// exits 0.
fn verify_folder(b: &crate::util::Bundle) {
    crate::util::run_ok(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry")).args([
            "verify",
            b.dir.path().to_str().unwrap(),
            "--json",
        ]),
    );
}

#[test]
fn sharded_exports_carry_what_one_shard_carries() {
    // GIVEN two jobs over the same bucket: one cut into shards, one in a single stream
    let w = World::new("shards");
    seed(&w, 60, 2_000);
    let other = format!("{}-one", w.job);
    let r = w.export_with(|c| {
        c.tuning.volume_entries = 4;
        c.tuning.shards = 8;
    });
    assert_eq!(r["shards"], 8, "{r}");
    w.export_job(&other, |c| c.tuning.volume_entries = 4);
    let check = |seq: u64| {
        let split = w.download(&w.job, seq);
        let one = w.download(&other, seq);
        assert_eq!(content(&split), content(&one), "bundle {seq}");
        assert_eq!(split.extract(), one.extract(), "bundle {seq}");
        split.sha256sum_check();
        // the far side takes it as it takes any bundle: volumes 1..=n, the last one final
        verify_folder(&split);
        for (i, m) in split.manifests.iter().enumerate() {
            assert_eq!(m.volume as usize, i + 1);
        }
        split
    };
    let first = check(1);
    assert!(
        first.summary.volumes.len() > 60 / 4,
        "{}",
        first.summary.volumes.len()
    );
    // shards seal the bundle with an objects-less last volume carrying the final manifest
    assert!(first.manifests.last().unwrap().objects.is_empty());

    // WHEN a delta with every kind of change is exported in 4 shards, stopped at every deadline
    w.put("k/new", vec![7; 20_000]);
    w.put("k/0001", "changed");
    w.delete("k/0002");
    let moved = w.get(&w.src, "k/0003").unwrap();
    w.delete("k/0003");
    w.put("moved/0003", moved);
    for i in 10..30 {
        w.put(&format!("k/{i:04}"), format!("v2 {i}"));
    }
    let mut hops = 0;
    let last = loop {
        hops += 1;
        assert!(hops < 40, "continuation does not converge");
        let r = w.export_with(|c| {
            c.tuning.volume_entries = 4;
            c.tuning.shards = 4;
            c.deadline = Some(std::time::Instant::now());
        });
        if r["status"] == "complete" {
            break r;
        }
        assert_eq!(r["status"], "continue", "{r}");
    };
    w.export_job(&other, |c| c.tuning.volume_entries = 4);

    // THEN it took several hops and the bundle carries what the one-stream bundle carries
    assert!(hops >= 3, "only {hops} hops");
    assert_eq!(last["objects"], 22);
    assert_eq!(last["shards"], 4);
    check(2);
    assert_eq!(w.state().sequence, 2);
    assert_eq!(w.open_uploads_in(&w.exp), 0);
}

#[test]
fn state_machine_steps_in_separate_workers_carry_what_one_shard_carries() {
    use s3_ferry::export::{PlanStep, Steps};
    // GIVEN two jobs over the same bucket: one exported by the state machine's steps
    let w = World::new("steps");
    seed(&w, 40, 2_000);
    let other = format!("{}-one", w.job);
    let mut cfg = w.export_config();
    cfg.tuning.volume_entries = 4;
    cfg.tuning.shards = 6;
    // every shard step stops after one object, as a Lambda at its deadline would
    let mut hurried = cfg.clone();
    hurried.deadline = Some(std::time::Instant::now());
    // (each step in its own run context, as each Lambda invocation is)
    let clients = |_: ()| w.clients.for_run();
    fn step<'a>(
        cfg: &'a s3_ferry::config::ExportConfig,
        owner: &'a str,
        clients: &'a s3_ferry::store::aws::Clients,
    ) -> Steps<'a> {
        Steps {
            clients,
            cfg,
            owner,
        }
    }
    let ready = |p: PlanStep| match p {
        PlanStep::Ready {
            sequence,
            shards,
            bucket,
            shard_list,
        } => (sequence, shards, bucket, shard_list),
        other => panic!("not ready: {other:?}"),
    };

    // WHEN run A plans and ships two objects of every shard, in separate step calls
    let (seq, shards, bucket, list) =
        ready(block_on(step(&cfg, "sfn-a", &clients(())).plan()).unwrap());
    assert_eq!((seq, shards), (1, 6));
    let listed: serde_json::Value =
        serde_json::from_slice(&w.get(&bucket, &list).unwrap()).unwrap();
    assert_eq!(
        listed,
        serde_json::json!(
            (0..6)
                .map(|k| serde_json::json!({"shard": k}))
                .collect::<Vec<_>>()
        )
    );
    for _ in 0..2 {
        for k in (0..6).rev() {
            let s = block_on(step(&hurried, "sfn-a", &clients(())).shard(seq, k)).unwrap();
            assert!(!s.done, "shard {k} done after {} of {}", s.cursor, s.count);
        }
    }
    // THEN its commit is refused while shards are unfinished, and another run cannot step in
    let e = block_on(step(&cfg, "sfn-a", &clients(())).commit(seq)).unwrap_err();
    assert!(
        matches!(e, s3_ferry::error::Error::ShardUnfinished { cursor: 2, .. }),
        "{e}"
    );
    let e = block_on(step(&cfg, "sfn-b", &clients(())).shard(seq, 0)).unwrap_err();
    assert!(matches!(e, s3_ferry::error::Error::LeaseHeld { .. }), "{e}");

    // WHEN run A fails (its failure step releases the lease) and run B takes the bundle over
    block_on(step(&cfg, "sfn-a", &clients(())).abandon()).unwrap();
    let (seq_b, shards_b, ..) = ready(block_on(step(&cfg, "sfn-b", &clients(())).plan()).unwrap());
    assert_eq!((seq_b, shards_b), (1, 6), "run B resumes the same bundle");
    // run A's steps are fenced off from now on
    let e = block_on(step(&cfg, "sfn-a", &clients(())).shard(seq, 1)).unwrap_err();
    assert!(matches!(e, s3_ferry::error::Error::LeaseHeld { .. }), "{e}");
    let mut steps = 0;
    for k in 0..6 {
        loop {
            steps += 1;
            assert!(steps < 100, "shard loops do not converge");
            if block_on(step(&hurried, "sfn-b", &clients(())).shard(seq, k))
                .unwrap()
                .done
            {
                break;
            }
        }
    }
    let report = block_on(step(&cfg, "sfn-b", &clients(())).commit(seq)).unwrap();
    w.export_job(&other, |c| c.tuning.volume_entries = 4);

    // THEN the bundle is the one-stream bundle: objects, bytes, volumes 1..=n, verified
    assert_eq!((report.objects, report.shards), (40, 6));
    assert_eq!(w.state().sequence, 1);
    let split = w.download(&w.job, 1);
    let one = w.download(&other, 1);
    assert_eq!(content(&split), content(&one));
    assert_eq!(split.extract(), one.extract());
    split.sha256sum_check();
    for (i, m) in split.manifests.iter().enumerate() {
        assert_eq!(m.volume as usize, i + 1);
    }
    verify_folder(&split);
    assert_eq!(w.open_uploads_in(&w.exp), 0);
    // a retried commit step of the committed bundle answers its report and changes nothing
    let again = block_on(step(&cfg, "sfn-b", &clients(())).commit(seq)).unwrap();
    assert_eq!(again.bundle_digest, report.bundle_digest);
    let state = w.state();
    assert_eq!((state.sequence, state.lease_owner), (1, None));
}

#[test]
fn an_import_that_loses_its_lease_writes_and_deletes_nothing_more() {
    use s3_ferry::store::Gate;
    // GIVEN a bundle of six objects, and an import into a bucket with its state in the table
    // (lease of 1.5 s, renewed every half second) held at a gate on its first object PUT
    let w = World::new("implease");
    w.put_many(
        (0..6)
            .map(|i| (format!("a/{i}"), vec![i as u8; 100]))
            .collect(),
    );
    w.export();
    let b1 = w.download(&w.job, 1);
    let dest = w.bucket("implease-dest");
    let (seen, clients) = w.scripted();
    let gate = Gate::new();
    seen.rule(Rule::every("PutObject", Fault::Pause(gate.clone())).on_keys("a/"));
    let run = s3_ferry::context::RunContext::new();
    let store = clients.s3.in_run(run.clone());
    let (table, job) = (w.clients.table(&w.table), w.job.clone());
    let (dest_uri, source) = (
        format!("s3://{dest}"),
        b1.dir.path().to_str().unwrap().to_string(),
    );
    let importing = {
        let (table, job, run) = (table.clone(), job.clone(), run.clone());
        crate::world::on_own_thread(move || async move {
            let bundles = s3_ferry::import::bundle::discover(&[source], None, None).await?;
            let cfg = s3_ferry::import::ImportConfig {
                approvals: None,
                force_reason: None,
                target: Arc::new(s3_ferry::import::target::Bucket {
                    store: store.leased(&job),
                    dest: dest_uri.parse().unwrap(),
                    part_size: 5 << 20,
                }),
                dry_run: false,
                force: false,
                concurrency: 1,
                deadline: None,
                trust: Vec::new(),
                delete_unlisted: false,
                run: run.clone(),
                skip_object_lock: false,
                screen: None,
            };
            let ttl = std::time::Duration::from_millis(1500);
            let mut ledger =
                s3_ferry::import::ledger::TableLedger::open(table, &job, ttl, run.stop()).await?;
            let report = s3_ferry::import::run(
                ledger.as_mut(),
                &cfg,
                &bundles,
                &s3_ferry::progress::NoProgress,
            )
            .await;
            drop(ledger);
            report
        })
    };
    block_on(gate.reached());

    // WHEN another import takes the job's import lease, and the heartbeat finds it gone
    let item = format!("import/{job}");
    crate::world::steal_lease(&table, &item, "another-import", &run);
    let mark = seen.log().len();
    gate.open();
    let ended = importing.join().unwrap();

    // THEN it fails as having lost the lease, and sent no write or delete after it knew
    let Err(err) = ended else {
        panic!("an import that lost its lease finished")
    };
    assert!(matches!(err, s3_ferry::Error::LeaseLost { .. }), "{err}");
    let after = crate::world::mutations(&seen.log()[mark..]);
    assert!(
        after.is_empty(),
        "requests after the lease was lost: {after:?}"
    );
    // AND at most the object held at the gate landed; the lease is the other import's
    assert!(w.keys(&dest, "").len() <= 1, "{:?}", w.keys(&dest, ""));
    let state = block_on(table.load(&item)).unwrap().unwrap();
    assert_eq!(state.lease_owner.as_deref(), Some("another-import"));
}

/// 40 MiB that no two ranges of share: a part out of place or out of order cannot match.
fn large_object() -> Vec<u8> {
    (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Every shard step of `seq` until each shard is done, with `cfg` (its deadline long past: a
/// step ships what it must before it may stop), as the state machine's Map would; the steps
/// taken.
fn ship_all_shards(
    w: &World,
    cfg: &s3_ferry::config::ExportConfig,
    owner: &str,
    seq: u64,
    shards: u64,
) -> usize {
    let mut steps = 0;
    for k in 0..shards as usize {
        loop {
            steps += 1;
            assert!(steps < 50, "shard steps do not converge");
            let hurried = s3_ferry::config::ExportConfig {
                deadline: Some(std::time::Instant::now()),
                ..cfg.clone()
            };
            let clients = w.clients.for_run();
            let step = s3_ferry::export::Steps {
                clients: &clients,
                cfg: &hurried,
                owner,
            };
            if block_on(step.shard(seq, k)).unwrap().done {
                break;
            }
        }
    }
    steps
}

fn plan_step(w: &World, cfg: &s3_ferry::config::ExportConfig, owner: &str) -> (u64, u64) {
    let clients = w.clients.for_run();
    let step = s3_ferry::export::Steps {
        clients: &clients,
        cfg,
        owner,
    };
    match block_on(step.plan()).unwrap() {
        s3_ferry::export::PlanStep::Ready {
            sequence, shards, ..
        } => (sequence, shards),
        other => panic!("not ready: {other:?}"),
    }
}

fn commit_step(w: &World, cfg: &s3_ferry::config::ExportConfig, owner: &str, seq: u64) -> u64 {
    let clients = w.clients.for_run();
    let step = s3_ferry::export::Steps {
        clients: &clients,
        cfg,
        owner,
    };
    block_on(step.commit(seq)).unwrap().objects
}

#[test]
fn an_object_larger_than_a_step_can_ship_goes_through_the_state_machine_in_parts() {
    // GIVEN a 40 MiB object (three ranged reads of 16 MiB) beside two small ones, and shard
    // steps that each reach their deadline as soon as they have shipped something
    let w = World::new("parts");
    let big = large_object();
    w.put("a", "before");
    w.put("big/disk.img", big.clone());
    w.put("z", "after");
    let cfg = w.export_config();

    // WHEN the state machine plans, ships every shard step by step, and commits
    let (seq, shards) = plan_step(&w, &cfg, "sfn-a");
    let steps = ship_all_shards(&w, &cfg, "sfn-a", seq, shards);
    assert_eq!(commit_step(&w, &cfg, "sfn-a", seq), 3);

    // THEN the object crossed in three parts, one a step, each in a volume of its own, part 1
    // under the object's own name
    assert!(steps >= 3, "{steps} steps");
    let b = w.download(&w.job, seq);
    let parts: Vec<_> = b
        .manifests
        .iter()
        .flat_map(|m| m.objects.iter().map(move |o| (m.volume, o.clone())))
        .filter(|(_, o)| o.key == "big/disk.img")
        .collect();
    let places: Vec<_> = parts
        .iter()
        .map(|(v, o)| {
            let s = o.split.as_ref().expect("in parts");
            (*v, s.part, s.offset, o.size, s.object_sha256.is_some())
        })
        .collect();
    let (v1, v2, v3) = (places[0].0, places[1].0, places[2].0);
    assert!(v1 < v2 && v2 < v3, "{places:?}");
    assert_eq!(
        places,
        vec![
            (v1, 1, 0, 16 << 20, false),
            (v2, 2, 16 << 20, 16 << 20, false),
            (v3, 3, 32 << 20, 8 << 20, true),
        ]
    );
    assert_eq!(parts[0].1.entry, format!("{}/big/disk.img", w.src));
    assert_eq!(
        parts[1].1.entry,
        format!("_ferry/part-00002/{}/big/disk.img", w.src)
    );
    let last = parts[2].1.split.as_ref().unwrap();
    assert_eq!(
        last.object_sha256.as_deref(),
        Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&big)).as_str())
    );
    // every volume still opens alone in Info-ZIP, and `ferry verify` accepts the bundle
    for v in b.volume_paths() {
        crate::util::run_ok(std::process::Command::new("unzip").arg("-tqq").arg(&v));
    }
    b.sha256sum_check();
    verify_folder(&b);

    // WHEN it is imported into a bucket and into a folder
    let dest = w.bucket("mirror");
    let state = tempfile::tempdir().unwrap();
    let r = w.import(
        &[b.dir.path()],
        w.bucket_target(&w.clients.s3, &format!("s3://{dest}")),
        &state.path().join("bucket.state"),
    );
    let folder = tempfile::tempdir().unwrap();
    w.import(
        &[b.dir.path()],
        w.dir_target(folder.path()),
        &state.path().join("dir.state"),
    );

    // THEN both hold the object whole, once, and the two small ones
    assert_eq!(r["bundles"][0]["objects"], 3, "{r}");
    assert_eq!(w.get(&dest, "big/disk.img").as_deref(), Some(&big[..]));
    assert_eq!(w.get(&dest, "a").as_deref(), Some(&b"before"[..]));
    assert_eq!(w.get(&dest, "z").as_deref(), Some(&b"after"[..]));
    assert_eq!(w.keys(&dest, ""), vec!["a", "big/disk.img", "z"]);
    assert_eq!(
        std::fs::read(folder.path().join("big/disk.img")).unwrap(),
        big
    );
    assert_eq!(w.open_uploads_in(&dest), 0);
    assert_eq!(w.open_uploads_in(&w.exp), 0);

    // AND a copy whose last part claims another whole-object SHA-256 (every volume consistent
    // in itself, no SHA256SUMS) is refused by `ferry verify` as by the import
    let forged = tempfile::tempdir().unwrap();
    crate::util::run_ok(
        std::process::Command::new(crate::util::python())
            .arg("-c")
            .arg(FORGE_WHOLE_DIGEST)
            .arg(b.dir.path())
            .arg(forged.path()),
    );
    let ferry = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"))
            .args(args)
            .output()
            .unwrap()
    };
    let v = ferry(&["verify".as_ref(), forged.path().as_os_str()]);
    let stderr = String::from_utf8_lossy(&v.stderr);
    assert_eq!(v.status.code(), Some(5), "verify: {stderr}");
    assert!(stderr.contains("its parts join into"), "{stderr}");
    let into = tempfile::tempdir().unwrap();
    let i = ferry(&[
        "import".as_ref(),
        forged.path().as_os_str(),
        "--to-dir".as_ref(),
        into.path().as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&i.stderr);
    assert_eq!(i.status.code(), Some(5), "import: {stderr}");
    assert!(!into.path().join("big/disk.img").exists());
}

/// Copies the volumes of folder argv[1] into argv[2] (no SHA256SUMS, summary or signature),
/// the one whose manifest ends a split object rewritten to claim another whole SHA-256.
const FORGE_WHOLE_DIGEST: &str = r#"
import hashlib, json, os, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]

def rewrite(name, change):
    """Volume `name` of src into dst with its manifest changed by `change` (False: as it is)."""
    with zipfile.ZipFile(os.path.join(src, name)) as z:
        m = json.loads(z.read("_ferry/manifest.json"))
        if not change(m):
            with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as o:
                o.write(f.read())
            return None
        with zipfile.ZipFile(os.path.join(dst, name), "w") as out:
            for info in z.infolist():
                data = z.read(info)
                if info.filename == "_ferry/manifest.json":
                    data = json.dumps(m).encode()
                out.writestr(info, data)
    with open(os.path.join(dst, name), "rb") as f:
        data = f.read()
    return len(data), hashlib.sha256(data).hexdigest()

def forge(m):
    ends = [o for o in m["objects"] if (o.get("split") or {}).get("object_sha256")]
    for o in ends:
        o["split"]["object_sha256"] = "0" * 64
    return bool(ends)

names = sorted(n for n in os.listdir(src) if n.endswith(".zip"))
forged = {n: d for n in names[:-1] if (d := rewrite(n, forge))}
assert len(forged) == 1, forged

def follow(m):
    # The last volume names every earlier one's size and SHA-256: the forged one's changed.
    for e in m["final"]["earlier_volumes"]:
        if e["name"] in forged:
            e["size"], e["sha256"] = forged[e["name"]]
    return True

rewrite(names[-1], follow)
"#;

#[test]
fn an_object_rewritten_between_the_steps_shipping_its_parts_ships_again_whole() {
    // GIVEN a 40 MiB object whose first part one step shipped
    let w = World::new("parts-changed");
    let mut big = large_object();
    w.put("big", big.clone());
    let cfg = w.export_config();
    let (seq, shards) = plan_step(&w, &cfg, "sfn-a");
    assert_eq!(shards, 1);
    let hurried = s3_ferry::config::ExportConfig {
        deadline: Some(std::time::Instant::now()),
        ..cfg.clone()
    };
    let clients = w.clients.for_run();
    let step = s3_ferry::export::Steps {
        clients: &clients,
        cfg: &hurried,
        owner: "sfn-a",
    };
    assert!(!block_on(step.shard(seq, 0)).unwrap().done);

    // WHEN the object is rewritten before the next step, which fails (a retryable change), and
    // the state machine's retries go on
    big[0] ^= 0xff;
    big[(40 << 20) - 1] ^= 0xff;
    w.put("big", big.clone());
    let e = block_on(step.shard(seq, 0)).unwrap_err();
    assert!(
        matches!(e, s3_ferry::error::Error::ObjectChanged { .. }),
        "{e}"
    );
    ship_all_shards(&w, &cfg, "sfn-a", seq, shards);
    assert_eq!(commit_step(&w, &cfg, "sfn-a", seq), 1);

    // THEN the bundle holds the abandoned first part of the old version and every part of the
    // new one; the import writes the new version, whole
    let b = w.download(&w.job, seq);
    let firsts = b
        .objects()
        .iter()
        .filter(|o| o.split.as_ref().is_some_and(|s| s.part == 1))
        .count();
    assert_eq!(firsts, 2);
    verify_folder(&b);
    let dest = w.bucket("mirror");
    let state = tempfile::tempdir().unwrap();
    let r = w.import(
        &[b.dir.path()],
        w.bucket_target(&w.clients.s3, &format!("s3://{dest}")),
        &state.path().join("state"),
    );
    assert_eq!(r["bundles"][0]["objects"], 1, "{r}");
    assert_eq!(w.get(&dest, "big").as_deref(), Some(&big[..]));
}

#[test]
fn a_plan_step_whose_listing_reaches_its_deadline_goes_on_in_its_next_call() {
    // GIVEN two jobs over one bucket of 2,500 objects (three listing pages), both with a
    // baseline, and a delta with every kind of change, on page boundaries too
    let w = World::new("relist");
    seed(&w, 2_500, 10);
    let other = format!("{}-one", w.job);
    w.export();
    w.export_job(&other, |_| {});
    w.put("k/0000a", "new before the first page ends");
    w.put("k/0999", "changed: the first page's last key");
    w.delete_keys([
        "k/1000".to_string(),
        "k/1001".to_string(),
        "k/2499".to_string(),
    ]);
    w.put("k/1500", "changed in the second page");
    w.put("zz/last", "new after everything");
    let cfg = w.export_config();

    // WHEN the state machine's plan step is called with its deadline long past, again and
    // again until it is ready, then ships and commits
    let hurried = s3_ferry::config::ExportConfig {
        deadline: Some(std::time::Instant::now()),
        ..cfg.clone()
    };
    let mut answers = Vec::new();
    let (seq, shards) = loop {
        assert!(
            answers.len() < 10,
            "the listing does not converge: {answers:?}"
        );
        let clients = w.clients.for_run();
        let step = s3_ferry::export::Steps {
            clients: &clients,
            cfg: &hurried,
            owner: "sfn-a",
        };
        match block_on(step.plan()).unwrap() {
            s3_ferry::export::PlanStep::Listing { sequence, hop } => {
                answers.push(format!("listing {sequence} after {hop}"))
            }
            s3_ferry::export::PlanStep::Ready {
                sequence, shards, ..
            } => break (sequence, shards),
            other => panic!("{other:?}"),
        }
    };
    ship_all_shards(&w, &cfg, "sfn-a", seq, shards);
    commit_step(&w, &cfg, "sfn-a", seq);
    w.export_job(&other, |_| {});

    // THEN the listing stopped after each of its three pages (the fourth call finds no key
    // after the last), and the bundle carries what the one-call listing's bundle carries
    assert_eq!(
        answers,
        [
            "listing 2 after 1",
            "listing 2 after 2",
            "listing 2 after 3"
        ]
    );
    let (split, one) = (w.download(&w.job, 2), w.download(&other, 2));
    assert_eq!(content(&split), content(&one));
    assert_eq!(split.last().deleted, ["k/1000", "k/1001", "k/2499"]);
    assert_eq!(split.objects().len(), 4);
    verify_folder(&split);
    // AND the inventory it committed is the bucket's, exactly: the next run finds no change
    let next = w.plan_with(|_| {});
    assert_eq!(
        (next["listed"].as_u64(), next["unchanged"].as_u64()),
        (Some(2_499), Some(2_499)),
        "{next}"
    );
    assert_eq!(w.open_uploads_in(&w.exp), 0);
}
