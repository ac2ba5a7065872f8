//! The fast tier's run logic (in process, on the in-memory stores, faults through the
//! `Scripted` decorator): what a run does when it is stopped between batches, and when an
//! object will not hold still while it is read.

use std::sync::Arc;

use s3_ferry::store::{Fault, Rule, Scripted};

use crate::util::block_on;
use crate::world::World;

/// The world's clients with their object requests through a new `Scripted` decorator.
fn scripted(w: &World) -> (Arc<Scripted>, s3_ferry::store::aws::Clients) {
    let scripted = Scripted::new(w.objects.clone());
    let clients = s3_ferry::store::aws::Clients::over(scripted.clone(), w.clients.tables().clone());
    (scripted, clients)
}

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
    let (counted, clients) = scripted(&w);
    let cfg = s3_ferry::import::ImportConfig {
        target: w.bucket_target(&clients.s3, &to),
        dry_run: false,
        force: false,
        concurrency: 8,
        deadline: Some(std::time::Instant::now()),
        trust: Vec::new(),
        delete_unlisted: false,
        run: clients.s3.run().clone(),
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

    // THEN the first call writes the volume and stops before the removals, the next removes
    // every stray in two DeleteObjects requests (it was 1,200 DeleteObject requests, with no
    // deadline check), and only the kept key is left
    use s3_ferry::import::BundleStatus::{Applied, Continue};
    assert_eq!(statuses, [Continue, Applied]);
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
    let (faults, clients) = scripted(&w);
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
