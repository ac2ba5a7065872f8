//! `ferry`, the operator CLI: `init`, `plan`, `export`, `status` on the export side;
//! `download`, `verify`, `import` on the far side. Parses flags into the engine's typed config,
//! runs it, and prints a human summary or one JSON object (`--json`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use s3_ferry::aws::Clients;
use s3_ferry::config::{self, ExportConfig, Filters, JobName, S3Location, Tuning};
use s3_ferry::export::{self, Progress, Status};
use s3_ferry::plan::PlanStats;

/// Exit code when another run holds the job's lease.
const EXIT_LEASE_HELD: u8 = 3;
/// Exit code when the deadline stopped the run: call again to continue the bundle.
const EXIT_CONTINUE: u8 = 4;
/// Exit code when a volume or bundle failed verification (damaged, altered or incomplete).
const EXIT_VERIFY: u8 = 5;
/// Exit code when a bundle does not follow the last one applied to the target.
const EXIT_OUT_OF_ORDER: u8 = 6;

#[derive(Parser)]
#[command(name = "ferry", version, about = "Offline delta sync of S3 buckets")]
struct Cli {
    /// Address S3 buckets path-style (needed for local emulators).
    #[arg(long, global = true, env = "FERRY_S3_PATH_STYLE", value_parser = clap::builder::FalseyValueParser::new())]
    path_style: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the DynamoDB state table (does nothing if it exists).
    Init {
        #[arg(long)]
        table: String,
    },
    /// Show what the next export would carry; writes nothing.
    Plan(JobArgs),
    /// Export the delta since the last bundle (or a baseline) into ZIP volumes.
    Export(ExportArgs),
    /// Download complete bundles from the export bucket to a folder, verified against SHA256SUMS.
    Download(DownloadArgs),
    /// Verify bundles offline: every entry's CRC-32 and SHA-256, sizes, the volume set, the chain.
    Verify {
        /// Volume files, folders holding bundles, or s3:// bundle prefixes.
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Replay bundles, in order and verified, into a bucket or a directory.
    Import(ImportArgs),
    /// Show a job's committed state.
    Status {
        #[arg(long)]
        job: String,
        #[arg(long)]
        table: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct JobArgs {
    #[arg(long)]
    job: String,
    /// s3://BUCKET[/PREFIX] to export.
    #[arg(long)]
    source: String,
    /// s3://BUCKET[/PREFIX] where bundles go.
    #[arg(long)]
    dest: String,
    /// DynamoDB state table.
    #[arg(long)]
    table: String,
    /// Only keys (relative to the prefix) matching one of these globs. A glob without `/`
    /// matches the file name at any depth; `*` stays within a path segment, `**` crosses them.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out keys matching any of these globs.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    #[arg(long, value_name = "SIZE")]
    min_size: Option<String>,
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
    /// Take a new baseline: ignore the previous inventory.
    #[arg(long)]
    full: bool,
    /// Ship renamed objects' bytes instead of recording moves.
    #[arg(long)]
    no_moves: bool,
    /// Byte cap of a volume [default: 4032MiB, fits FAT32].
    #[arg(long, value_name = "SIZE")]
    volume_size: Option<String>,
    /// Entry cap of a volume.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_VOLUME_ENTRIES)]
    volume_entries: u64,
    /// Multipart part size (5MiB..5GiB).
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    part_size: String,
    /// Concurrent GETs.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Compression of entries: stored or deflate.
    #[arg(long, default_value = "stored")]
    compression: String,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Stop cleanly after this long (close the volume, checkpoint, exit 4); run again to continue.
    #[arg(long, value_name = "DURATION")]
    deadline: Option<String>,
    /// Lease time; a live run renews it.
    #[arg(
        long,
        value_name = "DURATION",
        env = "FERRY_LEASE_TTL",
        default_value = "5m"
    )]
    lease_ttl: String,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("which").args(["sequence", "latest", "since"]))]
struct DownloadArgs {
    /// s3://BUCKET[/PREFIX] the bundles were exported to (export's --dest).
    #[arg(long)]
    from: String,
    #[arg(long)]
    job: String,
    /// This bundle.
    #[arg(long)]
    sequence: Option<u64>,
    /// The newest complete bundle (the default).
    #[arg(long)]
    latest: bool,
    /// Every complete bundle after sequence N (N = the last one imported).
    #[arg(long, value_name = "N")]
    since: Option<u64>,
    /// Folder to write `<job>/<sequence>/` into.
    #[arg(long)]
    to: PathBuf,
    /// Ranged GETs in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("target").args(["to", "to_dir"]).required(true))]
struct ImportArgs {
    /// Volume files, folders holding bundles, or s3:// bundle prefixes.
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<String>,
    /// s3://BUCKET[/PREFIX] to replay into.
    #[arg(long)]
    to: Option<String>,
    /// Directory to replay into.
    #[arg(long)]
    to_dir: Option<PathBuf>,
    /// Import state file [default with --to-dir: DIR/.ferry/state.json].
    #[arg(long, conflicts_with = "table")]
    state: Option<PathBuf>,
    /// Keep the import state in this DynamoDB table (with --job).
    #[arg(long, requires = "job")]
    table: Option<String>,
    /// The job whose bundles are imported (names the state in --table).
    #[arg(long)]
    job: Option<String>,
    /// Print what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Apply bundles even if they do not follow the last one applied.
    #[arg(long)]
    force: bool,
    /// Objects written at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Multipart part size for large objects.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    part_size: String,
    /// Lease time of the import state in --table.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    lease_ttl: String,
    #[arg(long)]
    json: bool,
}

impl JobArgs {
    fn config(&self) -> anyhow::Result<ExportConfig> {
        let size = |what, v: &Option<String>| {
            v.as_deref()
                .map(|s| config::parse_size(what, s))
                .transpose()
        };
        let mut cfg = ExportConfig::new(
            self.job.parse::<JobName>()?,
            self.source.parse::<S3Location>()?,
            self.dest.parse::<S3Location>()?,
            self.table.clone(),
        );
        cfg.filters = Filters::new(
            &self.include,
            &self.exclude,
            size("--min-size", &self.min_size)?,
            size("--max-size", &self.max_size)?,
        )?;
        cfg.full = self.full;
        cfg.moves = !self.no_moves;
        cfg.tuning = Tuning {
            volume_size: size("--volume-size", &self.volume_size)?
                .unwrap_or(config::DEFAULT_VOLUME_SIZE),
            volume_entries: self.volume_entries,
            part_size: config::parse_size("--part-size", &self.part_size)?,
            concurrency: self.concurrency,
            compression: self.compression.parse()?,
        };
        cfg.tuning.validate()?;
        Ok(cfg)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| {
                // Volumes and inventories are multipart objects: their part-level checksums
                // cannot be checked on GET (zip CRCs, SHA-256 and gzip trailers cover them).
                "warn,aws_sdk_s3::http_response_checksum=error".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            use s3_ferry::Error as E;
            let code = match e.chain().find_map(|c| c.downcast_ref::<E>()) {
                Some(E::LeaseHeld { .. } | E::StateLocked { .. }) => EXIT_LEASE_HELD,
                Some(E::Verify { .. } | E::Archive { .. } | E::Bundle { .. }) => EXIT_VERIFY,
                Some(E::OutOfOrder { .. }) => EXIT_OUT_OF_ORDER,
                _ => 1,
            };
            eprintln!("ferry: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `verify` of local files needs no AWS at all.
    if let Command::Verify { sources, json } = &cli.command
        && sources.iter().all(|s| !s.starts_with("s3://"))
    {
        return far::verify(None, sources, *json).await;
    }
    let clients = Clients::from_env(cli.path_style).await;
    match cli.command {
        Command::Verify { sources, json } => far::verify(Some(&clients), &sources, json).await,
        Command::Download(args) => far::download(&clients, args).await,
        Command::Import(args) => far::import(&clients, args).await,
        Command::Init { table } => {
            let created = clients.table(&table).init().await?;
            println!(
                "state table `{table}` {}",
                if created { "created" } else { "already exists" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { job, table, json } => {
            let state = clients.table(&table).load(&job).await?;
            match (state, json) {
                (None, true) => println!(
                    "{}",
                    serde_json::json!({"job": job, "sequence": 0, "exists": false})
                ),
                (None, false) => println!("job `{job}` has not run yet"),
                (Some(s), true) => println!("{}", serde_json::to_string(&s)?),
                (Some(s), false) => {
                    println!("job        {}", s.job);
                    println!("sequence   {}", s.sequence);
                    println!("watermark  {}", s.watermark.as_deref().unwrap_or("-"));
                    println!("inventory  {}", s.inventory.as_deref().unwrap_or("-"));
                    println!("digest     {}", s.bundle_digest.as_deref().unwrap_or("-"));
                    if let Some(owner) = &s.lease_owner {
                        println!("lease      held by {owner}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(args) => {
            let cfg = args.config()?;
            let (state, plan, volumes) = export::plan_only(&clients, &cfg).await?;
            let s = &plan.stats;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "job": cfg.job.as_str(), "last_sequence": state.sequence,
                        "baseline": cfg.full || state.inventory.is_none(),
                        "listed": s.listed, "unchanged": s.unchanged, "added": s.added,
                        "modified": s.modified, "deleted": s.deleted, "moved": s.moved,
                        "skipped": s.skipped, "bytes": s.put_bytes, "volumes": volumes,
                        "skipped_objects": plan.skipped,
                    })
                );
            } else {
                println!(
                    "{}: {} listed, {} unchanged; to ship: {} added, {} modified ({}), {} deleted, {} moved, {} skipped; ~{} volume(s)",
                    cfg.job,
                    s.listed,
                    s.unchanged,
                    s.added,
                    s.modified,
                    human(s.put_bytes),
                    s.deleted,
                    s.moved,
                    s.skipped,
                    volumes
                );
                for sk in &plan.skipped {
                    println!("  skipped {}: {}", sk.key, sk.reason);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => {
            let mut cfg = args.job.config()?;
            cfg.lease_ttl = config::parse_duration("--lease-ttl", &args.lease_ttl)?;
            if let Some(d) = &args.deadline {
                cfg.deadline = Some(export::deadline_in(config::parse_duration(
                    "--deadline",
                    d,
                )?));
            }
            let bar = Bar::new(!args.job.json && std::io::stderr().is_terminal());
            let report = export::run(&clients, &cfg, &bar)
                .await
                .with_context(|| format!("export of job `{}` failed; state unchanged", cfg.job))?;
            bar.done();
            if args.job.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_report(&report);
            }
            Ok(match report.status {
                Status::Continue => ExitCode::from(EXIT_CONTINUE),
                _ => ExitCode::SUCCESS,
            })
        }
    }
}

fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

fn print_report(r: &export::Report) {
    match r.status {
        Status::NoChanges => {
            println!(
                "{}: no changes since bundle {}; nothing written",
                r.job, r.sequence
            );
            return;
        }
        Status::Continue => println!(
            "{}: bundle {} not finished (deadline): {} volume(s) so far; run the same command again to continue",
            r.job,
            r.sequence,
            r.volumes.len()
        ),
        Status::Complete => println!(
            "{}: bundle {}{} complete: {} objects ({}), {} deleted, {} moved, {} skipped, {} vanished in {} volume(s), {:.1}s",
            r.job,
            r.sequence,
            if r.baseline { " (baseline)" } else { "" },
            r.objects,
            human(r.bytes),
            r.deleted,
            r.moved,
            r.skipped,
            r.vanished,
            r.volumes.len(),
            r.duration_ms as f64 / 1000.0
        ),
    }
    for v in &r.volumes {
        println!("  {v}");
    }
    for s in &r.skipped_objects {
        println!("  skipped {}: {}", s.key, s.reason);
    }
    if let Some(b) = &r.bundle
        && r.status == Status::Complete
    {
        println!(
            "  bundle {b} (digest {})",
            r.bundle_digest.as_deref().unwrap_or("-")
        );
    }
}

/// A progress bar on a terminal, nothing otherwise.
struct Bar(Option<ProgressBar>);

impl Bar {
    /// A byte bar of known length.
    fn bytes(enabled: bool, total: u64, msg: &str) -> Self {
        Bar(enabled.then(|| {
            let pb = ProgressBar::new(total);
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            pb.set_message(msg.to_string());
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        }))
    }

    fn new(enabled: bool) -> Self {
        Bar(enabled.then(|| {
            let pb = ProgressBar::new_spinner();
            pb.set_message("listing…");
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        }))
    }
    fn done(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn planned(&self, s: &PlanStats) {
        if let Some(pb) = &self.0 {
            pb.set_length(s.put_bytes);
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            pb.set_message(format!("{} objects", s.added + s.modified));
        }
    }
    fn total(&self, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(bytes);
        }
    }
    fn resumed(&self, _objects: u64, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.set_position(bytes);
        }
    }
    fn object(&self, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(bytes);
        }
    }
}

/// The far side: download, verify, import.
mod far {
    use super::*;
    use s3_ferry::bundle::{self, Bundle};
    use s3_ferry::download::{self, DownloadConfig, Select};
    use s3_ferry::import::{self, BundleStatus, ImportConfig};
    use s3_ferry::ledger::Ledger;
    use s3_ferry::target::{STATE_DIR, Target};
    use s3_ferry::verify;

    fn short(d: &str) -> &str {
        &d[..d.len().min(12)]
    }

    fn interactive(json: bool) -> bool {
        !json && std::io::stderr().is_terminal()
    }

    pub async fn download(clients: &Clients, a: DownloadArgs) -> anyhow::Result<ExitCode> {
        let cfg = DownloadConfig {
            from: a.from.parse::<S3Location>()?,
            job: a.job.parse::<JobName>()?.to_string(),
            select: match (a.sequence, a.since) {
                (Some(n), _) => Select::Sequence(n),
                (_, Some(n)) => Select::Since(n),
                _ => Select::Latest,
            },
            to: a.to.clone(),
            concurrency: a.concurrency,
        };
        let bar = Bar::bytes(interactive(a.json), 0, "downloading");
        let report = download::run(&clients.s3, &cfg, &bar).await?;
        bar.done();
        if a.json {
            println!("{}", serde_json::to_string(&report)?);
            return Ok(ExitCode::SUCCESS);
        }
        if report.bundles.is_empty() {
            println!("{}: no complete bundle to download", report.job);
        }
        for b in &report.bundles {
            println!(
                "{} bundle {}: {} volume(s), {} in {} (digest {})",
                report.job,
                b.sequence,
                b.volumes.len(),
                human(b.bytes),
                b.dir.display(),
                short(&b.bundle_digest)
            );
            for v in &b.volumes {
                println!(
                    "  {:<10} {}  {}  sha256 {}",
                    v.status,
                    v.name,
                    human(v.size),
                    short(&v.sha256)
                );
            }
        }
        for s in &report.incomplete {
            println!("  bundle {s} is still being exported: not downloaded");
        }
        println!(
            "total: {} bundle(s), {} ({} fetched) in {:.1}s; every volume matches SHA256SUMS",
            report.bundles.len(),
            human(report.bytes),
            human(report.bytes_fetched),
            report.duration_ms as f64 / 1000.0
        );
        Ok(ExitCode::SUCCESS)
    }

    pub async fn verify(
        clients: Option<&Clients>,
        sources: &[String],
        json: bool,
    ) -> anyhow::Result<ExitCode> {
        let bundles = bundle::discover(sources, clients.map(|c| &c.s3)).await?;
        let total: u64 = bundles.iter().map(Bundle::object_bytes).sum();
        let bar = Bar::bytes(interactive(json), total, "verifying");
        let mut reports: Vec<verify::BundleReport> = Vec::new();
        for b in &bundles {
            let r = verify::verify_bundle(b, &bar).await?;
            if let Some(prev) = reports.last()
                && prev.job == r.job
                && r.previous_sequence == Some(prev.sequence)
                && r.previous_digest.as_deref() != Some(prev.bundle_digest.as_str())
            {
                bar.done();
                anyhow::bail!(s3_ferry::Error::Bundle {
                    what: format!("{} of job `{}`", r.sequence, r.job),
                    location: r.location.clone(),
                    detail: format!(
                        "follows a bundle {} with digest {}, but the bundle {} given has digest {}: they are not the same chain",
                        prev.sequence,
                        short(r.previous_digest.as_deref().unwrap_or("-")),
                        prev.sequence,
                        short(&prev.bundle_digest)
                    ),
                });
            }
            reports.push(r);
        }
        bar.done();
        if json {
            println!("{}", serde_json::json!({"ok": true, "bundles": reports}));
            return Ok(ExitCode::SUCCESS);
        }
        for r in &reports {
            println!(
                "{} bundle {}{}: OK: {} volume(s), {} objects ({}), {} deleted, {} moved; {}; digest {}{}",
                r.job,
                r.sequence,
                if r.baseline { " (baseline)" } else { "" },
                r.volumes.len(),
                r.objects,
                human(r.bytes),
                r.deleted,
                r.moved,
                match (r.previous_sequence, &r.previous_digest) {
                    (Some(s), Some(d)) => format!("follows bundle {s} (digest {})", short(d)),
                    _ => "starts a chain".into(),
                },
                short(&r.bundle_digest),
                if r.sha256sums {
                    ""
                } else {
                    " (no SHA256SUMS beside the volumes)"
                }
            );
            for v in &r.volumes {
                println!(
                    "  {}  {}  {} objects  sha256 {}",
                    v.location,
                    human(v.size),
                    v.objects,
                    short(&v.sha256)
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn import(clients: &Clients, a: ImportArgs) -> anyhow::Result<ExitCode> {
        let target = match (&a.to, &a.to_dir) {
            (Some(uri), _) => Target::S3 {
                store: clients.s3.clone(),
                dest: uri.parse::<S3Location>()?,
                part_size: config::parse_size("--part-size", &a.part_size)?,
            },
            (None, Some(dir)) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating --to-dir `{}`", dir.display()))?;
                Target::Dir {
                    root: dir
                        .canonicalize()
                        .with_context(|| format!("resolving --to-dir `{}`", dir.display()))?,
                }
            }
            (None, None) => unreachable!("clap requires --to or --to-dir"),
        };
        let bundles = bundle::discover(&a.sources, Some(&clients.s3)).await?;
        if let Some(job) = &a.job
            && let Some(b) = bundles.iter().find(|b| &b.job != job)
        {
            anyhow::bail!(s3_ferry::Error::Bundle {
                what: b.label(),
                location: b.location.clone(),
                detail: format!("is not of --job `{job}`"),
            });
        }
        let mut ledger = match (&a.state, &a.table, &a.to_dir) {
            (Some(path), _, _) => Ledger::open_file(path).await?,
            (None, Some(table), _) => {
                let job = a.job.as_deref().expect("clap requires --job with --table");
                Ledger::open_table(
                    clients.table(table),
                    job,
                    config::parse_duration("--lease-ttl", &a.lease_ttl)?,
                )
                .await?
            }
            (None, None, Some(dir)) => {
                Ledger::open_file(&dir.join(STATE_DIR).join("state.json")).await?
            }
            (None, None, None) => anyhow::bail!(s3_ferry::Error::Config {
                what: "import state".into(),
                detail: "say where it is kept: --state FILE, or --table TABLE --job NAME".into(),
            }),
        };
        let cfg = ImportConfig {
            target,
            dry_run: a.dry_run,
            force: a.force,
            concurrency: a.concurrency,
            deadline: None,
        };
        let total: u64 = bundles.iter().map(Bundle::object_bytes).sum();
        let bar = Bar::bytes(interactive(a.json) && !a.dry_run, total, "importing");
        let result = import::run(&mut ledger, &cfg, &bundles, &bar).await;
        bar.done();
        let closed = ledger.close().await;
        let report = result?;
        closed?;
        if a.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            for b in &report.bundles {
                let name = format!(
                    "{} bundle {}{}",
                    b.job,
                    b.sequence,
                    if b.baseline { " (baseline)" } else { "" }
                );
                match b.status {
                    BundleStatus::AlreadyApplied => {
                        println!("{name}: already applied; nothing changed")
                    }
                    BundleStatus::DryRun => {
                        println!(
                            "{name}: would write {} objects ({}; {} new, {} overwritten), delete {}, move {}, remove {} not in the baseline",
                            b.objects,
                            human(b.bytes),
                            b.new,
                            b.overwritten,
                            b.deleted,
                            b.moved,
                            b.removed
                        );
                        for c in &b.changes {
                            match &c.to {
                                Some(to) => println!("  {:<9} {} -> {to}", c.op, c.key),
                                None if c.bytes > 0 => {
                                    println!("  {:<9} {} ({})", c.op, c.key, human(c.bytes))
                                }
                                None => println!("  {:<9} {}", c.op, c.key),
                            }
                        }
                    }
                    BundleStatus::Applied | BundleStatus::Continue => println!(
                        "{name}: {}: {} objects ({}; {} new, {} overwritten), {} deleted, {} moved, {} removed, {} volume(s){}, {:.1}s",
                        if b.status == BundleStatus::Applied {
                            "applied"
                        } else {
                            "not finished (deadline): run again"
                        },
                        b.objects,
                        human(b.bytes),
                        b.new,
                        b.overwritten,
                        b.deleted,
                        b.moved,
                        b.removed,
                        b.volumes,
                        if b.volumes_resumed > 0 {
                            format!(" ({} resumed)", b.volumes_resumed)
                        } else {
                            String::new()
                        },
                        b.duration_ms as f64 / 1000.0
                    ),
                }
            }
            if report.dry_run {
                println!("dry run: {} unchanged", report.target);
            } else {
                println!(
                    "{} holds bundle {} (digest {}); state in {}",
                    report.target,
                    report.sequence,
                    short(report.bundle_digest.as_deref().unwrap_or("-")),
                    report.state
                );
            }
        }
        Ok(if report.complete {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_CONTINUE)
        })
    }
}
