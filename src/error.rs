//! The crate's one error type: every failure names the bucket, key, table or file involved and
//! keeps the underlying error as its `source`.

use std::path::PathBuf;

/// A boxed source error (SDK errors are generic; they are kept whole, never stringified).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure a service answered, decided where the SDK error is read (the
/// adapter): only `Throttled` and `Transient` are worth running again unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The resource is not there.
    NotFound,
    /// A condition of the request did not hold (`If-Match`, a conditional write).
    Precondition,
    /// The service asked for fewer requests (503 SlowDown, 429, ThrottlingException…).
    Throttled,
    /// The credentials do not allow it (401, 403, AccessDenied…): retrying changes nothing.
    Denied,
    /// A server error, a time-out, a lost connection: may pass.
    Transient,
    /// Any other refusal of the request (a 4xx): retrying changes nothing.
    Rejected,
}

impl Class {
    /// Worth running again unchanged?
    pub fn is_retryable(self) -> bool {
        matches!(self, Class::Throttled | Class::Transient)
    }

    /// From an error code and an HTTP status (either may be missing) and whether the request
    /// got an answer at all.
    pub fn of(code: Option<&str>, status: Option<u16>, answered: bool) -> Class {
        const DENIED: &[&str] = &[
            "AccessDenied",
            "AccessDeniedException",
            "UnauthorizedOperation",
            "UnrecognizedClientException",
            "InvalidAccessKeyId",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "ExpiredTokenException",
            "AllAccessDisabled",
            "KMSAccessDeniedException",
        ];
        const THROTTLED: &[&str] = &[
            "SlowDown",
            "Throttling",
            "ThrottlingException",
            "ThrottledException",
            "ProvisionedThroughputExceededException",
            "RequestLimitExceeded",
            "TooManyRequestsException",
            "RequestThrottled",
            "LimitExceededException",
        ];
        const NOT_FOUND: &[&str] = &[
            "NoSuchKey",
            "NoSuchBucket",
            "NotFound",
            "ResourceNotFoundException",
            "NotFoundException",
            "NoSuchUpload",
        ];
        const PRECONDITION: &[&str] = &[
            "PreconditionFailed",
            "ConditionalCheckFailedException",
            "ConditionalRequestConflict",
        ];
        if !answered {
            return Class::Transient;
        }
        let is = |list: &[&str]| code.is_some_and(|c| list.contains(&c));
        if is(DENIED) || matches!(status, Some(401 | 403)) {
            Class::Denied
        } else if is(THROTTLED) || matches!(status, Some(429 | 503)) {
            Class::Throttled
        } else if is(NOT_FOUND) || status == Some(404) {
            Class::NotFound
        } else if is(PRECONDITION) || matches!(status, Some(409 | 412)) {
            Class::Precondition
        } else if status.is_some_and(|s| (400..500).contains(&s)) {
            Class::Rejected
        } else {
            Class::Transient
        }
    }
}

/// Everything that can go wrong in s3-ferry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An S3 request failed.
    #[error(
        "s3 {op} failed for s3://{bucket}/{key}: check the bucket exists, the credentials allow {op}, and the endpoint is right"
    )]
    S3 {
        op: &'static str,
        bucket: String,
        key: String,
        class: Class,
        #[source]
        source: BoxError,
    },
    /// The bucket does not exist.
    #[error(
        "bucket `{bucket}` does not exist (or is not visible with these credentials): create it or fix the s3:// URI"
    )]
    NoSuchBucket { bucket: String },
    /// A DynamoDB request failed.
    #[error(
        "dynamodb {op} failed on table `{table}`: check the table exists and the credentials allow {op}"
    )]
    Dynamo {
        op: &'static str,
        table: String,
        class: Class,
        #[source]
        source: BoxError,
    },
    /// A service could not be reached at all (connection refused, DNS, TLS, time-out).
    #[error(
        "cannot reach {service} at {endpoint} ({op}): check the endpoint (AWS_ENDPOINT_URL), the region and the network"
    )]
    Unreachable {
        service: &'static str,
        endpoint: String,
        op: &'static str,
        #[source]
        source: BoxError,
    },
    /// No AWS region is configured.
    #[error("no AWS region is set")]
    NoRegion,
    /// What was asked for is not there (no bundle of that job, no volume in that folder).
    #[error("{what} at {location}: {detail}")]
    Missing {
        what: String,
        location: String,
        detail: String,
    },
    /// A KMS request failed.
    #[error(
        "kms {op} failed for key `{key}`: check the key exists, is an ECC_NIST_P256 signing key, and the credentials allow kms:{op}"
    )]
    Kms {
        op: &'static str,
        key: String,
        class: Class,
        #[source]
        source: BoxError,
    },
    /// A Secrets Manager request failed.
    #[error(
        "secretsmanager GetSecretValue failed for secret `{id}`: check the secret exists and the credentials allow secretsmanager:GetSecretValue on it"
    )]
    Secret {
        id: String,
        class: Class,
        #[source]
        source: BoxError,
    },
    /// A bundle is not signed by a key the far side trusts.
    #[error(
        "bundle {what} at {location} is not trusted: {detail}. It was not applied; import only bundles signed by the exporter's key"
    )]
    Untrusted {
        what: String,
        location: String,
        detail: String,
    },
    /// A bundle lacks the approvals its import or verification requires.
    #[error(
        "bundle {what} at {location} is not approved: {detail}. Nothing of it was applied; ask the listed reviewers to `ferry approve` it and carry their approval files beside it"
    )]
    Unapproved {
        what: String,
        location: String,
        detail: String,
        /// The bundle (for the audit log's line).
        bundle: Box<BundleId>,
    },
    /// An audit log's chain is broken.
    #[error(
        "audit log {file}, line {line}: {detail}. The log was altered, cut or reordered after it was written"
    )]
    AuditBroken {
        file: String,
        line: u64,
        detail: String,
    },
    /// A volume is sealed (age-encrypted) and cannot be opened with what was given.
    #[error(
        "volume `{volume}` is encrypted (age): {detail}. It opens with the age identity (secret key) it was encrypted to"
    )]
    Sealed { volume: String, detail: String },
    /// A stop signal ended the work at a safe point.
    #[error(
        "interrupted by {signal}: stopped cleanly (uploads aborted, lease or lock released, an export's bundle checkpointed); run the same command again to continue"
    )]
    Interrupted { signal: &'static str },
    /// The state table is missing.
    #[error("state table `{table}` not found")]
    TableNotFound { table: String },
    /// Another run holds the job's lease.
    #[error(
        "job `{job}` is being exported by run {owner} until {until}: wait for it to finish (or for the lease to expire) and run again"
    )]
    LeaseHeld {
        job: String,
        owner: String,
        until: String,
    },
    /// The lease was lost while this run was working (it expired and another run took it).
    #[error(
        "job `{job}` lease was lost during the run (another run took it over): nothing was committed; run again"
    )]
    LeaseLost { job: String },
    /// The commit step found a shard that has not shipped all its objects.
    #[error(
        "bundle {sequence} of job `{job}`: shard {shard} has shipped {cursor} of its {count} objects; the commit runs once every shard is done: run the export again to finish the bundle"
    )]
    ShardUnfinished {
        job: String,
        sequence: u64,
        shard: usize,
        cursor: u64,
        count: u64,
    },
    /// An incremental run was given settings other than the ones its job is pinned to.
    #[error(
        "job `{job}` is pinned to other settings than this run's: {differences}. An incremental run keeps the job's settings (with new ones, every object outside them would ship as a deletion): run it with the recorded values; or take a new baseline with the new settings; or use another job name"
    )]
    JobPinned { job: String, differences: String },
    /// The destination is not where the job keeps its bundles and state.
    #[error(
        "the destination changed: job `{job}` keeps its bundles and state at {recorded}, not at {given}: export to {recorded}; or take a new baseline at the new destination; or use another job name"
    )]
    DestinationChanged {
        job: String,
        recorded: String,
        given: String,
    },
    /// An import source holds bundles of more than one job.
    #[error(
        "{location} holds bundles of several jobs ({jobs}): nothing was applied. Import one job at a time: name the job, or point the import at one job's folder"
    )]
    SeveralJobs { location: String, jobs: String },
    /// Locked objects for a destination without Object Lock.
    #[error(
        "{objects} object(s) of bundle {sequence} carry Object Lock (a retention or a legal hold), and {target} has no Object Lock: nothing was written. Import into a bucket made with Object Lock, or import them unlocked"
    )]
    NoObjectLock {
        target: String,
        sequence: u64,
        objects: u64,
    },
    /// Bad configuration or arguments.
    #[error("invalid {what}: {detail}")]
    Config { what: String, detail: String },
    /// A local file operation failed.
    #[error("{op} `{path}` failed")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the ZIP volume failed.
    #[error("writing zip volume `{volume}` failed")]
    Zip {
        volume: String,
        #[source]
        source: async_zip::error::ZipError,
    },
    /// Streaming an object's bytes failed.
    #[error("reading s3://{bucket}/{key} failed mid-stream: run again (nothing was committed)")]
    Stream {
        bucket: String,
        key: String,
        #[source]
        source: BoxError,
    },
    /// The object is in an archive tier: it cannot be read before it is restored.
    #[error(
        "s3://{bucket}/{key} is archived (InvalidObjectState): restore it (or move it out of the archive tier) and it ships in the next run"
    )]
    Archived { bucket: String, key: String },
    /// The object kept changing while it was being read.
    #[error(
        "s3://{bucket}/{key} changed while it was being read: run again (nothing was committed)"
    )]
    ObjectChanged { bucket: String, key: String },
    /// ListObjectsV2 returned keys out of order (directory buckets do): the diff needs sorted keys.
    #[error(
        "listing of s3://{bucket} is not sorted (`{key}` after `{previous}`): directory buckets are not supported as sources"
    )]
    UnsortedListing {
        bucket: String,
        previous: String,
        key: String,
    },
    /// A stored document (state, plan, checkpoint, inventory) could not be parsed.
    #[error("{what} at {location} is corrupt: {hint}")]
    Corrupt {
        what: &'static str,
        location: String,
        hint: &'static str,
        #[source]
        source: BoxError,
    },
    /// The state changed under us between lease and commit.
    #[error(
        "state of job `{job}` changed during the run (version conflict): nothing was committed; run again"
    )]
    StateConflict { job: String },
    /// A commit went unanswered and the state could not be read back to tell whether it
    /// was applied.
    #[error(
        "the commit of job `{job}` may or may not have been applied (the state table did not answer, and reading it back failed too): read the job's state to see; running the export again is safe (a run never commits twice)"
    )]
    CommitUnknown {
        job: String,
        #[source]
        source: Box<Error>,
    },
    /// Another run took over: this run's claim on its checkpoint is gone, so it writes
    /// nothing more.
    #[error(
        "s3://{bucket}/{key} was taken over by another run (this run's lease expired while it was stalled): it stopped without writing anything more; the other run finishes the bundle"
    )]
    Fenced { bucket: String, key: String },
    /// Two workers of one run were handed the same volume index (the table's counter did not
    /// serialize them): the first one's volume stands, the second stops before recording its.
    #[error(
        "s3://{bucket}/{key} was already written by another worker of this run (its volume index was handed out twice): this worker's copy was dropped; the next attempt ships the same objects under a new index"
    )]
    WrittenTwice { bucket: String, key: String },
    /// The function could not re-invoke itself to continue a bundle.
    #[error(
        "could not invoke `{function}` to continue the bundle: check lambda:InvokeFunction on itself; the next scheduled run continues it"
    )]
    Invoke {
        function: String,
        #[source]
        source: BoxError,
    },
    /// A multipart upload was dropped or failed before it was completed.
    #[error("upload of s3://{bucket}/{key} was aborted: {reason}")]
    UploadAborted {
        bucket: String,
        key: String,
        reason: &'static str,
    },
    /// A file is not a readable s3-ferry volume (truncated, not a zip, unsupported feature).
    #[error(
        "volume `{volume}` is unreadable: {detail}: fetch it again from the export bucket, or re-export the bundle"
    )]
    Archive { volume: String, detail: String },
    /// An entry or volume does not match what the bundle says it holds.
    #[error(
        "verification failed: volume `{volume}`{}: {detail}: the copy is damaged or was altered; fetch it again from the export bucket",
        entry_label(entry)
    )]
    Verify {
        volume: String,
        entry: Option<String>,
        detail: String,
    },
    /// The volumes given do not make a complete, consistent bundle.
    #[error("bundle {what} at {location}: {detail}")]
    Bundle {
        what: String,
        location: String,
        detail: String,
    },
    /// A bundle does not follow the last one applied to the target.
    #[error(
        "bundle {sequence} of job `{job}` {detail}; the last bundle applied to {target} is {applied}: import the missing bundles first (or apply it anyway, by force)"
    )]
    OutOfOrder {
        job: String,
        sequence: u64,
        detail: String,
        target: String,
        applied: String,
    },
    /// A move's source in the destination is not the content the bundle expects.
    #[error(
        "cannot move `{from}` to `{to}` in {target}: {detail}; nothing was copied. Restore `{from}` (or import the bundle that wrote it) and run again"
    )]
    MoveUnconfirmed {
        target: String,
        from: String,
        to: String,
        detail: String,
    },
    /// A metadata-only entry's object in the destination is not the content the bundle
    /// expects.
    #[error(
        "cannot apply the new metadata of `{key}` in {target}: {detail}; nothing was changed. Import the bundles that wrote it (or a new baseline) and run again"
    )]
    MetadataUnconfirmed {
        target: String,
        key: String,
        detail: String,
    },
    /// The import's scanner (`--scan`) did not say clean (0) or flagged (1): the import
    /// stops before the object is written.
    #[error(
        "the scanner failed on `{key}`: `{command}`: {detail}; nothing of it was written and the import stopped there (fail closed): fix the scanner and run the import again, it scans again"
    )]
    ScanFailed {
        key: String,
        command: String,
        detail: String,
    },
    /// A content policy that cannot be read or does not parse.
    #[error(
        "policy {origin}: {detail}; fix it (every key is optional: max_size, allow_prefixes, allow_types, deny_types, deny_keys, deny_keywords, type_mismatch)"
    )]
    Policy { origin: String, detail: String },
    /// The import target's state file is held by another import.
    #[error(
        "import state `{path}` is in use by another running import (it holds the OS lock on `{lock}`): wait for it to finish; the lock goes away with that process"
    )]
    StateLocked { path: PathBuf, lock: PathBuf },
}

/// The words of a `Corrupt` hint that ask for a new baseline (its [`Remedy::NewBaseline`]).
pub const NEW_BASELINE: &str = "take a new baseline";
/// The words of a `Corrupt` hint that ask for a baseline applied by force on import.
pub const FORCED_BASELINE: &str = "a baseline applied by force";

fn entry_label(entry: &Option<String>) -> String {
    entry
        .as_deref()
        .map(|e| format!(" entry `{e}`"))
        .unwrap_or_default()
}

/// What to do about an error where the words depend on the interface. The library's messages
/// say what happened and what to do in general terms; each interface adds its own spelling of
/// the remedy (the CLI its flags and commands, the Lambda functions their event fields and
/// variables), so that neither reads the other's advice.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Remedy {
    /// Take a new baseline (a full export).
    NewBaseline,
    /// The next import must be a baseline applied by force.
    ForcedBaseline,
    /// Create the state table.
    CreateTable(String),
    /// Give the age identity that opens sealed volumes.
    GiveIdentity,
    /// Trust the exporter's public key.
    TrustKey,
    /// Apply a bundle out of chain order.
    Force,
    /// Read the job's state to learn what happened.
    ReadState(String),
    /// Fetch the volume again from the export bucket.
    FetchAgain,
    /// Set the AWS region.
    SetRegion,
    /// Keep the job's recorded settings, take a new baseline, or use another job.
    KeepSettings,
    /// Export to the recorded destination, take a new baseline there, or use another job.
    RecordedDestination(String),
    /// Name the one job to import.
    NameJob,
    /// Import locked objects without their lock.
    SkipObjectLock,
}

impl Error {
    /// The interface-specific remedy for this error, if it has one (see [`Remedy`]).
    pub fn remedy(&self) -> Option<Remedy> {
        Some(match self {
            Error::NoRegion => Remedy::SetRegion,
            Error::Untrusted { .. } => Remedy::TrustKey,
            Error::Sealed { .. } => Remedy::GiveIdentity,
            Error::TableNotFound { table } => Remedy::CreateTable(table.clone()),
            Error::JobPinned { .. } => Remedy::KeepSettings,
            Error::DestinationChanged { recorded, .. } => {
                Remedy::RecordedDestination(recorded.clone())
            }
            Error::SeveralJobs { .. } => Remedy::NameJob,
            Error::NoObjectLock { .. } => Remedy::SkipObjectLock,
            Error::CommitUnknown { job, .. } => Remedy::ReadState(job.clone()),
            Error::Archive { .. } | Error::Verify { .. } => Remedy::FetchAgain,
            Error::OutOfOrder { .. } => Remedy::Force,
            Error::Corrupt { hint, .. } if hint.contains(NEW_BASELINE) => Remedy::NewBaseline,
            Error::Corrupt { hint, .. } if hint.contains(FORCED_BASELINE) => Remedy::ForcedBaseline,
            _ => return None,
        })
    }

    /// True when running again later may succeed without any change (throttling, lease held,
    /// transient network or server errors, objects that changed mid-read).
    pub fn is_retryable(&self) -> bool {
        if let Error::S3 { class, .. }
        | Error::Dynamo { class, .. }
        | Error::Kms { class, .. }
        | Error::Secret { class, .. } = self
        {
            return class.is_retryable();
        }
        matches!(
            self,
            Error::LeaseHeld { .. }
                | Error::LeaseLost { .. }
                | Error::Stream { .. }
                | Error::ObjectChanged { .. }
                | Error::StateConflict { .. }
                | Error::CommitUnknown { .. }
                | Error::Fenced { .. }
                | Error::WrittenTwice { .. }
                | Error::Unreachable { .. }
        )
    }

    pub(crate) fn config(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Config {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// A bundle by its job, sequence and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleId {
    pub job: String,
    pub sequence: u64,
    pub bundle_digest: String,
}

/// Map an I/O error on `path` to `Error::Io`.
pub(crate) fn io_at(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_throttling_and_transient_failures_are_retried() {
        let c = |code, status| Class::of(code, status, true);
        assert_eq!(c(Some("AccessDenied"), Some(403)), Class::Denied);
        assert_eq!(c(None, Some(403)), Class::Denied);
        assert_eq!(c(Some("SlowDown"), Some(503)), Class::Throttled);
        assert_eq!(c(Some("ThrottlingException"), Some(400)), Class::Throttled);
        assert_eq!(c(Some("NoSuchKey"), Some(404)), Class::NotFound);
        assert_eq!(
            c(Some("PreconditionFailed"), Some(412)),
            Class::Precondition
        );
        assert_eq!(c(Some("InvalidArgument"), Some(400)), Class::Rejected);
        assert_eq!(c(Some("InternalError"), Some(500)), Class::Transient);
        assert_eq!(Class::of(None, None, false), Class::Transient);
        let s3 = |class| Error::S3 {
            op: "GetObject",
            bucket: "b".into(),
            key: "k".into(),
            class,
            source: "x".into(),
        };
        assert!(!s3(Class::Denied).is_retryable(), "a 403 is not retried");
        assert!(s3(Class::Throttled).is_retryable());
        assert!(s3(Class::Transient).is_retryable());
        assert!(!s3(Class::NotFound).is_retryable());
    }
}
