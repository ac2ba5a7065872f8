//! Integration tests of s3-ferry against a local moto server (one target; a module per area).

mod chaos;
mod cli;
mod conformance;
mod export;
mod fast;
mod fast_export;
mod fast_policy;
mod fast_roundtrip;
mod fast_runs;
mod faults;
mod fidelity;
mod hostile;
mod import;
mod pinned;
mod proxy;
mod release;
mod runs;
mod sealed;
mod shipped;
mod state;
mod store;
mod trust;
mod unlisted;
mod util;
mod world;
mod zip64;
