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

/// The shared SDK configuration from the environment; `default_region` is used when neither the
/// environment nor the profile names a region.
///
/// Loading reads files and variables only; the credentials are fetched on the first request.
pub async fn sdk_config(default_region: &str) -> aws_config::SdkConfig {
    let region = aws_config::meta::region::RegionProviderChain::default_provider()
        .or_else(aws_config::Region::new(default_region.to_string()));
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .load()
        .await
}
