//! The build record: one DynamoDB item per build, the fleet's shared truth about it.
//!
//! `submit` writes the record (`QUEUED`, with a build number from a per-project counter) before
//! it sends the job; a worker [claims](RecordStore::claim) it with a conditional write, so that a
//! redelivered message of a build that already ran, or that another live worker runs, is
//! refused; the worker keeps its claim alive with [heartbeats](RecordStore::heartbeat), writes
//! the phases as they change and [finishes](RecordStore::finish) the record. Every write after
//! the claim is conditional on the worker still owning it, so a worker that lost its claim (its
//! build was taken over after it went silent) can no longer change the record.
//!
//! The table has one key, `id` (a string): build records under the build id, and the
//! per-project counters under `counter#<project>`. Times are epoch milliseconds; the phases,
//! logs, artifacts, exported variables and history are JSON strings.
//! [`BuildRecord::to_codebuild_json`] gives a record the shape of an element of CodeBuild's
//! `BatchGetBuilds` `builds[]`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};
use serde_json::{json, Value};

use crate::describe;

/// The status of a build, CodeBuild's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuildStatus {
    /// Waiting on the queue.
    Queued,
    /// Claimed by a worker.
    InProgress,
    /// Every phase succeeded.
    Succeeded,
    /// A phase failed, or the job was not valid.
    Failed,
    /// The worker or a service it needs failed.
    Fault,
    /// The build timeout expired.
    TimedOut,
    /// Stopped by request (or by a worker's drain).
    Stopped,
}

impl BuildStatus {
    /// Every status, in CodeBuild's order.
    pub const ALL: [BuildStatus; 7] = [
        BuildStatus::Queued,
        BuildStatus::InProgress,
        BuildStatus::Succeeded,
        BuildStatus::Failed,
        BuildStatus::Fault,
        BuildStatus::TimedOut,
        BuildStatus::Stopped,
    ];

    /// The status's name (`QUEUED`, `IN_PROGRESS`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Queued => "QUEUED",
            BuildStatus::InProgress => "IN_PROGRESS",
            BuildStatus::Succeeded => "SUCCEEDED",
            BuildStatus::Failed => "FAILED",
            BuildStatus::Fault => "FAULT",
            BuildStatus::TimedOut => "TIMED_OUT",
            BuildStatus::Stopped => "STOPPED",
        }
    }

    /// True once the build has ended (neither queued nor in progress).
    pub fn is_finished(self) -> bool {
        !matches!(self, BuildStatus::Queued | BuildStatus::InProgress)
    }

    /// The runner's status of a finished build (`None` while queued or in progress).
    pub fn finished(self) -> Option<buildagent_runner::events::BuildStatus> {
        use buildagent_runner::events::BuildStatus as Runner;
        match self {
            BuildStatus::Queued | BuildStatus::InProgress => None,
            BuildStatus::Succeeded => Some(Runner::Succeeded),
            BuildStatus::Failed => Some(Runner::Failed),
            BuildStatus::Fault => Some(Runner::Fault),
            BuildStatus::TimedOut => Some(Runner::TimedOut),
            BuildStatus::Stopped => Some(Runner::Stopped),
        }
    }
}

impl From<buildagent_runner::events::BuildStatus> for BuildStatus {
    fn from(status: buildagent_runner::events::BuildStatus) -> Self {
        use buildagent_runner::events::BuildStatus as Runner;
        match status {
            Runner::Succeeded => BuildStatus::Succeeded,
            Runner::Failed => BuildStatus::Failed,
            Runner::Fault => BuildStatus::Fault,
            Runner::TimedOut => BuildStatus::TimedOut,
            Runner::Stopped => BuildStatus::Stopped,
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`BuildStatus::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown build status `{0}` (expected one of QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, FAULT, TIMED_OUT, STOPPED)")]
pub struct UnknownStatus(pub String);

impl FromStr for BuildStatus {
    type Err = UnknownStatus;

    /// CodeBuild's names; lower case is accepted (`--status succeeded`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase().replace('-', "_");
        BuildStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == upper)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// One phase of a build, as `BatchGetBuilds` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseRecord {
    /// CodeBuild's phase type (`DOWNLOAD_SOURCE`, `BUILD`, ...).
    pub phase_type: String,
    /// How it ended (`SUCCEEDED`, `FAILED`, ...); `None` while it runs.
    pub phase_status: Option<String>,
    /// When it started.
    pub start_time: SystemTime,
    /// When it ended; `None` while it runs.
    pub end_time: Option<SystemTime>,
    /// Why it ended as it did: (`statusCode`, `message`) pairs.
    pub contexts: Vec<(String, String)>,
}

/// Where a build's log is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogsRecord {
    /// The CloudWatch Logs group.
    pub group_name: String,
    /// The CloudWatch Logs stream.
    pub stream_name: String,
    /// The CloudWatch console's URL of the stream.
    pub deep_link: String,
    /// The S3 console's URL of the S3 log, when there is one.
    pub s3_deep_link: Option<String>,
}

impl LogsRecord {
    /// The record of a CloudWatch Logs stream in `region`, with the console's deep link as
    /// CodeBuild writes it.
    pub fn cloudwatch(region: &str, group: &str, stream: &str) -> LogsRecord {
        LogsRecord {
            group_name: group.to_string(),
            stream_name: stream.to_string(),
            deep_link: format!(
                "https://console.aws.amazon.com/cloudwatch/home?region={region}#logEvent:group={group};stream={stream}"
            ),
            s3_deep_link: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut value = json!({
            "groupName": self.group_name,
            "streamName": self.stream_name,
            "deepLink": self.deep_link,
        });
        if let Some(link) = &self.s3_deep_link {
            value["s3DeepLink"] = json!(link);
        }
        value
    }

    fn from_json(value: &Value) -> Option<LogsRecord> {
        Some(LogsRecord {
            group_name: value.get("groupName")?.as_str()?.to_string(),
            stream_name: value.get("streamName")?.as_str()?.to_string(),
            deep_link: value
                .get("deepLink")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            s3_deep_link: value
                .get("s3DeepLink")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// An earlier attempt of a build that was taken over (its worker went silent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The attempt's number (1 for the first claim).
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// When it was claimed.
    pub start_time: SystemTime,
    /// When it was taken over.
    pub end_time: SystemTime,
    /// What became of it ("attempt 1 on worker W lost its lease").
    pub outcome: String,
}

/// One build's record.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildRecord {
    /// The build id, `<project>:<uuid>`.
    pub id: String,
    /// The project.
    pub project: String,
    /// The build's number in its project (1, 2, ...; 0 for a job that was not valid).
    pub build_number: u64,
    /// The status.
    pub status: BuildStatus,
    /// The current phase (CodeBuild's phase type names, `SUBMITTED` ... `COMPLETED`).
    pub current_phase: String,
    /// When it was submitted.
    pub queued_at: SystemTime,
    /// When a worker first claimed it.
    pub start_time: Option<SystemTime>,
    /// When it ended.
    pub end_time: Option<SystemTime>,
    /// 0 while queued, 1 on the first claim, 2 after a takeover, ...
    pub attempt: u32,
    /// The claiming worker's id (`<hostname>:<pid>:<8 hex>`).
    pub worker: Option<String>,
    /// The claiming worker's last heartbeat.
    pub heartbeat_at: Option<SystemTime>,
    /// A `stop` asked the worker to stop the build.
    pub stop_requested: bool,
    /// Why the build FAILED, FAULTed or was STOPPED.
    pub status_reason: Option<String>,
    /// The phases so far.
    pub phases: Vec<PhaseRecord>,
    /// Where the log is, once known.
    pub logs: Option<LogsRecord>,
    /// The artifacts (`{"location": ...}` and what else the worker records).
    pub artifacts: Option<Value>,
    /// The buildspec's exported variables, at the end.
    pub exported: Vec<(String, String)>,
    /// The job's JSON as submitted.
    pub job: Option<String>,
    /// The attempts before this one.
    pub history: Vec<AttemptRecord>,
}

impl BuildRecord {
    /// The record's history with one more attempt, `attempt` on `worker`, ended `now` with
    /// `outcome`. Attempt 1 began at the first claim (the record's start), a later one when the
    /// attempt before it ended (the takeover or requeue that started it).
    pub fn history_with_ended(
        &self,
        attempt: u32,
        worker: &str,
        now: SystemTime,
        outcome: String,
    ) -> Vec<AttemptRecord> {
        let mut history = self.history.clone();
        history.push(AttemptRecord {
            attempt,
            worker: worker.to_string(),
            start_time: history
                .last()
                .map(|a| a.end_time)
                .or(self.start_time)
                .unwrap_or(now),
            end_time: now,
            outcome,
        });
        history
    }

    /// A new `QUEUED` record of build `id` of `project`, numbered `build_number`, submitted now,
    /// carrying the job's JSON.
    pub fn queued(id: &str, project: &str, build_number: u64, job: Option<String>) -> BuildRecord {
        BuildRecord {
            id: id.to_string(),
            project: project.to_string(),
            build_number,
            status: BuildStatus::Queued,
            current_phase: "QUEUED".to_string(),
            queued_at: SystemTime::now(),
            start_time: None,
            end_time: None,
            attempt: 0,
            worker: None,
            heartbeat_at: None,
            stop_requested: false,
            status_reason: None,
            phases: Vec::new(),
            logs: None,
            artifacts: None,
            exported: Vec::new(),
            job,
            history: Vec::new(),
        }
    }

    /// The build's ARN, as CodeBuild's: `arn:aws:codebuild:<region>:<account>:build/<id>`.
    pub fn arn(&self, region: &str, account: &str) -> String {
        format!("arn:aws:codebuild:{region}:{account}:build/{}", self.id)
    }

    /// The record as an element of `BatchGetBuilds`' `builds[]`: CodeBuild's field names, times
    /// as RFC 3339 strings. The phases start with `SUBMITTED` and `QUEUED` (from the submit and
    /// claim times) when the worker's phases do not. What CodeBuild has no field for (attempt,
    /// worker, heartbeat, status reason, history) is under `buildagent`.
    pub fn to_codebuild_json(&self, region: &str, account: &str) -> Value {
        let job: Option<Value> = self
            .job
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok());
        let job_field = |name: &str| job.as_ref().and_then(|j| j.get(name)).cloned();
        let mut phases = Vec::new();
        if self.phases.first().map(|p| p.phase_type.as_str()) != Some("SUBMITTED") {
            phases.push(phase_json(&PhaseRecord {
                phase_type: "SUBMITTED".into(),
                phase_status: Some("SUCCEEDED".into()),
                start_time: self.queued_at,
                end_time: Some(self.queued_at),
                contexts: Vec::new(),
            }));
            let queue_end = self.start_time.or(self.end_time);
            phases.push(phase_json(&PhaseRecord {
                phase_type: "QUEUED".into(),
                phase_status: queue_end.map(|_| {
                    if self.start_time.is_some() {
                        "SUCCEEDED".to_string()
                    } else {
                        self.status.as_str().to_string()
                    }
                }),
                start_time: self.queued_at,
                end_time: queue_end,
                contexts: Vec::new(),
            }));
        }
        phases.extend(self.phases.iter().map(phase_json));
        let mut build = json!({
            "id": self.id,
            "arn": self.arn(region, account),
            "buildNumber": self.build_number,
            "startTime": rfc3339(self.queued_at),
            "currentPhase": self.current_phase,
            "buildStatus": self.status.as_str(),
            "projectName": self.project,
            "phases": phases,
            "buildComplete": self.status.is_finished(),
            "initiator": "buildagent",
            "exportedEnvironmentVariables": self.exported.iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect::<Vec<_>>(),
        });
        let object = build.as_object_mut().expect("a JSON object");
        if let Some(end) = self.end_time {
            object.insert("endTime".into(), json!(rfc3339(end)));
        }
        if let Some(location) = job_field("sourceLocationOverride") {
            let kind = job_field("sourceTypeOverride").unwrap_or_else(|| {
                let text = location.as_str().unwrap_or("");
                json!(if text.starts_with("s3://") {
                    "S3"
                } else {
                    "GIT"
                })
            });
            object.insert("source".into(), json!({"type": kind, "location": location}));
        } else if job.is_some() {
            object.insert("source".into(), json!({"type": "NO_SOURCE"}));
        }
        if let Some(version) = job_field("sourceVersion") {
            object.insert("sourceVersion".into(), version);
        }
        if let Some(minutes) = job_field("timeoutInMinutesOverride") {
            object.insert("timeoutInMinutes".into(), minutes);
        } else if job.is_some() {
            object.insert("timeoutInMinutes".into(), json!(60));
        }
        if let Some(image) = job_field("imageOverride") {
            object.insert("environment".into(), json!({"image": image}));
        }
        let logs = match &self.logs {
            Some(logs) => {
                let mut value = logs.to_json();
                value["cloudWatchLogs"] = json!({"status": "ENABLED", "groupName": logs.group_name, "streamName": logs.stream_name});
                value
            }
            None => json!({}),
        };
        object.insert("logs".into(), logs);
        object.insert(
            "artifacts".into(),
            self.artifacts.clone().unwrap_or_else(|| json!({})),
        );
        let mut extra = json!({
            "attempt": self.attempt,
            "stopRequested": self.stop_requested,
        });
        if let Some(worker) = &self.worker {
            extra["worker"] = json!(worker);
        }
        if let Some(start) = self.start_time {
            extra["claimTime"] = json!(rfc3339(start));
        }
        if let Some(beat) = self.heartbeat_at {
            extra["heartbeatTime"] = json!(rfc3339(beat));
        }
        if let Some(reason) = &self.status_reason {
            extra["statusReason"] = json!(reason);
        }
        if !self.history.is_empty() {
            extra["history"] = Value::Array(
                self.history
                    .iter()
                    .map(|a| {
                        json!({
                            "attempt": a.attempt,
                            "worker": a.worker,
                            "startTime": rfc3339(a.start_time),
                            "endTime": rfc3339(a.end_time),
                            "outcome": a.outcome,
                        })
                    })
                    .collect(),
            );
        }
        object.insert("buildagent".into(), extra);
        build
    }

    /// The record as a DynamoDB item.
    fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::new();
        item.insert("id".into(), s(&self.id));
        item.insert("project".into(), s(&self.project));
        item.insert("buildNumber".into(), n(self.build_number));
        item.insert("buildStatus".into(), s(self.status.as_str()));
        item.insert("currentPhase".into(), s(&self.current_phase));
        item.insert("queuedAt".into(), ms(self.queued_at));
        if let Some(t) = self.start_time {
            item.insert("startTime".into(), ms(t));
        }
        if let Some(t) = self.end_time {
            item.insert("endTime".into(), ms(t));
        }
        item.insert("attempt".into(), n(self.attempt));
        if let Some(worker) = &self.worker {
            item.insert("worker".into(), s(worker));
        }
        if let Some(t) = self.heartbeat_at {
            item.insert("heartbeatAt".into(), ms(t));
        }
        item.insert(
            "stopRequested".into(),
            AttributeValue::Bool(self.stop_requested),
        );
        if let Some(reason) = &self.status_reason {
            item.insert("statusReason".into(), s(reason));
        }
        item.insert("phases".into(), phases_attr(&self.phases));
        if let Some(logs) = &self.logs {
            item.insert("logs".into(), s(&logs.to_json().to_string()));
        }
        if let Some(artifacts) = &self.artifacts {
            item.insert("artifacts".into(), s(&artifacts.to_string()));
        }
        item.insert(
            "exportedEnvironmentVariables".into(),
            exported_attr(&self.exported),
        );
        if let Some(job) = &self.job {
            item.insert("job".into(), s(job));
        }
        item.insert("history".into(), history_attr(&self.history));
        item
    }

    /// Reads a record from a DynamoDB item; `None` when it is not a build record (a counter).
    fn from_item(item: &HashMap<String, AttributeValue>) -> Result<BuildRecord, String> {
        let string = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let number = |name: &str| -> Result<Option<u64>, String> {
            match item.get(name) {
                None | Some(AttributeValue::Null(_)) => Ok(None),
                Some(AttributeValue::N(text)) => text
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("`{name}` is not a whole number: {text}")),
                Some(_) => Err(format!("`{name}` is not a number")),
            }
        };
        let time = |name: &str| -> Result<Option<SystemTime>, String> {
            Ok(number(name)?.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)))
        };
        let json_of = |name: &str| -> Result<Option<Value>, String> {
            match string(name) {
                None => Ok(None),
                Some(text) => serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| format!("`{name}` is not JSON: {e}")),
            }
        };
        let id = string("id").ok_or("no `id`")?;
        let status_text = string("buildStatus").ok_or("no `buildStatus`")?;
        let status = status_text
            .parse()
            .map_err(|e: UnknownStatus| e.to_string())?;
        let phases = match json_of("phases")? {
            Some(Value::Array(items)) => items.iter().filter_map(phase_from_json).collect(),
            _ => Vec::new(),
        };
        let exported = match json_of("exportedEnvironmentVariables")? {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| {
                    Some((
                        v.get("name")?.as_str()?.to_string(),
                        v.get("value")?.as_str().unwrap_or("").to_string(),
                    ))
                })
                .collect(),
            _ => Vec::new(),
        };
        let history = match json_of("history")? {
            Some(Value::Array(items)) => items.iter().filter_map(attempt_from_json).collect(),
            _ => Vec::new(),
        };
        Ok(BuildRecord {
            project: string("project").unwrap_or_else(|| {
                id.split_once(':')
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_default()
            }),
            id,
            build_number: number("buildNumber")?.unwrap_or(0),
            status,
            current_phase: string("currentPhase").unwrap_or_default(),
            queued_at: time("queuedAt")?.unwrap_or(UNIX_EPOCH),
            start_time: time("startTime")?,
            end_time: time("endTime")?,
            attempt: u32::try_from(number("attempt")?.unwrap_or(0)).unwrap_or(u32::MAX),
            worker: string("worker"),
            heartbeat_at: time("heartbeatAt")?,
            stop_requested: item
                .get("stopRequested")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            status_reason: string("statusReason"),
            phases,
            logs: json_of("logs")?.as_ref().and_then(LogsRecord::from_json),
            artifacts: json_of("artifacts")?,
            exported,
            job: string("job"),
            history,
        })
    }
}

/// The outcome of [`RecordStore::claim`].
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// This worker owns the build now, as its `attempt`-th run (1 first, 2 after a takeover).
    Claimed {
        /// The attempt's number.
        attempt: u32,
        /// The record as the claim read it, before its own write (the build number and the
        /// submit time, which the claim does not change, for the worker).
        record: Box<BuildRecord>,
    },
    /// The build is not this worker's to run: finished, stopped, or alive on another worker
    /// (or already on this one).
    Refused {
        /// The record as it is.
        record: Box<BuildRecord>,
    },
}

/// What a heartbeat learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// A `stop` asked for the build to stop.
    pub stop_requested: bool,
}

/// The final state of a build, written by [`RecordStore::finish`].
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    /// The build's status (a finished one).
    pub status: BuildStatus,
    /// Why, when it did not succeed.
    pub reason: Option<String>,
    /// When it ended.
    pub end_time: SystemTime,
    /// Every phase.
    pub phases: Vec<PhaseRecord>,
    /// The exported variables.
    pub exported: Vec<(String, String)>,
    /// The artifacts (`{"location": ...}`).
    pub artifacts: Option<Value>,
}

impl Finish {
    /// A build that ended now with `status`, nothing else recorded.
    pub fn new(status: BuildStatus) -> Finish {
        Finish {
            status,
            reason: None,
            end_time: SystemTime::now(),
            phases: Vec::new(),
            exported: Vec::new(),
            artifacts: None,
        }
    }
}

/// The outcome of [`RecordStore::request_stop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// The build was still queued: it is `STOPPED` now, and no worker will run it.
    Stopped,
    /// The build is running: its worker will see the request within seconds and stop it.
    Requested,
}

/// A record operation that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// There is no record of this build.
    #[error("no build `{0}` in the table")]
    NotFound(String),
    /// The worker no longer owns the build (taken over, or finished by someone else).
    #[error("build `{0}`: this worker no longer holds its claim")]
    LostClaim(String),
    /// The build has already ended.
    #[error("build `{id}` has already finished ({status})")]
    AlreadyFinished {
        /// The build id.
        id: String,
        /// Its final status.
        status: BuildStatus,
    },
    /// DynamoDB refused or could not be reached.
    #[error("{op}: {message}")]
    Service {
        /// What was being done, naming the table and the build.
        op: String,
        /// What the service (or the connection) said.
        message: String,
    },
    /// An idempotency token used within its validity for a different request (CodeBuild's
    /// parameter mismatch).
    #[error("idempotency token `{token}` was used for build `{build}` with other parameters")]
    TokenMismatch {
        /// The token.
        token: String,
        /// The build it was used for.
        build: String,
    },
    /// The table does not exist.
    #[error("table {0} does not exist (`buildagent fleet init` creates it)")]
    NoTable(String),
    /// An item of the table is not a build record this version can read.
    #[error("table {table}: item `{id}` is not a valid build record: {message}")]
    Corrupt {
        /// The table.
        table: String,
        /// The item's id.
        id: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The build records of one DynamoDB table.
#[derive(Clone, Debug)]
pub struct RecordStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// How many times an optimistic update is retried when the record changed between its read and
/// its write (each retry reads again; more changes than this in a few milliseconds is a bug).
const RACE_RETRIES: usize = 8;

impl RecordStore {
    /// The records of `table`, through `client`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> RecordStore {
        RecordStore {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The client.
    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }

    fn service(
        &self,
        op: &str,
        id: &str,
        e: impl ProvideErrorMetadata + std::error::Error,
    ) -> RecordError {
        if e.code() == Some(NO_TABLE) {
            return RecordError::NoTable(self.table.clone());
        }
        RecordError::Service {
            op: format!("{op} of `{id}` in table {}", self.table),
            message: describe(&e),
        }
    }

    fn corrupt(&self, id: &str, message: String) -> RecordError {
        RecordError::Corrupt {
            table: self.table.clone(),
            id: id.to_string(),
            message,
        }
    }

    /// The next build number of `project` (1, 2, ...): an atomic increment of its counter item.
    pub async fn next_build_number(&self, project: &str) -> Result<u64, RecordError> {
        let key = format!("counter#{project}");
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(&key))
            .update_expression("ADD #n :one")
            .expression_attribute_values(":one", n(1u64))
            .return_values(ReturnValue::UpdatedNew)
            .named()
            .send()
            .await
            .map_err(|e| self.service("build number", &key, e.into_service_error()))?;
        out.attributes()
            .and_then(|a| a.get("n"))
            .and_then(|v| v.as_n().ok())
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| self.corrupt(&key, "the counter has no number `n`".into()))
    }

    /// Writes a new record; fails if a record with its id exists.
    pub async fn create_queued(&self, record: &BuildRecord) -> Result<(), RecordError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(record.to_item()))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", "id")
            .send()
            .await
            .map_err(|e| {
                let e = e.into_service_error();
                if e.code() == Some(CONDITION_FAILED) {
                    RecordError::Service {
                        op: format!("create `{}` in table {}", record.id, self.table),
                        message: "a build with this id already exists".into(),
                    }
                } else {
                    self.service("create", &record.id, e)
                }
            })?;
        Ok(())
    }

    /// The record of build `id` (a consistent read), `None` when there is none.
    pub async fn get(&self, id: &str) -> Result<Option<BuildRecord>, RecordError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.service("read", id, e.into_service_error()))?;
        match out.item() {
            // A counter is no build.
            None => Ok(None),
            Some(item) if !item.contains_key("buildStatus") => Ok(None),
            Some(item) => BuildRecord::from_item(item)
                .map(Some)
                .map_err(|m| self.corrupt(id, m)),
        }
    }

    async fn get_existing(&self, id: &str) -> Result<BuildRecord, RecordError> {
        self.get(id)
            .await?
            .ok_or_else(|| RecordError::NotFound(id.to_string()))
    }

    /// The records of the builds `ids` that exist, in the order of `ids` (duplicates once);
    /// consistent reads, 100 per request.
    pub async fn get_many(&self, ids: &[String]) -> Result<Vec<BuildRecord>, RecordError> {
        let mut unique: Vec<&String> = Vec::new();
        for id in ids {
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        let mut found: HashMap<String, BuildRecord> = HashMap::new();
        for chunk in unique.chunks(100) {
            let keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|id| HashMap::from([("id".to_string(), s(id))]))
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| RecordError::Service {
                        op: format!("read of {} builds in table {}", chunk.len(), self.table),
                        message: e.to_string(),
                    })?,
            );
            let mut rounds = 0;
            while let Some(keys) = request.take() {
                rounds += 1;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, keys)
                    .send()
                    .await
                    .map_err(|e| {
                        self.service(
                            "read",
                            &chunk
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            e.into_service_error(),
                        )
                    })?;
                for item in out
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                    .filter(|item| item.contains_key("buildStatus"))
                {
                    let id = item
                        .get("id")
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default();
                    let record = BuildRecord::from_item(item).map_err(|m| self.corrupt(&id, m))?;
                    found.insert(id, record);
                }
                // Throttled keys come back unprocessed: ask again, after a pause.
                request = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
                if request.is_some() {
                    tokio::time::sleep(Duration::from_millis(50 * rounds.min(20))).await;
                }
            }
        }
        Ok(unique
            .into_iter()
            .filter_map(|id| found.remove(id))
            .collect())
    }

    /// Every build record (a scan), of `project` and with `status` when given, newest first.
    pub async fn list(
        &self,
        project: Option<&str>,
        status: Option<BuildStatus>,
    ) -> Result<Vec<BuildRecord>, RecordError> {
        let mut filter = vec!["attribute_exists(#buildStatus)".to_string()];
        let mut values = HashMap::new();
        if let Some(project) = project {
            filter.push("#project = :project".into());
            values.insert(":project".to_string(), s(project));
        }
        if let Some(status) = status {
            filter.push("#buildStatus = :status".into());
            values.insert(":status".to_string(), s(status.as_str()));
        }
        let mut records = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(filter.join(" AND "))
                .set_expression_attribute_names(attribute_names([&Some(filter.join(" AND "))]))
                .set_expression_attribute_values((!values.is_empty()).then(|| values.clone()))
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| {
                    let e = e.into_service_error();
                    if e.code() == Some(NO_TABLE) {
                        return RecordError::NoTable(self.table.clone());
                    }
                    RecordError::Service {
                        op: format!("list of the builds in table {}", self.table),
                        message: describe(&e),
                    }
                })?;
            for item in out.items() {
                let id = item
                    .get("id")
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default();
                records.push(BuildRecord::from_item(item).map_err(|m| self.corrupt(&id, m))?);
            }
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        records.sort_by(|a, b| {
            b.queued_at
                .cmp(&a.queued_at)
                .then(b.build_number.cmp(&a.build_number))
        });
        Ok(records)
    }

    /// The conditional claim of build `id` by `worker`.
    ///
    /// Claimed when the build is `QUEUED` (and no stop was asked), or `IN_PROGRESS` with a
    /// heartbeat older than `stale_after` (its worker is gone: a takeover, the attempt's number
    /// grows and the lost attempt joins the history). Refused otherwise: finished, stopped, or
    /// alive on a worker. A stale build whose stop was asked is not taken over but ends as
    /// `STOPPED`. The write is conditional on the record being as it was read, so of two workers
    /// claiming at once exactly one wins. The claim sets `IN_PROGRESS`, the worker, the
    /// heartbeat, the start time (first claim) and the phase `PROVISIONING`.
    pub async fn claim(
        &self,
        id: &str,
        worker: &str,
        stale_after: Duration,
    ) -> Result<Claim, RecordError> {
        for _ in 0..RACE_RETRIES {
            let record = self.get_existing(id).await?;
            let now = SystemTime::now();
            let stale = record.status == BuildStatus::InProgress
                && record
                    .heartbeat_at
                    .is_none_or(|beat| beat + stale_after < now);
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("id", s(id))
                .expression_attribute_values(":now", ms(now))
                .expression_attribute_values(":inprogress", s(BuildStatus::InProgress.as_str()));
            let claiming = |update: UpdateItemFluentBuilder| {
                update
                    .expression_attribute_values(":worker", s(worker))
                    .expression_attribute_values(":provisioning", s("PROVISIONING"))
            };
            let attempt;
            if record.status == BuildStatus::Queued && !record.stop_requested {
                // 1 on the first claim; N+1 for a build a worker's shutdown put back (attempt N).
                attempt = record.attempt + 1;
                update = claiming(update)
                    .update_expression(
                        "SET #buildStatus = :inprogress, #worker = :worker, #heartbeatAt = :now, \
                         #startTime = :now, #attempt = :attempt, #currentPhase = :provisioning",
                    )
                    .condition_expression(
                        "#buildStatus = :queued AND (attribute_not_exists(#stopRequested) OR #stopRequested = :false)",
                    )
                    .expression_attribute_values(":queued", s(BuildStatus::Queued.as_str()))
                    .expression_attribute_values(":false", AttributeValue::Bool(false))
                    .expression_attribute_values(":attempt", n(attempt));
            } else if stale {
                let previous = record.worker.clone().unwrap_or_default();
                let history = record.history_with_ended(
                    record.attempt,
                    &previous,
                    now,
                    format!(
                        "attempt {} on worker {previous} lost its lease",
                        record.attempt
                    ),
                );
                let beat = record.heartbeat_at.map(ms).unwrap_or(n(0u64));
                update = update
                    .condition_expression(
                        "#buildStatus = :inprogress AND #worker = :previous AND #heartbeatAt = :beat",
                    )
                    .expression_attribute_values(":previous", s(&previous))
                    .expression_attribute_values(":beat", beat)
                    .expression_attribute_values(":history", history_attr(&history));
                if record.stop_requested {
                    attempt = 0;
                    update = update
                        .update_expression(
                            "SET #buildStatus = :stopped, #currentPhase = :completed, #endTime = :now, \
                             #statusReason = :reason, #history = :history",
                        )
                        .expression_attribute_values(":stopped", s(BuildStatus::Stopped.as_str()))
                        .expression_attribute_values(":completed", s("COMPLETED"))
                        .expression_attribute_values(
                            ":reason",
                            s(&format!(
                                "stopped by request (attempt {} on worker {previous} lost its lease)",
                                record.attempt
                            )),
                        );
                } else {
                    attempt = record.attempt + 1;
                    update = claiming(update)
                        .update_expression(
                            "SET #buildStatus = :inprogress, #worker = :worker, #heartbeatAt = :now, \
                             #attempt = :attempt, #currentPhase = :provisioning, #history = :history, \
                             #startTime = if_not_exists(#startTime, :now)",
                        )
                        .expression_attribute_values(":attempt", n(attempt));
                }
            } else {
                return Ok(Claim::Refused {
                    record: Box::new(record),
                });
            }
            match update.named().send().await {
                Ok(_) if attempt == 0 => {
                    let record = self.get_existing(id).await?;
                    return Ok(Claim::Refused {
                        record: Box::new(record),
                    });
                }
                Ok(_) => {
                    return Ok(Claim::Claimed {
                        attempt,
                        record: Box::new(record),
                    })
                }
                Err(e) => {
                    let e = e.into_service_error();
                    if e.code() != Some(CONDITION_FAILED) {
                        return Err(self.service("claim", id, e));
                    }
                    // Changed since the read (another worker, a stop): decide again.
                }
            }
        }
        Err(RecordError::Service {
            op: format!("claim of `{id}` in table {}", self.table),
            message: format!("the record changed {RACE_RETRIES} times while it was claimed"),
        })
    }

    /// The claim's heartbeat: `heartbeatAt` = now, if `worker` still owns the build and it is
    /// in progress; else [`RecordError::LostClaim`].
    pub async fn heartbeat(&self, id: &str, worker: &str) -> Result<Heartbeat, RecordError> {
        let out = self
            .owned_update(id, worker)
            .update_expression("SET #heartbeatAt = :now")
            .expression_attribute_values(":now", ms(SystemTime::now()))
            .return_values(ReturnValue::AllNew)
            .named()
            .send()
            .await
            .map_err(|e| self.owned_error("heartbeat", id, e.into_service_error()))?;
        Ok(Heartbeat {
            stop_requested: out
                .attributes()
                .and_then(|a| a.get("stopRequested"))
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
        })
    }

    /// The phases so far and the current phase, if `worker` still owns the build.
    pub async fn update_phases(
        &self,
        id: &str,
        worker: &str,
        current: &str,
        phases: &[PhaseRecord],
    ) -> Result<(), RecordError> {
        self.owned_update(id, worker)
            .update_expression("SET #phases = :phases, #currentPhase = :current")
            .expression_attribute_values(":phases", phases_attr(phases))
            .expression_attribute_values(":current", s(current))
            .named()
            .send()
            .await
            .map_err(|e| self.owned_error("phase update", id, e.into_service_error()))?;
        Ok(())
    }

    /// Where the log is, if `worker` still owns the build.
    pub async fn set_logs(
        &self,
        id: &str,
        worker: &str,
        logs: &LogsRecord,
    ) -> Result<(), RecordError> {
        self.owned_update(id, worker)
            .update_expression("SET #logs = :logs")
            .expression_attribute_values(":logs", s(&logs.to_json().to_string()))
            .named()
            .send()
            .await
            .map_err(|e| self.owned_error("logs update", id, e.into_service_error()))?;
        Ok(())
    }

    /// The final record: status, reason, end time, phases, exported variables, artifacts,
    /// current phase `COMPLETED`; if `worker` still owns the build.
    pub async fn finish(&self, id: &str, worker: &str, fin: &Finish) -> Result<(), RecordError> {
        let mut update = self
            .owned_update(id, worker)
            .expression_attribute_values(":status", s(fin.status.as_str()))
            .expression_attribute_values(":end", ms(fin.end_time))
            .expression_attribute_values(":phases", phases_attr(&fin.phases))
            .expression_attribute_values(":exported", exported_attr(&fin.exported))
            .expression_attribute_values(":completed", s("COMPLETED"));
        let mut set = vec![
            "#buildStatus = :status",
            "#endTime = :end",
            "#phases = :phases",
            "#exportedEnvironmentVariables = :exported",
            "#currentPhase = :completed",
        ];
        if let Some(reason) = &fin.reason {
            set.push("#statusReason = :reason");
            update = update.expression_attribute_values(":reason", s(reason));
        }
        if let Some(artifacts) = &fin.artifacts {
            set.push("#artifacts = :artifacts");
            update = update.expression_attribute_values(":artifacts", s(&artifacts.to_string()));
        }
        update
            .update_expression(format!("SET {}", set.join(", ")))
            .named()
            .send()
            .await
            .map_err(|e| self.owned_error("finish", id, e.into_service_error()))?;
        Ok(())
    }

    /// An update of build `id` conditional on `worker` owning it while it is in progress.
    fn owned_update(&self, id: &str, worker: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .condition_expression(
                "attribute_exists(#id) AND #worker = :me AND #buildStatus = :inprogress",
            )
            .expression_attribute_values(":me", s(worker))
            .expression_attribute_values(":inprogress", s(BuildStatus::InProgress.as_str()))
    }

    fn owned_error(
        &self,
        op: &str,
        id: &str,
        e: aws_sdk_dynamodb::operation::update_item::UpdateItemError,
    ) -> RecordError {
        if e.code() == Some(CONDITION_FAILED) {
            RecordError::LostClaim(id.to_string())
        } else {
            self.service(op, id, e)
        }
    }

    /// Records a job that could not be read or validated as `FAILED` with `reason`, keeping its
    /// `body`: the record of `id` when it exists and is still queued, else a new one (under
    /// `id`, or `invalid:<uuid>` without one). A record that is running or finished is left as
    /// it is. Returns the id used.
    pub async fn fail_invalid(
        &self,
        id: Option<&str>,
        project: Option<&str>,
        reason: &str,
        body: &str,
    ) -> Result<String, RecordError> {
        let id = id
            .map(str::to_string)
            .unwrap_or_else(|| format!("invalid:{}", uuid::Uuid::new_v4()));
        let project = project
            .map(str::to_string)
            .or_else(|| id.split_once(':').map(|(p, _)| p.to_string()))
            .unwrap_or_default();
        let now = ms(SystemTime::now());
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(&id))
            .update_expression(
                "SET #buildStatus = :failed, #statusReason = :reason, #endTime = :now, \
                 #currentPhase = :completed, #job = :body, #stopRequested = :false, \
                 #project = if_not_exists(#project, :project), \
                 #buildNumber = if_not_exists(#buildNumber, :zero), \
                 #queuedAt = if_not_exists(#queuedAt, :now), \
                 #attempt = if_not_exists(#attempt, :zero)",
            )
            .condition_expression("attribute_not_exists(#id) OR #buildStatus = :queued")
            .expression_attribute_values(":failed", s(BuildStatus::Failed.as_str()))
            .expression_attribute_values(":queued", s(BuildStatus::Queued.as_str()))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now", now)
            .expression_attribute_values(":completed", s("COMPLETED"))
            .expression_attribute_values(":body", s(body))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":project", s(&project))
            .expression_attribute_values(":zero", n(0u64))
            .named()
            .send()
            .await;
        match result {
            Ok(_) => Ok(id),
            Err(e) => {
                let e = e.into_service_error();
                if e.code() == Some(CONDITION_FAILED) {
                    Ok(id)
                } else {
                    Err(self.service("recording the invalid job", &id, e))
                }
            }
        }
    }

    /// An idempotency token, as CodeBuild's `StartBuild` treats it: the first request with
    /// `token` reserves it for build `id` for `valid` (CodeBuild: 5 minutes) and gets `None`; a
    /// repeat within that time gets the first build's id when `fingerprint` (the request without
    /// its build id) is the same, else [`RecordError::TokenMismatch`]. The reservation is the
    /// item `token#<token>`, written conditionally so that of two requests at once one wins.
    pub async fn reserve_token(
        &self,
        token: &str,
        id: &str,
        fingerprint: &str,
        valid: Duration,
    ) -> Result<Option<String>, RecordError> {
        let key = format!("token#{token}");
        for _ in 0..RACE_RETRIES {
            let now = SystemTime::now();
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("id", s(&key))
                .item("build", s(id))
                .item("fingerprint", s(fingerprint))
                .item("expiresAt", ms(now + valid))
                .condition_expression("attribute_not_exists(#id) OR #expiresAt < :now")
                .expression_attribute_names("#id", "id")
                .expression_attribute_names("#expiresAt", "expiresAt")
                .expression_attribute_values(":now", ms(now))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(None),
                Err(e) => {
                    let e = e.into_service_error();
                    if e.code() != Some(CONDITION_FAILED) {
                        return Err(self.service("idempotency token", &key, e));
                    }
                }
            }
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("id", s(&key))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| self.service("idempotency token", &key, e.into_service_error()))?;
            // Expired between the write and the read: try again.
            let Some(item) = out.item() else { continue };
            let field = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            let build = field("build").unwrap_or_default();
            if field("fingerprint").as_deref() == Some(fingerprint) {
                return Ok(Some(build));
            }
            return Err(RecordError::TokenMismatch {
                token: token.to_string(),
                build,
            });
        }
        Err(RecordError::Service {
            op: format!("idempotency token `{token}` in table {}", self.table),
            message: format!("the token changed {RACE_RETRIES} times while it was reserved"),
        })
    }

    /// `stop`: a queued build is `STOPPED` at once (reason "stopped by request", end time
    /// now); a running one gets `stopRequested`, which its worker reads within seconds; a
    /// finished one is [`RecordError::AlreadyFinished`].
    pub async fn request_stop(&self, id: &str) -> Result<StopOutcome, RecordError> {
        for _ in 0..RACE_RETRIES {
            let record = self.get_existing(id).await?;
            let update = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("id", s(id))
                .expression_attribute_values(":true", AttributeValue::Bool(true));
            let (update, outcome) = match record.status {
                BuildStatus::Queued => (
                    update
                        .update_expression(
                            "SET #buildStatus = :stopped, #statusReason = :reason, #endTime = :now, \
                             #currentPhase = :completed, #stopRequested = :true",
                        )
                        .condition_expression("#buildStatus = :queued")
                        .expression_attribute_values(":stopped", s(BuildStatus::Stopped.as_str()))
                        .expression_attribute_values(":queued", s(BuildStatus::Queued.as_str()))
                        .expression_attribute_values(":reason", s("stopped by request"))
                        .expression_attribute_values(":now", ms(SystemTime::now()))
                        .expression_attribute_values(":completed", s("COMPLETED")),
                    StopOutcome::Stopped,
                ),
                BuildStatus::InProgress => (
                    update
                        .update_expression("SET #stopRequested = :true")
                        .condition_expression("#buildStatus = :inprogress")
                        .expression_attribute_values(
                            ":inprogress",
                            s(BuildStatus::InProgress.as_str()),
                        ),
                    StopOutcome::Requested,
                ),
                status => {
                    return Err(RecordError::AlreadyFinished {
                        id: id.to_string(),
                        status,
                    })
                }
            };
            match update.named().send().await {
                Ok(_) => return Ok(outcome),
                Err(e) => {
                    let e = e.into_service_error();
                    if e.code() != Some(CONDITION_FAILED) {
                        return Err(self.service("stop", id, e));
                    }
                }
            }
        }
        Err(RecordError::Service {
            op: format!("stop of `{id}` in table {}", self.table),
            message: format!("the record changed {RACE_RETRIES} times while it was stopped"),
        })
    }
}

const CONDITION_FAILED: &str = "ConditionalCheckFailedException";
const NO_TABLE: &str = "ResourceNotFoundException";

/// The attribute names of the `#name` placeholders in `expressions`: every attribute is named
/// through one, because DynamoDB reserves many plain words (`project`, `status`, ...), and it
/// refuses a placeholder that no expression uses.
fn attribute_names<'a>(
    expressions: impl IntoIterator<Item = &'a Option<String>>,
) -> Option<HashMap<String, String>> {
    let mut names = HashMap::new();
    for expression in expressions.into_iter().flatten() {
        for (i, _) in expression.match_indices('#') {
            let name: String = expression[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(format!("#{name}"), name);
        }
    }
    (!names.is_empty()).then_some(names)
}

/// Names an update's placeholders ([`attribute_names`]) once its expressions are complete.
trait Named {
    fn named(self) -> Self;
}

impl Named for UpdateItemFluentBuilder {
    fn named(self) -> Self {
        let names = attribute_names([
            self.get_update_expression(),
            self.get_condition_expression(),
        ]);
        self.set_expression_attribute_names(names)
    }
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_string())
}

fn n(number: impl Into<u64>) -> AttributeValue {
    AttributeValue::N(number.into().to_string())
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms(t: SystemTime) -> AttributeValue {
    n(epoch_ms(t))
}

fn from_ms(value: &Value) -> Option<SystemTime> {
    value
        .as_u64()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

/// `t` as RFC 3339 in UTC with milliseconds (`2026-12-05T23:02:03.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let u = buildagent_runner::utc::utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year(),
        u8::from(u.month()),
        u.day(),
        u.hour(),
        u.minute(),
        u.second(),
        u.millisecond()
    )
}

fn phase_json(p: &PhaseRecord) -> Value {
    phase_value(p, |t| json!(rfc3339(t)))
}

/// A phase in BatchGetBuilds' fields, its times written by `time` (RFC 3339 for readers, epoch
/// milliseconds in the table).
fn phase_value(p: &PhaseRecord, time: impl Fn(SystemTime) -> Value) -> Value {
    let mut value = json!({
        "phaseType": p.phase_type,
        "startTime": time(p.start_time),
        "contexts": p.contexts.iter()
            .map(|(code, message)| json!({"statusCode": code, "message": message}))
            .collect::<Vec<_>>(),
    });
    if let Some(status) = &p.phase_status {
        value["phaseStatus"] = json!(status);
    }
    if let Some(end) = p.end_time {
        value["endTime"] = time(end);
        value["durationInSeconds"] = json!(end
            .duration_since(p.start_time)
            .unwrap_or_default()
            .as_secs());
    }
    value
}

/// The stored form of the phases: CodeBuild's fields, times in epoch milliseconds.
fn phases_attr(phases: &[PhaseRecord]) -> AttributeValue {
    let items: Vec<Value> = phases
        .iter()
        .map(|p| phase_value(p, |t| json!(epoch_ms(t))))
        .collect();
    s(&Value::Array(items).to_string())
}

fn phase_from_json(value: &Value) -> Option<PhaseRecord> {
    Some(PhaseRecord {
        phase_type: value.get("phaseType")?.as_str()?.to_string(),
        phase_status: value
            .get("phaseStatus")
            .and_then(Value::as_str)
            .map(str::to_string),
        start_time: from_ms(value.get("startTime")?)?,
        end_time: value.get("endTime").and_then(from_ms),
        contexts: value
            .get("contexts")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|c| {
                        let field = |name: &str| {
                            c.get(name)
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string()
                        };
                        (field("statusCode"), field("message"))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

fn exported_attr(exported: &[(String, String)]) -> AttributeValue {
    let items: Vec<Value> = exported
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    s(&Value::Array(items).to_string())
}

fn history_attr(history: &[AttemptRecord]) -> AttributeValue {
    let items: Vec<Value> = history
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "worker": a.worker,
                "startTime": epoch_ms(a.start_time),
                "endTime": epoch_ms(a.end_time),
                "outcome": a.outcome,
            })
        })
        .collect();
    s(&Value::Array(items).to_string())
}

fn attempt_from_json(value: &Value) -> Option<AttemptRecord> {
    Some(AttemptRecord {
        attempt: u32::try_from(value.get("attempt")?.as_u64()?).ok()?,
        worker: value.get("worker")?.as_str()?.to_string(),
        start_time: from_ms(value.get("startTime")?)?,
        end_time: from_ms(value.get("endTime")?)?,
        outcome: value.get("outcome")?.as_str()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for status in BuildStatus::ALL {
            assert_eq!(status.as_str().parse::<BuildStatus>(), Ok(status));
        }
        assert_eq!(
            "in-progress".parse::<BuildStatus>(),
            Ok(BuildStatus::InProgress)
        );
        assert!("DONE".parse::<BuildStatus>().is_err());
        assert!(!BuildStatus::Queued.is_finished());
        assert!(BuildStatus::Stopped.is_finished());
    }

    #[test]
    fn items_round_trip() {
        let mut record = BuildRecord::queued("p:1", "p", 7, Some("{}".into()));
        record.queued_at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        record.start_time = Some(record.queued_at + Duration::from_secs(1));
        record.worker = Some("h:1:abcdef12".into());
        record.phases = vec![PhaseRecord {
            phase_type: "BUILD".into(),
            phase_status: Some("FAILED".into()),
            start_time: record.queued_at,
            end_time: Some(record.queued_at + Duration::from_secs(3)),
            contexts: vec![("COMMAND_EXECUTION_ERROR".into(), "exit 1".into())],
        }];
        record.logs = Some(LogsRecord::cloudwatch("us-east-1", "/aws/codebuild/p", "1"));
        record.exported = vec![("A".into(), "b".into())];
        record.history = vec![AttemptRecord {
            attempt: 1,
            worker: "w".into(),
            start_time: record.queued_at,
            end_time: record.queued_at,
            outcome: "lost".into(),
        }];
        assert_eq!(BuildRecord::from_item(&record.to_item()), Ok(record));
    }

    #[test]
    fn times_are_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_millis(1_741_474_926_050);
        assert_eq!(rfc3339(t), "2025-03-08T23:02:06.050Z");
    }
}
