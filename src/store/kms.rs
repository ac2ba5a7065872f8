//! The AWS KMS adapter of bundle signing: an asymmetric `ECC_NIST_P256` key signs the bundle
//! digest (the 32 bytes of SHA-256 of `SHA256SUMS`, as a RAW message, `ECDSA_SHA_256`); the
//! private key never leaves KMS.
//! Its public key is read once (GetPublicKey) so bundles can name it.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::format::sign::{SignatureFile, Signer, TrustedKey, signature_file};

/// A KMS key that signs bundles.
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key_id: String,
    public: TrustedKey,
}

impl KmsSigner {
    /// Read the key's public key; fails unless it is an ECC_NIST_P256 signing key.
    pub async fn open(client: aws_sdk_kms::Client, key_id: &str) -> Result<Self> {
        let out = client
            .get_public_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| Error::Kms {
                op: "GetPublicKey",
                key: key_id.to_string(),
                class: crate::store::sdk_error::classify(&e),
                source: Box::new(e),
            })?;
        let spki = out
            .public_key()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        let public = TrustedKey::from_der(spki, &format!("KMS key `{key_id}`"))?;
        let signer = KmsSigner {
            client,
            key_id: key_id.to_string(),
            public,
        };
        // One probe signature now, so a key that cannot sign (usage, permissions) fails the run
        // before it takes the lease, not after every volume is uploaded.
        signer.sign(b"s3-ferry signing probe").await?;
        Ok(signer)
    }
}

impl Signer for KmsSigner {
    fn public_key(&self) -> &TrustedKey {
        &self.public
    }

    fn sign<'a>(&'a self, sums: &'a [u8]) -> futures::future::BoxFuture<'a, Result<SignatureFile>> {
        Box::pin(async move {
            let digest = Sha256::digest(sums);
            let out = self
                .client
                .sign()
                .key_id(&self.key_id)
                .message(Blob::new(digest.to_vec()))
                .message_type(MessageType::Raw)
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .send()
                .await
                .map_err(|e| Error::Kms {
                    op: "Sign",
                    key: self.key_id.clone(),
                    class: crate::store::sdk_error::classify(&e),
                    source: Box::new(e),
                })?;
            let der = out
                .signature()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default();
            Ok(signature_file(sums, &self.public, &der))
        })
    }
}

/// Open the signer `spec` names (a KMS key needs the KMS client; a key file does not).
pub async fn open_signer(
    spec: &crate::format::sign::SigningKeySpec,
    kms: &aws_sdk_kms::Client,
) -> Result<Box<dyn crate::format::sign::Signer>> {
    use crate::format::sign::{FileSigner, SigningKeySpec};
    Ok(match spec {
        SigningKeySpec::File(path) => Box::new(FileSigner::open(path)?),
        SigningKeySpec::Kms(id) => Box::new(KmsSigner::open(kms.clone(), id).await?),
    })
}
