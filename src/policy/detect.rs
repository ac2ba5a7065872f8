//! The type of an object, judged from its first bytes (magic numbers, by `infer`, then a text
//! check), never from its key or Content-Type; and whether a key or Content-Type lies about it.

/// Bytes of an object's start that type detection looks at.
pub const HEAD_BYTES: usize = 8 * 1024;

/// What an object's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// A MIME type: `infer`'s for a format it knows, else `text/plain` or
    /// `application/octet-stream`.
    pub mime: String,
    /// The extension of `infer`'s format (`None` for text and unknown bytes).
    pub ext: Option<String>,
    /// No format matched and the bytes read as text.
    pub text: bool,
}

/// The type of the bytes that start with `head`.
pub fn detect(head: &[u8]) -> Detected {
    if let Some(t) = infer::get(head) {
        return Detected {
            mime: t.mime_type().to_string(),
            ext: Some(t.extension().to_string()),
            text: false,
        };
    }
    let text = is_text(head);
    Detected {
        mime: if text {
            "text/plain".into()
        } else {
            "application/octet-stream".into()
        },
        ext: None,
        text,
    }
}

/// No NUL, and UTF-8 (a character cut at the end of `head` allowed) or at most 1 in 32 bytes
/// outside printable ASCII and whitespace (Latin-1 text).
fn is_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) if e.error_len().is_none() => true,
        Err(_) => {
            let odd = head
                .iter()
                .filter(|b| !(b.is_ascii_graphic() || b.is_ascii_whitespace()))
                .count();
            odd * 32 <= head.len()
        }
    }
}

/// Extensions of a text format a key may carry.
const TEXT_EXTENSIONS: [&str; 12] = [
    "txt", "csv", "tsv", "md", "json", "xml", "html", "htm", "log", "yaml", "yml", "ini",
];

/// Extensions that name the same format.
fn same_extension(a: &str, b: &str) -> bool {
    let canon = |e: &str| {
        match e {
            "jpeg" | "jpe" => "jpg",
            "tiff" => "tif",
            "htm" => "html",
            "yml" => "yaml",
            other => other,
        }
        .to_string()
    };
    canon(a) == canon(b)
}

/// How `key`'s extension or the `declared` Content-Type disagrees with what the bytes are, if
/// they do: a name or type of a format `infer` knows that the bytes are not, or of a text
/// format when the bytes are a known binary format.
pub fn mismatch(key: &str, declared: Option<&str>, detected: &Detected) -> Option<String> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e.len() <= 8);
    let binary = !detected.text && detected.mime != "application/octet-stream";
    if let Some(ext) = &ext {
        let claims_format = infer::is_supported(ext);
        let same = detected
            .ext
            .as_deref()
            .is_some_and(|t| same_extension(t, ext));
        if claims_format && !same {
            return Some(format!(
                "the key says .{ext}, the bytes are {}",
                detected.mime
            ));
        }
        if binary && TEXT_EXTENSIONS.contains(&ext.as_str()) {
            return Some(format!(
                "the key says .{ext} (text), the bytes are {}",
                detected.mime
            ));
        }
    }
    let declared = declared
        .map(|d| d.split(';').next().unwrap_or(d).trim().to_ascii_lowercase())
        .filter(|d| !d.is_empty() && d != "application/octet-stream" && d != "binary/octet-stream");
    if let Some(d) = declared {
        let claims_format = infer::is_mime_supported(&d);
        if (claims_format && d != detected.mime) || (binary && d.starts_with("text/")) {
            return Some(format!(
                "Content-Type says {d}, the bytes are {}",
                detected.mime
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n";

    #[test]
    fn types_come_from_the_bytes_and_lies_are_named() {
        assert_eq!(detect(ELF).mime, "application/x-executable");
        assert_eq!(detect(PDF).mime, "application/pdf");
        assert_eq!(detect(b"plain words\n").mime, "text/plain");
        assert_eq!(detect("naïve café\n".as_bytes()).mime, "text/plain");
        assert_eq!(detect(b"\0\x01\x02\x03").mime, "application/octet-stream");
        let elf = detect(ELF);
        let m = mismatch("docs/report.pdf", None, &elf).unwrap();
        assert!(m.contains(".pdf") && m.contains("x-executable"), "{m}");
        assert!(mismatch("notes.txt", None, &elf).is_some());
        assert!(mismatch("a", Some("text/plain"), &elf).is_some());
        assert!(mismatch("a", Some("application/pdf"), &elf).is_some());
        let pdf = detect(PDF);
        assert_eq!(mismatch("r.PDF", Some("application/pdf"), &pdf), None);
        assert_eq!(mismatch("r", Some("application/octet-stream"), &pdf), None);
        let text = detect(b"a,b\n1,2\n");
        assert_eq!(mismatch("t.csv", Some("text/csv"), &text), None);
        assert_eq!(mismatch("noext", None, &elf), None);
    }
}
