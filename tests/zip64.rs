//! ZIP64 proven with real readers: a > 4 GiB entry in a > 4 GiB volume (through a file sink,
//! since moto holds data in RAM) and > 65,535 entries in one volume (through moto).

use std::collections::BTreeMap;

use s3_ferry::archive::VolumeWriter;
use s3_ferry::config::Compression;
use s3_ferry::manifest::{FORMAT, Final, Manifest, ObjectEntry, SourceInfo, Totals};
use s3_ferry::sink::FileSink;

use crate::util::{Ctx, block_on, check_readers, run_ok};

const GIB: u64 = 1024 * 1024 * 1024;

#[test]
fn entry_and_volume_over_4_gib_pass_every_reader() {
    // GIVEN a 4.5 GiB entry streamed piecewise, then a small one at an offset past 4 GiB
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.zip");
    let size = 4 * GIB + GIB / 2;
    let (digest, small) = block_on(async {
        let sink = FileSink::create(&path).await.unwrap();
        let mut v = VolumeWriter::new(sink, "big.zip", Compression::Stored);
        let chunk: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        let mut e = v
            .begin_stream("bucket/huge.bin", 1_700_000_000_000)
            .await
            .unwrap();
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            e.write(&chunk[..n]).await.unwrap();
            left -= n as u64;
        }
        let digest = e.close().await.unwrap();
        let small = v
            .add_whole("bucket/after.txt", 1_700_000_000_000, b"after the big one")
            .await
            .unwrap();
        assert!(
            !path.exists(),
            "the volume must not be visible before finish"
        );
        let entry = |key: &str, d: &s3_ferry::archive::EntryDigest| ObjectEntry {
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
        };
        let manifest = Manifest {
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
            objects: vec![entry("huge.bin", &digest), entry("after.txt", &small)],
            last: Some(Final {
                volume_count: 1,
                earlier_volumes: Vec::new(),
                deleted: Vec::new(),
                moved: Vec::new(),
                skipped: Vec::new(),
                vanished: Vec::new(),
                totals: Totals::default(),
            }),
        };
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
    let out = run_ok(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"))
            .args(["verify", "--json"])
            .arg(&path),
    );
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["bundles"][0]["objects"], 2, "{j}");
    assert_eq!(j["bundles"][0]["bytes"], size + 17, "{j}");
}

#[test]
fn more_than_65535_entries_in_one_volume_through_s3() {
    // GIVEN 65,600 tiny objects
    let ctx = Ctx::new("manyentries");
    let n = 65_600;
    crate::util::moto().seed_numbered(&ctx.src, n);

    // WHEN they are exported into one volume
    let r = ctx.export_ok(&["--volume-entries", "100000", "--concurrency", "64"]);

    // THEN one volume holds them all and every reader agrees
    assert_eq!(r["objects"], n);
    assert_eq!(r["volumes"].as_array().unwrap().len(), 1);
    let b = ctx.download(&ctx.job, 1);
    check_readers(&b.volume_paths()[0]);
    let count = run_ok(
        std::process::Command::new("bsdtar")
            .arg("-tf")
            .arg(&b.volume_paths()[0]),
    );
    assert_eq!(count.lines().count(), n as usize + 1);
    let files = b.extract();
    let wrong: BTreeMap<_, _> = files
        .iter()
        .filter(|(k, v)| {
            let i: u64 = k.rsplit_once("/o").unwrap().1.parse().unwrap();
            v[..] != *i.to_string().as_bytes()
        })
        .take(3)
        .collect();
    assert_eq!(files.len(), n as usize);
    assert!(wrong.is_empty(), "{wrong:?}");

    // AND ferry verifies it (ZIP64 entry count) and imports every entry into a directory
    let r = ctx.ferry(&["verify", b.dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["bundles"][0]["objects"], n);
    let dir = tempfile::tempdir().unwrap();
    let r = ctx.ferry(&[
        "import",
        b.dir.path().to_str().unwrap(),
        "--to-dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["bundles"][0]["objects"], n);
    assert_eq!(
        std::fs::read(dir.path().join("d7/o065507")).unwrap(),
        b"65507"
    );
}
