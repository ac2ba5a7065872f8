//! One suite for every kind of import target (a bucket on moto, a local directory): what the
//! import relies on, asserted the same way for each. Objects land whole or not at all (an
//! aborted or dropped writer leaves no object, no temporary file, no open upload); a landed
//! object is what `holds` says; a move puts the bytes at the new key; deletions tolerate missing
//! keys; `strays` names exactly what a keep-set lacks, under the names `keep_name` gives.

use std::sync::Arc;

use bytes::Bytes;
use s3_ferry::context::RunContext;
use s3_ferry::format::manifest::{ObjectEntry, ObjectHeaders};
use s3_ferry::import::ledger::IndexEntry;
use s3_ferry::import::target::{Bucket, Dir, KeepSet, STATE_DIR, Shared, Target, TargetSink};
use s3_ferry::import::verify::{EntrySink, EntryWriter};
use sha2::Digest;

use crate::util::{Ctx, block_on};

const LAST_MODIFIED: &str = "2026-11-01T00:00:00Z";

/// The bytes at a name, if any.
type Reader = dyn Fn(&str) -> Option<Vec<u8>>;

/// A target and how a user looks at what it holds.
struct Kind {
    target: Arc<dyn Target>,
    /// The bytes at a name (`keep_name` of a key), if any.
    read: Box<Reader>,
    /// Every name there, sorted (temporary files included; the import state folder not).
    names: Box<dyn Fn() -> Vec<String>>,
    /// Multipart uploads still open.
    open_uploads: Box<dyn Fn() -> usize>,
    /// The run the target's writes belong to (its dropped uploads are settled before counting).
    run: RunContext,
}

fn object(key: &str, body: &[u8]) -> ObjectEntry {
    let sha256 = hex::encode(sha2::Sha256::digest(body));
    ObjectEntry {
        key: key.to_string(),
        entry: format!("bucket/{key}"),
        size: body.len() as u64,
        etag: format!("etag-{}", &sha256[..16]),
        last_modified: LAST_MODIFIED.into(),
        crc32: crc32fast::hash(body),
        sha256,
        storage_class: "STANDARD".into(),
        headers: ObjectHeaders::default(),
        planned_etag: None,
        version_id: None,
        split: None,
        part_layout: None,
        detected_type: None,
    }
}

/// What a pass of the import landed: (key, where and what).
type Landed = Vec<(String, IndexEntry)>;

#[derive(Clone, Copy)]
enum End {
    Commit,
    Abort,
    Drop,
}

/// Write `body` to `key` through the import's sink and end the writer as `end` says; what
/// landed.
fn write(t: &Arc<dyn Target>, run: &RunContext, key: &str, body: &[u8], end: End) -> Landed {
    block_on(async {
        let shared = Shared::new(4);
        let mut sink = TargetSink {
            target: t.clone(),
            source_prefix: String::new(),
            shared: shared.clone(),
            unlock: false,
            screen: None,
            bundle: ("job".into(), 1),
        };
        let mut w = sink.open(&object(key, body)).await.unwrap().unwrap();
        for chunk in body.chunks(1 << 20) {
            w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        match end {
            End::Commit => w.commit().await.unwrap(),
            End::Abort => w.abort().await,
            End::Drop => drop(w),
        }
        let landed = shared.drain().await.unwrap();
        // a dropped upload is aborted in the background: wait for it as a process does at exit
        assert!(run.settle_uploads(std::time::Duration::from_secs(30)).await);
        landed
    })
}

fn land(t: &Arc<dyn Target>, run: &RunContext, key: &str, body: &[u8]) -> IndexEntry {
    let landed = write(t, run, key, body, End::Commit);
    assert_eq!(landed.len(), 1, "{key}");
    assert_eq!(landed[0].0, key);
    landed[0].1.clone()
}

fn suite(k: Kind) {
    let t = &k.target;
    let run = &k.run;
    let name = |rel: &str| t.keep_name(rel);
    let expect = |rels: &[&str]| {
        let mut v: Vec<String> = rels.iter().map(|r| name(r)).collect();
        v.sort();
        assert_eq!((k.names)(), v, "in {}", t.display());
    };

    // GIVEN a small object and one large enough for the streaming path of every kind
    let small = b"a small object".to_vec();
    let large: Vec<u8> = (0..9 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let e_small = land(t, run, "a/small", &small);
    let e_large = land(t, run, "b/large", &large);

    // THEN both read back byte for byte, and `holds` tells the landed entry from another
    assert_eq!((k.read)(&name("a/small")), Some(small.clone()));
    assert_eq!((k.read)(&name("b/large")), Some(large.clone()));
    expect(&["a/small", "b/large"]);
    assert!(block_on(t.holds("a/small", &e_small)).unwrap());
    assert!(block_on(t.holds("b/large", &e_large)).unwrap());
    let mut other = e_large.clone();
    other.size += 1;
    assert!(!block_on(t.holds("b/large", &other)).unwrap());

    // WHEN writers are aborted or dropped halfway, small and large
    for end in [End::Abort, End::Drop] {
        assert!(write(t, run, "c/unfinished", &large, end).is_empty());
        assert!(write(t, run, "c/unfinished-small", &small, end).is_empty());
    }
    // THEN nothing of them is there: no object, no temporary file, no open upload
    expect(&["a/small", "b/large"]);
    assert_eq!((k.open_uploads)(), 0);

    // WHEN an object moves (and the caller removes the original, as the import does)
    let place =
        block_on(t.move_object("a/small", &e_small, "m/moved", None, LAST_MODIFIED)).unwrap();
    block_on(t.delete("a/small", Some(&e_small))).unwrap();
    // THEN its bytes are at the new key only, and `holds` knows them there
    assert_eq!((k.read)(&name("m/moved")), Some(small.clone()));
    expect(&["b/large", "m/moved"]);
    let moved = IndexEntry {
        place,
        ..e_small.clone()
    };
    assert!(block_on(t.holds("m/moved", &moved)).unwrap());

    // WHEN many keys are deleted at once, one of them never there
    block_on(t.delete_many(&[("b/large", Some(&e_large)), ("never/there", None)])).unwrap();
    expect(&["m/moved"]);

    // WHEN a key that is no safe path lands, and a stray
    land(t, run, &format!("{STATE_DIR}/odd"), b"odd");
    land(t, run, "s/stray", b"stray");
    let mut keep = KeepSet::default();
    keep.insert(&name("m/moved"));
    keep.insert(&name(&format!("{STATE_DIR}/odd")));
    keep.finish();
    // THEN `strays` names exactly the stray, and removing it leaves the rest
    let strays = block_on(t.strays(&keep)).unwrap();
    assert_eq!(strays, [name("s/stray")]);
    block_on(t.remove_strays(&strays)).unwrap();
    assert!(block_on(t.strays(&keep)).unwrap().is_empty());
    // AND removing it again (a resumed removal) is no error
    block_on(t.remove_strays(&strays)).unwrap();
    // AND the key ferry would have written there is named (for the import state's index)
    assert_eq!(
        block_on(t.stray_keys(&strays)).unwrap(),
        [Some("s/stray".to_string())]
    );
    expect(&["m/moved", &format!("{STATE_DIR}/odd")]);
    block_on(t.make_durable()).unwrap();
}

#[test]
fn a_bucket_target_keeps_the_contract_of_every_target() {
    let ctx = Ctx::new("conform");
    let bucket = ctx.bucket("dst");
    let prefix = "into/";
    let target: Arc<dyn Target> = Arc::new(Bucket {
        store: ctx.clients.s3.clone(),
        dest: format!("s3://{bucket}/{prefix}").parse().unwrap(),
        part_size: 5 * 1024 * 1024,
    });
    let ctx = Arc::new(ctx);
    let (c1, c2, c3) = (ctx.clone(), ctx.clone(), ctx.clone());
    let (b1, b2, b3) = (bucket.clone(), bucket.clone(), bucket.clone());
    suite(Kind {
        target,
        read: Box::new(move |name| c1.get(&b1, &format!("{prefix}{name}"))),
        names: Box::new(move || {
            let mut v: Vec<String> = c2
                .keys(&b2, prefix)
                .into_iter()
                .map(|k| k[prefix.len()..].to_string())
                .collect();
            v.sort();
            v
        }),
        open_uploads: Box::new(move || c3.open_uploads_in(&b3)),
        run: ctx.clients.s3.run().clone(),
    });
}

#[test]
fn a_directory_target_keeps_the_contract_of_every_target() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    // the import's own folder is never the target's content
    std::fs::create_dir(root.join(STATE_DIR)).unwrap();
    std::fs::write(root.join(STATE_DIR).join("state.json"), "{}").unwrap();
    let target: Arc<dyn Target> = Arc::new(Dir { root: root.clone() });
    let (r1, r2) = (root.clone(), root.clone());
    suite(Kind {
        target,
        read: Box::new(move |name| std::fs::read(r1.join(name)).ok()),
        names: Box::new(move || {
            let mut out = Vec::new();
            let mut stack = vec![r2.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p == r2.join(STATE_DIR) {
                        continue;
                    }
                    if p.is_dir() {
                        stack.push(p);
                    } else {
                        out.push(p.strip_prefix(&r2).unwrap().to_string_lossy().into_owned());
                    }
                }
            }
            out.sort();
            out
        }),
        open_uploads: Box::new(|| 0),
        run: RunContext::new(),
    });
}
