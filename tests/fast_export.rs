//! The fast tier's export logic on the in-memory stores: how volumes are cut (by bytes, by
//! entries, an object larger than the cap alone), that streamed objects keep within the cap,
//! and that multipart objects cross in their own parts. Every volume still opens in the real
//! readers.

use s3_ferry::format::manifest::ObjectHeaders;
use s3_ferry::store::{ObjectStore, Part, PutMode};

use crate::util::{assert_capped, block_on, check_readers, pseudo_random};
use crate::world::World;

#[test]
fn volumes_rotate_by_bytes_and_by_entries() {
    // GIVEN 12 objects of 400 KiB
    let w = World::new("rotate");
    let objects = (0..12)
        .map(|i| (format!("o{i:02}"), pseudo_random(400 * 1024, i)))
        .collect::<Vec<_>>();
    w.put_many(objects.clone());

    // WHEN volumes are capped at 1 MiB
    let r = w.export_with(|c| c.tuning.volume_size = 1024 * 1024);

    // THEN every volume holds 2 objects and stays under the cap, each a standalone zip
    let b = w.download(&w.job, 1);
    assert_eq!(r["volumes"].as_array().unwrap().len(), 6);
    for (v, info) in b.volume_paths().iter().zip(&b.summary.volumes) {
        assert!(
            info.size <= 1024 * 1024,
            "{} is {} bytes",
            info.name,
            info.size
        );
        assert_eq!(info.objects, 2);
        check_readers(v);
    }
    assert_eq!(b.last().earlier_volumes.len(), 5);
    assert_eq!(b.last().earlier_volumes, b.summary.volumes[..5].to_vec());
    let files = b.extract();
    for (k, body) in &objects {
        assert_eq!(&files[k], body);
    }

    // AND an object bigger than the cap travels alone in its own volume
    let lone = pseudo_random(3 * 1024 * 1024 / 2, 99);
    w.put("zz-lone", lone.clone());
    // (the final manifest then gets a volume of its own: it does not fit beside it)
    let r = w.export_with(|c| c.tuning.volume_size = 1024 * 1024);
    let b = w.download(&w.job, 2);
    assert_eq!(r["volumes"].as_array().unwrap().len(), 2);
    assert_eq!(b.summary.volumes[0].objects, 1);
    assert!(b.summary.volumes[0].size > 1024 * 1024);
    assert_eq!(b.summary.volumes[1].objects, 0);
    assert_eq!(b.extract()["zz-lone"], lone);

    // AND by entries: 5 per volume → 3 volumes
    let r = w.export_job(&format!("{}-e", w.job), |c| c.tuning.volume_entries = 5);
    assert_eq!(r["volumes"].as_array().unwrap().len(), 3);
}

#[test]
fn streamed_objects_near_the_cap_stay_within_it() {
    // GIVEN objects larger than the whole-object limit (streamed in ranges) that nearly fill a
    // 20 MiB volume two at a time, and small ones after them
    let w = World::new("capstream");
    let big = 9 * 1024 * 1024 + 900 * 1024;
    let mut objects: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("a-big{i}"), pseudo_random(big, i)))
        .collect();
    objects.extend((0..300).map(|i| (format!("b-small{i:04}"), pseudo_random(4000, 100 + i))));
    w.put_many(objects.clone());
    // WHEN exported with a 20 MiB cap
    w.export_with(|c| c.tuning.volume_size = 20 * 1024 * 1024);
    // THEN no volume is over it
    assert_capped(&w, 1, 20 * 1024 * 1024, 0.5, false);
    let files = w.download(&w.job, 1).extract();
    for (k, body) in &objects {
        assert_eq!(&files[k], body, "{k}");
    }
}

/// `bucket/key` uploaded in parts of these sizes (of `body`, in order); its ETag.
fn put_in_parts(w: &World, bucket: &str, key: &str, body: &[u8], sizes: &[usize]) -> String {
    block_on(async {
        let s = &w.objects;
        let id = s
            .create_upload(bucket, key, &ObjectHeaders::default())
            .await
            .unwrap();
        let (mut parts, mut at) = (Vec::<Part>::new(), 0);
        for (i, n) in sizes.iter().enumerate() {
            let bytes = bytes::Bytes::copy_from_slice(&body[at..at + n]);
            parts.push(
                s.upload_part(bucket, key, &id, i as i32 + 1, bytes)
                    .await
                    .unwrap(),
            );
            at += n;
        }
        assert_eq!(at, body.len());
        let parts = &parts;
        s.complete_upload(bucket, key, &id, parts, PutMode::Overwrite)
            .await
            .unwrap()
            .unwrap()
    })
}

fn etag(w: &World, bucket: &str, key: &str) -> String {
    block_on(w.objects.head(bucket, key))
        .unwrap()
        .unwrap()
        .meta
        .etag
}

#[test]
fn multipart_objects_arrive_in_their_own_parts_with_their_etags() {
    // GIVEN objects uploaded in uneven parts (5 + 6 + 1 MiB, and 5 MiB + 1 byte, which is small
    // enough for one PUT), one in a single part, and one uploaded whole
    const MIB: usize = 1024 * 1024;
    let w = World::new("layout");
    let layouts: [(&str, &[usize]); 3] = [
        ("uneven", &[5 * MIB, 6 * MIB, MIB]),
        ("small-two", &[5 * MIB, 1]),
        ("one-part", &[3 * MIB]),
    ];
    let mut source = Vec::new();
    for (i, (key, sizes)) in layouts.iter().enumerate() {
        let body = pseudo_random(sizes.iter().sum(), i as u64);
        let etag = put_in_parts(&w, &w.src, key, &body, sizes);
        assert!(etag.ends_with(&format!("-{}", sizes.len())), "{etag}");
        source.push((key.to_string(), body, etag));
    }
    w.put("whole", pseudo_random(6 * MIB, 9));
    source.push((
        "whole".into(),
        pseudo_random(6 * MIB, 9),
        etag(&w, &w.src, "whole"),
    ));

    // WHEN exported and imported into another bucket
    w.export();
    let b = w.download(&w.job, 1);
    let line = |k: &str| {
        b.manifests
            .iter()
            .flat_map(|m| &m.objects)
            .find(|o| o.key == k)
            .cloned()
    };
    let uneven = serde_json::to_value(line("uneven").unwrap()).unwrap();
    assert_eq!(
        uneven["part_layout"],
        serde_json::json!([[5 * MIB, 1], [6 * MIB, 1], [MIB, 1]])
    );
    assert!(line("whole").unwrap().part_layout.is_none());
    let dest = w.bucket("layout-dest");
    let home = tempfile::tempdir().unwrap();
    let target = w.bucket_target(&w.clients.s3, &format!("s3://{dest}"));
    w.import(&[b.dir.path()], target, &home.path().join("state.json"));

    // THEN every object has its bytes and the source's ETag, and no upload is left open
    for (key, body, want) in &source {
        assert_eq!(w.get(&dest, key).as_deref(), Some(&body[..]), "{key}");
        assert_eq!(&etag(&w, &dest, key), want, "{key}");
    }
    assert_eq!(w.open_uploads_in(&dest), 0);
}
