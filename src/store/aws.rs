//! AWS clients, built once from the SDK's standard configuration chain (`AWS_REGION`,
//! `AWS_PROFILE`, credentials, `AWS_ENDPOINT_URL[_S3|_DYNAMODB]` for local emulators), with the
//! CLI's `--profile` and `--region` taking precedence.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::{Store, Tables};

/// Default time to set up a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time one attempt may wait for a response after sending its request (a part upload
/// sends its body within it): a silent server fails the attempt, and the SDK retries it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// What the caller chose over the SDK's own chain (the CLI's global flags).
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// A named profile of `~/.aws/config` (over `AWS_PROFILE`).
    pub profile: Option<String>,
    /// The region (over `AWS_REGION` and the profile's).
    pub region: Option<String>,
    /// Path-style S3 addressing (emulators).
    pub path_style: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            profile: None,
            region: None,
            path_style: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// The SDK's default HTTPS client (hyper 1, rustls, the proxy from `HTTPS_PROXY`/`NO_PROXY`)
/// with ring as rustls' cryptography instead of aws-lc.
pub fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn = aws_smithy_http_client::ConnectorBuilder::default()
            .tls_provider(Provider::Rustls(CryptoMode::Ring));
        conn.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            conn.set_sleep_impl(c.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

/// The SDK configuration: the standard chain, `opts` over it, and time-outs on every call.
pub async fn sdk_config(opts: &AwsOptions) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(opts.connect_timeout)
                .read_timeout(opts.request_timeout)
                .build(),
        );
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &opts.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    loader.load().await
}

/// The clients a run needs.
#[derive(Clone, Debug)]
pub struct Clients {
    pub s3: Store,
    /// Signs bundles with a KMS key (used only when one is configured).
    pub kms: aws_sdk_kms::Client,
    /// Names the caller in audit logs (absent over in-memory stores).
    sts: Option<aws_sdk_sts::Client>,
    /// `uncounted` with its requests counted in the run's activity (that of `s3`).
    tables: Arc<dyn Tables>,
    uncounted: Arc<dyn Tables>,
}

impl Clients {
    /// Load the standard AWS configuration, with `opts` over it. Fails when no region is set.
    pub async fn load(opts: &AwsOptions) -> Result<Self> {
        let sdk = sdk_config(opts).await;
        if sdk.region().is_none() {
            return Err(Error::NoRegion);
        }
        Ok(Self::new(&sdk, opts.path_style))
    }

    /// The same clients for one run inside their context ([`Store::for_run`]): a Lambda
    /// invocation's, a test's export.
    pub fn for_run(&self) -> Self {
        self.clone().in_run(self.s3.run().child())
    }

    /// The same clients for runs in the context `run` (the CLI's: a signal stops them).
    pub fn in_run(mut self, run: crate::context::RunContext) -> Self {
        self.s3 = self.s3.in_run(run);
        self.tables = counted_tables(&self.uncounted, &self.s3);
        self
    }

    /// Clients from an already loaded configuration.
    pub fn new(sdk: &aws_config::SdkConfig, path_style: bool) -> Self {
        let endpoint = match (sdk.endpoint_url(), sdk.region()) {
            (Some(url), _) => url.to_string(),
            (None, Some(r)) => format!("https://dynamodb.{r}.amazonaws.com"),
            (None, None) => "DynamoDB (no region set)".to_string(),
        };
        let s3 = Store::s3(crate::store::client(sdk, path_style));
        let uncounted: Arc<dyn Tables> = Arc::new(crate::store::DynamoTables {
            client: crate::store::dynamo::client(sdk),
            endpoint: endpoint.into(),
        });
        Clients {
            tables: counted_tables(&uncounted, &s3),
            uncounted,
            s3,
            kms: aws_sdk_kms::Client::new(sdk),
            sts: Some(aws_sdk_sts::Client::new(sdk)),
        }
    }

    /// The caller's AWS identity (STS GetCallerIdentity's ARN), for audit logs; `None` when
    /// STS does not answer (the log then names the host and user only).
    pub async fn caller_arn(&self) -> Option<String> {
        let sts = self.sts.as_ref()?;
        match sts.get_caller_identity().send().await {
            Ok(out) => out.arn().map(str::to_string),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "sts GetCallerIdentity failed: the audit log names the host and user only");
                None
            }
        }
    }

    /// Where the state tables are.
    pub fn tables(&self) -> &Arc<dyn Tables> {
        &self.tables
    }

    /// Clients over other stores: the in-memory ones of the fast tests, say. KMS is not
    /// reachable through them (a KMS signing key fails as unreachable).
    pub fn over(objects: Arc<dyn crate::store::ObjectStore>, tables: Arc<dyn Tables>) -> Self {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .http_client(http_client())
            .endpoint_url("http://127.0.0.1:9")
            .build();
        let s3 = Store::new(objects);
        Clients {
            tables: counted_tables(&tables, &s3),
            uncounted: tables,
            s3,
            kms: aws_sdk_kms::Client::new(&sdk),
            sts: None,
        }
    }
}

/// `tables` with their requests counted in the activity of `s3`'s run.
fn counted_tables(tables: &Arc<dyn Tables>, s3: &Store) -> Arc<dyn Tables> {
    Arc::new(crate::store::counted_state::CountedTables {
        inner: tables.clone(),
        activity: s3.activity().clone(),
    })
}
