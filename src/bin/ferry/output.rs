//! Output etiquette: human lines or one JSON object on stdout (a closed pipe ends the run
//! quietly), logs and progress bars on stderr (colour and bars only on a terminal), and an
//! error printed once.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use s3_ferry::plan::PlanStats;
use s3_ferry::progress::Progress;

/// Write one line to stdout; an error (a closed pipe) is returned, never a panic.
macro_rules! out {
    ($($arg:tt)*) => {
        crate::output::line(format_args!($($arg)*))?
    };
}
pub(crate) use out;

/// Set when a write to stdout found its reader gone: the run then ends quietly with 0.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

pub fn line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = &written
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        STDOUT_CLOSED.store(true, Ordering::SeqCst);
    }
    written
}

/// True when the run failed only because stdout was closed (`ferry status | head -0`); a
/// broken pipe anywhere else (an upload's) is a real failure.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::SeqCst)
}

/// Print one JSON value as a line.
pub fn json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    line(format_args!("{}", serde_json::to_string(v)?))?;
    Ok(())
}

/// Logs go to stderr, coloured only on a terminal; `FERRY_LOG` sets the filter.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| {
                // Volumes and inventories are multipart objects: their part-level checksums
                // cannot be checked on GET (zip CRCs, SHA-256 and gzip trailers cover them).
                "warn,aws_sdk_s3::http_response_checksum=error".into()
            }),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Report a failure once: the message and its causes on stderr, and with `--json` an error
/// object on stdout. Returns the exit code.
pub fn fail(e: &anyhow::Error, json: bool) -> u8 {
    if stdout_closed() {
        return 0;
    }
    let code = crate::exit::code(e);
    let causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
    let message = crate::advice::message(e);
    if json {
        let _ = line(format_args!(
            "{}",
            serde_json::json!({"ok": false, "exit_code": code, "error": message, "causes": causes})
        ));
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "ferry: {message}");
    for c in &causes {
        let _ = writeln!(err, "  caused by: {c}");
    }
    code
}

pub fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

pub use s3_ferry::format::manifest::short;

/// Bars only when a person watches: stderr is a terminal and the output is not JSON.
pub fn interactive(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A progress bar on a terminal, nothing otherwise.
pub struct Bar(Option<ProgressBar>);

const BYTES: &str = "{spinner} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}";

impl Bar {
    /// A byte bar of known length.
    pub fn bytes(enabled: bool, total: u64, msg: &str) -> Self {
        Bar(enabled.then(|| {
            let pb = ProgressBar::new(total);
            pb.set_style(
                ProgressStyle::with_template(BYTES)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            pb.set_message(msg.to_string());
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        }))
    }

    /// A spinner until the plan gives the length.
    pub fn new(enabled: bool) -> Self {
        Bar(enabled.then(|| {
            let pb = ProgressBar::new_spinner();
            pb.set_message("listing…");
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        }))
    }

    pub fn done(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn planned(&self, s: &PlanStats) {
        if let Some(pb) = &self.0 {
            pb.set_length(s.put_bytes);
            pb.set_style(
                ProgressStyle::with_template(BYTES)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            pb.set_message(format!("{} objects", s.added + s.modified));
        }
    }
    fn total(&self, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(bytes);
        }
    }
    fn resumed(&self, _objects: u64, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.set_position(bytes);
        }
    }
    fn object(&self, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(bytes);
        }
    }
}
