//! The job queue: an Amazon SQS standard queue of job messages.
//!
//! A worker [receives](JobQueue::receive) with a long poll, keeps a message hidden while its
//! build runs by [extending](JobQueue::extend) its visibility, [deletes](JobQueue::delete) it
//! once the build's final record is written, and [releases](JobQueue::release) it (visible
//! again at once) when it will not run it. A message whose worker dies becomes visible again
//! after the visibility timeout and goes to another worker; after the redrive policy's
//! `maxReceiveCount` receives it moves to the dead-letter queue.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

use crate::describe;

/// A queue operation that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// No queue has this name (or URL).
    #[error("queue `{0}` does not exist")]
    NotFound(String),
    /// SQS refused or could not be reached.
    #[error("queue {queue}: {op}: {message}")]
    Service {
        /// The queue's URL or name.
        queue: String,
        /// What was being done.
        op: String,
        /// What the service (or the connection) said.
        message: String,
    },
}

/// One received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The body (a job's JSON, or anything a producer sent).
    pub body: String,
    /// The receipt handle, for [`JobQueue::extend`], [`JobQueue::release`] and
    /// [`JobQueue::delete`].
    pub receipt: String,
    /// The message's id.
    pub message_id: String,
    /// How many times it was received, this time included (`ApproximateReceiveCount`).
    pub receive_count: u32,
    /// When it was sent (`SentTimestamp`).
    pub sent_at: Option<SystemTime>,
}

/// An SQS queue of jobs.
#[derive(Clone, Debug)]
pub struct JobQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

/// SQS's longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(20);

/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);

impl JobQueue {
    /// The queue `name_or_url`: a queue URL (`http://` or `https://`, used as it is) or a
    /// queue name (looked up with `GetQueueUrl`).
    pub async fn open(
        client: aws_sdk_sqs::Client,
        name_or_url: &str,
    ) -> Result<JobQueue, QueueError> {
        if name_or_url.starts_with("http://") || name_or_url.starts_with("https://") {
            return Ok(JobQueue {
                client,
                url: name_or_url.to_string(),
            });
        }
        let out = client
            .get_queue_url()
            .queue_name(name_or_url)
            .send()
            .await
            .map_err(|e| {
                let e = e.into_service_error();
                if e.is_queue_does_not_exist() {
                    QueueError::NotFound(name_or_url.to_string())
                } else {
                    QueueError::Service {
                        queue: name_or_url.to_string(),
                        op: "looking up its URL".into(),
                        message: describe(&e),
                    }
                }
            })?;
        let url = out
            .queue_url()
            .ok_or_else(|| QueueError::NotFound(name_or_url.to_string()))?
            .to_string();
        Ok(JobQueue { client, url })
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client.
    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    fn error(&self, op: &str, e: impl ProvideErrorMetadata + std::error::Error) -> QueueError {
        if e.code() == Some("AWS.SimpleQueueService.NonExistentQueue")
            || e.code() == Some("QueueDoesNotExist")
        {
            return QueueError::NotFound(self.url.clone());
        }
        QueueError::Service {
            queue: self.url.clone(),
            op: op.to_string(),
            message: describe(&e),
        }
    }

    /// The queue's visibility timeout (`GetQueueAttributes`).
    pub async fn visibility_timeout(&self) -> Result<Duration, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map_err(|e| self.error("reading its visibility timeout", e.into_service_error()))?;
        let text = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout))
            .ok_or_else(|| QueueError::Service {
                queue: self.url.clone(),
                op: "reading its visibility timeout".into(),
                message: "the answer has no VisibilityTimeout".into(),
            })?;
        text.parse()
            .map(Duration::from_secs)
            .map_err(|_| QueueError::Service {
                queue: self.url.clone(),
                op: "reading its visibility timeout".into(),
                message: format!("VisibilityTimeout `{text}` is not a number of seconds"),
            })
    }

    /// Sends a message; returns its id.
    pub async fn send(&self, body: &str) -> Result<String, QueueError> {
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| self.error("sending a message", e.into_service_error()))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    /// Receives at most `max` messages (clamped to 1..=10), waiting up to `wait` (at most 20 s,
    /// whole seconds) for the first one: a long poll. Each comes with its receive count and send
    /// time.
    pub async fn receive(&self, max: i32, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let wait = wait.min(MAX_WAIT).as_secs();
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(i32::try_from(wait).unwrap_or(20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| self.error("receiving messages", e.into_service_error()))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| {
                let attribute = |name: MessageSystemAttributeName| {
                    m.attributes().and_then(|a| a.get(&name)).cloned()
                };
                Received {
                    body: m.body().unwrap_or_default().to_string(),
                    receipt: m.receipt_handle().unwrap_or_default().to_string(),
                    message_id: m.message_id().unwrap_or_default().to_string(),
                    receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1),
                    sent_at: attribute(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|t| t.parse().ok())
                        .map(|ms: u64| UNIX_EPOCH + Duration::from_millis(ms)),
                }
            })
            .collect())
    }

    /// Keeps a received message hidden for `visibility` from now (at most 12 hours, whole
    /// seconds; SQS also caps a message's total at 12 hours since its receive).
    pub async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        self.change_visibility(
            receipt,
            visibility.min(MAX_VISIBILITY),
            "extending a message's visibility",
        )
        .await
    }

    /// Makes a received message visible again at once (visibility 0), for another worker.
    pub async fn release(&self, receipt: &str) -> Result<(), QueueError> {
        self.change_visibility(receipt, Duration::ZERO, "releasing a message")
            .await
    }

    async fn change_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
        op: &str,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(i32::try_from(visibility.as_secs()).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| self.error(op, e.into_service_error()))?;
        Ok(())
    }

    /// Deletes a received message (its build is recorded as finished).
    pub async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| self.error("deleting a message", e.into_service_error()))?;
        Ok(())
    }
}
