//! s3-ferry: offline delta sync of S3 buckets. The engine: plan the delta of a bucket against
//! its last inventory, stream the changed objects into self-verifying ZIP64 volumes, and commit
//! the job's state in DynamoDB.

pub mod activity;
pub mod archive;
pub mod aws;
pub mod bundle;
pub mod clock;
pub mod config;
pub mod download;
pub mod durable;
pub mod error;
pub mod export;
#[cfg(feature = "lambda")]
pub mod function;
pub mod import;
#[cfg(feature = "lambda")]
pub mod import_function;
pub mod interrupt;
pub mod inventory;
pub mod kms;
pub mod ledger;
pub mod listing;
pub mod manifest;
pub mod memory;
pub mod pin;
pub mod plan;
pub mod progress;
pub mod seal;
#[cfg(feature = "lambda")]
pub mod secrets;
pub mod sign;
pub mod sink;
pub mod state;
pub mod store;
pub mod target;
pub mod unzip;
pub mod verify;

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
