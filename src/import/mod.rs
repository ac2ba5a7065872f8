//! The far side: bundles found and opened ([`bundle`]), fetched from the export bucket
//! ([`download`]), replayed ([`run`], re-exported here) into a target ([`target`]: a bucket or a
//! directory) while a ledger ([`ledger`]: a file or the state table) records what was applied.

pub mod bundle;
pub mod download;
pub mod ledger;
mod run;
pub mod screen;
pub mod target;
pub mod verify;

pub use run::*;
