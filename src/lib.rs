//! s3-ferry: offline delta sync of S3 buckets. The engine: plan the delta of a bucket against
//! its last inventory, stream the changed objects into self-verifying ZIP64 volumes, and commit
//! the job's state in DynamoDB.

pub mod archive;
pub mod aws;
pub mod config;
pub mod error;
pub mod export;
pub mod inventory;
pub mod manifest;
pub mod plan;
pub mod s3;
pub mod sink;
pub mod state;

pub use error::{Error, Result};
