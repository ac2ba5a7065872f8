//! ZIP64 proven with real readers, through a file sink (the entry and size logic lives in the
//! volume writer; moto holds data in RAM and lists superlinearly): a > 4 GiB entry in a > 4 GiB
//! volume, and > 65,535 entries in one volume, each then verified and imported by ferry itself.

use s3_ferry::config::Compression;
use s3_ferry::format::archive::{EntryDigest, VolumeWriter};
use s3_ferry::format::manifest::{FORMAT, Final, Manifest, ObjectEntry, SourceInfo, Totals};
use s3_ferry::format::sink::FileSink;

use crate::util::{block_on, check_readers, run_ok};

const GIB: u64 = 1024 * 1024 * 1024;
const MTIME_MS: i64 = 1_700_000_000_000;

/// The manifest entry of `key`, written as `bucket/KEY`.
fn entry(key: &str, d: &EntryDigest) -> ObjectEntry {
    ObjectEntry {
        key: key.into(),
        entry: format!("bucket/{key}"),
        size: d.size,
        etag: "e".into(),
        last_modified: "2023-11-14T22:13:20Z".into(),
        sha256: d.sha256.clone(),
        crc32: d.crc32,
        storage_class: "STANDARD".into(),
        headers: Default::default(),
        planned_etag: None,
        version_id: None,
        split: None,
        part_layout: None,
        detected_type: None,
    }
}

/// The manifest of a one-volume baseline bundle holding `objects`.
fn one_volume_bundle(objects: Vec<ObjectEntry>) -> Manifest {
    Manifest {
        format: FORMAT.into(),
        job: "zip64".into(),
        source: SourceInfo {
            bucket: "bucket".into(),
            prefix: String::new(),
        },
        sequence: 1,
        previous: None,
        baseline: true,
        volume: 1,
        listed_at: "2026-01-01T00:00:00Z".into(),
        policy_digest: None,
        objects,
        last: Some(Final {
            volume_count: 1,
            earlier_volumes: Vec::new(),
            deleted: Vec::new(),
            moved: Vec::new(),
            skipped: Vec::new(),
            vanished: Vec::new(),
            totals: Totals::default(),
            metadata_only: Vec::new(),
        }),
    }
}

/// `ferry ARGS`, which must succeed; its JSON output.
fn ferry_json(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = run_ok(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"))
            .args(args)
            .arg("--json"),
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn entry_and_volume_over_4_gib_pass_every_reader() {
    // GIVEN a 4.5 GiB entry streamed piecewise, then a small one at an offset past 4 GiB
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.zip");
    let size = 4 * GIB + GIB / 2;
    let (digest, small) = block_on(async {
        let sink = FileSink::create(&path).await.unwrap();
        let mut v = VolumeWriter::new(sink, "big.zip", Compression::Stored, None).unwrap();
        let chunk: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        let mut e = v.begin_stream("bucket/huge.bin", MTIME_MS).await.unwrap();
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            e.write(&chunk[..n]).await.unwrap();
            left -= n as u64;
        }
        let digest = e.close().await.unwrap();
        let small = v
            .add_whole("bucket/after.txt", MTIME_MS, b"after the big one")
            .await
            .unwrap();
        assert!(
            !path.exists(),
            "the volume must not be visible before finish"
        );
        let manifest =
            one_volume_bundle(vec![entry("huge.bin", &digest), entry("after.txt", &small)]);
        let written = v.finish(&manifest).await.unwrap();
        assert!(written.size > size);
        (digest, small)
    });

    // THEN the file is > 4 GiB and every reader of the matrix accepts it
    assert_eq!(digest.size, size);
    assert!(std::fs::metadata(&path).unwrap().len() > 4 * GIB);
    check_readers(&path);
    let listing = run_ok(std::process::Command::new("unzip").arg("-l").arg(&path));
    assert!(listing.contains("4831838208"), "{listing}");
    let tail = run_ok(
        std::process::Command::new("unzip")
            .arg("-p")
            .arg(&path)
            .arg("bucket/after.txt"),
    );
    assert_eq!(tail, "after the big one");
    assert_eq!(small.crc32, crc32fast::hash(b"after the big one"));

    // AND ferry's own reader verifies both entries (ZIP64 sizes and offsets), offline
    let j = ferry_json(&["verify".as_ref(), path.as_os_str()]);
    assert_eq!(j["bundles"][0]["objects"], 2, "{j}");
    assert_eq!(j["bundles"][0]["bytes"], size + 17, "{j}");
}

#[test]
fn more_than_65535_entries_in_one_volume() {
    // GIVEN 65,600 tiny objects written into one volume
    let n: u64 = 65_600;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.zip");
    let key = |i: u64| format!("d{}/o{i:06}", i % 100);
    block_on(async {
        let sink = FileSink::create(&path).await.unwrap();
        let mut v = VolumeWriter::new(sink, "many.zip", Compression::Stored, None).unwrap();
        let mut objects = Vec::new();
        for i in 0..n {
            let d = v
                .add_whole(
                    &format!("bucket/{}", key(i)),
                    MTIME_MS,
                    i.to_string().as_bytes(),
                )
                .await
                .unwrap();
            objects.push(entry(&key(i), &d));
        }
        v.finish(&one_volume_bundle(objects)).await.unwrap();
    });

    // THEN every reader opens it and counts every entry (and the manifest)
    check_readers(&path);
    let listing = run_ok(std::process::Command::new("bsdtar").arg("-tf").arg(&path));
    assert_eq!(listing.lines().count(), n as usize + 1);
    let body = run_ok(
        std::process::Command::new("unzip")
            .arg("-p")
            .arg(&path)
            .arg("bucket/d7/o065507"),
    );
    assert_eq!(body, "65507");

    // AND ferry verifies it (the ZIP64 entry count) and imports every entry into a directory
    let j = ferry_json(&["verify".as_ref(), path.as_os_str()]);
    assert_eq!(j["bundles"][0]["objects"], n, "{j}");
    let out = tempfile::tempdir().unwrap();
    let j = ferry_json(&[
        "import".as_ref(),
        path.as_os_str(),
        "--to-dir".as_ref(),
        out.path().as_os_str(),
    ]);
    assert_eq!(j["bundles"][0]["objects"], n, "{j}");
    let files = walk(out.path());
    assert_eq!(files, n as usize, "files imported");
    for i in [0, 65_535, 65_536, n - 1] {
        assert_eq!(
            std::fs::read_to_string(out.path().join(key(i))).unwrap(),
            i.to_string()
        );
    }
}

/// Regular files below `dir`, leaving out the import state folder.
fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != ".ferry")
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}
