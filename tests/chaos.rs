//! The `kill -9` chaos loop: rounds of changes to the source, each exported and imported while
//! runs on both sides are killed (SIGKILL: no handler, no cleanup) at random moments. The next
//! run of each side must pick up where the killed one stopped, and in the end the destination
//! must equal the source exactly, with no multipart upload left open on either side. Bounded:
//! a fixed seed, a fixed number of rounds and kills.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Ctx, Run};

const ROUNDS: usize = 5;
/// Kills per round of an export (each one that lands costs the lease's 10 s) and of an import
/// (a kill is counted only when the run was still going).
const EXPORT_KILLS: u32 = 1;
const IMPORT_KILLS: u32 = 3;
const SEED: u64 = 0x5eed_c4a0;

/// One side's settings and counters across rounds.
struct Side {
    /// Kills per round.
    kills: u32,
    /// Kills attempted so far (every other one waits for an open upload).
    aimed: u32,
    /// The last successful run's duration, ms.
    typical: u64,
    runs: u32,
    lease_waits: u32,
}

#[derive(Default, Debug)]
struct Tally {
    export_kills: u32,
    import_kills: u32,
    export_runs: u32,
    import_runs: u32,
    lease_waits: u32,
    bundles: u64,
}

fn spawn(ctx: &Ctx, args: &[String]) -> Child {
    ctx.ferry_cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Run `args` until it succeeds; up to `kills` of the attempts are killed after a random
/// delay (up to `typical`, the last successful run's duration) while still running. Returns
/// the successful run and how many were killed. Exit 3 (the lease of a killed export, until it
/// expires) is waited out.
fn until_done(
    ctx: &Ctx,
    args: &[String],
    uploads_in: &str,
    rng: &mut fastrand::Rng,
    side: &mut Side,
) -> (Run, u32) {
    let Side {
        kills,
        aimed,
        typical,
        runs,
        lease_waits,
    } = side;
    let mut kills = *kills;
    let started = Instant::now();
    let mut killed = 0;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no successful run within 180 s: {args:?}"
        );
        *runs += 1;
        let began = Instant::now();
        let mut child = spawn(ctx, args);
        if kills > 0 {
            // Every other kill lands while a multipart upload of the run is open (the debris
            // a killed run leaves); the rest at a random moment.
            let limit = began + Duration::from_millis((*typical).max(10) * 2);
            *aimed += 1;
            if *aimed % 2 == 1 {
                while ctx.open_uploads_in(uploads_in) == 0
                    && Instant::now() < limit
                    && child.try_wait().unwrap().is_none()
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            } else {
                std::thread::sleep(Duration::from_millis(rng.u64(5..(*typical).max(10))));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
                kills -= 1;
                continue;
            }
        }
        let out = child.wait_with_output().unwrap();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        match run.code {
            0 => {
                *typical = began.elapsed().as_millis() as u64;
                return (run, killed);
            }
            3 => {
                *lease_waits += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            _ => panic!(
                "{args:?} failed after {killed} kills:\n{}\n{}",
                run.stdout, run.stderr
            ),
        }
    }
}

/// Random bytes of a random length in `len`.
fn body(rng: &mut fastrand::Rng, len: std::ops::Range<usize>) -> Vec<u8> {
    let n = rng.usize(len);
    std::iter::repeat_with(|| rng.u8(..)).take(n).collect()
}

#[test]
fn kill_9_at_random_moments_on_both_sides_ends_in_an_exact_mirror() {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let ctx = Ctx::new("chaos");
    let dest = ctx.bucket("mirror");
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("import.json");
    // GIVEN a source of small objects and a few multipart-sized ones
    let mut live: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    for i in 0..150 {
        let key = format!("d{}/obj-{i:03}.bin", i % 7);
        objects.push((key.clone(), body(&mut rng, 100..20_000)));
        live.push(key);
    }
    for (i, mib) in [6usize, 7, 11].into_iter().enumerate() {
        objects.push((
            format!("big/{i}.bin"),
            body(&mut rng, (mib << 20)..(mib << 20) + 1),
        ));
    }
    ctx.put_many(objects);
    let export_args = ctx.export_args(
        &ctx.job,
        &ctx.source_uri(),
        &ctx.table,
        &[
            "--json",
            "--lease-ttl",
            "10s",
            "--volume-size",
            "1MiB",
            "--part-size",
            "5MiB",
            // shards: a kill leaves volume indices handed out and never completed
            "--shards",
            "3",
        ],
    );
    let mut t = Tally::default();
    let side = |kills| Side {
        kills,
        aimed: 0,
        typical: 1500,
        runs: 0,
        lease_waits: 0,
    };
    let (mut exports, mut imports) = (side(EXPORT_KILLS), side(IMPORT_KILLS));
    let mut next = 1000;
    for round in 0..ROUNDS {
        // WHEN the source changes (new, overwritten, deleted and renamed keys; a big object
        // rewritten) …
        if round > 0 {
            for _ in 0..40 {
                let key = format!("new/{next}.bin");
                next += 1;
                ctx.put(&key, body(&mut rng, 10..30_000));
                live.push(key);
            }
            for _ in 0..20 {
                let k = live[rng.usize(..live.len())].clone();
                ctx.put(&k, body(&mut rng, 10..30_000));
            }
            for _ in 0..5 {
                let k = live.swap_remove(rng.usize(..live.len()));
                ctx.delete(&k);
            }
            for _ in 0..3 {
                let from = live.swap_remove(rng.usize(..live.len()));
                let to = format!("renamed/{next}.bin");
                next += 1;
                ctx.rename(&from, &to);
                live.push(to);
            }
            ctx.put(
                &format!("big/{}.bin", round % 3),
                body(&mut rng, (11 << 20)..(13 << 20)),
            );
        }
        // … AND exports are killed at random moments until one completes
        let (run, kills) = until_done(&ctx, &export_args, &ctx.exp, &mut rng, &mut exports);
        (t.export_runs, t.lease_waits) = (exports.runs, exports.lease_waits + imports.lease_waits);
        t.export_kills += kills;
        let sequence = run.json()["sequence"].as_u64().unwrap();
        assert_eq!(sequence, round as u64 + 1, "{}", run.stdout);
        // AND imports of the new bundle are killed at random moments until one completes
        let bundle = format!("{}/{}/{sequence:08}/", ctx.dest_uri(), ctx.job);
        let import_args: Vec<String> = [
            "import",
            &bundle,
            "--to",
            &format!("s3://{dest}"),
            "--state",
            state_file.to_str().unwrap(),
            "--part-size",
            "5MiB",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (run, kills) = until_done(&ctx, &import_args, &dest, &mut rng, &mut imports);
        (t.import_runs, t.lease_waits) = (imports.runs, exports.lease_waits + imports.lease_waits);
        t.import_kills += kills;
        assert_eq!(run.json()["sequence"], sequence, "{}", run.stdout);
        t.bundles += 1;

        // THEN after every round the destination equals the source, and no upload is open
        let want = ctx.snapshot(&ctx.src, "");
        let got = ctx.snapshot(&dest, "");
        let differences = want.iter().filter(|(k, o)| got.get(*k) != Some(o)).count()
            + got.keys().filter(|k| !want.contains_key(*k)).count();
        let open = ctx.open_uploads() + ctx.open_uploads_in(&dest);
        eprintln!(
            "chaos round {round}: {t:?}; keys compared {}, differences {differences}, open uploads {open}",
            want.len()
        );
        assert_eq!(differences, 0, "round {round}");
        assert_eq!(open, 0, "round {round}");
    }
    assert!(
        t.export_kills >= 3 && t.import_kills >= 6,
        "too few kills landed to mean anything: {t:?}"
    );
}
