//! s3-ferry: offline delta sync of S3 buckets. The engine: plan the delta of a bucket against
//! its last inventory, stream the changed objects into self-verifying ZIP64 volumes, and commit
//! the job's state in DynamoDB.

pub mod activity;
pub mod approval;
pub mod audit;
pub mod clock;
pub mod config;
pub mod context;
pub mod error;
pub mod export;
pub mod format;
pub mod import;
pub mod interrupt;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod memory;
pub mod plan;
pub mod policy;
pub mod progress;
pub mod review;
pub mod state;
pub mod store;

pub use error::{Error, Result};

/// An error and its chain of sources on one line (`a: b: c`), for logs and notifications.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
