//! The functions' `POLICY` variable: a content policy inline (TOML, parsed once at start) or
//! an `s3://BUCKET/KEY` read at every invocation, so that a new policy applies to the next run
//! without a redeploy.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::policy::{MAX_POLICY_BYTES, Policy};
use crate::store::Store;

/// Where a function's policy is.
#[derive(Debug, Clone)]
pub enum PolicySpec {
    Inline(Arc<Policy>),
    S3 { bucket: String, key: String },
}

impl PolicySpec {
    /// From the variable's value (`POLICY`); `None` when unset or blank.
    pub fn parse(value: Option<&str>) -> Result<Option<PolicySpec>> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if !v.starts_with("s3://") {
            return Ok(Some(PolicySpec::Inline(Arc::new(Policy::parse(
                v, "POLICY",
            )?))));
        }
        let loc: crate::config::S3Location = v.parse().map_err(|e: Error| Error::Policy {
            origin: "POLICY".into(),
            detail: e.to_string(),
        })?;
        let key = loc.prefix.trim_end_matches('/').to_string();
        if key.is_empty() {
            return Err(Error::Policy {
                origin: "POLICY".into(),
                detail: format!("`{v}` names a bucket, not a policy object: write s3://BUCKET/KEY"),
            });
        }
        Ok(Some(PolicySpec::S3 {
            bucket: loc.bucket,
            key,
        }))
    }

    /// The policy, read now when it is in S3 (at most [`MAX_POLICY_BYTES`]).
    pub async fn load(&self, store: &Store) -> Result<Arc<Policy>> {
        let (bucket, key) = match self {
            PolicySpec::Inline(p) => return Ok(p.clone()),
            PolicySpec::S3 { bucket, key } => (bucket, key),
        };
        let origin = format!("s3://{bucket}/{key}");
        let bad = |detail: String| Error::Policy {
            origin: origin.clone(),
            detail,
        };
        let missing =
            || bad("not found (POLICY names it): put the policy there or change POLICY".into());
        let (_, size) = store.head(bucket, key).await?.ok_or_else(missing)?;
        if size > MAX_POLICY_BYTES as u64 {
            return Err(bad(format!(
                "{size} bytes (a policy has at most {MAX_POLICY_BYTES})"
            )));
        }
        let body = store.get_document(bucket, key).await?.ok_or_else(missing)?;
        let text = String::from_utf8(body.to_vec()).map_err(|_| bad("not UTF-8 text".into()))?;
        Ok(Arc::new(Policy::parse(&text, &origin)?))
    }
}
