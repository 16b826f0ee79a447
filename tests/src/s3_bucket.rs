//! A fresh bucket on the tests' moto with an SDK client straight to it (never through the agent
//! or a fault proxy), for tests to set up sources and to look at what the agent stored.

use crate::services::{self, Aws};

/// A bucket of its own for one test; see the [module documentation](self).
pub struct Bucket {
    /// Its name: the test's name, the process id and the time, so reruns never collide.
    pub name: String,
    /// An S3 client for moto.
    pub client: aws_sdk_s3::Client,
    /// A runtime to block on the client's requests from a plain `#[test]`.
    pub runtime: tokio::runtime::Runtime,
    /// Where moto is, and its credentials.
    pub aws: Aws,
}

impl Bucket {
    /// Creates a bucket named after `test` (lower case letters, digits and `-`).
    pub fn new(test: &str) -> Bucket {
        let aws = services::aws();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(&aws.endpoint)
            .region(aws_sdk_s3::config::Region::new(aws.region.clone()))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                &aws.access_key_id,
                &aws.secret_access_key,
                None,
                None,
                "test",
            ))
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_nanos();
        let name = format!("{test}-{}-{nanos}", std::process::id());
        runtime
            .block_on(client.create_bucket().bucket(&name).send())
            .expect("create a bucket");
        Bucket {
            name,
            client,
            runtime,
            aws,
        }
    }
}
