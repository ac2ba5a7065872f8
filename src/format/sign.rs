//! Signed bundles: the exporter signs the bundle digest — the SHA-256 of `SHA256SUMS`, which
//! lists every volume's SHA-256, so it covers every entry, every manifest and the chain link —
//! with ECDSA P-256 over SHA-256 (the signed message is the 32 digest bytes, as KMS signs a RAW
//! message); the far side checks the signature offline against public keys it
//! trusts. Keys: an AWS KMS asymmetric key (`ECC_NIST_P256`, the private key never leaves KMS)
//! or a local PKCS#8 PEM file. What this module does not do: decide *whether* a bundle must be
//! signed (the import state and `--trust` do).

use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, io_at};
use crate::format::manifest::short;

/// The signature file beside `SHA256SUMS`.
pub const SIGNATURE_FILE: &str = "SHA256SUMS.sig";
const FORMAT: &str = "s3-ferry-signature/1";
const ALGORITHM: &str = "ECDSA_P256_SHA256";
/// A signature file larger than this is not one.
pub const MAX_SIGNATURE_FILE: u64 = 64 * 1024;

/// What `SHA256SUMS.sig` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureFile {
    pub format: String,
    pub algorithm: String,
    /// SHA-256 of the `SHA256SUMS` that was signed (the bundle digest).
    pub bundle_digest: String,
    /// SHA-256 of the signer's public key (DER SubjectPublicKeyInfo), hex.
    pub key: String,
    /// The ASN.1 DER signature, hex.
    pub signature: String,
}

/// The DER SubjectPublicKeyInfo of every P-256 key, up to its point (RFC 5480: the algorithm
/// `id-ecPublicKey` with the curve `prime256v1`, then a BIT STRING of 66 bytes): what KMS's
/// GetPublicKey, `openssl pkey -pubout` and `ferry keygen` write before the 65-byte uncompressed
/// point. ring takes the point alone.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The uncompressed point of a P-256 SubjectPublicKeyInfo, if `spki` is one.
fn p256_point(spki: &[u8]) -> Option<&[u8]> {
    spki.strip_prefix(&P256_SPKI_PREFIX[..])
        .filter(|p| p.len() == 65 && p[0] == 0x04)
}

/// The SubjectPublicKeyInfo of an uncompressed P-256 point.
fn p256_spki(point: &[u8]) -> Vec<u8> {
    [&P256_SPKI_PREFIX[..], point].concat()
}

/// A public key the far side trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// SHA-256 of `spki`, hex: how bundles and the import state name it.
    pub fingerprint: String,
}

impl TrustedKey {
    /// From DER SubjectPublicKeyInfo; fails unless it is a P-256 public key.
    pub fn from_der(spki: Vec<u8>, origin: &str) -> Result<Self> {
        // The form is checked here; that the point is on the curve, at every verification.
        if p256_point(&spki).is_none() {
            return Err(Error::config(
                "trusted key",
                format!(
                    "{origin} is not an ECDSA P-256 public key with an uncompressed point (PEM `PUBLIC KEY`)"
                ),
            ));
        }
        Ok(TrustedKey {
            fingerprint: hex::encode(Sha256::digest(&spki)),
            spki,
        })
    }

    /// From a PEM `PUBLIC KEY` file.
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_at("reading", path))?;
        Self::from_pem(&text, &path.display().to_string())
    }

    /// From PEM `PUBLIC KEY` text.
    pub fn from_pem(text: &str, origin: &str) -> Result<Self> {
        let block = pem::parse(text).map_err(|e| {
            Error::config("trusted key", format!("{origin} is not a PEM file: {e}"))
        })?;
        if block.tag() != "PUBLIC KEY" {
            return Err(Error::config(
                "trusted key",
                format!(
                    "{origin} holds a `{}`; give the public key (`PUBLIC KEY`, from `ferry keygen` or `ferry public-key`)",
                    block.tag()
                ),
            ));
        }
        Self::from_der(block.into_contents(), origin)
    }

    /// Keys from PEM text (one or more `PUBLIC KEY` blocks) or from single-line base64 DER
    /// separated by commas or white space (what a CloudFormation parameter can carry).
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        if text.contains("-----BEGIN") {
            let blocks = pem::parse_many(text)
                .map_err(|e| Error::config("trusted keys", format!("not PEM: {e}")))?;
            return blocks
                .into_iter()
                .enumerate()
                .map(|(i, b)| Self::from_pem(&pem::encode(&b), &format!("key {}", i + 1)))
                .collect();
        }
        text.split([',', ' ', '\n', '\t'])
            .filter(|t| !t.is_empty())
            .enumerate()
            .map(|(i, b64)| {
                let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
                Self::from_pem(&pem, &format!("key {}", i + 1))
            })
            .collect()
    }

    /// The key as PEM text.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.spki.clone()))
    }

    /// True when `signature` (ASN.1 DER) is this key's over SHA-256 of `message`, as a
    /// [`Signer`] signs what it is given.
    pub fn verifies_message(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifies(&Sha256::digest(message), signature)
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        p256_point(&self.spki).is_some_and(|point| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
                .verify(message, signature)
                .is_ok()
        })
    }
}

/// Check `sums` (the bytes of `SHA256SUMS`) against the signature file `sig` with any of
/// `trusted`. Returns the key that signed; an error (exit 5) names what is wrong.
pub fn verify<'k>(
    sums: &[u8],
    sig: &SignatureFile,
    trusted: &'k [TrustedKey],
) -> std::result::Result<&'k TrustedKey, String> {
    if sig.format != FORMAT || sig.algorithm != ALGORITHM {
        return Err(format!(
            "the signature is `{}`/`{}`; this ferry checks `{FORMAT}`/`{ALGORITHM}`",
            sig.format, sig.algorithm
        ));
    }
    let digest = hex::encode(Sha256::digest(sums));
    if sig.bundle_digest != digest {
        return Err(format!(
            "the signature is for bundle digest {}, SHA256SUMS has {}",
            short(&sig.bundle_digest),
            short(&digest)
        ));
    }
    let signature =
        hex::decode(&sig.signature).map_err(|_| "the signature is not hex".to_string())?;
    let Some(key) = trusted.iter().find(|k| k.fingerprint == sig.key) else {
        return Err(format!(
            "it is signed by key {}, which is not trusted here",
            short(&sig.key)
        ));
    };
    if key.verifies(&Sha256::digest(sums), &signature) {
        Ok(key)
    } else {
        Err(format!(
            "the signature by key {} does not match SHA256SUMS (forged or altered)",
            short(&sig.key)
        ))
    }
}

/// Parse a signature file's bytes.
pub fn parse(bytes: &[u8], location: &str) -> std::result::Result<SignatureFile, String> {
    if bytes.len() as u64 > MAX_SIGNATURE_FILE {
        return Err(format!(
            "{location} is {} bytes: not a signature file",
            bytes.len()
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("{location} is not a signature file: {e}"))
}

/// Where the exporter's private key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKeySpec {
    /// An AWS KMS key: id, ARN or `alias/…`.
    Kms(String),
    /// A PKCS#8 PEM file.
    File(PathBuf),
}

impl std::str::FromStr for SigningKeySpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some(("kms", id)) if !id.is_empty() => Ok(SigningKeySpec::Kms(id.to_string())),
            Some(("file", p)) if !p.is_empty() => Ok(SigningKeySpec::File(PathBuf::from(p))),
            _ => Err(Error::config(
                "signing key",
                format!("`{s}`: write kms:KEY_ID_OR_ARN_OR_ALIAS or file:PATH"),
            )),
        }
    }
}

/// Something that signs a bundle's `SHA256SUMS`: a KMS key (`kms::KmsSigner`, opened by
/// `kms::open_signer`) or a local key file ([`FileSigner`]).
pub trait Signer: Send + Sync {
    /// The public key the far side trusts for it.
    fn public_key(&self) -> &TrustedKey;
    /// The signature file of `sums`.
    fn sign<'a>(&'a self, sums: &'a [u8]) -> futures::future::BoxFuture<'a, Result<SignatureFile>>;
}

/// A local P-256 key pair from a PKCS#8 PEM file.
pub struct FileSigner {
    pair: EcdsaKeyPair,
    public: TrustedKey,
}

impl FileSigner {
    pub fn open(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_at("reading", path))?;
        let block = pem::parse(&text).map_err(|e| {
            Error::config(
                "signing key",
                format!("{} is not a PEM file: {e}", path.display()),
            )
        })?;
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            block.contents(),
            &SystemRandom::new(),
        )
        .map_err(|e| {
            Error::config(
                "signing key",
                format!(
                    "{} is not a P-256 PKCS#8 private key ({e}): make one with `ferry keygen`",
                    path.display()
                ),
            )
        })?;
        let spki = p256_spki(pair.public_key().as_ref());
        let public = TrustedKey::from_der(spki, &path.display().to_string())?;
        Ok(FileSigner { pair, public })
    }

    fn sign_now(&self, sums: &[u8]) -> Result<SignatureFile> {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), &Sha256::digest(sums))
            .map_err(|_| Error::config("signing key", "signing failed"))?;
        Ok(signature_file(sums, &self.public, sig.as_ref()))
    }
}

impl Signer for FileSigner {
    fn public_key(&self) -> &TrustedKey {
        &self.public
    }
    fn sign<'a>(&'a self, sums: &'a [u8]) -> futures::future::BoxFuture<'a, Result<SignatureFile>> {
        Box::pin(async move { self.sign_now(sums) })
    }
}

/// The signature file of `sums` signed by `key` with `der`.
pub fn signature_file(sums: &[u8], key: &TrustedKey, der: &[u8]) -> SignatureFile {
    SignatureFile {
        format: FORMAT.into(),
        algorithm: ALGORITHM.into(),
        bundle_digest: hex::encode(Sha256::digest(sums)),
        key: key.fingerprint.clone(),
        signature: hex::encode(der),
    }
}

/// A new P-256 key pair: (PKCS#8 private PEM, public PEM).
pub fn generate() -> Result<(String, String)> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
        .map_err(|_| Error::config("keygen", "key generation failed"))?;
    let private = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        doc.as_ref(),
        &SystemRandom::new(),
    )
    .map_err(|_| Error::config("keygen", "key generation failed"))?;
    let public = TrustedKey::from_der(p256_spki(pair.public_key().as_ref()), "the new key")?;
    Ok((private, public.to_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key pair made by `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`
    /// and `openssl pkey -pubout`.
    const OPENSSL_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg3Rt6ZjJWkKp6An5l
qnW6v3Ai/UxoY07Ha1D7tV+ZgT2hRANCAARniC6lU7BcGbJVwFAGBpxkDdqS+vbW
9Kan73iEMGRjyQv57Ll1ucNqXfPeOMiMA7cFaX0Vg4B7Ywjvx9J9uwDQ
-----END PRIVATE KEY-----
";
    const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZ4gupVOwXBmyVcBQBgacZA3akvr2
1vSmp+94hDBkY8kL+ey5dbnDal3z3jjIjAO3BWl9FYOAe2MI78fSfbsA0A==
-----END PUBLIC KEY-----
";

    #[test]
    fn keys_and_signatures_of_other_tools_are_read_as_they_wrote_them() {
        // GIVEN openssl's key pair, and openssl's signature of the 32-byte digest of these sums
        // as a message (`dgst -sha256 -sign`, as KMS signs a RAW message)
        let sums = b"abc  v-1.zip\n";
        let der = "3046022100eab78edfe9600ab1251eb8f9743fdfdc9de0255e13c93ef82b5c8d0daef65e8d02\
                   2100c25935133719c177031d29ed5371ef123f52d20ba34a88e05a0f3e7d15fc0243";
        let public = TrustedKey::from_pem(OPENSSL_PUBLIC, "openssl").unwrap();
        // THEN the fingerprint is the SHA-256 of the DER `openssl pkey -pubout -outform DER` writes
        assert_eq!(
            public.fingerprint,
            "2b98237a466f9e2b34146018f3df988862bebad590fd7d9ed3bdacb950b11712"
        );
        // AND the private key opens with the same public key
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, OPENSSL_PRIVATE).unwrap();
        let signer = FileSigner::open(&path).unwrap();
        assert_eq!(signer.public_key(), &public);
        // AND openssl's signature verifies, and ours verifies with openssl's public key
        let sig = signature_file(sums, &public, &hex::decode(der).unwrap());
        assert!(verify(sums, &sig, std::slice::from_ref(&public)).is_ok());
        let ours = signer.sign_now(sums).unwrap();
        assert!(verify(sums, &ours, std::slice::from_ref(&public)).is_ok());
        // AND a key that is not a P-256 point is refused when it is read
        let mut bad = public.spki.clone();
        bad[26] = 0x02; // a compressed point's tag
        assert!(TrustedKey::from_der(bad, "bad").is_err());
        assert!(TrustedKey::from_der(public.spki[..90].to_vec(), "short").is_err());
    }

    #[test]
    fn a_signature_verifies_only_over_its_own_sums() {
        let (private, public) = generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, private).unwrap();
        let signer = FileSigner::open(&path).unwrap();
        let trusted = vec![TrustedKey::from_pem(&public, "pub").unwrap()];
        let sums = b"abc  v-1.zip\n";
        let sig = signer.sign_now(sums).unwrap();
        assert!(verify(sums, &sig, &trusted).is_ok());
        // A genuine signature copied onto other content fails.
        let other = b"abd  v-1.zip\n";
        let mut moved = sig.clone();
        moved.bundle_digest = hex::encode(Sha256::digest(other));
        assert!(
            verify(other, &moved, &trusted)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(verify(other, &sig, &trusted).is_err());
        // Another key is not trusted.
        let (_, stranger) = generate().unwrap();
        let strangers = vec![TrustedKey::from_pem(&stranger, "x").unwrap()];
        assert!(
            verify(sums, &sig, &strangers)
                .unwrap_err()
                .contains("not trusted")
        );
    }
}
