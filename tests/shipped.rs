//! The inventory records what was shipped (issue: never lose data by surprise): objects deleted
//! or rewritten between the plan's listing and their read must not leave the listed version in
//! the inventory, or the next runs diff against versions the far side never received.

use std::path::Path;

use crate::util::{Ctx, Run, block_on, dir_snapshot};

/// Download every bundle of the job after `since` into `carry` and import them, in order, into
/// the folder `dir`: the last import's run.
fn carry_and_import(ctx: &Ctx, carry: &Path, dir: &Path, since: u64, upto: u64) -> Run {
    let r = ctx.ferry_download(carry, &["--since", &since.to_string(), "--json"]);
    assert_eq!(r.code, 0, "download: {}\n{}", r.stdout, r.stderr);
    let mut last = None;
    for seq in since + 1..=upto {
        let b = carry.join(&ctx.job).join(format!("{seq:08}"));
        let r = ctx.ferry(&[
            "import",
            b.to_str().unwrap(),
            "--to-dir",
            dir.to_str().unwrap(),
            "--json",
        ]);
        last = Some(r);
        if last.as_ref().unwrap().code != 0 {
            break;
        }
    }
    last.expect("at least one bundle")
}

/// The source's current objects (key → bytes).
fn source(ctx: &Ctx) -> std::collections::BTreeMap<String, Vec<u8>> {
    ctx.snapshot(&ctx.src, "")
        .into_iter()
        .map(|(k, o)| (k, o.body))
        .collect()
}

#[test]
fn a_rolled_back_change_made_during_a_run_ships_in_the_next_run() {
    // GIVEN a versioned source whose bundle is planned (a zero deadline stops after planning)
    let ctx = Ctx::new("rollback");
    block_on(
        ctx.s3
            .put_bucket_versioning()
            .bucket(&ctx.src)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send(),
    )
    .unwrap();
    ctx.put("steady", "steady");
    ctx.put("v", "will vanish and come back");
    ctx.put("r", "first version of r");
    let run = ctx.export(&["--deadline", "0s"]);
    assert_eq!(run.code, 4, "{}", run.stderr);

    // WHEN `v` is deleted and `r` rewritten before the bundle ships, the bundle completes…
    ctx.delete("v");
    ctx.put("r", "second version of r, longer");
    let r = ctx.export_ok(&[]);
    assert_eq!(
        (r["vanished"].as_u64(), r["replaced"].as_u64()),
        (Some(1), Some(1))
    );

    // …and then both changes are rolled back: `v`'s delete marker and `r`'s newest version go
    let versions = block_on(ctx.s3.list_object_versions().bucket(&ctx.src).send()).unwrap();
    for m in versions.delete_markers() {
        assert_eq!(m.key(), Some("v"));
        block_on(
            ctx.s3
                .delete_object()
                .bucket(&ctx.src)
                .key("v")
                .version_id(m.version_id().unwrap())
                .send(),
        )
        .unwrap();
    }
    let newest_r = versions
        .versions()
        .iter()
        .find(|v| v.key() == Some("r") && v.is_latest() == Some(true))
        .unwrap();
    block_on(
        ctx.s3
            .delete_object()
            .bucket(&ctx.src)
            .key("r")
            .version_id(newest_r.version_id().unwrap())
            .send(),
    )
    .unwrap();
    assert_eq!(ctx.get(&ctx.src, "r").unwrap(), b"first version of r");

    // THEN the next run ships both (it did not: `no_changes`, the mirror without `v` and with
    // the wrong bytes of `r`), and the mirror equals the source
    let r = ctx.export_ok(&[]);
    assert_eq!(r["status"], "complete", "{r}");
    assert_eq!(
        (r["sequence"].as_u64(), r["objects"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    let (carry, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = carry_and_import(&ctx, carry.path(), dir.path(), 0, 2);
    assert_eq!(run.code, 0, "import: {}\n{}", run.stdout, run.stderr);
    assert_eq!(dir_snapshot(dir.path()), source(&ctx));

    // AND a run after that has nothing to do
    assert_eq!(ctx.export_ok(&[])["status"], "no_changes");
}

#[test]
fn a_key_renamed_while_its_bundle_ships_arrives_under_its_new_name() {
    // GIVEN a committed baseline, then a new key `old` planned into the next bundle
    let ctx = Ctx::new("renamed");
    ctx.put("base", "base");
    ctx.export_ok(&[]);
    ctx.put("old", "the bytes that get renamed");
    let run = ctx.export(&["--deadline", "0s"]);
    assert_eq!(run.code, 4, "{}", run.stderr);

    // WHEN `old` is renamed to `new` (copied, then deleted) before the bundle reads it
    ctx.rename("old", "new");
    let r = ctx.export_ok(&[]);
    assert_eq!(r["vanished"].as_u64(), Some(1), "{r}");

    // THEN the next bundle ships `new` (it planned a move from `old`, which the far side never
    // had: every import of it failed), and the mirror equals the source
    let r = ctx.export_ok(&[]);
    assert_eq!(
        (r["moved"].as_u64(), r["objects"].as_u64()),
        (Some(0), Some(1)),
        "{r}"
    );
    let (carry, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = carry_and_import(&ctx, carry.path(), dir.path(), 0, 3);
    assert_eq!(run.code, 0, "import: {}\n{}", run.stdout, run.stderr);
    assert_eq!(dir_snapshot(dir.path()), source(&ctx));
}
