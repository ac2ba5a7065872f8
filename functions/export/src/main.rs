//! The export Lambda (the state machine's plan, shard, commit and failure steps, or a direct
//! invoke): sets up logging, parses the configuration once (a missing or malformed variable
//! fails the cold start naming it), builds the clients once, and hands every event to the
//! engine's handler.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use s3_ferry::lambda::export::{FunctionConfig, Handler};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    s3_ferry::memory::tune_allocator();
    lambda_runtime::tracing::init_default_subscriber();
    let cfg = FunctionConfig::from_env()?;
    let sdk = s3_ferry::store::aws::sdk_config(&Default::default()).await;
    let handler = Handler::new(cfg, &sdk);
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        handler.handle(event)
    }))
    .await
}
