//! A scanner hook (`--scan 'CMD'`): the command runs through `sh -c` with `{}` replaced by the
//! (quoted) path of a file holding an object's bytes. clamscan's convention: exit 0 clean, 1
//! flagged, anything else — another code, a signal, a command that cannot start — a failure,
//! which the caller turns into a stop before the object goes anywhere (fail closed).

use std::path::Path;

use crate::error::{Error, Result};

/// Bytes of a scanner's output kept as the reason.
const SCANNER_OUTPUT: usize = 2048;

/// Scan the file at `path` (the bytes of `key`) with `cmd`: `None` clean, `Some(reason)` flagged.
pub async fn scan(cmd: &str, path: &Path, key: &str) -> Result<Option<String>> {
    let shown = path.display().to_string();
    let line = cmd.replace("{}", &format!("'{}'", shown.replace('\'', "'\\''")));
    let failed = |detail: String| Error::ScanFailed {
        key: key.to_string(),
        command: cmd.to_string(),
        detail,
    };
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&line)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| failed(format!("it could not be started: {e}")))?;
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    let said = said.replace(&shown, "<object>");
    let said: String = said.trim().chars().take(SCANNER_OUTPUT).collect();
    match out.status.code() {
        Some(0) => Ok(None),
        Some(1) => Ok(Some(format!("scanner: {said}"))),
        code => Err(failed(format!(
            "it exited {} ({said})",
            code.map_or("by a signal".into(), |c| c.to_string())
        ))),
    }
}
