//! The audit log: one JSON line per action (export, approve, download, verify, import), each
//! chained to the one before it. A line is an [`Event`] with `prev` (the previous line's `hash`,
//! `null` on the first line) and `hash`: the SHA-256 of the line's canonical form without
//! `hash` (its keys sorted, no white space; [`canonical`]). Every line is written in that
//! canonical form, so a line altered in any byte, removed or moved breaks the chain, and
//! [`check`] names the first line that does not fit.
//!
//! Two places hold logs: a local file ([`append`]: under an exclusive lock, the last line's
//! hash read, one write, synced, so two processes appending at once keep one chain), and an
//! `s3://` prefix ([`S3Log`]: one JSON-lines object per invocation of a function, its first
//! line chained to the newest object before it).
pub mod events;
mod s3;
mod who;

pub use s3::S3Log;
pub use who::Who;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, io_at};

/// The longest line a log may hold.
pub const MAX_LINE: usize = 1024 * 1024;
/// The longest reason kept in a line (longer is cut, with an ellipsis).
const MAX_REASON: usize = 4096;

/// One action, as a line says it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When it ended (RFC 3339, UTC).
    pub time: String,
    /// `export`, `approve`, `download`, `verify`, `import`, `force`.
    pub action: String,
    pub job: Option<String>,
    pub sequence: Option<u64>,
    pub bundle_digest: Option<String>,
    /// The AWS identity (STS GetCallerIdentity's ARN) where there is one, else `user@host`.
    pub who: String,
    pub host: String,
    pub user: String,
    /// `ok`, `refused`, `failed`, `no_changes`, `continue`, `already_applied`, `dry_run`.
    pub outcome: String,
    pub objects: u64,
    pub bytes: u64,
    pub withheld: u64,
    pub quarantined: u64,
    pub refused: u64,
    /// Why it was refused or failed, or the reason given for `--force`.
    pub reason: Option<String>,
    /// Where: the bundle's location, the import target, the download folder.
    pub location: Option<String>,
    /// The program and its version.
    pub tool: String,
}

impl Event {
    /// An event of `action` by `who`, now.
    pub fn new(action: &str, who: &Who) -> Self {
        Event {
            time: crate::clock::rfc3339_ms(crate::clock::now_ms()),
            action: action.into(),
            who: who.who.clone(),
            host: who.host.clone(),
            user: who.user.clone(),
            outcome: "ok".into(),
            tool: concat!("ferry ", env!("CARGO_PKG_VERSION")).into(),
            ..Default::default()
        }
    }

    /// This event, failed or refused by `e` (exit 5's errors are refusals).
    pub fn failed(mut self, e: &(dyn std::error::Error + 'static)) -> Self {
        let ours =
            std::iter::successors(Some(e), |e| e.source()).find_map(|e| e.downcast_ref::<Error>());
        let refused = ours.is_some_and(|e| {
            matches!(
                e,
                Error::Untrusted { .. }
                    | Error::Unapproved { .. }
                    | Error::Verify { .. }
                    | Error::Archive { .. }
                    | Error::Bundle { .. }
                    | Error::OutOfOrder { .. }
                    | Error::Policy { .. }
            )
        });
        self.outcome = if refused { "refused" } else { "failed" }.into();
        if let Some(Error::Unapproved { bundle, .. }) = ours {
            self.job = Some(bundle.job.clone());
            self.sequence = Some(bundle.sequence);
            self.bundle_digest = Some(bundle.bundle_digest.clone());
        }
        self.reason = Some(crate::error_chain(e));
        self
    }

    /// The line this event makes after a line whose hash is `prev`.
    pub fn line(&self, prev: Option<&str>) -> (String, String) {
        let mut v = serde_json::to_value(self).expect("plain fields serialize");
        let m = v.as_object_mut().expect("an event is an object");
        if let Some(Value::String(r)) = m.get_mut("reason")
            && r.len() > MAX_REASON
        {
            let mut cut = MAX_REASON;
            while !r.is_char_boundary(cut) {
                cut -= 1;
            }
            r.truncate(cut);
            r.push('…');
        }
        m.insert("prev".into(), prev.map_or(Value::Null, |p| p.into()));
        let hash = hex::encode(Sha256::digest(canonical(&v).as_bytes()));
        v.as_object_mut()
            .expect("an object")
            .insert("hash".into(), hash.clone().into());
        (canonical(&v), hash)
    }
}

/// `v` as canonical JSON: object keys sorted (by their bytes), no white space, strings and
/// numbers as serde_json writes them.
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("a string"));
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).expect("a scalar")),
    }
}

/// Append `event` to the log file at `path` (created if missing), chained to its last line:
/// under an exclusive lock of the file, in one write, synced before the lock is released.
/// Returns the new line's hash.
pub fn append(path: &Path, event: &Event) -> Result<String> {
    let created = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_at("opening the audit log", path))?;
    file.lock().map_err(io_at("locking the audit log", path))?;
    let prev = last_hash(&mut file, path)?;
    let (mut line, hash) = event.line(prev.as_deref());
    line.push('\n');
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(io_at("appending to the audit log", path))?;
    if created && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::format::durable::sync_dir(dir)?;
    }
    Ok(hash)
}

/// The `hash` of the file's last line; `None` when it is empty.
fn last_hash(file: &mut std::fs::File, path: &Path) -> Result<Option<String>> {
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(io_at("reading the audit log", path))?;
    if len == 0 {
        return Ok(None);
    }
    let take = len.min(MAX_LINE as u64 + 1);
    file.seek(SeekFrom::Start(len - take))
        .map_err(io_at("reading the audit log", path))?;
    let mut tail = Vec::with_capacity(take as usize);
    Read::by_ref(file)
        .take(take)
        .read_to_end(&mut tail)
        .map_err(io_at("reading the audit log", path))?;
    let broken = |detail: &str| Error::AuditBroken {
        file: path.display().to_string(),
        line: 0,
        detail: format!(
            "{detail}: nothing is appended to it; check it with `ferry audit`, keep it as evidence and start a new log"
        ),
    };
    let Some(body) = tail.strip_suffix(b"\n") else {
        return Err(broken("its last line is incomplete (no newline)"));
    };
    let last = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None if take == len => body,
        None => return Err(broken("its last line is longer than a line may be")),
    };
    let v: Value = serde_json::from_slice(last).map_err(|_| broken("its last line is not JSON"))?;
    match v.get("hash") {
        Some(Value::String(h)) => Ok(Some(h.clone())),
        _ => Err(broken("its last line has no hash")),
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// Every line checked, in order, as JSON.
    pub lines: Vec<Value>,
    /// The last line's hash (what to anchor); `None` for empty logs.
    pub head: Option<String>,
}

/// Check logs `(name, bytes)` in order as one sequence: every line canonical, its hash
/// recomputing, its `prev` the line before's hash; the first line of the first log has `prev`
/// null, and a later log starts either a chain of its own (`prev` null) or goes on from the log
/// before it. The error names the first line that does not fit.
pub fn check(logs: &[(String, Vec<u8>)]) -> Result<Checked> {
    let mut lines = Vec::new();
    let mut prev: Option<String> = None;
    for (file_index, (name, bytes)) in logs.iter().enumerate() {
        let bad = |line: usize, detail: String| Error::AuditBroken {
            file: name.clone(),
            line: line as u64,
            detail,
        };
        let body = match bytes.strip_suffix(b"\n") {
            Some(body) => body,
            None if bytes.is_empty() => continue,
            None => {
                let n = bytes.split(|&b| b == b'\n').count();
                return Err(bad(n, "the last line is incomplete (no newline)".into()));
            }
        };
        for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
            let n = i + 1;
            if raw.len() > MAX_LINE {
                return Err(bad(n, format!("{} bytes, over {MAX_LINE}", raw.len())));
            }
            let text = std::str::from_utf8(raw).map_err(|_| bad(n, "not UTF-8".into()))?;
            let mut v: Value =
                serde_json::from_str(text).map_err(|e| bad(n, format!("not JSON: {e}")))?;
            if !v.is_object() {
                return Err(bad(n, "not a JSON object".into()));
            }
            if canonical(&v) != text {
                return Err(bad(n, "not in canonical form (altered)".into()));
            }
            let m = v.as_object_mut().expect("an object");
            let Some(Value::String(hash)) = m.remove("hash") else {
                return Err(bad(n, "no hash".into()));
            };
            let line_prev = match m.get("prev") {
                Some(Value::Null) => None,
                Some(Value::String(p)) => Some(p.clone()),
                _ => return Err(bad(n, "no prev".into())),
            };
            let recomputed = hex::encode(Sha256::digest(canonical(&v).as_bytes()));
            if recomputed != hash {
                return Err(bad(
                    n,
                    format!(
                        "its hash does not recompute (the line was altered): it says {}, its content hashes to {}",
                        crate::format::manifest::short(&hash),
                        crate::format::manifest::short(&recomputed)
                    ),
                ));
            }
            let starts_log = i == 0 && file_index > 0 && line_prev.is_none();
            if line_prev != prev && !starts_log {
                return Err(bad(
                    n,
                    match (&line_prev, &prev) {
                        (Some(_), None) if i == 0 && file_index == 0 => {
                            "the first line's prev is not null: the log's head was removed".into()
                        }
                        (None, _) => {
                            "its prev is null inside the log: lines before it were removed".into()
                        }
                        _ => "its prev is not the hash of the line before it: a line was removed, inserted or moved".into(),
                    },
                ));
            }
            v.as_object_mut()
                .expect("an object")
                .insert("hash".into(), hash.clone().into());
            lines.push(v);
            prev = Some(hash);
        }
    }
    Ok(Checked { lines, head: prev })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> Event {
        let who = Who {
            who: "u@h".into(),
            host: "h".into(),
            user: "u".into(),
        };
        let mut e = Event::new("import", &who);
        e.job = Some("j".into());
        e.sequence = Some(n);
        e.objects = n;
        e
    }

    fn log(path: &Path) -> Vec<(String, Vec<u8>)> {
        vec![("log".into(), std::fs::read(path).unwrap())]
    }

    #[test]
    fn a_chain_checks_and_every_alteration_removal_and_move_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut hashes = Vec::new();
        for n in 1..=4 {
            hashes.push(append(&path, &event(n)).unwrap());
        }
        let ok = check(&log(&path)).unwrap();
        assert_eq!(ok.lines.len(), 4);
        assert_eq!(ok.head.as_deref(), Some(hashes[3].as_str()));
        assert_eq!(ok.lines[0]["prev"], Value::Null);
        assert_eq!(ok.lines[1]["prev"], hashes[0].as_str());
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let join = |ls: &[&str]| (ls.join("\n") + "\n").into_bytes();
        let line_of = |bytes: Vec<u8>| match check(&[("log".into(), bytes)]) {
            Err(Error::AuditBroken { line, detail, .. }) => (line, detail),
            other => panic!("{other:?}"),
        };
        // altered: a count changed
        let altered = lines[2].replace("\"objects\":3", "\"objects\":30");
        assert_ne!(altered, lines[2]);
        let (n, why) = line_of(join(&[lines[0], lines[1], &altered, lines[3]]));
        assert_eq!(n, 3, "{why}");
        assert!(why.contains("altered"), "{why}");
        // removed: the middle, and the head
        assert_eq!(line_of(join(&[lines[0], lines[2], lines[3]])).0, 2);
        let (n, why) = line_of(join(&[lines[1], lines[2], lines[3]]));
        assert_eq!(n, 1);
        assert!(why.contains("head"), "{why}");
        // reordered
        assert_eq!(
            line_of(join(&[lines[0], lines[2], lines[1], lines[3]])).0,
            2
        );
        // the tail cut mid-line
        let mut cut = join(&lines);
        cut.truncate(cut.len() - 10);
        assert_eq!(line_of(cut).0, 4);
        // a torn tail is not appended to
        let mut torn = join(&lines);
        torn.truncate(torn.len() - 1);
        std::fs::write(&path, torn).unwrap();
        assert!(append(&path, &event(5)).is_err());
    }

    #[test]
    fn two_processes_appending_at_once_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Each thread opens the file itself, as another process would.
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for n in 0..25 {
                        append(&path, &event(t * 100 + n)).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(check(&log(&path)).unwrap().lines.len(), 100);
    }

    #[test]
    fn logs_continue_one_another_or_start_their_own_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let head = append(&a, &event(1)).unwrap();
        append(&b, &event(2)).unwrap();
        let both = [
            ("a".to_string(), std::fs::read(&a).unwrap()),
            ("b".to_string(), std::fs::read(&b).unwrap()),
        ];
        assert_eq!(check(&both).unwrap().lines.len(), 2);
        // a segment that goes on from the one before it
        let (line, _) = event(3).line(Some(&head));
        let seg = [
            both[0].clone(),
            ("c".to_string(), format!("{line}\n").into_bytes()),
        ];
        assert_eq!(check(&seg).unwrap().lines.len(), 2);
        // and one whose predecessor is missing
        let orphan = [("c".to_string(), format!("{line}\n").into_bytes())];
        assert!(check(&orphan).is_err());
    }
}
