//! The Lambda functions' handlers: configuration from the environment, events in and out, self
//! re-invocation; the work is the library's ([`export`] and [`import`]).

pub mod audit;
pub mod export;
pub mod import;
pub mod policy;

use crate::error::{Error, Remedy};

/// What to do about `e` in the functions' terms (their event fields and variables; see
/// [`Remedy`]), if the error says.
pub fn advice(e: &Error) -> Option<String> {
    Some(match e.remedy()? {
        Remedy::NewBaseline => "invoke the export function with {\"full\": true}".into(),
        Remedy::ForcedBaseline => {
            "apply a baseline by force (`ferry import --force` with this state table)".into()
        }
        Remedy::CreateTable(t) => format!(
            "the template creates the state table: deploy it, or set STATE_TABLE to the table it made (not `{t}`)"
        ),
        Remedy::GiveIdentity => {
            "set AGE_IDENTITY_SECRET to the Secrets Manager secret holding that identity".into()
        }
        Remedy::TrustKey => "add the exporter's public key to TRUSTED_KEYS".into(),
        Remedy::Force => {
            "import the missing bundles, or apply this one with `ferry import --force`".into()
        }
        Remedy::ReadState(job) => format!("read the state item of job `{job}` (`ferry status`)"),
        Remedy::FetchAgain => "upload the volume again from the media".into(),
        Remedy::SetRegion => "set AWS_REGION".into(),
        Remedy::KeepSettings => "keep the function's settings as the job recorded them; or invoke it with {\"full\": true} for a new baseline; or set FERRY_JOB to another job".into(),
        Remedy::RecordedDestination(d) => format!(
            "set EXPORT_BUCKET/EXPORT_PREFIX to {d}; or invoke with {{\"full\": true}} for a new baseline; or set FERRY_JOB to another job"
        ),
        Remedy::NameJob => "set FERRY_JOB to the one job this function imports".into(),
        Remedy::SkipObjectLock => "set OBJECT_LOCK=skip to import them unlocked".into(),
    })
}

/// `e` with its causes, then the functions' advice: what the functions log, answer and notify.
pub fn describe(e: &Error) -> String {
    let chain = crate::error_chain(e);
    match advice(e) {
        Some(a) => format!("{chain}; {a}"),
        None => chain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_functions_give_their_own_advice_and_no_cli_flags() {
        let corrupt = |hint| Error::Corrupt {
            what: "plan",
            location: "s3://b/k".into(),
            hint,
            source: "x".into(),
        };
        let cases = [
            (Error::TableNotFound { table: "t".into() }, "STATE_TABLE"),
            (
                corrupt("its puts file is missing: take a new baseline"),
                "\"full\": true",
            ),
            (
                Error::Sealed {
                    volume: "v.zip.age".into(),
                    detail: "no identity".into(),
                },
                "AGE_IDENTITY_SECRET",
            ),
            (
                Error::Untrusted {
                    what: "signature".into(),
                    location: "s3://b/p/".into(),
                    detail: "unsigned".into(),
                },
                "TRUSTED_KEYS",
            ),
            (
                Error::JobPinned {
                    job: "j".into(),
                    differences: "--source: a → b".into(),
                },
                "FERRY_JOB",
            ),
            (
                Error::DestinationChanged {
                    job: "j".into(),
                    recorded: "s3://a/x".into(),
                    given: "s3://b/y".into(),
                },
                "EXPORT_BUCKET",
            ),
            (
                Error::SeveralJobs {
                    location: "s3://b/".into(),
                    jobs: "a, b".into(),
                },
                "FERRY_JOB",
            ),
            (Error::NoRegion, "AWS_REGION"),
        ];
        for (e, names) in cases {
            let said = describe(&e);
            assert!(said.contains(names), "{said}");
            for cli in [
                "--full",
                "--job",
                "--dest",
                "--trust",
                "--identity",
                "--region",
                "ferry init",
            ] {
                assert!(!said.contains(cli), "`{cli}` in: {said}");
            }
        }
    }
}
