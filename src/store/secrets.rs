//! The AWS Secrets Manager adapter: the import function's age identity is read from a secret
//! (its `SecretString` is the text of an `age-keygen` identity file), never from plain
//! environment variables.

use crate::error::{Error, Result};
use crate::format::seal::Identities;

/// The age identities in secret `id` (name or ARN).
pub async fn identity(client: &aws_sdk_secretsmanager::Client, id: &str) -> Result<Identities> {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| Error::Secret {
            id: id.to_string(),
            class: crate::store::sdk_error::classify(&e),
            source: Box::new(e),
        })?;
    let Some(text) = out.secret_string() else {
        return Err(Error::config(
            "AGE_IDENTITY_SECRET",
            format!("secret `{id}` has no SecretString: store the identity file's text in it"),
        ));
    };
    Identities::from_text(text, &format!("secret `{id}`"))
}
