//! Approvals on the fast tier (in-memory stores, the library's import run): a bundle short of
//! its required approvals is refused before anything is written, the import state remembers the
//! requirement, and `--force` with a reason replaces it; the approval files come from
//! `approval::approve` on the bundle's folder, as `ferry approve` writes them.

use std::path::Path;

use s3_ferry::approval::Requirement;
use s3_ferry::format::sign::{FileSigner, TrustedKey};

use crate::util::block_on;
use crate::world::World;

/// A reviewer: the signer and its public key.
fn reviewer(dir: &Path, name: &str) -> (FileSigner, TrustedKey) {
    let (private, public) = s3_ferry::format::sign::generate().unwrap();
    let path = dir.join(name);
    std::fs::write(&path, private).unwrap();
    (
        FileSigner::open(&path).unwrap(),
        TrustedKey::from_pem(&public, name).unwrap(),
    )
}

fn approve(bundle: &Path, by: &FileSigner) {
    let source = bundle.to_str().unwrap();
    block_on(s3_ferry::approval::approve(None, source, by, "fast")).unwrap();
}

#[test]
fn an_import_short_of_its_approvals_writes_nothing_and_its_state_remembers_the_rule() {
    // GIVEN two bundles and two listed reviewers
    let w = World::new("approvals");
    w.put("a.txt", "one");
    w.export();
    w.put("b.txt", "two");
    w.export();
    let (b1, b2) = (w.download(&w.job, 1), w.download(&w.job, 2));
    let keys = tempfile::tempdir().unwrap();
    let (alice, alice_pub) = reviewer(keys.path(), "alice");
    let (bob, bob_pub) = reviewer(keys.path(), "bob");
    let both = Requirement::new(2, vec![alice_pub.clone(), bob_pub.clone()]).unwrap();
    let dest = w.bucket("approved-dest");
    let target = || w.bucket_target(&w.clients.s3, &format!("s3://{dest}/"));
    let state = tempfile::tempdir().unwrap();
    let state = state.path().join("state.json");
    let import = |b: &Path, tune: &dyn Fn(&mut s3_ferry::import::ImportConfig)| {
        w.import_with(&[b], target(), &state, |c| tune(c))
    };

    // WHEN bundle 1 carries alice's approval alone
    approve(b1.dir.path(), &alice);
    let err = import(b1.dir.path(), &|c| c.approvals = Some(both.clone())).unwrap_err();
    // THEN it is refused (exit 5's error), naming who approved and how many are missing
    assert!(matches!(err, s3_ferry::Error::Unapproved { .. }), "{err}");
    assert!(err.to_string().contains("1 missing"), "{err}");
    assert!(
        err.to_string().contains(&alice_pub.fingerprint[..12]),
        "{err}"
    );
    // AND nothing was written
    assert!(w.keys(&dest, "").is_empty());

    // WHEN bob approves too THEN it applies
    approve(b1.dir.path(), &bob);
    let r = import(b1.dir.path(), &|c| c.approvals = Some(both.clone())).unwrap();
    assert_eq!(r["bundles"][0]["status"], "applied");
    assert_eq!(r["approvals_required"]["required"], 2);
    assert_eq!(w.get(&dest, "a.txt").unwrap(), b"one");

    // WHEN bundle 2, approved by bob alone, is imported without any requirement given
    approve(b2.dir.path(), &bob);
    let err = import(b2.dir.path(), &|_| {}).unwrap_err();
    // THEN the state's remembered requirement refuses it, and nothing of it is written
    assert!(err.to_string().contains("1 missing"), "{err}");
    assert!(w.get(&dest, "b.txt").is_none());
    // AND --force without a reason does not lower it
    let one = Requirement::new(1, vec![bob_pub.clone()]).unwrap();
    let err = import(b2.dir.path(), &|c| {
        c.force = true;
        c.approvals = Some(one.clone());
    })
    .unwrap_err();
    assert!(err.to_string().contains("1 missing"), "{err}");
    // AND --force with a reason and a new requirement replaces it
    let r = import(b2.dir.path(), &|c| {
        c.force = true;
        c.force_reason = Some("alice away".into());
        c.approvals = Some(one.clone());
    })
    .unwrap();
    assert_eq!(r["bundles"][0]["status"], "applied");
    assert_eq!(r["approvals_required"]["required"], 1);
    assert_eq!(w.get(&dest, "b.txt").unwrap(), b"two");
}
