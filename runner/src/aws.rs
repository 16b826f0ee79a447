//! The AWS SDK's shared configuration, loaded the same way for every AWS client of the agent
//! (S3, Parameter Store, Secrets Manager, ECR, CloudWatch Logs), so that they all honour the same settings.
//!
//! [`sdk_config`] is aws-config's standard chain: credentials from the environment, the
//! profile (`AWS_PROFILE`, `~/.aws/config`), SSO, a credential process, web identity, the ECS or
//! EC2 instance role; the region of `AWS_REGION` (or the profile), else the build's region; and
//! the standard endpoint settings (`AWS_ENDPOINT_URL`, and per service
//! `AWS_ENDPOINT_URL_<SERVICE>` such as `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_SSM`,
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`, which each service's client reads
//! from it), which point the clients at MinIO, moto or a local proxy instead of AWS.
//!
//! Retries are the SDK's standard mode with exponential backoff for connection errors, timeouts,
//! 5xx and throttling answers, [`MAX_ATTEMPTS`] attempts (as the registry client; the SDK's own
//! default is 3) unless `AWS_MAX_ATTEMPTS` or `AWS_RETRY_MODE` say otherwise, and every request has the agent's network timeout ([`crate::net::timeout`]) to get its
//! answer, so that a stalled server is a retried failure, not a build that hangs.

/// How many times a request is tried in all, unless `AWS_MAX_ATTEMPTS` or `AWS_RETRY_MODE` is
/// set.
pub const MAX_ATTEMPTS: u32 = 5;

/// The SDK's own connect timeout (3.1 s), kept when the network timeout is longer.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(3100);

/// The shared SDK configuration from the environment; `default_region` is used when neither the
/// environment nor the profile names a region.
///
/// Loading reads files and variables only; the credentials are fetched on the first request.
pub async fn sdk_config(default_region: &str) -> aws_config::SdkConfig {
    let region = aws_config::meta::region::RegionProviderChain::default_provider()
        .or_else(aws_config::Region::new(default_region.to_string()));
    // The agent checks the variable up front; a bad value here is the default.
    let timeout = crate::net::timeout().unwrap_or(crate::net::DEFAULT_TIMEOUT);
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(crate::net::connect_timeout(timeout).min(CONNECT_TIMEOUT))
        .read_timeout(timeout)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .timeout_config(timeouts);
    let chosen = ["AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if !chosen {
        loader = loader.retry_config(
            aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS),
        );
    }
    loader.load().await
}
