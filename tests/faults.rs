//! The fault suite: for each kind of request an export (and an import from `s3://`) makes, one
//! fault is injected into the first request of that kind — a 503, silence until the request
//! time-out, or (for reads) a body broken mid-way — and the run must still end with a complete
//! bundle (or mirror) whose bytes check out and no multipart upload left open. A failure here
//! says which request kind and fault broke.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::Method;

use crate::proxy::{self, Action};
use crate::util::{Ctx, moto};

/// The request kinds of an export, told apart by method and path as the proxy sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    List,
    Get,
    CreateUpload,
    UploadPart,
    Complete,
    PutDocument,
    DynamoDb,
}

fn kind_of(m: &Method, pq: &str, src: &str) -> Option<Kind> {
    let object_get = m == Method::GET && pq.starts_with(src) && !pq.contains("list-type");
    match () {
        _ if m == Method::GET && pq.contains("list-type=2") => Some(Kind::List),
        _ if object_get => Some(Kind::Get),
        _ if m == Method::POST && pq.contains("?uploads") => Some(Kind::CreateUpload),
        _ if m == Method::PUT && pq.contains("partNumber=") => Some(Kind::UploadPart),
        _ if m == Method::POST && pq.contains("uploadId=") => Some(Kind::Complete),
        _ if m == Method::PUT && !pq.contains("uploadId=") && !pq.contains("partNumber") => {
            Some(Kind::PutDocument)
        }
        _ if m == Method::POST && pq == "/" => Some(Kind::DynamoDb),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Status503,
    Silence,
    BodyCut,
}

/// Every (kind, fault) case for these request kinds: a 503 and silence for each, and a body
/// broken mid-way for GETs.
fn cases(kinds: &[Kind]) -> Vec<(Kind, Fault)> {
    kinds
        .iter()
        .flat_map(|&k| {
            let mut f = vec![(k, Fault::Status503), (k, Fault::Silence)];
            if k == Kind::Get {
                f.push((k, Fault::BodyCut));
            }
            f
        })
        .collect()
}

/// A proxy that gives the first request of `kind` (objects under `objects`, a `/bucket/`
/// path) the `fault`; the flag says whether it fired.
fn faulty_proxy(kind: Kind, fault: Fault, objects: String) -> (proxy::Proxy, Arc<AtomicBool>) {
    let fired = Arc::new(AtomicBool::new(false));
    let once = fired.clone();
    let proxy = proxy::start(
        &moto().endpoint,
        Arc::new(move |m: &Method, pq: &str| {
            if kind_of(m, pq, &objects) == Some(kind) && !once.swap(true, Ordering::SeqCst) {
                return match fault {
                    Fault::Status503 => Action::Fail(503),
                    Fault::Silence => Action::Hang,
                    Fault::BodyCut => Action::CutBody(100_000),
                };
            }
            Action::Forward
        }),
    );
    (proxy, fired)
}

#[test]
fn every_request_kind_survives_a_503_silence_or_broken_body() {
    let mut outcomes = Vec::new();
    let cases = cases(&[
        Kind::List,
        Kind::Get,
        Kind::CreateUpload,
        Kind::UploadPart,
        Kind::Complete,
        Kind::PutDocument,
        Kind::DynamoDb,
    ]);
    for (kind, fault) in cases {
        // GIVEN a bucket with small objects and one that is read in ranges
        let ctx = Ctx::new("fault");
        ctx.put("a.txt", "small object a");
        ctx.put("b/c.txt", "small object c");
        ctx.put("big.bin", vec![9u8; 10 << 20]);
        let (proxy, fired) = faulty_proxy(kind, fault, format!("/{}/", ctx.src));

        // WHEN the first request of that kind meets the fault
        let run =
            ctx.via(&proxy.endpoint)
                .export(&["--request-timeout", "2s", "--part-size", "5MiB"]);

        // THEN the export completes, its bundle verifies, and no upload is left open
        let outcome = if run.code == 0 {
            let b = ctx.download(&ctx.job, 1);
            let got = b.extract();
            assert_eq!(got.len(), 3, "{kind:?} × {fault:?}");
            assert_eq!(ctx.open_uploads(), 0, "{kind:?} × {fault:?}");
            "complete"
        } else {
            "failed"
        };
        assert!(
            fired.load(Ordering::SeqCst),
            "{kind:?} × {fault:?}: no such request"
        );
        outcomes.push(format!("{kind:?} × {fault:?}: {outcome}"));
        assert_eq!(
            run.code, 0,
            "{kind:?} × {fault:?}: {}\n{}",
            run.stdout, run.stderr
        );
    }
    eprintln!("{}", outcomes.join("\n"));
}

#[test]
fn an_import_from_s3_survives_a_503_silence_or_broken_body_on_every_request_kind() {
    // GIVEN one exported bundle (small objects and one large enough for a multipart upload)
    let ctx = Ctx::new("ifault");
    ctx.put("a.txt", "small object a");
    ctx.put("b/c.txt", "small object c");
    ctx.put("big.bin", vec![7u8; 12 << 20]);
    ctx.export_ok(&[]);
    let bundle = format!("{}/{}/00000001/", ctx.dest_uri(), ctx.job);
    let exp = format!("/{}/", ctx.exp);
    let mut outcomes = Vec::new();
    let cases = cases(&[
        Kind::List,
        Kind::Get,
        Kind::CreateUpload,
        Kind::UploadPart,
        Kind::Complete,
        Kind::PutDocument,
    ]);
    for (kind, fault) in cases {
        let dest = ctx.bucket(&format!("if{}", outcomes.len()));
        let (proxy, fired) = faulty_proxy(kind, fault, exp.clone());

        // WHEN `ferry import s3://…` meets the fault on its first request of that kind
        let state = tempfile::tempdir().unwrap();
        let run = ctx.via(&proxy.endpoint).ferry(&[
            "import",
            &bundle,
            "--to",
            &format!("s3://{dest}"),
            "--state",
            state.path().join("s.json").to_str().unwrap(),
            "--part-size",
            "5MiB",
            "--request-timeout",
            "2s",
        ]);

        // THEN every object arrives whole and no upload is left open
        assert!(
            fired.load(Ordering::SeqCst),
            "{kind:?} × {fault:?}: no such request"
        );
        assert_eq!(
            run.code, 0,
            "{kind:?} × {fault:?}: {}\n{}",
            run.stdout, run.stderr
        );
        let got = ctx.snapshot(&dest, "");
        assert_eq!(got.len(), 3, "{kind:?} × {fault:?}");
        assert_eq!(got["big.bin"].body, vec![7u8; 12 << 20]);
        assert_eq!(ctx.open_uploads_in(&dest), 0, "{kind:?} × {fault:?}");
        outcomes.push(format!("{kind:?} × {fault:?}: complete"));
    }
    eprintln!("{}", outcomes.join("\n"));
}
