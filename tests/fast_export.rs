//! The fast tier's export logic on the in-memory stores: how volumes are cut (by bytes, by
//! entries, an object larger than the cap alone) and that streamed objects keep within the cap.
//! Every volume still opens in the real readers.

use crate::util::{assert_capped, check_readers, pseudo_random};
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
