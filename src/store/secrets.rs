//! The services the Lambda functions use besides storage and state: SNS for run summaries,
//! asynchronous self-invocation for continuations, and Secrets Manager, from which the import
//! function reads its age identity (the `SecretString` is the text of an `age-keygen` identity
//! file, never a plain environment variable).

use tracing::warn;

use crate::error::{Error, Result};
use crate::format::seal::Identities;

pub use aws_config::SdkConfig;

/// SNS, Lambda and Secrets Manager clients.
#[derive(Clone, Debug)]
pub struct Services {
    sns: aws_sdk_sns::Client,
    lambda: aws_sdk_lambda::Client,
    secrets: aws_sdk_secretsmanager::Client,
}

impl Services {
    pub fn new(sdk: &SdkConfig) -> Self {
        Services {
            sns: aws_sdk_sns::Client::new(sdk),
            lambda: aws_sdk_lambda::Client::new(sdk),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
        }
    }

    /// Publish a run summary to `topic`, if one is configured (a failure is logged, not
    /// fatal).
    pub async fn publish(&self, topic: Option<&str>, subject: &str, message: &str) {
        let Some(topic) = topic else {
            return;
        };
        let subject: String = subject.chars().take(99).collect();
        if let Err(e) = self
            .sns
            .publish()
            .topic_arn(topic)
            .subject(subject)
            .message(message)
            .send()
            .await
        {
            warn!(topic, error = %e, "could not publish the run summary");
        }
    }

    /// Invoke `function` asynchronously with `payload` (a continuation).
    pub async fn invoke_async(&self, function: &str, payload: Vec<u8>) -> Result<()> {
        self.lambda
            .invoke()
            .function_name(function)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload))
            .send()
            .await
            .map_err(|e| Error::Invoke {
                function: function.to_string(),
                source: Box::new(e),
            })?;
        Ok(())
    }

    /// The age identities in secret `id` (name or ARN).
    pub async fn identity(&self, id: &str) -> Result<Identities> {
        identity(&self.secrets, id).await
    }
}

/// The age identities in secret `id` (name or ARN).
async fn identity(client: &aws_sdk_secretsmanager::Client, id: &str) -> Result<Identities> {
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
