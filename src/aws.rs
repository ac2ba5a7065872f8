//! AWS clients, built once from the SDK's standard configuration chain (`AWS_REGION`,
//! credentials, `AWS_ENDPOINT_URL[_S3|_DYNAMODB]` for local emulators).

use crate::s3::Store;
use crate::state::StateTable;

/// The clients a run needs.
#[derive(Clone, Debug)]
pub struct Clients {
    pub s3: Store,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl Clients {
    /// Load the standard AWS configuration from the environment.
    pub async fn from_env(path_style: bool) -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(&sdk, path_style)
    }

    /// Clients from an already loaded configuration.
    pub fn new(sdk: &aws_config::SdkConfig, path_style: bool) -> Self {
        Clients {
            s3: Store::new(crate::s3::client(sdk, path_style)),
            dynamodb: crate::state::client(sdk),
        }
    }

    /// The state table `table`.
    pub fn table(&self, table: &str) -> StateTable {
        StateTable::new(self.dynamodb.clone(), table)
    }
}
