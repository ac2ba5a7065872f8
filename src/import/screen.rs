//! The far side's own screening of what crosses: its content policy (`--policy`) and a
//! scanner (`--scan 'CMD'`, `{}` the path of a file holding the object's verified bytes;
//! clamscan's convention: exit 0 clean, 1 flagged, anything else a scanner failure). An object
//! that fails is never written to the target: with `--quarantine` it goes there instead
//! (verified bytes and a JSON sidecar saying why) for a person to review. A scanner that fails
//! fails the import closed: nothing of that object is written and the state does not pass it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::config::S3Location;
use crate::error::{Error, Result, io_at};
use crate::format::manifest::{ObjectEntry, ObjectHeaders};
use crate::import::target::ObjectWriter;
use crate::policy::{Inspector, Policy};
use crate::store::Store;

/// Where quarantined objects go.
#[derive(Clone)]
pub enum Quarantine {
    Dir(PathBuf),
    Bucket(Store, S3Location),
}

impl std::fmt::Debug for Quarantine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quarantine::Dir(d) => write!(f, "{}", d.display()),
            Quarantine::Bucket(_, l) => write!(f, "{l}"),
        }
    }
}

/// An object kept out of the target, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub reason: String,
    /// Where its bytes and sidecar are (absent without `--quarantine`: not kept at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

/// How an import screens objects.
#[derive(Debug)]
pub struct Screen {
    pub policy: Option<Arc<Policy>>,
    /// The scanner's command line (`{}`: the object's file).
    pub scan: Option<String>,
    pub quarantine: Option<Quarantine>,
    /// Scans at once (`--scan-concurrency`).
    pub scans: Arc<Semaphore>,
    flagged: Mutex<Vec<Quarantined>>,
}

impl Screen {
    pub fn new(
        policy: Option<Arc<Policy>>,
        scan: Option<String>,
        quarantine: Option<Quarantine>,
        scan_concurrency: usize,
    ) -> Arc<Screen> {
        Arc::new(Screen {
            policy,
            scan,
            quarantine,
            scans: Arc::new(Semaphore::new(scan_concurrency.max(1))),
            flagged: Mutex::new(Vec::new()),
        })
    }

    /// The objects kept out since the last call.
    pub fn take_flagged(&self) -> Vec<Quarantined> {
        std::mem::take(&mut *self.flagged.lock().expect("lock"))
    }

    /// `inner` (the target's writer of `obj` at `rel`, bundle `job`/`sequence`) screened.
    pub fn writer(
        self: &Arc<Self>,
        inner: Box<dyn ObjectWriter>,
        obj: &ObjectEntry,
        rel: &str,
        bundle: (&str, u64),
    ) -> Result<Box<dyn ObjectWriter>> {
        let keep = self.scan.is_some() || self.quarantine.is_some();
        let file = match keep {
            true => Some(tempfile::NamedTempFile::new().map_err(io_at(
                "creating a file for an object to screen in",
                &std::env::temp_dir(),
            ))?),
            false => None,
        };
        let out = match &file {
            Some(f) => Some(tokio::fs::File::from_std(
                f.reopen()
                    .map_err(io_at("opening the screening file", f.path()))?,
            )),
            None => None,
        };
        Ok(Box::new(Screened {
            inner,
            check: Check {
                screen: self.clone(),
                inspector: self.policy.clone().map(Inspector::owning),
                file,
                out,
                key: obj.key.clone(),
                rel: rel.to_string(),
                headers: obj.headers.clone(),
                size: 0,
                sha: Sha256::new(),
                bundle: (bundle.0.to_string(), bundle.1),
            },
        }))
    }
}

/// The target's writer, and the screening of what goes through it.
struct Screened {
    inner: Box<dyn ObjectWriter>,
    check: Check,
}

/// What a screened object has shown so far.
struct Check {
    screen: Arc<Screen>,
    inspector: Option<Inspector<Arc<Policy>>>,
    file: Option<tempfile::NamedTempFile>,
    out: Option<tokio::fs::File>,
    key: String,
    rel: String,
    headers: ObjectHeaders,
    size: u64,
    sha: Sha256,
    bundle: (String, u64),
}

impl Check {
    /// Why the object must be kept out, if it must; an error when the scanner failed.
    async fn verdict(&mut self) -> Result<Option<String>> {
        if let Some(p) = &self.screen.policy {
            let why = p
                .judge_key(&self.rel, self.size)
                .or_else(|| p.judge_headers(&self.headers))
                .or_else(|| {
                    let i = self.inspector.take()?;
                    i.finish(&self.rel, self.headers.content_type.as_deref()).1
                });
            if let Some(why) = why {
                return Ok(Some(format!("policy: {why}")));
            }
        }
        let (Some(cmd), Some(file)) = (&self.screen.scan, &self.file) else {
            return Ok(None);
        };
        let _slot = self
            .screen
            .scans
            .clone()
            .acquire_owned()
            .await
            .expect("open");
        crate::policy::scanner::scan(cmd, file.path(), &self.key).await
    }

    /// Keep the object's verified bytes (and why) in the quarantine; its place.
    async fn quarantine(&self, q: &Quarantine, reason: &str, sha256: &str) -> Result<String> {
        let file = self.file.as_ref().expect("a quarantine keeps a file");
        let (job, seq) = (&self.bundle.0, self.bundle.1);
        let name = if crate::format::archive::is_safe_path(&self.rel) {
            self.rel.clone()
        } else {
            format!(
                "_escaped/{}",
                hex::encode(Sha256::digest(self.rel.as_bytes()))
            )
        };
        let rel = format!("{job}/{seq:08}/{name}");
        let sidecar = serde_json::to_vec_pretty(&serde_json::json!({
            "key": self.key, "size": self.size, "sha256": sha256, "reason": reason,
            "job": job, "sequence": seq, "quarantined_at": crate::clock::rfc3339_ms(crate::clock::now_ms()),
            "content_type": self.headers.content_type, "metadata": self.headers.metadata, "tags": self.headers.tags,
        }))
        .expect("sidecar serialises");
        match q {
            Quarantine::Dir(dir) => {
                let path = dir.join(&rel);
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(io_at("creating the quarantine folder", parent))?;
                }
                tokio::fs::copy(file.path(), &path)
                    .await
                    .map_err(io_at("writing into the quarantine", &path))?;
                let side = PathBuf::from(format!("{}.ferry-quarantine.json", path.display()));
                tokio::fs::write(&side, sidecar)
                    .await
                    .map_err(io_at("writing into the quarantine", &side))?;
                Ok(path.display().to_string())
            }
            Quarantine::Bucket(store, loc) => {
                let key = loc.key(&rel);
                let mut up = store.multipart(
                    &loc.bucket,
                    &key,
                    crate::config::MIN_PART_SIZE,
                    2,
                    &ObjectHeaders::default(),
                );
                let mut f = tokio::fs::File::open(file.path())
                    .await
                    .map_err(io_at("reading the screening file", file.path()))?;
                let copied = tokio::io::copy(&mut f, &mut up).await;
                if let Err(e) = copied {
                    up.abort().await;
                    return Err(Error::Stream {
                        bucket: loc.bucket.clone(),
                        key,
                        source: Box::new(e),
                    });
                }
                up.finish().await?;
                store
                    .put_document(
                        &loc.bucket,
                        &format!("{key}.ferry-quarantine.json"),
                        sidecar.into(),
                        "application/json",
                    )
                    .await?;
                Ok(format!("s3://{}/{key}", loc.bucket))
            }
        }
    }
}

#[async_trait]
impl ObjectWriter for Screened {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if let Some(i) = self.check.inspector.as_mut() {
            i.update(&chunk);
        }
        self.check.size += chunk.len() as u64;
        self.check.sha.update(&chunk);
        if let (Some(out), Some(f)) = (self.check.out.as_mut(), &self.check.file) {
            out.write_all(&chunk)
                .await
                .map_err(io_at("writing the screening file", f.path()))?;
        }
        self.inner.write(chunk).await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        if let (Some(out), Some(f)) = (self.check.out.as_mut(), &self.check.file) {
            out.flush()
                .await
                .map_err(io_at("writing the screening file", f.path()))?;
        }
        self.check.out = None;
        let verdict = match self.check.verdict().await {
            Ok(v) => v,
            Err(e) => {
                // Fail closed: nothing of it is written.
                let this = *self;
                this.inner.abort().await;
                return Err(e);
            }
        };
        let Some(reason) = verdict else {
            let this = *self;
            return this.inner.commit().await;
        };
        // The target's copy is undone first: never visible, and no upload left open should
        // the quarantine fail.
        let Screened { inner, check } = *self;
        inner.abort().await;
        let sha256 = hex::encode(check.sha.clone().finalize());
        let place = match &check.screen.quarantine {
            Some(q) => Some(check.quarantine(q, &reason, &sha256).await?),
            None => None,
        };
        warn!(key = %check.key, reason = %reason, place = ?place, "kept out of the target");
        check
            .screen
            .flagged
            .lock()
            .expect("lock")
            .push(Quarantined {
                key: check.key.clone(),
                size: check.size,
                sha256,
                reason,
                place,
            });
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        let this = *self;
        this.inner.abort().await
    }
}
