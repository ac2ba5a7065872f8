//! Release controls end to end (moto, the `ferry` binary): reviewers approve bundles in the
//! export bucket, `ferry download` carries the approvals (and `--approvals-only` the late ones),
//! `--require-approvals` refuses a bundle short of distinct listed approvers (exit 5, nothing
//! written) — an unlisted key, the same key twice, an approval copied from another bundle do
//! not count — the import state remembers the requirement, and both sides' audit logs check
//! with `ferry audit` while an altered, removed or reordered line is named.

use std::path::{Path, PathBuf};

use crate::util::{Ctx, Run};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `ferry keygen`: (private key spec `file:…`, public key path).
fn keygen(ctx: &Ctx, dir: &Path, name: &str) -> (String, PathBuf) {
    let private = dir.join(name);
    let run = ctx.ferry(&["keygen", "--out", s(&private)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    (
        format!("file:{}", private.display()),
        dir.join(format!("{name}.pub")),
    )
}

fn ok(run: Run) -> serde_json::Value {
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    run.json()
}

fn approval_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("approval-"))
        .collect();
    names.sort();
    names
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_bundle_crosses_only_with_enough_distinct_listed_approvals_and_every_step_is_logged() {
    // GIVEN an exporter key, two listed reviewers and a stranger, and two signed bundles
    let ctx = Ctx::new("release");
    let keys = tempfile::tempdir().unwrap();
    let (exporter, exporter_pub) = keygen(&ctx, keys.path(), "exporter");
    let (alice, alice_pub) = keygen(&ctx, keys.path(), "alice");
    let (bob, bob_pub) = keygen(&ctx, keys.path(), "bob");
    let (carol, _) = keygen(&ctx, keys.path(), "carol");
    let logs = tempfile::tempdir().unwrap();
    let near = logs.path().join("near.jsonl");
    let far = logs.path().join("far.jsonl");
    ctx.put("a.txt", "first object");
    ctx.export_ok(&["--signing-key", &exporter, "--audit-log", s(&near)]);
    ctx.put("b.txt", "second object");
    ctx.export_ok(&["--signing-key", &exporter, "--audit-log", s(&near)]);
    let prefix = |seq: u64| format!("{}/{}/{seq:08}/", ctx.dest_uri(), ctx.job);
    let approve = |who: &str, seq: u64, note: &str| {
        let p = prefix(seq);
        let args = [
            "approve",
            &p,
            "--signing-key",
            who,
            "--note",
            note,
            "--audit-log",
            s(&near),
            "--json",
        ];
        ok(ctx.ferry(&args))["approval"].clone()
    };

    // WHEN alice approves bundle 1 in the export bucket, twice (the second replaces the first)
    let first = approve(&alice, 1, "checked the report");
    assert_eq!(first["replaced"], false);
    let again = approve(&alice, 1, "checked it again");
    assert_eq!(again["replaced"], true, "{again}");
    // AND carol, who is not a listed approver, approves it too
    approve(&carol, 1, "not my call");
    // AND the bundle is downloaded with them
    let media = tempfile::tempdir().unwrap();
    let run = ctx.ferry_download(
        media.path(),
        &["--sequence", "1", "--audit-log", s(&far), "--json"],
    );
    let dl = ok(run);
    assert_eq!(dl["bundles"][0]["approvals"], 2, "{dl}");
    let b1 = media.path().join(&ctx.job).join("00000001");
    assert_eq!(approval_files(&b1).len(), 2, "one file per key");

    // THEN an import needing two of {alice, bob} is refused: one of two, nothing written
    let mirror = tempfile::tempdir().unwrap();
    let required = [
        "--require-approvals",
        "2",
        "--approver",
        s(&alice_pub),
        "--approver",
        s(&bob_pub),
    ];
    let import = |bundle: &Path, extra: &[&str]| {
        let mut args = vec![
            "import",
            s(bundle),
            "--to-dir",
            s(mirror.path()),
            "--trust",
            s(&exporter_pub),
            "--audit-log",
            s(&far),
        ];
        args.extend_from_slice(extra);
        ctx.ferry(&args)
    };
    let run = import(&b1, &required);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("has 1"), "{}", run.stderr);
    assert!(run.stderr.contains("1 missing"), "{}", run.stderr);
    assert!(
        run.stderr.contains("not a listed approver"),
        "carol's is named as not counting: {}",
        run.stderr
    );
    assert!(
        !mirror.path().join("a.txt").exists(),
        "written while refused"
    );
    // AND verify refuses it the same way
    let mut verify = vec!["verify", s(&b1)];
    verify.extend_from_slice(&required);
    let run = ctx.ferry(&verify);
    assert_eq!(run.code, 5, "{}", run.stderr);

    // AND alice's approval twice over (a copy under another name) still counts once
    let doubled = tempfile::tempdir().unwrap();
    copy_dir(&b1, doubled.path());
    // (alice's file is the one `ferry approve` named; file names sort by key digest, not by who)
    let alice_name = Path::new(again["file"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_owned();
    let alice_file = doubled.path().join(&alice_name);
    let alice_bytes = std::fs::read(&alice_file).unwrap();
    let fake_name = format!("approval-{}.json", "0".repeat(64));
    std::fs::write(doubled.path().join(&fake_name), &alice_bytes).unwrap();
    let run = import(doubled.path(), &required);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("counts once"), "{}", run.stderr);

    // WHEN bob approves bundle 2 (not 1) and his approval is copied onto bundle 1
    approve(&bob, 2, "bundle two only");
    let media2 = tempfile::tempdir().unwrap();
    ok(ctx.ferry_download(media2.path(), &["--sequence", "2", "--json"]));
    let b2 = media2.path().join(&ctx.job).join("00000002");
    let copied = tempfile::tempdir().unwrap();
    copy_dir(&b1, copied.path());
    for name in approval_files(&b2) {
        std::fs::copy(b2.join(&name), copied.path().join(&name)).unwrap();
    }
    // THEN it does not count for bundle 1
    let run = import(copied.path(), &required);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("not this one"), "{}", run.stderr);
    // AND an approval altered in one byte does not count either
    let altered = tempfile::tempdir().unwrap();
    copy_dir(&b1, altered.path());
    let mut bytes = alice_bytes.clone();
    let at = bytes.windows(7).position(|w| w == b"checked").unwrap();
    bytes[at] = b'C';
    std::fs::write(altered.path().join(&alice_name), bytes).unwrap();
    let run = import(
        altered.path(),
        &["--require-approvals", "1", "--approver", s(&alice_pub)],
    );
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("does not match"), "{}", run.stderr);

    // WHEN bob approves bundle 1 after the download, and --approvals-only brings it to the media
    approve(&bob, 1, "second pair of eyes");
    let dl = ok(ctx.ferry_download(
        media.path(),
        &["--approvals-only", "--audit-log", s(&far), "--json"],
    ));
    assert_eq!(dl["bundles"][0]["volumes"].as_array().unwrap().len(), 0);
    assert_eq!(dl["bundles"][0]["approvals"], 1, "{dl}");
    assert_eq!(approval_files(&b1).len(), 3);
    // THEN two distinct listed approvers apply it
    let run = import(&b1, &[&required[..], &["--json"]].concat());
    let report = ok(run);
    assert_eq!(report["bundles"][0]["status"], "applied");
    assert_eq!(
        report["bundles"][0]["approved_by"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        std::fs::read(mirror.path().join("a.txt")).unwrap(),
        b"first object"
    );
    // AND verify with the requirement names both
    let mut verify = vec!["verify", s(&b1), "--json"];
    verify.extend_from_slice(&required);
    let v = ok(ctx.ferry(&verify));
    assert_eq!(v["bundles"][0]["approved_by"].as_array().unwrap().len(), 2);

    // AND ferry review lists every approval file, valid or why not
    let review = ok(ctx.ferry(&[
        "review",
        s(&b1),
        "--approver",
        s(&alice_pub),
        "--approver",
        s(&bob_pub),
        "--json",
    ]));
    let rows = review["bundles"][0]["approvals"]
        .as_array()
        .unwrap()
        .clone();
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.len(), 3, "{review}");
    assert_eq!(
        statuses.iter().filter(|s| **s == "valid").count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses.iter().any(|s| s.contains("not a listed approver")));
    assert!(rows.iter().any(|r| r["note"] == "second pair of eyes"));

    // WHEN bundle 2 (approved by bob alone) is imported without the flags
    let run = import(&b2, &[]);
    // THEN the import state remembered the requirement
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("1 missing"), "{}", run.stderr);
    assert!(!mirror.path().join("b.txt").exists());
    // AND --force with a reason and a lower requirement replaces it, and is logged
    let run = import(
        &b2,
        &[
            "--force",
            "--reason",
            "INC-42: alice is away",
            "--require-approvals",
            "1",
            "--approver",
            s(&bob_pub),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read(mirror.path().join("b.txt")).unwrap(),
        b"second object"
    );

    // AND a sealed bundle's approvals are judged on the media, without its identity
    let (_, recipient) = crate::sealed::age_keygen(keys.path(), "age.key");
    ctx.put("c.txt", "third object");
    ctx.export_ok(&["--signing-key", &exporter, "--encrypt-to", &recipient]);
    let media3 = tempfile::tempdir().unwrap();
    ok(ctx.ferry_download(media3.path(), &["--sequence", "3", "--json"]));
    let b3 = media3.path().join(&ctx.job).join("00000003");
    let mut verify3 = vec!["verify", s(&b3), "--trust", s(&exporter_pub)];
    verify3.extend_from_slice(&required);
    let run = ctx.ferry(&verify3);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("has 0"), "{}", run.stderr);
    let p3 = prefix(3);
    for who in [&alice, &bob] {
        ok(ctx.ferry(&["approve", &p3, "--signing-key", who, "--json"]));
    }
    ok(ctx.ferry_download(media3.path(), &["--approvals-only", "--json"]));
    verify3.push("--json");
    let v = ok(ctx.ferry(&verify3));
    assert_eq!(v["bundles"][0]["contents_checked"], false);
    assert_eq!(v["bundles"][0]["approved_by"].as_array().unwrap().len(), 2);

    // THEN both logs check, line by line
    let near_log = ok(ctx.ferry(&["audit", s(&near), "--json"]));
    let actions = |log: &serde_json::Value| -> Vec<String> {
        log["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                format!(
                    "{} {}",
                    l["action"].as_str().unwrap(),
                    l["outcome"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        actions(&near_log),
        [
            "export ok",
            "export ok",
            "approve ok",
            "approve ok",
            "approve ok",
            "approve ok",
            "approve ok"
        ],
        "{near_log}"
    );
    assert!(near_log["head"].as_str().is_some_and(|h| h.len() == 64));
    let far_log = ok(ctx.ferry(&["audit", s(&far), "--json"]));
    assert_eq!(
        actions(&far_log),
        [
            "download ok",
            "import refused",
            "import refused",
            "import refused",
            "import refused",
            "download ok",
            "import ok",
            "import refused",
            "import ok"
        ],
        "{far_log}"
    );
    let lines = far_log["lines"].as_array().unwrap();
    assert_eq!(lines[0]["prev"], serde_json::Value::Null);
    assert_eq!(lines[6]["objects"], 1);
    assert!(lines[1]["reason"].as_str().unwrap().contains("1 missing"));
    // a refusal names the bundle it refused
    assert_eq!(lines[1]["job"], ctx.job.as_str());
    assert_eq!(lines[1]["sequence"], 1);
    assert!(
        lines[1]["bundle_digest"]
            .as_str()
            .is_some_and(|d| d.len() == 64)
    );
    assert!(
        lines[5]["reason"]
            .as_str()
            .unwrap()
            .starts_with("approvals only")
    );
    assert!(
        lines[8]["reason"]
            .as_str()
            .unwrap()
            .contains("--force: INC-42: alice is away"),
        "{}",
        lines[8]
    );
    assert!(
        lines
            .iter()
            .all(|l| l["who"].as_str().is_some_and(|w| !w.is_empty()))
    );

    // AND an altered, a removed and a reordered line are each named (exit 5)
    let text = std::fs::read_to_string(&far).unwrap();
    let orig: Vec<&str> = text.lines().collect();
    let broken = |lines: Vec<String>, line: usize| {
        let f = logs.path().join("broken.jsonl");
        std::fs::write(&f, lines.join("\n") + "\n").unwrap();
        let run = ctx.ferry(&["audit", s(&f)]);
        assert_eq!(run.code, 5, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!("line {line}:")),
            "line {line}: {}",
            run.stderr
        );
    };
    let own = |v: &[&str]| v.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    let mut altered = own(&orig);
    altered[6] = altered[6].replace("\"objects\":1", "\"objects\":2");
    assert_ne!(altered[6], orig[6]);
    broken(altered, 7);
    let mut removed = own(&orig);
    removed.remove(3);
    broken(removed, 4);
    let mut reordered = own(&orig);
    reordered.swap(4, 5);
    broken(reordered, 5);
}
