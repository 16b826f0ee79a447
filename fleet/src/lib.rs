//! The buildagent fleet: any number of workers, on any number of machines, take CodeBuild-shaped
//! build jobs from an Amazon SQS queue, run them with `buildagent-runner`, and keep each build's
//! record in a DynamoDB table that any client reads.
//!
//! - [`job`]: the message, shaped like CodeBuild's `StartBuild` request, and its JSON Schema.
//! - [`queue`]: the SQS queue of jobs ([`queue::JobQueue`]).
//! - [`record`]: the builds' records in DynamoDB ([`record::RecordStore`]), with the conditional
//!   claim that makes each build run once.
//! - [`setup`]: `fleet init`, the queue, dead-letter queue, table, bucket and log group.
//! - [`worker`]: the worker that takes jobs, claims and runs their builds, and keeps their
//!   records ([`worker::Worker`]).

#![deny(missing_docs)]

pub mod job;
pub mod queue;
pub mod record;
pub mod setup;
pub mod worker;

/// What an AWS service said (`Code: message`), or else why it could not be asked: the chain of
/// causes, each once (the SDK's own rendering ends with a debug dump of the whole error).
pub(crate) fn describe(
    error: &(impl aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error),
) -> String {
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => return format!("{code}: {message}"),
        (Some(code), None) => return code.to_string(),
        _ => {}
    }
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}
