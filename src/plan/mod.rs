//! What a run ships: the listing ([`listing`], whole or in key ranges), the inventory of the
//! last run ([`inventory`]), the diff between them with renames ([`diff`], re-exported here),
//! and the job's pin ([`pin`]: the settings an inventory is only valid for).

mod diff;
pub mod inventory;
pub mod listing;
pub mod pin;

pub use diff::*;
