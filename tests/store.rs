//! One conformance suite for every object store: the same test bodies run against the
//! in-memory store and against S3 as moto serves it (the pattern of `object_store`'s
//! `integration.rs`). What the engine relies on: bytes and headers round-trip, ranged reads,
//! If-Match after a concurrent write, create-only with several writers at once, listings in
//! pages with start-after and ranges, multipart uploads that complete whole or leave nothing
//! (no object, no open upload), copies, batch deletes, a missing bucket named, fences.

use std::sync::Arc;

use bytes::Bytes;
use s3_ferry::Error;
use s3_ferry::format::layout::PartLayout;
use s3_ferry::format::manifest::ObjectHeaders;
use s3_ferry::store::{Fence, Got, MemoryStore, ObjectStore, PutMode, Store, multipart_etag};
use tokio::io::AsyncWriteExt;

use crate::util::{block_on, moto, pseudo_random, sdk_config, unique};

/// A store and a fresh bucket in it.
struct Fixture {
    store: Store,
    bucket: String,
    /// Make `n` objects `d{i%100}/o{i:06}` (body `i`) quickly.
    seed: Box<dyn Fn(u64)>,
}

fn memory() -> Fixture {
    let mem = Arc::new(MemoryStore::new());
    let bucket = unique("mem");
    mem.create_bucket(&bucket);
    let (m, b) = (mem.clone(), bucket.clone());
    let seed = Box::new(move |n: u64| put_numbered(&*m, &b, n));
    Fixture {
        store: Store::new(mem),
        bucket,
        seed,
    }
}

/// S3 as moto serves it; with `FERRY_CONFORMANCE_ENDPOINT`, as the server there does (access
/// key `test`, secret `test`): the benchmark's server is checked so (scripts/s3mem/README.md).
fn s3() -> Fixture {
    let other = std::env::var("FERRY_CONFORMANCE_ENDPOINT").ok();
    let sdk = sdk_config(other.as_deref().unwrap_or_else(|| &moto().endpoint));
    let client = s3_ferry::store::client(&sdk, true);
    let bucket = unique("conf");
    block_on(client.create_bucket().bucket(&bucket).send()).unwrap();
    let store = Store::s3(client);
    let b = bucket.clone();
    let seed: Box<dyn Fn(u64)> = match other {
        None => Box::new(move |n| moto().seed_numbered(&b, n)),
        Some(_) => {
            let backend = store.backend().clone();
            Box::new(move |n| put_numbered(&*backend, &b, n))
        }
    };
    Fixture {
        store,
        bucket,
        seed,
    }
}

/// Put `n` objects `d{i%100}/o{i:06}` (body `i`) into `bucket`, one PUT each.
fn put_numbered(store: &dyn ObjectStore, bucket: &str, n: u64) {
    block_on(async {
        for i in 0..n {
            let key = format!("d{}/o{i:06}", i % 100);
            let body = Bytes::from(i.to_string());
            let h = ObjectHeaders::default();
            store
                .put(bucket, &key, body, &h, PutMode::Overwrite)
                .await
                .unwrap();
        }
    })
}

/// Each body as one test per store.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn memory() {
                super::$name(super::memory());
            }
            #[test]
            fn s3_on_moto() {
                super::$name(super::s3());
            }
        }
    )*};
}

conformance!(
    bytes_and_headers_round_trip,
    ranged_reads_return_the_range_and_the_whole_size,
    if_match_fails_after_a_concurrent_write,
    create_only_lets_exactly_one_of_several_writers_win,
    listings_page_in_key_order_with_start_after_and_ranges,
    multipart_uploads_complete_whole_or_leave_nothing,
    multipart_parts_under_5_mib_but_the_last_are_refused,
    open_uploads_are_listed_and_aborted_by_prefix,
    copies_keep_or_replace_headers,
    batch_deletes_tolerate_missing_keys,
    a_missing_bucket_is_named,
    a_fence_stops_the_writer_that_lost_it,
);

fn headers() -> ObjectHeaders {
    ObjectHeaders {
        content_type: Some("text/plain; charset=utf-8".into()),
        cache_control: Some("max-age=60".into()),
        content_disposition: Some("attachment; filename=\"r.txt\"".into()),
        website_redirect_location: Some("/elsewhere/r.html".into()),
        metadata: [("team".to_string(), "blue".to_string())].into(),
        tags: [
            ("team".to_string(), "blue".to_string()),
            ("cost centre".to_string(), "42 / ünï+=.:@_-".to_string()),
        ]
        .into(),
        ..Default::default()
    }
}

fn md5(body: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(body))
}

fn found(got: Got) -> (s3_ferry::store::ObjectMeta, Bytes) {
    match got {
        Got::Found { meta, body } => (meta, body),
        other => panic!("expected the object, got {other:?}"),
    }
}

fn bytes_and_headers_round_trip(f: Fixture) {
    block_on(async {
        let (s, b) = (&f.store, f.bucket.as_str());
        let key = "dir/a b+c €.txt";
        let body = b"hello, ferry".to_vec();
        let etag = s
            .put_object(b, key, Bytes::from(body.clone()), &headers())
            .await
            .unwrap();
        assert_eq!(
            etag,
            md5(&body),
            "a single PUT's ETag is the MD5 of its bytes"
        );
        let (meta, got) = found(s.get(b, key, None, None).await.unwrap());
        assert_eq!(got, body);
        assert_eq!(
            (meta.etag.as_str(), meta.size),
            (etag.as_str(), body.len() as u64)
        );
        assert_eq!(meta.headers.content_type, headers().content_type);
        assert_eq!(meta.headers.cache_control, headers().cache_control);
        assert_eq!(
            meta.headers.content_disposition,
            headers().content_disposition
        );
        assert_eq!(meta.headers.metadata, headers().metadata);
        assert_eq!(
            meta.headers.website_redirect_location,
            headers().website_redirect_location
        );
        assert_eq!(meta.headers.tags, headers().tags);
        // a ranged read past the first byte carries no tags (the first read has them)
        let (meta, _) = found(s.get(b, key, None, Some((1, 3))).await.unwrap());
        assert!(meta.headers.tags.is_empty());
        assert!(meta.last_modified_ms > 0);
        let stat = s.stat(b, key).await.unwrap().unwrap();
        assert_eq!((stat.etag, stat.size), (etag.clone(), body.len() as u64));
        assert_eq!(stat.headers.metadata, headers().metadata);
        assert_eq!(s.head(b, "dir/missing").await.unwrap(), None);
        assert!(matches!(
            s.get(b, "dir/missing", None, None).await.unwrap(),
            Got::Gone
        ));
        assert_eq!(s.get_document(b, "dir/missing").await.unwrap(), None);
        let listed = s.keys(b, "dir/").await.unwrap();
        assert_eq!(
            listed,
            vec![key.to_string()],
            "the key comes back from a listing as written"
        );
        s.put_document(b, "doc.json", Bytes::from_static(b"{}"), "application/json")
            .await
            .unwrap();
        let (doc, tag) = s.get_document_tagged(b, "doc.json").await.unwrap().unwrap();
        assert_eq!((&doc[..], tag), (&b"{}"[..], md5(b"{}")));
        let mut reader = s.reader(b, key).await.unwrap().unwrap();
        let mut streamed = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut streamed)
            .await
            .unwrap();
        assert_eq!(streamed, body);
        assert!(s.reader(b, "dir/missing").await.unwrap().is_none());
    })
}

fn ranged_reads_return_the_range_and_the_whole_size(f: Fixture) {
    block_on(async {
        let (s, b) = (&f.store, f.bucket.as_str());
        let body = pseudo_random(300_000, 7);
        s.put_object(b, "r", Bytes::from(body.clone()), &ObjectHeaders::default())
            .await
            .unwrap();
        let size = body.len() as u64;
        for (start, end) in [(0, 0), (100, 199), (65_530, 131_080), (size - 10, size - 1)] {
            let (meta, got) = found(s.get(b, "r", None, Some((start, end))).await.unwrap());
            assert_eq!(
                &got[..],
                &body[start as usize..=end as usize],
                "bytes {start}-{end}"
            );
            assert_eq!(
                meta.size, size,
                "a ranged read reports the whole object's size"
            );
        }
        // An end past the object is cut at its last byte, as S3 does.
        let (_, tail) = found(
            s.get(b, "r", None, Some((size - 5, size + 100)))
                .await
                .unwrap(),
        );
        assert_eq!(&tail[..], &body[body.len() - 5..]);
        // A start past the end is refused, not answered with nothing.
        let past = s.get(b, "r", None, Some((size, size + 10))).await;
        assert!(past.is_err(), "a range past the end: {past:?}");
        // A body read chunk by chunk.
        let Got::Found {
            body: mut reader, ..
        } = s.get_body(b, "r", None, None).await.unwrap()
        else {
            panic!("gone")
        };
        let mut all = Vec::new();
        while let Some(c) = reader.chunk().await.unwrap() {
            all.extend_from_slice(&c);
        }
        assert_eq!(all, body);
        assert!(reader.lost.is_none());
    })
}

fn if_match_fails_after_a_concurrent_write(f: Fixture) {
    block_on(async {
        let (s, b) = (&f.store, f.bucket.as_str());
        let h = ObjectHeaders::default();
        let v1 = s
            .put_object(b, "k", Bytes::from_static(b"one"), &h)
            .await
            .unwrap();
        // Another writer replaces it.
        let v2 = s
            .put_object(b, "k", Bytes::from_static(b"two"), &h)
            .await
            .unwrap();
        assert_ne!(v1, v2);
        assert!(matches!(
            s.get(b, "k", Some(&v1), None).await.unwrap(),
            Got::Changed
        ));
        assert!(matches!(
            s.get(b, "k", Some(&v1), Some((0, 1))).await.unwrap(),
            Got::Changed
        ));
        let (_, now) = found(s.get(b, "k", Some(&v2), None).await.unwrap());
        assert_eq!(&now[..], b"two");
        let backend = s.backend();
        let stale = backend
            .put(
                b,
                "k",
                Bytes::from_static(b"three"),
                &h,
                PutMode::IfMatch(&v1),
            )
            .await
            .unwrap();
        assert_eq!(stale, None, "a PUT If-Match an old ETag is refused");
        let fresh = backend
            .put(
                b,
                "k",
                Bytes::from_static(b"three"),
                &h,
                PutMode::IfMatch(&v2),
            )
            .await
            .unwrap();
        assert_eq!(fresh, Some(md5(b"three")));
        let missing = backend
            .put(
                b,
                "nothing-here",
                Bytes::from_static(b"x"),
                &h,
                PutMode::IfMatch(&v2),
            )
            .await
            .unwrap();
        assert_eq!(missing, None, "If-Match on a missing key is refused");
        assert_eq!(s.head(b, "nothing-here").await.unwrap(), None);
    })
}

fn create_only_lets_exactly_one_of_several_writers_win(f: Fixture) {
    block_on(async {
        // One after another: moto does not isolate concurrent conditional PUTs (eight at once
        // let two win there, once in five runs); S3 does. Writers at once are checked on the
        // memory store below.
        let b = f.bucket.clone();
        let backend = f.store.backend();
        let h = ObjectHeaders::default();
        let mut won = Vec::new();
        for i in 0..8u8 {
            let body = Bytes::from(vec![i; 1000]);
            if backend
                .put(&b, "once", body, &h, PutMode::Create)
                .await
                .unwrap()
                .is_some()
            {
                won.push(i);
            }
        }
        assert_eq!(won, [0], "exactly one create-only PUT wins: the first");
        let (_, body) = found(f.store.get(&b, "once", None, None).await.unwrap());
        assert_eq!(body.len(), 1000);
        assert!(body.iter().all(|x| *x == 0), "the winner's bytes, whole");
    })
}

#[test]
fn create_only_writers_at_once_let_exactly_one_win_memory() {
    let f = memory();
    block_on(async {
        let b = f.bucket.clone();
        let writers = (0..8u8).map(|i| {
            let (backend, b) = (f.store.backend().clone(), b.clone());
            tokio::spawn(async move {
                let body = Bytes::from(vec![i; 1000]);
                let h = ObjectHeaders::default();
                let put = backend.put(&b, "once", body, &h, PutMode::Create).await;
                (i, put.unwrap())
            })
        });
        let won: Vec<u8> = futures::future::join_all(writers)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .filter_map(|(i, etag)| etag.map(|_| i))
            .collect();
        assert_eq!(won.len(), 1, "exactly one create-only PUT wins");
        let (_, body) = found(f.store.get(&b, "once", None, None).await.unwrap());
        assert!(
            body.iter().all(|x| *x == won[0]),
            "the winner's bytes, whole"
        );
    })
}

fn listings_page_in_key_order_with_start_after_and_ranges(f: Fixture) {
    (f.seed)(1_500);
    block_on(async {
        let (s, b) = (&f.store, f.bucket.as_str());
        let mut expected: Vec<String> = (0..1_500u64)
            .map(|i| format!("d{}/o{i:06}", i % 100))
            .collect();
        expected.sort();
        let mut lister = s.list(b, "");
        let (mut all, mut pages) = (Vec::new(), 0);
        while let Some(page) = lister.next_page().await.unwrap() {
            pages += 1;
            all.extend(page.into_iter().map(|r| (r.key, r.size)));
        }
        assert!(pages >= 2, "1,500 keys take more than one page ({pages})");
        let keys: Vec<String> = all.iter().map(|(k, _)| k.clone()).collect();
        assert!(
            keys == expected,
            "{} keys listed of {}, first {:?}",
            keys.len(),
            expected.len(),
            keys.first()
        );
        let sizes = |(k, size): &(String, u64)| {
            let i: u64 = k.rsplit_once("/o").unwrap().1.parse().unwrap();
            *size == i.to_string().len() as u64
        };
        assert!(all.iter().all(sizes), "every size is its body's");
        // A prefix, and a range after one key up to another.
        assert_eq!(s.keys(b, "d7/").await.unwrap().len(), 15);
        let mut range = s.list_range(
            b,
            "",
            Some(expected[10].clone()),
            Some(expected[1_200].clone()),
        );
        let mut got = Vec::new();
        while let Some(page) = range.next_page().await.unwrap() {
            got.extend(page.into_iter().map(|r| r.key));
        }
        assert!(
            got == expected[11..=1_200],
            "{} keys in the range",
            got.len()
        );
        // Start-after inside a prefix.
        let mut within = s.list_range(b, "d42/", Some("d42/o000742".into()), None);
        let page = within.next_page().await.unwrap().unwrap();
        assert_eq!(page.first().map(|r| r.key.as_str()), Some("d42/o000842"));
        assert_eq!(page.len(), 7);
        assert!(within.next_page().await.unwrap().is_none());
        assert!(s.keys(b, "nothing/").await.unwrap().is_empty());
    })
}

async fn write_all(
    mut w: s3_ferry::store::MultipartUpload,
    body: &[u8],
) -> s3_ferry::store::MultipartUpload {
    for chunk in body.chunks(300_000) {
        w.write_all(chunk).await.unwrap();
    }
    w
}

fn multipart_uploads_complete_whole_or_leave_nothing(f: Fixture) {
    block_on(async {
        let (s, b) = (&f.store, f.bucket.as_str());
        const MIB: usize = 1024 * 1024;
        let body = pseudo_random(11 * MIB + 12_345, 3);
        let w = s.multipart(b, "big", 5 * MIB as u64, 2, &headers());
        let etag = write_all(w, &body).await.finish_etag().await.unwrap();
        let parts: Vec<_> = body
            .chunks(5 * MIB)
            .enumerate()
            .map(|(i, p)| s3_ferry::store::Part {
                number: i as i32 + 1,
                etag: md5(p),
                crc32: None,
            })
            .collect();
        assert_eq!(
            Some(etag.clone()),
            multipart_etag(&parts),
            "md5 of the parts' md5s, -3"
        );
        assert!(etag.ends_with("-3"));
        let (meta, got) = found(s.get(b, "big", None, None).await.unwrap());
        assert_eq!(got.len(), body.len());
        assert!(got == body, "the bytes round-trip");
        assert_eq!(meta.headers.metadata, headers().metadata);
        // Aborted, and dropped without finish: no object, no open upload.
        let w = write_all(
            s.multipart(b, "aborted", 5 * MIB as u64, 2, &headers()),
            &body[..6 * MIB],
        )
        .await;
        w.abort().await;
        let w = write_all(
            s.multipart(b, "dropped", 5 * MIB as u64, 2, &headers()),
            &body[..6 * MIB],
        )
        .await;
        drop(w);
        assert!(
            s.run()
                .settle_uploads(std::time::Duration::from_secs(30))
                .await
        );
        assert_eq!(s.head(b, "aborted").await.unwrap(), None);
        assert_eq!(s.head(b, "dropped").await.unwrap(), None);
        let open = s
            .backend()
            .list_uploads(b, "", None)
            .await
            .unwrap()
            .unwrap();
        assert!(
            open.uploads.is_empty(),
            "uploads left open: {:?}",
            open.uploads
        );
        // An empty object through the writer.
        let w = s.multipart(b, "empty", 5 * MIB as u64, 2, &ObjectHeaders::default());
        w.finish().await.unwrap();
        assert_eq!(s.head(b, "empty").await.unwrap().map(|h| h.1), Some(0));
    })
}

fn multipart_parts_under_5_mib_but_the_last_are_refused(f: Fixture) {
    block_on(async {
        let (s, b) = (&f.store, f.bucket.as_str());
        let backend = s.backend();
        let h = ObjectHeaders::default();
        let id = backend.create_upload(b, "small-parts", &h).await.unwrap();
        let p1 = backend
            .upload_part(b, "small-parts", &id, 1, Bytes::from(vec![1u8; 1024]))
            .await
            .unwrap();
        let p2 = backend
            .upload_part(b, "small-parts", &id, 2, Bytes::from(vec![2u8; 1024]))
            .await
            .unwrap();
        let done = backend
            .complete_upload(b, "small-parts", &id, &[p1, p2], PutMode::Overwrite)
            .await;
        assert!(done.is_err(), "a 1 KiB first part: {done:?}");
        assert_eq!(s.head(b, "small-parts").await.unwrap(), None);
        backend.abort_upload(b, "small-parts", &id).await.unwrap();
        // Aborting twice is fine (a retried abort whose answer was lost).
        backend.abort_upload(b, "small-parts", &id).await.unwrap();
        // Create-only completion over an existing key is refused; the upload stays open.
        s.put_object(b, "taken", Bytes::from_static(b"first"), &h)
            .await
            .unwrap();
        let id = backend.create_upload(b, "taken", &h).await.unwrap();
        let p = backend
            .upload_part(b, "taken", &id, 1, Bytes::from_static(b"second"))
            .await
            .unwrap();
        let refused = backend
            .complete_upload(b, "taken", &id, std::slice::from_ref(&p), PutMode::Create)
            .await
            .unwrap();
        assert_eq!(refused, None);
        let (_, body) = found(s.get(b, "taken", None, None).await.unwrap());
        assert_eq!(&body[..], b"first");
        backend.delete(b, "taken").await.unwrap();
        let won = backend
            .complete_upload(b, "taken", &id, &[p], PutMode::Create)
            .await
            .unwrap();
        let etag = won.expect("completed");
        assert!(etag.ends_with("-1"), "{etag}");
        let (_, body) = found(s.get(b, "taken", None, None).await.unwrap());
        assert_eq!(&body[..], b"second");
        // Its part sizes read back (a one-part upload's too); a plain PUT has none.
        let sizes = backend.part_sizes(b, "taken", &etag, 1).await.unwrap();
        assert_eq!(sizes, Some(vec![6]));
        let layout = s.part_layout(b, "taken", &etag, 6).await.unwrap();
        assert_eq!(layout, Some(PartLayout::from_sizes(&[6])));
        let plain = s
            .put_object(b, "plain", Bytes::from_static(b"plain"), &h)
            .await
            .unwrap();
        assert_eq!(
            backend.part_sizes(b, "plain", &plain, 1).await.unwrap(),
            None
        );
        assert_eq!(s.part_layout(b, "plain", &plain, 5).await.unwrap(), None);
    })
}

fn open_uploads_are_listed_and_aborted_by_prefix(f: Fixture) {
    block_on(async {
        let (s, b) = (&f.store, f.bucket.as_str());
        let backend = s.backend();
        let h = ObjectHeaders::default();
        for key in ["run/a", "run/a", "run/b", "other/c"] {
            backend.create_upload(b, key, &h).await.unwrap();
        }
        let listed = backend
            .list_uploads(b, "run/", None)
            .await
            .unwrap()
            .unwrap();
        let keys: Vec<_> = listed.uploads.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["run/a", "run/a", "run/b"]);
        assert_eq!(s.abort_uploads(b, "run/").await.unwrap(), 3);
        let left = backend.list_uploads(b, "", None).await.unwrap().unwrap();
        let keys: Vec<_> = left.uploads.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["other/c"]);
        assert_eq!(s.abort_uploads(b, "").await.unwrap(), 1);
        assert_eq!(s.abort_uploads(b, "").await.unwrap(), 0);
    })
}

fn copies_keep_or_replace_headers(f: Fixture) {
    block_on(async {
        let (s, b) = (&f.store, f.bucket.as_str());
        let body = Bytes::from_static(b"copied bytes");
        s.put_object(b, "from", body.clone(), &headers())
            .await
            .unwrap();
        let kept = s
            .copy(b, "from", "to-kept", body.len() as u64, None)
            .await
            .unwrap();
        assert_eq!(kept, md5(&body));
        let (meta, got) = found(s.get(b, "to-kept", None, None).await.unwrap());
        assert_eq!(
            (got, meta.headers.metadata, meta.headers.tags),
            (body.clone(), headers().metadata, headers().tags)
        );
        // new headers replace the old, tags too (none given: none)
        let other = ObjectHeaders {
            content_type: Some("application/octet-stream".into()),
            metadata: [("team".to_string(), "red".to_string())].into(),
            ..Default::default()
        };
        s.copy(b, "from", "to-new", body.len() as u64, Some(&other))
            .await
            .unwrap();
        let meta = s.stat(b, "to-new").await.unwrap().unwrap();
        assert_eq!(meta.headers.metadata, other.metadata);
        assert_eq!(meta.headers.content_type, other.content_type);
        assert_eq!(meta.headers.cache_control, None);
        let (meta, _) = found(s.get(b, "to-new", None, None).await.unwrap());
        assert!(meta.headers.tags.is_empty(), "{:?}", meta.headers.tags);
        assert!(s.backend().tags(b, "to-new").await.unwrap().is_empty());
        assert_eq!(s.backend().tags(b, "from").await.unwrap(), headers().tags);
        assert!(s.backend().tags(b, "no-such-key").await.unwrap().is_empty());
        let retagged = ObjectHeaders {
            tags: [("team".to_string(), "red".to_string())].into(),
            ..other.clone()
        };
        s.copy(b, "from", "to-retagged", body.len() as u64, Some(&retagged))
            .await
            .unwrap();
        let (meta, _) = found(s.get(b, "to-retagged", None, None).await.unwrap());
        assert_eq!(meta.headers.tags, retagged.tags);
        assert!(s.copy(b, "no-such-key", "x", 1, None).await.is_err());
    })
}

fn batch_deletes_tolerate_missing_keys(f: Fixture) {
    block_on(async {
        let (s, b) = (&f.store, f.bucket.as_str());
        for k in ["x/1", "x/2", "x/3"] {
            s.put_object(b, k, Bytes::from_static(b"."), &ObjectHeaders::default())
                .await
                .unwrap();
        }
        let doomed = ["x/1", "x/3", "x/never"].map(String::from);
        s.delete_batch(b, &doomed).await.unwrap();
        assert_eq!(s.keys(b, "x/").await.unwrap(), ["x/2"]);
        s.delete(b, "x/2").await.unwrap();
        s.delete(b, "x/2").await.unwrap();
        assert!(s.keys(b, "x/").await.unwrap().is_empty());
        s.delete_batch(b, &[]).await.unwrap();
    })
}

fn a_missing_bucket_is_named(f: Fixture) {
    block_on(async {
        let s = &f.store;
        s.check_bucket(&f.bucket).await.unwrap();
        let missing = format!("{}-missing", f.bucket);
        let named = |e: Error| matches!(&e, Error::NoSuchBucket { bucket } if *bucket == missing);
        assert!(named(s.check_bucket(&missing).await.unwrap_err()));
        assert!(named(s.get(&missing, "k", None, None).await.unwrap_err()));
        let h = ObjectHeaders::default();
        let put = s.put_object(&missing, "k", Bytes::from_static(b"x"), &h);
        assert!(named(put.await.unwrap_err()));
        let mut lister = s.list(&missing, "");
        assert!(named(lister.next_page().await.unwrap_err()));
    })
}

fn a_fence_stops_the_writer_that_lost_it(f: Fixture) {
    block_on(async {
        let (s, b) = (&f.store, f.bucket.as_str());
        let first = Fence::new(s, b, "ck.json", None);
        assert!(
            first
                .write(Bytes::from_static(b"{\"run\":1}"))
                .await
                .unwrap()
        );
        assert!(first.confirm().await.unwrap());
        // A second run reads the checkpoint and takes the job over.
        let (body, etag) = s.get_document_tagged(b, "ck.json").await.unwrap().unwrap();
        let second = Fence::read(s, b, "ck.json", etag, body);
        assert!(
            second
                .write(Bytes::from_static(b"{\"run\":2}"))
                .await
                .unwrap()
        );
        // The first run is fenced off: neither a new write nor a confirm passes.
        assert!(
            !first
                .write(Bytes::from_static(b"{\"run\":1,\"more\":1}"))
                .await
                .unwrap()
        );
        assert!(!first.confirm().await.unwrap());
        assert!(second.confirm().await.unwrap());
        // A fence over a document that appeared meanwhile fails to create it.
        let late = Fence::new(s, b, "ck.json", None);
        assert!(
            !late
                .write(Bytes::from_static(b"{\"run\":3}"))
                .await
                .unwrap()
        );
        let (body, _) = s.get_document_tagged(b, "ck.json").await.unwrap().unwrap();
        assert_eq!(&body[..], b"{\"run\":2}");
    })
}
