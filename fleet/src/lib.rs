//! The buildagent fleet: any number of workers, on any number of machines, take CodeBuild-shaped
//! build jobs from an Amazon SQS queue, run them with `buildagent-runner`, and keep each build's
//! record in a DynamoDB table that any client reads.
//!
//! - [`job`]: the message, shaped like CodeBuild's `StartBuild` request, and its JSON Schema.

#![deny(missing_docs)]

pub mod job;
