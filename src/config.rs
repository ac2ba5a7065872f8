//! Typed, validated configuration of a job: S3 locations, filters and tuning. Raw flags or
//! environment variables are parsed into these structs once; nothing below reads the
//! environment.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// S3 allows parts of 5 MiB to 5 GiB.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Default part size of volume uploads.
pub const DEFAULT_PART_SIZE: u64 = 16 * 1024 * 1024;
/// Default volume cap: 4 GiB less 64 MiB, so a volume fits FAT32 media (max file 4 GiB - 1).
pub const DEFAULT_VOLUME_SIZE: u64 = 4 * 1024 * 1024 * 1024 - 64 * 1024 * 1024;
/// Default cap on entries per volume (bounds the in-memory manifest of a volume).
pub const DEFAULT_VOLUME_ENTRIES: u64 = 50_000;
/// Default number of concurrent GETs.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default most key ranges listed at once.
pub const DEFAULT_LIST_RANGES: usize = 8;
/// Default lease time; a live run renews it every third of this.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(300);

/// `s3://bucket/prefix`: a bucket and a key prefix (empty, or ending in `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

impl S3Location {
    /// The key of `rest` below this location's prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{}", self.prefix, rest)
    }
}

impl FromStr for S3Location {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let rest = s.strip_prefix("s3://").ok_or_else(|| {
            Error::config(
                "s3 uri",
                format!("`{s}` does not start with s3:// (write s3://BUCKET[/PREFIX])"),
            )
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !valid_bucket {
            return Err(Error::config(
                "s3 uri",
                format!("`{s}`: `{bucket}` is not a valid bucket name (3-63 of a-z 0-9 . -)"),
            ));
        }
        let prefix = prefix.trim_start_matches('/');
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// A job name: used in DynamoDB keys and S3 paths, so kept to a safe alphabet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobName(String);

impl JobName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for JobName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if ok {
            Ok(JobName(s.to_string()))
        } else {
            Err(Error::config(
                "job name",
                format!("`{s}`: use 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit"),
            ))
        }
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which objects of the source take part.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    /// The patterns as given (recorded in the job's pin).
    pub include_patterns: Vec<String>,
    pub exclude_patterns: Vec<String>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// Full-key prefixes of the export's own output inside the source (never exported).
    pub own_output: Vec<String>,
}

fn glob_set(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        // A pattern without `/` matches the last path component anywhere (like rclone);
        // `*` never crosses `/`, `**` does.
        let full = if p.contains('/') {
            p.clone()
        } else {
            format!("**/{p}")
        };
        let glob = globset::GlobBuilder::new(&full)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::config("glob", format!("`{p}`: {e}")))?;
        builder.add(glob);
        if !p.contains('/') {
            builder.add(Glob::new(p).map_err(|e| Error::config("glob", format!("`{p}`: {e}")))?);
        }
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| Error::config("glob", e.to_string()))
}

impl Filters {
    /// Build filters from include/exclude glob patterns (on the key relative to the prefix).
    pub fn new(
        include: &[String],
        exclude: &[String],
        min_size: Option<u64>,
        max_size: Option<u64>,
    ) -> Result<Self> {
        if let (Some(min), Some(max)) = (min_size, max_size)
            && min > max
        {
            return Err(Error::config(
                "size filter",
                format!("--min-size {min} is larger than --max-size {max}"),
            ));
        }
        Ok(Filters {
            include: glob_set(include)?,
            exclude: glob_set(exclude)?,
            include_patterns: include.to_vec(),
            exclude_patterns: exclude.to_vec(),
            min_size,
            max_size,
            own_output: Vec::new(),
        })
    }

    /// These filters, also leaving out keys under `prefixes` (full keys).
    pub fn leaving_out(mut self, prefixes: Vec<String>) -> Self {
        self.own_output = prefixes;
        self
    }

    /// Is this (full) key part of the export's own output?
    pub fn is_own_output(&self, key: &str) -> bool {
        self.own_output.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Does an object with this key (relative to the source prefix) and size take part?
    pub fn matches(&self, relative_key: &str, size: u64) -> bool {
        if self.min_size.is_some_and(|m| size < m) || self.max_size.is_some_and(|m| size > m) {
            return false;
        }
        if let Some(inc) = &self.include
            && !inc.is_match(relative_key)
        {
            return false;
        }
        if let Some(exc) = &self.exclude
            && exc.is_match(relative_key)
        {
            return false;
        }
        true
    }
}

pub use crate::format::archive::Compression;

/// Parse a size such as `16MiB`, `4 GB` or `1048576`.
pub fn parse_size(what: &str, s: &str) -> Result<u64> {
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic() || c.is_whitespace());
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_err()
    {
        return Err(Error::config(
            what,
            format!("`{s}` is too large (sizes go up to 16 EiB); write e.g. 16MiB"),
        ));
    }
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| Error::config(what, format!("`{s}` is not a size ({e}); write e.g. 16MiB")))
}

/// Parse a duration such as `10m`, `90s` or `1h 30m`.
pub fn parse_duration(what: &str, s: &str) -> Result<Duration> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        Error::config(
            what,
            format!("`{s}` is not a duration ({e}); write e.g. 14m"),
        )
    })
}

/// The one validation policy of every tunable, shared by the CLI's flags and the Lambda
/// functions' environment: each check names the setting (`what`) and the allowed range.
pub mod bounds {
    use super::*;

    /// Concurrent requests of any kind: 1..=256.
    pub const CONCURRENCY: std::ops::RangeInclusive<usize> = 1..=256;
    /// Entries in one volume: bounds a volume's in-memory manifest (readers refuse more than
    /// `manifest::limits::ENTRIES`).
    pub const VOLUME_ENTRIES: std::ops::RangeInclusive<u64> = 1..=200_000;
    /// Smallest volume.
    pub const MIN_VOLUME_SIZE: u64 = 1024 * 1024;
    /// A lease shorter than this makes a tight renew loop (renewed every third of it).
    pub const MIN_LEASE_TTL: Duration = Duration::from_secs(10);
    /// Longer leases keep a crashed run's job locked for too long.
    pub const MAX_LEASE_TTL: Duration = Duration::from_secs(12 * 3600);

    pub fn part_size(what: &str, n: u64) -> Result<u64> {
        if (MIN_PART_SIZE..=MAX_PART_SIZE).contains(&n) {
            Ok(n)
        } else {
            Err(Error::config(
                what,
                format!(
                    "{} is outside S3's part sizes 5 MiB..=5 GiB",
                    bytesize::ByteSize(n).display().iec()
                ),
            ))
        }
    }

    pub fn volume_size(what: &str, n: u64) -> Result<u64> {
        if n >= MIN_VOLUME_SIZE {
            Ok(n)
        } else {
            Err(Error::config(
                what,
                format!("{n} bytes is below the 1 MiB minimum"),
            ))
        }
    }

    pub fn volume_entries(what: &str, n: u64) -> Result<u64> {
        if VOLUME_ENTRIES.contains(&n) {
            Ok(n)
        } else {
            Err(Error::config(what, format!("{n} is outside 1..=200000")))
        }
    }

    pub fn concurrency(what: &str, n: usize) -> Result<usize> {
        if CONCURRENCY.contains(&n) {
            Ok(n)
        } else {
            Err(Error::config(what, format!("{n} is outside 1..=256")))
        }
    }

    pub fn shards(what: &str, n: usize) -> Result<usize> {
        if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(Error::config(what, format!("{n} is outside 1..=64")))
        }
    }

    pub fn list_ranges(what: &str, n: usize) -> Result<usize> {
        if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(Error::config(what, format!("{n} is outside 1..=64")))
        }
    }

    pub fn lease_ttl(what: &str, d: Duration) -> Result<Duration> {
        if (MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&d) {
            Ok(d)
        } else {
            Err(Error::config(
                what,
                format!(
                    "{} is outside 10s..=12h (a live run renews its lease every third of it)",
                    humantime::format_duration(d)
                ),
            ))
        }
    }
}

/// Volume layout and transfer tuning.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub volume_size: u64,
    pub volume_entries: u64,
    pub part_size: u64,
    pub concurrency: usize,
    pub compression: Compression,
    /// Key ranges of the source listed at once, at most (cut at the previous inventory's
    /// index; never under 2,000 keys a range).
    pub list_ranges: usize,
    /// Key-range shards the puts are cut into and shipped at once (each with its own fetches,
    /// volumes and cursor).
    pub shards: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            volume_size: DEFAULT_VOLUME_SIZE,
            volume_entries: DEFAULT_VOLUME_ENTRIES,
            part_size: DEFAULT_PART_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            compression: Compression::Stored,
            list_ranges: DEFAULT_LIST_RANGES,
            shards: 1,
        }
    }
}

impl Tuning {
    /// Check the limits S3 and the format impose.
    pub fn validate(&self) -> Result<()> {
        bounds::part_size("part size", self.part_size)?;
        bounds::volume_size("volume size", self.volume_size)?;
        bounds::volume_entries("volume entries", self.volume_entries)?;
        bounds::concurrency("concurrency", self.concurrency)?;
        bounds::shards("shards", self.shards)?;
        bounds::list_ranges("list ranges", self.list_ranges)?;
        Ok(())
    }
}

/// Everything one export run needs to know.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub job: JobName,
    pub source: S3Location,
    pub dest: S3Location,
    pub table: String,
    pub filters: Filters,
    /// Force a new baseline (ignore the previous inventory).
    pub full: bool,
    /// Record renames as moves (`false` ships their bytes again).
    pub moves: bool,
    /// HEAD every object the listing calls unchanged (and read its tags where it has any) to
    /// find changes the listing cannot show — tags, Object Lock, headers, metadata — and ship
    /// them as metadata-only entries (`--scan-metadata`, `SCAN_METADATA`).
    pub scan_metadata: bool,
    /// The content policy (`--policy`, `POLICY`): what breaks it is withheld, not shipped.
    pub policy: Option<std::sync::Arc<crate::policy::Policy>>,
    /// A scanner every object read goes through before it ships (`ferry export --scan`).
    pub scan: Option<String>,
    pub tuning: Tuning,
    /// Stop cleanly (close the volume, checkpoint) once this instant is reached.
    pub deadline: Option<Instant>,
    pub lease_ttl: Duration,
    /// Sign every bundle with this key (`--signing-key`, `SIGNING_KEY_ID`).
    pub signing: Option<crate::format::sign::SigningKeySpec>,
    /// Seal every volume with age to these recipients (`--encrypt-to`, `AGE_RECIPIENTS`).
    pub encrypt_to: Option<crate::format::seal::Recipients>,
}

impl ExportConfig {
    /// What an object withheld by this run's screening (its policy and scanner) is recorded
    /// under in the inventory: another policy or scanner judges it again. `None` without any.
    pub fn screen_digest(&self) -> Option<String> {
        use sha2::Digest;
        if self.policy.is_none() && self.scan.is_none() {
            return None;
        }
        let policy = self.policy.as_ref().map_or("", |p| p.digest.as_str());
        let scan = self.scan.as_deref().unwrap_or("");
        Some(hex::encode(sha2::Sha256::digest(format!(
            "{policy}\n{scan}"
        ))))
    }

    /// A config with default filters and tuning.
    pub fn new(job: JobName, source: S3Location, dest: S3Location, table: String) -> Self {
        ExportConfig {
            job,
            source,
            dest,
            table,
            filters: Filters::default(),
            full: false,
            moves: true,
            scan_metadata: false,
            policy: None,
            scan: None,
            tuning: Tuning::default(),
            deadline: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            signing: None,
            encrypt_to: None,
        }
    }
}

impl ExportConfig {
    /// Key prefixes of the source listing that hold this export's own output (its bundles and
    /// `_state/`), when the export goes into the bucket it exports: they are left out of every
    /// listing, or each run would ship the bundles before it. With a `--dest` prefix, the whole
    /// prefix is the export's; without one, `JOB/` and `_state/`. A source that lies inside that
    /// output is refused.
    pub fn own_output(&self) -> Result<Vec<String>> {
        if self.dest.bucket != self.source.bucket {
            return Ok(Vec::new());
        }
        let areas = if self.dest.prefix.is_empty() {
            vec![format!("{}/", self.job), "_state/".to_string()]
        } else {
            vec![self.dest.prefix.clone()]
        };
        let mut inside = Vec::new();
        for area in areas {
            if self.source.prefix.starts_with(&area) {
                return Err(Error::config(
                    "source",
                    format!(
                        "{} lies inside the export's own output s3://{}/{area}: export another prefix, or send the bundles elsewhere with --dest",
                        self.source, self.dest.bucket
                    ),
                ));
            }
            if area.starts_with(&self.source.prefix) {
                inside.push(area);
            }
        }
        Ok(inside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uri_normalises_prefix() {
        let l: S3Location = "s3://my-bucket/a/b".parse().unwrap();
        assert_eq!(l.bucket, "my-bucket");
        assert_eq!(l.prefix, "a/b/");
        let l: S3Location = "s3://my-bucket".parse().unwrap();
        assert_eq!(l.prefix, "");
        assert!("my-bucket/x".parse::<S3Location>().is_err());
        assert!("s3://My_Bucket/x".parse::<S3Location>().is_err());
    }

    #[test]
    fn globs_match_basename_or_path() {
        let f = Filters::new(&["*.csv".into()], &["tmp/**".into()], None, None).unwrap();
        assert!(f.matches("a.csv", 1));
        assert!(f.matches("x/y/a.csv", 1));
        assert!(!f.matches("x/y/a.txt", 1));
        assert!(!f.matches("tmp/a.csv", 1));
        let f = Filters::new(&[], &[], Some(10), Some(20)).unwrap();
        assert!(!f.matches("a", 9));
        assert!(f.matches("a", 10));
        assert!(!f.matches("a", 21));
    }

    #[test]
    fn own_output_inside_the_source_is_left_out() {
        let cfg = |src: &str, dest: &str| {
            ExportConfig::new(
                "j".parse().unwrap(),
                src.parse().unwrap(),
                dest.parse().unwrap(),
                "t".into(),
            )
        };
        assert_eq!(
            cfg("s3://bkt", "s3://bkt/exports").own_output().unwrap(),
            ["exports/"]
        );
        assert_eq!(
            cfg("s3://bkt", "s3://bkt").own_output().unwrap(),
            ["j/", "_state/"]
        );
        assert!(
            cfg("s3://bkt/data", "s3://bkt/exports")
                .own_output()
                .unwrap()
                .is_empty()
        );
        assert!(
            cfg("s3://bkt", "s3://ckt/exports")
                .own_output()
                .unwrap()
                .is_empty()
        );
        assert!(
            cfg("s3://bkt/exports/x", "s3://bkt/exports")
                .own_output()
                .is_err()
        );
    }

    #[test]
    fn sizes_and_bounds_say_what_is_wrong() {
        let e = parse_size("--max-size", "99999999999999999999").unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        assert_eq!(parse_size("x", "16MiB").unwrap(), 16 * 1024 * 1024);
        assert!(bounds::part_size("--part-size", 1024 * 1024).is_err());
        assert!(bounds::lease_ttl("--lease-ttl", Duration::ZERO).is_err());
        assert!(bounds::concurrency("--concurrency", 0).is_err());
    }

    #[test]
    fn job_names_are_checked() {
        assert!("monthly-1".parse::<JobName>().is_ok());
        assert!("_state".parse::<JobName>().is_err());
        assert!("a/b".parse::<JobName>().is_err());
    }
}
