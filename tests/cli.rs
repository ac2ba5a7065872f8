//! The operator's CLI under every hand: usage errors exit 2 before anything runs, "not found" is
//! not "verification failed", errors print once (and as JSON with `--json`), a closed pipe ends
//! quietly, `--region`/`--profile` work, messages name the endpoint, the region or the bucket;
//! and the two export/import fixes: a new baseline imports over earlier bundles, and an export
//! prefix inside the source is never exported.

use std::process::{Command, Stdio};

use std::sync::Arc;
use std::time::Duration;

use crate::proxy::{self, Action};
use crate::util::{Ctx, Run, dir_snapshot, free_port, moto};

/// `ferry ARGS` with no AWS at all (nothing here may need it).
fn offline(args: &[&str]) -> Run {
    let out = Command::new(assert_cmd::cargo::cargo_bin("ferry"))
        .args(args)
        .env_remove("FERRY_LOG")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn bad_values_are_usage_errors_with_one_policy_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let export = |extra: &[&str]| {
        let mut a = vec![
            "export",
            "--job",
            "j",
            "--source",
            "s3://src-b",
            "--dest",
            "s3://dst-b",
            "--table",
            "t",
        ];
        a.extend_from_slice(extra);
        offline(&a)
    };
    // GIVEN values out of range for each subcommand WHEN ferry runs THEN exit 2, naming the flag
    let cases: Vec<(Run, &str)> = vec![
        (
            offline(&["import", d, "--to", "s3://dst-b", "--part-size", "1MiB"]),
            "--part-size",
        ),
        (export(&["--part-size", "1MiB"]), "--part-size"),
        (export(&["--lease-ttl", "0s"]), "--lease-ttl"),
        (export(&["--concurrency", "0"]), "--concurrency"),
        (
            export(&["--max-size", "99999999999999999999"]),
            "--max-size",
        ),
        (export(&["--volume-entries", "0"]), "--volume-entries"),
        (
            offline(&["import", d, "--to-dir", d, "--concurrency", "100000"]),
            "--concurrency",
        ),
        (
            offline(&[
                "download",
                "--from",
                "s3://b-b",
                "--job",
                "j",
                "--to",
                d,
                "--concurrency",
                "0",
            ]),
            "--concurrency",
        ),
        (export(&["--source", "bucket-without-scheme"]), "--source"),
        (
            offline(&["status", "--job", "a/b", "--table", "t"]),
            "--job",
        ),
    ];
    for (run, flag) in cases {
        assert_eq!(run.code, 2, "{flag}: {}", run.stderr);
        assert!(run.stderr.contains(flag), "{flag}: {}", run.stderr);
        assert!(
            !run.stderr.contains("couldn't parse \"\""),
            "{}",
            run.stderr
        );
    }
    let run = export(&["--max-size", "99999999999999999999"]);
    assert!(run.stderr.contains("too large"), "{}", run.stderr);
}

#[test]
fn help_lists_exit_codes_and_completions_are_generated() {
    let run = offline(&["--help"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Exit codes:"), "{}", run.stdout);
    assert!(
        run.stdout.contains("6  a bundle does not follow"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("--profile") && run.stdout.contains("--region"));
    let run = offline(&["export", "--help"]);
    for flag in [
        "--job <NAME>",
        "--table <TABLE>",
        "--min-size",
        "--max-size",
        "--json",
    ] {
        let line = run
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} not in help:\n{}", run.stdout));
        assert!(
            line.trim_start().len() > flag.len() + 4,
            "{flag} has no help text: {line:?}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let run = offline(&["completions", shell]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stdout.contains("export") && run.stdout.contains("--to-dir"),
            "{shell}"
        );
    }
    // AND the bash script loads in bash
    let run = offline(&["completions", "bash"]);
    let status = Command::new("bash")
        .args(["-c", &format!("{}\ncomplete -p ferry", run.stdout)])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn nothing_to_verify_or_download_is_exit_1_not_damage() {
    // GIVEN an empty folder WHEN verified THEN exit 1 (not 5) and, with --json, an error object
    let dir = tempfile::tempdir().unwrap();
    let run = offline(&["verify", dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let j = run.json();
    assert_eq!(j["ok"], false, "{j}");
    assert_eq!(j["exit_code"], 1, "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("no .zip volume"),
        "{j}"
    );
    assert_eq!(
        run.stderr.matches("no .zip volume").count(),
        1,
        "{}",
        run.stderr
    );

    // AND a job that never exported: exit 1
    let ctx = Ctx::new("clinojob");
    let run = ctx.ferry(&[
        "download",
        "--from",
        &ctx.dest_uri(),
        "--job",
        "never-ran",
        "--to",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("never-ran"), "{}", run.stderr);
}

#[test]
fn a_closed_pipe_ends_quietly() {
    // GIVEN stdout is a pipe whose reader is gone (`ferry status | head -0`)
    let ctx = Ctx::new("clipipe");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = ctx
        .ferry_cmd()
        .args(["status", "--job", &ctx.job, "--table", &ctx.table])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    // THEN no panic: exit 0, nothing on stderr
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn errors_print_once_without_colour_and_as_json() {
    // GIVEN a state table that does not exist
    let ctx = Ctx::new("clionce");
    let run = ctx.export_with(&ctx.source_uri(), "no-such-table", &[]);
    // THEN one message, no WARN log line repeating it, no ANSI escapes on a non-terminal
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr
            .matches("ferry init --table no-such-table")
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    // AND with --json, stdout is one JSON error object
    let run = ctx.export_with(&ctx.source_uri(), "no-such-table", &["--json"]);
    let j = run.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["exit_code"], 1);
}

#[test]
fn status_json_has_the_same_fields_before_and_after_a_run() {
    let ctx = Ctx::new("clistatus");
    let status = || {
        let run = ctx.ferry(&["status", "--job", &ctx.job, "--table", &ctx.table, "--json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.json()
    };
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let before = status();
    assert_eq!(before["exists"], false);
    assert_eq!(before["sequence"], 0);
    ctx.put("a.txt", "a");
    ctx.export_ok(&[]);
    let after = status();
    assert_eq!(after["exists"], true);
    assert_eq!(after["sequence"], 1);
    assert_eq!(keys(&before), keys(&after));
}

#[test]
fn region_profile_and_endpoint_are_named() {
    let ctx = Ctx::new("cliregion");
    let home = tempfile::tempdir().unwrap();
    let cmd = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = ctx.ferry_cmd();
        c.env_remove("AWS_REGION")
            .env("HOME", home.path())
            .env("AWS_CONFIG_FILE", home.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                home.path().join("credentials"),
            );
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.args(args).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    for f in ["config", "credentials"] {
        std::fs::write(home.path().join(f), "").unwrap();
    }
    let status = ["status", "--job", &ctx.job, "--table", &ctx.table];
    // GIVEN no region anywhere THEN the headline says so
    let run = cmd(&status, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let headline = run.stderr.lines().next().unwrap_or_default();
    assert!(headline.contains("no AWS region is set"), "{}", run.stderr);
    // WHEN --region is given THEN it works
    let run = cmd(&[&status[..], &["--region", "us-east-1"]].concat(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // AND a profile's region is used with --profile
    std::fs::write(
        home.path().join("config"),
        "[profile ferry-test]\nregion = us-east-1\n",
    )
    .unwrap();
    let run = cmd(&[&status[..], &["--profile", "ferry-test"]].concat(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // GIVEN an endpoint nobody listens on THEN the message names it, not the table
    let dead = format!("http://127.0.0.1:{}", free_port());
    let run = cmd(
        &[&status[..], &["--region", "us-east-1"]].concat(),
        &[("AWS_ENDPOINT_URL", &dead)],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("cannot reach dynamodb at {dead}")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("check the table exists"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_destination_bucket_is_named_before_anything_is_written() {
    let ctx = Ctx::new("clinodest");
    ctx.put("a.txt", "a");
    ctx.export_ok(&[]);
    let b = ctx.download(&ctx.job, 1);
    let run = ctx.ferry(&[
        "import",
        b.dir.path().to_str().unwrap(),
        "--to",
        "s3://no-such-dest-bucket",
        "--state",
        b.dir.path().join("state.json").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("bucket `no-such-dest-bucket` does not exist"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("mid-stream"), "{}", run.stderr);
}

#[test]
fn a_new_baseline_imports_after_earlier_bundles() {
    // GIVEN bundle 1, then a change and `export --full`: bundle 2 is a new baseline
    let ctx = Ctx::new("clibaseline");
    ctx.put("keep.txt", "keep");
    ctx.put("gone.txt", "gone");
    ctx.export_ok(&[]);
    ctx.delete("gone.txt");
    ctx.put("new.txt", "new");
    let r = ctx.export_ok(&["--full"]);
    assert_eq!(r["baseline"], true, "{r}");
    let b1 = ctx.download(&ctx.job, 1);
    let b2 = ctx.download(&ctx.job, 2);
    let dir = tempfile::tempdir().unwrap();
    let to_dir = dir.path().to_str().unwrap();
    // WHEN both are imported, one after the other and then both at once elsewhere
    for b in [&b1, &b2] {
        let run = ctx.ferry(&["import", b.dir.path().to_str().unwrap(), "--to-dir", to_dir]);
        // THEN each applies without --force
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    }
    let mirror = dir_snapshot(dir.path());
    let names: Vec<&str> = mirror.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["keep.txt", "new.txt"],
        "the baseline removes what it does not list"
    );
    let other = tempfile::tempdir().unwrap();
    let run = ctx.ferry(&[
        "import",
        b1.dir.path().to_str().unwrap(),
        b2.dir.path().to_str().unwrap(),
        "--to-dir",
        other.path().to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(dir_snapshot(other.path()), mirror);
}

#[test]
fn a_baseline_applies_over_a_gap_in_the_chain() {
    // GIVEN bundles 1 and 2, then a new baseline 3; only 1 and 3 reach the far side
    let ctx = Ctx::new("cligap");
    ctx.put("a.txt", "a");
    ctx.put("b.txt", "b");
    ctx.export_ok(&[]);
    ctx.delete("a.txt");
    ctx.export_ok(&[]);
    ctx.put("c.txt", "c");
    let r = ctx.export_ok(&["--full"]);
    assert_eq!(
        (r["sequence"].as_u64(), r["baseline"].as_bool()),
        (Some(3), Some(true))
    );
    let (b1, b3) = (ctx.download(&ctx.job, 1), ctx.download(&ctx.job, 3));
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap();
    // WHEN 1 then 3 are imported THEN 3 applies without --force and mirrors the source
    for b in [&b1, &b3] {
        let run = ctx.ferry(&["import", b.dir.path().to_str().unwrap(), "--to-dir", to]);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    }
    let names: Vec<String> = dir_snapshot(dir.path()).into_keys().collect();
    assert_eq!(names, ["b.txt", "c.txt"]);
    // AND an incremental bundle 2 after it is refused as not newer (exit 6)
    let b2 = ctx.download(&ctx.job, 2);
    let run = ctx.ferry(&["import", b2.dir.path().to_str().unwrap(), "--to-dir", to]);
    assert_eq!(run.code, 6, "{}", run.stderr);
}

#[test]
fn an_export_prefix_inside_the_source_is_never_exported() {
    // GIVEN bundles going into the bucket they export (--dest s3://SRC/exports)
    let ctx = Ctx::new("cliownprefix");
    ctx.put("data/a.txt", "a");
    let dest = format!("s3://{}/exports", ctx.src);
    let export = || {
        let run = ctx.ferry(&[
            "export",
            "--job",
            &ctx.job,
            "--source",
            &ctx.source_uri(),
            "--dest",
            &dest,
            "--table",
            &ctx.table,
            "--json",
        ]);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        run.json()
    };
    let first = export();
    assert_eq!(first["objects"], 1, "{first}");
    // WHEN it runs again with nothing changed
    let second = export();
    let third = export();
    // THEN nothing is shipped again, and the left-out output is reported
    assert_eq!(second["status"], "no_changes", "{second}");
    assert_eq!(third["status"], "no_changes", "{third}");
    assert!(third["own_output"].as_u64().unwrap() > 0, "{third}");
    assert_eq!(
        third["own_output_prefixes"][0],
        format!("s3://{}/exports/", ctx.src)
    );
    // AND a source inside the export's output is refused
    let run = ctx.ferry(&[
        "export",
        "--job",
        &ctx.job,
        "--source",
        &format!("{dest}/x"),
        "--dest",
        &dest,
        "--table",
        &ctx.table,
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("inside the export's own output"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_killed_import_leaves_no_lock_behind() {
    // GIVEN a bundle in a bucket, and an import from it that hangs on its first volume read
    let ctx = Ctx::new("clikill");
    ctx.put("a.txt", "a");
    ctx.export_ok(&[]);
    let proxy = proxy::start(
        &moto().endpoint,
        Arc::new(|m: &hyper::Method, pq: &str| {
            if m == hyper::Method::GET && pq.contains(".zip") {
                Action::Hang
            } else {
                Action::Forward
            }
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let bundle = format!("s3://{}/bundles/{}/00000001/", ctx.exp, ctx.job);
    let args = [
        "import",
        bundle.as_str(),
        "--to-dir",
        dir.path().to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    let mut hung = ctx
        .via(&proxy.endpoint)
        .ferry_cmd()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = dir.path().join("state.json.lock");
    let waited = std::time::Instant::now();
    while !lock.exists() {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the import never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // WHEN another import runs meanwhile THEN it is refused (exit 3) naming the state
    let run = ctx.ferry(&args);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("in use by another running import"),
        "{}",
        run.stderr
    );
    // WHEN the first is killed (-9) THEN the next import needs no hand work
    hung.kill().unwrap();
    hung.wait().unwrap();
    let run = ctx.ferry(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"a");
}

#[test]
fn a_silent_server_fails_the_run_within_the_request_timeout() {
    // GIVEN an endpoint that accepts connections and never answers
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    // WHEN `ferry status` runs against it with a 1 s request time-out
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"))
        .args([
            "status",
            "--job",
            "j",
            "--table",
            "t",
            "--request-timeout",
            "1s",
        ])
        .envs(crate::util::aws_env(&endpoint))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("ferry still waits on a silent server after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // THEN it fails in seconds (3 attempts), naming the endpoint and the operation
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains(&format!("cannot reach dynamodb at {endpoint} (GetItem)")),
        "{stderr}"
    );
}
