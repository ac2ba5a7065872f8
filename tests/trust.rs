//! Signed bundles across the boundary: a bundle signed on export (a key file or a KMS key)
//! verifies and imports with `--trust`; a signature copied onto other content, altered sums, a
//! missing signature, a stranger's key or a swapped volume are refused (exit 5) before anything
//! is written; once a target applied a signed bundle it refuses unsigned ones.

use std::path::{Path, PathBuf};

use crate::util::{Ctx, Run};

/// `ferry keygen` into `dir`: (private key, public key).
fn keygen(ctx: &Ctx, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(name);
    let run = ctx.ferry(&["keygen", "--out", private.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let public = dir.join(format!("{name}.pub"));
    assert!(
        std::fs::read_to_string(&public)
            .unwrap()
            .contains("BEGIN PUBLIC KEY")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the private key is readable by others: {mode:o}"
        );
    }
    (private, public)
}

/// `ferry download` of every bundle of the job into `to`; the folder of bundle `seq`.
fn download(ctx: &Ctx, to: &Path, seq: u64) -> PathBuf {
    let run = ctx.ferry_download(to, &["--sequence", &seq.to_string()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    to.join(&ctx.job).join(format!("{seq:08}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn import_dir(ctx: &Ctx, bundle: &Path, to: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["import", s(bundle), "--to-dir", s(to)];
    args.extend_from_slice(extra);
    ctx.ferry(&args)
}

#[test]
fn signed_bundles_verify_and_import_and_forgeries_are_refused() {
    // GIVEN a key pair and two signed bundles
    let ctx = Ctx::new("signed");
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = keygen(&ctx, keys.path(), "ferry-key");
    let signing = format!("file:{}", private.display());
    ctx.put("a.txt", "aaaa-first-object");
    ctx.put("b.txt", "bbbb-second-object");
    let r = ctx.export_ok(&["--signing-key", &signing]);
    assert_eq!(r["status"], "complete");
    ctx.put("c.txt", "cccc-third-object");
    ctx.export_ok(&["--signing-key", &signing]);
    let media = tempfile::tempdir().unwrap();
    let b1 = download(&ctx, media.path(), 1);
    let b2 = download(&ctx, media.path(), 2);
    assert!(
        b1.join("SHA256SUMS.sig").is_file(),
        "download carries the signature"
    );

    // WHEN verified with --trust THEN OK, naming the key
    let run = ctx.ferry(&["verify", s(&b1), s(&b2), "--trust", s(&public), "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fingerprint = run.json()["bundles"][0]["signed_by"].clone();
    assert!(
        fingerprint.as_str().is_some_and(|f| f.len() == 64),
        "{}",
        run.stdout
    );

    // AND a signature copied from bundle 2 onto bundle 1 is refused
    let forged = tempfile::tempdir().unwrap();
    copy_dir(&b1, forged.path());
    std::fs::copy(
        b2.join("SHA256SUMS.sig"),
        forged.path().join("SHA256SUMS.sig"),
    )
    .unwrap();
    let run = ctx.ferry(&["verify", s(forged.path()), "--trust", s(&public)]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("SHA256SUMS has"), "{}", run.stderr);
    // AND so is one whose digest field was rewritten to match: the signature itself fails
    let sig_path = forged.path().join("SHA256SUMS.sig");
    let mut sig: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sig_path).unwrap()).unwrap();
    use sha2::Digest;
    let sums1 = std::fs::read(b1.join("SHA256SUMS")).unwrap();
    sig["bundle_digest"] = hex::encode(sha2::Sha256::digest(&sums1)).into();
    std::fs::write(&sig_path, serde_json::to_vec(&sig).unwrap()).unwrap();
    let run = ctx.ferry(&["verify", s(forged.path()), "--trust", s(&public)]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr.contains("does not match SHA256SUMS"),
        "{}",
        run.stderr
    );

    // AND altered sums are refused (the signature is over the digest of the genuine ones)
    let altered_sums = tempfile::tempdir().unwrap();
    copy_dir(&b1, altered_sums.path());
    let sums_path = altered_sums.path().join("SHA256SUMS");
    let mut sums = std::fs::read(&sums_path).unwrap();
    sums[0] = if sums[0] == b'0' { b'1' } else { b'0' };
    std::fs::write(&sums_path, sums).unwrap();
    let run = ctx.ferry(&["verify", s(altered_sums.path()), "--trust", s(&public)]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("SHA256SUMS has"), "{}", run.stderr);

    // AND a bundle without its signature is refused when trust is asked for
    let unsigned = tempfile::tempdir().unwrap();
    copy_dir(&b1, unsigned.path());
    std::fs::remove_file(unsigned.path().join("SHA256SUMS.sig")).unwrap();
    let run = ctx.ferry(&["verify", s(unsigned.path()), "--trust", s(&public)]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr.contains("carries no signature"),
        "{}",
        run.stderr
    );

    // AND a stranger's key does not vouch for it
    let (_, stranger) = keygen(&ctx, keys.path(), "stranger");
    let run = ctx.ferry(&["verify", s(&b1), "--trust", s(&stranger)]);
    assert_eq!(run.code, 5, "{}", run.stderr);

    // AND an import with --trust applies both bundles
    let mirror = tempfile::tempdir().unwrap();
    for b in [&b1, &b2] {
        let run = import_dir(&ctx, b, mirror.path(), &["--trust", s(&public)]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    assert_eq!(
        std::fs::read(mirror.path().join("c.txt")).unwrap(),
        b"cccc-third-object"
    );

    // AND a volume altered after signing is refused before any of its entries is written
    let altered = tempfile::tempdir().unwrap();
    copy_dir(&b1, altered.path());
    let vol = std::fs::read_dir(altered.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "zip"))
        .unwrap();
    let mut bytes = std::fs::read(&vol).unwrap();
    let at = find(&bytes, b"bbbb-second").expect("b.txt's bytes in the volume");
    bytes[at] = b'X';
    std::fs::write(&vol, bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let run = import_dir(&ctx, altered.path(), fresh.path(), &["--trust", s(&public)]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        !fresh.path().join("a.txt").exists(),
        "an entry of the altered volume was written"
    );
}

#[test]
fn a_target_that_applied_a_signed_bundle_refuses_unsigned_ones() {
    // GIVEN a signed bundle 1 applied with --trust, then an unsigned bundle 2
    let ctx = Ctx::new("signedonce");
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = keygen(&ctx, keys.path(), "k");
    ctx.put("a.txt", "a");
    ctx.export_ok(&["--signing-key", &format!("file:{}", private.display())]);
    ctx.put("b.txt", "b");
    ctx.export_ok(&[]);
    let media = tempfile::tempdir().unwrap();
    let b1 = download(&ctx, media.path(), 1);
    let b2 = download(&ctx, media.path(), 2);
    let mirror = tempfile::tempdir().unwrap();
    let run = import_dir(&ctx, &b1, mirror.path(), &["--trust", s(&public)]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // WHEN the unsigned bundle is imported without --trust THEN it is refused
    let run = import_dir(&ctx, &b2, mirror.path(), &[]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(!mirror.path().join("b.txt").exists());

    // AND on a target that never saw a signed bundle, unsigned ones apply with a warning
    let other = tempfile::tempdir().unwrap();
    let run = import_dir(&ctx, b2.parent().unwrap(), other.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("--trust"), "{}", run.stderr);
}

#[test]
fn a_kms_key_signs_and_its_public_key_verifies_offline() {
    // GIVEN an ECC_NIST_P256 signing key in KMS (moto)
    let ctx = Ctx::new("kmssigned");
    let key_id = ctx.kms_signing_key();
    ctx.put("a.txt", "signed in kms");

    // WHEN a bundle is exported with --signing-key kms:ID
    let r = ctx.export_ok(&["--signing-key", &format!("kms:{key_id}")]);
    assert_eq!(r["status"], "complete");

    // THEN the public key from `ferry public-key` verifies it, with no AWS on the far side
    let run = ctx.ferry(&["public-key", "--signing-key", &format!("kms:{key_id}")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let keys = tempfile::tempdir().unwrap();
    let public = keys.path().join("kms.pub");
    std::fs::write(&public, &run.stdout).unwrap();
    let media = tempfile::tempdir().unwrap();
    let b1 = download(&ctx, media.path(), 1);
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"))
        .args(["verify", s(&b1), "--trust", s(&public)])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
