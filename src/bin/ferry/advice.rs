//! The CLI's spelling of what to do about an error: the library's messages say it in general
//! terms ([`s3_ferry::error::Remedy`]), this names the flags and commands.

use s3_ferry::error::Remedy;

/// What to do about `e` with this CLI, if the error says.
pub fn advice(e: &anyhow::Error) -> Option<String> {
    let remedy = e
        .chain()
        .find_map(|c| c.downcast_ref::<s3_ferry::Error>())?
        .remedy()?;
    Some(match remedy {
        Remedy::NewBaseline => "run the export with --full".into(),
        Remedy::ForcedBaseline => "`ferry import --force` applies a baseline by force".into(),
        Remedy::CreateTable(t) => format!("run `ferry init --table {t}` or deploy template.yaml"),
        Remedy::GiveIdentity => "pass `--identity FILE` with that age identity; `ferry verify` without one checks SHA256SUMS and the signature only".into(),
        Remedy::TrustKey => "pass the exporter's public key with `--trust KEY.pem`".into(),
        Remedy::Force => "`--force` applies it anyway".into(),
        Remedy::ReadState(job) => format!("run `ferry status --job {job}` to see"),
        Remedy::FetchAgain => "`ferry download` fetches it again".into(),
        Remedy::SetRegion => {
            "pass --region, set AWS_REGION, or set `region` in the profile (~/.aws/config)".into()
        }
        Remedy::KeepSettings => {
            "`--full` takes a new baseline with the new settings; `--job` names another job".into()
        }
        Remedy::RecordedDestination(d) => {
            format!("pass --dest {d}; or `--full` for a new baseline at the new destination; or `--job` for another job")
        }
        Remedy::NameJob => "pass `--job NAME`".into(),
        Remedy::SkipObjectLock => "`--object-lock skip` imports them unlocked".into(),
        _ => return None,
    })
}

/// The message of `e` as the CLI prints it: the library's, then this CLI's advice.
pub fn message(e: &anyhow::Error) -> String {
    match advice(e) {
        Some(a) => format!("{e}; {a}"),
        None => e.to_string(),
    }
}
