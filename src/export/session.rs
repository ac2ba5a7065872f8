//! A run's hold on the job: the lease, renewed by a heartbeat while the run moves data.

use super::*;

/// A run's hold on the job: the lease, renewed by a heartbeat while the run works.
pub(super) struct Session<'a> {
    pub(super) cfg: &'a ExportConfig,
    pub(super) owner: String,
    pub(super) table: StateTable,
    pub(super) state: JobState,
    pub(super) heartbeat: tokio::task::JoinHandle<()>,
    pub(super) signer: Option<Box<dyn crate::format::sign::Signer>>,
    /// The run's S3 store: the shared client, this run's own context (activity counters, and
    /// the stop token the heartbeat stops when the lease is lost).
    pub(super) store: Store,
}

impl<'a> Session<'a> {
    /// Take (or renew) the lease for `owner`; `sign`: open the signing key first (a key that
    /// cannot be used fails the run before it takes the lease).
    pub(super) async fn start(
        clients: &'a Clients,
        cfg: &'a ExportConfig,
        owner: &str,
        sign: bool,
    ) -> Result<Session<'a>> {
        cfg.tuning.validate()?;
        let signer = match (&cfg.signing, sign) {
            (Some(spec), true) => Some(crate::store::kms::open_signer(spec, &clients.kms).await?),
            _ => None,
        };
        let table = clients.table(&cfg.table);
        let job = cfg.job.as_str();
        let state = table.acquire(job, owner, cfg.lease_ttl).await?;
        // The caller's run context (one per run: `Clients::for_run`); every write and delete
        // of the run is refused once the heartbeat finds the lease lost.
        let store = clients.s3.leased(job);
        let lost = store.run().stop().clone();
        let heartbeat = {
            let activity = store.activity().clone();
            let (table, job, owner, ttl, lost) = (
                table.clone(),
                job.to_string(),
                owner.to_string(),
                cfg.lease_ttl,
                lost.clone(),
            );
            let since = now_ms();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    // A run that moves no data (a request that never returns) stops renewing:
                    // its lease expires and another run can take the job over; this one will
                    // not commit.
                    let idle = activity.idle_for(since);
                    if stalled(idle, ttl) {
                        warn!(
                            job,
                            idle_s = idle.as_secs(),
                            "no data moved for too long: letting the lease expire"
                        );
                        lost.lease_lost();
                        return;
                    }
                    if let Err(e) = table.renew(&job, &owner, ttl).await {
                        warn!(job, error = %e, "lease renewal failed");
                        if matches!(e, Error::LeaseLost { .. }) {
                            lost.lease_lost();
                            return;
                        }
                    }
                }
            })
        };
        Ok(Session {
            cfg,
            owner: owner.to_string(),
            table,
            state,
            heartbeat,
            signer,
            store,
        })
    }

    pub(super) fn run<'s>(&'s self, progress: &'s dyn Progress) -> Run<'s> {
        Run {
            store: self.store.clone(),
            cfg: self.cfg,
            table: &self.table,
            owner: &self.owner,
            state: &self.state,
            layout: Layout {
                dest: self.cfg.dest.clone(),
                job: self.cfg.job.as_str().to_string(),
                sealed: self.cfg.encrypt_to.is_some(),
            },
            started: Instant::now(),
            progress,
            signer: self.signer.as_deref(),
            fence: std::sync::OnceLock::new(),
            warm: Warm::default(),
            warm_up: true,
            listing_hops: false,
            one_process: true,
            claims: tokio::sync::Mutex::new(()),
        }
    }

    /// Stop renewing; `release`: give the lease back (a run that did not commit).
    pub(super) async fn end(self, release: bool) {
        self.heartbeat.abort();
        if release && let Err(e) = self.table.release(self.cfg.job.as_str(), &self.owner).await {
            warn!(job = %self.cfg.job, error = %e, "could not release the lease; it expires by itself");
        }
    }
}

pub fn stall_limit(lease_ttl: Duration) -> Duration {
    (lease_ttl * 3).max(Duration::from_secs(600))
}

pub(super) fn stalled(idle: Duration, lease_ttl: Duration) -> bool {
    idle > stall_limit(lease_ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_gives_up_only_after_the_stall_limit() {
        let ttl = Duration::from_secs(300);
        assert_eq!(stall_limit(ttl), Duration::from_secs(900));
        assert_eq!(
            stall_limit(Duration::from_secs(10)),
            Duration::from_secs(600)
        );
        assert!(!stalled(Duration::from_secs(899), ttl));
        assert!(stalled(Duration::from_secs(901), ttl));
    }
}
