//! AWS clients, built once from the SDK's standard configuration chain (`AWS_REGION`,
//! `AWS_PROFILE`, credentials, `AWS_ENDPOINT_URL[_S3|_DYNAMODB]` for local emulators), with the
//! CLI's `--profile` and `--region` taking precedence.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::s3::Store;
use crate::state::StateTable;

/// What the caller chose over the SDK's own chain (the CLI's global flags).
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// A named profile of `~/.aws/config` (over `AWS_PROFILE`).
    pub profile: Option<String>,
    /// The region (over `AWS_REGION` and the profile's).
    pub region: Option<String>,
    /// Path-style S3 addressing (emulators).
    pub path_style: bool,
}

/// The clients a run needs.
#[derive(Clone, Debug)]
pub struct Clients {
    pub s3: Store,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// Signs bundles with a KMS key (used only when one is configured).
    pub kms: aws_sdk_kms::Client,
    dynamodb_endpoint: Arc<str>,
}

impl Clients {
    /// Load the standard AWS configuration, with `opts` over it. Fails when no region is set.
    pub async fn load(opts: &AwsOptions) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &opts.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(Error::NoRegion);
        }
        Ok(Self::new(&sdk, opts.path_style))
    }

    /// Clients from an already loaded configuration.
    pub fn new(sdk: &aws_config::SdkConfig, path_style: bool) -> Self {
        let dynamodb_endpoint = match (sdk.endpoint_url(), sdk.region()) {
            (Some(url), _) => url.to_string(),
            (None, Some(r)) => format!("https://dynamodb.{r}.amazonaws.com"),
            (None, None) => "DynamoDB (no region set)".to_string(),
        };
        Clients {
            s3: Store::new(crate::s3::client(sdk, path_style)),
            dynamodb: crate::state::client(sdk),
            kms: aws_sdk_kms::Client::new(sdk),
            dynamodb_endpoint: dynamodb_endpoint.into(),
        }
    }

    /// The state table `table`.
    pub fn table(&self, table: &str) -> StateTable {
        StateTable::new(self.dynamodb.clone(), table, self.dynamodb_endpoint.clone())
    }
}
