//! Hostile media: the crafted corpus (`tests/hostile/corpus.py`, each volume with the outcome
//! ferry must give) and a bounded mutation run over genuine volumes. Whatever the bytes, `ferry
//! verify` and `ferry import --to-dir` agree, exit only 0 or 5 (never a panic or a signal), stay
//! under 256 MiB of RSS, and an import that refuses a volume writes nothing.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{python, run_ok};

/// Peak RSS a reader may reach on any volume.
const MAX_RSS_KIB: u64 = 256 * 1024;

struct Outcome {
    code: Option<i32>,
    rss_kib: u64,
    stderr: String,
}

/// `ferry ARGS` under GNU time: its exit code (None: killed by a signal) and peak RSS.
fn ferry(args: &[&std::ffi::OsStr]) -> Outcome {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "ferry-rss-kib=%M"])
        .arg(assert_cmd::cargo::cargo_bin("ferry"))
        .args(args)
        .env_remove("FERRY_LOG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let rss_kib = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("ferry-rss-kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RSS from /usr/bin/time: {stderr}"));
    // GNU time reports a signal as "Command terminated by signal N" and exits 128+N.
    let signalled = stderr.contains("terminated by signal");
    Outcome {
        code: if signalled { None } else { out.status.code() },
        rss_kib,
        stderr,
    }
}

/// The crafted corpus (`tests/hostile/corpus.py`), made once for every test process that
/// reads it (it takes ~10 CPU seconds; [`crate::util::made_once`]).
struct Corpus(PathBuf);

impl Corpus {
    fn path(&self) -> &Path {
        &self.0
    }
}

fn corpus() -> Corpus {
    Corpus(crate::util::made_once(
        "hostile-corpus",
        &Path::new(crate::util::ROOT).join("tests/hostile/corpus.py"),
        "expected.json",
        |script, into| run_ok(Command::new(python()).arg(script).arg(into)),
    ))
}

/// Files below `dir` other than the import state (`.ferry/`).
fn written(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_name() == ".ferry" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Verify and import `volume`; both must give `expect` (or, with `None`, the same 0 or 5). A
/// refused import may leave only objects whose bytes are genuine (in `genuine`; crafted volumes
/// pass none: nothing at all).
fn check(volume: &Path, expect: Option<i32>, genuine: &HashSet<Vec<u8>>) -> i32 {
    let v = ferry(&["verify".as_ref(), volume.as_os_str()]);
    let dest = tempfile::tempdir().unwrap();
    let i = ferry(&[
        "import".as_ref(),
        volume.as_os_str(),
        "--to-dir".as_ref(),
        dest.path().as_os_str(),
    ]);
    let name = volume.display();
    for (what, o) in [("verify", &v), ("import", &i)] {
        let code = o
            .code
            .unwrap_or_else(|| panic!("{what} of {name} died by a signal: {}", o.stderr));
        assert!(
            code == 0 || code == 5,
            "{what} of {name} exited {code}: {}",
            o.stderr
        );
        assert!(
            !o.stderr.contains("panicked"),
            "{what} of {name} panicked: {}",
            o.stderr
        );
        assert!(
            o.rss_kib <= MAX_RSS_KIB,
            "{what} of {name} peaked at {} MiB",
            o.rss_kib / 1024
        );
        if let Some(e) = expect {
            assert_eq!(code, e, "{what} of {name}: {}", o.stderr);
        }
    }
    let code = v.code.unwrap();
    assert_eq!(
        i.code,
        Some(code),
        "verify and import disagree on {name}: {}",
        i.stderr
    );
    if code == 5 {
        let forged: Vec<PathBuf> = written(dest.path())
            .into_iter()
            .filter(|f| !genuine.contains(&std::fs::read(f).unwrap()))
            .collect();
        assert!(
            forged.is_empty(),
            "a refused import of {name} wrote {forged:?}"
        );
    }
    code
}

#[test]
fn crafted_volumes_get_the_outcome_they_must() {
    // GIVEN the corpus of crafted volumes
    let dir = corpus();
    let expected: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("expected.json")).unwrap()).unwrap();
    assert!(expected.len() >= 20, "{expected:?}");
    // WHEN each is verified and imported THEN each gets its outcome, bounded in memory
    for (name, want) in &expected {
        let code = want["exit"].as_i64().unwrap() as i32;
        check(&dir.path().join(name), Some(code), &HashSet::new());
    }
}

/// Deterministic bytes from a seed (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_volumes_never_crash_or_exhaust_the_reader() {
    // GIVEN genuine volumes (stored and deflate) from the corpus
    let dir = corpus();
    let names = ["valid-stored.zip", "valid-deflate.zip"];
    let originals: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(dir.path().join(n)).unwrap())
        .collect();
    // The objects they hold, as an import writes them.
    let mut genuine = HashSet::new();
    for n in names {
        let out = tempfile::tempdir().unwrap();
        assert_eq!(check(&dir.path().join(n), Some(0), &HashSet::new()), 0);
        run_ok(
            Command::new(assert_cmd::cargo::cargo_bin("ferry"))
                .arg("import")
                .arg(dir.path().join(n))
                .arg("--to-dir")
                .arg(out.path()),
        );
        for f in written(out.path()) {
            genuine.insert(std::fs::read(f).unwrap());
        }
    }
    assert_eq!(genuine.len(), 4, "the genuine volumes hold 4 objects");
    let seed = std::env::var("FERRY_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let budget = Duration::from_secs(
        std::env::var("FERRY_MUTATION_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40),
    );
    eprintln!("mutation seed {seed} (FERRY_MUTATION_SEED={seed} repeats it), {budget:?}");
    let mut rng = Rng(seed);
    let mutants = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (mut runs, mut refused) = (0, 0);
    // WHEN bytes are flipped, cut, inserted THEN only 0 or 5, bounded, verify = import
    while started.elapsed() < budget {
        let mut v = originals[rng.below(originals.len())].clone();
        let edits = 1 + rng.below(4);
        let mut what = Vec::new();
        for _ in 0..edits {
            let at = rng.below(v.len());
            match rng.below(4) {
                0 | 1 => {
                    v[at] ^= 1 << rng.below(8);
                    what.push(format!("flip@{at}"));
                }
                2 => {
                    v.truncate(at.max(1));
                    what.push(format!("cut@{at}"));
                }
                _ => {
                    let n = 1 + rng.below(64);
                    let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    v.splice(at..at, junk);
                    what.push(format!("insert{n}@{at}"));
                }
            }
        }
        // (not in the corpus folder, which other tests read)
        let path = mutants.path().join(format!("mutant-{runs}.zip"));
        std::fs::write(&path, &v).unwrap();
        eprintln!("mutant {runs}: {}", what.join(" "));
        if check(&path, None, &genuine) == 5 {
            refused += 1;
        }
        std::fs::remove_file(&path).unwrap();
        runs += 1;
    }
    eprintln!("{runs} mutants, {refused} refused (exit 5), the rest intact (exit 0)");
    assert!(runs >= 20, "only {runs} mutants in {budget:?}");
}

#[test]
fn a_refused_import_into_a_bucket_leaves_no_upload_open() {
    // GIVEN a deflate bomb declaring 9 MiB (a multipart upload) that inflates to 1 GiB
    let dir = corpus();
    let ctx = crate::util::Ctx::new("bombs3");
    let dest = ctx.bucket("bomb-dest");
    let state = tempfile::tempdir().unwrap();
    // WHEN it is imported into a bucket
    let run = ctx.ferry(&[
        "import",
        dir.path().join("deflate-bomb-9mib.zip").to_str().unwrap(),
        "--to",
        &format!("s3://{dest}"),
        "--state",
        state.path().join("state.json").to_str().unwrap(),
    ]);
    // THEN it is refused as damage, nothing lands and no multipart upload stays open
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr.contains("inflates past its declared"),
        "{}",
        run.stderr
    );
    assert!(ctx.keys(&dest, "").is_empty());
    let open = crate::util::block_on(ctx.s3.list_multipart_uploads().bucket(&dest).send())
        .unwrap()
        .uploads()
        .len();
    assert_eq!(open, 0, "the refused entry's upload was not aborted");
}
