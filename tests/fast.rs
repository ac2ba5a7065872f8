//! The fast tier: export logic on the in-memory stores ([`crate::world::World`]), no server.
//! Tests moved here from the moto tier keep their names and every assertion; what they
//! check is the engine (volumes, listings, skips, the state it commits), not S3 or the CLI.

use crate::util::assert_capped;
use crate::world::World;

const MIB: u64 = 1024 * 1024;

#[test]
fn every_volume_with_its_manifest_and_directory_stays_within_the_cap() {
    // GIVEN many small objects with long keys (long manifest lines and directory records)
    let w = World::new("cap");
    let mut rng = fastrand::Rng::with_seed(5);
    let long = "d".repeat(120);
    let objects: Vec<(String, Vec<u8>)> = (0..1500)
        .map(|i| {
            let mut body = vec![0u8; rng.usize(1..2500)];
            rng.fill(&mut body);
            (format!("{long}/k{i:05}"), body)
        })
        .collect();
    w.put_many(objects.clone());

    // WHEN the volumes are capped at 1 MiB, stored and deflated
    let r = w.export_with(|c| c.tuning.volume_size = MIB);
    // THEN every volume is within the cap (it was up to 7.7 % over) and the bytes round-trip
    assert_capped(&w, 1, MIB, 0.85, false);
    let files = w.download(&w.job, 1).extract();
    for (k, body) in &objects {
        assert_eq!(&files[k], body, "{k}");
    }
    assert!(r["volumes"].as_array().unwrap().len() > 2);
    let r = w.export_with(|c| {
        c.tuning.volume_size = MIB;
        c.full = true;
        c.tuning.compression = "deflate".parse().unwrap();
    });
    assert_eq!(r["sequence"], 2);
    assert_capped(&w, 2, MIB, 0.85, false);

    // AND sealed with age, the ciphertext too
    let keys = tempfile::tempdir().unwrap();
    let (_, recipient) = crate::sealed::age_keygen(keys.path(), "id.txt");
    let r = w.export_with(|c| {
        c.tuning.volume_size = MIB;
        c.full = true;
        c.encrypt_to = s3_ferry::format::seal::Recipients::parse(&[recipient], &[]).unwrap();
    });
    assert_eq!(r["sequence"], 3);
    assert_capped(&w, 3, MIB, 0.85, true);
}

#[test]
fn a_large_listing_runs_as_key_ranges_cut_at_the_last_inventory_and_misses_nothing() {
    // GIVEN 5,000 objects exported once: the inventory's index holds every 1,000th key
    let w = World::new("ranges");
    w.put_many(
        (0..5_000)
            .map(|i| (format!("k/{i:05}"), vec![b'x'; 8]))
            .collect(),
    );
    let first = w.export();
    assert_eq!(first["list_ranges"], 1, "a baseline lists as one stream");
    let inventory = w.state().inventory.unwrap();
    let index: serde_json::Value = serde_json::from_slice(
        &w.get(&w.exp, &inventory.replace(".jsonl.gz", ".index.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(index["records"], 5_000);
    assert_eq!(index["keys"].as_array().unwrap().len(), 5);
    // (5,000 records make 2 ranges of at least 2,000: cut at the middle index key)
    let cut = index["keys"][2].as_str().unwrap().to_string();
    assert_eq!(cut, "k/02999");

    // WHEN the keys around the cut and at both ends change: the cut key itself and the one
    // before it rewritten, the one after it deleted, a key added just after the cut, the first
    // key deleted and a key added after the last
    w.put("k/02999", "cut key, rewritten");
    w.put("k/02998", "before the cut, rewritten");
    w.delete("k/03000");
    w.put("k/02999a", "added just after the cut");
    w.delete("k/00000");
    w.put("k/99999", "added at the end");

    // THEN a plan listed as one stream and one listed as ranges agree
    let plan = |ranges: usize| w.plan_with(|c| c.tuning.list_ranges = ranges);
    let (one, many) = (plan(1), plan(8));
    assert_eq!(
        (one["list_ranges"].as_u64(), many["list_ranges"].as_u64()),
        (Some(1), Some(2))
    );
    for k in [
        "listed",
        "unchanged",
        "added",
        "modified",
        "deleted",
        "moved",
        "bytes",
    ] {
        assert_eq!(one[k], many[k], "{k}: {one} vs {many}");
    }
    assert_eq!(
        (
            many["listed"].as_u64(),
            many["added"].as_u64(),
            many["modified"].as_u64(),
            many["deleted"].as_u64()
        ),
        (Some(5_000), Some(2), Some(2), Some(2)),
        "{many}"
    );

    // AND the export, listed as ranges, carries exactly those changes
    let r = w.export();
    assert_eq!(r["list_ranges"], 2, "{r}");
    let b = w.download(&w.job, 2);
    let mut shipped: Vec<String> = b.objects().into_iter().map(|o| o.key).collect();
    shipped.sort();
    assert_eq!(shipped, ["k/02998", "k/02999", "k/02999a", "k/99999"]);
    let mut deleted = b.last().deleted.clone();
    deleted.sort();
    assert_eq!(deleted, ["k/00000", "k/03000"]);
}

#[test]
fn thousands_of_archived_objects_commit_and_keep_the_state_item_small() {
    // GIVEN a bucket where 5,000 objects went straight to DEEP_ARCHIVE (a DynamoDB item holds
    // at most 400 KB; listing each of them in the state item made the commit fail for good)
    let w = World::new("archived");
    w.put("hot.txt", "shipped");
    w.put_many_in_class(
        (0..5_000)
            .map(|i| (format!("cold/{i:05}.bin"), b"frozen".to_vec()))
            .collect(),
        "DEEP_ARCHIVE",
    );

    // WHEN exported, twice (the second run finds nothing new)
    let first = w.export();
    let second = w.export();

    // THEN both runs commit, each reporting the 5,000 skipped objects
    assert_eq!(first["status"], "complete");
    assert_eq!(first["skipped"], 5_000);
    assert_eq!(second["status"], "no_changes");
    assert_eq!(second["skipped"], 5_000);
    assert_eq!(second["skipped_objects"].as_array().unwrap().len(), 5_000);
    let state = w.state();
    assert_eq!(state.sequence, 1);
    // AND the state item keeps counters and a pointer; the full report is in S3
    let last = state.last_run.expect("last run summary");
    assert!(
        last.to_string().len() < 4_096,
        "state item's last_run is {} bytes",
        last.to_string().len()
    );
    assert_eq!(last["skipped"], 5_000);
    let uri = last["report"].as_str().expect("report pointer");
    let key = uri
        .strip_prefix(&format!("s3://{}/", w.exp))
        .expect("report in the export bucket");
    let report: serde_json::Value =
        serde_json::from_slice(&w.get(&w.exp, key).expect("report object")).unwrap();
    assert_eq!(report["skipped_objects"].as_array().unwrap().len(), 5_000);
}

#[test]
fn thousands_of_deletions_are_applied_in_batches_to_a_bucket_and_a_directory() {
    use s3_ferry::store::{Scripted, Store};
    // GIVEN a baseline of 2,600 objects imported into a bucket and a directory, then a bundle
    // that deletes 2,500 of them (three DeleteObjects requests' worth)
    let w = World::new("deletes");
    w.put_many(
        (0..2_600)
            .map(|i| (format!("d/{i:05}"), format!("object {i}").into_bytes()))
            .collect(),
    );
    w.export();
    let dest = w.bucket("deletes-dest");
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // The bucket import goes through a store that counts delete requests.
    let counted = Scripted::new(w.objects.clone());
    let bucket = w.bucket_target(&Store::new(counted.clone()), &format!("s3://{dest}"));
    let import = |seq: u64| {
        let b = w.download(&w.job, seq);
        w.import(
            &[b.dir.path()],
            bucket.clone(),
            &state.path().join("bucket.json"),
        );
        let home = dir.path().join(".ferry").join("state.json");
        w.import(&[b.dir.path()], w.dir_target(dir.path()), &home);
    };
    import(1);
    w.delete_keys((0..2_500).map(|i| format!("d/{i:05}")));
    let r = w.export();
    assert_eq!(r["deleted"], 2_500);

    // WHEN the delta is imported
    import(2);

    // THEN exactly the 100 remaining objects are left, in the bucket and in the directory, the
    // bucket's by a few DeleteObjects requests rather than 2,500 DeleteObject requests
    assert_eq!(counted.count("DeleteObject"), 0);
    let batched = counted.count("DeleteObjects");
    assert!((3..=10).contains(&batched), "{batched}");
    let left = w.keys(&dest, "");
    assert_eq!(left.len(), 100, "{:?}", &left[..left.len().min(5)]);
    assert!(left.iter().all(|k| k.as_str() >= "d/02500"));
    let mirror = crate::util::dir_snapshot(dir.path());
    assert_eq!(mirror.len(), 100);
    assert_eq!(mirror["d/02599"], b"object 2599".to_vec());
}

#[test]
fn a_run_that_wakes_after_another_committed_never_touches_the_committed_bundle() {
    use s3_ferry::store::{Fault, Gate, Rule};
    // GIVEN a run whose requests can be held at a gate: the first listing of its bundle's
    // folder (the stray-volume clean-up) waits there
    let w = World::new("stale");
    w.put_many(
        (0..6)
            .map(|i| (format!("a/{i}"), vec![i as u8; 100]))
            .collect(),
    );
    let (scripted, clients) = w.scripted();
    let gate = Gate::new();
    let folder = format!("bundles/{}/00000001/", w.job);
    scripted.rule(Rule::every("ListObjectsV2", Fault::Pause(gate.clone())).on_keys(&folder));
    let mut cfg = w.export_config();
    cfg.tuning.volume_entries = 2;
    // (its own thread and runtime: the export's future is not `Send`)
    let stale = crate::world::export_in_thread(clients, cfg);
    // WHEN it stops there (a pause, a GC, a lost network) and its lease is gone, and another
    // run then exports a new baseline of a larger source (more volumes) and commits
    crate::util::block_on(gate.reached());
    let table = w.clients.table(&w.table);
    if let Some(owner) = crate::util::block_on(table.load(&w.job))
        .unwrap()
        .and_then(|s| s.lease_owner)
    {
        crate::util::block_on(table.release(&w.job, &owner)).unwrap();
    }
    w.put_many(
        (6..12)
            .map(|i| (format!("a/{i}"), vec![i as u8; 100]))
            .collect(),
    );
    let fresh = w.export_with(|c| {
        c.full = true;
        c.tuning.volume_entries = 2;
    });
    assert_eq!(fresh["status"], "complete", "{fresh}");
    // AND the first run wakes up and goes on
    gate.open();
    let woke = stale.join().unwrap();

    // THEN every committed bundle is whole: each volume SHA256SUMS names is there with its
    // bytes (the stale run removed volumes of the new run's committed bundle 1 as "strays" before
    // its commit failed: the committed bundle failed `sha256sum -c` for good)
    let committed = w.state().sequence;
    assert!(committed >= 1);
    for seq in 1..=committed {
        let b = w.download(&w.job, seq);
        b.sha256sum_check();
        assert!(b.volume_paths().iter().all(|p| p.exists()), "bundle {seq}");
    }
    let last = w.download(&w.job, committed).extract();
    assert_eq!(last.len(), 12, "the last baseline carries every object");
    assert_eq!(last["a/11"], vec![11u8; 100]);
    eprintln!("the stale run ended with {:?}", woke.map(|r| r.sequence));
}

#[test]
fn a_run_that_loses_its_lease_writes_and_deletes_nothing_more() {
    use s3_ferry::store::{Fault, Gate, Rule};
    // GIVEN a run (in a context the test holds) held at a gate on a read of a source object
    // (a volume of these small objects is sent whole, with one PutObject, after the reads),
    // with a lease of 1.5 s that its heartbeat renews every half second
    let w = World::new("leaselost");
    w.put_many(
        (0..6)
            .map(|i| (format!("a/{i}"), vec![i as u8; 100]))
            .collect(),
    );
    let (scripted, clients) = w.scripted();
    let run = s3_ferry::context::RunContext::new();
    let clients = clients.in_run(run.clone());
    let gate = Gate::new();
    scripted.rule(Rule::every("GetObject", Fault::Pause(gate.clone())).on_keys("a/3"));
    let mut cfg = w.export_config();
    cfg.lease_ttl = std::time::Duration::from_millis(1500);
    let stalled = crate::world::export_in_thread(clients, cfg);
    crate::util::block_on(gate.reached());
    // WHEN another run takes the job over, and the heartbeat finds the lease gone
    crate::world::steal_lease(&w.clients.table(&w.table), &w.job, "another-run", &run);
    let seen = scripted.log().len();
    // AND the stalled run goes on from the gate
    gate.open();
    let ended = stalled.join().unwrap();

    // THEN it ends as having lost the lease, and sent no write or delete after it knew: only
    // reads and the aborts of its own uploads
    let Err(err) = ended else {
        panic!("a run that lost its lease committed")
    };
    assert!(
        matches!(
            err,
            s3_ferry::Error::LeaseLost { .. } | s3_ferry::Error::Fenced { .. }
        ),
        "{err}"
    );
    let after = crate::world::mutations(&scripted.log()[seen..]);
    assert!(
        after.is_empty(),
        "requests after the lease was lost: {after:?}"
    );
    // AND the job is the other run's, with nothing committed or published
    let state = w.state();
    assert_eq!(state.lease_owner.as_deref(), Some("another-run"));
    assert_eq!(state.sequence, 0);
    let folder = format!("bundles/{}/00000001/", w.job);
    assert!(
        w.keys(&w.exp, &folder).is_empty(),
        "{:?}",
        w.keys(&w.exp, &folder)
    );
}

#[test]
fn the_import_function_takes_only_complete_folders_of_its_job() {
    use s3_ferry::import::bundle::complete_folders;
    // GIVEN two bundles of the job carried into an import bucket, the second missing a volume,
    // a third folder without its SHA256SUMS yet, and a bundle of another job
    let w = World::new("arrive");
    w.put_many(
        (0..6)
            .map(|i| (format!("a/{i}"), vec![i as u8; 100]))
            .collect(),
    );
    w.export_with(|c| c.tuning.volume_entries = 2);
    w.put_many((0..3).map(|i| (format!("b/{i}"), vec![7; 10])).collect());
    w.export_with(|c| c.tuning.volume_entries = 2);
    let imp = format!("imp-{}", w.job);
    w.objects.create_bucket(&imp);
    let carried = |from: &str, to: &str, leave: &dyn Fn(&str) -> bool| {
        for k in w.keys(&w.exp, from) {
            if !leave(&k) {
                let body = w.get(&w.exp, &k).unwrap();
                w.put_in(&imp, &format!("incoming/{to}{}", &k[from.len()..]), body);
            }
        }
    };
    let (one, two) = (
        format!("bundles/{}/00000001/", w.job),
        format!("bundles/{}/00000002/", w.job),
    );
    carried(&one, &format!("{}/00000001/", w.job), &|_| false);
    let lost = w
        .keys(&w.exp, &two)
        .into_iter()
        .find(|k| k.ends_with(".zip"))
        .unwrap();
    carried(&two, &format!("{}/00000002/", w.job), &|k| k == lost);
    carried(&one, "elsewhere/", &|k| k.ends_with("SHA256SUMS"));
    let other = World::new("other");
    other.put("x", "x");
    other.export();
    for k in other.keys(&other.exp, "bundles/") {
        w.put_in(
            &imp,
            &format!("incoming/{k}"),
            other.get(&other.exp, &k).unwrap(),
        );
    }
    // AND a folder whose SHA256SUMS is larger than any bundle's
    let three = format!("incoming/{}/00000003/", w.job);
    w.put_in(
        &imp,
        &format!("{three}{}-00000003-0001.zip", w.job),
        "not read",
    );
    w.put_in(
        &imp,
        &format!("{three}SHA256SUMS"),
        vec![b'0'; (16 << 20) + 1],
    );
    let store = w.clients.s3.clone();
    let at: s3_ferry::config::S3Location = format!("s3://{imp}/incoming").parse().unwrap();

    // WHEN the import function looks for bundles after none, and after bundle 1
    let (ready, waiting) = crate::util::block_on(complete_folders(&store, &at, &w.job, 0)).unwrap();
    let (later, _) = crate::util::block_on(complete_folders(&store, &at, &w.job, 1)).unwrap();

    // THEN only the complete folder of its job is ready, and the others say what they wait for
    assert_eq!(
        ready,
        vec![format!("s3://{imp}/incoming/{}/00000001/", w.job)]
    );
    let name = lost.rsplit('/').next().unwrap();
    assert_eq!(
        waiting,
        vec![
            format!("s3://{imp}/incoming/elsewhere/: no SHA256SUMS yet"),
            format!(
                "s3://{imp}/incoming/{}/00000002/: waiting for {name}",
                w.job
            ),
            format!(
                "s3://{imp}/incoming/{}/00000003/: its SHA256SUMS of 16777217 bytes is larger than a bundle's (16777216 at most)",
                w.job
            ),
        ]
    );
    assert!(later.is_empty(), "{later:?}");
}
