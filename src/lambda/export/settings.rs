//! The export function's configuration, from its environment: every setting the CLI has.

use super::*;

/// Default time kept free before the Lambda deadline to close the volume and checkpoint.
pub const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_secs(90);
/// Default cap on continuation hops of one bundle.
pub const DEFAULT_MAX_HOPS: u32 = 50;

/// The function's configuration, parsed once at cold start.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub export: ExportConfig,
    pub topic_arn: Option<String>,
    pub deadline_margin: Duration,
    /// Optional cap on one invocation's working time (forces short hops, e.g. in tests).
    pub run_budget: Option<Duration>,
    /// The events this function serves (`FERRY_STEPS`: plan, shard, commit, failed, direct;
    /// all when unset). A function given fewer permissions serves fewer steps.
    pub steps: Vec<&'static str>,
    pub path_style: bool,
    /// `POLICY`: the content policy, inline or an `s3://` object read at every invocation.
    pub policy: Option<crate::lambda::policy::PolicySpec>,
    /// Where each run writes its audit lines (`AUDIT_PREFIX`: `s3://BUCKET/PREFIX`, or a
    /// prefix in the export bucket).
    pub audit: Option<S3Location>,
}

pub(super) fn list(v: Option<String>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

impl FunctionConfig {
    /// Read the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Parse from a variable lookup; every error names the variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let v = Vars(get);
        let job: JobName = v
            .required("FERRY_JOB")?
            .parse()
            .map_err(|e| named("FERRY_JOB", e))?;
        let mut export = ExportConfig::new(
            job,
            v.location("SOURCE_BUCKET", "SOURCE_PREFIX")?,
            v.location("EXPORT_BUCKET", "EXPORT_PREFIX")?,
            v.required("STATE_TABLE")?,
        );
        export.filters = Filters::new(
            &list(v.get("INCLUDE")),
            &list(v.get("EXCLUDE")),
            v.size("MIN_SIZE")?,
            v.size("MAX_SIZE")?,
        )
        .map_err(|e| named("INCLUDE/EXCLUDE/MIN_SIZE/MAX_SIZE", e))?;
        export.moves = match v.get("MOVES").as_deref() {
            None | Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => {
                return Err(Error::config(
                    "MOVES",
                    format!("`{other}` (use true, or false to ship a rename's bytes instead)"),
                ));
            }
        };
        let policy = crate::lambda::policy::PolicySpec::parse(v.get("POLICY").as_deref())
            .map_err(|e| named("POLICY", e))?;
        export.scan_metadata = match v.get("SCAN_METADATA").as_deref() {
            None | Some("" | "false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(Error::config(
                    "SCAN_METADATA",
                    format!(
                        "`{other}` (use true to HEAD unchanged objects for metadata changes, or false)"
                    ),
                ));
            }
        };
        let defaults = Tuning::default();
        export.tuning = Tuning {
            volume_size: v.size("VOLUME_SIZE")?.unwrap_or(defaults.volume_size),
            volume_entries: v
                .number("VOLUME_ENTRIES")?
                .unwrap_or(defaults.volume_entries),
            part_size: v.size("PART_SIZE")?.unwrap_or(defaults.part_size),
            concurrency: v
                .number("CONCURRENCY")?
                .map_or(defaults.concurrency, |n| n as usize),
            compression: match v.get("COMPRESSION") {
                Some(c) => c.parse().map_err(|e| named("COMPRESSION", e))?,
                None => defaults.compression,
            },
            list_ranges: v
                .number("LIST_RANGES")?
                .map_or(defaults.list_ranges, |n| n as usize),
            shards: v.number("SHARDS")?.map_or(defaults.shards, |n| n as usize),
        };
        export.tuning.validate()?;
        export.signing = v
            .get("SIGNING_KEY_ID")
            .map(crate::format::sign::SigningKeySpec::Kms);
        export.encrypt_to = match v.get("AGE_RECIPIENTS") {
            Some(r) => crate::format::seal::Recipients::from_env(&r)?,
            None => None,
        };
        if let Some(ttl) = v.duration("LEASE_TTL")? {
            export.lease_ttl = config::bounds::lease_ttl("LEASE_TTL", ttl)?;
        }
        let audit = crate::lambda::audit::location(v.get("AUDIT_PREFIX"), &export.dest.bucket)?;
        Ok(FunctionConfig {
            audit,
            export,
            topic_arn: v.get("NOTIFY_TOPIC_ARN"),
            deadline_margin: v
                .duration("DEADLINE_MARGIN")?
                .unwrap_or(DEFAULT_DEADLINE_MARGIN),
            run_budget: v.duration("RUN_BUDGET")?,
            steps: match v.get("FERRY_STEPS") {
                None => STEP_NAMES.to_vec(),
                Some(given) => list(Some(given))
                    .iter()
                    .map(|s| {
                        STEP_NAMES.iter().copied().find(|n| n == s).ok_or_else(|| {
                            Error::config(
                                "FERRY_STEPS",
                                format!("`{s}` is not one of {}", STEP_NAMES.join(", ")),
                            )
                        })
                    })
                    .collect::<Result<_>>()?,
            },
            path_style: v.flag("FERRY_S3_PATH_STYLE"),
            policy,
        })
    }
}

/// Typed reads of configuration variables through a lookup; every error names the variable.
pub(crate) struct Vars<F: Fn(&str) -> Option<String>>(pub F);

/// Re-label a config error with the variable it came from.
pub(crate) fn named(k: &'static str, e: Error) -> Error {
    match e {
        Error::Config { detail, .. } => Error::config(k, detail),
        other => other,
    }
}

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    pub fn get(&self, k: &str) -> Option<String> {
        (self.0)(k)
    }
    pub fn required(&self, k: &str) -> Result<String> {
        self.get(k)
            .ok_or_else(|| Error::config(k, "is not set (see the README's table of variables)"))
    }
    /// `s3://$BUCKET/$PREFIX`.
    pub fn location(&self, bucket: &'static str, prefix: &'static str) -> Result<S3Location> {
        let uri = format!(
            "s3://{}/{}",
            self.required(bucket)?,
            self.get(prefix).unwrap_or_default()
        );
        uri.parse().map_err(|e| named(bucket, e))
    }
    pub fn size(&self, k: &'static str) -> Result<Option<u64>> {
        self.get(k).map(|v| config::parse_size(k, &v)).transpose()
    }
    pub fn number(&self, k: &'static str) -> Result<Option<u64>> {
        self.get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|e| Error::config(k, format!("`{v}`: {e}")))
            })
            .transpose()
    }
    pub fn duration(&self, k: &'static str) -> Result<Option<Duration>> {
        self.get(k)
            .map(|v| config::parse_duration(k, &v))
            .transpose()
    }
    pub fn flag(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| v == "true" || v == "1")
    }
}
