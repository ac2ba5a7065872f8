//! Fetching changed objects: whole small ones (some while the listing still runs), large ones
//! in ranges; ordered, bounded in bytes held.

use super::*;

/// A fetched body and its share of the prefetch budget (given back when the body is dropped).
pub(super) enum Body {
    Whole(Bytes, #[allow(dead_code)] OwnedSemaphorePermit),
    Ranged(Bytes, #[allow(dead_code)] OwnedSemaphorePermit),
}

// Items travel through a short channel one at a time; boxing the metadata buys nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Fetched {
    Found {
        rec: ObjectRecord,
        meta: ObjectMeta,
        body: Body,
        planned_etag: Option<String>,
    },
    Gone {
        rec: ObjectRecord,
    },
    /// In an archive tier (GET answered `InvalidObjectState`).
    Archived {
        rec: ObjectRecord,
    },
}

/// Bytes of small changed objects fetched while the listing runs, held at most this much.
pub const WARM_BUDGET: u64 = 16 * 1024 * 1024;
/// What one early fetch is charged at least (its task and metadata): at most 2,048 are held.
pub(super) const WARM_MIN: u64 = 8 * 1024;

/// A fetch started while the listing ran: the listed version and the spawned fetch (which
/// holds its bytes and a permit of [`WARM_BUDGET`] until the volume writer takes them).
pub(super) struct WarmFetch {
    pub(super) etag: String,
    pub(super) task: tokio::task::JoinHandle<Result<Fetched>>,
}

/// The fetches a run started during its listing, by key, for its ship loop.
#[derive(Clone, Default)]
pub(super) struct Warm(Arc<std::sync::Mutex<HashMap<String, WarmFetch>>>);

impl Warm {
    pub(super) fn insert(&self, key: String, fetch: WarmFetch) {
        self.0.lock().expect("warm map").insert(key, fetch);
    }

    /// The fetch of `key`, if one was started (each shard takes its own keys).
    pub(super) fn remove(&self, key: &str) -> Option<WarmFetch> {
        self.0.lock().expect("warm map").remove(key)
    }
}

/// Fetches small changed objects as the listing finds them: a bounded queue (a full one drops
/// the offer: that object is fetched in plan order later), at most `concurrency` GETs at once,
/// at most [`WARM_BUDGET`] bytes held (past it, offers are dropped). Stopped when the plan is
/// complete, before shipping starts, so no object is fetched twice.
pub(super) struct Warmer {
    pub(super) tx: mpsc::Sender<ObjectRecord>,
    pub(super) stopped: Arc<AtomicBool>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Warmer {
    pub(super) fn start(store: Store, bucket: String, concurrency: usize, warm: Warm) -> Self {
        let (tx, mut rx) = mpsc::channel::<ObjectRecord>(1024);
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = stopped.clone();
        let budget = Arc::new(Semaphore::new((WARM_BUDGET / 1024) as usize));
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let task = tokio::spawn(async move {
            while let Some(rec) = rx.recv().await {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                // A fetch costs its bytes, and its task and metadata (a few KiB) however
                // small the object: charged at least WARM_MIN, so tiny objects cannot pile up
                // tens of thousands of finished tasks.
                let kib = (rec.size.max(WARM_MIN) / 1024) as u32;
                let Ok(permit) = budget.clone().try_acquire_many_owned(kib) else {
                    continue; // the budget is spent: this one is fetched in plan order
                };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (store, bucket, key, etag) = (
                    store.clone(),
                    bucket.clone(),
                    rec.key.clone(),
                    rec.etag.clone(),
                );
                let task = tokio::spawn(async move {
                    let fetched = fetch_one(store, bucket, rec, permit).await;
                    drop(slot);
                    fetched
                });
                warm.insert(key, WarmFetch { etag, task });
            }
        });
        Warmer { tx, stopped, task }
    }

    /// The listing found a changed object (an added one may still be a rename: its fetch is
    /// then simply dropped).
    pub(super) fn offer(&self, rec: &ObjectRecord) {
        if rec.size <= SMALL_OBJECT && !self.stopped.load(Ordering::SeqCst) {
            let _ = self.tx.try_send(rec.clone());
        }
    }

    /// No more fetches start; the ones started stay in the map.
    pub(super) async fn stop(self) {
        self.stopped.store(true, Ordering::SeqCst);
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// Fetch the puts in order, several at a time: small objects whole, large ones' first chunk.
/// Memory is bounded by `PREFETCH_BUDGET`; results arrive in plan order.
pub(super) fn spawn_fetcher(
    store: Store,
    bucket: String,
    mut puts: mpsc::Receiver<Result<ObjectRecord>>,
    concurrency: usize,
    warm: Warm,
) -> mpsc::Receiver<Result<Fetched>> {
    let (tx, rx) = mpsc::channel(concurrency.max(1));
    let budget = Arc::new(Semaphore::new((PREFETCH_BUDGET / 1024) as usize));
    tokio::spawn(async move {
        // Each item is a spawned fetch (so fetches proceed while the channel is full); permits
        // are taken in plan order, so the byte budget can never deadlock the ordered stream.
        #[allow(clippy::async_yields_async)]
        let results = futures::stream::poll_fn(move |cx| puts.poll_recv(cx))
            .then(|rec| {
                let (store, bucket, budget) = (store.clone(), bucket.clone(), budget.clone());
                // Fetched while the listing ran (the same listed version, its own budget).
                let early = rec.as_ref().ok().and_then(|rec| {
                    warm.remove(&rec.key)
                        .filter(|w| w.etag == rec.etag)
                        .map(|w| w.task)
                });
                async move {
                    // The plan's puts file failed to read: that error ends the stream.
                    let rec = match rec {
                        Ok(rec) => rec,
                        Err(e) => return tokio::spawn(async move { Err(e) }),
                    };
                    if let Some(task) = early {
                        return task;
                    }
                    // What the fetch will hold: the whole small object, or a large one's first
                    // chunk (held until the volume writer takes it).
                    let held = if rec.size > SMALL_OBJECT {
                        CHUNK
                    } else {
                        rec.size
                    };
                    let kib = (held.min(PREFETCH_BUDGET) / 1024).max(1) as u32;
                    let permit = budget
                        .acquire_many_owned(kib)
                        .await
                        .expect("semaphore open");
                    tokio::spawn(fetch_one(store, bucket, rec, permit))
                }
            })
            .buffered(concurrency.max(1));
        let mut results = std::pin::pin!(results);
        while let Some(res) = results.next().await {
            let res = res.unwrap_or_else(|e| {
                Err(Error::Stream {
                    bucket: bucket.clone(),
                    key: String::new(),
                    source: Box::new(e),
                })
            });
            let failed = res.is_err();
            if tx.send(res).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}

pub(super) async fn fetch_one(
    store: Store,
    bucket: String,
    rec: ObjectRecord,
    permit: OwnedSemaphorePermit,
) -> Result<Fetched> {
    let (mut etag, mut size) = (rec.etag.clone(), rec.size);
    let mut planned_etag = None;
    for _ in 0..4 {
        let range = (size > SMALL_OBJECT).then_some((0, CHUNK - 1));
        let got = match store.get(&bucket, &rec.key, Some(&etag), range).await {
            Err(Error::Archived { .. }) => return Ok(Fetched::Archived { rec }),
            got => got?,
        };
        match got {
            Got::Found { mut meta, body } => {
                // A multipart object's part sizes, so that the far side uploads it the same way.
                meta.part_layout = store
                    .part_layout(&bucket, &rec.key, &meta.etag, meta.size)
                    .await?;
                let body = match range {
                    Some(_) => Body::Ranged(body, permit),
                    None => Body::Whole(body, permit),
                };
                return Ok(Fetched::Found {
                    rec,
                    meta,
                    body,
                    planned_etag,
                });
            }
            Got::Gone => return Ok(Fetched::Gone { rec }),
            Got::Changed => match store.head(&bucket, &rec.key).await? {
                None => return Ok(Fetched::Gone { rec }),
                Some((new_etag, new_size)) => {
                    info!(bucket, key = %rec.key, planned = %rec.etag, current = %new_etag, "object changed since listing: shipping the current version");
                    planned_etag = Some(rec.etag.clone());
                    etag = new_etag;
                    size = new_size;
                }
            },
        }
    }
    Err(Error::ObjectChanged {
        bucket,
        key: rec.key,
    })
}

pub(super) fn jsonl_headers() -> crate::format::manifest::ObjectHeaders {
    crate::format::manifest::ObjectHeaders {
        content_type: Some("application/x-ndjson".into()),
        ..Default::default()
    }
}

/// A volume's headers: a ZIP, tagged with the run that wrote it (so that a volume index
/// handed out twice is caught when the second writer completes, not replaced silently).
pub(super) fn volume_headers(owner: &str) -> crate::format::manifest::ObjectHeaders {
    crate::format::manifest::ObjectHeaders {
        content_type: Some("application/zip".into()),
        metadata: [(crate::store::WRITER_METADATA.to_string(), owner.to_string())].into(),
        ..Default::default()
    }
}

/// At most how long `rec`'s line in its volume's manifest is (its digests not known yet: the
/// longest they can be), with the comma before it.
pub(super) fn manifest_line_bound(rec: &ObjectRecord, entry: &str, meta: &ObjectMeta) -> u64 {
    // An object streamed in ranges may be cut into parts (a deadline mid-object): its line
    // then names a part's entry and carries the part's place and the object's digests.
    let ranged = meta.size > SMALL_OBJECT;
    let probe = ObjectEntry {
        key: rec.key.clone(),
        entry: if ranged {
            crate::format::parts::part_entry(entry, u32::MAX)
        } else {
            entry.to_string()
        },
        size: meta.size,
        etag: meta.etag.clone(),
        last_modified: rfc3339_ms(meta.last_modified_ms),
        sha256: "0".repeat(64),
        crc32: u32::MAX,
        storage_class: rec.storage_class.clone(),
        headers: meta.headers.clone(),
        // A replaced object records the ETag it was planned with: about as long as its own.
        planned_etag: Some(rec.etag.clone()),
        version_id: meta.version_id.clone(),
        part_layout: meta.part_layout.clone(),
        // The longest MIME type infer names is well under this.
        detected_type: Some("x".repeat(127)),
        split: ranged.then(|| crate::format::parts::Split {
            part: u32::MAX,
            offset: u64::MAX,
            object_size: u64::MAX,
            object_sha256: Some("0".repeat(64)),
            object_crc32: Some(u32::MAX),
        }),
    };
    serde_json::to_vec(&probe).map_or(64 * 1024, |j| j.len() as u64) + 1
}
