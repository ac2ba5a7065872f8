//! A baseline import removes only what ferry wrote: anything else found under the target is
//! left, counted and listed (`--delete-unlisted` asks for an exact mirror), and an import
//! applies one job's bundles (sources holding several are refused before anything is written).

use std::path::Path;

use crate::util::Ctx;

fn import_dir(ctx: &Ctx, bundle: &Path, dir: &Path, extra: &[&str]) -> crate::util::Run {
    let mut args = vec![
        "import",
        bundle.to_str().unwrap(),
        "--to-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ctx.ferry(&args)
}

fn carried(ctx: &Ctx, job: &str, since: u64) -> tempfile::TempDir {
    let carry = tempfile::tempdir().unwrap();
    let dest = ctx.dest_uri();
    let since = since.to_string();
    let r = ctx.ferry(&[
        "download",
        "--from",
        &dest,
        "--job",
        job,
        "--since",
        &since,
        "--to",
        carry.path().to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "download: {}", r.stderr);
    carry
}

#[test]
fn a_first_import_into_a_home_folder_deletes_nothing_it_did_not_write() {
    // GIVEN a folder holding a person's files, and a baseline bundle of other keys
    let ctx = Ctx::new("homedir");
    ctx.put("docs/report.txt", "report");
    ctx.put("weird/../key", "an escaped key");
    ctx.export_ok(&[]);
    let home = tempfile::tempdir().unwrap();
    let own = [
        (".ssh/id_ed25519", "secret key"),
        (".bashrc", "alias ll"),
        ("notes.txt", "mine"),
    ];
    for (p, body) in own {
        let path = home.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let carry = carried(&ctx, &ctx.job, 0);
    let b1 = carry.path().join(&ctx.job).join("00000001");

    // WHEN it is imported into that folder
    let r = import_dir(&ctx, &b1, home.path(), &["--json"]);

    // THEN the person's files are all there, counted and named as kept
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = &r.json()["bundles"][0];
    assert_eq!(
        (out["removed"].as_u64(), out["kept_unlisted"].as_u64()),
        (Some(0), Some(3)),
        "{out}"
    );
    let mut kept: Vec<&str> = out["kept_unlisted_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, [".bashrc", ".ssh/id_ed25519", "notes.txt"]);
    assert_eq!(r.json()["kept_unlisted"], 3);
    for (p, body) in own {
        assert_eq!(
            std::fs::read_to_string(home.path().join(p)).unwrap(),
            body,
            "{p}"
        );
    }
    assert_eq!(
        std::fs::read(home.path().join("docs/report.txt")).unwrap(),
        b"report"
    );
    // AND the escaped key's file is named in a readable map
    let map = std::fs::read_to_string(home.path().join(".ferry/escaped.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(map.lines().next().unwrap()).unwrap();
    assert_eq!(line["key"], "weird/../key");
    assert!(home.path().join(line["place"].as_str().unwrap()).is_file());

    // WHEN a later baseline no longer lists keys ferry wrote (both the plain and the escaped)
    ctx.delete("docs/report.txt");
    ctx.delete("weird/../key");
    ctx.put("docs/other.txt", "other");
    ctx.export_ok(&["--full"]);
    let carry = carried(&ctx, &ctx.job, 1);
    let r = import_dir(
        &ctx,
        &carry.path().join(&ctx.job).join("00000002"),
        home.path(),
        &["--json"],
    );

    // THEN those two are removed, and the person's files are still kept
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = &r.json()["bundles"][0];
    assert_eq!(
        (out["removed"].as_u64(), out["kept_unlisted"].as_u64()),
        (Some(2), Some(3)),
        "{out}"
    );
    assert!(!home.path().join("docs/report.txt").exists());
    assert!(!home.path().join(line["place"].as_str().unwrap()).exists());
    for (p, body) in own {
        assert_eq!(
            std::fs::read_to_string(home.path().join(p)).unwrap(),
            body,
            "{p}"
        );
    }
}

#[test]
fn a_fresh_state_on_a_bucket_prefix_keeps_its_objects_unless_asked_to_mirror() {
    // GIVEN a destination prefix holding objects ferry did not write
    let ctx = Ctx::new("freshstate");
    ctx.put("a", "a");
    ctx.export_ok(&[]);
    let dst = ctx.bucket("dst");
    ctx.put_in(&dst, "mirror/theirs.txt", "not ferry's");
    let carry = carried(&ctx, &ctx.job, 0);
    let b1 = carry.path().join(&ctx.job).join("00000001");
    let state = tempfile::tempdir().unwrap();
    let st = state.path().join("s.json");
    let to = format!("s3://{dst}/mirror");
    let args = |extra: &[&'static str]| {
        let mut v = vec![
            "import".to_string(),
            b1.to_str().unwrap().to_string(),
            "--to".into(),
            to.clone(),
            "--state".into(),
            st.to_str().unwrap().to_string(),
            "--json".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&'static str]| {
        let a = args(extra);
        ctx.ferry(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // WHEN a baseline is applied with a fresh state THEN the object is kept and named
    let r = run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.json()["bundles"][0]["kept_unlisted_keys"][0],
        "theirs.txt",
        "{}",
        r.stdout
    );
    assert!(ctx.get(&dst, "mirror/theirs.txt").is_some());
    assert_eq!(ctx.get(&dst, "mirror/a").unwrap(), b"a");
}

#[test]
fn sources_holding_bundles_of_two_jobs_are_refused_before_anything_is_written() {
    // GIVEN one carry folder holding baselines of two jobs
    let ctx = Ctx::new("twojobs");
    ctx.put("a", "a");
    ctx.export_ok(&[]);
    let other = format!("{}-other", ctx.job);
    let r = ctx.export_job(&other, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let carry = carried(&ctx, &ctx.job, 0);
    let dest = ctx.dest_uri();
    let r = ctx.ferry(&[
        "download",
        "--from",
        &dest,
        "--job",
        &other,
        "--since",
        "0",
        "--to",
        carry.path().to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();

    // WHEN the folder is imported THEN it is refused with exit 2 naming both jobs, and the
    // target is as it was
    let r = import_dir(&ctx, carry.path(), dir.path(), &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&ctx.job) && r.stderr.contains(&other),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--job"), "{}", r.stderr);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["keep.txt"],
        "a refused import leaves nothing behind"
    );

    // WHEN `--job` picks one THEN only its bundle is applied
    let r = import_dir(&ctx, carry.path(), dir.path(), &["--job", &other, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let bundles = r.json()["bundles"].as_array().unwrap().clone();
    assert_eq!(bundles.len(), 1);
    assert_eq!(bundles[0]["job"], other.as_str());
}
