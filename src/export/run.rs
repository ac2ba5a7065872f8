//! One run of a job's export: what it holds (lease, fence, store, config) and the small helpers
//! every phase uses (deadline, lease and fence checks, JSON documents).

use super::*;

pub(super) struct Run<'a> {
    /// The run's store (its activity counters are this run's alone).
    pub(super) store: Store,
    pub(super) cfg: &'a ExportConfig,
    pub(super) table: &'a StateTable,
    pub(super) owner: &'a str,
    pub(super) state: &'a JobState,
    pub(super) layout: Layout,
    pub(super) started: Instant,
    pub(super) progress: &'a dyn Progress,
    pub(super) signer: Option<&'a dyn crate::format::sign::Signer>,
    /// This run's claim on the bundle's checkpoint (set when the bundle is opened).
    pub(super) fence: std::sync::OnceLock<Arc<crate::store::Fence>>,
    /// Objects fetched while the listing ran, for the ship loop.
    pub(super) warm: Warm,
    /// Fetch small changed objects while the listing runs (false in a plan step: the shard
    /// steps that ship run elsewhere).
    pub(super) warm_up: bool,
    /// A listing that reaches the deadline stops and is saved, to go on in the next call (a
    /// plan step; a run in one process lists to the end).
    pub(super) listing_hops: bool,
    /// Every write of the bundle since this run's first sweep of open uploads was this
    /// process's (a run in one process; false in the steps of a Step Functions run).
    pub(super) one_process: bool,
    /// One volume claim at a time from this process (DynamoDB's counter is atomic; a test
    /// double's may not be, and this process's shards never need to race each other).
    pub(super) claims: tokio::sync::Mutex<()>,
}

/// The bundle a run works on.
pub(super) enum Opened {
    /// A bundle to ship (`fresh`: planned by this run).
    Bundle {
        ck: Box<Checkpoint>,
        plan: Box<StoredPlan>,
        fresh: bool,
    },
    /// Nothing to ship: the run is over (no changes, committed).
    Finished(Box<Report>),
    /// A plan step's listing stopped at its deadline (saved): call the step again.
    Listing { sequence: u64, hop: u32 },
}

/// What planning found.
pub(super) enum Planned {
    Bundle(Box<Checkpoint>, StoredPlan),
    Empty {
        plan: Plan,
        listed_at: String,
    },
    /// The listing stopped at the deadline after this many calls (saved: call again).
    Listing {
        hop: u32,
    },
}

/// Where the ship loop stopped.
pub(super) enum Shipped {
    Done,
    Deadline,
}

pub(super) struct OpenVolume {
    pub(super) writer: VolumeWriter<MultipartUpload>,
    pub(super) index: u32,
    pub(super) key: String,
    /// The bundle's sequence (where the plaintext copy of its manifest goes).
    pub(super) sequence: u64,
    /// Its manifest so far (compact JSON, object by object).
    pub(super) objects: ManifestJson,
    pub(super) bytes: u64,
    /// Estimated bytes of this volume's manifest and central directory (see
    /// [`limits::WRITER_METADATA_BUDGET`]).
    pub(super) metadata: u64,
    /// Upper bounds of the bytes its entries take where they are written, and of its central
    /// directory: with the manifest and [`crate::format::archive::TAIL_RESERVE`], what the finished
    /// volume can weigh (so `--volume-size` is a hard cap).
    pub(super) entries_bound: u64,
    pub(super) central_bound: u64,
}

impl OpenVolume {
    /// At most how large this volume is once finished with `more` bytes of entries (their
    /// local and central records and manifest lines, bounds) and `final_json` bytes of final
    /// manifest; `recipients`: sealed to that many.
    pub(super) fn bound(&self, more: u64, final_json: u64, recipients: Option<usize>) -> u64 {
        let plain = self.entries_bound
            + self.central_bound
            + self.objects.len()
            + more
            + final_json
            + crate::format::archive::TAIL_RESERVE;
        match recipients {
            Some(r) => crate::format::archive::sealed_size(plain, r),
            None => plain,
        }
    }
}

impl Run<'_> {
    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// How many age recipients the volumes are sealed to (`None`: not sealed).
    pub(super) fn recipients(&self) -> Option<usize> {
        self.cfg.encrypt_to.as_ref().map(|r| r.len())
    }

    pub(super) fn past_deadline(&self) -> bool {
        self.cfg.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// A later step of this run works on bundle `seq`: the one after the last committed.
    pub(super) fn expect_sequence(&self, seq: u64) -> Result<()> {
        let next = self.state.sequence + 1;
        if seq == next {
            return Ok(());
        }
        Err(Error::config(
            "sequence",
            format!(
                "the step is for bundle {seq} of job `{}` but the next bundle is {next}{}",
                self.layout.job,
                if seq < next {
                    " (it was committed already)"
                } else {
                    ""
                }
            ),
        ))
    }

    pub(super) fn check_lease(&self) -> Result<()> {
        if self.store.run().stop().is_lease_lost() {
            return Err(Error::LeaseLost {
                job: self.layout.job.clone(),
            });
        }
        Ok(())
    }

    /// Write the checkpoint under this run's fence: `Fenced` once another run took over.
    pub(super) async fn save_checkpoint(&self, ck: &Checkpoint) -> Result<()> {
        let body = serde_json::to_vec_pretty(ck).expect("serialisable");
        let held = self.fence().write(Bytes::from(body)).await?;
        self.still_held(held, ck.sequence)
    }

    /// Check that no other run has taken the bundle over (the checkpoint is still ours).
    pub(super) async fn confirm_fence(&self, seq: u64) -> Result<()> {
        let held = self.fence().confirm().await?;
        self.still_held(held, seq)
    }

    pub(super) fn fence(&self) -> &crate::store::Fence {
        self.fence
            .get()
            .expect("the fence is set when the bundle is opened")
    }

    /// `Fenced` (and the run marked as having lost its lease) when the claim is gone.
    pub(super) fn still_held(&self, held: bool, seq: u64) -> Result<()> {
        if held {
            return Ok(());
        }
        self.store.run().stop().lease_lost();
        Err(Error::Fenced {
            bucket: self.cfg.dest.bucket.clone(),
            key: self.layout.checkpoint_key(seq),
        })
    }

    pub(super) async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let body = serde_json::to_vec_pretty(value).expect("serialisable");
        self.store()
            .put_document(
                &self.cfg.dest.bucket,
                key,
                Bytes::from(body),
                "application/json",
            )
            .await
    }

    pub(super) async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>> {
        let Some(body) = self
            .store()
            .get_document(&self.cfg.dest.bucket, key)
            .await?
        else {
            return Ok(None);
        };
        self.parse_json(&body, key, what).map(Some)
    }

    /// A stored document of ours, parsed (`Corrupt`, naming it, if it does not parse).
    pub(super) fn parse_json<T: for<'de> Deserialize<'de>>(
        &self,
        body: &[u8],
        key: &str,
        what: &'static str,
    ) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| Error::Corrupt {
            what,
            location: self.layout.uri(key),
            hint: "take a new baseline",
            source: Box::new(e),
        })
    }
}
