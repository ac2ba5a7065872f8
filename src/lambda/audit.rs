//! The functions' audit log (`AUDIT_PREFIX`): the lines of one invocation as one JSON-lines
//! object under `PREFIX<side>/<job>/`, chained to that folder's newest object (the function's
//! lease keeps its invocations of one job from overlapping). `AUDIT_PREFIX` is
//! `s3://BUCKET/PREFIX`, or a key prefix in the function's own bucket (the export bucket, the
//! import bucket). Every line is logged to CloudWatch Logs as well.

use tracing::info;

use crate::audit::{Event, S3Log, Who};
use crate::config::S3Location;
use crate::error::Result;
use crate::store::aws::Clients;

/// Where `AUDIT_PREFIX` points, given the bucket a bare prefix is in.
pub fn location(value: Option<String>, bucket: &str) -> Result<Option<S3Location>> {
    let Some(v) = value else {
        return Ok(None);
    };
    if v.starts_with("s3://") {
        return Ok(Some(
            v.parse()
                .map_err(|e| crate::lambda::export::named("AUDIT_PREFIX", e))?,
        ));
    }
    Ok(Some(S3Location {
        bucket: bucket.to_string(),
        prefix: v.trim_start_matches('/').to_string(),
    }))
}

/// The identity the function's lines name.
pub async fn who(clients: &Clients) -> Who {
    Who::local(clients.caller_arn().await)
}

/// Write `events` of `side` (`export`, `import`) for `job` under `at`.
pub async fn write(
    clients: &Clients,
    at: &S3Location,
    side: &str,
    job: &str,
    events: &[Event],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let base = match at.prefix.as_str() {
        "" => String::new(),
        p if p.ends_with('/') => p.to_string(),
        p => format!("{p}/"),
    };
    let prefix = format!("{base}{side}/{job}/");
    let mut log = S3Log::open(clients.s3.clone(), &at.bucket, &prefix).await?;
    for e in events {
        log.append(e);
        info!(audit = %serde_json::to_string(e).unwrap_or_default(), "audit");
    }
    let key = log.flush().await?;
    info!(bucket = %at.bucket, key = key.as_deref().unwrap_or("-"), lines = events.len(), "audit log written");
    Ok(())
}
