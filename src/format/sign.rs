//! Signed bundles: the exporter signs the bundle digest — the SHA-256 of `SHA256SUMS`, which
//! lists every volume's SHA-256, so it covers every entry, every manifest and the chain link —
//! with ECDSA P-256 over SHA-256 (the signed message is the 32 digest bytes, as KMS signs a RAW
//! message); the far side checks the signature offline against public keys it
//! trusts. Keys: an AWS KMS asymmetric key (`ECC_NIST_P256`, the private key never leaves KMS)
//! or a local PKCS#8 PEM file. What this module does not do: decide *whether* a bundle must be
//! signed (the import state and `--trust` do).

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair, ParsedPublicKey,
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
        // Parsing checks the curve and that the point is on it.
        if ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &spki).is_err() {
            return Err(Error::config(
                "trusted key",
                format!("{origin} is not an ECDSA P-256 public key (PEM `PUBLIC KEY`)"),
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

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.spki)
            .is_ok_and(|k| k.verify_sig(message, signature).is_ok())
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
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, block.contents())
            .map_err(|e| {
                Error::config(
                    "signing key",
                    format!(
                        "{} is not a P-256 PKCS#8 private key ({e}): make one with `ferry keygen`",
                        path.display()
                    ),
                )
            })?;
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
            pair.public_key(),
        )
        .map_err(|_| Error::config("signing key", "its public key cannot be encoded"))?;
        let public = TrustedKey::from_der(spki.as_ref().to_vec(), &path.display().to_string())?;
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
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, doc.as_ref())
        .map_err(|_| Error::config("keygen", "key generation failed"))?;
    let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
        pair.public_key(),
    )
    .map_err(|_| Error::config("keygen", "public key encoding failed"))?;
    let public = TrustedKey::from_der(spki.as_ref().to_vec(), "the new key")?;
    Ok((private, public.to_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
