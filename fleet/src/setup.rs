//! `buildagent fleet init`: the AWS resources a fleet needs, created idempotently.
//!
//! - the job queue, with the visibility timeout the workers' leases are based on;
//! - its dead-letter queue `<queue>-dlq` (14 days' retention), and the queue's redrive policy
//!   that moves a message there after `maxReceiveCount` receives: a job that kills its worker
//!   again and again ends there instead of circling forever;
//! - the records' table (key `id`, on-demand capacity);
//! - the bucket for sources and artifacts;
//! - a log group, when one is named (by default each project logs to `/aws/codebuild/<project>`,
//!   which the workers' log sink creates when it is missing).
//!
//! Each resource that exists already is kept; the queue's attributes and redrive policy are set
//! again, so running `init` twice is harmless, and running it with another visibility timeout
//! or receive count updates the queue. A table that exists with another key is an error.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::describe;

/// The SDK clients of a fleet's services.
#[derive(Clone, Debug)]
pub struct Clients {
    /// SQS, for the job queue.
    pub sqs: aws_sdk_sqs::Client,
    /// DynamoDB, for the records.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// S3, for sources and artifacts (path-style addressing when an endpoint is configured).
    pub s3: aws_sdk_s3::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// The region the clients use.
    pub region: String,
}

impl Clients {
    /// Every client configured from the environment as the agent's other AWS clients are
    /// (`buildagent_runner::aws::sdk_config`: credentials chain, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`...); `default_region` when neither the environment nor the profile
    /// names one.
    pub async fn from_env(default_region: &str) -> Clients {
        let config = buildagent_runner::aws::sdk_config(default_region).await;
        let s3 = buildagent_runner::s3::S3Client::from_env(default_region)
            .await
            .sdk()
            .clone();
        Clients {
            sqs: aws_sdk_sqs::Client::new(&config),
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            s3,
            logs: aws_sdk_cloudwatchlogs::Client::new(&config),
            region: config
                .region()
                .map_or_else(|| default_region.to_string(), |r| r.to_string()),
        }
    }
}

/// What `fleet init` creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSpec {
    /// The job queue's name (the dead-letter queue is `<queue>-dlq`).
    pub queue: String,
    /// The table's name.
    pub table: String,
    /// The bucket's name.
    pub bucket: String,
    /// A log group to create (`None`: the per-project default groups, made by the workers).
    pub log_group: Option<String>,
    /// The queue's visibility timeout: how long a message stays hidden before its worker's first
    /// extension, and how long a silent worker's build waits before another takes it over.
    pub visibility_timeout: Duration,
    /// After how many receives a message moves to the dead-letter queue.
    pub max_receive_count: u32,
}

impl FleetSpec {
    /// The default visibility timeout (5 minutes).
    pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(300);
    /// The default receive count before the dead-letter queue (3).
    pub const DEFAULT_MAX_RECEIVE_COUNT: u32 = 3;

    /// The name of the dead-letter queue.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}-dlq", self.queue)
    }

    /// Checks the names and numbers before anything is made (as AWS would refuse them).
    pub fn check(&self) -> Result<(), SetupError> {
        let spec = self;
        let bad = |resource: String, message: &str| {
            Err(SetupError {
                resource,
                message: message.to_string(),
            })
        };
        let queue_ok = |name: &str| {
            !name.is_empty()
                && name.len() <= 80
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        // The dead-letter queue's name is 4 longer.
        if !queue_ok(&spec.queue) || spec.queue.len() > 76 {
            return bad(
                format!("queue {}", spec.queue),
                "a queue name is 1 to 76 letters, digits, `-` and `_` (SQS allows 80; `-dlq` is added for the dead-letter queue)",
            );
        }
        if spec.table.len() < 3
            || spec.table.len() > 255
            || !spec
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(
                format!("table {}", spec.table),
                "a table name is 3 to 255 letters, digits, `-`, `_` and `.`",
            );
        }
        if spec.bucket.len() < 3
            || spec.bucket.len() > 63
            || !spec
                .bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return bad(
                format!("bucket {}", spec.bucket),
                "a bucket name is 3 to 63 lower-case letters, digits, `-` and `.`",
            );
        }
        if !(1..=1000).contains(&spec.max_receive_count) {
            return bad(
                format!("queue {}", spec.queue),
                "the receive count before the dead-letter queue is 1 to 1000",
            );
        }
        if spec.visibility_timeout > Duration::from_secs(43_200) {
            return bad(
                format!("queue {}", spec.queue),
                "the visibility timeout is at most 12h",
            );
        }
        Ok(())
    }
}

/// What `fleet init` made (or found).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    /// The job queue's URL.
    pub queue_url: String,
    /// The dead-letter queue's URL.
    pub dead_letter_url: String,
    /// The dead-letter queue's ARN (the redrive policy's target).
    pub dead_letter_arn: String,
    /// The table.
    pub table: String,
    /// The bucket.
    pub bucket: String,
    /// The log group, when one was named.
    pub log_group: Option<String>,
    /// One line per resource: `created queue jobs`, `kept table records`...
    pub actions: Vec<String>,
}

/// A resource that could not be created or checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {message}")]
pub struct SetupError {
    /// The resource (`queue jobs`, `table records`...).
    pub resource: String,
    /// What went wrong.
    pub message: String,
}

/// SQS's 14 days, the longest retention: what is in the dead-letter queue is for people to look
/// at, and they may take a while.
const DEAD_LETTER_RETENTION: &str = "1209600";

/// Creates (or keeps) every resource of `spec`.
pub async fn init(clients: &Clients, spec: &FleetSpec) -> Result<Fleet, SetupError> {
    spec.check()?;
    let mut actions = Vec::new();
    let dlq_name = spec.dead_letter_queue();
    let (dead_letter_url, made) = queue(
        &clients.sqs,
        &dlq_name,
        &[(
            QueueAttributeName::MessageRetentionPeriod,
            DEAD_LETTER_RETENTION.to_string(),
        )],
    )
    .await?;
    actions.push(action(made, "dead-letter queue", &dlq_name));
    let dead_letter_arn = queue_arn(&clients.sqs, &dlq_name, &dead_letter_url).await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": spec.max_receive_count,
    })
    .to_string();
    let (queue_url, made) = queue(
        &clients.sqs,
        &spec.queue,
        &[
            (
                QueueAttributeName::VisibilityTimeout,
                spec.visibility_timeout.as_secs().to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive),
        ],
    )
    .await?;
    actions.push(action(made, "queue", &spec.queue));
    actions.push(action(
        ensure_table(&clients.dynamodb, &spec.table).await?,
        "table",
        &spec.table,
    ));
    actions.push(action(
        bucket(&clients.s3, &spec.bucket, &clients.region).await?,
        "bucket",
        &spec.bucket,
    ));
    if let Some(group) = &spec.log_group {
        actions.push(action(
            log_group(&clients.logs, group).await?,
            "log group",
            group,
        ));
    }
    Ok(Fleet {
        queue_url,
        dead_letter_url,
        dead_letter_arn,
        table: spec.table.clone(),
        bucket: spec.bucket.clone(),
        log_group: spec.log_group.clone(),
        actions,
    })
}

fn action(made: bool, what: &str, name: &str) -> String {
    format!("{} {what} {name}", if made { "created" } else { "kept" })
}

/// The queue `name`, created with `attributes` when missing, else given them; its URL, and
/// whether it was created.
async fn queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> Result<(String, bool), SetupError> {
    let error = |message: String| SetupError {
        resource: format!("queue {name}"),
        message,
    };
    match sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => {
            let url = out
                .queue_url()
                .ok_or_else(|| error("GetQueueUrl answered no URL".into()))?
                .to_string();
            let mut set = sqs.set_queue_attributes().queue_url(&url);
            for (key, value) in attributes {
                set = set.attributes(key.clone(), value);
            }
            set.send()
                .await
                .map_err(|e| error(describe(&e.into_service_error())))?;
            Ok((url, false))
        }
        Err(e) => {
            let e = e.into_service_error();
            if !e.is_queue_does_not_exist() {
                return Err(error(describe(&e)));
            }
            let mut create = sqs.create_queue().queue_name(name);
            for (key, value) in attributes {
                create = create.attributes(key.clone(), value);
            }
            let out = create
                .send()
                .await
                .map_err(|e| error(describe(&e.into_service_error())))?;
            let url = out
                .queue_url()
                .ok_or_else(|| error("CreateQueue answered no URL".into()))?;
            Ok((url.to_string(), true))
        }
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, name: &str, url: &str) -> Result<String, SetupError> {
    let error = |message: String| SetupError {
        resource: format!("queue {name}"),
        message,
    };
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| error(describe(&e.into_service_error())))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| error("GetQueueAttributes answered no QueueArn".into()))
}

/// The table `name` (key `id`, a string, billed per request), created when missing and waited
/// for until it is usable; whether it was created. An existing table with another key is an
/// error.
pub async fn ensure_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<bool, SetupError> {
    let error = |message: String| SetupError {
        resource: format!("table {name}"),
        message,
    };
    match dynamodb.describe_table().table_name(name).send().await {
        Ok(out) => {
            let keys: Vec<(String, String)> = out
                .table()
                .map(|t| t.key_schema())
                .unwrap_or_default()
                .iter()
                .map(|k| {
                    (
                        k.attribute_name().to_string(),
                        k.key_type().as_str().to_string(),
                    )
                })
                .collect();
            if keys != [("id".to_string(), "HASH".to_string())] {
                return Err(error(format!(
                    "the table exists with another key ({}); a fleet's table has the partition key `id` alone",
                    keys.iter()
                        .map(|(n, t)| format!("{n} {t}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Ok(false)
        }
        Err(e) => {
            let e = e.into_service_error();
            if !e.is_resource_not_found_exception() {
                return Err(error(describe(&e)));
            }
            let attribute = AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| error(e.to_string()))?;
            let key = KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .map_err(|e| error(e.to_string()))?;
            match dynamodb
                .create_table()
                .table_name(name)
                .attribute_definitions(attribute)
                .key_schema(key)
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await
            {
                Ok(_) => {}
                // Another init at the same time: theirs is as good as ours.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_resource_in_use_exception()) =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(error(describe(&e.into_service_error()))),
            }
            wait_active(dynamodb, name).await.map_err(error)?;
            Ok(true)
        }
    }
}

/// Waits (up to 2 minutes) for a new table to become usable.
async fn wait_active(dynamodb: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), String> {
    for _ in 0..240 {
        let out = dynamodb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| describe(&e.into_service_error()))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err("the new table did not become ACTIVE within 2 minutes".into())
}

/// The bucket `name`, created when missing; whether it was created.
async fn bucket(s3: &aws_sdk_s3::Client, name: &str, region: &str) -> Result<bool, SetupError> {
    let error = |message: String| SetupError {
        resource: format!("bucket {name}"),
        message,
    };
    match s3.head_bucket().bucket(name).send().await {
        Ok(_) => return Ok(false),
        Err(e) => {
            let e = e.into_service_error();
            if !e.is_not_found() {
                return Err(error(describe(&e)));
            }
        }
    }
    let mut create = s3.create_bucket().bucket(name);
    // us-east-1 is the one region that refuses to be named.
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = e.into_service_error();
            if e.is_bucket_already_owned_by_you() {
                Ok(false)
            } else if e.is_bucket_already_exists() {
                Err(error(
                    "the name is taken by another account (bucket names are global)".into(),
                ))
            } else {
                Err(error(describe(&e)))
            }
        }
    }
}

/// The log group `name`, created when missing; whether it was created.
async fn log_group(logs: &aws_sdk_cloudwatchlogs::Client, name: &str) -> Result<bool, SetupError> {
    match logs.create_log_group().log_group_name(name).send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = e.into_service_error();
            if e.is_resource_already_exists_exception() {
                Ok(false)
            } else {
                Err(SetupError {
                    resource: format!("log group {name}"),
                    message: describe(&e),
                })
            }
        }
    }
}
