//! The content policy (`--policy FILE`; the functions' `POLICY`): what may cross, judged by
//! the key, the size, the type detected from the bytes (never the key or Content-Type), and
//! keywords in text content, keys, user metadata and tags. Each side applies its own: the
//! export withholds what breaks it, the import quarantines it.
//!
//! ```toml
//! max_size = "1GiB"
//! allow_prefixes = ["reports/", "data/"]
//! allow_types = ["text/plain", "application/pdf", "image/*"]
//! deny_types = ["application/x-executable"]
//! deny_keys = ["**/*.exe", "**/.git/**"]
//! deny_keywords = ["TOP SECRET", "NOFORN"]
//! type_mismatch = "withhold"
//! ```

mod detect;
pub mod scanner;

use aho_corasick::AhoCorasick;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::format::manifest::ObjectHeaders;

pub use detect::{Detected, HEAD_BYTES, detect, mismatch};

/// The longest policy file read (a policy is a few lines).
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;
/// Keywords a policy may list, and the longest one.
const MAX_KEYWORDS: usize = 10_000;
const MAX_KEYWORD_BYTES: usize = 1024;

/// What to do with an object whose key or Content-Type lies about its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeMismatch {
    /// Withhold (export) or quarantine (import) it.
    Withhold,
    /// Judge it by its bytes alone (the default).
    #[default]
    Allow,
}

/// The file as written: every key optional, no other key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    max_size: Option<String>,
    allow_prefixes: Option<Vec<String>>,
    allow_types: Option<Vec<String>>,
    deny_types: Option<Vec<String>>,
    deny_keys: Option<Vec<String>>,
    deny_keywords: Option<Vec<String>>,
    type_mismatch: Option<TypeMismatch>,
}

/// A parsed policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it was read from (a path, an `s3://` URI, or `inline`).
    pub origin: String,
    /// SHA-256 (hex) of the file's bytes: recorded in every manifest of a bundle exported under
    /// it.
    pub digest: String,
    max_size: Option<u64>,
    allow_prefixes: Vec<String>,
    allow_types: Vec<String>,
    deny_types: Vec<String>,
    deny_keys: Option<(GlobSet, Vec<String>)>,
    keywords: Option<(AhoCorasick, Vec<String>)>,
    type_mismatch: TypeMismatch,
}

fn bad(origin: &str, detail: impl Into<String>) -> Error {
    Error::Policy {
        origin: origin.to_string(),
        detail: detail.into(),
    }
}

/// Does MIME type `t` match `pattern` (`type/subtype`, or `type/*`), ignoring case?
fn type_matches(pattern: &str, t: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), t.to_ascii_lowercase());
    match p.strip_suffix("/*") {
        Some(top) => t.split('/').next() == Some(top),
        None => p == t,
    }
}

impl Policy {
    /// Parse a policy file's text; `origin` names it in errors (with the line).
    pub fn parse(text: &str, origin: &str) -> Result<Policy> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(bad(
                origin,
                format!(
                    "{} bytes (a policy has at most {MAX_POLICY_BYTES})",
                    text.len()
                ),
            ));
        }
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let what = e.message().to_string();
            bad(
                origin,
                match line {
                    Some(l) => format!("line {l}: {what}"),
                    None => what,
                },
            )
        })?;
        let max_size = file
            .max_size
            .as_deref()
            .map(|s| {
                s.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| b.as_u64())
                    .map_err(|e| {
                        bad(
                            origin,
                            format!("max_size: `{s}` is not a size ({e}); write e.g. 1GiB"),
                        )
                    })
            })
            .transpose()?;
        let check_types = |name: &str, list: &[String]| {
            for t in list {
                let ok = t.split_once('/').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && !b.is_empty()
                        && !a.contains('*')
                        && (b == "*" || !b.contains('*'))
                });
                if !ok {
                    return Err(bad(
                        origin,
                        format!("{name}: `{t}` is not a MIME type (type/subtype or type/*)"),
                    ));
                }
            }
            Ok(())
        };
        let allow_types = file.allow_types.unwrap_or_default();
        let deny_types = file.deny_types.unwrap_or_default();
        check_types("allow_types", &allow_types)?;
        check_types("deny_types", &deny_types)?;
        let deny_keys = match file.deny_keys {
            Some(patterns) if !patterns.is_empty() => {
                let mut b = GlobSetBuilder::new();
                for p in &patterns {
                    let full = if p.contains('/') {
                        p.clone()
                    } else {
                        format!("**/{p}")
                    };
                    for g in [full, p.clone()] {
                        b.add(
                            GlobBuilder::new(&g)
                                .literal_separator(true)
                                .build()
                                .map_err(|e| bad(origin, format!("deny_keys: `{p}`: {e}")))?,
                        );
                    }
                }
                let set = b.build().map_err(|e| bad(origin, e.to_string()))?;
                Some((set, patterns))
            }
            _ => None,
        };
        let keywords = match file.deny_keywords {
            Some(words) if !words.is_empty() => {
                if words.len() > MAX_KEYWORDS
                    || words
                        .iter()
                        .any(|w| w.is_empty() || w.len() > MAX_KEYWORD_BYTES)
                {
                    return Err(bad(
                        origin,
                        format!(
                            "deny_keywords: 1 to {MAX_KEYWORDS} keywords of 1 to {MAX_KEYWORD_BYTES} bytes"
                        ),
                    ));
                }
                let ac = AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&words)
                    .map_err(|e| bad(origin, format!("deny_keywords: {e}")))?;
                Some((ac, words))
            }
            _ => None,
        };
        Ok(Policy {
            origin: origin.to_string(),
            digest: hex::encode(Sha256::digest(text.as_bytes())),
            max_size,
            allow_prefixes: file.allow_prefixes.unwrap_or_default(),
            allow_types,
            deny_types,
            deny_keys,
            keywords,
            type_mismatch: file.type_mismatch.unwrap_or_default(),
        })
    }

    /// Read and parse the policy file at `path`.
    pub fn from_file(path: &std::path::Path) -> Result<Policy> {
        let origin = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| bad(&origin, e.to_string()))?;
        if meta.len() > MAX_POLICY_BYTES as u64 {
            return Err(bad(
                &origin,
                format!(
                    "{} bytes (a policy has at most {MAX_POLICY_BYTES})",
                    meta.len()
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(&origin, e.to_string()))?;
        Policy::parse(&text, &origin)
    }

    /// The first keyword found in `text`.
    fn keyword_in(&self, text: &str) -> Option<&str> {
        let (ac, words) = self.keywords.as_ref()?;
        ac.find(text)
            .map(|m| words[m.pattern().as_usize()].as_str())
    }

    /// Why an object of `size` bytes at `key` (relative to the source prefix) breaks the
    /// policy, judged without its bytes: `max_size`, `allow_prefixes`, `deny_keys`, a keyword
    /// in the key.
    pub fn judge_key(&self, key: &str, size: u64) -> Option<String> {
        if let Some(max) = self.max_size
            && size > max
        {
            return Some(format!("max_size: {size} bytes, over the policy's {max}"));
        }
        if !self.allow_prefixes.is_empty()
            && !self
                .allow_prefixes
                .iter()
                .any(|p| key.starts_with(p.as_str()))
        {
            return Some("key outside allow_prefixes".into());
        }
        if let Some((set, patterns)) = &self.deny_keys
            && let Some(i) = set.matches(key).first()
        {
            return Some(format!("key matches deny_keys `{}`", patterns[i / 2]));
        }
        self.keyword_in(key)
            .map(|w| format!("keyword `{w}` in the key"))
    }

    /// Why these headers break the policy: a keyword in user metadata (names or values) or
    /// tags (keys or values).
    pub fn judge_headers(&self, h: &ObjectHeaders) -> Option<String> {
        for (k, v) in &h.metadata {
            if let Some(w) = self.keyword_in(k).or_else(|| self.keyword_in(v)) {
                return Some(format!("keyword `{w}` in metadata `{k}`"));
            }
        }
        for (k, v) in &h.tags {
            if let Some(w) = self.keyword_in(k).or_else(|| self.keyword_in(v)) {
                return Some(format!("keyword `{w}` in tag `{k}`"));
            }
        }
        None
    }

    /// Does judging an object take all its bytes (keywords), not only its first ones?
    pub fn reads_content(&self) -> bool {
        self.keywords.is_some()
    }

    /// A reader of one object's bytes, judging them as they stream by.
    pub fn inspector(&self) -> Inspector<&Policy> {
        Inspector::owning(self)
    }
}

/// Judges one object's bytes, chunk by chunk: its type from the first [`HEAD_BYTES`], and
/// keywords across the whole (holding only a keyword's length of the bytes before a chunk).
pub struct Inspector<P: std::ops::Deref<Target = Policy>> {
    policy: P,
    head: Vec<u8>,
    tail: Vec<u8>,
    keyword: Option<String>,
}

impl<P: std::ops::Deref<Target = Policy>> Inspector<P> {
    /// An inspector holding `policy` (a reference, or an `Arc` to keep in a writer).
    pub fn owning(policy: P) -> Self {
        Inspector {
            policy,
            head: Vec::new(),
            tail: Vec::new(),
            keyword: None,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        let Some((ac, words)) = &self.policy.keywords else {
            return;
        };
        if self.keyword.is_some() {
            return;
        }
        let longest = words.iter().map(String::len).max().unwrap_or(1);
        // The bytes before this chunk that a keyword ending in it can start in.
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(chunk);
        if let Some(m) = ac.find(&window[..]) {
            self.keyword = Some(words[m.pattern().as_usize()].clone());
        }
        let keep = longest.saturating_sub(1).min(window.len());
        self.tail = window.split_off(window.len() - keep);
    }

    /// The bytes' type, and why the object (at `key`, declared `content_type`) breaks the
    /// policy by them, if it does.
    pub fn finish(self, key: &str, content_type: Option<&str>) -> (Detected, Option<String>) {
        let d = detect(&self.head);
        let p = &*self.policy;
        let why = if let Some(t) = p.deny_types.iter().find(|t| type_matches(t, &d.mime)) {
            Some(format!("type {} (deny_types `{t}`)", d.mime))
        } else if !p.allow_types.is_empty()
            && !p.allow_types.iter().any(|t| type_matches(t, &d.mime))
        {
            Some(format!("type {} is not in allow_types", d.mime))
        } else if let Some(m) = (p.type_mismatch == TypeMismatch::Withhold)
            .then(|| mismatch(key, content_type, &d))
            .flatten()
        {
            Some(format!("type mismatch: {m}"))
        } else if d.text
            && let Some(w) = &self.keyword
        {
            Some(format!("keyword `{w}` in the content"))
        } else {
            None
        };
        (d, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
max_size = "1KiB"
allow_prefixes = ["reports/", "data/"]
allow_types = ["text/plain", "application/pdf", "image/*"]
deny_types = ["application/x-executable"]
deny_keys = ["**/*.exe", "**/.git/**"]
deny_keywords = ["TOP SECRET", "NOFORN"]
type_mismatch = "withhold"
"#;

    fn judge(p: &Policy, key: &str, body: &[u8], chunk: usize) -> Option<String> {
        let mut i = p.inspector();
        for c in body.chunks(chunk.max(1)) {
            i.update(c);
        }
        i.finish(key, None).1
    }

    #[test]
    fn every_rule_names_itself_and_nothing_else_is_refused() {
        let p = Policy::parse(FULL, "policy.toml").unwrap();
        assert_eq!(p.judge_key("reports/a.txt", 10), None);
        assert!(
            p.judge_key("reports/a.txt", 2048)
                .unwrap()
                .starts_with("max_size")
        );
        assert!(
            p.judge_key("other/a.txt", 1)
                .unwrap()
                .contains("allow_prefixes")
        );
        assert!(
            p.judge_key("data/x/tool.exe", 1)
                .unwrap()
                .contains("deny_keys")
        );
        assert!(
            p.judge_key("data/.git/config", 1)
                .unwrap()
                .contains("deny_keys")
        );
        assert!(
            p.judge_key("data/top secret plan.txt", 1)
                .unwrap()
                .contains("keyword")
        );
        let h = ObjectHeaders {
            metadata: [("note".to_string(), "noforn".to_string())].into(),
            ..Default::default()
        };
        assert!(p.judge_headers(&h).unwrap().contains("metadata `note`"));
        assert_eq!(p.judge_headers(&ObjectHeaders::default()), None);
        let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        assert!(
            judge(&p, "data/r.pdf", elf, 7)
                .unwrap()
                .contains("x-executable")
        );
        // A keyword split across chunks is still found, in text only.
        let text = b"a report that is Top Secret, really";
        for chunk in 1..text.len() {
            assert!(
                judge(&p, "data/r.txt", text, chunk)
                    .unwrap()
                    .contains("TOP SECRET")
            );
        }
        assert_eq!(judge(&p, "data/r.txt", b"an open report", 3), None);
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR TOP SECRET";
        assert_eq!(judge(&p, "data/i.png", png, 64), None);
        assert!(
            judge(&p, "data/x.bin", b"\0\x01binary", 64)
                .unwrap()
                .contains("allow_types")
        );
    }

    #[test]
    fn a_bad_policy_names_its_line() {
        let e = Policy::parse("max_size = \"1GiB\"\nmax_sise = 3\n", "p.toml").unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("p.toml") && s.contains("line 2") && s.contains("max_sise"),
            "{s}"
        );
        let e = Policy::parse("deny_types = [\"exe\"]\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("not a MIME type"), "{e}");
        let e = Policy::parse("max_size = \"huge\"\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("max_size"), "{e}");
        assert!(Policy::parse("", "p.toml").is_ok());
    }
}
