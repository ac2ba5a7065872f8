//! Exit codes: one table, used for the process status, `ferry --help` and README.

use s3_ferry::Error as E;

/// Bad usage, or settings that differ from the ones the job (or the import) is pinned to.
pub const USAGE: u8 = 2;
/// Another run holds the job's lease, or another import the state's lock.
pub const LEASE_HELD: u8 = 3;
/// The deadline stopped the run: call again to continue the bundle.
pub const CONTINUE: u8 = 4;
/// A volume or bundle failed verification (damaged, altered or incomplete).
pub const VERIFY: u8 = 5;
/// A bundle does not follow the last one applied to the target.
pub const OUT_OF_ORDER: u8 = 6;

/// The table `ferry --help` ends with.
pub const HELP: &str = "\
Exit codes:
  0  done (also \"no changes\", \"already applied\")
  1  error: the message names the bucket, key, table or file and what to do
  2  bad usage: an unknown flag or a value out of range; an incremental export given other
     settings (source, filters, destination, moves) than the job is pinned to; an import
     source holding bundles of several jobs
  3  another run holds the job's lease, or another import holds the import state's lock
  4  the deadline was reached: the bundle is checkpointed; run the same command again
  5  a volume or bundle failed verification (damaged, altered, truncated, incomplete, or not
     signed by a trusted key, or without the approvals required); an audit log whose chain
     is broken
  6  a bundle does not follow the last one applied to the import target
  130, 143  stopped cleanly by SIGINT (Ctrl-C) or SIGTERM: uploads aborted, lease or lock
     released, an export's bundle checkpointed; run the same command again to continue

Environment: AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL and credentials as for the AWS CLI;
FERRY_S3_PATH_STYLE, FERRY_LEASE_TTL, FERRY_LOG (log filter, default warn).";

/// The exit code of a failed run.
pub fn code(e: &anyhow::Error) -> u8 {
    match e.chain().find_map(|c| c.downcast_ref::<E>()) {
        Some(E::LeaseHeld { .. } | E::StateLocked { .. }) => LEASE_HELD,
        Some(
            E::Verify { .. }
            | E::Archive { .. }
            | E::Bundle { .. }
            | E::Untrusted { .. }
            | E::Unapproved { .. }
            | E::AuditBroken { .. },
        ) => VERIFY,
        Some(E::OutOfOrder { .. }) => OUT_OF_ORDER,
        Some(
            E::JobPinned { .. }
            | E::DestinationChanged { .. }
            | E::SeveralJobs { .. }
            | E::NoObjectLock { .. }
            | E::Policy { .. },
        ) => USAGE,
        Some(E::Interrupted { signal }) if *signal == "SIGTERM" => 143,
        Some(E::Interrupted { .. }) => 130,
        _ => 1,
    }
}
