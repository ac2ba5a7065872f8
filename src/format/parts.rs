//! Objects split across volumes. A shard step whose deadline comes while it streams a large
//! object ends the object's entry there (its first *part*), closes the volume and checkpoints
//! how far it got; the next step ships the rest as the next part, in its own volume. Every
//! part is an entry of its own, with its size, CRC-32 and SHA-256 in its volume's manifest
//! (so each volume still verifies alone), plus a [`Split`] naming its place in the object; the
//! last part also carries the whole object's SHA-256 and CRC-32. The importer joins the parts
//! ([`join`]) and checks both. [`WholeDigest`] is the object's running digest the exporter
//! saves in its checkpoint between steps.
//!
//! Part 1 keeps the object's own entry name (`bucket/key`); later parts are
//! `_ferry/part-NNNNN/bucket/key` (no object entry starts with `_ferry/`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest, Sha256};

use crate::format::manifest::ObjectEntry;

/// Where one part sits in its object (the `split` field of a manifest line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// 1-based.
    pub part: u32,
    /// The object's offset of this part's first byte.
    pub offset: u64,
    /// The whole object's size.
    pub object_size: u64,
    /// On the last part only: the whole object's SHA-256 (hex) and CRC-32.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub object_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub object_crc32: Option<u32>,
}

/// The entry name of part `part` of the object whose entry is `entry`.
pub fn part_entry(entry: &str, part: u32) -> String {
    if part <= 1 {
        entry.to_string()
    } else {
        format!("_ferry/part-{part:05}/{entry}")
    }
}

/// The running SHA-256 and CRC-32 of an object shipped in parts.
#[derive(Clone, Default)]
pub struct WholeDigest {
    sha: Sha256,
    crc: crc32fast::Hasher,
    len: u64,
}

/// A [`WholeDigest`] as a checkpoint keeps it between steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDigest {
    /// The SHA-256 state (sha2's serialised state, hex).
    pub sha256_state: String,
    pub crc32: u32,
    pub len: u64,
}

impl WholeDigest {
    pub fn update(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
        self.crc.update(chunk);
        self.len += chunk.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn save(&self) -> SavedDigest {
        SavedDigest {
            sha256_state: hex::encode(self.sha.serialize()),
            crc32: self.crc.clone().finalize(),
            len: self.len,
        }
    }

    /// `None` when `saved` is not a state this build wrote.
    pub fn restore(saved: &SavedDigest) -> Option<WholeDigest> {
        let bytes = hex::decode(&saved.sha256_state).ok()?;
        let state = bytes.as_slice().try_into().ok()?;
        Some(WholeDigest {
            sha: Sha256::deserialize(state).ok()?,
            crc: crc32fast::Hasher::new_with_initial_len(saved.crc32, saved.len),
            len: saved.len,
        })
    }

    /// SHA-256 (hex) and CRC-32 of everything added.
    pub fn finish(self) -> (String, u32) {
        (hex::encode(self.sha.finalize()), self.crc.finalize())
    }
}

/// One part of a joined object: the volume (1-based) and entry holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartAt {
    pub volume: u32,
    pub entry: ObjectEntry,
}

/// An object whose parts, in order, make it whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub parts: Vec<PartAt>,
    pub size: u64,
    pub sha256: String,
    pub crc32: u32,
}

impl Joined {
    /// The object as one manifest line: the last part's key, ETag, headers; the whole size and
    /// digests.
    pub fn object(&self) -> ObjectEntry {
        let last = &self.parts[self.parts.len() - 1].entry;
        ObjectEntry {
            entry: self.parts[0].entry.entry.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            crc32: self.crc32,
            split: None,
            ..last.clone()
        }
    }

    /// The volume holding the last part (where the object is imported).
    pub fn last_volume(&self) -> u32 {
        self.parts[self.parts.len() - 1].volume
    }
}

/// True for a manifest line that is a part of an object but not its last one (importing it
/// alone writes nothing).
pub fn is_early_part(o: &ObjectEntry) -> bool {
    o.split.as_ref().is_some_and(|s| s.object_sha256.is_none())
}

/// Join the parts of a bundle (each with its volume index, in volume order) into objects.
/// A sequence of parts with no last part was abandoned by the exporter (the object changed
/// between steps and was shipped again from its start): it is left out and counted. Anything
/// else that does not fit together is refused, saying what.
pub fn join(parts: Vec<(u32, ObjectEntry)>) -> Result<(Vec<Joined>, u64), String> {
    let mut by_object: BTreeMap<(String, String, u64), Vec<PartAt>> = BTreeMap::new();
    for (volume, entry) in parts {
        let Some(s) = &entry.split else { continue };
        by_object
            .entry((entry.key.clone(), entry.etag.clone(), s.object_size))
            .or_default()
            .push(PartAt { volume, entry });
    }
    // In volume order, a part 1 starts a sequence: the same version shipped again from its
    // start (it changed between steps and changed back) is a sequence of its own.
    let mut sequences = Vec::new();
    for ((key, _, size), parts) in by_object {
        let mut current: Vec<PartAt> = Vec::new();
        for p in parts {
            if p.entry.split.as_ref().is_some_and(|s| s.part == 1) && !current.is_empty() {
                sequences.push((key.clone(), size, std::mem::take(&mut current)));
            }
            current.push(p);
        }
        sequences.push((key, size, current));
    }
    let (mut joined, mut abandoned) = (Vec::new(), 0u64);
    let mut complete_keys = std::collections::BTreeSet::new();
    for (key, size, parts) in sequences {
        let mut offset = 0u64;
        let mut last_volume = 0u32;
        let mut whole = None;
        for (i, p) in parts.iter().enumerate() {
            let s = p.entry.split.as_ref().expect("grouped by split");
            let bad = |what: String| format!("part {} of `{key}` {what}", s.part);
            if whole.is_some() {
                return Err(bad("comes after its object's last part".into()));
            }
            if s.part as usize != i + 1 {
                return Err(bad(format!("is number {} in its object's sequence", i + 1)));
            }
            if s.offset != offset {
                return Err(bad(format!(
                    "starts at byte {}, after {offset} bytes of parts",
                    s.offset
                )));
            }
            if p.volume <= last_volume {
                return Err(bad(format!(
                    "is in volume {}, not after part {}'s volume {last_volume}",
                    p.volume,
                    s.part - 1
                )));
            }
            last_volume = p.volume;
            offset = offset
                .checked_add(p.entry.size)
                .filter(|&end| end <= size)
                .ok_or_else(|| bad(format!("ends past the object's {size} bytes")))?;
            match (&s.object_sha256, s.object_crc32) {
                (Some(sha), Some(crc)) if offset == size => whole = Some((sha.clone(), crc)),
                (None, None) if offset < size => {}
                (Some(_), _) | (_, Some(_)) => {
                    return Err(bad(format!(
                        "carries the object's digest, but {offset} of its {size} bytes end there"
                    )));
                }
                (None, None) => {
                    return Err(bad("ends the object but carries no digest of it".into()));
                }
            }
        }
        match whole {
            None => abandoned += 1,
            Some((sha256, crc32)) => {
                if !complete_keys.insert(key.clone()) {
                    return Err(format!("`{key}` is shipped whole twice, in parts"));
                }
                joined.push(Joined {
                    parts,
                    size,
                    sha256,
                    crc32,
                });
            }
        }
    }
    Ok((joined, abandoned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(key: &str, n: u32, offset: u64, size: u64, total: u64) -> ObjectEntry {
        let last = offset + size == total;
        ObjectEntry {
            key: key.into(),
            entry: part_entry(&format!("b/{key}"), n),
            size,
            etag: "e".into(),
            last_modified: "2026-01-01T00:00:00.000Z".into(),
            sha256: "00".into(),
            crc32: 0,
            storage_class: "STANDARD".into(),
            headers: Default::default(),
            planned_etag: None,
            version_id: None,
            part_layout: None,
            detected_type: None,
            split: Some(Split {
                part: n,
                offset,
                object_size: total,
                object_sha256: last.then(|| "ff".into()),
                object_crc32: last.then_some(7),
            }),
        }
    }

    #[test]
    fn a_digest_saved_and_restored_goes_on_as_one() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut one = WholeDigest::default();
        one.update(&data);
        let mut first = WholeDigest::default();
        first.update(&data[..33_333]);
        let mut second = WholeDigest::restore(&first.save()).expect("restores");
        second.update(&data[33_333..]);
        assert_eq!(second.len(), 100_000);
        assert_eq!(second.finish(), one.finish());
        let (sha, crc) = {
            let mut d = WholeDigest::default();
            d.update(&data);
            d.finish()
        };
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
        assert_eq!(crc, crc32fast::hash(&data));
        assert!(
            WholeDigest::restore(&SavedDigest {
                sha256_state: "00".into(),
                crc32: 0,
                len: 0
            })
            .is_none()
        );
    }

    #[test]
    fn parts_join_in_order_and_a_gap_or_a_reorder_is_refused() {
        let (joined, abandoned) = join(vec![
            (1, part("k", 1, 0, 10, 25)),
            (2, part("k", 2, 10, 10, 25)),
            (4, part("k", 3, 20, 5, 25)),
        ])
        .expect("joins");
        assert_eq!(abandoned, 0);
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].last_volume(), 4);
        let o = joined[0].object();
        assert_eq!(
            (o.size, o.sha256.as_str(), o.crc32, o.entry.as_str()),
            (25, "ff", 7, "b/k")
        );

        // A part missing in the middle.
        let e = join(vec![
            (1, part("k", 1, 0, 10, 25)),
            (3, part("k", 3, 20, 5, 25)),
        ]);
        assert!(e.unwrap_err().contains("number 2"));
        // Parts in the wrong volumes.
        let e = join(vec![
            (2, part("k", 1, 0, 10, 20)),
            (1, part("k", 2, 10, 10, 20)),
        ]);
        assert!(e.unwrap_err().contains("not after"));
        // A part claiming more than the object.
        let e = join(vec![(1, part("k", 1, 0, 30, 20))]);
        assert!(e.unwrap_err().contains("past"));
        // An abandoned start (the object changed between steps) is left out.
        let mut early = part("k", 1, 0, 10, 25);
        early.etag = "old".into();
        let (joined, abandoned) = join(vec![
            (1, early),
            (2, part("k", 1, 0, 10, 20)),
            (3, part("k", 2, 10, 10, 20)),
        ])
        .expect("joins");
        assert_eq!((joined.len(), abandoned), (1, 1));
        // The same version abandoned and shipped again from its start: two sequences.
        let (joined, abandoned) = join(vec![
            (1, part("k", 1, 0, 10, 20)),
            (2, part("k", 1, 0, 10, 20)),
            (3, part("k", 2, 10, 10, 20)),
        ])
        .expect("joins");
        assert_eq!((joined.len(), abandoned), (1, 1));
        assert_eq!(joined[0].parts[0].volume, 2);
    }
}
