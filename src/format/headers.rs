//! An object's headers as a bundle carries them — HTTP headers, user metadata, tags, Object
//! Lock, the website redirect — and the checks that hold them to what S3 can take again, so
//! that whatever `verify` accepts an import can write (hostile media included).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// HTTP headers and user metadata of an object, as S3 returned them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHeaders {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cache_control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires: Option<String>,
    /// `x-amz-website-redirect-location` (a static website's redirect for this key).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub website_redirect_location: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The object's tags (GetObjectTagging), applied whole on import.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Object Lock retention: `GOVERNANCE` or `COMPLIANCE`, with `object_lock_retain_until`
    /// (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub object_lock_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub object_lock_retain_until: Option<String>,
    /// An Object Lock legal hold is on.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub object_lock_legal_hold: bool,
    /// S3's own additional checksum of the object, read with the whole object: its algorithm
    /// (`CRC32`, `CRC32C`, `CRC64NVME`, `SHA1`, `SHA256`), type (`FULL_OBJECT`, `COMPOSITE`)
    /// and value (base64, `-N` after a composite one). Sent back on a single PUT, so that S3
    /// itself checks the bytes against the source's checksum.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub checksum_algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub checksum_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub checksum: Option<String>,
}

/// S3's additional checksum algorithms, with the bytes of their values.
pub const CHECKSUM_ALGORITHMS: [(&str, usize); 5] = [
    ("CRC32", 4),
    ("CRC32C", 4),
    ("CRC64NVME", 8),
    ("SHA1", 20),
    ("SHA256", 32),
];

/// The longest `WebsiteRedirectLocation` S3 takes.
pub const MAX_REDIRECT: usize = 2048;
/// S3's limits on an object's tags: how many, and a key's and a value's length in Unicode
/// characters.
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;

/// Why `tags` cannot be an S3 tag set, if they cannot.
fn tags_problem(tags: &BTreeMap<String, String>) -> Option<String> {
    if tags.len() > MAX_TAGS {
        return Some(format!("{} tags (S3 takes at most {MAX_TAGS})", tags.len()));
    }
    // Letters, digits and spaces in any script, and + - = . _ : / @ (S3's tag characters).
    let allowed = |c: char| c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c);
    for (k, v) in tags {
        let (kn, vn) = (k.chars().count(), v.chars().count());
        if kn == 0 || kn > MAX_TAG_KEY || vn > MAX_TAG_VALUE {
            return Some(format!(
                "a tag of {kn} and {vn} characters (S3: a key of 1..={MAX_TAG_KEY}, a value of at most {MAX_TAG_VALUE})"
            ));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Some(format!(
                "the tag {k:?}: keys starting with aws: are AWS's own"
            ));
        }
        if !k.chars().chain(v.chars()).all(allowed) {
            return Some(format!(
                "the tag {k:?}={v:?}, with a character S3 does not take in tags"
            ));
        }
    }
    None
}

/// Why `value` cannot travel as an HTTP header value (S3 headers and metadata), if it cannot.
fn header_value_problem(value: &str) -> Option<&'static str> {
    value
        .bytes()
        .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
        .then_some("holds a control character (CR, LF, NUL, …)")
}

impl ObjectHeaders {
    /// Does the object carry an Object Lock (retention or a legal hold)?
    pub fn is_locked(&self) -> bool {
        self.object_lock_mode.is_some() || self.object_lock_legal_hold
    }

    /// A digest of everything a metadata-only change can change — the HTTP headers, user
    /// metadata, the redirect, tags and Object Lock — and not the checksum, which belongs to
    /// the bytes (a ranged read does not return it). A HEAD with GetObjectTagging and a GET
    /// of the same version give the same digest; the inventory keeps it to tell, without the
    /// bytes, whether an object's metadata changed (`--scan-metadata`).
    pub fn state_digest(&self) -> String {
        use sha2::Digest;
        let state = ObjectHeaders {
            checksum_algorithm: None,
            checksum_type: None,
            checksum: None,
            ..self.clone()
        };
        let json = serde_json::to_vec(&state).expect("headers serialise");
        hex::encode(&sha2::Sha256::digest(&json)[..16])
    }

    /// The same headers without any Object Lock (`ferry import --object-lock skip`).
    pub fn unlocked(&self) -> ObjectHeaders {
        ObjectHeaders {
            object_lock_mode: None,
            object_lock_retain_until: None,
            object_lock_legal_hold: false,
            ..self.clone()
        }
    }

    /// The checksum as a single PUT sends it: algorithm and value, when the object has a
    /// full-object one (a composite checksum belongs to a part layout).
    pub fn full_object_checksum(&self) -> Option<(&str, &str)> {
        match (
            &self.checksum_algorithm,
            &self.checksum,
            self.checksum_type.as_deref(),
        ) {
            (Some(a), Some(v), Some("FULL_OBJECT") | None) if !v.contains('-') => Some((a, v)),
            _ => None,
        }
    }

    fn checksum_problem(&self) -> Option<String> {
        let (Some(alg), Some(value)) = (&self.checksum_algorithm, &self.checksum) else {
            return (self.checksum_algorithm.is_some() || self.checksum.is_some())
                .then(|| "an algorithm without a value, or a value without one".into());
        };
        let Some((_, bytes)) = CHECKSUM_ALGORITHMS.iter().find(|(a, _)| a == alg) else {
            return Some(format!("algorithm {alg:?} is not one of S3's"));
        };
        if let Some(t) = &self.checksum_type
            && t != "FULL_OBJECT"
            && t != "COMPOSITE"
        {
            return Some(format!("type {t:?} (FULL_OBJECT or COMPOSITE)"));
        }
        let (b64, parts) = value.split_once('-').unwrap_or((value, ""));
        let digits =
            parts.is_empty() || (parts.len() <= 5 && parts.bytes().all(|b| b.is_ascii_digit()));
        // Canonical base64 (padded, no stray bits) of exactly the algorithm's digest length.
        let base64 = b64.len() == bytes.div_ceil(3) * 4
            && base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                .is_ok_and(|d| d.len() == *bytes);
        (!(digits && base64)).then(|| format!("{alg} value {value:?} is not one"))
    }

    /// The headers an import writes: without any Object Lock when `skip_lock`, and without a
    /// retention whose date has passed by `now_ms` (S3 refuses a PUT retained into the past;
    /// the legal hold stays). `None` when they are written as they are.
    pub fn for_import(&self, skip_lock: bool, now_ms: i64) -> Option<ObjectHeaders> {
        if skip_lock && self.is_locked() {
            return Some(self.unlocked());
        }
        let until = self.object_lock_retain_until.as_deref()?;
        let until =
            time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339)
                .ok()?;
        let expired = until.unix_timestamp_nanos() / 1_000_000 <= i128::from(now_ms);
        expired.then(|| ObjectHeaders {
            object_lock_mode: None,
            object_lock_retain_until: None,
            ..self.clone()
        })
    }

    fn lock_problem(&self) -> Option<String> {
        match (&self.object_lock_mode, &self.object_lock_retain_until) {
            (None, None) => None,
            (Some(m), Some(until)) => {
                if m != "GOVERNANCE" && m != "COMPLIANCE" {
                    return Some(format!("mode {m:?} (GOVERNANCE or COMPLIANCE)"));
                }
                let parsed = time::OffsetDateTime::parse(
                    until,
                    &time::format_description::well_known::Rfc3339,
                );
                parsed
                    .is_err()
                    .then(|| format!("retain-until {until:?} is not an RFC 3339 date"))
            }
            _ => Some(
                "a retention mode without a retain-until date, or a date without a mode".into(),
            ),
        }
    }

    /// Why these headers cannot be written back to S3 as they are, if they cannot: a bundle
    /// that carries them is refused by `verify` and `import` alike, before anything is written.
    pub fn problem(&self) -> Option<String> {
        let fixed = [
            ("Content-Type", &self.content_type),
            ("Content-Encoding", &self.content_encoding),
            ("Content-Disposition", &self.content_disposition),
            ("Content-Language", &self.content_language),
            ("Cache-Control", &self.cache_control),
            ("Expires", &self.expires),
        ];
        for (name, value) in fixed {
            if let Some(p) = value.as_deref().and_then(header_value_problem) {
                return Some(format!("its {name} {p}"));
            }
        }
        if let Some(p) = tags_problem(&self.tags) {
            return Some(format!("its tags: {p}"));
        }
        if let Some(p) = self.lock_problem() {
            return Some(format!("its Object Lock: {p}"));
        }
        if let Some(p) = self.checksum_problem() {
            return Some(format!("its checksum: {p}"));
        }
        if let Some(r) = &self.website_redirect_location {
            let name = "WebsiteRedirectLocation";
            if let Some(p) = header_value_problem(r) {
                return Some(format!("its {name} {p}"));
            }
            if r.len() > MAX_REDIRECT
                || !(r.starts_with('/') || r.starts_with("http://") || r.starts_with("https://"))
            {
                return Some(format!(
                    "its {name} is not a path or an http(s) URL of at most {MAX_REDIRECT} bytes"
                ));
            }
        }
        for (name, value) in &self.metadata {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Some(format!(
                    "its metadata name {name:?} is not an HTTP header name"
                ));
            }
            if let Some(p) = header_value_problem(value) {
                return Some(format!("its metadata `{name}` {p}"));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_is_a_path_or_an_http_url_of_bounded_length() {
        let with = |r: &str| ObjectHeaders {
            website_redirect_location: Some(r.to_string()),
            ..Default::default()
        };
        for good in ["/a/b.html", "https://example.com/x", "http://e/"] {
            assert_eq!(with(good).problem(), None, "{good}");
        }
        for bad in [
            "a/b.html",
            "ftp://e/x",
            "/a\r\nx-amz-acl: public-read",
            &format!("/{}", "a".repeat(MAX_REDIRECT)),
        ] {
            let p = with(bad).problem().expect(bad);
            assert!(p.contains("WebsiteRedirectLocation"), "{p}");
        }
    }

    #[test]
    fn tags_are_at_most_ten_of_bounded_length_in_s3s_characters() {
        let with = |pairs: &[(&str, &str)]| ObjectHeaders {
            tags: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            with(&[
                ("team", "blue"),
                ("cost-centre", "42"),
                ("名前", "é /:@+=._-")
            ])
            .problem(),
            None
        );
        let ten: Vec<(String, String)> = (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
        let eleven: Vec<(&str, &str)> = ten.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let long_key = "k".repeat(MAX_TAG_KEY + 1);
        let long_value = "é".repeat(MAX_TAG_VALUE + 1);
        for bad in [
            eleven,
            vec![("", "v")],
            vec![(long_key.as_str(), "v")],
            vec![("k", long_value.as_str())],
            vec![("k", "a\r\nb")],
            vec![("k&x", "v")],
            vec![("aws:createdBy", "v")],
        ] {
            let p = with(&bad).problem().unwrap_or_else(|| panic!("{bad:?}"));
            assert!(p.contains("tag"), "{p}");
        }
        // exactly at the limits
        let key = "k".repeat(MAX_TAG_KEY);
        let value = "é".repeat(MAX_TAG_VALUE);
        assert_eq!(with(&[(key.as_str(), value.as_str())]).problem(), None);
    }

    #[test]
    fn a_checksum_is_one_of_s3s_with_a_value_of_its_length() {
        let sum = |alg: &str, t: Option<&str>, v: &str| ObjectHeaders {
            checksum_algorithm: Some(alg.to_string()),
            checksum_type: t.map(str::to_string),
            checksum: Some(v.to_string()),
            ..Default::default()
        };
        let sha = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(sum("SHA256", Some("FULL_OBJECT"), sha).problem(), None);
        assert_eq!(sum("CRC32", None, "AAAAAA==").problem(), None);
        assert_eq!(
            sum("CRC64NVME", Some("FULL_OBJECT"), "AAAAAAAAAAA=").problem(),
            None
        );
        assert_eq!(
            sum("SHA256", Some("COMPOSITE"), &format!("{sha}-3")).problem(),
            None
        );
        assert_eq!(
            sum("SHA256", Some("FULL_OBJECT"), sha).full_object_checksum(),
            Some(("SHA256", sha))
        );
        assert_eq!(
            sum("SHA256", Some("COMPOSITE"), &format!("{sha}-3")).full_object_checksum(),
            None
        );
        for bad in [
            sum("MD5", None, "AAAAAA=="),
            sum("SHA256", None, "AAAAAA=="),
            sum("CRC32", Some("PARTIAL"), "AAAAAA=="),
            sum("CRC32", None, "AAAA\r\nA=="),
            // 8 base64 characters as a CRC32's, of 5 bytes (the hostile corpus found it)
            sum("CRC32", None, "MTIzNDU="),
            sum("CRC32", None, "AAAAAA==-x"),
            ObjectHeaders {
                checksum: Some("AAAAAA==".into()),
                ..Default::default()
            },
        ] {
            let p = bad.problem().unwrap_or_else(|| panic!("{bad:?}"));
            assert!(p.contains("checksum"), "{p}");
        }
    }

    #[test]
    fn an_object_lock_is_a_known_mode_with_an_rfc3339_date() {
        let lock = |mode: Option<&str>, until: Option<&str>| ObjectHeaders {
            object_lock_mode: mode.map(str::to_string),
            object_lock_retain_until: until.map(str::to_string),
            ..Default::default()
        };
        let date = Some("2031-01-02T03:04:05Z");
        assert_eq!(lock(Some("GOVERNANCE"), date).problem(), None);
        assert_eq!(lock(Some("COMPLIANCE"), date).problem(), None);
        assert_eq!(lock(None, None).problem(), None);
        for (m, u) in [
            (Some("FOREVER"), date),
            (Some("GOVERNANCE"), None),
            (None, date),
            (Some("COMPLIANCE"), Some("next tuesday")),
        ] {
            let p = lock(m, u)
                .problem()
                .unwrap_or_else(|| panic!("{m:?} {u:?}"));
            assert!(p.contains("Object Lock"), "{p}");
        }
        let held = ObjectHeaders {
            object_lock_legal_hold: true,
            ..Default::default()
        };
        assert!(held.is_locked() && !held.unlocked().is_locked());
        // an import drops a retention that has run out (S3 refuses it), keeping the hold
        let expired = ObjectHeaders {
            object_lock_legal_hold: true,
            ..lock(Some("GOVERNANCE"), Some("2020-01-01T00:00:00+01:00"))
        };
        let now = 1_800_000_000_000; // 2027
        let w = expired.for_import(false, now).expect("changed");
        assert_eq!((w.object_lock_mode, w.object_lock_legal_hold), (None, true));
        assert!(
            lock(Some("GOVERNANCE"), date)
                .for_import(false, now)
                .is_none()
        );
        assert!(
            !lock(Some("GOVERNANCE"), date)
                .for_import(true, now)
                .unwrap()
                .is_locked()
        );
    }
}
