//! What a batch reports: every event of every child, tagged with the child's identifier, and
//! the batch's own steps (a child queued, started, finished or not started; the batch's end).
//!
//! # JSON form
//!
//! A child's event is the child's [`Event`] JSON object with one more field,
//! `build_identifier`:
//!
//! ```json
//! {"build_identifier":"linux","schema":1,"at":"...","elapsed":0.25,"type":"output","stream":"stdout","bytes":"hi\n"}
//! ```
//!
//! A batch event has the same envelope (`schema`, `at`, `elapsed` since the batch started),
//! its `type` (`batch_started`, `child_queued`, `child_started`, `child_finished`,
//! `report_merged`, `batch_cancelling`, `batch_warning`, `batch_finished`) and its fields;
//! the ones about one child carry `build_identifier` too, so `jq 'select(.build_identifier ==
//! "linux")'` gives a child's whole story. A non-batch build's JSON is unchanged.

use std::io;
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use super::plan::BatchKind;
use crate::events::{ser_rfc3339, ser_secs, BuildPhase, BuildStatus, Event, EVENT_SCHEMA_VERSION};

/// One thing that happened in a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchEvent {
    /// Wall-clock time (for a child's event: the child's own).
    pub at: SystemTime,
    /// Time since the batch started.
    pub elapsed: Duration,
    /// What happened.
    pub kind: BatchEventKind,
}

impl BatchEvent {
    /// The identifier of the child the event is about, if it is about one.
    pub fn identifier(&self) -> Option<&str> {
        match &self.kind {
            BatchEventKind::Child { identifier, .. }
            | BatchEventKind::ChildQueued { identifier, .. }
            | BatchEventKind::ChildStarted { identifier, .. }
            | BatchEventKind::ChildFinished { identifier, .. } => Some(identifier),
            _ => None,
        }
    }

    /// The event as one line of JSON, newline included.
    pub fn to_json_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("batch events always serialize");
        line.push('\n');
        line
    }

    /// Writes the event as one line of JSON to `out`.
    pub fn write_json_line<W: io::Write>(&self, mut out: W) -> io::Result<()> {
        out.write_all(self.to_json_line().as_bytes())
    }
}

/// What happened in a batch. New variants may be added in minor versions.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchEventKind {
    /// The batch began.
    BatchStarted {
        /// `<project>:<uuid>` of the batch (`CODEBUILD_BATCH_BUILD_ARN` ends with it).
        batch_id: String,
        /// Which kind of batch.
        kind: BatchKind,
        /// How many builds it has.
        builds: usize,
        /// How many may run at once (`-j`).
        jobs: usize,
    },
    /// A child was planned; it starts when a slot is free and its dependencies SUCCEEDED.
    ChildQueued {
        /// The child.
        #[serde(rename = "build_identifier")]
        identifier: String,
        /// What makes it differ from its siblings (matrix values, shard), or empty.
        description: String,
        /// The identifiers it waits for.
        depend_on: Vec<String>,
        /// Settings that mean nothing on this machine (`compute-type=...`), ignored.
        not_applicable: Vec<String>,
    },
    /// A child's build began.
    ChildStarted {
        /// The child.
        #[serde(rename = "build_identifier")]
        identifier: String,
        /// Its `CODEBUILD_BUILD_ID`.
        build_id: String,
    },
    /// An event of a child's build.
    Child {
        /// The child.
        identifier: String,
        /// The child's event, as a single build reports it.
        event: Event,
    },
    /// A child ended, or will never start.
    ChildFinished {
        /// The child.
        #[serde(rename = "build_identifier")]
        identifier: String,
        /// How it ended.
        status: ChildStatus,
        /// How long its build ran (zero when it did not start).
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
        /// The first phase that did not succeed.
        failing_phase: Option<BuildPhase>,
        /// Whether its failure is ignored (`ignore-failure`).
        ignore_failure: bool,
        /// Why it did not start, or why it failed before its build could (a container that
        /// could not start).
        reason: Option<String>,
    },
    /// The report groups of a fanout's shards, merged into one (counts summed, the longest
    /// shard's duration, FAILED if any shard had a failure).
    ReportMerged {
        /// The group.
        group: String,
        /// The shards that reported it.
        shards: usize,
        /// `SUCCEEDED` or `FAILED`.
        status: String,
        /// Test cases.
        total: usize,
        /// Passed ones.
        passed: usize,
        /// Failed ones.
        failed: usize,
        /// Skipped ones.
        skipped: usize,
        /// Ones that ended with an error.
        errors: usize,
        /// The longest shard's duration.
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
    },
    /// The children's primary artifacts were put in one archive (`--combine-artifacts`).
    ArtifactsCombined {
        /// The zip file (or directory) written.
        #[serde(serialize_with = "crate::events::ser_path")]
        path: std::path::PathBuf,
        /// How many builds' artifacts it holds.
        builds: usize,
    },
    /// The batch is stopping its running children (SIGTERM, grace, SIGKILL) and starts no more.
    BatchCancelling {
        /// Why.
        reason: BatchStop,
    },
    /// Something about the batch as a whole the user should know.
    BatchWarning {
        /// The message.
        message: String,
    },
    /// The batch ended.
    BatchFinished {
        /// Its status.
        status: BuildStatus,
        /// How long it took.
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
        /// Every child, in plan order.
        children: Vec<ChildSummary>,
    },
}

/// Why a batch stops early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStop {
    /// A child failed and fast-fail is on.
    FastFail,
    /// SIGINT or SIGTERM.
    Signal,
    /// The batch timeout expired.
    Timeout,
}

/// How a child of a batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChildStatus {
    /// Its build SUCCEEDED.
    Succeeded,
    /// Its build FAILED.
    Failed,
    /// Its build, or its container, FAULTed.
    Fault,
    /// Its build timed out (its own timeout, or the batch's).
    TimedOut,
    /// Its build was stopped (Ctrl-C, or fast-fail after a sibling's failure).
    Stopped,
    /// It never started: a dependency did not succeed, or the batch was stopping.
    NotStarted,
}

impl ChildStatus {
    /// The status's name (`SUCCEEDED`, ..., `NOT_STARTED`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChildStatus::Succeeded => "SUCCEEDED",
            ChildStatus::Failed => "FAILED",
            ChildStatus::Fault => "FAULT",
            ChildStatus::TimedOut => "TIMED_OUT",
            ChildStatus::Stopped => "STOPPED",
            ChildStatus::NotStarted => "NOT_STARTED",
        }
    }

    /// The child status of a build status.
    pub fn of(status: BuildStatus) -> ChildStatus {
        match status {
            BuildStatus::Succeeded => ChildStatus::Succeeded,
            BuildStatus::Failed => ChildStatus::Failed,
            BuildStatus::Fault => ChildStatus::Fault,
            BuildStatus::TimedOut => ChildStatus::TimedOut,
            BuildStatus::Stopped => ChildStatus::Stopped,
        }
    }
}

impl std::fmt::Display for ChildStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One child in [`BatchEventKind::BatchFinished`] and [`super::BatchResult`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChildSummary {
    /// The child's identifier.
    #[serde(rename = "build_identifier")]
    pub identifier: String,
    /// What makes it differ from its siblings, or empty.
    pub description: String,
    /// How it ended.
    pub status: ChildStatus,
    /// How long its build ran.
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    /// The first phase that did not succeed.
    pub failing_phase: Option<BuildPhase>,
    /// Whether its failure is ignored.
    pub ignore_failure: bool,
    /// Why it did not start, if it did not.
    pub reason: Option<String>,
}

impl Serialize for BatchEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let BatchEventKind::Child { identifier, event } = &self.kind {
            #[derive(Serialize)]
            struct Tagged<'a> {
                build_identifier: &'a str,
                #[serde(flatten)]
                event: &'a Event,
            }
            return Tagged {
                build_identifier: identifier,
                event,
            }
            .serialize(serializer);
        }
        #[derive(Serialize)]
        struct Wire<'a> {
            schema: u32,
            #[serde(serialize_with = "ser_rfc3339")]
            at: &'a SystemTime,
            #[serde(serialize_with = "ser_secs")]
            elapsed: &'a Duration,
            #[serde(flatten)]
            kind: &'a BatchEventKind,
        }
        Wire {
            schema: EVENT_SCHEMA_VERSION,
            at: &self.at,
            elapsed: &self.elapsed,
            kind: &self.kind,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventKind, Stream};
    use serde_json::Value;
    use std::time::UNIX_EPOCH;

    #[test]
    fn child_events_are_the_childs_json_with_its_identifier() {
        let at = UNIX_EPOCH + Duration::from_secs(1_740_830_400);
        let inner = Event::new(
            at,
            Duration::from_millis(250),
            EventKind::Output {
                stream: Stream::Stdout,
                bytes: b"hi\n".to_vec(),
            },
        );
        let plain: Value = serde_json::from_str(&inner.to_json_line()).unwrap();
        let e = BatchEvent {
            at,
            elapsed: Duration::from_secs(3),
            kind: BatchEventKind::Child {
                identifier: "linux".into(),
                event: inner,
            },
        };
        let mut tagged: Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_eq!(tagged["build_identifier"], "linux");
        tagged.as_object_mut().unwrap().remove("build_identifier");
        assert_eq!(tagged, plain);
    }

    #[test]
    fn batch_events_have_the_envelope_and_the_identifier() {
        let e = BatchEvent {
            at: UNIX_EPOCH,
            elapsed: Duration::from_millis(1500),
            kind: BatchEventKind::ChildFinished {
                identifier: "b".into(),
                status: ChildStatus::NotStarted,
                duration: Duration::ZERO,
                failing_phase: None,
                ignore_failure: false,
                reason: Some("dependency `a` FAILED".into()),
            },
        };
        let v: Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["type"], "child_finished");
        assert_eq!(v["build_identifier"], "b");
        assert_eq!(v["status"], "NOT_STARTED");
        assert_eq!(v["elapsed"], 1.5);
        assert_eq!(v["reason"], "dependency `a` FAILED");
    }
}
