//! The fast tier's harness: one test's world on the in-memory stores (objects and state
//! tables in this process, no server), with the same shape as [`crate::util::Ctx`] — a source
//! bucket, an export bucket, a state table, a job — and the library's export run in process.
//! Logic tests live here; moto keeps the adapter conformance, the CLI contract and the end to
//! ends.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use s3_ferry::config::ExportConfig;
use s3_ferry::format::manifest::ObjectHeaders;
use s3_ferry::store::aws::Clients;
use s3_ferry::store::{Got, MemoryStore, MemoryTables, ObjectStore, PutMode};

use crate::util::{Bundle, block_on, unique};

pub struct World {
    pub objects: Arc<MemoryStore>,
    pub clients: Clients,
    pub src: String,
    pub exp: String,
    pub table: String,
    pub job: String,
}

impl World {
    pub fn new(name: &str) -> World {
        let id = unique(name);
        let objects = Arc::new(MemoryStore::new());
        let clients = Clients::over(objects.clone(), Arc::new(MemoryTables::default()));
        let w = World {
            objects,
            clients,
            src: format!("src-{id}"),
            exp: format!("exp-{id}"),
            table: format!("state-{id}"),
            job: format!("job-{id}"),
        };
        w.objects.create_bucket(&w.src);
        w.objects.create_bucket(&w.exp);
        block_on(w.clients.table(&w.table).init()).unwrap();
        w
    }

    pub fn source_uri(&self) -> String {
        format!("s3://{}", self.src)
    }

    pub fn dest_uri(&self) -> String {
        format!("s3://{}/bundles", self.exp)
    }

    /// The job's export settings, as `ferry export` builds them without flags.
    pub fn export_config(&self) -> ExportConfig {
        ExportConfig::new(
            self.job.parse().unwrap(),
            self.source_uri().parse().unwrap(),
            self.dest_uri().parse().unwrap(),
            self.table.clone(),
        )
    }

    /// Run one export with the settings `tune` makes of the defaults; its report as
    /// `ferry export --json` prints it.
    pub fn export_with(&self, tune: impl FnOnce(&mut ExportConfig)) -> serde_json::Value {
        let mut cfg = self.export_config();
        tune(&mut cfg);
        cfg.tuning.validate().unwrap();
        let report = block_on(s3_ferry::export::run(
            &self.clients.for_run(),
            &cfg,
            &s3_ferry::progress::NoProgress,
        ))
        .unwrap_or_else(|e| panic!("export failed: {}", s3_ferry::error_chain(&e)));
        serde_json::to_value(&report).unwrap()
    }

    pub fn export(&self) -> serde_json::Value {
        self.export_with(|_| {})
    }

    /// `ferry plan --json` in process: the counts of the delta, nothing written.
    pub fn plan_with(&self, tune: impl FnOnce(&mut ExportConfig)) -> serde_json::Value {
        let mut cfg = self.export_config();
        tune(&mut cfg);
        let (_, plan, _) =
            block_on(s3_ferry::export::plan_only(&self.clients.for_run(), &cfg)).unwrap();
        let s = &plan.stats;
        serde_json::json!({
            "listed": s.listed, "unchanged": s.unchanged, "added": s.added,
            "modified": s.modified, "deleted": s.deleted, "moved": s.moved,
            "skipped": s.skipped, "bytes": s.put_bytes, "list_ranges": s.list_ranges,
            "metadata_only": s.metadata_only, "head_object": s.metadata_heads,
            "get_object_tagging": s.tag_reads,
        })
    }

    /// Put `KEY` into the source bucket.
    pub fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        self.put_in(&self.src.clone(), key, body);
    }

    pub fn put_in(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
        let body = Bytes::from(body.into());
        let h = ObjectHeaders::default();
        block_on(self.objects.put(bucket, key, body, &h, PutMode::Overwrite)).unwrap();
    }

    pub fn put_many(&self, objects: Vec<(String, Vec<u8>)>) {
        for (k, body) in objects {
            self.put(&k, body);
        }
    }

    /// Put objects in a storage class (`GLACIER`, `DEEP_ARCHIVE`: unreadable until restored).
    pub fn put_many_in_class(&self, objects: Vec<(String, Vec<u8>)>, class: &str) {
        for (k, body) in objects {
            self.put(&k, body);
            self.objects.set_storage_class(&self.src, &k, class);
        }
    }

    pub fn delete(&self, key: &str) {
        block_on(self.objects.delete(&self.src, key)).unwrap();
    }

    pub fn delete_keys(&self, keys: impl IntoIterator<Item = String>) {
        for k in keys {
            self.delete(&k);
        }
    }

    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        block_on(self.clients.s3.keys(bucket, prefix)).unwrap()
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        match block_on(self.clients.s3.get(bucket, key, None, None)).unwrap() {
            Got::Found { body, .. } => Some(body.to_vec()),
            _ => None,
        }
    }

    /// Multipart uploads still open in `bucket`.
    pub fn open_uploads_in(&self, bucket: &str) -> usize {
        block_on(self.objects.list_uploads(bucket, "", None))
            .unwrap()
            .map_or(0, |p| p.uploads.len())
    }

    /// Run an export of job `job` (not the world's own) with the settings `tune` makes.
    pub fn export_job(&self, job: &str, tune: impl FnOnce(&mut ExportConfig)) -> serde_json::Value {
        self.export_with(|c| {
            c.job = job.parse().unwrap();
            tune(c)
        })
    }

    pub fn state(&self) -> s3_ferry::state::JobState {
        block_on(self.clients.table(&self.table).load(&self.job))
            .unwrap()
            .expect("job state")
    }

    /// Bundle `seq` of `job`, copied to a local folder as `ferry download` lays it out.
    pub fn download(&self, job: &str, seq: u64) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("bundles/{job}/{seq:08}/");
        let keys = self.keys(&self.exp, &prefix);
        assert!(!keys.is_empty(), "no bundle at s3://{}/{prefix}", self.exp);
        for key in &keys {
            let body = self.get(&self.exp, key).unwrap();
            std::fs::write(dir.path().join(&key[prefix.len()..]), body).unwrap();
        }
        Bundle::open(dir)
    }
}

impl World {
    /// A bucket `name` (unique) in this world.
    pub fn bucket(&self, name: &str) -> String {
        let b = unique(name);
        self.objects.create_bucket(&b);
        b
    }

    /// A bucket import target over `store` (the world's, or a decorator over it).
    pub fn bucket_target(
        &self,
        store: &s3_ferry::store::Store,
        dest: &str,
    ) -> Arc<dyn s3_ferry::import::target::Target> {
        Arc::new(s3_ferry::import::target::Bucket {
            store: store.clone(),
            dest: dest.parse().unwrap(),
            part_size: 5 << 20,
        })
    }

    /// A directory import target.
    pub fn dir_target(&self, dir: &std::path::Path) -> Arc<dyn s3_ferry::import::target::Target> {
        Arc::new(s3_ferry::import::target::Dir {
            root: dir.canonicalize().unwrap(),
        })
    }

    /// `ferry import SOURCE… --to/--to-dir … --state STATE --json` in process.
    pub fn import(
        &self,
        sources: &[&std::path::Path],
        target: Arc<dyn s3_ferry::import::target::Target>,
        state: &std::path::Path,
    ) -> serde_json::Value {
        self.import_with(sources, target, state, |_| {})
            .unwrap_or_else(|e| panic!("import failed: {}", s3_ferry::error_chain(&e)))
    }

    /// [`World::import`] with the settings `tune` makes, its error given back.
    pub fn import_with(
        &self,
        sources: &[&std::path::Path],
        target: Arc<dyn s3_ferry::import::target::Target>,
        state: &std::path::Path,
        tune: impl FnOnce(&mut s3_ferry::import::ImportConfig),
    ) -> s3_ferry::Result<serde_json::Value> {
        let sources: Vec<String> = sources
            .iter()
            .map(|p| p.to_str().unwrap().to_string())
            .collect();
        block_on(async {
            let found = s3_ferry::import::bundle::discover(&sources, None, None)
                .await
                .unwrap();
            let bundles =
                s3_ferry::import::bundle::one_job(found, None, &sources.join(", ")).unwrap();
            let mut cfg = s3_ferry::import::ImportConfig {
                approvals: None,
                force_reason: None,
                target,
                dry_run: false,
                force: false,
                concurrency: 8,
                deadline: None,
                trust: Vec::new(),
                delete_unlisted: false,
                run: Default::default(),
                skip_object_lock: false,
                screen: None,
            };
            tune(&mut cfg);
            let mut ledger = s3_ferry::import::ledger::FileLedger::open(state)
                .await
                .unwrap();
            let report = s3_ferry::import::run(
                ledger.as_mut(),
                &cfg,
                &bundles,
                &s3_ferry::progress::NoProgress,
            )
            .await;
            ledger.close().await.unwrap();
            Ok(serde_json::to_value(&report?).unwrap())
        })
    }
}

impl World {
    /// The world's clients with their object requests through a new `Scripted` decorator
    /// (its counts, logs and faults), the state tables shared.
    pub fn scripted(&self) -> (Arc<s3_ferry::store::Scripted>, Clients) {
        let scripted = s3_ferry::store::Scripted::new(self.objects.clone());
        let clients = Clients::over(scripted.clone(), self.clients.tables().clone());
        (scripted, clients)
    }
}

/// `work` run to its end in a thread and runtime of its own (the engine's futures are not
/// `Send`): for tests that hold it at a gate while they act.
pub fn on_own_thread<T, F, Fut>(work: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(work())
    })
}

/// An export run through `clients` on its own thread ([`on_own_thread`]).
pub fn export_in_thread(
    clients: Clients,
    cfg: ExportConfig,
) -> std::thread::JoinHandle<s3_ferry::Result<s3_ferry::export::Report>> {
    on_own_thread(move || async move {
        s3_ferry::export::run(&clients, &cfg, &s3_ferry::progress::NoProgress).await
    })
}

/// Another run (`thief`) takes the lease of `item` from whoever holds it, as one that found it
/// expired would; then wait (at most 30 s) until the holder's heartbeat has noticed, which
/// stops `run`'s token.
pub fn steal_lease(
    table: &s3_ferry::state::StateTable,
    item: &str,
    thief: &str,
    run: &s3_ferry::context::RunContext,
) {
    let owner = block_on(table.load(item))
        .unwrap()
        .and_then(|s| s.lease_owner)
        .expect("somebody holds the lease");
    block_on(table.release(item, &owner)).unwrap();
    block_on(table.acquire(item, thief, std::time::Duration::from_secs(600))).unwrap();
    let waited = std::time::Instant::now();
    while !run.stop().is_lease_lost() {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(30),
            "the heartbeat never noticed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The requests in `log` that change something (writes, copies, uploads, deletes): all but
/// reads and the aborts of a run's own uploads.
pub fn mutations(log: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    log.iter()
        .filter(|(op, _)| {
            !matches!(
                *op,
                "GetObject"
                    | "HeadObject"
                    | "ListObjectsV2"
                    | "ListMultipartUploads"
                    | "AbortMultipartUpload"
            )
        })
        .cloned()
        .collect()
}

impl crate::util::Inspect for World {
    fn export_bucket(&self) -> &str {
        &self.exp
    }
    fn job_name(&self) -> &str {
        &self.job
    }
    fn keys_of(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.keys(bucket, prefix)
    }
    fn get_of(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.get(bucket, key)
    }
    fn download_of(&self, job: &str, seq: u64) -> Bundle {
        self.download(job, seq)
    }
}
