//! Run-level guarantees: one winner among concurrent runs, deadline continuation equal to one
//! uninterrupted run, failures and kills that leave nothing half-done, If-Match and vanished
//! objects.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;

use crate::proxy::{self, Action};
use crate::util::{Ctx, block_on, check_readers, content, moto};

fn seed(ctx: &Ctx, n: usize, size: usize) {
    ctx.put_many(
        (0..n)
            .map(|i| (format!("k/{i:04}"), vec![(i % 251) as u8; size + i]))
            .collect(),
    );
}

#[test]
fn three_concurrent_runs_issue_each_sequence_once() {
    let ctx = Ctx::new("concurrent");
    seed(&ctx, 30, 1000);
    let children: Vec<_> = (0..3)
        .map(|_| {
            ctx.ferry_cmd()
                .args(ctx.export_args(&ctx.job, &ctx.source_uri(), &ctx.table, &["--json"]))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut completed = 0;
    for out in &outs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if r["status"] == "complete" {
                    completed += 1;
                    assert_eq!(r["sequence"], 1);
                } else {
                    assert_eq!(r["status"], "no_changes");
                }
            }
            Some(3) => assert!(stderr.contains("is being exported by run"), "{stderr}"),
            // moto applies concurrent conditional UpdateItems without a lock, so two runs can
            // both "take" the lease there (DynamoDB cannot); the loser's commit must then fail
            // its version condition, or its claim on the bundle's checkpoint (fencing), and
            // commit nothing, which the assertions below check.
            Some(1) => assert!(
                stderr.contains("version conflict")
                    || stderr.contains("taken over by another run")
                    || stderr.contains("lease was lost"),
                "{stderr}"
            ),
            other => panic!("unexpected exit {other:?}: {stderr}"),
        }
    }
    // On DynamoDB exactly one run takes the lease and ships. moto's unlocked conditional
    // writes can let two take it, and then both may lose (one fenced by the other's checkpoint,
    // the other by the commit's version): at most one ships, and running again is safe.
    assert!(completed <= 1, "{completed} runs shipped the bundle");
    if completed == 0 {
        let again = ctx.export_ok(&[]);
        assert_eq!(
            (again["status"].as_str(), again["sequence"].as_u64()),
            (Some("complete"), Some(1))
        );
    }
    let bundles = ctx.keys(&ctx.exp, &format!("bundles/{}/", ctx.job));
    assert!(
        bundles.iter().all(|k| k.contains("/00000001/")),
        "{bundles:?}"
    );
    assert_eq!(ctx.state().sequence, 1);
}

#[test]
fn deadline_continuation_equals_one_uninterrupted_run() {
    // GIVEN a baseline for two jobs over the same bucket, then a delta with every kind of change
    let ctx = Ctx::new("deadline");
    seed(&ctx, 8, 300);
    let other = format!("{}-whole", ctx.job);
    ctx.export_ok(&[]);
    assert_eq!(ctx.export_job(&other, &[]).code, 0);
    ctx.put("k/new", vec![7; 20_000]);
    ctx.put("k/0001", "changed");
    ctx.delete("k/0002");
    ctx.rename("k/0003", "moved/0003");
    ctx.put_with("k/0004", "typed", Some("text/plain"), &[]);

    // WHEN one job runs with a zero deadline until done, the other in one go
    let mut hops = 0;
    let last = loop {
        hops += 1;
        assert!(hops < 20, "continuation does not converge");
        let run = ctx.export(&["--deadline", "0s"]);
        match run.code {
            4 => {
                let r = run.json();
                assert_eq!(r["complete"], false);
                assert_eq!(r["status"], "continue");
                assert_eq!(r["sequence"], 2, "a continued bundle keeps its sequence");
            }
            0 => break run.json(),
            c => panic!("exit {c}: {}", run.stderr),
        }
    };
    let whole = ctx.export_job(&other, &[]);
    assert_eq!(whole.code, 0);

    // THEN it took several hops, shipped each object once, and carries the same content
    assert!(hops >= 3, "only {hops} hops");
    assert_eq!(last["sequence"], 2);
    assert_eq!(last["objects"], 3);
    assert_eq!(last["hops"].as_u64().unwrap(), hops as u64);
    let split = ctx.download(&ctx.job, 2);
    let one = ctx.download(&other, 2);
    assert!(split.summary.volumes.len() > one.summary.volumes.len());
    assert_eq!(content(&split), content(&one));
    split.sha256sum_check();
    for v in split.volume_paths() {
        check_readers(&v);
    }
    assert_eq!(split.extract(), one.extract());
    assert_eq!(ctx.state().sequence, 2);
    assert_eq!(ctx.open_uploads(), 0);
}

#[test]
fn a_volume_index_handed_out_twice_is_caught_and_its_objects_ship_under_a_new_one() {
    use s3_ferry::export::{PlanStep, Steps};
    // GIVEN a bundle cut into two shards, shipped by state machine steps of one execution
    let ctx = Ctx::new("twice");
    seed(&ctx, 12, 1_000);
    let other = format!("{}-one", ctx.job);
    let mut cfg = ctx.export_config();
    cfg.tuning.volume_entries = 4;
    cfg.tuning.shards = 2;
    let mut hurried = cfg.clone();
    hurried.deadline = Some(std::time::Instant::now());
    let step = |cfg| Steps {
        clients: &ctx.clients,
        cfg,
        owner: "sfn-x",
    };
    let PlanStep::Ready { sequence: seq, .. } = block_on(step(&cfg).plan()).unwrap() else {
        panic!("nothing planned");
    };
    let s = block_on(step(&hurried).shard(seq, 0)).unwrap();
    assert_eq!((s.volumes, s.done), (1, false));
    let first_key = format!("bundles/{}/{seq:08}/{}-{seq:08}-0001.zip", ctx.job, ctx.job);
    let first = ctx
        .get(&ctx.exp, &first_key)
        .expect("shard 0 wrote volume 1");

    // WHEN the volume counter hands index 1 out again (as a counter without atomic updates can)
    let table = aws_sdk_dynamodb::Client::new(&crate::util::sdk_config(&ctx.endpoint));
    block_on(
        table
            .delete_item()
            .table_name(&ctx.table)
            .key(
                s3_ferry::store::dynamo::KEY_ATTRIBUTE,
                aws_sdk_dynamodb::types::AttributeValue::S(format!("{}#volumes#{seq}", ctx.job)),
            )
            .send(),
    )
    .unwrap();
    let e = block_on(step(&hurried).shard(seq, 1)).unwrap_err();

    // THEN the second writer stops (retryable) and shard 0's volume is untouched
    assert!(
        matches!(e, s3_ferry::error::Error::WrittenTwice { .. }),
        "{e}"
    );
    assert!(e.is_retryable());
    assert_eq!(ctx.get(&ctx.exp, &first_key).as_deref(), Some(&first[..]));
    // AND retried steps ship everything; the bundle is the one-stream bundle
    for k in 0..2 {
        for n in 0.. {
            assert!(n < 50, "shard {k} does not converge");
            if block_on(step(&hurried).shard(seq, k)).unwrap().done {
                break;
            }
        }
    }
    let report = block_on(step(&cfg).commit(seq)).unwrap();
    assert_eq!(report.objects, 12);
    assert_eq!(ctx.export_job(&other, &["--volume-entries", "4"]).code, 0);
    let split = ctx.download(&ctx.job, seq);
    let one = ctx.download(&other, 1);
    assert_eq!(content(&split), content(&one));
    assert_eq!(split.extract(), one.extract());
    let v = ctx.ferry(&["verify", split.dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(v.code, 0, "{}\n{}", v.stdout, v.stderr);
    assert_eq!(ctx.open_uploads(), 0);
}

#[test]
fn failure_mid_volume_leaves_nothing_visible_and_state_unchanged() {
    // GIVEN a committed baseline and a delta whose volume needs three parts
    let ctx = Ctx::new("inject");
    ctx.put("seed", "1");
    ctx.export_ok(&[]);
    ctx.put_many(
        (0..3)
            .map(|i| (format!("big{i}"), vec![i as u8; 5 * 1024 * 1024]))
            .collect(),
    );
    let before = ctx.state();

    // WHEN every upload of part 2 fails with a 500
    let proxy = proxy::start(
        &moto().endpoint,
        Arc::new(|m: &Method, pq: &str| {
            if m == Method::PUT && pq.contains("partNumber=2&") || pq.ends_with("partNumber=2") {
                Action::Fail(500)
            } else {
                Action::Forward
            }
        }),
    );
    let failing = ctx.via(&proxy.endpoint);
    let run = failing.export(&["--part-size", "5MiB"]);

    // THEN the run fails naming the volume, and nothing of the bundle is visible
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr
            .contains(&format!("bundles/{}/00000002/", ctx.job)),
        "{}",
        run.stderr
    );
    assert!(
        ctx.keys(&ctx.exp, &format!("bundles/{}/00000002/", ctx.job))
            .is_empty()
    );
    assert_eq!(
        ctx.open_uploads(),
        0,
        "the failed multipart upload was aborted"
    );
    let after = ctx.state();
    assert_eq!(
        (after.sequence, after.version, after.bundle_digest),
        (before.sequence, before.version, before.bundle_digest)
    );
    assert!(after.lease_owner.is_none());

    // AND the next run (no fault) ships the bundle
    let r = ctx.export_ok(&["--part-size", "5MiB"]);
    assert_eq!(r["sequence"], 2);
    assert_eq!(r["objects"], 3);
}

#[test]
fn killed_run_is_taken_over_after_its_lease_expires() {
    // GIVEN a run that hangs uploading its second part, then is killed
    let ctx = Ctx::new("kill");
    ctx.put_many(
        (0..3)
            .map(|i| (format!("big{i}"), vec![i as u8; 5 * 1024 * 1024]))
            .collect(),
    );
    let proxy = proxy::start(
        &moto().endpoint,
        Arc::new(|m: &Method, pq: &str| {
            if m == Method::PUT && pq.contains("partNumber=2") {
                Action::Hang
            } else {
                Action::Forward
            }
        }),
    );
    let hanging = ctx.via(&proxy.endpoint);
    let src = ctx.source_uri();
    let mut child = hanging
        .ferry_cmd()
        .args(ctx.export_args(
            &ctx.job,
            &src,
            &ctx.table,
            &["--part-size", "5MiB", "--lease-ttl", "10s"],
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while ctx.open_uploads() < 1 {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the run never started uploading"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();

    // THEN right away another run is refused with the lease holder named (exit 3)
    let run = ctx.export(&[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("job `{}` is being exported by run", ctx.job)),
        "{}",
        run.stderr
    );
    assert!(
        ctx.keys(&ctx.exp, &format!("bundles/{}/", ctx.job))
            .iter()
            .all(|k| !k.ends_with(".zip"))
    );
    assert_eq!(ctx.state().sequence, 0);

    // AND once the lease expired (10 s, the shortest allowed), the next run takes over,
    // cleans up and completes
    std::thread::sleep(Duration::from_secs(11));
    let r = ctx.export_ok(&["--part-size", "5MiB"]);
    assert_eq!(r["sequence"], 1);
    assert_eq!(r["objects"], 3);
    assert_eq!(ctx.open_uploads(), 0, "the killed run's upload was aborted");
    let b = ctx.download(&ctx.job, 1);
    assert_eq!(b.extract()["big2"], vec![2u8; 5 * 1024 * 1024]);
}

#[test]
fn changed_and_vanished_objects_between_plan_and_read() {
    // GIVEN a planned (checkpointed) bundle: a zero deadline stops right after planning
    let ctx = Ctx::new("ifmatch");
    ctx.put("a", "version 1");
    ctx.put("b", "will vanish");
    ctx.put("c", "steady");
    let run = ctx.export(&["--deadline", "0s"]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert_eq!(run.json()["volumes"].as_array().unwrap().len(), 0);

    // WHEN `a` is overwritten and `b` deleted before the bundle is shipped
    ctx.put_with("a", "version 2, longer", Some("text/plain"), &[]);
    ctx.delete("b");
    let r = ctx.export_ok(&[]);

    // THEN the current `a` is shipped and recorded as replaced, `b` as vanished
    assert_eq!(
        (
            r["objects"].as_u64(),
            r["replaced"].as_u64(),
            r["vanished"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let b = ctx.download(&ctx.job, 1);
    let files = b.extract();
    assert_eq!(files["a"], b"version 2, longer");
    let a = b.objects().into_iter().find(|o| o.key == "a").unwrap();
    assert!(a.planned_etag.is_some());
    assert_ne!(a.planned_etag.as_deref(), Some(a.etag.as_str()));
    assert_eq!(a.size, 17);
    assert_eq!(b.last().vanished, vec!["b".to_string()]);

    // AND the next run has nothing to do: the inventory records the version of `a` that was
    // shipped (not the one listed) and no `b`
    let r = ctx.export_ok(&[]);
    assert_eq!(r["status"], "no_changes", "{r}");
    assert_eq!(r["sequence"], 1);
}

#[test]
fn status_reports_the_committed_state() {
    let ctx = Ctx::new("status");
    ctx.put("x", "1");
    ctx.export_ok(&[]);
    let run = ctx.ferry(&["status", "--job", &ctx.job, "--table", &ctx.table, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["sequence"], 1);
    assert_eq!(s["last_run"]["objects"], 1);
    assert!(s["inventory"].as_str().unwrap().contains("/inventory-run-"));
}

#[test]
fn an_uncommitted_bundle_is_never_published() {
    // GIVEN a bucket to export, through a proxy that fails every DynamoDB request once the run
    // has written its report (so its commit fails: the volumes, bundle.json and signature exist)
    let ctx = Ctx::new("unpublished");
    for k in ["a", "b", "c"] {
        ctx.put(k, format!("object {k}"));
    }
    let reported = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = reported.clone();
    let proxy = proxy::start(
        &moto().endpoint,
        Arc::new(move |m: &Method, pq: &str| {
            use std::sync::atomic::Ordering::SeqCst;
            if m == Method::PUT && pq.contains("/report.json") {
                seen.store(true, SeqCst);
            }
            if m == Method::POST && pq == "/" && seen.load(SeqCst) {
                Action::Fail(500)
            } else {
                Action::Forward
            }
        }),
    );

    // WHEN the export's commit fails
    let run = ctx.via(&proxy.endpoint).export(&["--volume-entries", "1"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(reported.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(ctx.state().sequence, 0);

    // THEN the far side's "complete" marker does not exist, and download refuses the bundle
    let prefix = "bundles/".to_string() + &ctx.job + "/00000001/";
    let keys = ctx.keys(&ctx.exp, &prefix);
    assert!(keys.iter().any(|k| k.ends_with(".zip")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.ends_with("SHA256SUMS")), "{keys:?}");
    let media = tempfile::tempdir().unwrap();
    let run = ctx.ferry_download(media.path(), &["--sequence", "1"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("not complete"), "{}", run.stderr);
}

#[test]
fn a_committed_bundle_missing_its_sha256sums_is_published_by_the_next_run() {
    // GIVEN a committed bundle whose run stopped before writing SHA256SUMS
    let ctx = Ctx::new("republish");
    ctx.put("a", "object a");
    ctx.export_ok(&[]);
    let key = format!("bundles/{}/00000001/SHA256SUMS", ctx.job);
    let sums = ctx.get(&ctx.exp, &key).expect("SHA256SUMS");
    block_on(ctx.s3.delete_object().bucket(&ctx.exp).key(&key).send()).unwrap();

    // WHEN the next run starts (it finds nothing to ship)
    let r = ctx.export_ok(&[]);
    assert_eq!(r["status"], "no_changes");

    // THEN the bundle is published again, with the committed digest
    assert_eq!(ctx.get(&ctx.exp, &key).as_deref(), Some(&sums[..]));
}

#[test]
fn ctrl_c_stops_an_export_cleanly_and_the_next_run_continues_it() {
    // GIVEN 60 objects whose reads are slow (every GET of the source delayed 100 ms)
    let ctx = Ctx::new("sigint");
    seed(&ctx, 60, 2_000);
    let src = format!("/{}/", ctx.src);
    let proxy = proxy::start(
        &moto().endpoint,
        Arc::new(move |m: &Method, pq: &str| {
            if m == Method::GET && pq.starts_with(&src) && !pq.contains("list-type") {
                Action::Delay(100)
            } else {
                Action::Forward
            }
        }),
    );
    let slow = ctx.via(&proxy.endpoint);
    let args = slow.export_args(
        &ctx.job,
        &ctx.source_uri(),
        &ctx.table,
        &["--volume-entries", "10", "--concurrency", "2", "--json"],
    );

    // WHEN `ferry export` gets SIGINT once its first volume is written
    let prefix = format!("bundles/{}/00000001/", ctx.job);
    let volume_written = || {
        ctx.keys(&ctx.exp, &prefix)
            .iter()
            .any(|k| k.ends_with(".zip"))
    };
    let (code, stderr) = slow.ferry_signalled(&args, volume_written, "INT");

    // THEN it exits 130 having given back the lease, with no upload left open and nothing
    // published, the bundle checkpointed
    assert_eq!(code, Some(130), "{stderr}");
    let state = ctx.state();
    assert_eq!(state.sequence, 0);
    assert!(state.lease_owner.is_none(), "the lease is still held");
    assert_eq!(ctx.open_uploads(), 0);
    let keys = ctx.keys(&ctx.exp, &prefix);
    assert!(!keys.iter().any(|k| k.ends_with("SHA256SUMS")), "{keys:?}");

    // AND the next run (at once: no lease to wait for) continues the bundle and completes it
    let r = ctx.export_ok(&["--volume-entries", "10"]);
    assert_eq!(r["status"], "complete");
    assert_eq!(r["objects"], 60);
    assert!(r["hops"].as_u64().unwrap() >= 2, "{r}");
}

#[test]
fn sigterm_stops_an_import_cleanly_and_the_next_import_finishes_it() {
    // GIVEN a bundle of 40 objects, some large enough for multipart uploads, and a destination
    // whose writes are slow (every PUT delayed 150 ms)
    let ctx = Ctx::new("sigterm");
    ctx.put_many(
        (0..40)
            .map(|i| {
                let size = if i % 10 == 0 { 6 << 20 } else { 50_000 };
                (format!("k/{i:02}"), vec![i as u8; size])
            })
            .collect(),
    );
    ctx.export_ok(&[]);
    let bundle = ctx.download(&ctx.job, 1);
    let dest = ctx.bucket("sigterm-dest");
    let dest_path = format!("/{dest}/");
    let proxy = proxy::start(
        &moto().endpoint,
        Arc::new(move |m: &Method, pq: &str| {
            if m == Method::PUT && pq.starts_with(&dest_path) {
                Action::Delay(150)
            } else {
                Action::Forward
            }
        }),
    );
    let slow = ctx.via(&proxy.endpoint);
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.json");
    let args = [
        "import",
        bundle.dir.path().to_str().unwrap(),
        "--to",
        &format!("s3://{dest}"),
        "--state",
        state_file.to_str().unwrap(),
        "--part-size",
        "5MiB",
        "--concurrency",
        "4",
    ];

    // WHEN `ferry import` gets SIGTERM once it has written a few objects
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (code, stderr) = slow.ferry_signalled(&args, || ctx.keys(&dest, "").len() >= 3, "TERM");

    // THEN it exits 143 with no multipart upload left open in the destination
    assert_eq!(code, Some(143), "{stderr}");
    assert!(
        ctx.keys(&dest, "").len() < 40,
        "the import was not stopped early"
    );
    assert_eq!(ctx.open_uploads_in(&dest), 0, "{stderr}");

    // AND the next import (the lock went with the process) finishes the bundle exactly, and
    // aborts what a killed import would have left open under the destination
    block_on(
        ctx.s3
            .create_multipart_upload()
            .bucket(&dest)
            .key("k/left-by-a-killed-import")
            .send(),
    )
    .unwrap();
    assert_eq!(ctx.open_uploads_in(&dest), 1);
    let run = ctx.ferry(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ctx.open_uploads_in(&dest), 0, "{}", run.stderr);
    let got = ctx.snapshot(&dest, "");
    assert_eq!(got.len(), 40);
    for (k, o) in &got {
        let i: usize = k[2..].parse().unwrap();
        assert!(o.body.iter().all(|&b| b == i as u8), "{k}");
    }
}

#[test]
fn a_read_broken_mid_body_resumes_from_where_it_broke() {
    // GIVEN a 20 MiB object and a small one, and a proxy that breaks the first response body
    // of each after 1 MiB (a connection reset mid-body)
    let ctx = Ctx::new("resume");
    let big: Vec<u8> = (0..20u32 << 20).map(|i| (i % 253) as u8).collect();
    ctx.put("big.bin", big.clone());
    ctx.put("small.bin", vec![7u8; 3 << 20]);
    let cut = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let seen = cut.clone();
    let cut_at = Arc::new(std::sync::atomic::AtomicUsize::new(1 << 20));
    let at = cut_at.clone();
    let (src, exp) = (format!("/{}/", ctx.src), format!("/{}/", ctx.exp));
    let proxy = proxy::start(
        &moto().endpoint,
        Arc::new(move |m: &Method, pq: &str| {
            let path = pq.split('?').next().unwrap_or(pq).to_string();
            let object = pq.starts_with(&src) || (pq.starts_with(&exp) && path.ends_with(".zip"));
            if m == Method::GET
                && object
                && !pq.contains("list-type")
                && seen.lock().unwrap().insert(path)
            {
                return Action::CutBody(at.load(std::sync::atomic::Ordering::SeqCst));
            }
            Action::Forward
        }),
    );

    // WHEN exported through it
    let run = ctx.via(&proxy.endpoint).export(&[]);

    // THEN the export completes, says how many reads it resumed, and every byte arrives
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert!(r["read_resumes"].as_u64().unwrap() >= 2, "{r}");
    let b = ctx.download(&ctx.job, 1);
    let got = b.extract();
    assert_eq!(got.len(), 2);
    assert!(got.values().any(|v| *v == big));

    // AND `ferry download` and `ferry import s3://…` resume their broken reads the same way
    let media = tempfile::tempdir().unwrap();
    let run = ctx
        .via(&proxy.endpoint)
        .ferry_download(media.path(), &["--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.json()["read_resumes"].as_u64().unwrap() >= 1,
        "{}",
        run.stdout
    );
    // (an import's first read of a volume is its tail: broken after 1,000 bytes)
    cut.lock().unwrap().clear();
    cut_at.store(1_000, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let run = ctx.via(&proxy.endpoint).ferry(&[
        "import",
        &format!("{}/{}/00000001/", ctx.dest_uri(), ctx.job),
        "--to-dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.json()["read_resumes"].as_u64().unwrap() >= 1,
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    let mirror = crate::util::dir_snapshot(dir.path());
    assert_eq!(mirror["big.bin"], big);
}

#[test]
fn ctrl_c_stops_a_stalled_download_and_the_next_download_resumes_it() {
    // GIVEN a bundle of one 40 MiB volume (bytes that do not compress), and a network that
    // breaks the volume's body after 20 MiB and then never answers the read that resumes it
    let ctx = Ctx::new("dl-int");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..40u32 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    ctx.put("big.bin", big);
    let r = ctx.export_ok(&[]);
    let volume = r["volume_details"][0]["name"].as_str().unwrap().to_string();
    let size = r["volume_details"][0]["size"].as_u64().unwrap();
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = reads.clone();
    let exp = format!("/{}/", ctx.exp);
    let proxy = proxy::start(
        &moto().endpoint,
        Arc::new(move |m: &Method, pq: &str| {
            let path = pq.split('?').next().unwrap_or(pq);
            if m == Method::GET && pq.starts_with(&exp) && path.ends_with(".zip") {
                return match seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                    0 => Action::CutBody(20 << 20),
                    _ => Action::Hang,
                };
            }
            Action::Forward
        }),
    );
    let media = tempfile::tempdir().unwrap();
    let dir = media.path().join(&ctx.job).join("00000001");
    let at = dir.join(format!("{volume}.partial.at"));
    let hashed = || {
        std::fs::read_to_string(&at)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    let args: Vec<String> = [
        "download",
        "--from",
        &ctx.dest_uri(),
        "--job",
        &ctx.job,
        "--to",
        media.path().to_str().unwrap(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();

    // WHEN `ferry download` is stuck on the resumed read and gets SIGINT
    let (code, stderr) = ctx.via(&proxy.endpoint).ferry_signalled(
        &args,
        || reads.load(std::sync::atomic::Ordering::SeqCst) >= 2 && hashed() >= Some(16 << 20),
        "INT",
    );

    // THEN it stops at once with 130, the volume is not in place, and the hashed prefix is kept
    assert_eq!(code, Some(130), "{stderr}");
    assert!(!dir.join(&volume).exists());
    assert!(dir.join(format!("{volume}.partial")).exists());
    assert!(!dir.join("SHA256SUMS").exists(), "{stderr}");
    let kept = hashed().unwrap();

    // AND the next download resumes from it, fetching only the rest, and the volume verifies
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("--json");
    let run = ctx.ferry(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let j = run.json();
    assert_eq!(j["bundles"][0]["volumes"][0]["status"], "resumed", "{j}");
    assert_eq!(j["bytes_fetched"].as_u64().unwrap(), size - kept, "{j}");
    crate::util::run_ok(
        std::process::Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(&dir),
    );
    assert!(!at.exists() && !dir.join(format!("{volume}.partial")).exists());
    let carried = std::fs::read(dir.join(&volume)).unwrap();
    let shipped = ctx
        .get(&ctx.exp, &format!("bundles/{}/00000001/{volume}", ctx.job))
        .unwrap();
    assert!(
        carried == shipped,
        "the carried volume differs from the shipped one"
    );
}

#[test]
fn a_commit_step_retried_after_a_failed_report_write_commits() {
    use s3_ferry::export::{PlanStep, Steps};
    // GIVEN a bundle planned and shipped by state machine steps, and a path to S3 that fails
    // every attempt of the commit step's first report write (the SDK retries three times)
    let ctx = Ctx::new("b1");
    seed(&ctx, 6, 100);
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = failures.clone();
    let proxy = proxy::start_full(
        &moto().endpoint,
        Arc::new(move |r: &crate::proxy::Req| {
            if r.method == Method::PUT
                && r.pq.contains("report.json")
                && count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3
            {
                return Action::Fail(500);
            }
            Action::Forward
        }),
    );
    let via = ctx.via(&proxy.endpoint);
    let cfg = ctx.export_config();
    let step = Steps {
        clients: &via.clients,
        cfg: &cfg,
        owner: "sfn-b1",
    };
    let PlanStep::Ready { sequence, .. } = block_on(step.plan()).unwrap() else {
        panic!("nothing planned")
    };
    assert!(block_on(step.shard(sequence, 0)).unwrap().done);

    // WHEN the commit step fails on its report write and the state machine retries it
    let e = block_on(step.commit(sequence)).unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(failures.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    let report = block_on(step.commit(sequence));

    // THEN the retry commits (it was `Fenced` on every retry: the job was stuck)
    let report = report.unwrap_or_else(|e| panic!("retried commit: {}", s3_ferry::error_chain(&e)));
    assert_eq!(report.objects, 6);
    let state = ctx.state();
    assert_eq!((state.sequence, state.lease_owner), (1, None));
    ctx.download(&ctx.job, 1).sha256sum_check();
}

#[test]
fn a_full_export_over_an_unfinished_sharded_bundle_starts_it_afresh() {
    // GIVEN a sharded bundle given up half-way: its shards claimed volumes and stopped
    let ctx = Ctx::new("b3");
    seed(&ctx, 12, 500);
    let hurried = ["--shards", "3", "--volume-entries", "2", "--deadline", "0s"];
    assert_eq!(ctx.export(&hurried).code, 4);
    assert_eq!(
        ctx.export(&hurried).code,
        4,
        "the shards ship a volume each and stop"
    );

    // WHEN `--full` takes a new baseline in its place
    let r = ctx.export_ok(&["--full", "--volume-entries", "2"]);

    // THEN the new bundle is numbered from volume 1 with no empty volumes in front (it began
    // after the old counter's indices) and carries every object
    assert_eq!(r["objects"], 12, "{r}");
    let b = ctx.download(&ctx.job, 1);
    let counts: Vec<u64> = b.summary.volumes.iter().map(|v| v.objects).collect();
    assert_eq!(counts, [2, 2, 2, 2, 2, 2], "{counts:?}");
    assert_eq!(b.extract().len(), 12);
    b.sha256sum_check();
    // AND the committed bundle's volume counter is gone from the state table
    let counter = block_on(ctx.clients.table(&ctx.table).claim_volume(&ctx.job, 1, 0)).unwrap();
    assert_eq!(counter, 1, "the counter item of bundle 1 was left behind");
}

#[test]
fn a_plan_step_fetches_no_object_bytes() {
    use s3_ferry::export::{PlanStep, Steps};
    // GIVEN small changed objects (the in-process export fetches them while it lists), and a
    // path to S3 counting GETs of the source bucket's objects
    let ctx = Ctx::new("b4");
    seed(&ctx, 20, 1_000);
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = gets.clone();
    let src = format!("/{}/", ctx.src);
    let proxy = proxy::start_full(
        &moto().endpoint,
        Arc::new(move |r: &crate::proxy::Req| {
            if r.method == Method::GET && r.pq.starts_with(&src) && !r.pq.contains("list-type") {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Action::Forward
        }),
    );
    let via = ctx.via(&proxy.endpoint);
    let mut cfg = ctx.export_config();
    cfg.tuning.shards = 2;
    let step = Steps {
        clients: &via.clients,
        cfg: &cfg,
        owner: "sfn-b4",
    };
    // WHEN the state machine's plan step runs
    let planned = block_on(step.plan()).unwrap();
    assert!(
        matches!(planned, PlanStep::Ready { shards: 2, .. }),
        "{planned:?}"
    );
    // THEN it read no object (it fetched up to 16 MiB the shard steps never used)
    assert_eq!(gets.load(std::sync::atomic::Ordering::SeqCst), 0);
    // AND the shard steps ship every object
    for k in 0..2 {
        assert!(block_on(step.shard(1, k)).unwrap().done);
    }
    assert_eq!(block_on(step.commit(1)).unwrap().objects, 20);
    assert_eq!(gets.load(std::sync::atomic::Ordering::SeqCst), 20);
}

#[test]
fn each_run_in_one_process_reports_its_own_read_resumes() {
    // GIVEN one process's clients (as a warm Lambda container keeps them) and a path to S3
    // that breaks the first body of `cut.bin` mid-way
    let ctx = Ctx::new("perrun");
    ctx.put("cut.bin", vec![5u8; 3 << 20]);
    let once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fired = once.clone();
    let src = format!("/{}/cut.bin", ctx.src);
    let proxy = proxy::start(
        &moto().endpoint,
        Arc::new(move |m: &Method, pq: &str| {
            if m == Method::GET
                && pq.starts_with(&src)
                && !fired.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                return Action::CutBody(1 << 20);
            }
            Action::Forward
        }),
    );
    let via = ctx.via(&proxy.endpoint);
    let cfg = ctx.export_config();
    // (each run in its own context of those clients, as the export function's handler makes
    // one per invocation)
    let export = || {
        block_on(s3_ferry::export::run(
            &via.clients.for_run(),
            &cfg,
            &s3_ferry::progress::NoProgress,
        ))
        .unwrap()
    };
    // WHEN two runs export through the same clients, the first one's read broken
    let first = export();
    ctx.put("next.bin", "next");
    let second = export();
    // THEN each reports its own resumes (the counter was the process's: cumulative)
    assert!(once.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!((first.read_resumes, second.read_resumes), (1, 0));
    assert_eq!(second.sequence, 2);
}
