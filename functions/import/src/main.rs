//! The import Lambda: sets up logging, parses the configuration once (a missing or malformed
//! variable fails the cold start naming it), builds the clients once, and hands every event
//! (bucket notification, sweep, continuation) to the engine's import handler.
// The handler's future (import → bundle → verify → target, all async) nests deeper than
// rustc's default layout query depth.
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent, service_fn};
use s3_ferry::lambda::import::{ImportFunctionConfig, ImportHandler};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    s3_ferry::memory::tune_allocator();
    lambda_runtime::tracing::init_default_subscriber();
    let cfg = ImportFunctionConfig::from_env()?;
    let sdk = s3_ferry::store::aws::sdk_config(&Default::default()).await;
    let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "ferry-import".into());
    let handler = ImportHandler::new(cfg, &sdk, name);
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        handler.handle(event)
    }))
    .await
}
