//! The part layout of a multipart source object: the sizes of the parts it was uploaded in,
//! carried in its manifest line so that an import into a bucket uploads it in the same parts,
//! and the copy's ETag (`MD5-of-part-MD5s-N`) and composite checksum equal the source's.
//!
//! Kept as runs of equal sizes (`[[5242880, 2], [1048576, 1]]`): an upload of equal parts and a
//! shorter last one is two runs however many parts it has. Read from hostile media, a layout
//! is checked against S3's own rules before anything trusts it ([`PartLayout::problem`]).

use serde::{Deserialize, Serialize};

/// S3's limits on a multipart upload: parts, the smallest part but the last, the largest.
pub const MAX_PARTS: u64 = 10_000;
pub const MIN_PART: u64 = 5 * 1024 * 1024;
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// Part sizes in upload order, as runs of `(size, count)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartLayout(Vec<(u64, u64)>);

impl PartLayout {
    /// The layout of parts of these sizes, in order.
    pub fn from_sizes(sizes: &[u64]) -> PartLayout {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &s in sizes {
            match runs.last_mut() {
                Some((size, count)) if *size == s => *count += 1,
                _ => runs.push((s, 1)),
            }
        }
        PartLayout(runs)
    }

    /// How many parts; `None` past `u64`.
    pub fn parts(&self) -> Option<u64> {
        self.0.iter().try_fold(0u64, |n, (_, c)| n.checked_add(*c))
    }

    /// The largest part.
    pub fn largest(&self) -> u64 {
        self.0.iter().map(|(s, _)| *s).max().unwrap_or(0)
    }

    /// Each part's first and last byte, in order (call only on a layout without a
    /// [`PartLayout::problem`]: at most [`MAX_PARTS`] parts).
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut start = 0u64;
        for &(size, count) in &self.0 {
            for _ in 0..count.min(MAX_PARTS) {
                out.push((start, (start + size).saturating_sub(1)));
                start += size;
            }
        }
        out
    }

    /// The size of part `number` (from 1); `None` past the last part.
    pub fn part_size(&self, number: u64) -> Option<u64> {
        let mut first = 1u64;
        for (size, count) in &self.0 {
            let end = first.checked_add(*count)?;
            if number >= first && number < end {
                return Some(*size);
            }
            first = end;
        }
        None
    }

    /// Why this cannot be the layout of an S3 object of `size` bytes, if it cannot: S3 makes
    /// 1 to 10,000 parts of at most 5 GiB, all but the last at least 5 MiB, summing to the
    /// object.
    pub fn problem(&self, size: u64) -> Option<String> {
        let parts = match self.parts() {
            Some(n) if (1..=MAX_PARTS).contains(&n) => n,
            n => {
                let n = n.map_or("more than 2^64".into(), |n| n.to_string());
                return Some(format!(
                    "a part layout of {n} parts (S3 makes 1 to {MAX_PARTS})"
                ));
            }
        };
        if self.0.iter().any(|(_, c)| *c == 0) {
            return Some("a part layout with a run of zero parts".into());
        }
        let mut total = 0u64;
        let mut number = 0u64;
        for (s, c) in &self.0 {
            number += c;
            let last_run = number == parts;
            // Every part of this run but (in the last run) the very last one is not last.
            let below_min = *s < MIN_PART && (!last_run || *c > 1);
            if *s > MAX_PART || below_min || (*s == 0 && parts > 1) {
                return Some(format!(
                    "a part layout with a part of {s} bytes (S3: at most 5 GiB, all but the last at least 5 MiB)"
                ));
            }
            total = match s.checked_mul(*c).and_then(|b| total.checked_add(b)) {
                Some(t) => t,
                None => return Some("a part layout larger than any object".into()),
            };
        }
        (total != size).then(|| format!("a part layout of {total} bytes for an object of {size}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn runs_give_each_part_its_size() {
        let l = PartLayout::from_sizes(&[5 * MIB, 6 * MIB, 6 * MIB, MIB]);
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            "[[5242880,1],[6291456,2],[1048576,1]]"
        );
        let sizes: Vec<_> = (1..=5).map(|n| l.part_size(n)).collect();
        assert_eq!(
            sizes,
            [Some(5 * MIB), Some(6 * MIB), Some(6 * MIB), Some(MIB), None]
        );
        assert_eq!(l.parts(), Some(4));
        assert_eq!(l.problem(18 * MIB), None);
        assert_eq!(PartLayout::from_sizes(&[0]).problem(0), None);
    }

    #[test]
    fn layouts_s3_cannot_have_are_refused() {
        let p = |runs: Vec<(u64, u64)>, size| PartLayout(runs).problem(size);
        assert!(p(vec![], 0).is_some(), "no part");
        assert!(p(vec![(MIN_PART, 10_001)], MIN_PART * 10_001).is_some());
        assert!(
            p(vec![(MIB, 2)], 2 * MIB).is_some(),
            "a small part not last"
        );
        assert!(p(vec![(MIB, 1), (MIN_PART, 1)], 6 * MIB).is_some());
        assert!(p(vec![(MAX_PART + 1, 1)], MAX_PART + 1).is_some());
        assert!(p(vec![(MIN_PART, 0), (MIB, 1)], MIB).is_some(), "zero run");
        assert!(p(vec![(MIN_PART, 2)], 3 * MIN_PART).is_some(), "wrong sum");
        assert!(p(vec![(u64::MAX, 2)], 0).is_some(), "overflow");
        assert!(p(vec![(u64::MAX / 2, u64::MAX)], 0).is_some(), "overflow");
        assert!(p(vec![(0, 1), (0, 1)], 0).is_some(), "empty parts");
        assert_eq!(p(vec![(MIN_PART, 2), (1, 1)], 2 * MIN_PART + 1), None);
    }
}
