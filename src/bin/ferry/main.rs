//! `ferry`, the operator CLI: `init`, `plan`, `export`, `status` on the export side;
//! `download`, `verify`, `import` on the far side; `completions` for shells. `main` parses the
//! flags (a usage error exits 2), runs the command and maps its outcome to an exit code
//! (`exit.rs`); `near.rs` and `far.rs` print a human summary or one JSON object (`--json`).

mod advice;
mod args;
mod carry;
mod exit;
mod far;
mod near;
mod output;
mod release;
mod review;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use s3_ferry::store::aws::{AwsOptions, Clients};

use args::{Cli, Command};

fn main() -> ExitCode {
    s3_ferry::memory::tune_allocator();
    let cli = Cli::parse();
    // Flags that do not fit together are bad usage (exit 2), said as clap says it.
    if let Command::Import(a) = &cli.command
        && let Err(e) = a.placement()
    {
        use clap::CommandFactory;
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, e.to_string())
            .exit();
    }
    output::init_logging();
    let json = cli.json;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(supervised(cli)));
    match result {
        Ok(code) => code,
        Err(e) => ExitCode::from(output::fail(&e, json)),
    }
}

/// Run the command; SIGINT/SIGTERM ask it to stop at its next safe point (a second one stops
/// at once). Before exiting, wait for the aborts of any multipart upload it dropped.
async fn supervised(cli: Cli) -> anyhow::Result<ExitCode> {
    use s3_ferry::interrupt::Signal;
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    // The command's run context: a signal stops its token, and every run it starts.
    let ctx = s3_ferry::context::RunContext::new();
    let stop = ctx.stop().clone();
    let work = run(cli, ctx.clone());
    tokio::pin!(work);
    let outcome = loop {
        let sig = tokio::select! {
            r = &mut work => break r,
            _ = int.recv() => Signal::Interrupt,
            _ = term.recv() => Signal::Terminate,
        };
        if stop.requested().is_some() {
            eprintln!("ferry: {} again: stopping now", sig.name());
            ctx.settle_uploads(std::time::Duration::from_secs(10)).await;
            return Ok(ExitCode::from(sig.exit_code()));
        }
        stop.request(sig);
        eprintln!(
            "ferry: {}: stopping cleanly after the current step (send it again to stop at once)",
            sig.name()
        );
    };
    if !ctx.settle_uploads(std::time::Duration::from_secs(60)).await {
        tracing::warn!("some multipart uploads were still being aborted at exit");
    }
    match (outcome, stop.requested()) {
        // Stopped early by the signal (an export checkpointed): the shell's status for it.
        (Ok(code), Some(sig)) if code != ExitCode::SUCCESS => Ok(ExitCode::from(sig.exit_code())),
        (outcome, _) => outcome,
    }
}

/// Commands on local files only (verify or import of volumes on the media into a directory,
/// with a state file) need no AWS configuration at all.
fn needs_aws(command: &Command) -> bool {
    let remote = |sources: &[String]| sources.iter().any(|s| s.starts_with("s3://"));
    match command {
        Command::Verify { sources, .. } | Command::Review { sources, .. } => remote(sources),
        Command::Approve {
            source,
            signing_key,
            ..
        } => {
            source.starts_with("s3://")
                || matches!(signing_key, s3_ferry::format::sign::SigningKeySpec::Kms(_))
        }
        Command::Audit { files } => remote(files),
        Command::Keygen { .. } => false,
        Command::PublicKey { signing_key } => {
            matches!(signing_key, s3_ferry::format::sign::SigningKeySpec::Kms(_))
        }
        Command::Import(a) => a.to.is_some() || a.table.is_some() || remote(&a.sources),
        Command::Completions { .. } => false,
        _ => true,
    }
}

async fn run(cli: Cli, ctx: s3_ferry::context::RunContext) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    if let Command::Completions { shell } = cli.command {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut buf);
        output::line(format_args!("{}", String::from_utf8_lossy(&buf).trim_end()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let clients = if needs_aws(&cli.command) {
        Some(
            Clients::load(&AwsOptions {
                profile: cli.profile,
                region: cli.region,
                path_style: cli.path_style,
                connect_timeout: cli.connect_timeout,
                request_timeout: cli.request_timeout,
            })
            .await?
            .in_run(ctx.clone()),
        )
    } else {
        None
    };
    let aws = || clients.as_ref().expect("needs_aws said so");
    match cli.command {
        Command::Init { table } => near::init(aws(), &table, json).await,
        Command::Status { job, table } => near::status(aws(), &job, &table, json).await,
        Command::Plan(args) => near::plan(aws(), &args, json).await,
        Command::Export(args) => near::export(aws(), &args, json).await,
        Command::Download(args) => carry::download(aws(), args, json).await,
        Command::Verify {
            sources,
            trust,
            identity,
            policy,
            approvals,
            audit,
        } => {
            let policy = policy
                .as_deref()
                .map(s3_ferry::policy::Policy::from_file)
                .transpose()?;
            let audit = release::AuditLog::new(&audit, clients.as_ref());
            let approvals = approvals.requirement()?;
            let req = far::VerifyRequest {
                sources: &sources,
                trust: &trust,
                identity: &identity,
                policy: policy.as_ref(),
                approvals: approvals.as_ref(),
            };
            far::verify(clients.as_ref(), &ctx, &req, &audit, json).await
        }
        Command::Approve {
            source,
            signing_key,
            note,
            audit,
        } => {
            let audit = release::AuditLog::new(&audit, clients.as_ref());
            release::approve(clients.as_ref(), &source, &signing_key, &note, &audit, json).await
        }
        Command::Audit { files } => release::check(clients.as_ref(), &files, json).await,
        Command::Review {
            sources,
            trust,
            identity,
            policy,
            html,
            csv,
            approver,
        } => {
            let out = review::Outputs {
                html,
                csv,
                policy,
                approvers: approver,
            };
            review::review(
                clients.as_ref(),
                &ctx,
                &sources,
                &trust,
                &identity,
                out,
                json,
            )
            .await
        }
        Command::Keygen { out } => near::keygen(&out, json),
        Command::PublicKey { signing_key } => {
            near::public_key(clients.as_ref(), &signing_key, json).await
        }
        Command::Import(args) => far::import(clients.as_ref(), &ctx, args, json).await,
        Command::Completions { .. } => unreachable!("handled above"),
    }
}
