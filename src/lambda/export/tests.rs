//! Unit tests of the export function's configuration and events.

use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

const BASE: &[(&str, &str)] = &[
    ("FERRY_JOB", "monthly"),
    ("SOURCE_BUCKET", "src-bucket"),
    ("SOURCE_PREFIX", "data"),
    ("EXPORT_BUCKET", "exp-bucket"),
    ("STATE_TABLE", "state"),
];

#[test]
fn config_from_env_and_errors_name_the_variable() {
    let c = FunctionConfig::from_lookup(env(BASE)).unwrap();
    assert_eq!(c.export.source.prefix, "data/");
    assert_eq!(c.export.dest.prefix, "");
    assert_eq!(c.deadline_margin, DEFAULT_DEADLINE_MARGIN);
    let mut bad = BASE.to_vec();
    bad.push(("VOLUME_SIZE", "lots"));
    let e = FunctionConfig::from_lookup(env(&bad))
        .unwrap_err()
        .to_string();
    assert!(e.contains("VOLUME_SIZE"), "{e}");
    let e = FunctionConfig::from_lookup(env(&BASE[1..]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("FERRY_JOB"), "{e}");
    let mut shard = BASE.to_vec();
    shard.push(("FERRY_STEPS", "shard"));
    assert_eq!(
        FunctionConfig::from_lookup(env(&shard)).unwrap().steps,
        vec!["shard"]
    );
    let mut bad = BASE.to_vec();
    bad.push(("FERRY_STEPS", "shard,ship"));
    let e = FunctionConfig::from_lookup(env(&bad))
        .unwrap_err()
        .to_string();
    assert!(e.contains("FERRY_STEPS") && e.contains("ship"), "{e}");
    let mut bad = BASE.to_vec();
    bad.push(("CONCURRENCY", "-1"));
    assert!(
        FunctionConfig::from_lookup(env(&bad))
            .unwrap_err()
            .to_string()
            .contains("CONCURRENCY")
    );
}

#[test]
fn the_function_sets_what_the_cli_sets() {
    let c = FunctionConfig::from_lookup(env(BASE)).unwrap();
    assert!(c.export.moves);
    assert!(!c.export.scan_metadata);
    assert_eq!(c.export.tuning.compression, config::Compression::Stored);
    let mut all = BASE.to_vec();
    all.extend([
        ("MIN_SIZE", "1KiB"),
        ("MAX_SIZE", "2GiB"),
        ("MOVES", "false"),
        ("SCAN_METADATA", "true"),
        ("COMPRESSION", "deflate"),
    ]);
    let c = FunctionConfig::from_lookup(env(&all)).unwrap();
    assert!(!c.export.moves);
    assert!(c.export.scan_metadata);
    let mut inline = BASE.to_vec();
    inline.push(("POLICY", "deny_keys = [\"**/*.exe\"]"));
    let p = FunctionConfig::from_lookup(env(&inline)).unwrap();
    assert!(matches!(
        p.policy,
        Some(crate::lambda::policy::PolicySpec::Inline(_))
    ));
    let mut s3 = BASE.to_vec();
    s3.push(("POLICY", "s3://policies/export.toml"));
    let p = FunctionConfig::from_lookup(env(&s3)).unwrap();
    assert!(
        matches!(&p.policy, Some(crate::lambda::policy::PolicySpec::S3 { bucket, key }) if bucket == "policies" && key == "export.toml")
    );
    assert_eq!(c.export.tuning.compression, config::Compression::Deflate);
    assert_eq!(
        (c.export.filters.min_size, c.export.filters.max_size),
        (Some(1024), Some(2 << 30))
    );
    for (k, v) in [
        ("MOVES", "maybe"),
        ("SCAN_METADATA", "yes"),
        ("POLICY", "max_sise = 1"),
        ("POLICY", "s3://bucket-only"),
        ("COMPRESSION", "zstd"),
        ("MIN_SIZE", "big"),
    ] {
        let mut bad = BASE.to_vec();
        bad.push((k, v));
        let e = FunctionConfig::from_lookup(env(&bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains(k), "{k}: {e}");
    }
}

#[test]
fn events_of_every_kind_are_accepted_and_unknown_fields_refused() {
    assert_eq!(
        parse_event(json!({"trigger": "schedule"}))
            .unwrap()
            .trigger
            .as_deref(),
        Some("schedule")
    );
    let envelope = json!({"version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "1", "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [], "detail": {}});
    assert_eq!(parse_event(envelope).unwrap(), Invocation::default());
    assert!(parse_event(json!({"full": true})).unwrap().full);
    assert!(parse_event(json!({"dry_run": true})).unwrap().dry_run);
    let c = parse_event(json!({"continuation": {"sequence": 3, "hop": 2}})).unwrap();
    assert_eq!(
        c.continuation,
        Some(Continuation {
            sequence: 3,
            hop: 2
        })
    );
    let e = parse_event(json!({"ful": true})).unwrap_err().to_string();
    assert!(e.contains("ful"), "{e}");
}

#[test]
fn state_machine_steps_are_parsed_and_checked() {
    let e = parse_any(json!({"step": "plan", "execution": "x1", "input": {"full": true}})).unwrap();
    assert_eq!(
        e,
        Event::Step(StepEvent::Plan {
            execution: "x1".into(),
            input: json!({"full": true})
        })
    );
    let e =
        parse_any(json!({"step": "shard", "execution": "x1", "sequence": 3, "shard": 7})).unwrap();
    assert_eq!(
        e,
        Event::Step(StepEvent::Shard {
            execution: "x1".into(),
            sequence: 3,
            shard: 7
        })
    );
    let e = parse_any(json!({"step": "shard", "execution": "x1", "sequence": 3}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shard"), "{e}");
    let e = parse_any(json!({"step": "ship", "execution": "x1"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ship"), "{e}");
    let e = parse_any(json!({"step": "commit", "execution": "x1", "sequence": 1, "extra": 1}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("extra"), "{e}");
    assert_eq!(
        parse_any(json!({"trigger": "schedule"})).unwrap(),
        Event::Direct(Invocation {
            trigger: Some("schedule".into()),
            ..Invocation::default()
        })
    );
}

#[test]
fn past_deadlines_are_ignored_and_budgets_apply() {
    let past = UNIX_EPOCH + Duration::from_millis(600_000);
    assert!(working_deadline(Some(past), Duration::from_secs(60), None).is_none());
    let soon = working_deadline(Some(past), Duration::from_secs(60), Some(Duration::ZERO)).unwrap();
    assert!(soon <= Instant::now());
    let future = SystemTime::now() + Duration::from_secs(900);
    let d = working_deadline(Some(future), Duration::from_secs(60), None).unwrap();
    let left = d - Instant::now();
    assert!(left > Duration::from_secs(830) && left <= Duration::from_secs(840));
}
