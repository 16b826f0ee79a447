//! Moto for the fleet crate's tests: its endpoint (checked, never skipped), SDK clients pointed
//! at it, and fresh tables and queues named with a uuid so that tests run in parallel.

#![allow(dead_code)]

use std::net::TcpStream;
use std::time::Duration;

use buildagent_fleet::queue::JobQueue;
use buildagent_fleet::record::RecordStore;

/// Moto's endpoint (`BUILDAGENT_TEST_AWS_ENDPOINT`, default `http://127.0.0.1:45000`, as
/// `scripts/services.sh` starts it), after checking that it accepts connections: a missing moto
/// is a loud failure.
pub fn endpoint() -> String {
    let endpoint = std::env::var("BUILDAGENT_TEST_AWS_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:45000".to_string());
    let authority = endpoint
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("{endpoint}: the tests' moto speaks plain http://"));
    let addr = authority
        .parse()
        .unwrap_or_else(|e| panic!("{authority}: not an address: {e}"));
    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        panic!("moto is not running on {authority}: run scripts/services.sh (scripts/test.sh starts it) ({e})");
    }
    endpoint
}

/// An SDK configuration for moto.
pub fn sdk_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "test"),
        ))
        .build()
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A new table (key `id`, on demand) and its store.
pub async fn store() -> RecordStore {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config());
    let table = unique("records");
    buildagent_fleet::setup::ensure_table(&client, &table)
        .await
        .expect("create a table on moto");
    RecordStore::new(client, table)
}

/// A new queue with this visibility timeout (seconds), opened by URL.
pub async fn queue(visibility: u32) -> JobQueue {
    let client = aws_sdk_sqs::Client::new(&sdk_config());
    let name = unique("jobs");
    let out = client
        .create_queue()
        .queue_name(&name)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            visibility.to_string(),
        )
        .send()
        .await
        .expect("create a queue on moto");
    JobQueue::open(client, out.queue_url().expect("a queue URL"))
        .await
        .expect("open the queue")
}

/// Every fleet client, for moto.
pub fn clients() -> buildagent_fleet::setup::Clients {
    let config = sdk_config();
    buildagent_fleet::setup::Clients {
        sqs: aws_sdk_sqs::Client::new(&config),
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        ),
        logs: aws_sdk_cloudwatchlogs::Client::new(&config),
        region: "us-east-1".into(),
    }
}
