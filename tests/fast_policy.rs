//! The content policy on the fast tier (in-memory stores): what an export withholds, rule by
//! rule, that nothing else is withheld, that no withheld key reaches the bundle, and that later
//! runs report it again without shipping until the policy or the object changes.

use std::collections::BTreeMap;

use s3_ferry::format::manifest::ObjectHeaders;
use s3_ferry::store::{ObjectStore, PutMode};

use crate::util::block_on;
use crate::world::World;

const MIB: usize = 1024 * 1024;

const POLICY: &str = r#"
max_size = "10MiB"
allow_prefixes = ["data/"]
allow_types = ["text/plain", "application/pdf", "image/*"]
deny_types = ["application/x-executable"]
deny_keys = ["**/*.exe"]
deny_keywords = ["TOP SECRET", "NOFORN"]
type_mismatch = "withhold"
"#;

/// An ELF header (infer needs more than 52 bytes).
fn elf() -> Vec<u8> {
    let mut b = b"\x7fELF\x02\x01\x01".to_vec();
    b.resize(128, 0);
    b
}

/// Text of `len` bytes, `tail` at its very end.
fn text(len: usize, tail: &str) -> Vec<u8> {
    let mut b = b"plain words of a report\n".repeat(len / 24 + 1);
    b.truncate(len - tail.len());
    b.extend_from_slice(tail.as_bytes());
    b
}

fn policy(text: &str) -> std::sync::Arc<s3_ferry::policy::Policy> {
    std::sync::Arc::new(s3_ferry::policy::Policy::parse(text, "policy.toml").unwrap())
}

fn withheld(r: &serde_json::Value) -> BTreeMap<String, String> {
    r["withheld_objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap().to_string(),
                o["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_policy_withholds_each_rule_and_nothing_else_and_reports_it_every_run() {
    // GIVEN a source with one object breaking each rule, and objects that break none
    let w = World::new("policy");
    let put = |key: &str, body: Vec<u8>, h: ObjectHeaders| {
        block_on(
            w.objects
                .put(&w.src, key, body.into(), &h, PutMode::Overwrite),
        )
        .unwrap();
    };
    let plain = ObjectHeaders::default;
    put("data/report.pdf", elf(), plain()); // a .pdf that is an ELF
    put("data/tool.exe", b"MZ not really".to_vec(), plain());
    put("data/secret.txt", text(200, "this is Top Secret"), plain());
    put(
        "data/tagged.txt",
        text(100, ""),
        ObjectHeaders {
            metadata: [("marking".to_string(), "noforn".to_string())].into(),
            ..Default::default()
        },
    );
    put("data/huge.txt", text(11 * MIB, ""), plain());
    put("other/outside.txt", text(50, ""), plain());
    // a large text object (read in ranges) with its keyword in its last bytes
    put("data/long.txt", text(9 * MIB, "NOFORN"), plain());
    // and what breaks no rule: text, a PDF, a PNG, a large clean text
    put("data/ok.txt", text(300, ""), plain());
    put(
        "data/doc.pdf",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n".to_vec(),
        plain(),
    );
    put(
        "data/photo.png",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
        plain(),
    );
    put("data/clean-long.txt", text(9 * MIB, "the end"), plain());

    // WHEN it is exported under the policy
    let p = policy(POLICY);
    let r = w.export_with(|c| c.policy = Some(p.clone()));

    // THEN each rule withheld its object, naming the rule, and everything else shipped
    let got = withheld(&r);
    let want = [
        ("data/huge.txt", "max_size"),
        ("data/long.txt", "keyword `NOFORN` in the content"),
        ("data/report.pdf", "type application/x-executable"),
        ("data/secret.txt", "keyword `TOP SECRET` in the content"),
        ("data/tagged.txt", "keyword `NOFORN` in metadata `marking`"),
        ("data/tool.exe", "deny_keys"),
        ("other/outside.txt", "allow_prefixes"),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (key, rule) in want {
        assert!(got[key].contains(rule), "{key}: {}", got[key]);
    }
    assert_eq!(r["withheld"], want.len(), "{r}");
    let b = w.download(&w.job, 1);
    let shipped: Vec<String> = b.objects().into_iter().map(|o| o.key).collect();
    assert_eq!(
        shipped,
        [
            "data/clean-long.txt",
            "data/doc.pdf",
            "data/ok.txt",
            "data/photo.png"
        ]
    );
    // AND the bundle names the policy's digest and none of the withheld keys
    for m in &b.manifests {
        assert_eq!(m.policy_digest.as_deref(), Some(p.digest.as_str()));
    }
    let on_media: String = b
        .volume_paths()
        .iter()
        .map(|v| String::from_utf8_lossy(&std::fs::read(v).unwrap()).into_owned())
        .collect();
    for (key, _) in want {
        assert!(!on_media.contains(key), "{key} is on the media");
    }

    // WHEN the next run finds nothing changed
    let r = w.export_with(|c| c.policy = Some(p.clone()));
    // THEN it reports the same objects again and ships nothing
    assert_eq!(r["status"], "no_changes", "{r}");
    assert_eq!(withheld(&r), got);

    // WHEN one object changes and the policy is relaxed for another
    put("data/secret.txt", text(200, "now public"), plain());
    let relaxed = policy(&POLICY.replace("\"NOFORN\"", "\"NOTHING\""));
    let r = w.export_with(|c| c.policy = Some(relaxed.clone()));
    // THEN both ship, and the rest is still withheld
    let b = w.download(&w.job, 2);
    let shipped: Vec<String> = b.objects().into_iter().map(|o| o.key).collect();
    assert_eq!(
        shipped,
        ["data/long.txt", "data/secret.txt", "data/tagged.txt"],
        "{r}"
    );
    let still: Vec<String> = withheld(&r).into_keys().collect();
    assert_eq!(
        still,
        [
            "data/huge.txt",
            "data/report.pdf",
            "data/tool.exe",
            "other/outside.txt"
        ]
    );
}

#[test]
fn a_policy_file_that_does_not_parse_is_refused_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "max_size = \"1GiB\"\ndeny_keywords = \"one\"\n").unwrap();
    let e = s3_ferry::policy::Policy::from_file(&file)
        .unwrap_err()
        .to_string();
    assert!(e.contains("p.toml") && e.contains("line 2"), "{e}");
}
