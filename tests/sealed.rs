//! Sealed (age-encrypted) bundles across the boundary: exported with `--encrypt-to` and signed
//! by a KMS key, the media holds only ciphertext (no key, no byte of any object), checks out
//! against `SHA256SUMS` and the signature without any secret, opens with the real `age` tool,
//! and verifies and imports into a bucket and a directory with `--identity`; a wrong identity,
//! a missing one, or an altered byte are refused before anything is written.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Ctx, dir_snapshot};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `age-keygen` (the real tool): the identity file and its recipient.
pub fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("age-keygen")
        .args(["-o", s(&key)])
        .output()
        .expect("age-keygen is installed by scripts/setup.sh");
    assert!(out.status.success(), "{out:?}");
    let out = Command::new("age-keygen")
        .args(["-y", s(&key)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (
        key,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sealed_bundles_hide_everything_and_round_trip_with_the_identity() {
    // GIVEN objects with recognisable bytes and names, a KMS signing key and an age key pair
    let ctx = Ctx::new("sealed");
    let key_id = ctx.kms_signing_key();
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_keygen(keys.path(), "age.key");
    let (stranger, _) = age_keygen(keys.path(), "stranger.key");
    let secret = b"TOP-SECRET-PAYLOAD-0123456789";
    let mut big = Vec::with_capacity(9 << 20);
    while big.len() < 9 << 20 {
        big.extend_from_slice(secret);
    }
    ctx.put("classified/plans.txt", secret.to_vec());
    ctx.put("classified/big.bin", big.clone());
    ctx.set_metadata("classified/plans.txt", "text/x-secret", &[("owner", "ops")]);
    ctx.put("readme.md", "hello across the gap");

    // WHEN exported signed and sealed, in volumes of 1 MiB
    let r = ctx.export_ok(&[
        "--signing-key",
        &format!("kms:{key_id}"),
        "--encrypt-to",
        &recipient,
        "--volume-size",
        "1MiB",
    ]);
    assert_eq!(r["status"], "complete");
    let names: Vec<String> = r["volume_details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.len() >= 2, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".zip.age")), "{names:?}");

    // AND downloaded onto the media
    let media = tempfile::tempdir().unwrap();
    let run = ctx.ferry_download(media.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let bundle = media.path().join(&ctx.job).join("00000001");

    // THEN the export's review report is beside bundle.json in the export bucket…
    let report = format!("bundles/{}/00000001/review.html", ctx.job);
    assert!(ctx.get(&ctx.exp, &report).is_some(), "no {report}");
    // …and the media holds ciphertext only: no object's bytes, no key, no summary, no report
    let mut files: Vec<String> = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected = names.clone();
    expected.extend(["SHA256SUMS".into(), "SHA256SUMS.sig".into()]);
    expected.sort();
    assert_eq!(files, expected);
    for f in &files {
        let bytes = std::fs::read(bundle.join(f)).unwrap();
        for needle in [
            &secret[..],
            b"classified",
            b"plans.txt",
            b"owner",
            b"manifest.json",
        ] {
            assert!(
                !contains(&bytes, needle),
                "{f} reveals `{}`",
                String::from_utf8_lossy(needle)
            );
        }
    }
    let out = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // AND without any secret, verify checks the media and the signature (no AWS either)
    let public = keys.path().join("kms.pub");
    let run = ctx.ferry(&["public-key", "--signing-key", &format!("kms:{key_id}")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::fs::write(&public, &run.stdout).unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("ferry"))
        .args(["verify", s(&bundle), "--trust", s(&public), "--json"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bundles"][0]["contents_checked"], false, "{v}");
    assert_eq!(v["bundles"][0]["encrypted"], true, "{v}");
    assert!(v["bundles"][0]["signed_by"].is_string(), "{v}");

    // AND the real age tool opens a volume that a real zip reader lists
    let first = bundle.join(&names[0]);
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "age -d -i '{}' '{}' | bsdtar -tf -",
                identity.display(),
                first.display()
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(s3_ferry::format::manifest::MANIFEST_ENTRY),
        "{listing}"
    );

    // AND with the identity every entry is checked
    let run = ctx.ferry(&[
        "verify",
        s(&bundle),
        "--trust",
        s(&public),
        "--identity",
        s(&identity),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["bundles"][0]["contents_checked"], true, "{v}");
    assert_eq!(v["bundles"][0]["objects"], 3, "{v}");

    // AND import without an identity, or with a stranger's, is refused and writes nothing
    let dir = tempfile::tempdir().unwrap();
    let run = ctx.ferry(&["import", s(&bundle), "--to-dir", s(dir.path())]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("--identity"), "{}", run.stderr);
    let run = ctx.ferry(&[
        "import",
        s(&bundle),
        "--to-dir",
        s(dir.path()),
        "--identity",
        s(&stranger),
    ]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("other recipients"), "{}", run.stderr);
    assert!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .all(|e| e.unwrap().file_name() == ".ferry"),
        "a refused import wrote files"
    );

    // AND import with the identity replays every byte into a directory…
    let run = ctx.ferry(&[
        "import",
        s(&bundle),
        "--to-dir",
        s(dir.path()),
        "--identity",
        s(&identity),
        "--trust",
        s(&public),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got = dir_snapshot(dir.path());
    assert_eq!(got["classified/plans.txt"], secret.to_vec());
    assert_eq!(got["classified/big.bin"], big);
    assert_eq!(got["readme.md"], b"hello across the gap".to_vec());

    // …and into a bucket, headers included
    let dest = ctx.bucket("sealed-dest");
    let run = ctx.ferry(&[
        "import",
        s(&bundle),
        "--to",
        &format!("s3://{dest}"),
        "--state",
        s(&keys.path().join("bucket-state.json")),
        "--identity",
        s(&identity),
        "--trust",
        s(&public),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let snap = ctx.snapshot(&dest, "");
    assert_eq!(snap.len(), 3);
    assert_eq!(snap["classified/big.bin"].body, big);
    assert_eq!(
        snap["classified/plans.txt"].content_type.as_deref(),
        Some("text/x-secret")
    );
    assert_eq!(snap["classified/plans.txt"].metadata["owner"], "ops");
    assert_eq!(ctx.open_uploads_in(&dest), 0);
}

#[test]
fn an_altered_sealed_volume_is_refused() {
    // GIVEN a sealed bundle on the media, without SHA256SUMS (only the encryption can tell)
    let ctx = Ctx::new("sealedbad");
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_keygen(keys.path(), "age.key");
    ctx.put("a.txt", vec![b'a'; 300_000]);
    ctx.export_ok(&["--encrypt-to", &recipient]);
    let media = tempfile::tempdir().unwrap();
    let run = ctx.ferry_download(media.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let bundle = media.path().join(&ctx.job).join("00000001");
    std::fs::remove_file(bundle.join("SHA256SUMS")).unwrap();
    let volume = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".zip.age"))
        .unwrap();
    let good = std::fs::read(&volume).unwrap();

    // WHEN one byte in the middle, or the tail, of the ciphertext is altered
    for (what, bytes) in [
        ("flipped", {
            let mut b = good.clone();
            let mid = b.len() / 2;
            b[mid] ^= 1;
            b
        }),
        ("truncated", good[..good.len() - 100].to_vec()),
        ("extended", {
            let mut b = good.clone();
            b.extend_from_slice(&[0u8; 64]);
            b
        }),
    ] {
        std::fs::write(&volume, &bytes).unwrap();
        // THEN verify and import exit 5 and nothing is written
        let run = ctx.ferry(&["verify", s(&bundle), "--identity", s(&identity)]);
        assert_eq!(run.code, 5, "{what}: {}", run.stderr);
        assert!(
            run.stderr.contains("encryption does not check out"),
            "{what}: {}",
            run.stderr
        );
        let dir = tempfile::tempdir().unwrap();
        let run = ctx.ferry(&[
            "import",
            s(&bundle),
            "--to-dir",
            s(dir.path()),
            "--identity",
            s(&identity),
        ]);
        assert_eq!(run.code, 5, "{what}: {}", run.stderr);
        assert!(!dir.path().join("a.txt").exists(), "{what}: a.txt written");
    }
}

#[test]
fn a_run_stalled_past_its_lease_changes_nothing_the_run_that_took_over_owns() {
    use std::sync::Arc;
    use std::time::Duration;
    // GIVEN objects that each fill a sealed volume of their own (age gives every volume a
    // fresh file key: a volume written twice never has the same bytes)
    let ctx = Ctx::new("fence");
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_keygen(keys.path(), "age.key");
    for i in 0..6u8 {
        ctx.put(&format!("obj-{i}.bin"), vec![i; 3 << 20]);
    }
    let args = |extra: &'static str| {
        let mut a = vec![
            "--lease-ttl",
            "10s",
            "--volume-size",
            "1MiB",
            "--encrypt-to",
            recipient.as_str(),
        ];
        a.push(extra);
        a
    };
    // AND run A, stalled (SIGSTOP, as a laptop that sleeps) while it writes its second volume
    use std::sync::atomic::{AtomicBool, Ordering};
    let (gate, stalled, slow_db) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (g, st, sd) = (gate.clone(), stalled.clone(), slow_db.clone());
    let proxy = crate::proxy::start(
        &crate::util::moto().endpoint,
        Arc::new(move |m: &hyper::Method, pq: &str| {
            // The second volume's first write: its whole-body PUT (a volume under one part),
            // or the creation of its multipart upload.
            let whole = m == hyper::Method::PUT && !pq.contains("partNumber=");
            let upload = m == hyper::Method::POST && pq.contains("?uploads");
            if pq.contains("-0002.zip") && (whole || upload) {
                st.store(true, Ordering::SeqCst);
                crate::proxy::Action::Gate(g.clone())
            } else if m == hyper::Method::POST && pq == "/" && sd.load(Ordering::SeqCst) {
                // After the wake-up, A learns late that its lease is gone: fencing must
                // not depend on how soon the heartbeat notices.
                crate::proxy::Action::Delay(3000)
            } else {
                crate::proxy::Action::Forward
            }
        }),
    );
    let checkpoint = format!("bundles/_state/{}/00000001/checkpoint.json", ctx.job);
    let a_args = ctx.export_args(&ctx.job, &ctx.source_uri(), &ctx.table, &args("--no-moves"));
    let a = start_stalled(ctx.via(&proxy.endpoint).ferry_cmd().args(&a_args), &stalled);
    // WHEN A's lease expires and run B takes the bundle over and completes it
    std::thread::sleep(Duration::from_secs(11));
    let b = ctx.export_with(&ctx.source_uri(), &ctx.table, &args("--json"));
    assert_eq!(b.code, 0, "B: {}\n{}", b.stdout, b.stderr);
    let digest = ctx.state().bundle_digest.clone();
    // AND A wakes up and carries on
    slow_db.store(true, Ordering::SeqCst);
    gate.store(true, Ordering::SeqCst);
    signal(&a, "-CONT");
    let out = a.wait_with_output().unwrap();
    let a_err = String::from_utf8_lossy(&out.stderr).into_owned();

    // THEN A stops without committing, saying another run took over …
    assert_ne!(out.status.code(), Some(0), "A: {a_err}");
    assert!(
        a_err.contains("another run") || a_err.contains("lease was lost"),
        "A: {a_err}"
    );
    // … AND B's bundle is exactly as B committed it: every volume matches SHA256SUMS, the
    // state is B's, no checkpoint was recreated and no upload is left open
    let state = ctx.state();
    assert_eq!((state.sequence, state.bundle_digest), (1, digest));
    assert!(
        ctx.get(&ctx.exp, &checkpoint).is_none(),
        "A recreated the checkpoint"
    );
    assert_eq!(ctx.open_uploads(), 0);
    let media = tempfile::tempdir().unwrap();
    let run = ctx.ferry_download(media.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let bundle = media.path().join(&ctx.job).join("00000001");
    crate::util::run_ok(
        Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(&bundle),
    );
    let dir = tempfile::tempdir().unwrap();
    let r = ctx.ferry(&[
        "import",
        s(&bundle),
        "--to-dir",
        s(dir.path()),
        "--identity",
        s(&identity),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got = dir_snapshot(dir.path());
    assert_eq!(got.len(), 6);
    for i in 0..6u8 {
        assert!(
            got[&format!("obj-{i}.bin")] == vec![i; 3 << 20],
            "obj-{i}.bin"
        );
    }
}

/// Start `cmd` (run A), wait (at most 60 s) until its request is held (`stalled`), then stop it
/// with SIGSTOP, as a laptop that sleeps.
fn start_stalled(
    cmd: &mut Command,
    stalled: &std::sync::atomic::AtomicBool,
) -> std::process::Child {
    use std::time::{Duration, Instant};
    let mut a = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !stalled.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "A never got going"
        );
        assert!(
            a.try_wait().unwrap().is_none(),
            "A finished before it was stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&a, "-STOP");
    a
}

/// Send `sig` (`-STOP`, `-CONT`) to `child`.
fn signal(child: &std::process::Child, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    )
}

/// The import side's key index, item by item: key → (fence, doc).
fn key_index(
    ctx: &Ctx,
    table: &str,
    job: &str,
) -> std::collections::BTreeMap<String, (i64, String)> {
    let prefix = format!("import/{job}/k/");
    let client = aws_sdk_dynamodb::Client::new(&crate::util::sdk_config(&ctx.endpoint));
    crate::util::block_on(async {
        let mut out = std::collections::BTreeMap::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in page.items() {
                let key = item[s3_ferry::store::dynamo::KEY_ATTRIBUTE].as_s().unwrap();
                if let Some(k) = key.strip_prefix(&prefix) {
                    let fence = item
                        .get("fence")
                        .map_or(-1, |f| f.as_n().unwrap().parse().unwrap());
                    out.insert(k.to_string(), (fence, item["doc"].as_s().unwrap().clone()));
                }
            }
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        out
    })
}

#[test]
fn an_import_stalled_past_its_lease_changes_nothing_in_the_key_index_of_the_run_that_took_over() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    // GIVEN a bundle of 30 objects on the media
    let ctx = Ctx::new("ifence");
    for i in 0..30u8 {
        ctx.put(&format!("k/obj-{i:02}"), vec![i; 1000 + i as usize]);
    }
    ctx.export_ok(&[]);
    let media = tempfile::tempdir().unwrap();
    assert_eq!(ctx.ferry_download(media.path(), &[]).code, 0);
    let bundle = media.path().join(&ctx.job).join("00000001");
    let dest = format!("s3://{}", ctx.bucket("ifence-to"));
    let args = [
        "import",
        s(&bundle),
        "--to",
        &dest,
        "--table",
        &ctx.table,
        "--job",
        &ctx.job,
        "--lease-ttl",
        "10s",
    ];
    // AND import A, stalled (SIGSTOP) while its first key-index write is on the wire
    let (gate, stalled) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (g, st) = (gate.clone(), stalled.clone());
    let proxy = crate::proxy::start_full(
        &crate::util::moto().endpoint,
        Arc::new(move |r: &crate::proxy::Req| {
            if r.dynamo_op() == Some("PutItem") && !st.swap(true, Ordering::SeqCst) {
                crate::proxy::Action::Gate(g.clone())
            } else {
                crate::proxy::Action::Forward
            }
        }),
    );
    let a = start_stalled(ctx.via(&proxy.endpoint).ferry_cmd().args(args), &stalled);
    // WHEN A's lease expires and import B takes over and applies the bundle
    std::thread::sleep(Duration::from_secs(11));
    let b = ctx.ferry(&args);
    assert_eq!(b.code, 0, "B: {}", b.stderr);
    let written_by_b = key_index(&ctx, &ctx.table, &ctx.job);
    assert_eq!(written_by_b.len(), 30);
    let b_fence = written_by_b.values().next().unwrap().0;
    assert!(written_by_b.values().all(|(f, _)| *f == b_fence && *f > 0));
    // AND A wakes up: its held write goes on
    gate.store(true, Ordering::SeqCst);
    signal(&a, "-CONT");
    let out = a.wait_with_output().unwrap();
    let a_err = String::from_utf8_lossy(&out.stderr).into_owned();

    // THEN A stops, saying another run took over …
    assert_ne!(out.status.code(), Some(0), "A: {a_err}");
    assert!(a_err.contains("lease was lost"), "A: {a_err}");
    // … AND the key index is exactly as B wrote it, and the import record is B's
    let after = key_index(&ctx, &ctx.table, &ctx.job);
    let changed: Vec<(&String, i64)> = after
        .iter()
        .filter(|(k, v)| written_by_b.get(*k) != Some(*v))
        .map(|(k, (f, _))| (k, *f))
        .collect();
    assert!(
        changed.is_empty() && after.len() == written_by_b.len(),
        "A rewrote key-index entries B owns (key, fence; B's fence is {b_fence}): {changed:?}"
    );
    let item = format!("import/{}", ctx.job);
    let docs = crate::util::block_on(
        ctx.clients
            .table(&ctx.table)
            .get_docs(std::slice::from_ref(&item)),
    )
    .unwrap();
    let record: s3_ferry::import::ledger::Record = serde_json::from_str(&docs[&item]).unwrap();
    assert_eq!((record.sequence, record.pending), (1, None));
}
