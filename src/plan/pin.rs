//! A job's pin: the settings its inventory depends on (source bucket and prefix, filters,
//! destination, moves). Recorded in the job's state at every commit and in each bundle's
//! checkpoint; an incremental run whose settings differ is refused before it lists anything,
//! because its diff against the inventory would ship every object outside the new settings
//! as a deletion (a typo in `--source` would empty the mirror).

use serde::{Deserialize, Serialize};

use crate::config::ExportConfig;
use crate::error::{Error, Result};

/// What an incremental run must share with the bundles before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub source_bucket: String,
    pub source_prefix: String,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub min_size: Option<u64>,
    #[serde(default)]
    pub max_size: Option<u64>,
    pub dest_bucket: String,
    pub dest_prefix: String,
    pub moves: bool,
}

/// One setting that differs: its name (as the CLI flag), the recorded and the given value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub setting: &'static str,
    pub recorded: String,
    pub given: String,
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(",")
    }
}

fn size(v: Option<u64>) -> String {
    v.map_or_else(|| "(none)".into(), |n| n.to_string())
}

impl Pin {
    /// The pin of a run with this configuration.
    pub fn of(cfg: &ExportConfig) -> Pin {
        Pin {
            source_bucket: cfg.source.bucket.clone(),
            source_prefix: cfg.source.prefix.clone(),
            include: cfg.filters.include_patterns.clone(),
            exclude: cfg.filters.exclude_patterns.clone(),
            min_size: cfg.filters.min_size,
            max_size: cfg.filters.max_size,
            dest_bucket: cfg.dest.bucket.clone(),
            dest_prefix: cfg.dest.prefix.clone(),
            moves: cfg.moves,
        }
    }

    /// `s3://bucket/prefix` of the source.
    pub fn source_uri(&self) -> String {
        format!("s3://{}/{}", self.source_bucket, self.source_prefix)
    }

    /// `s3://bucket/prefix` of the destination.
    pub fn dest_uri(&self) -> String {
        format!("s3://{}/{}", self.dest_bucket, self.dest_prefix)
    }

    /// The settings of `given` that differ from these (recorded) ones, destination first.
    pub fn differences(&self, given: &Pin) -> Vec<Difference> {
        let mut out = Vec::new();
        let mut check = |setting, recorded: String, now: String| {
            if recorded != now {
                out.push(Difference {
                    setting,
                    recorded,
                    given: now,
                });
            }
        };
        check("--dest", self.dest_uri(), given.dest_uri());
        check("--source", self.source_uri(), given.source_uri());
        check("--include", list(&self.include), list(&given.include));
        check("--exclude", list(&self.exclude), list(&given.exclude));
        check("--min-size", size(self.min_size), size(given.min_size));
        check("--max-size", size(self.max_size), size(given.max_size));
        let moves = |m: bool| if m { "not given" } else { "given" }.to_string();
        check("--no-moves", moves(self.moves), moves(given.moves));
        out
    }

    /// Only the settings a bundle in progress cannot do without: where it reads and writes.
    pub fn place_differences(&self, given: &Pin) -> Vec<Difference> {
        self.differences(given)
            .into_iter()
            .filter(|d| matches!(d.setting, "--dest" | "--source"))
            .collect()
    }
}

/// Refuse an incremental run of `cfg` whose settings differ from the `recorded` pin (or, for a
/// state written before pins, whose destination does not hold the job's `inventory`). A
/// baseline (`--full`, or no inventory yet) takes any settings.
pub fn check(cfg: &ExportConfig, recorded: Option<&Pin>, inventory: Option<&str>) -> Result<()> {
    let job = cfg.job.as_str();
    let Some(inventory) = inventory else {
        return Ok(());
    };
    if cfg.full {
        return Ok(());
    }
    match recorded {
        Some(pin) => refuse(job, pin.differences(&Pin::of(cfg))),
        None => {
            let home = cfg.dest.key(&format!("_state/{job}/"));
            if inventory.starts_with(&home) {
                return Ok(());
            }
            Err(Error::DestinationChanged {
                job: job.to_string(),
                recorded: format!("the prefix of its inventory `{inventory}`"),
                given: format!("s3://{}/{}", cfg.dest.bucket, cfg.dest.prefix),
            })
        }
    }
}

/// `Ok` when nothing differs; otherwise the error naming every difference.
pub fn refuse(job: &str, differences: Vec<Difference>) -> Result<()> {
    if let Some(d) = differences.iter().find(|d| d.setting == "--dest") {
        return Err(Error::DestinationChanged {
            job: job.to_string(),
            recorded: d.recorded.clone(),
            given: d.given.clone(),
        });
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::JobPinned {
        job: job.to_string(),
        differences: differences
            .iter()
            .map(|d| format!("{} is {} (this run: {})", d.setting, d.recorded, d.given))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin() -> Pin {
        Pin {
            source_bucket: "b".into(),
            source_prefix: "data/".into(),
            include: vec![],
            exclude: vec!["*.tmp".into()],
            min_size: None,
            max_size: Some(10),
            dest_bucket: "x".into(),
            dest_prefix: "".into(),
            moves: true,
        }
    }

    #[test]
    fn every_setting_that_differs_is_named_with_both_values() {
        assert!(pin().differences(&pin()).is_empty());
        let mut other = pin();
        other.source_prefix = "typo/".into();
        other.include = vec!["*.csv".into()];
        other.moves = false;
        let d = pin().differences(&other);
        let names: Vec<_> = d.iter().map(|d| d.setting).collect();
        assert_eq!(names, ["--source", "--include", "--no-moves"]);
        assert_eq!(d[0].recorded, "s3://b/data/");
        assert_eq!(d[0].given, "s3://b/typo/");
        assert_eq!(d[1].recorded, "(none)");
        assert_eq!(pin().place_differences(&other).len(), 1);
    }
}
