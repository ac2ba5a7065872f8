//! A job is pinned to its source, filters, destination and moves setting: an incremental run
//! with any of them different is refused before it lists anything (it would ship every object
//! outside the new settings as a deletion), `--full` takes a new baseline with new settings,
//! and a continued bundle keeps the settings it was planned with.

use crate::util::Ctx;

fn seeded() -> Ctx {
    let ctx = Ctx::new("pinned");
    for k in ["data/a.csv", "data/b.txt", "other/c"] {
        ctx.put(k, k);
    }
    ctx
}

#[test]
fn an_incremental_run_with_another_source_or_filter_is_refused_and_changes_nothing() {
    // GIVEN a job exported from s3://SRC/data/
    let ctx = seeded();
    let data = format!("s3://{}/data/", ctx.src);
    let r = ctx.export_with(&data, &ctx.table, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = ctx.state();

    // WHEN the next run is given a typo in the prefix
    let typo = format!("s3://{}/typo/", ctx.src);
    let r = ctx.export_with(&typo, &ctx.table, &[]);

    // THEN it is refused with exit 2, naming both values and the ways out
    assert_eq!(r.code, 2, "{}", r.stderr);
    for want in ["--source", &data, &typo, "--full", "--job"] {
        assert!(r.stderr.contains(want), "`{want}` not in: {}", r.stderr);
    }
    // AND nothing was written: same sequence, no second bundle
    let after = ctx.state();
    assert_eq!(
        (after.sequence, after.version),
        (before.sequence, before.version)
    );
    assert!(
        ctx.keys(&ctx.exp, &format!("bundles/{}/00000002/", ctx.job))
            .is_empty()
    );

    // AND a new --include, --exclude or --no-moves is refused the same way
    for extra in [
        &["--include", "*.csv"][..],
        &["--exclude", "*.txt"][..],
        &["--no-moves"][..],
        &["--min-size", "2"][..],
    ] {
        let r = ctx.export_with(&data, &ctx.table, extra);
        assert_eq!(r.code, 2, "{extra:?}: {}", r.stderr);
        assert!(r.stderr.contains(extra[0]), "{extra:?}: {}", r.stderr);
    }

    // AND `ferry plan` refuses it too
    let dest = ctx.dest_uri();
    let r = ctx.ferry(&[
        "plan", "--job", &ctx.job, "--source", &typo, "--dest", &dest, "--table", &ctx.table,
    ]);
    assert_eq!(r.code, 2, "plan: {}", r.stderr);

    // WHEN `--full` is given with the new settings, THEN a new baseline is taken with them and
    // the next incremental run with them is accepted
    let r = ctx.export_with(
        &data,
        &ctx.table,
        &["--json", "--full", "--include", "*.csv"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["objects"], 1);
    let r = ctx.export_with(&data, &ctx.table, &["--json", "--include", "*.csv"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["status"], "no_changes");
}

#[test]
fn a_changed_destination_is_named_as_such_not_as_a_corrupt_inventory() {
    // GIVEN a job with its bundles under s3://EXP/bundles
    let ctx = seeded();
    ctx.export_ok(&[]);
    // WHEN the next run names another destination prefix
    let src = ctx.source_uri();
    let other = format!("s3://{}/elsewhere", ctx.exp);
    let r = ctx.ferry(&[
        "export", "--job", &ctx.job, "--source", &src, "--dest", &other, "--table", &ctx.table,
    ]);
    // THEN it says the destination changed and where the job lives
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("destination changed"), "{}", r.stderr);
    assert!(r.stderr.contains(&ctx.dest_uri()), "{}", r.stderr);
    assert!(!r.stderr.contains("corrupt"), "{}", r.stderr);
}

#[test]
fn a_continued_bundle_keeps_its_settings_and_says_which_flags_it_ignored() {
    // GIVEN a committed baseline and a planned (checkpointed) next bundle
    let ctx = seeded();
    ctx.export_ok(&[]);
    ctx.put("data/new.txt", "new");
    ctx.put("data/new.csv", "new");
    let r = ctx.export(&["--deadline", "0s"]);
    assert_eq!(r.code, 4, "{}", r.stderr);

    // WHEN it is continued from another source, THEN that is refused (the plan reads there)
    let other = format!("s3://{}/other/", ctx.src);
    let r = ctx.export_with(&other, &ctx.table, &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--source"), "{}", r.stderr);

    // WHEN it is continued with another --include and --shards
    let r = ctx.export_ok(&["--include", "*.csv", "--shards", "3"]);

    // THEN the bundle ships what it was planned with, and the summary names what it ignored
    assert_eq!(r["objects"], 2, "{r}");
    let ignored: Vec<String> = r["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ignored.len(), 2, "{ignored:?}");
    assert!(ignored[0].starts_with("--include"), "{ignored:?}");
    assert!(ignored[1].starts_with("--shards"), "{ignored:?}");
    // AND the job stays pinned to the settings it was planned with
    assert_eq!(ctx.export_ok(&[])["status"], "no_changes");
}

#[test]
fn status_shows_a_bundle_in_progress() {
    // GIVEN a committed baseline and a planned, unfinished next bundle
    let ctx = seeded();
    ctx.export_ok(&[]);
    ctx.put("data/n1", "n1");
    ctx.put("data/n2", "n2");
    let r = ctx.export(&["--deadline", "0s"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let status = |json: bool| {
        let mut args = vec!["status", "--job", &ctx.job, "--table", &ctx.table];
        if json {
            args.push("--json");
        }
        ctx.ferry(&args)
    };

    // WHEN `ferry status` is asked THEN it shows the bundle, its progress and where it is
    let r = status(true);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let p = &v["in_progress"];
    assert_eq!(
        (p["sequence"].as_u64(), p["planned_objects"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    assert_eq!(p["shipped_objects"], 0);
    assert!(
        p["checkpoint"]
            .as_str()
            .unwrap()
            .ends_with("/00000002/checkpoint.json"),
        "{p}"
    );
    assert_eq!(v["pin"]["source_bucket"], ctx.src.as_str());
    let r = status(false);
    assert!(
        r.stdout.contains("in progress bundle 2: 0 of 2 objects"),
        "{}",
        r.stdout
    );

    // AND once it is committed, nothing is in progress
    ctx.export_ok(&[]);
    assert!(status(true).json()["in_progress"].is_null());
}
