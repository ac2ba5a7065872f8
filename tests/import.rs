//! The far side: download, verify and import against moto, and the round-trip property: after
//! any sequence of changes and export → download → import cycles, the destination bucket and
//! directory equal the source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::MetadataDirective;

use crate::util::{Ctx, Obj, Run, block_on, dir_snapshot};

/// Keys that are not plain relative paths, or that collide with the directory target's own
/// names, or with each other as paths.
const HOSTILE: &[&str] = &[
    "../escape.txt",
    "a/../../b",
    "/absolute",
    "x//y",
    "back\\slash",
    "conflict",
    "conflict/child",
    ".ferry/state.json",
    "_escaped/fake",
    "ünïcödé/名前.txt",
    "spaces and+plus%.txt",
];

const TYPES: &[&str] = &[
    "text/plain",
    "application/json",
    "image/png",
    "application/octet-stream",
    "text/html; charset=utf-8",
];

/// One randomised world: a source bucket, a destination bucket and directory, a carry folder.
struct World {
    ctx: Ctx,
    rng: fastrand::Rng,
    dst: String,
    dir: tempfile::TempDir,
    carry: tempfile::TempDir,
    state: tempfile::TempDir,
    /// Live keys that may be renamed/overwritten (not the large one).
    keys: Vec<String>,
    next: u32,
    sequence: u64,
}

impl World {
    fn new(name: &str, seed: u64) -> World {
        let ctx = Ctx::new(name);
        let dst = ctx.bucket("dst");
        World {
            ctx,
            rng: fastrand::Rng::with_seed(seed),
            dst,
            dir: tempfile::tempdir().unwrap(),
            carry: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
            keys: Vec::new(),
            next: 0,
            sequence: 0,
        }
    }

    fn new_key(&mut self) -> String {
        self.next += 1;
        let dirs = ["", "a/", "a/b/", "docs/", "weird dir/", "ünï/"];
        let d = dirs[self.rng.usize(..dirs.len())];
        format!("{d}k{:04}-{}.bin", self.next, self.rng.u32(..))
    }

    fn body(&mut self) -> Vec<u8> {
        let len = match self.rng.u8(..10) {
            0 => 0,
            1..=6 => self.rng.usize(1..4096),
            _ => self.rng.usize(4096..300 * 1024),
        };
        let mut v = vec![0u8; len];
        self.rng.fill(&mut v);
        v
    }

    /// Put `key` with random bytes, headers and metadata.
    fn put(&mut self, key: &str) {
        let body = self.body();
        self.put_body(key, body);
    }

    fn put_body(&mut self, key: &str, body: Vec<u8>) {
        let mut req = self
            .ctx
            .s3
            .put_object()
            .bucket(&self.ctx.src)
            .key(key)
            .content_type(TYPES[self.rng.usize(..TYPES.len())])
            .body(ByteStream::from(body));
        if self.rng.bool() {
            req = req
                .content_encoding("identity")
                .content_disposition(format!("attachment; filename=\"f{}.bin\"", self.rng.u8(..)))
                .content_language("en-GB")
                .cache_control("max-age=60")
                .expires(aws_sdk_s3::primitives::DateTime::from_secs(
                    2_000_000_000 + self.rng.i64(0..1_000_000),
                ));
        }
        for i in 0..self.rng.usize(0..3) {
            req = req.metadata(format!("m{i}"), format!("v{}", self.rng.u32(..)));
        }
        block_on(req.send()).unwrap();
    }

    /// Copy `from` to `to` keeping headers (what `aws s3 mv` does), then delete `from`.
    fn rename(&mut self, from: &str, to: &str) {
        block_on(
            self.ctx
                .s3
                .copy_object()
                .bucket(&self.ctx.src)
                .key(to)
                .copy_source(format!("{}/{}", self.ctx.src, urlencode(from)))
                .send(),
        )
        .unwrap();
        self.ctx.delete(from);
    }

    /// New headers and metadata, same bytes.
    fn touch(&mut self, key: &str) {
        let mut req = self
            .ctx
            .s3
            .copy_object()
            .bucket(&self.ctx.src)
            .key(key)
            .copy_source(format!("{}/{}", self.ctx.src, urlencode(key)))
            .metadata_directive(MetadataDirective::Replace)
            .content_type(TYPES[self.rng.usize(..TYPES.len())])
            .cache_control(format!("max-age={}", self.rng.u16(..)));
        req = req.metadata("touched", self.rng.u32(..).to_string());
        block_on(req.send()).unwrap();
    }

    fn pick(&mut self) -> Option<String> {
        (!self.keys.is_empty()).then(|| self.keys[self.rng.usize(..self.keys.len())].clone())
    }

    /// A random batch of puts, overwrites, deletes, renames and metadata-only changes.
    fn mutate(&mut self) -> BTreeMap<&'static str, u32> {
        // S3 listings give LastModified to the second: a metadata-only change in the same
        // second as the version the last export listed is indistinguishable from it (README,
        // Limits). Changes start in a later second than the previous cycle's listing.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut done = BTreeMap::new();
        for _ in 0..self.rng.usize(4..10) {
            let op = match self.rng.u8(..5) {
                0 => "put",
                1 => "overwrite",
                2 => "delete",
                3 => "rename",
                _ => "metadata",
            };
            let Some(victim) = self.pick() else { continue };
            match op {
                "put" => {
                    let k = self.new_key();
                    self.put(&k);
                    self.keys.push(k);
                }
                "overwrite" => self.put(&victim),
                "delete" => {
                    self.ctx.delete(&victim);
                    self.keys.retain(|k| k != &victim);
                }
                "rename" => {
                    let to = self.new_key();
                    self.rename(&victim, &to);
                    self.keys.retain(|k| k != &victim);
                    self.keys.push(to.clone());
                    // Sometimes the renamed object also gets new headers.
                    if self.rng.bool() {
                        self.touch(&to);
                    }
                }
                _ => self.touch(&victim),
            }
            *done.entry(op).or_default() += 1;
        }
        done
    }

    fn ferry(&self, args: &[&str]) -> Run {
        self.ctx.ferry(args)
    }

    fn state_file(&self) -> PathBuf {
        self.state.path().join("mirror.json")
    }

    /// Export, download (everything since the last cycle), verify, import into the bucket and
    /// the directory; returns the bundle folder.
    fn cycle(&mut self) -> PathBuf {
        let r = self.ctx.export(&["--volume-size", "1MiB"]);
        assert_eq!(r.code, 0, "export: {}\n{}", r.stdout, r.stderr);
        self.sequence = r.json()["sequence"].as_u64().unwrap();
        self.carry_and_apply()
    }

    /// Export with the source changing under the run: a random batch of changes after the
    /// plan and after each deadline stop (`--deadline 0s` stops after the plan, then after
    /// every volume), at most `stops` stops, then the run completes. The committed sequence.
    fn cycle_mutating(&mut self, stops: usize) -> u64 {
        let mut r = self
            .ctx
            .export(&["--volume-size", "1MiB", "--deadline", "0s"]);
        for _ in 0..stops {
            if r.code != 4 {
                break;
            }
            self.mutate();
            r = self
                .ctx
                .export(&["--volume-size", "1MiB", "--deadline", "0s"]);
        }
        if r.code == 4 {
            r = self.ctx.export(&["--volume-size", "1MiB"]);
        }
        assert_eq!(r.code, 0, "export: {}\n{}", r.stdout, r.stderr);
        r.json()["sequence"].as_u64().unwrap()
    }

    /// Download every bundle after the last one carried, verify and import each in order into
    /// the bucket and the directory; returns the last bundle folder.
    fn carry_up_to(&mut self, sequence: u64) -> Option<PathBuf> {
        let mut last = None;
        while self.sequence < sequence {
            self.sequence += 1;
            last = Some(self.carry_and_apply());
        }
        last
    }

    /// Download bundle `self.sequence`, verify it, import it into the bucket and the directory.
    fn carry_and_apply(&mut self) -> PathBuf {
        let carry = self.carry.path().to_str().unwrap().to_string();
        let since = (self.sequence - 1).to_string();
        let dest = self.ctx.dest_uri();
        let r = self.ferry(&[
            "download",
            "--from",
            &dest,
            "--job",
            &self.ctx.job,
            "--since",
            &since,
            "--to",
            &carry,
            "--json",
        ]);
        assert_eq!(r.code, 0, "download: {}\n{}", r.stdout, r.stderr);
        let bundle = self
            .carry
            .path()
            .join(&self.ctx.job)
            .join(format!("{:08}", self.sequence));
        let b = bundle.to_str().unwrap();
        let r = self.ferry(&["verify", b, "--json"]);
        assert_eq!(r.code, 0, "verify: {}\n{}", r.stdout, r.stderr);
        let state = self.state_file();
        let to = format!("s3://{}/mirror", self.dst);
        let r = self.ferry(&[
            "import",
            b,
            "--to",
            &to,
            "--state",
            state.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(r.code, 0, "import to bucket: {}\n{}", r.stdout, r.stderr);
        assert_eq!(r.json()["bundles"][0]["status"], "applied", "{}", r.stdout);
        let dir = self.dir.path().to_str().unwrap();
        let r = self.ferry(&["import", b, "--to-dir", dir, "--json"]);
        assert_eq!(r.code, 0, "import to dir: {}\n{}", r.stdout, r.stderr);
        bundle
    }

    /// The destination bucket and directory equal the source; returns the object count.
    fn assert_mirrors(&self, what: &str) -> usize {
        let src = self.ctx.snapshot(&self.ctx.src, "");
        let dst = self.ctx.snapshot(&self.dst, "mirror/");
        let src_keys: Vec<&String> = src.keys().collect();
        let dst_keys: Vec<&String> = dst.keys().collect();
        assert_eq!(src_keys, dst_keys, "{what}: keys differ");
        for (k, s) in &src {
            let d = &dst[k];
            assert!(s.body == d.body, "{what}: bytes of `{k}` differ");
            let strip = |o: &Obj| Obj {
                body: Vec::new(),
                ..o.clone()
            };
            assert_eq!(strip(s), strip(d), "{what}: headers of `{k}` differ");
        }
        let dir = dir_snapshot(self.dir.path());
        assert_eq!(
            dir.keys().collect::<Vec<_>>(),
            src_keys,
            "{what}: directory keys differ"
        );
        let index = s3_ferry::import::ledger::file_index_entries(
            &self.dir.path().join(".ferry/state.json"),
        )
        .unwrap();
        for (k, body) in &dir {
            assert!(
                body == &src[k].body,
                "{what}: directory bytes of `{k}` differ"
            );
            // the file's mtime is the object's LastModified (to the second S3 lists it at)
            let head = crate::util::block_on(
                self.ctx
                    .s3
                    .head_object()
                    .bucket(&self.ctx.src)
                    .key(k)
                    .send(),
            )
            .unwrap();
            let listed = head.last_modified().unwrap().secs();
            let place = index[k.as_str()].place.as_str();
            let mtime = std::fs::metadata(self.dir.path().join(place))
                .unwrap()
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            assert_eq!(mtime, listed, "{what}: mtime of `{k}`");
        }
        src.len()
    }
}

fn urlencode(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn seeds() -> Vec<u64> {
    std::env::var("FERRY_ROUNDTRIP_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![7, 1009])
}

fn cycles() -> usize {
    std::env::var("FERRY_ROUNDTRIP_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
}

#[test]
fn round_trip_random_changes_keep_bucket_and_directory_equal_to_the_source() {
    for seed in seeds() {
        // GIVEN a source with hostile keys, one multipart-sized object and random objects
        let mut w = World::new("roundtrip", seed);
        for k in HOSTILE {
            w.put(k);
        }
        let big: Vec<u8> = (0..9 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
        w.put_body("large/nine-mib.bin", big);
        for _ in 0..w.rng.usize(10..20) {
            let k = w.new_key();
            w.put(&k);
            w.keys.push(k);
        }
        // WHEN it is exported, carried and imported (baseline), THEN both mirrors equal it
        w.cycle();
        let n = w.assert_mirrors(&format!("seed {seed} baseline"));
        eprintln!("seed {seed} cycle 0 (baseline): {n} objects compared in bucket and directory");
        // AND after every random batch of changes and another cycle
        for c in 1..=cycles() {
            let ops = w.mutate();
            w.cycle();
            let n = w.assert_mirrors(&format!("seed {seed} cycle {c} after {ops:?}"));
            eprintln!(
                "seed {seed} cycle {c} ({ops:?}): {n} objects compared in bucket and directory"
            );
        }
        // AND re-applying the last bundle changes nothing
        let bundle = w
            .carry
            .path()
            .join(&w.ctx.job)
            .join(format!("{:08}", w.sequence));
        let before = w.ctx.snapshot(&w.dst, "mirror/");
        let to = format!("s3://{}/mirror", w.dst);
        let state = w.state_file();
        let r = w.ferry(&[
            "import",
            bundle.to_str().unwrap(),
            "--to",
            &to,
            "--state",
            state.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.json()["bundles"][0]["status"], "already_applied");
        assert_eq!(before, w.ctx.snapshot(&w.dst, "mirror/"));
    }
}

#[test]
fn a_source_changing_during_every_run_leaves_an_exact_mirror_after_each_cycle() {
    // GIVEN a source of random objects, exported and imported as a baseline
    let seed = std::env::var("FERRY_MUTATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4242);
    let mut w = World::new("mutating", seed);
    for _ in 0..w.rng.usize(20..30) {
        let k = w.new_key();
        w.put(&k);
        w.keys.push(k);
    }
    w.cycle();
    w.assert_mirrors(&format!("seed {seed} baseline"));
    for c in 1..=3 {
        // WHEN the source changes before the plan, between the plan and the first read, and
        // between volumes (puts, overwrites, deletes, renames, metadata changes)
        w.mutate();
        let seq = w.cycle_mutating(3);
        w.carry_up_to(seq);
        // AND a run after the source is quiet catches up
        let r = w.ctx.export(&["--volume-size", "1MiB"]);
        assert_eq!(r.code, 0, "catch-up export: {}\n{}", r.stdout, r.stderr);
        let seq = r.json()["sequence"].as_u64().unwrap();
        w.carry_up_to(seq);
        // THEN the bucket and the directory equal the source, and every import applied (a
        // move from a key never shipped used to fail every import from then on)
        let n = w.assert_mirrors(&format!("seed {seed} mutating cycle {c}"));
        eprintln!("seed {seed} mutating cycle {c}: {n} objects compared, sequence {seq}");
        // AND the next run has nothing to do: the inventory is what was shipped
        let r = w.ctx.export(&["--volume-size", "1MiB"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.json()["status"], "no_changes", "cycle {c}: {}", r.stdout);
    }
}

/// Export three bundles (baseline, then two deltas) and download them all.
fn three_bundles(name: &str) -> (Ctx, tempfile::TempDir) {
    let ctx = Ctx::new(name);
    for i in 0..6 {
        ctx.put(&format!("f/{i}.txt"), format!("one {i}"));
    }
    ctx.export_ok(&[]);
    ctx.put("f/0.txt", "two");
    ctx.delete("f/1.txt");
    ctx.export_ok(&[]);
    ctx.put("f/9.txt", "three");
    ctx.rename("f/2.txt", "g/2.txt");
    ctx.export_ok(&[]);
    let carry = tempfile::tempdir().unwrap();
    let r = ctx.ferry(&[
        "download",
        "--from",
        &ctx.dest_uri(),
        "--job",
        &ctx.job,
        "--since",
        "0",
        "--to",
        carry.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["bundles"].as_array().unwrap().len(), 3);
    (ctx, carry)
}

fn bundle_dir(carry: &Path, job: &str, seq: u64) -> String {
    carry
        .join(job)
        .join(format!("{seq:08}"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn bundles_apply_only_in_chain_order_and_reapplying_changes_nothing() {
    let (ctx, carry) = three_bundles("order");
    let dst = ctx.bucket("dst");
    let to = format!("s3://{dst}");
    let state = carry.path().join("state.json");
    let st = state.to_str().unwrap();
    let b = |n| bundle_dir(carry.path(), &ctx.job, n);
    // GIVEN an empty target WHEN bundle 2 comes first THEN it is refused naming both ends
    let r = ctx.ferry(&["import", &b(2), "--to", &to, "--state", st]);
    assert_eq!(r.code, 6, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("bundle 2 of job") && r.stderr.contains("follows bundle 1"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("none (the target has no bundle yet)"),
        "{}",
        r.stderr
    );
    assert!(ctx.keys(&dst, "").is_empty(), "nothing may be written");
    // WHEN the baseline 1 is applied over a key ferry did not write THEN a dry run says it is
    // kept, `--dry-run --delete-unlisted` shows its removal, and `--delete-unlisted` removes it
    block_on(
        ctx.s3
            .put_object()
            .bucket(&dst)
            .key("stray.txt")
            .body(ByteStream::from_static(b"not in the source"))
            .send(),
    )
    .unwrap();
    let r = ctx.ferry(&[
        "import",
        &b(1),
        "--to",
        &to,
        "--state",
        st,
        "--dry-run",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = &r.json()["bundles"][0];
    assert_eq!(
        (out["removed"].as_u64(), out["kept_unlisted"].as_u64()),
        (Some(0), Some(1)),
        "{}",
        r.stdout
    );
    assert_eq!(out["kept_unlisted_keys"][0], "stray.txt");
    let r = ctx.ferry(&["import", &b(1), "--to", &to, "--state", st, "--dry-run"]);
    assert!(
        r.stdout.contains("kept 1") && r.stdout.contains("--delete-unlisted"),
        "{}",
        r.stdout
    );
    let r = ctx.ferry(&[
        "import",
        &b(1),
        "--to",
        &to,
        "--state",
        st,
        "--dry-run",
        "--delete-unlisted",
        "--json",
    ]);
    let changes = r.json()["bundles"][0]["changes"].clone();
    assert!(
        changes
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["op"] == "remove" && c["key"] == "stray.txt"),
        "{changes}"
    );
    assert!(
        ctx.get(&dst, "stray.txt").is_some(),
        "a dry run removes nothing"
    );
    let r = ctx.ferry(&[
        "import",
        &b(1),
        "--to",
        &to,
        "--state",
        st,
        "--delete-unlisted",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["bundles"][0]["removed"], 1, "{}", r.stdout);
    assert!(ctx.get(&dst, "stray.txt").is_none());
    // AND 3 is still refused; THEN 2, 3 apply
    let r = ctx.ferry(&["import", &b(3), "--to", &to, "--state", st]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(
        r.stderr.contains("follows bundle 2") && r.stderr.contains("is 1 (digest"),
        "{}",
        r.stderr
    );
    let r = ctx.ferry(&["import", &b(2), &b(3), "--to", &to, "--state", st, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["sequence"], 3);
    assert_eq!(j["bundles"][0]["deleted"], 1);
    assert_eq!(j["bundles"][1]["moved"], 1);
    assert_eq!(ctx.snapshot(&dst, ""), ctx.snapshot(&ctx.src, ""));
    // WHEN everything is given again THEN all three are recognised and nothing changes
    let heads = ctx.keys(&dst, "");
    let r = ctx.ferry(&[
        "import",
        carry.path().to_str().unwrap(),
        "--to",
        &to,
        "--state",
        st,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let statuses: Vec<String> = r.json()["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["already_applied"; 3]);
    assert_eq!(heads, ctx.keys(&dst, ""));
    // AND --dry-run of an out-of-order bundle (onto a fresh state) with --force lists its
    // changes and changes nothing
    let fresh = carry.path().join("fresh.json");
    let r = ctx.ferry(&[
        "import",
        &b(2),
        "--to",
        &to,
        "--state",
        fresh.to_str().unwrap(),
        "--dry-run",
        "--force",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["bundles"][0]["status"], "dry_run");
    let changes = j["bundles"][0]["changes"].as_array().unwrap().clone();
    assert!(
        changes
            .iter()
            .any(|c| c["op"] == "put" && c["key"] == "f/0.txt"),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["op"] == "delete" && c["key"] == "f/1.txt"),
        "{changes:?}"
    );
    assert_eq!(ctx.snapshot(&dst, ""), ctx.snapshot(&ctx.src, ""));
}

/// Offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn a_tampered_volume_is_refused_and_no_corrupt_object_is_written() {
    // GIVEN a downloaded bundle in which one byte of one object was changed
    let ctx = Ctx::new("tamper");
    ctx.put("a.txt", "alpha alpha alpha");
    ctx.put("b.txt", "bravo bravo bravo BRAVO");
    ctx.put("c.txt", "charlie charlie charlie");
    ctx.export_ok(&[]);
    let carry = tempfile::tempdir().unwrap();
    let r = ctx.ferry(&[
        "download",
        "--from",
        &ctx.dest_uri(),
        "--job",
        &ctx.job,
        "--latest",
        "--to",
        carry.path().to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("every volume matches SHA256SUMS"),
        "{}",
        r.stdout
    );
    let b = bundle_dir(carry.path(), &ctx.job, 1);
    let vol = Path::new(&b).join(format!("{}-00000001-0001.zip", ctx.job));
    let mut bytes = std::fs::read(&vol).unwrap();
    let at = find(&bytes, b"BRAVO");
    bytes[at] = b'X';
    std::fs::write(&vol, &bytes).unwrap();
    // WHEN it is verified THEN exit 5 names the volume, the entry and the key
    let r = ctx.ferry(&["verify", &b]);
    assert_eq!(r.code, 5, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("b.txt") && r.stderr.contains("0001.zip"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("CRC-32"), "{}", r.stderr);
    // WHEN it is imported THEN it is refused, `b.txt` is not written and the state is unchanged
    let dst = ctx.bucket("dst");
    let state = carry.path().join("state.json");
    let r = ctx.ferry(&[
        "import",
        &b,
        "--to",
        &format!("s3://{dst}"),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 5, "{}\n{}", r.stdout, r.stderr);
    assert!(
        ctx.get(&dst, "b.txt").is_none(),
        "the corrupt object must not land"
    );
    if let Some(body) = ctx.get(&dst, "a.txt") {
        assert_eq!(body, b"alpha alpha alpha");
    }
    let st: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&state).unwrap_or_else(|_| b"{\"record\":{\"sequence\":0}}".to_vec()),
    )
    .unwrap();
    assert_eq!(
        st["record"]["sequence"], 0,
        "the bundle must not be recorded as applied"
    );
    // (a first import that recorded nothing leaves no lock file; another one is unlocked)
    if let Ok(lock) = std::fs::OpenOptions::new()
        .write(true)
        .open(carry.path().join("state.json.lock"))
    {
        assert!(lock.try_lock().is_ok(), "the lock is released on failure");
    }
    assert!(
        !carry.path().join("state.json.index").exists(),
        "no index debris"
    );
    // AND into a directory: no file holds the tampered bytes, no temporary file is left
    let dir = tempfile::tempdir().unwrap();
    let r = ctx.ferry(&["import", &b, "--to-dir", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(!dir.path().join("b.txt").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ferry-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // AND a truncated volume is refused as unreadable
    std::fs::write(&vol, &bytes[..bytes.len() - 10]).unwrap();
    let r = ctx.ferry(&["verify", &b]);
    assert_eq!(r.code, 5, "{}", r.stderr);
}

#[test]
fn download_resumes_a_partial_volume_and_import_reads_s3_volumes_in_place() {
    // GIVEN a bundle of several volumes, one of them partly downloaded already
    let ctx = Ctx::new("resume");
    let objects: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            (
                format!("d/{i:02}"),
                (0..300_000u32).map(|b| (b * 7 + i) as u8).collect(),
            )
        })
        .collect();
    ctx.put_many(objects);
    let r = ctx.export_ok(&["--volume-size", "1MiB"]);
    let volumes = r["volume_details"].as_array().unwrap().clone();
    assert!(volumes.len() >= 3, "{r}");
    let carry = tempfile::tempdir().unwrap();
    let dir = carry.path().join(&ctx.job).join("00000001");
    std::fs::create_dir_all(&dir).unwrap();
    let first = volumes[1]["name"].as_str().unwrap();
    let whole = ctx
        .get(&ctx.exp, &format!("bundles/{}/00000001/{first}", ctx.job))
        .unwrap();
    // (ranges land out of order: the partial file holds the first half, then a hole where a
    // range was still in flight, then bytes of a later range; `.partial.at` says how much of
    // it is hashed and contiguous)
    let half = whole.len() / 2;
    let mut partial = whole[..half].to_vec();
    partial.resize(whole.len() - 1000, 0);
    partial.extend_from_slice(&whole[whole.len() - 1000..]);
    std::fs::write(dir.join(format!("{first}.partial")), &partial).unwrap();
    std::fs::write(dir.join(format!("{first}.partial.at")), half.to_string()).unwrap();
    // WHEN it is downloaded THEN that volume resumes, the others download, all verified
    let args = [
        "download",
        "--from",
        &ctx.dest_uri(),
        "--job",
        &ctx.job,
        "--sequence",
        "1",
        "--to",
        carry.path().to_str().unwrap(),
        "--json",
    ];
    let r = ctx.ferry(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    let statuses: Vec<&str> = j["bundles"][0]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[1], "resumed", "{j}");
    assert!(
        statuses
            .iter()
            .enumerate()
            .all(|(i, s)| i == 1 || *s == "downloaded"),
        "{j}"
    );
    assert_eq!(std::fs::read(dir.join(first)).unwrap(), whole);
    crate::util::run_ok(
        std::process::Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(&dir),
    );
    // AND again: everything is already present
    let r = ctx.ferry(&args);
    assert!(
        r.json()["bundles"][0]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["status"] == "present")
    );
    assert_eq!(r.json()["bytes_fetched"], 0);
    // AND a partial file with wrong bytes is caught and removed, never renamed into place
    std::fs::remove_file(dir.join(first)).unwrap();
    std::fs::write(dir.join(format!("{first}.partial")), vec![0u8; 1000]).unwrap();
    std::fs::write(dir.join(format!("{first}.partial.at")), "1000").unwrap();
    let r = ctx.ferry(&args);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(!dir.join(first).exists() && !dir.join(format!("{first}.partial")).exists());
    // AND nothing but the carried files is left beside them
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial"))
        .collect();
    names.sort();
    assert!(names.is_empty(), "{names:?}");
    // WHEN imported straight from the export bucket with state in the table THEN it mirrors
    let dst = ctx.bucket("dst");
    let src_uri = format!("{}/{}/00000001/", ctx.dest_uri(), ctx.job);
    let r = ctx.ferry(&[
        "import",
        &src_uri,
        "--to",
        &format!("s3://{dst}/copy"),
        "--table",
        &ctx.table,
        "--job",
        &ctx.job,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["bundles"][0]["objects"], 12);
    assert_eq!(ctx.snapshot(&dst, "copy/"), ctx.snapshot(&ctx.src, ""));
    let r = ctx.ferry(&[
        "import",
        &src_uri,
        "--to",
        &format!("s3://{dst}/copy"),
        "--table",
        &ctx.table,
        "--job",
        &ctx.job,
        "--json",
    ]);
    assert_eq!(
        r.json()["bundles"][0]["status"],
        "already_applied",
        "{}",
        r.stderr
    );
}

#[test]
fn a_directory_import_never_writes_outside_its_root() {
    // GIVEN hostile keys and a symlink inside the target pointing outside it
    let ctx = Ctx::new("dirsafe");
    for k in [
        "../up.txt",
        "a/../../up2.txt",
        "/etc/abs.txt",
        "link/inside.txt",
        "ok/fine.txt",
    ] {
        ctx.put(k, format!("body of {k}"));
    }
    ctx.export_ok(&[]);
    let outside = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
    // WHEN the bundle is imported into the directory straight from the bucket
    let src = format!("{}/{}/", ctx.dest_uri(), ctx.job);
    let r = ctx.ferry(&["import", &src, "--to-dir", root.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // THEN nothing was written outside it or through the symlink, and every key is there
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
    assert_eq!(
        std::fs::read(root.join("ok/fine.txt")).unwrap(),
        b"body of ok/fine.txt"
    );
    let index =
        s3_ferry::import::ledger::file_index_entries(&root.join(".ferry/state.json")).unwrap();
    for k in [
        "../up.txt",
        "a/../../up2.txt",
        "/etc/abs.txt",
        "link/inside.txt",
    ] {
        let place = index[k].place.as_str();
        assert!(place.starts_with("_escaped/"), "{k} → {place}");
        assert_eq!(
            std::fs::read(root.join(place)).unwrap(),
            format!("body of {k}").as_bytes()
        );
    }
}

/// A path to moto counting single DeleteObject requests and DeleteObjects batches.
fn counting_deletes() -> (
    crate::proxy::Proxy,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let (single, batched) = (
        Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    );
    let (s1, b1) = (single.clone(), batched.clone());
    let proxy = crate::proxy::start(
        &crate::util::moto().endpoint,
        Arc::new(move |m: &hyper::Method, pq: &str| {
            use std::sync::atomic::Ordering::SeqCst;
            if m == hyper::Method::DELETE {
                s1.fetch_add(1, SeqCst);
            } else if m == hyper::Method::POST && pq.contains("?delete") {
                b1.fetch_add(1, SeqCst);
            }
            crate::proxy::Action::Forward
        }),
    );
    (proxy, single, batched)
}

#[test]
fn a_baselines_removals_go_in_batches_and_a_deadline_stops_between_them() {
    // GIVEN 1,200 objects imported into a bucket, then deleted from the source, and a new
    // baseline (`--full`) that no longer lists them: 1,200 keys ferry wrote to remove
    let ctx = Ctx::new("strays");
    ctx.put("keep", "kept");
    ctx.put_many(
        (0..1_200)
            .map(|i| (format!("s/{i:05}"), b"stray".to_vec()))
            .collect(),
    );
    ctx.export_ok(&[]);
    let dest = ctx.bucket("strays-dest");
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("s.json");
    let b1 = ctx.download(&ctx.job, 1);
    let to = format!("s3://{dest}");
    let r = ctx.ferry(&[
        "import",
        b1.dir.path().to_str().unwrap(),
        "--to",
        &to,
        "--state",
        state_file.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    ctx.delete_keys((0..1_200).map(|i| format!("s/{i:05}")));
    ctx.export_ok(&["--full"]);
    let b2 = ctx.download(&ctx.job, 2);

    // WHEN it is imported with a deadline that has passed (as the import function's hop ends),
    // through a proxy counting delete requests
    let (proxy, single, batched) = counting_deletes();
    let counted = ctx.via(&proxy.endpoint);
    let cfg = s3_ferry::import::ImportConfig {
        target: Arc::new(s3_ferry::import::target::Bucket {
            store: counted.clients.s3.clone(),
            dest: to.parse().unwrap(),
            part_size: 5 << 20,
        }),
        dry_run: false,
        force: false,
        concurrency: 8,
        deadline: Some(std::time::Instant::now()),
        trust: Vec::new(),
        delete_unlisted: false,
        activity: counted.clients.s3.activity().clone(),
    };
    let bundles = block_on(s3_ferry::import::bundle::discover(
        &[b2.dir.path().to_str().unwrap().to_string()],
        None,
        None,
    ))
    .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let mut ledger = block_on(s3_ferry::import::ledger::FileLedger::open(&state_file)).unwrap();
        let report = block_on(s3_ferry::import::run(
            ledger.as_mut(),
            &cfg,
            &bundles,
            &s3_ferry::progress::NoProgress,
        ))
        .unwrap();
        block_on(ledger.close()).unwrap();
        statuses.push(report.bundles[0].status);
        if report.complete {
            break;
        }
    }

    // THEN the first call writes the volume and stops before the removals, the next removes
    // every stray in two DeleteObjects requests (it was 1,200 DeleteObject requests, with no
    // deadline check), and only the kept key is left
    use s3_ferry::import::BundleStatus::{Applied, Continue};
    assert_eq!(statuses, [Continue, Applied]);
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(single.load(SeqCst), 0);
    assert_eq!(batched.load(SeqCst), 2);
    assert_eq!(ctx.keys(&dest, ""), ["keep"]);
}
