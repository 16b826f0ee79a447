//! The AWS SDK's shared configuration, loaded once per client the way every AWS tool loads it.
//!
//! [`sdk_config`] is aws-config's standard chain: credentials from the environment, the
//! profile (`AWS_PROFILE`, `~/.aws/config`), SSO, a credential process, web identity, the ECS or
//! EC2 instance role; the region of `AWS_REGION` (or the profile); and the standard endpoint
//! settings (`AWS_ENDPOINT_URL`, and per service `AWS_ENDPOINT_URL_<SERVICE>`, which each
//! service's client reads from it). Every AWS client of the agent (S3, ECR) starts from it.

/// The shared configuration; `default_region` is used when neither the environment nor the
/// profile names a region.
pub async fn sdk_config(default_region: &str) -> aws_config::SdkConfig {
    let region = aws_config::meta::region::RegionProviderChain::default_provider()
        .or_else(aws_config::Region::new(default_region.to_string()));
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .load()
        .await
}
