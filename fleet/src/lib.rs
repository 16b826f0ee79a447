//! The buildagent fleet: any number of workers, on any number of machines, take CodeBuild-shaped
//! build jobs from an Amazon SQS queue, run them with `buildagent-runner`, and keep each build's
//! record in a DynamoDB table that any client reads.
//!
//! - [`job`]: the message, shaped like CodeBuild's `StartBuild` request, and its JSON Schema.
//! - [`queue`]: the SQS queue of jobs ([`queue::JobQueue`]).
//! - [`record`]: the builds' records in DynamoDB ([`record::RecordStore`]), with the conditional
//!   claim that makes each build run once.
//! - [`worker`]: the worker that takes jobs, claims and runs their builds, and keeps their
//!   records ([`worker::Worker`]).

#![deny(missing_docs)]

pub mod job;
pub mod queue;
pub mod record;
pub mod worker;
