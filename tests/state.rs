//! One conformance suite for every state store: the same bodies against the in-memory table
//! and against DynamoDB as moto serves it. What the export and the import ledger rely on: a
//! lease that one owner holds at a time, with an epoch that grows on every take; renewals and
//! commits only by the holder, at the version read; a commit whose answer was lost recognised
//! as applied; volume counters; documents fenced by the writer's epoch; a missing table named.

use std::sync::Arc;
use std::time::Duration;

use s3_ferry::Error;
use s3_ferry::state::{Commit, CommittedBundle, StateTable};
use s3_ferry::store::{DynamoState, MemoryState};

use crate::util::{block_on, moto, sdk_config, unique};

fn memory() -> StateTable {
    let table = StateTable::new(Arc::new(MemoryState::new(&unique("mem-state"))));
    block_on(table.init()).unwrap();
    table
}

fn dynamo_named(name: &str) -> StateTable {
    let sdk = sdk_config(&moto().endpoint);
    let client = s3_ferry::store::dynamo::client(&sdk);
    StateTable::new(Arc::new(DynamoState::new(
        client,
        name,
        moto().endpoint.clone().into(),
    )))
}

fn dynamo() -> StateTable {
    let table = dynamo_named(&unique("state"));
    assert!(block_on(table.init()).unwrap(), "a new table is created");
    table
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn memory() {
                super::$name(super::memory());
            }
            #[test]
            fn dynamodb_on_moto() {
                super::$name(super::dynamo());
            }
        }
    )*};
}

conformance!(
    one_owner_holds_the_lease_and_its_epoch_grows,
    an_expired_lease_is_taken_over,
    commits_apply_only_for_the_holder_at_the_version_read,
    a_commit_whose_answer_was_lost_is_recognised,
    volume_counters_count_from_their_base_and_reset,
    documents_are_fenced_by_the_writers_epoch,
    volume_claims_at_once_are_distinct,
);

const HOUR: Duration = Duration::from_secs(3600);

fn commit(watermark: &str, sequence: u64) -> Commit {
    Commit {
        bundle: Some(CommittedBundle {
            sequence,
            inventory: format!("inventory-{sequence}.jsonl.gz"),
            bundle_digest: format!("digest-{sequence}"),
        }),
        watermark: watermark.to_string(),
        last_run: serde_json::json!({"objects": 3}),
        pin: None,
    }
}

fn one_owner_holds_the_lease_and_its_epoch_grows(t: StateTable) {
    block_on(async {
        assert!(!t.init().await.unwrap(), "init again keeps the table");
        assert!(t.load("job").await.unwrap().is_none());
        let a = t.acquire("job", "run-a", HOUR).await.unwrap();
        assert_eq!((a.lease_epoch, a.sequence, a.version), (1, 0, 0));
        assert_eq!(a.lease_owner.as_deref(), Some("run-a"));
        match t.acquire("job", "run-b", HOUR).await {
            Err(Error::LeaseHeld { owner, .. }) => assert_eq!(owner, "run-a"),
            other => panic!("run-b took a held lease: {other:?}"),
        }
        // The holder asking again (a retry whose first answer was lost) gets it.
        assert_eq!(
            t.acquire("job", "run-a", HOUR).await.unwrap().lease_epoch,
            2
        );
        assert!(matches!(
            t.renew("job", "run-b", HOUR).await,
            Err(Error::LeaseLost { .. })
        ));
        t.renew("job", "run-a", HOUR).await.unwrap();
        // Another's release changes nothing.
        t.release("job", "run-b").await.unwrap();
        assert_eq!(
            t.load("job").await.unwrap().unwrap().lease_owner.as_deref(),
            Some("run-a")
        );
        t.release("job", "run-a").await.unwrap();
        let s = t.load("job").await.unwrap().unwrap();
        assert_eq!((s.lease_owner, s.lease_until_ms), (None, None));
        let b = t.acquire("job", "run-b", HOUR).await.unwrap();
        assert_eq!(b.lease_epoch, 3, "the epoch only grows");
        assert!(matches!(
            t.renew("job", "run-a", HOUR).await,
            Err(Error::LeaseLost { .. })
        ));
        // Another job's lease is its own.
        assert_eq!(
            t.acquire("other", "run-a", HOUR).await.unwrap().lease_epoch,
            1
        );
    })
}

fn an_expired_lease_is_taken_over(t: StateTable) {
    block_on(async {
        t.acquire("job", "run-a", Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let b = t.acquire("job", "run-b", HOUR).await.unwrap();
        assert_eq!(
            (b.lease_owner.as_deref(), b.lease_epoch),
            (Some("run-b"), 2)
        );
        assert!(matches!(
            t.renew("job", "run-a", HOUR).await,
            Err(Error::LeaseLost { .. })
        ));
        // The run that lost it cannot commit.
        let lost = t.commit("job", "run-a", 0, &commit("w1", 1)).await;
        assert!(matches!(lost, Err(Error::StateConflict { .. })), "{lost:?}");
        assert_eq!(t.load("job").await.unwrap().unwrap().version, 0);
    })
}

fn commits_apply_only_for_the_holder_at_the_version_read(t: StateTable) {
    block_on(async {
        let s = t.acquire("job", "run-a", HOUR).await.unwrap();
        t.commit("job", "run-a", s.version, &commit("w1", 1))
            .await
            .unwrap();
        let s = t.load("job").await.unwrap().unwrap();
        assert_eq!((s.version, s.sequence), (1, 1));
        assert_eq!(s.watermark.as_deref(), Some("w1"));
        assert_eq!(s.inventory.as_deref(), Some("inventory-1.jsonl.gz"));
        assert_eq!(s.bundle_digest.as_deref(), Some("digest-1"));
        assert_eq!(s.last_run, Some(serde_json::json!({"objects": 3})));
        assert_eq!(s.lease_owner, None, "a commit releases the lease");
        // Without the lease: refused.
        let refused = t.commit("job", "run-a", 1, &commit("w2", 2)).await;
        assert!(
            matches!(refused, Err(Error::StateConflict { .. })),
            "{refused:?}"
        );
        // With the lease but at a stale version: refused.
        t.acquire("job", "run-b", HOUR).await.unwrap();
        let stale = t.commit("job", "run-b", 0, &commit("w2", 2)).await;
        assert!(
            matches!(stale, Err(Error::StateConflict { .. })),
            "{stale:?}"
        );
        // A commit without a bundle keeps the bundle fields.
        let quiet = Commit {
            bundle: None,
            ..commit("w3", 0)
        };
        t.commit("job", "run-b", 1, &quiet).await.unwrap();
        let s = t.load("job").await.unwrap().unwrap();
        assert_eq!((s.version, s.sequence), (2, 1));
        assert_eq!(s.watermark.as_deref(), Some("w3"));
        assert_eq!(s.bundle_digest.as_deref(), Some("digest-1"));
        assert_eq!(s.lease_epoch, 2);
    })
}

fn a_commit_whose_answer_was_lost_is_recognised(t: StateTable) {
    block_on(async {
        t.acquire("job", "run-a", HOUR).await.unwrap();
        t.commit("job", "run-a", 0, &commit("w1", 1)).await.unwrap();
        // The retry of the same commit fails its condition, yet the state is that commit.
        t.commit("job", "run-a", 0, &commit("w1", 1)).await.unwrap();
        // Another commit at that version is a conflict.
        let other = t.commit("job", "run-a", 0, &commit("w9", 1)).await;
        assert!(
            matches!(other, Err(Error::StateConflict { .. })),
            "{other:?}"
        );
        assert_eq!(t.load("job").await.unwrap().unwrap().version, 1);
    })
}

fn volume_counters_count_from_their_base_and_reset(t: StateTable) {
    block_on(async {
        // One after another here; claims at once: volume_claims_at_once_are_distinct.
        for want in 1..=3 {
            assert_eq!(t.claim_volume("job", 4, 0).await.unwrap(), want);
        }
        assert_eq!(
            t.claim_volume("job", 5, 6).await.unwrap(),
            7,
            "from its base"
        );
        assert_eq!(
            t.claim_volume("job", 4, 0).await.unwrap(),
            4,
            "each bundle its own"
        );
        t.reset_volumes("job", 4).await.unwrap();
        assert_eq!(t.claim_volume("job", 4, 0).await.unwrap(), 1);
        t.reset_volumes("job", 9).await.unwrap();
        // The job's own item is untouched by its counters.
        assert!(t.load("job").await.unwrap().is_none());
    })
}

fn documents_are_fenced_by_the_writers_epoch(t: StateTable) {
    block_on(async {
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let doc = |k: &str, d: &str| (k.to_string(), Some(d.to_string()));
        t.write_docs(
            "ledger",
            2,
            vec![
                doc("k/a", "{\"a\":1}"),
                doc("k/b", "{\"b\":1}"),
                doc("k/a", "{\"a\":2}"),
            ],
        )
        .await
        .unwrap();
        let got = t.get_docs(&keys(&["k/a", "k/b", "k/none"])).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got["k/a"], "{\"a\":2}",
            "a key given twice keeps its last value"
        );
        // An older holder (epoch 1) cannot overwrite or remove what epoch 2 wrote.
        let stale = t
            .write_docs("ledger", 1, vec![doc("k/a", "{\"stale\":1}")])
            .await;
        assert!(
            matches!(stale, Err(Error::LeaseLost { ref job }) if job == "ledger"),
            "{stale:?}"
        );
        let stale = t
            .write_docs("ledger", 1, vec![("k/b".to_string(), None)])
            .await;
        assert!(matches!(stale, Err(Error::LeaseLost { .. })), "{stale:?}");
        assert_eq!(
            t.get_docs(&keys(&["k/a"])).await.unwrap()["k/a"],
            "{\"a\":2}"
        );
        // A later holder can.
        t.write_docs(
            "ledger",
            3,
            vec![("k/b".to_string(), None), doc("k/c", "{}")],
        )
        .await
        .unwrap();
        let got = t.get_docs(&keys(&["k/a", "k/b", "k/c"])).await.unwrap();
        let mut names: Vec<_> = got.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["k/a", "k/c"]);
        // save_doc needs the item's lease.
        assert!(matches!(
            t.save_doc("ledger", "run-a", "{}").await,
            Err(Error::LeaseLost { .. })
        ));
        t.acquire("ledger", "run-a", HOUR).await.unwrap();
        t.save_doc("ledger", "run-a", "{\"saved\":1}")
            .await
            .unwrap();
        let got = t.get_docs(&keys(&["ledger"])).await.unwrap();
        assert_eq!(got["ledger"], "{\"saved\":1}");
        // Many keys at once (more than one batch of 100).
        let many: Vec<_> = (0..250).map(|i| doc(&format!("m/{i:03}"), "1")).collect();
        t.write_docs("ledger", 3, many).await.unwrap();
        let wanted: Vec<String> = (0..250).map(|i| format!("m/{i:03}")).collect();
        assert_eq!(t.get_docs(&wanted).await.unwrap().len(), 250);
    })
}

#[test]
fn a_missing_table_is_named_memory() {
    let t = StateTable::new(Arc::new(MemoryState::new("never-made")));
    match block_on(t.load("job")) {
        Err(Error::TableNotFound { table }) => assert_eq!(table, "never-made"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_table_is_named_dynamodb_on_moto() {
    let name = unique("never-made");
    match block_on(dynamo_named(&name).load("job")) {
        Err(Error::TableNotFound { table }) => assert_eq!(table, name),
        other => panic!("{other:?}"),
    }
}

/// Shards of one run claim volume numbers at the same moment; each must get its own. On moto
/// this holds because scripts/moto-guard.py serves DynamoDB one request at a time (moto itself
/// applies concurrent UpdateItems to one item without isolation, real DynamoDB atomically).
fn volume_claims_at_once_are_distinct(t: StateTable) {
    let claims = block_on(futures::future::join_all(
        (0..16).map(|_| t.claim_volume("job", 1, 0)),
    ));
    let mut claims: Vec<u32> = claims.into_iter().map(Result::unwrap).collect();
    claims.sort();
    assert_eq!(claims, (1..=16).collect::<Vec<u32>>());
}
