//! Listing a source as pages of records in key order, from one ListObjectsV2 stream or from
//! several key ranges listed at once. The ranges come from the previous inventory's index
//! (every [`crate::plan::inventory::INDEX_EVERY`]-th key): each range is its own listing (StartAfter
//! its first bound, stopping past its last), and the pages are handed on range after range, so
//! the result is the same sequence one listing would give. Every range may run [`AHEAD`] pages
//! ahead of the reader; past that, the ranges not being read yet hold their pages within one
//! budget of [`BUDGET`] records for all, so listing runs in parallel with memory bounded.

use std::collections::VecDeque;

use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::plan::inventory::ObjectRecord;
use crate::store::{Lister, Store};

/// Records at least one range holds: a smaller listing is not split.
pub const MIN_RANGE_RECORDS: u64 = 2_000;

/// Pages each range may hold whatever the budget.
const AHEAD: usize = 4;

/// Records the ranges may hold beyond that, all together (about 64 MiB).
const BUDGET: usize = 250_000;

/// A page on its way, with its share of the budget (given back once it is handed on).
type Sent = (
    Result<Option<Vec<ObjectRecord>>>,
    Option<OwnedSemaphorePermit>,
);

/// One range being listed: its pages, and how many wait in the channel.
struct Range {
    pages: mpsc::UnboundedReceiver<Sent>,
    queued: Arc<AtomicUsize>,
    taken: Arc<Notify>,
}

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

/// One listing per range, `splits` being the last key of every range but the last; the first
/// starts after `start_after` (when given, below every split).
pub fn ranged(
    store: &Store,
    bucket: &str,
    prefix: &str,
    start_after: Option<String>,
    splits: &[String],
) -> Ranged {
    let mut bounds = Vec::with_capacity(splits.len() + 1);
    let mut after: Option<String> = start_after;
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
        BUDGET,
    )
}

/// Several listings run at once, handed on one after the other.
pub struct Ranged {
    /// Each range's pages; `Ok(None)` marks its end.
    ranges: VecDeque<Range>,
    /// The listing tasks (stopped when this is dropped).
    _tasks: JoinSet<()>,
    location: String,
}

impl Ranged {
    /// Start every listing, the ranges not being read holding at most `budget` records beyond
    /// their free slots.
    pub fn spawn(listings: Vec<Box<dyn Pages>>, location: String, budget: usize) -> Ranged {
        let cap = budget.max(1);
        let budget = Arc::new(Semaphore::new(cap));
        let mut tasks = JoinSet::new();
        let mut ranges = VecDeque::with_capacity(listings.len());
        for mut pages in listings {
            let (tx, rx) = mpsc::unbounded_channel();
            let queued = Arc::new(AtomicUsize::new(0));
            let taken = Arc::new(Notify::new());
            let (q, t, budget) = (queued.clone(), taken.clone(), budget.clone());
            tasks.spawn(async move {
                loop {
                    let page = pages.next_page().await;
                    let end = !matches!(page, Ok(Some(_)));
                    let n = match &page {
                        Ok(Some(p)) => p.len().clamp(1, cap),
                        _ => 1,
                    };
                    // A free slot, or a share of the budget, whichever comes first: the range
                    // being read always gets on through its free slots.
                    let mut permit = None;
                    loop {
                        let drained = t.notified();
                        if q.load(Ordering::SeqCst) < AHEAD {
                            break;
                        }
                        tokio::select! {
                            p = budget.clone().acquire_many_owned(n as u32) => {
                                permit = p.ok();
                                break;
                            }
                            _ = drained => {}
                        }
                    }
                    q.fetch_add(1, Ordering::SeqCst);
                    if tx.send((page, permit)).is_err() || end {
                        return;
                    }
                }
            });
            ranges.push_back(Range {
                pages: rx,
                queued,
                taken,
            });
        }
        Ranged {
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
                let got = range.pages.recv().await.map(|(page, _permit)| page);
                if got.is_some() {
                    range.queued.fetch_sub(1, Ordering::SeqCst);
                    range.taken.notify_one();
                }
                match got {
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
            state: None,
            withheld: None,
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
            BUDGET,
        );
        assert_eq!(
            all(&mut r).await.unwrap(),
            ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
        );
    }

    #[tokio::test]
    async fn ranges_past_their_free_slots_share_the_budget_and_never_stall_the_reader() {
        // 4 ranges of 20 pages of 2 keys, a budget of 3 records: the ranges not being read
        // fill their free slots and exhaust the budget, the one being read still gets on
        let names: Vec<Vec<Vec<String>>> = (0..4)
            .map(|r| {
                (0..20)
                    .map(|p| (0..2).map(|k| format!("{r}/{p:02}/{k}")).collect())
                    .collect()
            })
            .collect();
        let listings = names
            .iter()
            .map(|pages_of| {
                let refs: Vec<Vec<&str>> = pages_of
                    .iter()
                    .map(|p| p.iter().map(String::as_str).collect())
                    .collect();
                let slices: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
                pages(&slices)
            })
            .collect();
        let mut r = Ranged::spawn(listings, "mem".into(), 3);
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), all(&mut r))
            .await
            .expect("the listing stalled")
            .unwrap();
        let want: Vec<String> = names.into_iter().flatten().flatten().collect();
        assert_eq!(got, want);
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
        let mut r = Ranged::spawn(vec![pages(&[&["a"]]), failing], "mem".into(), BUDGET);
        assert!(all(&mut r).await.is_err());
        // (a listing that panics drops its sender without an end mark)
        let mut r = Ranged::spawn(
            vec![Box::new(Fake(VecDeque::from([Ok(Some(vec![rec("a")]))])))],
            "mem".into(),
            BUDGET,
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
