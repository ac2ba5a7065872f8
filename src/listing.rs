//! Listing a source as pages of records in key order, from one ListObjectsV2 stream or from
//! several key ranges listed at once. The ranges come from the previous inventory's index
//! (every [`crate::inventory::INDEX_EVERY`]-th key): each range is its own listing (StartAfter
//! its first bound, stopping past its last), a few pages ahead, and the pages are handed on
//! range after range, so the result is the same sequence one listing would give.

use std::collections::VecDeque;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::inventory::ObjectRecord;
use crate::s3::{Lister, Store};

/// Records at least one range holds: a smaller listing is not split.
pub const MIN_RANGE_RECORDS: u64 = 2_000;

/// Pages of a listing each range may fetch ahead of the one being handed on.
const AHEAD: usize = 4;

/// A listing, page by page, in key order.
pub trait Pages: Send {
    /// The next page; `None` when the listing is over.
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<ObjectRecord>>>>;
}

impl Pages for Lister {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<ObjectRecord>>>> {
        Box::pin(Lister::next_page(self))
    }
}

/// Where to cut a listing of `records` keys (the previous inventory's count) into at most
/// `ranges` ranges, from the inventory's index keys (sorted; anything else is ignored): the
/// last key of each range but the last. Empty: list in one stream.
pub fn split_keys(index: &[String], records: u64, ranges: usize) -> Vec<String> {
    let by_size = usize::try_from(records / MIN_RANGE_RECORDS).unwrap_or(usize::MAX);
    let n = ranges.min(by_size).min(index.len() + 1);
    if n < 2 || index.windows(2).any(|w| w[0] >= w[1]) {
        return Vec::new();
    }
    let mut out: Vec<String> = (1..n).map(|j| index[j * index.len() / n].clone()).collect();
    out.dedup();
    out
}

/// One listing per range, `splits` being the last key of every range but the last.
pub fn ranged(store: &Store, bucket: &str, prefix: &str, splits: &[String]) -> Ranged {
    let mut bounds = Vec::with_capacity(splits.len() + 1);
    let mut after: Option<String> = None;
    for s in splits {
        bounds.push((after.take(), Some(s.clone())));
        after = Some(s.clone());
    }
    bounds.push((after, None));
    Ranged::spawn(
        bounds
            .into_iter()
            .map(|(a, u)| Box::new(store.list_range(bucket, prefix, a, u)) as Box<dyn Pages>)
            .collect(),
        format!("s3://{bucket}/{prefix}"),
    )
}

/// Several listings run at once, handed on one after the other.
pub struct Ranged {
    /// Each range's pages; `Ok(None)` marks its end.
    ranges: VecDeque<mpsc::Receiver<Result<Option<Vec<ObjectRecord>>>>>,
    /// The listing tasks (stopped when this is dropped).
    _tasks: JoinSet<()>,
    location: String,
    /// How many ranges the listing was cut into.
    pub count: usize,
}

impl Ranged {
    /// Start every listing, each at most [`AHEAD`] pages ahead.
    pub fn spawn(listings: Vec<Box<dyn Pages>>, location: String) -> Ranged {
        let mut tasks = JoinSet::new();
        let mut ranges = VecDeque::with_capacity(listings.len());
        for mut pages in listings {
            let (tx, rx) = mpsc::channel(AHEAD);
            tasks.spawn(async move {
                loop {
                    let page = pages.next_page().await;
                    let end = !matches!(page, Ok(Some(_)));
                    if tx.send(page).await.is_err() || end {
                        return;
                    }
                }
            });
            ranges.push_back(rx);
        }
        Ranged {
            count: ranges.len(),
            ranges,
            _tasks: tasks,
            location,
        }
    }
}

impl Pages for Ranged {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<ObjectRecord>>>> {
        Box::pin(async move {
            loop {
                let Some(range) = self.ranges.front_mut() else {
                    return Ok(None);
                };
                match range.recv().await {
                    Some(Ok(Some(page))) => return Ok(Some(page)),
                    Some(Ok(None)) => {
                        self.ranges.pop_front();
                    }
                    Some(Err(e)) => return Err(e),
                    // A listing task that ended without saying so (it panicked): never take
                    // that as the end of its range.
                    None => {
                        return Err(Error::Missing {
                            what: "a range of the listing".into(),
                            location: self.location.clone(),
                            detail: "stopped before its end: run the export again".into(),
                        });
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory listing: pages of keys.
    struct Fake(VecDeque<Result<Option<Vec<ObjectRecord>>>>);

    impl Pages for Fake {
        fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Vec<ObjectRecord>>>> {
            let next = self.0.pop_front();
            Box::pin(async move {
                match next {
                    Some(p) => p,
                    None => panic!("read past the end"),
                }
            })
        }
    }

    fn rec(k: &str) -> ObjectRecord {
        ObjectRecord {
            key: k.into(),
            size: 1,
            etag: "e".into(),
            last_modified_ms: 0,
            storage_class: "STANDARD".into(),
        }
    }

    fn pages(keys: &[&[&str]]) -> Box<dyn Pages> {
        let mut q: VecDeque<_> = keys
            .iter()
            .map(|p| Ok(Some(p.iter().map(|k| rec(k)).collect())))
            .collect();
        q.push_back(Ok(None));
        Box::new(Fake(q))
    }

    async fn all(r: &mut Ranged) -> Result<Vec<String>> {
        let mut out = Vec::new();
        while let Some(p) = r.next_page().await? {
            out.extend(p.into_iter().map(|r| r.key));
        }
        Ok(out)
    }

    #[tokio::test]
    async fn ranges_are_handed_on_in_order_whatever_finishes_first() {
        let mut r = Ranged::spawn(
            vec![
                pages(&[&["a", "b"], &["c"]]),
                pages(&[]),
                pages(&[&["d"], &["e", "f"], &["g"], &["h"], &["i"], &["j"]]),
            ],
            "mem".into(),
        );
        assert_eq!(
            all(&mut r).await.unwrap(),
            ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
        );
    }

    #[tokio::test]
    async fn a_failed_or_vanished_range_fails_the_listing() {
        let failing = Box::new(Fake(VecDeque::from([
            Ok(Some(vec![rec("x")])),
            Err(Error::Missing {
                what: "page".into(),
                location: "mem".into(),
                detail: "boom".into(),
            }),
        ])));
        let mut r = Ranged::spawn(vec![pages(&[&["a"]]), failing], "mem".into());
        assert!(all(&mut r).await.is_err());
        // (a listing that panics drops its sender without an end mark)
        let mut r = Ranged::spawn(
            vec![Box::new(Fake(VecDeque::from([Ok(Some(vec![rec("a")]))])))],
            "mem".into(),
        );
        let e = all(&mut r).await.unwrap_err();
        assert!(e.to_string().contains("stopped before its end"), "{e}");
    }

    #[test]
    fn splits_come_from_the_index_and_never_cut_a_small_listing() {
        let index: Vec<String> = (1..=99).map(|i| format!("k{i:03}")).collect();
        assert_eq!(split_keys(&index, 100_000, 4), ["k025", "k050", "k075"]);
        assert_eq!(split_keys(&index, 100_000, 1), Vec::<String>::new());
        assert_eq!(split_keys(&index, 4_000, 8), ["k050"]);
        assert_eq!(split_keys(&index, 3_999, 8), Vec::<String>::new());
        let mut bad = index.clone();
        bad.swap(3, 4);
        assert_eq!(split_keys(&bad, 100_000, 4), Vec::<String>::new());
        assert_eq!(split_keys(&[], 100_000, 4), Vec::<String>::new());
    }
}
