//! The round-trip property on the fast tier: after any sequence of changes and export → carry
//! → verify → import cycles, the destination bucket and directory equal the source, every
//! object's bytes, headers and metadata, and the directory's mtimes. The engine runs in process
//! on the in-memory stores; moved here from the moto tier with every check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use s3_ferry::format::manifest::ObjectHeaders;
use s3_ferry::store::{Got, ObjectStore, PutMode};

use crate::util::{block_on, dir_snapshot};

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
    w: crate::world::World,
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

fn http_date(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&f).unwrap()
}

impl World {
    fn new(name: &str, seed: u64) -> World {
        let w = crate::world::World::new(name);
        let dst = w.bucket("dst");
        World {
            w,
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
        let mut h = ObjectHeaders {
            content_type: Some(TYPES[self.rng.usize(..TYPES.len())].to_string()),
            ..Default::default()
        };
        if self.rng.bool() {
            h.content_encoding = Some("identity".into());
            h.content_disposition =
                Some(format!("attachment; filename=\"f{}.bin\"", self.rng.u8(..)));
            h.content_language = Some("en-GB".into());
            h.cache_control = Some("max-age=60".into());
            h.expires = Some(http_date(2_000_000_000 + self.rng.i64(0..1_000_000)));
            h.website_redirect_location = Some(format!("/moved/{}.html", self.rng.u16(..)));
        }
        for i in 0..self.rng.usize(0..3) {
            h.metadata
                .insert(format!("m{i}"), format!("v{}", self.rng.u32(..)));
        }
        for i in 0..self.rng.usize(0..4) {
            h.tags
                .insert(format!("t{i}"), format!("v {}", self.rng.u32(..)));
        }
        let put = self
            .w
            .objects
            .put(&self.w.src, key, Bytes::from(body), &h, PutMode::Overwrite);
        block_on(put).unwrap();
    }

    /// Copy `from` to `to` keeping headers (what `aws s3 mv` does), then delete `from`.
    fn rename(&mut self, from: &str, to: &str) {
        block_on(self.w.objects.copy(&self.w.src, from, to, None)).unwrap();
        self.w.delete(from);
    }

    /// New headers and metadata, same bytes.
    fn touch(&mut self, key: &str) {
        let h = ObjectHeaders {
            content_type: Some(TYPES[self.rng.usize(..TYPES.len())].to_string()),
            cache_control: Some(format!("max-age={}", self.rng.u16(..))),
            metadata: [("touched".to_string(), self.rng.u32(..).to_string())].into(),
            ..Default::default()
        };
        block_on(self.w.objects.copy(&self.w.src, key, key, Some(&h))).unwrap();
    }

    fn pick(&mut self) -> Option<String> {
        (!self.keys.is_empty()).then(|| self.keys[self.rng.usize(..self.keys.len())].clone())
    }

    /// A random batch of puts, overwrites, deletes, renames and metadata-only changes.
    fn mutate(&mut self) -> BTreeMap<&'static str, u32> {
        // The engine compares LastModified to the second, as S3 lists it: a metadata-only
        // change in the same second as the version the last export listed is
        // indistinguishable from it (README, Limits). Changes start in a later second.
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
                    self.w.delete(&victim);
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

    fn export(&self, deadline_now: bool) -> serde_json::Value {
        self.w.export_with(|c| {
            c.tuning.volume_size = 1024 * 1024;
            if deadline_now {
                c.deadline = Some(std::time::Instant::now());
            }
        })
    }

    fn state_file(&self) -> PathBuf {
        self.state.path().join("mirror.json")
    }

    /// Export, carry, verify, import into the bucket and the directory; the bundle folder.
    fn cycle(&mut self) -> PathBuf {
        let r = self.export(false);
        self.sequence = r["sequence"].as_u64().unwrap();
        self.carry_and_apply()
    }

    /// Export with the source changing under the run: a random batch of changes after the
    /// plan and after each deadline stop (a deadline that has passed stops after the plan,
    /// then after every volume), at most `stops` stops, then the run completes. The committed
    /// sequence.
    fn cycle_mutating(&mut self, stops: usize) -> u64 {
        let mut r = self.export(true);
        let mut stopped = 0;
        for _ in 0..stops {
            if r["status"] != "continue" {
                break;
            }
            stopped += 1;
            self.mutate();
            r = self.export(true);
        }
        eprintln!(
            "bundle {}: {stopped} deadline stops with changes after each",
            r["sequence"]
        );
        if r["status"] == "continue" {
            r = self.export(false);
        }
        assert_eq!(r["status"], "complete", "{r}");
        r["sequence"].as_u64().unwrap()
    }

    /// Carry and apply every bundle after the last one carried; the last bundle folder.
    fn carry_up_to(&mut self, sequence: u64) -> Option<PathBuf> {
        let mut last = None;
        while self.sequence < sequence {
            self.sequence += 1;
            last = Some(self.carry_and_apply());
        }
        last
    }

    /// Bundle `self.sequence` into the carry folder (as `ferry download` lays it out), verified,
    /// then imported into the bucket and the directory.
    fn carry_and_apply(&mut self) -> PathBuf {
        let (job, seq) = (self.w.job.clone(), self.sequence);
        let bundle = self.carry.path().join(&job).join(format!("{seq:08}"));
        std::fs::create_dir_all(&bundle).unwrap();
        let prefix = format!("bundles/{job}/{seq:08}/");
        for key in self.w.keys(&self.w.exp, &prefix) {
            let body = self.w.get(&self.w.exp, &key).unwrap();
            std::fs::write(bundle.join(&key[prefix.len()..]), body).unwrap();
        }
        let src = vec![bundle.to_str().unwrap().to_string()];
        block_on(async {
            for b in s3_ferry::import::bundle::discover(&src, None, None)
                .await
                .unwrap()
            {
                let r = s3_ferry::import::verify::verify_bundle(
                    &b,
                    &[],
                    &s3_ferry::progress::NoProgress,
                    &s3_ferry::interrupt::Stop::new(),
                )
                .await
                .unwrap_or_else(|e| panic!("verify: {}", s3_ferry::error_chain(&e)));
                assert_eq!(r.sequence, seq);
            }
        });
        let to = format!("s3://{}/mirror", self.dst);
        let bucket = self.w.bucket_target(&self.w.clients.s3, &to);
        let r = self
            .w
            .import(&[bundle.as_path()], bucket, &self.state_file());
        assert_eq!(r["bundles"][0]["status"], "applied", "{r}");
        let home = self.dir.path().join(".ferry").join("state.json");
        self.w.import(
            &[bundle.as_path()],
            self.w.dir_target(self.dir.path()),
            &home,
        );
        bundle
    }

    /// Every object under `prefix` of `bucket`: its bytes, headers and LastModified.
    fn snapshot(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> BTreeMap<String, (Vec<u8>, ObjectHeaders, i64)> {
        self.w
            .keys(bucket, prefix)
            .into_iter()
            .map(|k| {
                let Got::Found { meta, body } =
                    block_on(self.w.clients.s3.get(bucket, &k, None, None)).unwrap()
                else {
                    panic!("{k} vanished")
                };
                (
                    k[prefix.len()..].to_string(),
                    (body.to_vec(), meta.headers, meta.last_modified_ms),
                )
            })
            .collect()
    }

    /// The destination bucket and directory equal the source; returns the object count.
    fn assert_mirrors(&self, what: &str) -> usize {
        let src = self.snapshot(&self.w.src, "");
        let dst = self.snapshot(&self.dst, "mirror/");
        let src_keys: Vec<&String> = src.keys().collect();
        let dst_keys: Vec<&String> = dst.keys().collect();
        assert_eq!(src_keys, dst_keys, "{what}: keys differ");
        for (k, (body, headers, _)) in &src {
            let (d_body, d_headers, _) = &dst[k];
            assert!(body == d_body, "{what}: bytes of `{k}` differ");
            assert_eq!(headers, d_headers, "{what}: headers of `{k}` differ");
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
            assert!(body == &src[k].0, "{what}: directory bytes of `{k}` differ");
            // the file's mtime is the object's LastModified (to the second S3 lists it at)
            let listed = src[k].2.div_euclid(1000);
            let place = index[k.as_str()].place.as_str();
            let mtime = mtime_secs(&self.dir.path().join(place));
            assert_eq!(mtime, listed, "{what}: mtime of `{k}`");
            // the tags a folder cannot hold are in its key index
            let kept = index[k.as_str()].kept.as_ref().map(|k| k.tags.clone());
            assert_eq!(
                kept.unwrap_or_default(),
                src[k].1.tags,
                "{what}: tags of `{k}` in the folder's key index"
            );
        }
        src.len()
    }
}

fn mtime_secs(p: &Path) -> i64 {
    std::fs::metadata(p)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
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
            .join(&w.w.job)
            .join(format!("{:08}", w.sequence));
        let before = w.snapshot(&w.dst, "mirror/");
        let to = format!("s3://{}/mirror", w.dst);
        let bucket = w.w.bucket_target(&w.w.clients.s3, &to);
        let r = w.w.import(&[bundle.as_path()], bucket, &w.state_file());
        assert_eq!(r["bundles"][0]["status"], "already_applied");
        assert_eq!(before, w.snapshot(&w.dst, "mirror/"));
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
        let r = w.export(false);
        let seq = r["sequence"].as_u64().unwrap();
        w.carry_up_to(seq);
        // THEN the bucket and the directory equal the source, and every import applied (a
        // move from a key never shipped used to fail every import from then on)
        let n = w.assert_mirrors(&format!("seed {seed} mutating cycle {c}"));
        eprintln!("seed {seed} mutating cycle {c}: {n} objects compared, sequence {seq}");
        // AND the next run has nothing to do: the inventory is what was shipped
        let r = w.export(false);
        assert_eq!(r["status"], "no_changes", "cycle {c}: {r}");
    }
}

#[test]
fn object_lock_crosses_to_a_bucket_with_object_lock_and_is_refused_or_skipped_elsewhere() {
    // GIVEN a source with a GOVERNANCE retention, a COMPLIANCE retention with a legal hold,
    // and a plain object
    let w = crate::world::World::new("lock");
    let lock = |mode: &str, hold: bool| ObjectHeaders {
        object_lock_mode: Some(mode.to_string()),
        object_lock_retain_until: Some("2031-01-02T03:04:05Z".into()),
        object_lock_legal_hold: hold,
        ..Default::default()
    };
    for (key, h) in [
        ("gov", lock("GOVERNANCE", false)),
        ("comp", lock("COMPLIANCE", true)),
        ("plain", ObjectHeaders::default()),
    ] {
        block_on(w.objects.put(
            &w.src,
            key,
            bytes::Bytes::from(key.as_bytes().to_vec()),
            &h,
            PutMode::Overwrite,
        ))
        .unwrap();
    }
    w.export();
    let b = w.download(&w.job, 1);
    let state = tempfile::tempdir().unwrap();
    let lock_of = |bucket: &str, key: &str| {
        let h = block_on(w.objects.get(bucket, key, None, None)).unwrap();
        match h {
            s3_ferry::store::Got::Found { meta, .. } => (
                meta.headers.object_lock_mode,
                meta.headers.object_lock_retain_until,
                meta.headers.object_lock_legal_hold,
            ),
            _ => panic!("{key} in {bucket}: gone"),
        }
    };

    // WHEN it is imported into a bucket without Object Lock
    let plain = w.bucket("plain");
    let e = w
        .import_with(
            &[b.dir.path()],
            w.bucket_target(&w.clients.s3, &format!("s3://{plain}")),
            &state.path().join("plain"),
            |_| {},
        )
        .unwrap_err();
    // THEN it is refused, naming Object Lock, and nothing is written
    assert!(
        matches!(e, s3_ferry::error::Error::NoObjectLock { objects: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("Object Lock"), "{e}");
    assert!(w.keys(&plain, "").is_empty());

    // WHEN it is imported unlocked there, and into a bucket with Object Lock
    let r = w
        .import_with(
            &[b.dir.path()],
            w.bucket_target(&w.clients.s3, &format!("s3://{plain}")),
            &state.path().join("skip"),
            |c| c.skip_object_lock = true,
        )
        .unwrap();
    let locked = w.bucket("locked");
    w.objects.create_bucket_with_object_lock(&locked);
    w.import(
        &[b.dir.path()],
        w.bucket_target(&w.clients.s3, &format!("s3://{locked}")),
        &state.path().join("locked"),
    );

    // THEN unlocked: every object, no lock, and the summary counts them; with Object Lock:
    // each object's mode, retain-until and legal hold as the source has them
    assert_eq!(r["bundles"][0]["unlocked"], 2, "{r}");
    assert_eq!(w.keys(&plain, ""), ["comp", "gov", "plain"]);
    for key in ["comp", "gov", "plain"] {
        assert_eq!(lock_of(&plain, key), (None, None, false), "{key}");
        assert_eq!(lock_of(&locked, key), lock_of(&w.src, key), "{key}");
    }
    assert_eq!(
        lock_of(&locked, "comp"),
        (
            Some("COMPLIANCE".into()),
            Some("2031-01-02T03:04:05Z".into()),
            true
        )
    );

    // WHEN it is imported into a folder, which keeps no lock and refuses none
    let dir = tempfile::tempdir().unwrap();
    let folder_state = state.path().join("folder.json");
    w.import(&[b.dir.path()], w.dir_target(dir.path()), &folder_state);
    // THEN the folder's key index records each object's lock (and nothing for the plain one)
    let index = s3_ferry::import::ledger::file_index_entries(&folder_state).unwrap();
    let kept = |key: &str| index[key].kept.clone().map(|k| *k);
    let comp = kept("comp").expect("comp's lock recorded");
    assert_eq!(
        (
            comp.object_lock_mode.as_deref(),
            comp.object_lock_retain_until.as_deref(),
            comp.object_lock_legal_hold
        ),
        (Some("COMPLIANCE"), Some("2031-01-02T03:04:05Z"), true)
    );
    assert_eq!(
        kept("gov").and_then(|k| k.object_lock_mode),
        Some("GOVERNANCE".into())
    );
    assert_eq!(kept("plain"), None);
}
