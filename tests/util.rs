//! Shared test harness: starts one moto server per test process (fails loudly if it cannot),
//! gives every test its own buckets, table and job, runs the real `ferry` binary against it, and
//! checks archives with real zip readers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use aws_sdk_s3::primitives::ByteStream;
use s3_ferry::format::manifest::{BundleSummary, MANIFEST_ENTRY, Manifest};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    rt().block_on(f)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto server that lives as long as the test process: it stops when our end of its
/// command channel (its stdin, or its connection to the zygote) closes.
pub struct Moto {
    pub endpoint: String,
    guard: Mutex<(Box<dyn std::io::Write + Send>, Box<dyn BufRead + Send>)>,
}

impl Moto {
    /// Create `d{i%100}/o{i:06}` (body `i`) for i < n directly in moto's store: a fixture
    /// for tests that need more objects than HTTP PUTs create in reasonable time.
    pub fn seed_numbered(&self, bucket: &str, n: u64) {
        let mut guard = self.guard.lock().unwrap();
        let (commands, answers) = &mut *guard;
        writeln!(commands, "seed-numbered {bucket} {n}").unwrap();
        commands.flush().unwrap();
        let mut line = String::new();
        answers.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok", "seeding failed: {line}");
    }
}

pub fn python() -> PathBuf {
    let p = Path::new(ROOT).join(".venv/bin/python");
    assert!(
        p.exists(),
        "the project venv is missing ({}): run scripts/setup.sh (scripts/test.sh does it)",
        p.display()
    );
    p
}

/// Start a moto server on a free loopback port; panics (never skips) if it cannot. Under
/// scripts/test.sh it is forked from the run's zygote (`FERRY_MOTO_ZYGOTE`, moto already
/// imported: milliseconds instead of ~1.5 CPU seconds); otherwise a process of its own.
pub fn start_moto() -> Moto {
    if let Some(socket) = std::env::var_os("FERRY_MOTO_ZYGOTE") {
        let conn = std::os::unix::net::UnixStream::connect(&socket).unwrap_or_else(|e| {
            panic!("the moto zygote at {socket:?} (FERRY_MOTO_ZYGOTE) does not answer: {e}")
        });
        let mut answers = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        answers.read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("the moto zygote answered {line:?}"));
        return Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            guard: Mutex::new((Box::new(conn), Box::new(answers))),
        };
    }
    let port = free_port();
    let mut child = Command::new(python())
        .arg(Path::new(ROOT).join("scripts/moto-guard.py"))
        .arg(port.to_string())
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Not the test's stderr: the server outlives the test process by a moment (it stops
        // when its stdin closes), and a test runner counts an inherited handle as a leak.
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto (scripts/moto-guard.py) failed: run scripts/setup.sh");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "moto did not start on port {port}");
    let stdin = child.stdin.take().unwrap();
    // The child is never waited for: it ends when its stdin closes with this process.
    std::mem::forget(child);
    Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
        guard: Mutex::new((Box::new(stdin), Box::new(out))),
    }
}

pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(start_moto)
}

/// Environment for the `ferry` binary and the SDK: the standard variables only.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("FERRY_S3_PATH_STYLE", "true".into()),
    ]
}

pub fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(s3_ferry::store::aws::http_client())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .load(),
    )
}

pub fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// One test's world: a source bucket, an export bucket, a state table and a job.
pub struct Ctx {
    pub endpoint: String,
    pub src: String,
    pub exp: String,
    pub table: String,
    pub job: String,
    pub s3: aws_sdk_s3::Client,
    pub clients: s3_ferry::store::aws::Clients,
}

/// Output of one `ferry` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Ctx {
    /// Make bucket `name` with Object Lock (and so versioning).
    pub fn lock_bucket(&self, name: &str) {
        block_on(
            self.s3
                .create_bucket()
                .bucket(name)
                .object_lock_enabled_for_bucket(true)
                .send(),
        )
        .unwrap();
    }

    pub fn new(name: &str) -> Ctx {
        Self::with_endpoint(name, &moto().endpoint)
    }

    pub fn with_endpoint(name: &str, endpoint: &str) -> Ctx {
        let id = unique(name);
        let sdk = sdk_config(endpoint);
        let s3 = s3_ferry::store::client(&sdk, true);
        let clients = s3_ferry::store::aws::Clients::new(&sdk, true);
        let ctx = Ctx {
            endpoint: endpoint.to_string(),
            src: format!("src-{id}"),
            exp: format!("exp-{id}"),
            table: format!("state-{id}"),
            job: format!("job-{id}"),
            s3,
            clients,
        };
        block_on(async {
            for b in [&ctx.src, &ctx.exp] {
                ctx.s3.create_bucket().bucket(b).send().await.unwrap();
            }
            ctx.clients.table(&ctx.table).init().await.unwrap();
        });
        ctx
    }

    /// The same buckets and table, reached through another endpoint (a fault proxy).
    pub fn via(&self, endpoint: &str) -> Ctx {
        let sdk = sdk_config(endpoint);
        Ctx {
            endpoint: endpoint.to_string(),
            src: self.src.clone(),
            exp: self.exp.clone(),
            table: self.table.clone(),
            job: self.job.clone(),
            s3: s3_ferry::store::client(&sdk, true),
            clients: s3_ferry::store::aws::Clients::new(&sdk, true),
        }
    }

    pub fn ferry_cmd(&self) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("ferry"));
        cmd.envs(aws_env(&self.endpoint));
        cmd.env_remove("FERRY_LOG");
        cmd
    }

    /// Run `ferry` with these arguments.
    pub fn ferry(&self, args: &[&str]) -> Run {
        let out = self.ferry_cmd().args(args).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn source_uri(&self) -> String {
        format!("s3://{}", self.src)
    }

    pub fn dest_uri(&self) -> String {
        format!("s3://{}/bundles", self.exp)
    }

    /// `ferry export --json` of this job plus `extra` flags.
    pub fn export(&self, extra: &[&str]) -> Run {
        self.export_job(&self.job, extra)
    }

    pub fn export_job(&self, job: &str, extra: &[&str]) -> Run {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        self.ferry_strs(&self.export_args(job, &self.source_uri(), &self.table, &args))
    }

    /// `ferry export` of this job from `source` with state in `table`, plus `extra` (no --json).
    pub fn export_with(&self, source: &str, table: &str, extra: &[&str]) -> Run {
        self.ferry_strs(&self.export_args(&self.job, source, table, extra))
    }

    /// The arguments of `ferry export --job JOB --source SOURCE --dest <dest> --table TABLE EXTRA…`.
    pub fn export_args(&self, job: &str, source: &str, table: &str, extra: &[&str]) -> Vec<String> {
        let dest = self.dest_uri();
        let base = [
            "export", "--job", job, "--source", source, "--dest", &dest, "--table", table,
        ];
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    }

    fn ferry_strs(&self, args: &[String]) -> Run {
        self.ferry(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Export and insist it completed.
    pub fn export_ok(&self, extra: &[&str]) -> serde_json::Value {
        let run = self.export(extra);
        assert_eq!(
            run.code, 0,
            "export failed:\n{}\n{}",
            run.stdout, run.stderr
        );
        run.json()
    }

    pub fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        self.put_with(key, body, None, &[]);
    }

    pub fn put_with(
        &self,
        key: &str,
        body: impl Into<Vec<u8>>,
        content_type: Option<&str>,
        metadata: &[(&str, &str)],
    ) {
        let body = body.into();
        block_on(async {
            let mut req = self
                .s3
                .put_object()
                .bucket(&self.src)
                .key(key)
                .body(ByteStream::from(body));
            if let Some(ct) = content_type {
                req = req.content_type(ct);
            }
            for (k, v) in metadata {
                req = req.metadata(*k, *v);
            }
            req.send().await.unwrap();
        });
    }

    /// Put one object into another bucket.
    pub fn put_in(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
        let body = body.into();
        block_on(
            self.s3
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(body))
                .send(),
        )
        .unwrap();
    }

    /// Put many objects concurrently.
    pub fn put_many(&self, objects: Vec<(String, Vec<u8>)>) {
        self.put_many_in_class(objects, None)
    }

    /// Put many objects concurrently, in `class` (e.g. DEEP_ARCHIVE).
    pub fn put_many_in_class(
        &self,
        objects: Vec<(String, Vec<u8>)>,
        class: Option<aws_sdk_s3::types::StorageClass>,
    ) {
        block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for (key, body) in objects {
                while set.len() >= 32 {
                    set.join_next().await.unwrap().unwrap();
                }
                let (s3, bucket, class) = (self.s3.clone(), self.src.clone(), class.clone());
                set.spawn(async move {
                    s3.put_object()
                        .bucket(bucket)
                        .key(key)
                        .set_storage_class(class)
                        .body(ByteStream::from(body))
                        .send()
                        .await
                        .unwrap();
                });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
        });
    }

    /// Delete these keys of the source (DeleteObjects, 1,000 at a time).
    pub fn delete_keys(&self, keys: impl IntoIterator<Item = String>) {
        let keys: Vec<String> = keys.into_iter().collect();
        block_on(async {
            for chunk in keys.chunks(1000) {
                let objects = chunk
                    .iter()
                    .map(|k| {
                        aws_sdk_s3::types::ObjectIdentifier::builder()
                            .key(k)
                            .build()
                            .unwrap()
                    })
                    .collect();
                self.s3
                    .delete_objects()
                    .bucket(&self.src)
                    .delete(
                        aws_sdk_s3::types::Delete::builder()
                            .set_objects(Some(objects))
                            .build()
                            .unwrap(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
        });
    }

    /// The export configuration of this job (for the library's runs and steps).
    pub fn export_config(&self) -> s3_ferry::config::ExportConfig {
        s3_ferry::config::ExportConfig::new(
            self.job.parse().unwrap(),
            self.source_uri().parse().unwrap(),
            self.dest_uri().parse().unwrap(),
            self.table.clone(),
        )
    }

    pub fn delete(&self, key: &str) {
        block_on(self.s3.delete_object().bucket(&self.src).key(key).send()).unwrap();
    }

    /// Server-side rename (copy, then delete).
    pub fn rename(&self, from: &str, to: &str) {
        block_on(
            self.s3
                .copy_object()
                .bucket(&self.src)
                .key(to)
                .copy_source(format!("{}/{}", self.src, from))
                .send(),
        )
        .unwrap();
        self.delete(from);
    }

    /// Metadata-only change: copy onto itself with new headers.
    pub fn set_metadata(&self, key: &str, content_type: &str, metadata: &[(&str, &str)]) {
        let mut req = self
            .s3
            .copy_object()
            .bucket(&self.src)
            .key(key)
            .copy_source(format!("{}/{}", self.src, key))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .content_type(content_type);
        for (k, v) in metadata {
            req = req.metadata(*k, *v);
        }
        block_on(req.send()).unwrap();
    }

    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        block_on(self.clients.s3.keys(bucket, prefix)).unwrap()
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        block_on(self.clients.s3.get_document(bucket, key))
            .unwrap()
            .map(|b| b.to_vec())
    }

    /// `ferry download --from <dest> --job <job> --to TO` plus `extra` flags.
    pub fn ferry_download(&self, to: &std::path::Path, extra: &[&str]) -> Run {
        let dest = self.dest_uri();
        let mut args = vec![
            "download",
            "--from",
            &dest,
            "--job",
            &self.job,
            "--to",
            to.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.ferry(&args)
    }

    /// Start `ferry ARGS`, wait until `ready()` holds (at most 60 s), send it `signal` (`INT`,
    /// `TERM`) and wait for it to end: its exit code and stderr.
    pub fn ferry_signalled(
        &self,
        args: &[String],
        ready: impl Fn() -> bool,
        signal: &str,
    ) -> (Option<i32>, String) {
        let child = self
            .ferry_cmd()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !ready() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "not ready within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let kill = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A new ECC_NIST_P256 signing key in KMS: its id.
    pub fn kms_signing_key(&self) -> String {
        let kms = aws_sdk_kms::Client::new(&sdk_config(&self.endpoint));
        let key = block_on(
            kms.create_key()
                .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
                .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
                .send(),
        )
        .unwrap();
        key.key_metadata().unwrap().key_id().to_string()
    }

    /// Multipart uploads still open in the export bucket.
    pub fn open_uploads(&self) -> usize {
        self.open_uploads_in(&self.exp)
    }

    /// Multipart uploads still open in `bucket`.
    pub fn open_uploads_in(&self, bucket: &str) -> usize {
        block_on(self.s3.list_multipart_uploads().bucket(bucket).send())
            .unwrap()
            .uploads()
            .len()
    }

    pub fn state(&self) -> s3_ferry::state::JobState {
        block_on(self.clients.table(&self.table).load(&self.job))
            .unwrap()
            .unwrap_or_default()
    }

    /// Download bundle `seq` of `job` (volumes, SHA256SUMS, bundle.json) into a temp dir.
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

/// A downloaded bundle.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub summary: BundleSummary,
    pub manifests: Vec<Manifest>,
}

impl Bundle {
    pub fn open(dir: tempfile::TempDir) -> Bundle {
        let summary: BundleSummary =
            serde_json::from_slice(&std::fs::read(dir.path().join("bundle.json")).unwrap())
                .unwrap();
        let manifests = summary
            .volumes
            .iter()
            .map(|v| manifest_of(&dir.path().join(&v.name)))
            .collect();
        Bundle {
            dir,
            summary,
            manifests,
        }
    }

    pub fn volume_paths(&self) -> Vec<PathBuf> {
        self.summary
            .volumes
            .iter()
            .map(|v| self.dir.path().join(&v.name))
            .collect()
    }

    /// Every shipped object entry, over all volumes.
    pub fn objects(&self) -> Vec<s3_ferry::format::manifest::ObjectEntry> {
        self.manifests
            .iter()
            .flat_map(|m| m.objects.clone())
            .collect()
    }

    pub fn last(&self) -> &s3_ferry::format::manifest::Final {
        self.manifests
            .last()
            .unwrap()
            .last
            .as_ref()
            .expect("last volume has `final`")
    }

    /// Extract every volume with Info-ZIP unzip; returns key → bytes via the manifests.
    pub fn extract(&self) -> HashMap<String, Vec<u8>> {
        let out = tempfile::tempdir().unwrap();
        for v in self.volume_paths() {
            run_ok(
                Command::new("unzip")
                    .arg("-qo")
                    .arg(&v)
                    .arg("-d")
                    .arg(out.path()),
            );
        }
        self.objects()
            .into_iter()
            .map(|o| {
                let bytes = std::fs::read(out.path().join(&o.entry)).unwrap();
                (o.key, bytes)
            })
            .collect()
    }

    /// `sha256sum -c SHA256SUMS` in the bundle folder.
    pub fn sha256sum_check(&self) {
        run_ok(
            Command::new("sha256sum")
                .args(["-c", "SHA256SUMS"])
                .current_dir(self.dir.path()),
        );
    }
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (scripts/setup.sh installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The manifest entry of a volume, read with Info-ZIP unzip.
pub fn manifest_of(zip: &Path) -> Manifest {
    let json = run_ok(Command::new("unzip").arg("-p").arg(zip).arg(MANIFEST_ENTRY));
    serde_json::from_str(&json).unwrap()
}

/// Check a volume with every reader of the matrix; panics naming the reader that fails.
pub fn check_readers(zip: &Path) {
    let z = zip.to_str().unwrap();
    run_ok(Command::new("unzip").args(["-tqq", z]));
    run_ok(Command::new("7z").args(["t", z]));
    run_ok(Command::new("bsdtar").args(["-tf", z]));
    // Front-to-back streaming read from a pipe.
    run_ok(Command::new("sh").args(["-c", &format!("cat '{z}' | bsdtar -xOf - > /dev/null")]));
    run_ok(Command::new(python()).args([
        "-c",
        "import sys, zipfile\nbad = zipfile.ZipFile(sys.argv[1]).testzip()\nassert bad is None, bad",
        z,
    ]));
    // Compiled once (a source launch compiles on every run), on a lean JVM: the check is
    // java.util.zip's native inflater and CRC, not Java code.
    run_ok(
        Command::new("java")
            .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp"])
            .arg(zip_check_classes())
            .arg("ZipCheck")
            .arg(z),
    );
}

/// `tests/support/ZipCheck.java` compiled, once for every test process.
fn zip_check_classes() -> PathBuf {
    made_once(
        "zipcheck",
        &Path::new(ROOT).join("tests/support/ZipCheck.java"),
        "ZipCheck.class",
        |source, into| run_ok(Command::new("javac").arg("-d").arg(into).arg(source)),
    )
}

/// What `make(input, folder)` (its output ignored) puts into a folder, made once for every
/// test process of a run (they run at once: one makes it under a lock, the others wait and
/// find it): in the target's temporary folder under `name` and the SHA-256 of `input`, moved
/// into place whole, and done once the file `marker` is in it. The tests only read it.
pub fn made_once(
    name: &str,
    input: &Path,
    marker: &str,
    make: impl FnOnce(&Path, &Path) -> String,
) -> PathBuf {
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(input).unwrap()));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let made = tmp.join(format!("{name}-{}", &sha[..16]));
    let lock = std::fs::File::create(tmp.join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    if !made.join(marker).exists() {
        let building = tempfile::tempdir_in(tmp).unwrap();
        make(input, building.path());
        std::fs::rename(building.keep(), &made).unwrap();
    }
    made
}

/// An object as a reader of the bucket sees it: bytes, HTTP headers, user metadata.
#[derive(Clone, PartialEq, Eq)]
pub struct Obj {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Shows the body as its length and SHA-256, so that a failed comparison stays readable.
impl std::fmt::Debug for Obj {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(&self.body));
        f.debug_struct("Obj")
            .field(
                "body",
                &format_args!("{} bytes, sha256 {}", self.body.len(), &sha[..16]),
            )
            .field("content_type", &self.content_type)
            .field("content_encoding", &self.content_encoding)
            .field("content_disposition", &self.content_disposition)
            .field("content_language", &self.content_language)
            .field("cache_control", &self.cache_control)
            .field("expires", &self.expires)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl Ctx {
    /// A new empty bucket of this test.
    pub fn bucket(&self, name: &str) -> String {
        let b = format!("{name}-{}", &self.src[4..]);
        block_on(self.s3.create_bucket().bucket(&b).send()).unwrap();
        b
    }

    /// Every object under `prefix`, keyed by the key relative to `prefix`.
    pub fn snapshot(&self, bucket: &str, prefix: &str) -> std::collections::BTreeMap<String, Obj> {
        let keys = self.keys(bucket, prefix);
        block_on(async {
            let mut out = std::collections::BTreeMap::new();
            for k in keys {
                let o = self
                    .s3
                    .get_object()
                    .bucket(bucket)
                    .key(&k)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("GET s3://{bucket}/{k}: {e:?}"));
                let obj = Obj {
                    content_type: o.content_type().map(str::to_string),
                    content_encoding: o.content_encoding().map(str::to_string),
                    content_disposition: o.content_disposition().map(str::to_string),
                    content_language: o.content_language().map(str::to_string),
                    cache_control: o.cache_control().map(str::to_string),
                    expires: o.expires_string().map(str::to_string),
                    metadata: o
                        .metadata()
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default(),
                    body: o.body.collect().await.unwrap().into_bytes().to_vec(),
                };
                out.insert(k[prefix.len()..].to_string(), obj);
            }
            out
        })
    }
}

/// key → bytes of a directory import, through its key index (`.ferry/state.json`); panics if
/// the directory holds a file the index does not account for.
pub fn dir_snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let index =
        s3_ferry::import::ledger::file_index_entries(&dir.join(".ferry/state.json")).unwrap();
    let mut out = std::collections::BTreeMap::new();
    let mut places = std::collections::BTreeSet::new();
    for (key, e) in &index {
        let place = e.place.as_str();
        let path = dir.join(place);
        let body = std::fs::read(&path)
            .unwrap_or_else(|err| panic!("key `{key}`: {} unreadable: {err}", path.display()));
        out.insert(key.clone(), body);
        places.insert(place.to_string());
    }
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let place = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if place == ".ferry" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push((e.path(), place));
            } else {
                assert!(
                    places.contains(&place),
                    "{} holds `{place}`, which no key accounts for",
                    dir.display()
                );
            }
        }
    }
    out
}

/// Bytes that do not compress, the same for the same seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What a test looks at in a world, on moto ([`Ctx`]) or in memory (`World`).
pub trait Inspect {
    fn export_bucket(&self) -> &str;
    fn job_name(&self) -> &str;
    fn keys_of(&self, bucket: &str, prefix: &str) -> Vec<String>;
    fn get_of(&self, bucket: &str, key: &str) -> Option<Vec<u8>>;
    fn download_of(&self, job: &str, seq: u64) -> Bundle;
}

impl Inspect for Ctx {
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

/// Every volume of bundle `seq` is within `cap` bytes, all but the last at least `fill` of it,
/// and (unless sealed) opens in every reader.
pub fn assert_capped(w: &dyn Inspect, seq: u64, cap: u64, fill: f64, sealed: bool) {
    let vols = w.keys_of(
        w.export_bucket(),
        &format!("bundles/{}/{seq:08}/", w.job_name()),
    );
    let vols: Vec<&String> = vols.iter().filter(|k| k.contains(".zip")).collect();
    assert!(vols.len() > 2, "{vols:?}");
    for (i, key) in vols.iter().enumerate() {
        let size = w.get_of(w.export_bucket(), key).unwrap().len() as u64;
        assert!(
            size <= cap,
            "{key} is {size} bytes, over the {cap}-byte cap"
        );
        if i + 1 < vols.len() {
            assert!(
                size as f64 >= fill * cap as f64,
                "{key} is only {size} bytes"
            );
        }
    }
    if !sealed {
        let b = w.download_of(w.job_name(), seq);
        for v in b.volume_paths() {
            check_readers(&v);
        }
    }
}

/// What a bundle carries, independent of how it was split into volumes: objects (key →
/// sha256, size, content type), deletions and moves.
#[derive(Debug, PartialEq)]
pub struct Content {
    objects: std::collections::BTreeMap<String, (String, u64, Option<String>)>,
    deleted: Vec<String>,
    moved: Vec<String>,
}

pub fn content(b: &Bundle) -> Content {
    let last = b.last();
    Content {
        objects: b
            .objects()
            .into_iter()
            .map(|o| (o.key, (o.sha256, o.size, o.headers.content_type)))
            .collect(),
        deleted: last.deleted.clone(),
        moved: last
            .moved
            .iter()
            .map(|m| format!("{}→{}", m.from, m.to))
            .collect(),
    }
}
