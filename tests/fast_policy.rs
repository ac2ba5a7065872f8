//! The content policy on the fast tier (in-memory stores): what an export withholds, rule by
//! rule, that nothing else is withheld, that no withheld key reaches the bundle, and that later
//! runs report it again without shipping until the policy or the object changes.

use std::collections::BTreeMap;

use s3_ferry::format::manifest::ObjectHeaders;
use s3_ferry::store::{ObjectStore, PutMode};

use crate::util::block_on;
use crate::world::World;

const MIB: usize = 1024 * 1024;

const POLICY: &str = r#"
max_size = "10MiB"
allow_prefixes = ["data/"]
allow_types = ["text/plain", "application/pdf", "image/*"]
deny_types = ["application/x-executable"]
deny_keys = ["**/*.exe"]
deny_keywords = ["TOP SECRET", "NOFORN"]
type_mismatch = "withhold"
"#;

/// An ELF header (infer needs more than 52 bytes).
fn elf() -> Vec<u8> {
    let mut b = b"\x7fELF\x02\x01\x01".to_vec();
    b.resize(128, 0);
    b
}

/// Text of `len` bytes, `tail` at its very end.
fn text(len: usize, tail: &str) -> Vec<u8> {
    let mut b = b"plain words of a report\n".repeat(len / 24 + 1);
    b.truncate(len - tail.len());
    b.extend_from_slice(tail.as_bytes());
    b
}

fn policy(text: &str) -> std::sync::Arc<s3_ferry::policy::Policy> {
    std::sync::Arc::new(s3_ferry::policy::Policy::parse(text, "policy.toml").unwrap())
}

fn withheld(r: &serde_json::Value) -> BTreeMap<String, String> {
    r["withheld_objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap().to_string(),
                o["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_policy_withholds_each_rule_and_nothing_else_and_reports_it_every_run() {
    // GIVEN a source with one object breaking each rule, and objects that break none
    let w = World::new("policy");
    let put = |key: &str, body: Vec<u8>, h: ObjectHeaders| {
        block_on(
            w.objects
                .put(&w.src, key, body.into(), &h, PutMode::Overwrite),
        )
        .unwrap();
    };
    let plain = ObjectHeaders::default;
    put("data/report.pdf", elf(), plain()); // a .pdf that is an ELF
    put("data/tool.exe", b"MZ not really".to_vec(), plain());
    put("data/secret.txt", text(200, "this is Top Secret"), plain());
    put(
        "data/tagged.txt",
        text(100, ""),
        ObjectHeaders {
            metadata: [("marking".to_string(), "noforn".to_string())].into(),
            ..Default::default()
        },
    );
    put("data/huge.txt", text(11 * MIB, ""), plain());
    put("other/outside.txt", text(50, ""), plain());
    // a large text object (read in ranges) with its keyword in its last bytes
    put("data/long.txt", text(9 * MIB, "NOFORN"), plain());
    // and what breaks no rule: text, a PDF, a PNG, a large clean text
    put("data/ok.txt", text(300, ""), plain());
    put(
        "data/doc.pdf",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n".to_vec(),
        plain(),
    );
    put(
        "data/photo.png",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
        plain(),
    );
    put("data/clean-long.txt", text(9 * MIB, "the end"), plain());

    // WHEN it is exported under the policy
    let p = policy(POLICY);
    let r = w.export_with(|c| c.policy = Some(p.clone()));

    // THEN each rule withheld its object, naming the rule, and everything else shipped
    let got = withheld(&r);
    let want = [
        ("data/huge.txt", "max_size"),
        ("data/long.txt", "keyword `NOFORN` in the content"),
        ("data/report.pdf", "type application/x-executable"),
        ("data/secret.txt", "keyword `TOP SECRET` in the content"),
        ("data/tagged.txt", "keyword `NOFORN` in metadata `marking`"),
        ("data/tool.exe", "deny_keys"),
        ("other/outside.txt", "allow_prefixes"),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (key, rule) in want {
        assert!(got[key].contains(rule), "{key}: {}", got[key]);
    }
    assert_eq!(r["withheld"], want.len(), "{r}");
    let b = w.download(&w.job, 1);
    let shipped: Vec<String> = b.objects().into_iter().map(|o| o.key).collect();
    assert_eq!(
        shipped,
        [
            "data/clean-long.txt",
            "data/doc.pdf",
            "data/ok.txt",
            "data/photo.png"
        ]
    );
    // AND the bundle names the policy's digest and none of the withheld keys
    for m in &b.manifests {
        assert_eq!(m.policy_digest.as_deref(), Some(p.digest.as_str()));
    }
    let on_media: String = b
        .volume_paths()
        .iter()
        .map(|v| String::from_utf8_lossy(&std::fs::read(v).unwrap()).into_owned())
        .collect();
    for (key, _) in want {
        assert!(!on_media.contains(key), "{key} is on the media");
    }

    // AND the export wrote its review report beside bundle.json: what shipped, with the
    // types it detected, and what it withheld (in the export bucket only)
    let prefix = format!("bundles/{}/00000001/", w.job);
    let review: serde_json::Value =
        serde_json::from_slice(&w.get(&w.exp, &format!("{prefix}review.json")).unwrap()).unwrap();
    let rows = review["bundles"][0]["objects"].as_array().unwrap();
    let op_of = |key: &str| {
        rows.iter().find(|o| o["key"] == key).map(|o| {
            (
                o["op"].as_str().unwrap().to_string(),
                o["detected_type"].as_str().unwrap().to_string(),
            )
        })
    };
    assert_eq!(
        op_of("data/doc.pdf"),
        Some(("put".into(), "application/pdf".into()))
    );
    assert_eq!(
        op_of("data/report.pdf").map(|o| o.0),
        Some("withheld".into())
    );
    assert_eq!(rows.len(), 4 + want.len());
    let page = String::from_utf8(w.get(&w.exp, &format!("{prefix}review.html")).unwrap()).unwrap();
    assert!(page.contains("data/clean-long.txt") && page.contains("withheld"));

    // WHEN the next run finds nothing changed
    let r = w.export_with(|c| c.policy = Some(p.clone()));
    // THEN it reports the same objects again and ships nothing
    assert_eq!(r["status"], "no_changes", "{r}");
    assert_eq!(withheld(&r), got);

    // WHEN one object changes and the policy is relaxed for another
    put("data/secret.txt", text(200, "now public"), plain());
    let relaxed = policy(&POLICY.replace("\"NOFORN\"", "\"NOTHING\""));
    let r = w.export_with(|c| c.policy = Some(relaxed.clone()));
    // THEN both ship, and the rest is still withheld
    let b = w.download(&w.job, 2);
    let shipped: Vec<String> = b.objects().into_iter().map(|o| o.key).collect();
    assert_eq!(
        shipped,
        ["data/long.txt", "data/secret.txt", "data/tagged.txt"],
        "{r}"
    );
    let still: Vec<String> = withheld(&r).into_keys().collect();
    assert_eq!(
        still,
        [
            "data/huge.txt",
            "data/report.pdf",
            "data/tool.exe",
            "other/outside.txt"
        ]
    );
}

#[test]
fn a_policy_file_that_does_not_parse_is_refused_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "max_size = \"1GiB\"\ndeny_keywords = \"one\"\n").unwrap();
    let e = s3_ferry::policy::Policy::from_file(&file)
        .unwrap_err()
        .to_string();
    assert!(e.contains("p.toml") && e.contains("line 2"), "{e}");
}

/// A ClamAV signature database that flags exactly `body` (`sigtool --md5`).
fn signature_db(dir: &std::path::Path, body: &[u8]) -> std::path::PathBuf {
    let sample = dir.join("sample.bin");
    std::fs::write(&sample, body).unwrap();
    let out = std::process::Command::new("sigtool")
        .arg("--md5")
        .arg(&sample)
        .output()
        .expect("sigtool (Debian's clamav; scripts/setup.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    let db = dir.join("db.hdb");
    std::fs::write(&db, out.stdout).unwrap();
    db
}

#[test]
fn the_import_quarantines_what_its_own_policy_and_clamscan_flag_and_fails_closed() {
    use s3_ferry::import::screen::{Quarantine, Screen};
    // GIVEN a bundle exported without any policy: a clean text, bytes the scanner knows, an
    // ELF named .txt and a memo with a keyword
    let w = World::new("quarantine");
    let evil = b"EICAR-LIKE TEST BYTES, FLAGGED BY OUR OWN SIGNATURE\n".to_vec();
    w.put("clean.txt", text(100, ""));
    w.put("evil.bin", evil.clone());
    w.put("tool.txt", elf());
    w.put("memo.txt", text(300, "for noforn eyes"));
    w.export();
    let b1 = w.download(&w.job, 1);
    let tmp = tempfile::tempdir().unwrap();
    let db = signature_db(tmp.path(), &evil);
    let scan = format!("clamscan --no-summary -d '{}' {{}}", db.display());
    let far = policy("deny_types = [\"application/x-executable\"]\ndeny_keywords = [\"NOFORN\"]\n");
    let quarantine = tmp.path().join("quarantine");
    let screen = |scan: &str| {
        Some(Screen::new(
            Some(far.clone()),
            Some(scan.to_string()),
            Some(Quarantine::Dir(quarantine.clone())),
            2,
        ))
    };
    let dest = w.bucket("screened");
    let state = tmp.path().join("state.json");
    let import = |b: &crate::util::Bundle, scan: &str| {
        w.import_with(
            &[b.dir.path()],
            w.bucket_target(&w.clients.s3, &format!("s3://{dest}")),
            &state,
            |c| c.screen = screen(scan),
        )
    };

    // WHEN it is imported with the far side's policy, clamscan and a quarantine folder
    let r = import(&b1, &scan).unwrap();

    // THEN only the clean object is in the target, the bundle is applied, and the three others
    // are in the quarantine with a sidecar saying why
    assert_eq!(w.keys(&dest, ""), ["clean.txt"]);
    let out = &r["bundles"][0];
    assert_eq!(out["status"], "applied", "{r}");
    assert_eq!(out["quarantined"], 3, "{r}");
    let reasons: BTreeMap<String, String> = out["quarantined_objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["key"].as_str().unwrap().into(),
                q["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        reasons["evil.bin"].starts_with("scanner: ") && reasons["evil.bin"].contains("FOUND"),
        "{reasons:?}"
    );
    assert!(
        reasons["tool.txt"].contains("application/x-executable"),
        "{reasons:?}"
    );
    assert!(
        reasons["memo.txt"].contains("keyword `NOFORN`"),
        "{reasons:?}"
    );
    // AND the import state records what was kept out (nothing of it in its key index)
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        record["record"]["quarantined"].as_array().map(Vec::len),
        Some(3),
        "{record}"
    );
    let index = s3_ferry::import::ledger::file_index_entries(&state).unwrap();
    assert_eq!(index.keys().collect::<Vec<_>>(), ["clean.txt"]);
    let kept = quarantine.join(&w.job).join("00000001");
    assert_eq!(std::fs::read(kept.join("evil.bin")).unwrap(), evil);
    let sidecar: serde_json::Value = serde_json::from_slice(
        &std::fs::read(kept.join("tool.txt.ferry-quarantine.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["key"], "tool.txt");
    assert!(sidecar["reason"].as_str().unwrap().contains("x-executable"));

    // WHEN the next bundle is imported with a scanner that fails (its database is missing)
    w.put("later.txt", text(50, ""));
    w.export();
    let b2 = w.download(&w.job, 2);
    let broken = format!(
        "clamscan --no-summary -d '{}' {{}}",
        tmp.path().join("gone.hdb").display()
    );
    let e = import(&b2, &broken).unwrap_err();
    // THEN it stops before writing the object (fail closed), naming it and the scanner
    assert!(
        matches!(e, s3_ferry::error::Error::ScanFailed { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("later.txt"), "{e}");
    assert!(w.get(&dest, "later.txt").is_none());
    // AND with the scanner fixed the same bundle applies
    let r = import(&b2, &scan).unwrap();
    assert_eq!(r["bundles"][0]["status"], "applied", "{r}");
    assert_eq!(w.get(&dest, "later.txt"), Some(text(50, "")));
    assert_eq!(w.open_uploads_in(&dest), 0);
}

/// Headless Chromium's DOM of `page` after its scripts ran (`--dump-dom`).
fn chromium_dom(page: &std::path::Path, profile: &std::path::Path) -> String {
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium (Debian's; scripts/setup.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_review_report_lists_every_object_with_its_detected_type_and_renders_in_chromium() {
    // GIVEN a bundle with text, a PDF, an ELF named .pdf, a rename, a deletion and a
    // metadata-only change, under an export policy
    let w = World::new("review");
    w.put("docs/a.txt", text(100, ""));
    w.put(
        "docs/b.pdf",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n".to_vec(),
    );
    w.put("bin/fake.pdf", elf());
    w.put("old/name.txt", text(40, "renamed"));
    w.put("gone.txt", text(10, ""));
    let export_policy = policy("max_size = \"1GiB\"\n");
    w.export_with(|c| {
        c.policy = Some(export_policy.clone());
        c.scan_metadata = true;
    });
    block_on(w.objects.copy(&w.src, "old/name.txt", "new/name.txt", None)).unwrap();
    w.delete_keys(["old/name.txt".to_string(), "gone.txt".to_string()]);
    w.objects.change_headers(&w.src.clone(), "docs/a.txt", |h| {
        h.tags = [("k".to_string(), "v".to_string())].into()
    });
    w.put("docs/c.txt", text(5000, "NOFORN at the end"));
    w.export_with(|c| {
        c.policy = Some(export_policy.clone());
        c.scan_metadata = true;
    });
    let carry = tempfile::tempdir().unwrap();
    let (b1, b2) = (w.download(&w.job, 1), w.download(&w.job, 2));
    for b in [&b1, &b2] {
        let to = carry.path().join(b.summary.sequence.to_string());
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(b.dir.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    let review_policy = carry.path().join("review.toml");
    std::fs::write(
        &review_policy,
        "deny_keywords = [\"NOFORN\"]\ntype_mismatch = \"withhold\"\n",
    )
    .unwrap();

    // WHEN they are reviewed, with a policy, as JSON, CSV and HTML
    let (html, csv) = (
        carry.path().join("review.html"),
        carry.path().join("review.csv"),
    );
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"))
        .arg("review")
        .arg(carry.path().join("1"))
        .arg(carry.path().join("2"))
        .arg("--policy")
        .arg(&review_policy)
        .arg("--html")
        .arg(&html)
        .arg("--csv")
        .arg(&csv)
        .arg("--json")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // THEN each bundle lists every object with its size, SHA-256 and the type of its bytes,
    // and the policy's verdicts
    let b = &r["bundles"];
    assert_eq!(b.as_array().unwrap().len(), 2, "{r}");
    let rows = |i: usize| -> BTreeMap<String, serde_json::Value> {
        b[i]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    format!(
                        "{} {}",
                        o["op"].as_str().unwrap(),
                        o["key"].as_str().unwrap()
                    ),
                    o.clone(),
                )
            })
            .collect()
    };
    let first = rows(0);
    assert_eq!(first.len(), 5, "{first:#?}");
    assert_eq!(
        first["put bin/fake.pdf"]["detected_type"],
        "application/x-executable"
    );
    assert!(
        first["put bin/fake.pdf"]["verdict"]
            .as_str()
            .unwrap()
            .contains("mismatch")
    );
    assert_eq!(first["put docs/b.pdf"]["detected_type"], "application/pdf");
    assert_eq!(first["put docs/b.pdf"]["verdict"], "ok");
    assert_eq!(first["put docs/a.txt"]["size"], 100);
    assert_eq!(
        first["put docs/a.txt"]["sha256"].as_str().unwrap().len(),
        64
    );
    assert_eq!(b[0]["policy_digest"], export_policy.digest.as_str());
    assert_eq!(b[0]["signer"], serde_json::Value::Null);
    let second = rows(1);
    let ops: Vec<&String> = second.keys().collect();
    assert_eq!(
        ops,
        [
            "delete gone.txt",
            "metadata docs/a.txt",
            "move new/name.txt",
            "put docs/c.txt"
        ],
        "{second:#?}"
    );
    assert!(
        second["put docs/c.txt"]["verdict"]
            .as_str()
            .unwrap()
            .contains("NOFORN")
    );
    assert_eq!(second["move new/name.txt"]["from"], "old/name.txt");
    assert_eq!(b[1]["refused"], 1);
    // AND the CSV has a row per object
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5 + 4, "{csv}");
    // AND the HTML page is self-contained and, rendered by Chromium, shows every key
    let page = std::fs::read_to_string(&html).unwrap();
    for external in ["<script src", "<link", "http://", "https://"] {
        assert!(!page.contains(external), "the page loads {external}");
    }
    let dom = chromium_dom(&html, &carry.path().join("chromium"));
    for key in first
        .values()
        .chain(second.values())
        .map(|o| o["key"].as_str().unwrap())
    {
        assert!(dom.contains(key), "{key} is not in the rendered page");
    }
    assert!(dom.contains("application/x-executable") && dom.contains("By detected type"));

    // AND `ferry verify --policy` lists what that policy refuses, and still verifies (exit 0)
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"))
        .arg("verify")
        .arg(carry.path().join("1"))
        .arg("--policy")
        .arg(&review_policy)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused = &v["bundles"][0]["refused_objects"];
    assert_eq!(refused.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(refused[0][0], "bin/fake.pdf");
}

#[test]
fn the_export_scanner_withholds_what_it_flags_and_a_failing_one_ships_nothing() {
    // GIVEN a source with bytes a signature database knows, a large object and a clean one
    let w = World::new("exportscan");
    let evil = b"BYTES THE EXPORT'S SCANNER FLAGS\n".to_vec();
    w.put("evil.bin", evil.clone());
    w.put("large.txt", text(9 * MIB, "end"));
    w.put("clean.txt", text(100, ""));
    let tmp = tempfile::tempdir().unwrap();
    let db = signature_db(tmp.path(), &evil);
    let scan = format!("clamscan --no-summary -d '{}' {{}}", db.display());
    let broken = format!(
        "clamscan --no-summary -d '{}' {{}}",
        tmp.path().join("gone.hdb").display()
    );
    let export = |cmd: &str| {
        let mut cfg = w.export_config();
        cfg.scan = Some(cmd.to_string());
        block_on(s3_ferry::export::run(
            &w.clients.for_run(),
            &cfg,
            &s3_ferry::progress::NoProgress,
        ))
    };

    // WHEN the scanner fails
    let e = export(&broken).unwrap_err();
    // THEN nothing ships (fail closed) and the job's state is unchanged
    assert!(
        matches!(e, s3_ferry::error::Error::ScanFailed { .. }),
        "{e}"
    );
    assert!(
        block_on(w.clients.table(&w.table).load(&w.job))
            .unwrap()
            .is_none_or(|s| s.sequence == 0)
    );

    // WHEN it works
    let r = serde_json::to_value(export(&scan).unwrap()).unwrap();
    // THEN what it flags is withheld and the rest ships, the large object too
    let got = withheld(&r);
    assert_eq!(got.len(), 1, "{r}");
    assert!(got["evil.bin"].starts_with("scanner: "), "{got:?}");
    let shipped: Vec<String> = w
        .download(&w.job, 1)
        .objects()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(shipped, ["clean.txt", "large.txt"]);
    // AND the next run reports it again without scanning it
    let r = serde_json::to_value(export(&scan).unwrap()).unwrap();
    assert_eq!(
        (r["status"].as_str(), withheld(&r).len()),
        (Some("no_changes"), 1),
        "{r}"
    );
}
