//! The fleet's client commands: `fleet init`, `submit`, `status`, `stop`, `list`, and `logs`
//! of a build id. The fleet itself (the job, the records, the queue) is `buildagent-fleet`;
//! these modules are its command line.

pub mod follow;
pub mod init;
pub mod status;
pub mod submit;
pub mod worker;

use std::path::PathBuf;

use anyhow::Context;
use buildagent_fleet::queue::{JobQueue, QueueError};
use buildagent_fleet::record::{RecordError, RecordStore};
use buildagent_fleet::setup::Clients;
use clap::{Args, Subcommand, ValueEnum};

use crate::run::invalid;

/// The account in build ARNs (the fleet does not ask STS whose credentials it has).
pub const ACCOUNT: &str = "000000000000";

/// The region the clients use when neither the environment nor the profile names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// `buildagent fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

/// `buildagent fleet <command>`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create, idempotently, the queue with its dead-letter queue and redrive policy, the
    /// records' table, the bucket and a log group; print what `worker` and `submit` take.
    Init(InitArgs),
}

/// `buildagent fleet init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The job queue's name (its dead-letter queue is NAME-dlq).
    #[arg(long, value_name = "NAME", env = "BUILDAGENT_QUEUE")]
    pub queue: Option<String>,

    /// The records' table.
    #[arg(long, value_name = "NAME", env = "BUILDAGENT_TABLE")]
    pub table: Option<String>,

    /// The bucket for sources (`submit --source-bucket`) and artifacts.
    #[arg(long, value_name = "NAME")]
    pub bucket: String,

    /// Also create this log group (default: none; each project logs to
    /// `/aws/codebuild/<project>`, which the workers create).
    #[arg(long, value_name = "NAME")]
    pub log_group: Option<String>,

    /// The queue's visibility timeout: the lease a worker extends while its build runs, and how
    /// long a dead worker's build waits before another takes it over.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub visibility_timeout: String,

    /// After how many receives a message moves to the dead-letter queue.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_receive_count: u32,
}

/// `buildagent submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job queue: its URL or its name.
    #[arg(long, value_name = "URL|NAME", env = "BUILDAGENT_QUEUE")]
    pub queue: Option<String>,

    /// The records' table.
    #[arg(long, value_name = "NAME", env = "BUILDAGENT_TABLE")]
    pub table: Option<String>,

    /// Where a local source directory is uploaded, as `s3://BUCKET/sources/<uuid>.zip`.
    #[arg(long, value_name = "BUCKET")]
    pub source_bucket: Option<String>,

    /// The project (default: the source's name: the directory's, the repository's, the zip's).
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,

    /// Print the build's log as it runs, then exit with its status as `run` does: 0 SUCCEEDED,
    /// 1 FAILED, 3 FAULT, 124 TIMED_OUT, 130 STOPPED.
    #[arg(short, long)]
    pub follow: bool,

    /// The source (default `.`): a directory (zipped to --source-bucket), a Git URL,
    /// `s3://BUCKET/KEY.zip` or `s3://BUCKET/PREFIX/`; repeat as `-s ID:SOURCE` for secondary
    /// sources.
    #[arg(short = 's', long = "source", value_name = "SOURCE")]
    pub sources: Vec<String>,

    /// The version of the primary Git or S3 source (`sourceVersion`).
    #[arg(long, value_name = "REF")]
    pub source_version: Option<String>,

    /// The version of a secondary source, as `ID=REF`; repeat for several.
    #[arg(long, value_name = "ID=REF")]
    pub secondary_source_version: Vec<String>,

    /// The buildspec: a local file, whose text is sent in the job, or else a path in the source.
    #[arg(short = 'b', long = "buildspec", value_name = "FILE")]
    pub buildspec: Option<PathBuf>,

    /// A variable of the build (repeatable; PLAINTEXT).
    #[arg(long = "env-var", value_name = "NAME=VALUE")]
    pub env_vars: Vec<String>,

    /// A variable read from SSM Parameter Store when the build starts (repeatable; masked).
    #[arg(long = "parameter-store-var", value_name = "NAME=PARAMETER")]
    pub parameter_store_vars: Vec<String>,

    /// A variable read from Secrets Manager when the build starts, `NAME=SECRET[:KEY[:STAGE[:ID]]]`
    /// (repeatable; masked).
    #[arg(long = "secrets-manager-var", value_name = "NAME=REFERENCE")]
    pub secrets_manager_vars: Vec<String>,

    /// The build image (the worker runs it with its docker executor).
    #[arg(short = 'i', long = "image", value_name = "IMAGE")]
    pub image: Option<String>,

    /// With -i: a privileged build container.
    #[arg(short = 'd', long = "privileged", requires = "image")]
    pub privileged: bool,

    /// The build timeout, in whole minutes from 5 to 2160 as CodeBuild (`30m`, `2h`; default
    /// 60m).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Upload the artifacts to `s3://BUCKET/PREFIX`.
    #[arg(short = 'a', long = "artifacts", value_name = "s3://BUCKET/PREFIX")]
    pub artifacts: Option<String>,

    /// With -a: the artifacts under a folder named after the build's uuid, or not.
    #[arg(long, value_enum, default_value_t = Namespace::None, requires = "artifacts")]
    pub artifacts_namespace: Namespace,

    /// With -a: one zip, or the files as they are.
    #[arg(long, value_enum, default_value_t = Packaging::Zip, requires = "artifacts")]
    pub artifacts_packaging: Packaging,

    /// How many commits of Git history to fetch (0: all).
    #[arg(long, value_name = "N")]
    pub git_clone_depth: Option<u32>,

    /// Also fetch Git submodules.
    #[arg(long)]
    pub git_submodules: bool,

    /// The log group (default `/aws/codebuild/<project>`).
    #[arg(long, value_name = "NAME")]
    pub log_group: Option<String>,

    /// Also write the log to S3, `BUCKET/PREFIX` (CodeBuild's `s3Logs.location`).
    #[arg(long, value_name = "BUCKET/PREFIX")]
    pub s3_logs: Option<String>,

    /// An idempotency token: a repeat of the same submit within 5 minutes prints the first
    /// build's id and starts nothing; with other parameters it is refused (CodeBuild's rule).
    #[arg(long, value_name = "TOKEN")]
    pub idempotency_token: Option<String>,
}

/// `--artifacts-namespace` of `submit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Namespace {
    /// `PREFIX/NAME`.
    None,
    /// `PREFIX/<build uuid>/NAME`.
    BuildId,
}

/// `--artifacts-packaging` of `submit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Packaging {
    /// A zip file.
    Zip,
    /// The files as they are.
    None,
}

/// `--format` of `status` and `list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Table,
    /// JSON shaped like CodeBuild's BatchGetBuilds.
    Json,
}

/// `buildagent status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The records' table.
    #[arg(long, value_name = "NAME", env = "BUILDAGENT_TABLE")]
    pub table: Option<String>,

    /// The output: a table, or `{"builds": [...], "buildsNotFound": [...]}` as BatchGetBuilds.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,

    /// The build ids (`project:uuid`).
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
}

/// `buildagent stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// The records' table.
    #[arg(long, value_name = "NAME", env = "BUILDAGENT_TABLE")]
    pub table: Option<String>,

    /// The build id.
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `buildagent list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The records' table.
    #[arg(long, value_name = "NAME", env = "BUILDAGENT_TABLE")]
    pub table: Option<String>,

    /// Only this project's builds.
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,

    /// Only builds with this status (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, FAULT, TIMED_OUT,
    /// STOPPED).
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,

    /// The output: a table, or `{"builds": [...]}` with BatchGetBuilds' fields.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// The value of a required flag that may also come from the environment.
pub fn required<'a>(
    value: &'a Option<String>,
    flag: &str,
    env: &str,
    what: &str,
) -> anyhow::Result<&'a str> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(invalid(format!("missing {flag} (or {env}): {what}"))),
    }
}

/// The table named by `--table` or `BUILDAGENT_TABLE`.
pub fn table(value: &Option<String>) -> anyhow::Result<&str> {
    required(
        value,
        "--table",
        "BUILDAGENT_TABLE",
        "the DynamoDB table of the fleet's build records",
    )
}

/// The queue named by `--queue` or `BUILDAGENT_QUEUE`.
pub fn queue(value: &Option<String>) -> anyhow::Result<&str> {
    required(
        value,
        "--queue",
        "BUILDAGENT_QUEUE",
        "the SQS queue of the fleet's jobs (its URL or name)",
    )
}

/// A current-thread runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A record error as the command line shows it: a missing table or build is bad input (exit
/// status 2), the rest a fault (3).
pub fn record_error(e: RecordError) -> anyhow::Error {
    match e {
        RecordError::NoTable(_) => invalid(e.to_string()),
        other => anyhow::Error::new(other),
    }
}

/// The store of `table`.
pub fn store(clients: &Clients, table: &str) -> RecordStore {
    RecordStore::new(clients.dynamodb.clone(), table)
}

/// The queue `name_or_url`, checked to exist (a URL too, before anything is written); a queue
/// that does not exist is bad input.
pub async fn open_queue(clients: &Clients, name_or_url: &str) -> anyhow::Result<JobQueue> {
    let missing = |e: QueueError| match e {
        QueueError::NotFound(_) => invalid(format!(
            "{e} (`buildagent fleet init --queue NAME ...` creates it)"
        )),
        other => anyhow::Error::new(other),
    };
    let queue = JobQueue::open(clients.sqs.clone(), name_or_url)
        .await
        .map_err(missing)?;
    if name_or_url.contains("://") {
        queue.visibility_timeout().await.map_err(missing)?;
    }
    Ok(queue)
}
