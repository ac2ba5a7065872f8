//! What a run ships: the listing ([`listing`], whole or in key ranges), the inventory of the
//! last run ([`inventory`]), the diff between them ([`diff`]) and the renames paired after ([`renames`]), both
//! re-exported here,
//! and the job's pin ([`pin`]: the settings an inventory is only valid for).

mod diff;
pub mod inventory;
pub mod listing;
mod metadata;
pub mod pin;
mod renames;
mod restore;

pub use diff::*;
pub use metadata::MetadataReader;
pub use renames::*;
pub use restore::{Restore, Restores};
