//! `fleet init` against moto: every resource, twice.

mod common;

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use buildagent_fleet::setup::{init, FleetSpec};

#[tokio::test]
async fn init_creates_everything_once_and_updates_the_queue() {
    let clients = common::clients();
    let name = common::unique("fleet");
    let mut spec = FleetSpec {
        queue: name.clone(),
        table: name.clone(),
        bucket: name.clone(),
        log_group: Some(format!("/buildagent/{name}")),
        visibility_timeout: Duration::from_secs(300),
        max_receive_count: 3,
    };
    let first = init(&clients, &spec).await.unwrap();
    assert!(
        first.actions.iter().all(|a| a.starts_with("created ")),
        "{:?}",
        first.actions
    );
    assert_eq!(first.actions.len(), 5);
    assert!(first.queue_url.ends_with(&name));
    assert!(first.dead_letter_url.ends_with(&format!("{name}-dlq")));

    spec.visibility_timeout = Duration::from_secs(120);
    spec.max_receive_count = 5;
    let second = init(&clients, &spec).await.unwrap();
    assert!(
        second.actions.iter().all(|a| a.starts_with("kept ")),
        "{:?}",
        second.actions
    );
    assert_eq!(second.queue_url, first.queue_url);

    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&first.queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attributes = attributes.attributes().unwrap();
    assert_eq!(attributes[&QueueAttributeName::VisibilityTimeout], "120");
    let redrive: serde_json::Value =
        serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(
        redrive["deadLetterTargetArn"],
        first.dead_letter_arn.as_str()
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "5"
    );

    let table = clients
        .dynamodb
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        table.table().unwrap().key_schema()[0].attribute_name(),
        "id"
    );
    clients.s3.head_bucket().bucket(&name).send().await.unwrap();
}

#[tokio::test]
async fn bad_names_are_refused_before_anything_is_made() {
    let clients = common::clients();
    let spec = FleetSpec {
        queue: "jobs".into(),
        table: "t".into(),
        bucket: "b".into(),
        log_group: None,
        visibility_timeout: Duration::from_secs(300),
        max_receive_count: 3,
    };
    let err = init(&clients, &spec).await.unwrap_err();
    assert_eq!(err.resource, "table t");
    let spec = FleetSpec {
        queue: "has space".into(),
        ..spec
    };
    assert_eq!(
        init(&clients, &spec).await.unwrap_err().resource,
        "queue has space"
    );
}
