//! The fault suite: for each kind of request an export and an import make, one fault is
//! injected into the first request of that kind — a 503, a connection reset before any answer,
//! silence until the request time-out, a lost response (the request was applied, the answer
//! never came), or a response body cut short — and the run must still end with a complete
//! bundle (or mirror) whose bytes check out and no multipart upload left open. A failure here
//! says which request kind and fault broke. The table of outcomes is printed (`--nocapture`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::Method;

use crate::proxy::{self, Action, Req};
use crate::util::{Ctx, block_on, moto};

/// The request kinds, told apart by method, path, headers and (DynamoDB) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    List,
    Get,
    CreateUpload,
    UploadPart,
    Complete,
    Abort,
    Put,
    Copy,
    Delete,
    DeleteMany,
    /// DynamoDB GetItem (the state read).
    DbGet,
    /// UpdateItem that takes a lease.
    DbLease,
    /// UpdateItem that commits an export.
    DbCommit,
    /// UpdateItem that writes an import's record under its lease.
    DbSave,
    /// UpdateItem that gives a lease back.
    DbRelease,
    DbBatchGet,
    /// PutItem of a key-index entry (conditional on the lease's fencing token).
    DbDocPut,
    /// DeleteItem of a key-index entry (conditional likewise).
    DbDocDelete,
}

fn kind_of(r: &Req, objects: &str) -> Option<Kind> {
    let (m, pq) = (r.method, r.pq);
    if let Some(op) = r.dynamo_op() {
        return match op {
            "GetItem" => Some(Kind::DbGet),
            "BatchGetItem" => Some(Kind::DbBatchGet),
            "PutItem" => Some(Kind::DbDocPut),
            "DeleteItem" => Some(Kind::DbDocDelete),
            "UpdateItem" if r.body_has("attribute_not_exists(lease_owner)") => Some(Kind::DbLease),
            "UpdateItem" if r.body_has("watermark") => Some(Kind::DbCommit),
            "UpdateItem" if r.body_has("#doc") => Some(Kind::DbSave),
            "UpdateItem" if r.body_has("REMOVE lease_owner") => Some(Kind::DbRelease),
            _ => None,
        };
    }
    let object_get = m == Method::GET && pq.starts_with(objects) && !pq.contains("list-type");
    match () {
        _ if m == Method::GET && pq.contains("list-type=2") => Some(Kind::List),
        _ if object_get => Some(Kind::Get),
        _ if m == Method::POST && pq.contains("?uploads") => Some(Kind::CreateUpload),
        _ if m == Method::PUT && pq.contains("partNumber=") => Some(Kind::UploadPart),
        _ if m == Method::POST && pq.contains("uploadId=") => Some(Kind::Complete),
        _ if m == Method::DELETE && pq.contains("uploadId=") => Some(Kind::Abort),
        _ if m == Method::POST && pq.contains("?delete") => Some(Kind::DeleteMany),
        _ if m == Method::DELETE => Some(Kind::Delete),
        _ if m == Method::PUT && r.header("x-amz-copy-source").is_some() => Some(Kind::Copy),
        _ if m == Method::PUT && !pq.contains("uploadId=") => Some(Kind::Put),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Status503,
    ResetBeforeAnswer,
    Silence,
    LostResponse,
    BodyCut,
}

/// Kinds whose answer has a body worth cutting short.
fn has_body(k: Kind) -> bool {
    !matches!(k, Kind::UploadPart | Kind::Put | Kind::Abort | Kind::Delete)
}

/// Every (kind, fault) case for these request kinds.
fn cases(kinds: &[Kind]) -> Vec<(Kind, Fault)> {
    kinds
        .iter()
        .flat_map(|&k| {
            let mut f = vec![
                (k, Fault::Status503),
                (k, Fault::ResetBeforeAnswer),
                (k, Fault::Silence),
                (k, Fault::LostResponse),
            ];
            if has_body(k) {
                f.push((k, Fault::BodyCut));
            }
            f
        })
        .collect()
}

/// A proxy that gives the first request of `kind` (objects read under `objects`, a `/bucket/`
/// path) the `fault`; the flag says whether it fired.
fn faulty_proxy(kind: Kind, fault: Fault, objects: String) -> (proxy::Proxy, Arc<AtomicBool>) {
    let fired = Arc::new(AtomicBool::new(false));
    let once = fired.clone();
    let proxy = proxy::start_full(
        &moto().endpoint,
        Arc::new(move |r: &Req| {
            if kind_of(r, &objects) == Some(kind) && !once.swap(true, Ordering::SeqCst) {
                return match fault {
                    Fault::Status503 => Action::Fail(503),
                    Fault::ResetBeforeAnswer => Action::Reset,
                    Fault::Silence => Action::Hang,
                    Fault::LostResponse => Action::LoseResponse,
                    Fault::BodyCut => Action::CutBody(100_000),
                };
            }
            Action::Forward
        }),
    );
    (proxy, fired)
}

/// Open a multipart upload at `bucket/key` and leave it, as a killed run would.
fn stale_upload(ctx: &Ctx, bucket: &str, key: &str) {
    block_on(
        ctx.s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send(),
    )
    .unwrap();
}

fn export_survives(kinds: &[Kind]) {
    let mut outcomes = Vec::new();
    for (kind, fault) in cases(kinds) {
        // GIVEN a bucket with small objects and one that is read in ranges, and an upload a
        // killed run left open in the bundle's folder
        let ctx = Ctx::new("fault");
        ctx.put("a.txt", "small object a");
        ctx.put("b/c.txt", "small object c");
        ctx.put("big.bin", vec![9u8; 10 << 20]);
        stale_upload(
            &ctx,
            &ctx.exp,
            &format!("bundles/{}/00000001/stale", ctx.job),
        );
        let (proxy, fired) = faulty_proxy(kind, fault, format!("/{}/", ctx.src));

        // WHEN the first request of that kind meets the fault
        let run =
            ctx.via(&proxy.endpoint)
                .export(&["--request-timeout", "2s", "--part-size", "5MiB"]);

        // THEN the export completes, its bundle verifies, and no upload is left open
        let case = format!("{kind:?} × {fault:?}");
        assert!(fired.load(Ordering::SeqCst), "{case}: no such request");
        assert_eq!(run.code, 0, "{case}: {}\n{}", run.stdout, run.stderr);
        assert_eq!(ctx.state().sequence, 1, "{case}");
        let b = ctx.download(&ctx.job, 1);
        let got = b.extract();
        assert_eq!(got.len(), 3, "{case}");
        assert_eq!(got["big.bin"], vec![9u8; 10 << 20], "{case}");
        assert_eq!(ctx.open_uploads(), 0, "{case}");
        outcomes.push(format!("export | {case}: complete"));
    }
    eprintln!("{}", outcomes.join("\n"));
}

#[test]
fn an_export_survives_every_fault_on_reads() {
    export_survives(&[Kind::List, Kind::Get]);
}

#[test]
fn an_export_survives_every_fault_on_uploads() {
    export_survives(&[
        Kind::CreateUpload,
        Kind::UploadPart,
        Kind::Complete,
        Kind::Abort,
    ]);
}

#[test]
fn an_export_survives_every_fault_on_documents_and_state() {
    export_survives(&[Kind::Put, Kind::Delete, Kind::DbLease, Kind::DbCommit]);
}

/// Two bundles to import: a baseline (small objects, one multipart-sized, one to delete, one
/// to move) and its follower (the delete, the move, a new object).
fn two_bundles(name: &str) -> Ctx {
    let ctx = Ctx::new(name);
    ctx.put("a.txt", "small object a");
    ctx.put("b/c.txt", "small object c");
    ctx.put("old.txt", "deleted in bundle 2");
    ctx.put("move-me.txt", "moved in bundle 2");
    ctx.put("big.bin", vec![7u8; 12 << 20]);
    ctx.export_ok(&[]);
    ctx.delete("old.txt");
    ctx.rename("move-me.txt", "moved.txt");
    ctx.put("new.txt", "added in bundle 2");
    ctx.export_ok(&[]);
    ctx
}

/// Where an import of the two bundles goes, and with what state.
#[derive(Clone, Copy, Debug)]
enum Dest {
    Bucket,
    BucketWithTable,
    Dir,
}

fn import_survives(name: &str, dest_kind: Dest, kinds: &[Kind]) {
    // GIVEN two exported bundles
    let ctx = two_bundles(name);
    let bundle = |n: u64| format!("{}/{}/{n:08}/", ctx.dest_uri(), ctx.job);
    let exp = format!("/{}/", ctx.exp);
    let mut outcomes = Vec::new();
    for (i, (kind, fault)) in cases(kinds).into_iter().enumerate() {
        let case = format!("{kind:?} × {fault:?}");
        // AND a destination holding a stray key and an upload a killed import left open
        let dest = ctx.bucket(&format!("if{i}"));
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let state_file = state.path().join("s.json");
        // (each case keeps its import state in its own table)
        let table = format!("{}-{i}", ctx.table);
        block_on(ctx.clients.table(&table).init()).unwrap();
        ctx.put_in(&dest, "stray.txt", "not in the source");
        stale_upload(&ctx, &dest, "stale-upload");
        let (proxy, fired) = faulty_proxy(kind, fault, exp.clone());
        let via = ctx.via(&proxy.endpoint);

        // WHEN `ferry import s3://…` of both bundles meets the fault on its first request of
        // that kind (an exact mirror: the baseline removes the stray ferry did not write)
        for n in [1, 2] {
            let b = bundle(n);
            let to = format!("s3://{dest}");
            let mut args = vec![
                "import",
                &b,
                "--delete-unlisted",
                "--part-size",
                "5MiB",
                "--request-timeout",
                "2s",
            ];
            match dest_kind {
                Dest::Bucket => args.extend(["--to", &to, "--state", state_file.to_str().unwrap()]),
                Dest::BucketWithTable => {
                    args.extend(["--to", &to, "--table", &table, "--job", &ctx.job])
                }
                Dest::Dir => args.extend(["--to-dir", dir.path().to_str().unwrap()]),
            }
            let run = via.ferry(&args);
            assert_eq!(
                run.code, 0,
                "{case}, bundle {n}: {}\n{}",
                run.stdout, run.stderr
            );
        }

        // THEN every object arrives whole, the delete and the move are applied, and no upload
        // is left open
        assert!(fired.load(Ordering::SeqCst), "{case}: no such request");
        let want = ctx.snapshot(&ctx.src, "");
        match dest_kind {
            Dest::Dir => {
                let got = crate::util::dir_snapshot(dir.path());
                assert!(got.keys().eq(want.keys()), "{case}: {:?}", got.keys());
                assert!(want.iter().all(|(k, o)| got[k] == o.body), "{case}");
            }
            _ => {
                assert_eq!(ctx.snapshot(&dest, ""), want, "{case}");
                assert_eq!(ctx.open_uploads_in(&dest), 0, "{case}");
            }
        }
        outcomes.push(format!("import to {dest_kind:?} | {case}: complete"));
    }
    eprintln!("{}", outcomes.join("\n"));
}

#[test]
fn an_import_to_a_bucket_survives_every_fault_on_reads_and_uploads() {
    import_survives(
        "ifault",
        Dest::Bucket,
        &[
            Kind::List,
            Kind::Get,
            Kind::CreateUpload,
            Kind::UploadPart,
            Kind::Complete,
        ],
    );
}

#[test]
fn an_import_to_a_bucket_survives_every_fault_on_writes_moves_and_deletes() {
    import_survives(
        "iwfault",
        Dest::Bucket,
        &[Kind::Abort, Kind::Put, Kind::Copy, Kind::DeleteMany],
    );
}

#[test]
fn an_import_with_table_state_survives_every_fault_on_the_state_table() {
    import_survives(
        "itfault",
        Dest::BucketWithTable,
        &[
            Kind::DbLease,
            Kind::DbBatchGet,
            Kind::DbDocPut,
            Kind::DbDocDelete,
            Kind::DbSave,
            Kind::DbRelease,
        ],
    );
}

#[test]
fn an_import_to_a_directory_survives_every_fault_on_its_reads() {
    import_survives("idfault", Dest::Dir, &[Kind::List, Kind::Get]);
}

/// An export whose state table answers the commit (`UpdateItem` with the watermark) with
/// `commit`, and its reads (`GetItem`) with `read`.
fn export_with_commit_fault(
    commit: fn() -> Action,
    read: fn() -> Action,
) -> (Ctx, crate::util::Run) {
    let ctx = Ctx::new("commit");
    ctx.put("a.txt", "small object a");
    let objects = format!("/{}/", ctx.src);
    let proxy = proxy::start_full(
        &moto().endpoint,
        Arc::new(move |r: &Req| match kind_of(r, &objects) {
            Some(Kind::DbCommit) => commit(),
            Some(Kind::DbGet) => read(),
            _ => Action::Forward,
        }),
    );
    let run = ctx
        .via(&proxy.endpoint)
        .export(&["--request-timeout", "1s"]);
    (ctx, run)
}

fn published(ctx: &Ctx) -> bool {
    ctx.get(
        &ctx.exp,
        &format!("bundles/{}/00000001/SHA256SUMS", ctx.job),
    )
    .is_some()
}

#[test]
fn a_commit_whose_answer_never_comes_is_reported_as_the_state_says() {
    // WHEN every answer to the commit is lost (the first attempt was applied)
    let (ctx, run) = export_with_commit_fault(|| Action::LoseResponse, || Action::Forward);
    // THEN the run reports success: sequence 1 is committed and published
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json()["sequence"], 1);
    assert_eq!(ctx.state().sequence, 1);
    assert!(published(&ctx));
    assert_eq!(ctx.open_uploads(), 0);

    // WHEN the commit is never answered (never applied) but the state can be read back
    let (ctx, run) = export_with_commit_fault(|| Action::Hang, || Action::Forward);
    // THEN the run fails saying nothing changed, which is true: nothing is committed or
    // published, and the lease is given back (the next run may start at once)
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("state unchanged"), "{}", run.stdout);
    let state = ctx.state();
    assert_eq!((state.sequence, state.lease_owner), (0, None));
    assert!(!published(&ctx));
    assert_eq!(ctx.open_uploads(), 0);
    assert_eq!(ctx.export_ok(&[])["sequence"], 1);

    // WHEN neither the commit nor the read back is answered
    let (ctx, run) = export_with_commit_fault(|| Action::Hang, || Action::Hang);
    // THEN the run does not claim either outcome: it says how to find out
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("commit is unconfirmed") && run.stdout.contains("ferry status"),
        "{}",
        run.stdout
    );
    assert!(!published(&ctx));
}

/// Network trouble on the far side is not damage: an `s3://` import whose volume reads keep
/// failing (every answer a 503, or every body cut short, past all retries and resumes) exits 1
/// with a retryable error that names the volume, never 5 ("failed verification"), writes
/// nothing half-done, and the same command succeeds once the network is back.
#[test]
fn far_side_transport_failures_are_retryable_not_damage() {
    let ctx = two_bundles("farnet");
    let volumes = format!("/{}/", ctx.exp);
    for fault in [Fault::Status503, Fault::BodyCut] {
        // GIVEN a destination and a network that fails every read of a volume's bytes
        let dest = ctx.bucket(&format!("fn{}", fault as u8));
        let state = tempfile::tempdir().unwrap();
        let state_file = state.path().join("s.json");
        let vols = volumes.clone();
        let proxy = proxy::start_full(
            &moto().endpoint,
            Arc::new(move |r: &Req| {
                if kind_of(r, &vols) == Some(Kind::Get) && r.pq.contains(".zip") {
                    match fault {
                        Fault::BodyCut => Action::CutBody(50_000),
                        _ => Action::Fail(503),
                    }
                } else {
                    Action::Forward
                }
            }),
        );
        let b1 = format!("{}/{}/00000001/", ctx.dest_uri(), ctx.job);
        let to = format!("s3://{dest}");
        let args = [
            "import",
            &b1,
            "--to",
            &to,
            "--state",
            state_file.to_str().unwrap(),
            "--json",
        ];
        // WHEN the import runs
        let run = ctx.via(&proxy.endpoint).ferry(&args);
        // THEN it exits 1 (retry), not 5 (damaged), naming the volume, with nothing applied
        let case = format!("{fault:?}: {}\n{}", run.stdout, run.stderr);
        assert_eq!(run.code, 1, "{case}");
        let out = run.json();
        assert_eq!(out["exit_code"], 1, "{case}");
        let error = out["error"].as_str().unwrap().to_string() + &out["causes"].to_string();
        assert!(error.contains(".zip"), "the error names no volume: {case}");
        assert!(
            !error.contains("verification") && !error.contains("damaged"),
            "a network failure reads as damage: {case}"
        );
        assert_eq!(ctx.open_uploads_in(&dest), 0, "{case}");
        // AND once the network is back, the same command applies the bundle
        let run = ctx.ferry(&args);
        assert_eq!(run.code, 0, "{fault:?}: {}", run.stderr);
        assert_eq!(
            ctx.keys(&dest, "").len(),
            5,
            "{fault:?}: {:?}",
            ctx.keys(&dest, "")
        );
    }
}
