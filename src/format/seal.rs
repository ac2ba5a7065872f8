//! age encryption of volumes (X25519 recipients, the `age` file format, so `age`/`rage` are the
//! far side's independent decryptors). The exporter only ever holds recipients (public keys):
//! `Sealer` encrypts a volume as it streams, between the zip writer and the hashing tee, so
//! `SHA256SUMS` and the signature cover the ciphertext and the media can be checked without any
//! secret. The far side opens a sealed volume with `Identities` (`unzip::Volume` does the
//! reading). What this module does not do: decide which volumes are sealed (a `.zip.age` name
//! says so).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

use crate::error::{Error, Result};

/// What a sealed volume's name ends with (after `.zip`).
pub const SUFFIX: &str = ".age";
/// The most recipients one export encrypts to (each adds a stanza to every volume's header).
pub const MAX_RECIPIENTS: usize = 64;
/// An identity file larger than this is not one.
pub const MAX_IDENTITY_FILE: u64 = 1024 * 1024;
/// Plaintext handed to age per write, so the ciphertext waiting for the sink stays small.
const WRITE_SLICE: usize = 256 * 1024;

/// True for a sealed volume's file name (`….zip.age`).
pub fn is_sealed_name(name: &str) -> bool {
    name.ends_with(".zip.age")
}

/// True for any volume's file name (`….zip` or `….zip.age`).
pub fn is_volume_name(name: &str) -> bool {
    name.ends_with(".zip") || is_sealed_name(name)
}

/// The age recipients every volume of an export is encrypted to.
#[derive(Clone)]
pub struct Recipients(Arc<Vec<age::x25519::Recipient>>);

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|r| r.to_string()))
            .finish()
    }
}

impl Recipients {
    /// From `age1…` strings and recipient files (one per line, `#` comments); `None` when both
    /// are empty. Anything that is not an X25519 recipient is refused, naming it.
    pub fn parse(list: &[String], files: &[PathBuf]) -> Result<Option<Recipients>> {
        let mut out = Vec::new();
        for r in list {
            out.push(parse_one(r, "--encrypt-to")?);
        }
        for f in files {
            let text = read_capped(f, MAX_IDENTITY_FILE)?;
            let origin = format!("recipients file `{}`", f.display());
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                out.push(parse_one(line, &origin)?);
            }
        }
        Self::from_vec(out)
    }

    /// From `AGE_RECIPIENTS`: recipients separated by commas, spaces or newlines.
    pub fn from_env(value: &str) -> Result<Option<Recipients>> {
        let out = value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| parse_one(s, "AGE_RECIPIENTS"))
            .collect::<Result<Vec<_>>>()?;
        Self::from_vec(out)
    }

    fn from_vec(mut out: Vec<age::x25519::Recipient>) -> Result<Option<Recipients>> {
        if out.is_empty() {
            return Ok(None);
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|r| seen.insert(r.to_string()));
        if out.len() > MAX_RECIPIENTS {
            return Err(Error::config(
                "age recipients",
                format!(
                    "{} recipients; at most {MAX_RECIPIENTS} are allowed",
                    out.len()
                ),
            ));
        }
        Ok(Some(Recipients(Arc::new(out))))
    }

    /// How many recipients.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: an empty list is no `Recipients`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recipients as `age1…` strings.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|r| r.to_string()).collect()
    }

    /// A writer that encrypts into `out` (the age header is queued at once).
    pub fn seal<W: AsyncWrite + Unpin>(&self, out: W) -> Result<Sealer<W>> {
        let buf = SharedBuf::default();
        let encryptor =
            age::Encryptor::with_recipients(self.0.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| Error::config("age recipients", e.to_string()))?;
        let writer = encryptor
            .wrap_output(buf.clone())
            .map_err(|e| Error::config("age recipients", e.to_string()))?;
        Ok(Sealer {
            age: Some(writer),
            sealing: true,
            buf,
            pending: Vec::new(),
            sent: 0,
            out,
        })
    }
}

fn parse_one(s: &str, origin: &str) -> Result<age::x25519::Recipient> {
    age::x25519::Recipient::from_str(s.trim()).map_err(|e| {
        Error::config(
            "age recipient",
            format!(
                "`{}` from {origin} is not an age X25519 recipient (age1…, as `age-keygen -y KEY` prints): {e}",
                crate::format::manifest::short(s)
            ),
        )
    })
}

fn read_capped(path: &Path, max: u64) -> Result<String> {
    let io = |source| Error::Io {
        op: "reading",
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > max {
        return Err(Error::config(
            "age key file",
            format!("`{}` is {len} bytes; at most {max}", path.display()),
        ));
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Ciphertext produced by age's (synchronous) stream writer, waiting to go to the sink.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encrypts everything written to it into `out`, as an age file; `poll_shutdown` writes the
/// final chunk (a volume without it does not decrypt: truncation is detected). Built with
/// `Sealer::plain`, it passes bytes through unchanged.
pub struct Sealer<W> {
    age: Option<age::stream::StreamWriter<SharedBuf>>,
    sealing: bool,
    buf: SharedBuf,
    /// Ciphertext not yet accepted by `out`, from `sent`.
    pending: Vec<u8>,
    sent: usize,
    out: W,
}

impl<W: AsyncWrite + Unpin> Sealer<W> {
    /// Bytes go to `out` as they are.
    pub fn plain(out: W) -> Self {
        Sealer {
            age: None,
            sealing: false,
            buf: SharedBuf::default(),
            pending: Vec::new(),
            sent: 0,
            out,
        }
    }

    /// The sink.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The sink, after `shutdown`.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Hand queued ciphertext to `out` until none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if self.sent == self.pending.len() {
                self.pending = self.buf.take();
                self.sent = 0;
                if self.pending.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
            let n = ready!(Pin::new(&mut self.out).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Sealer<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if !this.sealing {
            return Pin::new(&mut this.out).poll_write(cx, b);
        }
        ready!(this.poll_drain(cx))?;
        let Some(age) = this.age.as_mut() else {
            return Poll::Ready(Err(std::io::Error::other("write after shutdown")));
        };
        let n = b.len().min(WRITE_SLICE);
        age.write_all(&b[..n])?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.out).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        if let Some(age) = this.age.take() {
            age.finish()?;
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.out).poll_shutdown(cx)
    }
}

/// The age identities (secret keys) the far side opens sealed volumes with.
#[derive(Clone)]
pub struct Identities {
    keys: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
    /// Where they came from (a file, a secret), for messages.
    pub origin: String,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} from {})", self.keys.len(), self.origin)
    }
}

impl Identities {
    /// From identity files (`age-keygen` output: `AGE-SECRET-KEY-1…` lines, `#` comments).
    pub fn from_files(files: &[PathBuf]) -> Result<Option<Identities>> {
        let mut keys = Vec::new();
        for f in files {
            let text = read_capped(f, MAX_IDENTITY_FILE)?;
            keys.extend(parse_identities(&text, &format!("`{}`", f.display()))?);
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let origin = files
            .iter()
            .map(|f| format!("`{}`", f.display()))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Some(Identities {
            keys: Arc::new(keys),
            origin,
        }))
    }

    /// From the text of an identity file held elsewhere (a secret).
    pub fn from_text(text: &str, origin: &str) -> Result<Identities> {
        Ok(Identities {
            keys: Arc::new(parse_identities(text, origin)?),
            origin: origin.to_string(),
        })
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)
    }
}

fn parse_identities(text: &str, origin: &str) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>> {
    let bad = |detail: String| {
        Error::config(
            "age identity",
            format!(
                "{origin} {detail} (it must hold `AGE-SECRET-KEY-1…` lines, as `age-keygen` writes)"
            ),
        )
    };
    let keys = age::IdentityFile::from_buffer(text.as_bytes())
        .map_err(|e| bad(format!("cannot be read: {e}")))?
        .into_identities()
        .map_err(|e| bad(format!("cannot be used: {e}")))?;
    if keys.is_empty() {
        return Err(bad("holds no identity".into()));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn sealed_bytes_open_with_the_identity_only() {
        let key = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let r = Recipients::from_env(&key.to_public().to_string())
            .unwrap()
            .unwrap();
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = r.seal(Vec::new()).unwrap();
        for c in plain.chunks(70_001) {
            s.write_all(c).await.unwrap();
        }
        s.shutdown().await.unwrap();
        let sealed = s.into_inner();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        assert!(!sealed.windows(64).any(|w| w == &plain[..64]));

        let ids = Identities::from_text(key.to_string().expose_secret(), "test").unwrap();
        let d = age::Decryptor::new(&sealed[..]).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut d.decrypt(ids.iter()).unwrap(), &mut out).unwrap();
        assert_eq!(out, plain);

        let wrong = Identities::from_text(other.to_string().expose_secret(), "test").unwrap();
        assert!(
            age::Decryptor::new(&sealed[..])
                .unwrap()
                .decrypt(wrong.iter())
                .is_err()
        );
    }

    #[test]
    fn bad_recipients_and_identities_are_named() {
        let e = Recipients::from_env("age1nope").unwrap_err().to_string();
        assert!(
            e.contains("age1nope") && e.contains("AGE_RECIPIENTS"),
            "{e}"
        );
        let e = Identities::from_text("hello", "`k.txt`")
            .unwrap_err()
            .to_string();
        assert!(e.contains("k.txt"), "{e}");
        assert!(Recipients::from_env(" , ").unwrap().is_none());
    }
}
