//! The command line: every subcommand, flag and help text, and the value parsers that apply
//! the library's one validation policy (`config::bounds`) so a bad value is a usage error
//! (exit 2) before anything runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use s3_ferry::config::{self, JobName, S3Location, bounds};
use s3_ferry::format::sign::{SigningKeySpec, TrustedKey};

use crate::exit;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Offline delta sync of S3 buckets: export a bucket's changes as self-verifying ZIP64 \
             volumes, carry them across, verify and replay them on the far side",
    after_help = exit::HELP
)]
pub struct Cli {
    /// Address S3 buckets path-style (needed for local emulators).
    #[arg(long, global = true, env = "FERRY_S3_PATH_STYLE", value_parser = clap::builder::FalseyValueParser::new())]
    pub path_style: bool,
    /// Named AWS profile to use (over AWS_PROFILE).
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// AWS region (over AWS_REGION and the profile's region).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Time to set up a connection to AWS before the attempt fails (and is retried).
    #[arg(long, global = true, value_name = "DURATION", env = "FERRY_CONNECT_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Time one request may wait for its response (a part upload sends its body within it)
    /// before the attempt fails and is retried.
    #[arg(long, global = true, value_name = "DURATION", env = "FERRY_REQUEST_TIMEOUT", default_value = "5m", value_parser = duration)]
    pub request_timeout: Duration,
    /// Print one JSON object on stdout instead of the human summary (an error too: {"ok": false, …}).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create the DynamoDB state table (does nothing if it exists).
    Init {
        /// Name of the DynamoDB table to create.
        #[arg(long, value_name = "TABLE")]
        table: String,
    },
    /// Show what the next export would carry; writes nothing.
    Plan(JobArgs),
    /// Export the delta since the last bundle (or a baseline) into ZIP volumes.
    Export(ExportArgs),
    /// Show a job's committed state.
    Status {
        /// The export job.
        #[arg(long, value_name = "NAME", value_parser = job)]
        job: JobName,
        /// DynamoDB state table.
        #[arg(long, value_name = "TABLE")]
        table: String,
    },
    /// Download complete bundles from the export bucket to a folder, verified against SHA256SUMS.
    Download(DownloadArgs),
    /// Verify bundles offline: every entry's CRC-32 and SHA-256, sizes, the volume set, the chain.
    Verify {
        /// Volume files, folders holding bundles, or s3:// bundle prefixes.
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<String>,
        /// Require a valid signature by this public key (PEM; repeat for several keys).
        #[arg(long, value_name = "PEM", value_parser = trusted_key)]
        trust: Vec<TrustedKey>,
        /// Open sealed (.zip.age) volumes with this age identity file and check every entry;
        /// without one, sealed volumes are checked against SHA256SUMS (and --trust) only.
        #[arg(long, value_name = "FILE")]
        identity: Vec<PathBuf>,
        /// Also judge every object by this content policy and list what it refuses (each
        /// bundle is read a second time; the exit code stays that of the verification).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        #[command(flatten)]
        approvals: ApprovalArgs,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// Approve a bundle for release: sign its digest with a reviewer's key and write
    /// approval-FINGERPRINT.json beside it (in its folder or under its s3:// prefix). Approving
    /// again with the same key replaces the approval.
    Approve {
        /// The bundle's folder or s3://BUCKET/PREFIX/JOB/SEQUENCE/ (where its SHA256SUMS is).
        #[arg(value_name = "SOURCE")]
        source: String,
        /// The reviewer's key: kms:KEY_ID_OR_ARN_OR_ALIAS (ECC_NIST_P256) or file:PATH (from
        /// `ferry keygen`).
        #[arg(long, value_name = "SPEC", value_parser = signing_key)]
        signing_key: SigningKeySpec,
        /// A note the approval carries (signed with it), e.g. the ticket or what was checked.
        #[arg(long, value_name = "TEXT", default_value = "")]
        note: String,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// Check audit logs: every line's hash recomputes, every prev is the line before's hash,
    /// the first line's prev is null; exit 5 names the first line that does not fit. Logs are
    /// checked in the order given (an s3:// prefix: its .jsonl objects in key order).
    Audit {
        /// Log files (from --audit-log) or s3://BUCKET/PREFIX/ of a function's AUDIT_PREFIX.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
    /// Report what bundles hold, for the person who releases them (every byte verified on the
    /// way): per bundle its signer, sealing, policy, counts by operation, prefix and detected
    /// type, the largest objects, and one row per object.
    Review {
        /// Volume files, folders holding bundles, or s3:// bundle prefixes.
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<String>,
        /// Check the signature against this public key (PEM; repeat for several keys).
        #[arg(long, value_name = "PEM", value_parser = trusted_key)]
        trust: Vec<TrustedKey>,
        /// Open sealed (.zip.age) volumes with this age identity file.
        #[arg(long, value_name = "FILE")]
        identity: Vec<PathBuf>,
        /// Judge every object by this content policy too (its verdict in each row).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Write the report as one self-contained HTML page (opens offline in any browser).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Write one CSV row per object.
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
        /// Check approvals against these reviewers' public keys (PEM; repeat); without it the
        /// approvals found are listed unchecked.
        #[arg(long, value_name = "PEM", value_parser = trusted_key)]
        approver: Vec<TrustedKey>,
    },
    /// Make a P-256 signing key pair: FILE (PKCS#8 private key, mode 0600) and FILE.pub.
    Keygen {
        /// Where the private key goes (the public key goes to FILE.pub).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the public key (PEM) the far side trusts for a signing key.
    PublicKey {
        /// kms:KEY_ID_OR_ARN_OR_ALIAS or file:PATH.
        #[arg(long, value_name = "SPEC", value_parser = signing_key)]
        signing_key: SigningKeySpec,
    },
    /// Replay bundles, in order and verified, into a bucket or a directory.
    Import(ImportArgs),
    /// Print a shell completion script (e.g. `ferry completions bash > /etc/bash_completion.d/ferry`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args)]
pub struct JobArgs {
    /// Name of the export job (names its state and its bundles' folder).
    #[arg(long, value_name = "NAME", value_parser = job)]
    pub job: JobName,
    /// s3://BUCKET[/PREFIX] to export.
    #[arg(long, value_name = "S3_URI", value_parser = location)]
    pub source: S3Location,
    /// s3://BUCKET[/PREFIX] where bundles go (left out of the listing if inside --source).
    #[arg(long, value_name = "S3_URI", value_parser = location)]
    pub dest: S3Location,
    /// DynamoDB state table (`ferry init --table NAME` creates it).
    #[arg(long, value_name = "TABLE")]
    pub table: String,
    /// Only keys (relative to the prefix) matching one of these globs. A glob without `/`
    /// matches the file name at any depth; `*` stays within a path segment, `**` crosses them.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out keys matching any of these globs.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Only objects of at least this size (e.g. 1KiB).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub min_size: Option<u64>,
    /// Only objects of at most this size (e.g. 5GiB).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_size: Option<u64>,
    /// Take a new baseline: ignore the previous inventory.
    #[arg(long)]
    pub full: bool,
    /// Ship renamed objects' bytes instead of recording moves.
    #[arg(long)]
    pub no_moves: bool,
    /// Also find changes the listing cannot show (tags, Object Lock, headers, metadata): HEAD
    /// every object the listing calls unchanged, GetObjectTagging where it has tags, and ship
    /// what changed as metadata-only entries, without the bytes.
    #[arg(long)]
    pub scan_metadata: bool,
    /// A content policy (TOML: max_size, allow_prefixes, allow_types, deny_types, deny_keys,
    /// deny_keywords, type_mismatch): what breaks it is withheld, not shipped, and reported.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<std::path::PathBuf>,
    /// Byte cap of a volume (at least 1MiB) [default: 4032MiB, fits FAT32].
    #[arg(long, value_name = "SIZE", value_parser = volume_size)]
    pub volume_size: Option<u64>,
    /// Entry cap of a volume (1..=200000).
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_VOLUME_ENTRIES, value_parser = volume_entries)]
    pub volume_entries: u64,
    /// Multipart part size of volume uploads (5MiB..=5GiB).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = part_size)]
    pub part_size: u64,
    /// Concurrent GETs (1..=256).
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_CONCURRENCY, value_parser = concurrency)]
    pub concurrency: usize,
    /// Key ranges of the source listed at once, at most (1..=64; cut at the previous
    /// inventory's index, never under 2,000 keys a range; 1: one listing stream).
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_LIST_RANGES, value_parser = list_ranges)]
    pub list_ranges: usize,
    /// Key-range shards the changed objects are cut into and shipped at once, each with its
    /// own fetches and volumes (1..=64; the same bundle format whatever the number).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = shards)]
    pub shards: usize,
    /// Compression of entries.
    #[arg(long, default_value = "stored", value_parser = ["stored", "deflate"])]
    pub compression: String,
}

/// Approvals a bundle must carry (`ferry verify`, `ferry import`).
#[derive(Args, Clone, Default)]
pub struct ApprovalArgs {
    /// Refuse (exit 5, before anything is written) a bundle without valid approvals by this
    /// many distinct --approver keys. An import state remembers it: later imports without the
    /// flag still require it.
    #[arg(long, value_name = "N", requires = "approver")]
    pub require_approvals: Option<u32>,
    /// A reviewer whose approvals count (PEM public key; repeat for each reviewer).
    #[arg(long, value_name = "PEM", value_parser = trusted_key)]
    pub approver: Vec<TrustedKey>,
}

impl ApprovalArgs {
    /// The requirement given, if any.
    pub fn requirement(&self) -> s3_ferry::Result<Option<s3_ferry::approval::Requirement>> {
        self.require_approvals
            .map(|n| s3_ferry::approval::Requirement::new(n, self.approver.clone()))
            .transpose()
    }
}

/// Where a command appends its audit lines.
#[derive(Args, Clone, Default)]
pub struct AuditArgs {
    /// Append one hash-chained JSON line per action to this file (created if missing; `ferry
    /// audit FILE` checks it).
    #[arg(long, value_name = "FILE", env = "FERRY_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Stop cleanly after this long (close the volume, checkpoint, exit 4); run again to continue.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub deadline: Option<Duration>,
    /// Lease time (10s..=12h); a live run renews it every third of it.
    #[arg(long, value_name = "DURATION", env = "FERRY_LEASE_TTL", default_value = "5m", value_parser = lease_ttl)]
    pub lease_ttl: Duration,
    /// Sign every bundle: kms:KEY_ID_OR_ARN_OR_ALIAS (an ECC_NIST_P256 KMS key) or file:PATH
    /// (a PKCS#8 PEM from `ferry keygen`).
    #[arg(long, value_name = "SPEC", env = "FERRY_SIGNING_KEY", value_parser = signing_key)]
    pub signing_key: Option<SigningKeySpec>,
    /// Seal every volume with age to this recipient (age1…, from `age-keygen`; repeat for
    /// several). Volumes become NAME.zip.age; only the holders of the identities can read them.
    #[arg(long, value_name = "RECIPIENT", value_parser = recipient)]
    pub encrypt_to: Vec<String>,
    /// Seal to every recipient listed in this file (one per line, # comments).
    #[arg(long, value_name = "FILE")]
    pub encrypt_to_file: Vec<PathBuf>,
    /// Run every object read through this scanner before it enters a volume, `{}` being the
    /// path of a file holding its bytes: exit 0 clean, 1 flagged (withheld), anything else
    /// stops the export before that object ships (fail closed; the bundle stays checkpointed).
    #[arg(long, value_name = "CMD")]
    pub scan: Option<String>,
    #[command(flatten)]
    pub audit: AuditArgs,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("which").args(["sequence", "latest", "since"]))]
pub struct DownloadArgs {
    /// s3://BUCKET[/PREFIX] the bundles were exported to (export's --dest).
    #[arg(long, value_name = "S3_URI", value_parser = location)]
    pub from: S3Location,
    /// The export job whose bundles to fetch.
    #[arg(long, value_name = "NAME", value_parser = job)]
    pub job: JobName,
    /// This bundle.
    #[arg(long, value_name = "N")]
    pub sequence: Option<u64>,
    /// The newest complete bundle (the default).
    #[arg(long)]
    pub latest: bool,
    /// Every complete bundle after sequence N (N = the last one imported).
    #[arg(long, value_name = "N")]
    pub since: Option<u64>,
    /// Folder to write `<job>/<sequence>/` into.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Ranged GETs in flight (1..=256).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = concurrency)]
    pub concurrency: usize,
    /// Fetch only the approval files of bundles already in --to (every one of the job there,
    /// or the one --sequence names), to bring approvals given after the download.
    #[arg(long)]
    pub approvals_only: bool,
    #[command(flatten)]
    pub audit: AuditArgs,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("target").args(["to", "to_dir"]).required(true))]
pub struct ImportArgs {
    /// Volume files, folders holding bundles, or s3:// bundle prefixes.
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// s3://BUCKET[/PREFIX] to replay into.
    #[arg(long, value_name = "S3_URI", value_parser = location)]
    pub to: Option<S3Location>,
    /// Directory to replay into.
    #[arg(long, value_name = "DIR")]
    pub to_dir: Option<PathBuf>,
    /// Import state file [default with --to-dir: DIR/.ferry/state.json].
    #[arg(long, value_name = "FILE", conflicts_with = "table")]
    pub state: Option<PathBuf>,
    /// Keep the import state in this DynamoDB table (with --job).
    #[arg(long, value_name = "TABLE", requires = "job")]
    pub table: Option<String>,
    /// The job whose bundles are imported (names the state in --table; picks one job's
    /// bundles from sources holding several).
    #[arg(long, value_name = "NAME", value_parser = job)]
    pub job: Option<JobName>,
    /// Print what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply bundles even if they do not follow the last one applied; with --reason and
    /// --require-approvals, replace the approvals the import state requires (even by fewer).
    #[arg(long)]
    pub force: bool,
    /// Why --force is used (written to the audit log and the run's log).
    #[arg(long, value_name = "TEXT", requires = "force")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub approvals: ApprovalArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
    /// A baseline removes everything under the target that it does not list (exact mirror,
    /// like `rclone sync`), not only what ferry wrote there; see it first with --dry-run.
    #[arg(long)]
    pub delete_unlisted: bool,
    /// Objects written at once (1..=256).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = concurrency)]
    pub concurrency: usize,
    /// Multipart part size for large objects (5MiB..=5GiB).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = part_size)]
    pub part_size: u64,
    /// Lease time of the import state in --table (10s..=12h).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = lease_ttl)]
    pub lease_ttl: Duration,
    /// Accept only bundles signed by this public key (PEM; repeat for several keys). Once a
    /// signed bundle is applied, the target accepts only bundles signed by its key.
    #[arg(long, value_name = "PEM", value_parser = trusted_key)]
    pub trust: Vec<TrustedKey>,
    /// Open sealed (.zip.age) volumes with this age identity file (repeat for several).
    #[arg(long, value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// Server-side encryption of every object written into --to: AES256 (S3-managed keys) or
    /// aws:kms [default: the bucket's default encryption].
    #[arg(long, value_name = "ALGORITHM", requires = "to", value_parser = ["AES256", "aws:kms"])]
    pub sse: Option<String>,
    /// The KMS key (id, ARN or alias) of --sse aws:kms [default: the account's aws/s3 key].
    #[arg(long, value_name = "KEY", requires = "sse")]
    pub sse_kms_key_id: Option<String>,
    /// With --sse aws:kms: use an S3 Bucket Key (fewer KMS requests).
    #[arg(long, requires = "sse")]
    pub bucket_key: bool,
    /// Objects carrying an Object Lock (retention, legal hold): `apply` it (a bucket without
    /// Object Lock refuses them, before anything is written) or `skip` it (imported unlocked;
    /// the summary counts them).
    #[arg(long, value_name = "apply|skip", default_value = "apply", value_parser = ["apply", "skip"])]
    pub object_lock: String,
    /// The far side's own content policy (TOML, the export's keys): what breaks it is kept
    /// out of the target (see --quarantine).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Run every object through this scanner first, `{}` being the path of a file holding its
    /// verified bytes: exit 0 clean, 1 flagged (kept out), anything else stops the import
    /// before that object is written (fail closed). E.g. 'clamscan --no-summary {}'.
    #[arg(long, value_name = "CMD")]
    pub scan: Option<String>,
    /// Scans run at once (1..=64).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub scan_concurrency: u64,
    /// Where objects kept out by --policy or --scan go, for a person to review:
    /// s3://BUCKET/PREFIX or a folder (the verified bytes under JOB/SEQUENCE/KEY, and
    /// KEY.ferry-quarantine.json saying why). Without it they are not written anywhere.
    #[arg(long, value_name = "S3_URI|DIR")]
    pub quarantine: Option<String>,
    /// Storage class of every object written into --to (STANDARD, STANDARD_IA, GLACIER_IR, …)
    /// [default: the bucket's default, STANDARD].
    #[arg(long, value_name = "CLASS", requires = "to")]
    pub storage_class: Option<String>,
}

impl ImportArgs {
    /// How the destination stores what the import writes (--sse, --sse-kms-key-id,
    /// --bucket-key, --storage-class).
    pub fn placement(&self) -> s3_ferry::Result<s3_ferry::store::Placement> {
        s3_ferry::store::Placement::parse(
            self.sse.as_deref(),
            self.sse_kms_key_id.as_deref(),
            self.bucket_key,
            self.storage_class.as_deref(),
            [
                "--sse",
                "--sse-kms-key-id",
                "--bucket-key",
                "--storage-class",
            ],
        )
    }
}

/// A library config error as clap's message: what is wrong with the value.
fn detail(e: s3_ferry::Error) -> String {
    match e {
        s3_ferry::Error::Config { detail, .. } => detail,
        e => e.to_string(),
    }
}

fn trusted_key(s: &str) -> Result<TrustedKey, String> {
    TrustedKey::from_pem_file(std::path::Path::new(s)).map_err(|e| match e {
        s3_ferry::Error::Io { source, .. } => format!("cannot read `{s}`: {source}"),
        e => detail(e),
    })
}

fn recipient(s: &str) -> Result<String, String> {
    s3_ferry::format::seal::Recipients::from_env(s)
        .map_err(detail)
        .map(|_| s.trim().to_string())
}

fn signing_key(s: &str) -> Result<SigningKeySpec, String> {
    s.parse().map_err(detail)
}

fn job(s: &str) -> Result<JobName, String> {
    s.parse().map_err(detail)
}

fn location(s: &str) -> Result<S3Location, String> {
    s.parse().map_err(detail)
}

fn size(s: &str) -> Result<u64, String> {
    config::parse_size("size", s).map_err(detail)
}

fn part_size(s: &str) -> Result<u64, String> {
    size(s).and_then(|n| bounds::part_size("part size", n).map_err(detail))
}

fn volume_size(s: &str) -> Result<u64, String> {
    size(s).and_then(|n| bounds::volume_size("volume size", n).map_err(detail))
}

fn volume_entries(s: &str) -> Result<u64, String> {
    let n: u64 = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
    bounds::volume_entries("volume entries", n).map_err(detail)
}

fn shards(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
    bounds::shards("shards", n).map_err(detail)
}

fn list_ranges(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
    bounds::list_ranges("list ranges", n).map_err(detail)
}

fn concurrency(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
    bounds::concurrency("concurrency", n).map_err(detail)
}

fn duration(s: &str) -> Result<Duration, String> {
    config::parse_duration("duration", s).map_err(detail)
}

fn lease_ttl(s: &str) -> Result<Duration, String> {
    duration(s).and_then(|d| bounds::lease_ttl("lease time", d).map_err(detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if a.get_help().is_none() && !matches!(a.get_id().as_str(), "help" | "version") {
                    missing.push(format!("{path} --{}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "ferry", &mut missing);
        assert!(missing.is_empty(), "flags without help: {missing:?}");
        Cli::command().debug_assert();
    }
}
