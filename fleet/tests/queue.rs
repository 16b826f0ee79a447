//! The job queue against moto's SQS.

mod common;

use std::time::{Duration, SystemTime};

use buildagent_fleet::queue::{JobQueue, QueueError};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn messages_come_with_their_receive_count_and_send_time() {
    let queue = common::queue(30).await;
    let before = SystemTime::now() - Duration::from_secs(2);
    let id = queue.send("{\"a\":1}").await.unwrap();
    let got = queue.receive(10, WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    let message = &got[0];
    assert_eq!(message.body, "{\"a\":1}");
    assert_eq!(message.message_id, id);
    assert_eq!(message.receive_count, 1);
    let sent = message.sent_at.expect("SentTimestamp");
    assert!(sent >= before && sent <= SystemTime::now() + Duration::from_secs(2));
    assert!(!message.receipt.is_empty());

    // Released: visible at once, received again with the count grown.
    queue.release(&message.receipt).await.unwrap();
    let again = queue.receive(10, WAIT).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, id);
    assert_eq!(again[0].receive_count, 2);

    // Deleted: gone.
    queue.delete(&again[0].receipt).await.unwrap();
    queue.release(&again[0].receipt).await.ok();
    assert!(queue
        .receive(10, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_extended_message_stays_hidden() {
    // A visibility timeout of 1 s: without the extension the message is back after it.
    let queue = common::queue(1).await;
    queue.send("job").await.unwrap();
    let got = queue.receive(1, WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    queue
        .extend(&got[0].receipt, Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty(),
        "an extended message was delivered again"
    );
    // Released, it comes back at once.
    queue.release(&got[0].receipt).await.unwrap();
    let again = queue.receive(10, WAIT).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, "job");
}

#[tokio::test]
async fn receive_takes_at_most_max() {
    let queue = common::queue(30).await;
    for i in 0..3 {
        queue.send(&format!("m{i}")).await.unwrap();
    }
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let got = queue.receive(1, WAIT).await.unwrap();
        assert!(got.len() <= 1);
        bodies.extend(got.into_iter().map(|m| m.body));
        if bodies.len() == 3 {
            break;
        }
    }
    bodies.sort();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
}

#[tokio::test]
async fn queues_open_by_name_and_by_url() {
    let by_url = common::queue(42).await;
    assert_eq!(
        by_url.visibility_timeout().await.unwrap(),
        Duration::from_secs(42)
    );
    let name = by_url.url().rsplit('/').next().unwrap().to_string();
    let client = aws_sdk_sqs::Client::new(&common::sdk_config());
    let by_name = JobQueue::open(client.clone(), &name).await.unwrap();
    assert_eq!(by_name.url(), by_url.url());
    by_name.send("hello").await.unwrap();
    assert_eq!(by_url.receive(1, WAIT).await.unwrap()[0].body, "hello");

    let missing = common::unique("missing");
    assert_eq!(
        JobQueue::open(client, &missing).await.unwrap_err(),
        QueueError::NotFound(missing.clone())
    );
}
