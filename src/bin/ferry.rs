//! `ferry`, the operator CLI: `init`, `plan`, `export`, `status`. Parses flags into the
//! engine's typed config, runs it, and prints a human summary or one JSON object (`--json`).

use std::io::IsTerminal;
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
            let lease = e
                .downcast_ref::<s3_ferry::Error>()
                .is_some_and(|e| matches!(e, s3_ferry::Error::LeaseHeld { .. }));
            eprintln!("ferry: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(if lease { EXIT_LEASE_HELD } else { 1 })
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let clients = Clients::from_env(cli.path_style).await;
    match cli.command {
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
