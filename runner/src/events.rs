//! The events a build reports: the only thing the engine tells the world.
//!
//! Renderers (CodeBuild-style log, pretty terminal, JSON lines, log files) consume [`Event`]s and
//! know nothing about processes; the engine produces them and knows nothing about drawing.
//!
//! # JSON form (schema version [`EVENT_SCHEMA_VERSION`])
//!
//! [`Event`] serializes to one flat JSON object:
//!
//! ```json
//! {"schema":1,"at":"2025-03-01T12:00:00.250000Z","elapsed":0.25,"type":"output","stream":"stdout","bytes":"hello\n"}
//! ```
//!
//! - `schema`: [`EVENT_SCHEMA_VERSION`]; bumped on any incompatible change.
//! - `at`: wall-clock time, RFC 3339 in UTC with exactly six fractional digits (microseconds).
//! - `elapsed` and every other duration (`duration`, the third item of `phases`): **seconds as a
//!   floating-point number** (microsecond resolution).
//! - `type`: the [`EventKind`] variant in `snake_case`; the variant's fields follow at the same level.
//! - Phases and statuses use CodeBuild's upper-case names (`PRE_BUILD`, `TIMED_OUT`); streams,
//!   blocks and reasons are lower-case (`stdout`, `finally`, `timeout`).
//! - `bytes` of an [`EventKind::Output`] is a string: the bytes decoded as UTF-8, with invalid
//!   sequences replaced by U+FFFD.
//! - Paths are strings (lossy for non-UTF-8 paths).
//! - [`CommandOutcome`] is an object tagged by `result`: `{"result":"exited","code":2}`,
//!   `{"result":"signaled","signal":9}`, `{"result":"spawn_failed","message":"..."}`,
//!   `{"result":"success"}`, `{"result":"timed_out"}`, `{"result":"stopped"}`.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

/// The version of the JSON form of [`Event`]; written as `schema` in every event.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// One thing that happened during a build.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Wall-clock time of the event (serialized as RFC 3339 with microseconds, UTC).
    pub at: SystemTime,
    /// Time since the build started (serialized as float seconds).
    pub elapsed: Duration,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// An event of `kind` at `at`, `elapsed` after the build started.
    pub fn new(at: SystemTime, elapsed: Duration, kind: EventKind) -> Event {
        Event { at, elapsed, kind }
    }

    /// The event as one line of JSON, newline included.
    pub fn to_json_line(&self) -> String {
        // Every field serializes infallibly: no maps with non-string keys, paths and bytes are
        // converted lossily, floats are finite.
        let mut line = serde_json::to_string(self).expect("events always serialize to JSON");
        line.push('\n');
        line
    }

    /// Writes the event as one line of JSON to `out`.
    pub fn write_json_line<W: io::Write>(&self, mut out: W) -> io::Result<()> {
        out.write_all(self.to_json_line().as_bytes())
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            schema: u32,
            #[serde(serialize_with = "ser_rfc3339")]
            at: &'a SystemTime,
            #[serde(serialize_with = "ser_secs")]
            elapsed: &'a Duration,
            #[serde(flatten)]
            kind: &'a EventKind,
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

/// What happened. New variants may be added in minor versions.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The build began.
    BuildStarted {
        /// `CODEBUILD_BUILD_ID` (`<project>:<uuid>`).
        build_id: String,
        /// The primary source directory (`CODEBUILD_SRC_DIR`).
        #[serde(serialize_with = "ser_path")]
        source_dir: PathBuf,
        /// The buildspec file that is being run.
        #[serde(serialize_with = "ser_path")]
        buildspec_path: PathBuf,
    },
    /// A phase was entered.
    PhaseStarted {
        /// The phase.
        phase: BuildPhase,
    },
    /// A phase completed.
    PhaseFinished {
        /// The phase.
        phase: BuildPhase,
        /// How it ended.
        status: PhaseStatus,
        /// How long it took (float seconds).
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
        /// CodeBuild's phase context, present when the phase did not succeed.
        context: Option<PhaseContext>,
    },
    /// A command is about to run.
    CommandStarted {
        /// The phase it belongs to.
        phase: BuildPhase,
        /// `commands` or `finally`.
        block: Block,
        /// Its 0-based position in the block.
        index: usize,
        /// The command text as written in the buildspec.
        command: String,
    },
    /// Output of the running command (already masked).
    Output {
        /// Which stream it came from.
        stream: Stream,
        /// The bytes (serialized as a UTF-8-lossy string).
        #[serde(serialize_with = "ser_lossy")]
        bytes: Vec<u8>,
    },
    /// A command completed.
    CommandFinished {
        /// The phase it belongs to.
        phase: BuildPhase,
        /// `commands` or `finally`.
        block: Block,
        /// Its 0-based position in the block.
        index: usize,
        /// How it ended.
        outcome: CommandOutcome,
        /// How long it took (float seconds).
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
    },
    /// Something the user should know about that does not fail the build.
    Warning {
        /// The message.
        message: String,
    },
    /// An agent-level log line, such as `Processing environment variables`.
    Info {
        /// The message.
        message: String,
    },
    /// The build is being stopped; the running command gets SIGTERM, then SIGKILL.
    Cancelling {
        /// Why.
        reason: CancelReason,
    },
    /// A cache entry was restored (end of DOWNLOAD_SOURCE).
    CacheRestored {
        /// The entry's key (`None`: the project's entry without a key).
        key: Option<String>,
        /// Where the entry is.
        entry: String,
        /// Files and links restored.
        files: u64,
        /// Bytes of the restored files.
        bytes: u64,
    },
    /// No cache entry was restored: none matched, or the one found could not be used (with a
    /// warning before this event).
    CacheMissed {
        /// The keys tried in order (a fallback key ends in `*`; `(no key)` without `key`).
        keys: Vec<String>,
    },
    /// A cache entry was saved (after POST_BUILD).
    CacheSaved {
        /// The entry's key (`None`: the project's entry without a key).
        key: Option<String>,
        /// Where the entry is.
        entry: String,
        /// Files and links saved.
        files: u64,
        /// Bytes of the saved files (uncompressed).
        bytes: u64,
    },
    /// Processes the build started were still running at its end and were killed.
    ProcessesLeaked {
        /// The processes, as they were before being killed.
        processes: Vec<LeakedProcess>,
    },
    /// The final values of the buildspec's `exported-variables`, captured after POST_BUILD.
    VariablesExported {
        /// Each name with its value (secrets masked), in the buildspec's order; a variable the
        /// build never set has an empty value.
        variables: Vec<ExportedVariable>,
    },
    /// An artifact was written to the local artifacts directory.
    ArtifactUploaded {
        /// `None` for the primary artifact, else the secondary artifact's identifier.
        identifier: Option<String>,
        /// The zip file or directory written.
        #[serde(serialize_with = "ser_path")]
        path: PathBuf,
        /// How many files it holds.
        files: usize,
        /// Its size in bytes (the zip file, or the files of a directory).
        bytes: u64,
    },
    /// A report group's files were collected and parsed (in UPLOAD_ARTIFACTS).
    ReportGroupFinished {
        /// The group's name.
        group: String,
        /// Its file format (`JUNITXML`...).
        format: String,
        /// Test cases.
        total: usize,
        /// Passed test cases.
        passed: usize,
        /// Failed test cases.
        failed: usize,
        /// Skipped test cases.
        skipped: usize,
        /// Test cases that ended with an error.
        errors: usize,
        /// The test cases' total duration.
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
        /// Line coverage in percent (coverage formats, when read).
        line_coverage: Option<f64>,
        /// How many report files were found.
        files: usize,
    },
    /// Where the build's log is sent besides the terminal and the log file (reported once,
    /// right after [`EventKind::BuildStarted`]).
    Logs {
        /// The CloudWatch Logs group and stream, when the log streams there.
        cloudwatch: Option<CloudWatchLogsLocation>,
        /// The `s3://bucket/key` of the gzip object written at the end, when there is one.
        s3: Option<String>,
    },
    /// Some log lines could not be delivered to a sink before the end of the build (reported
    /// before [`EventKind::BuildFinished`], with a warning that says the same).
    LogsUndelivered {
        /// `cloudwatch` or `s3`.
        sink: String,
        /// How many lines (log events) did not arrive.
        lines: u64,
        /// How many did.
        delivered: u64,
        /// The last error from the service, or why the sink gave up.
        reason: String,
    },
    /// The build completed.
    BuildFinished {
        /// The overall result.
        status: BuildStatus,
        /// How long the build took (float seconds).
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
        /// Every phase in order with its status and duration.
        phases: Vec<PhaseSummary>,
    },
}

/// One variable of [`EventKind::VariablesExported`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportedVariable {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// A CloudWatch Logs stream of [`EventKind::Logs`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CloudWatchLogsLocation {
    /// The log group.
    pub group: String,
    /// The log stream.
    pub stream: String,
    /// The region.
    pub region: String,
    /// The stream in the AWS console.
    pub url: String,
}

/// One line of the build summary in [`EventKind::BuildFinished`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseSummary {
    /// The phase.
    pub phase: BuildPhase,
    /// How it ended ([`PhaseStatus::NotRun`] when it was skipped).
    pub status: PhaseStatus,
    /// How long it took (float seconds).
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
}

/// CodeBuild's phase context: why a phase did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PhaseContext {
    /// The status code, such as `COMMAND_EXECUTION_ERROR` or `CLIENT_ERROR`.
    pub code: String,
    /// The message, such as `Error while executing command: make. Reason: exit status 2`.
    pub message: String,
}

/// The phases of a build, in order. `Display` gives CodeBuild's name (`PRE_BUILD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BuildPhase {
    /// Fetching and validating the source and the buildspec, resolving secrets, restoring caches.
    DownloadSource,
    /// `phases.install`.
    Install,
    /// `phases.pre_build`.
    PreBuild,
    /// `phases.build`.
    Build,
    /// `phases.post_build`.
    PostBuild,
    /// Collecting and packaging artifacts.
    UploadArtifacts,
    /// Cleaning up.
    Finalizing,
}

impl BuildPhase {
    /// Every phase, in the order they run.
    pub const ALL: [BuildPhase; 7] = [
        BuildPhase::DownloadSource,
        BuildPhase::Install,
        BuildPhase::PreBuild,
        BuildPhase::Build,
        BuildPhase::PostBuild,
        BuildPhase::UploadArtifacts,
        BuildPhase::Finalizing,
    ];

    /// CodeBuild's name for the phase (`DOWNLOAD_SOURCE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            BuildPhase::DownloadSource => "DOWNLOAD_SOURCE",
            BuildPhase::Install => "INSTALL",
            BuildPhase::PreBuild => "PRE_BUILD",
            BuildPhase::Build => "BUILD",
            BuildPhase::PostBuild => "POST_BUILD",
            BuildPhase::UploadArtifacts => "UPLOAD_ARTIFACTS",
            BuildPhase::Finalizing => "FINALIZING",
        }
    }
}

impl fmt::Display for BuildPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a phase ended. `Display` gives CodeBuild's name (`TIMED_OUT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PhaseStatus {
    /// Every command succeeded.
    Succeeded,
    /// A command failed (or the phase's own work failed).
    Failed,
    /// The agent or a service it needs failed.
    Fault,
    /// The build timeout expired during the phase.
    TimedOut,
    /// The build was stopped (SIGINT/SIGTERM) during the phase.
    Stopped,
    /// The phase was skipped because of an earlier failure, timeout or stop (`NOT_RUN`; not a
    /// CodeBuild status: CodeBuild omits such phases).
    NotRun,
}

impl PhaseStatus {
    /// The status's name (`SUCCEEDED`, ..., `NOT_RUN`).
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Succeeded => "SUCCEEDED",
            PhaseStatus::Failed => "FAILED",
            PhaseStatus::Fault => "FAULT",
            PhaseStatus::TimedOut => "TIMED_OUT",
            PhaseStatus::Stopped => "STOPPED",
            PhaseStatus::NotRun => "NOT_RUN",
        }
    }
}

impl fmt::Display for PhaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a build ended. `Display` gives CodeBuild's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BuildStatus {
    /// Every phase succeeded.
    Succeeded,
    /// A phase failed.
    Failed,
    /// The agent or a service it needs failed.
    Fault,
    /// The build timeout expired.
    TimedOut,
    /// The build was stopped.
    Stopped,
}

impl BuildStatus {
    /// The status's name (`SUCCEEDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Succeeded => "SUCCEEDED",
            BuildStatus::Failed => "FAILED",
            BuildStatus::Fault => "FAULT",
            BuildStatus::TimedOut => "TIMED_OUT",
            BuildStatus::Stopped => "STOPPED",
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which list of a phase a command belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Block {
    /// `commands`.
    Commands,
    /// `finally`.
    Finally,
    /// A `runtime-versions` install command, from the build image's `runtimes.yml` (INSTALL,
    /// before `commands`; the index counts within one runtime's commands).
    Runtime,
}

/// An output stream of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Why a build is being cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The build timeout expired.
    Timeout,
    /// The agent received SIGINT or SIGTERM.
    Signal,
}

/// How one command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Exit status 0.
    Success,
    /// A non-zero exit status.
    Exited(i32),
    /// Killed by this signal number (not by the agent).
    Signaled(i32),
    /// Killed by the agent because the build timed out.
    TimedOut,
    /// Killed by the agent because the build was stopped.
    Stopped,
    /// The shell could not be started; the message says why.
    SpawnFailed(String),
}

impl CommandOutcome {
    /// Whether the command succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, CommandOutcome::Success)
    }

    /// The exit status a shell would report for the command: 0, the exit code, or 128 plus the
    /// signal number. `None` when the agent ended the command or could not start it.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            CommandOutcome::Success => Some(0),
            CommandOutcome::Exited(code) => Some(*code),
            CommandOutcome::Signaled(sig) => Some(128 + sig),
            CommandOutcome::TimedOut | CommandOutcome::Stopped | CommandOutcome::SpawnFailed(_) => {
                None
            }
        }
    }
}

impl fmt::Display for CommandOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandOutcome::Success => f.write_str("exit status 0"),
            CommandOutcome::Exited(code) => write!(f, "exit status {code}"),
            CommandOutcome::Signaled(sig) => write!(f, "killed by signal {sig}"),
            CommandOutcome::TimedOut => f.write_str("timed out"),
            CommandOutcome::Stopped => f.write_str("stopped"),
            CommandOutcome::SpawnFailed(msg) => write!(f, "could not start: {msg}"),
        }
    }
}

impl Serialize for CommandOutcome {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(tag = "result", rename_all = "snake_case")]
        enum Wire<'a> {
            Success,
            Exited { code: i32 },
            Signaled { signal: i32 },
            TimedOut,
            Stopped,
            SpawnFailed { message: &'a str },
        }
        match self {
            CommandOutcome::Success => Wire::Success,
            CommandOutcome::Exited(code) => Wire::Exited { code: *code },
            CommandOutcome::Signaled(signal) => Wire::Signaled { signal: *signal },
            CommandOutcome::TimedOut => Wire::TimedOut,
            CommandOutcome::Stopped => Wire::Stopped,
            CommandOutcome::SpawnFailed(message) => Wire::SpawnFailed { message },
        }
        .serialize(serializer)
    }
}

/// A process that outlived its build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeakedProcess {
    /// Its process id.
    pub pid: i32,
    /// Its command line (arguments joined by spaces), or `[name]` when it has none.
    pub command_line: String,
}

pub(crate) fn ser_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    // Round to microseconds so the JSON does not carry float noise like 0.30000000000000004.
    s.serialize_f64(d.as_micros() as f64 / 1e6)
}

fn ser_lossy<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

pub(crate) fn ser_path<S: Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

pub(crate) fn ser_rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_micros(*t))
}

/// Formats `t` as RFC 3339 in UTC with microseconds: `2025-03-01T12:00:00.250000Z`. Times before
/// 1970 are clamped to the epoch.
pub fn rfc3339_micros(t: SystemTime) -> String {
    let t = crate::utc::utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::time::UNIX_EPOCH;

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    fn json_of(kind: EventKind) -> Value {
        let e = Event::new(
            at(1_740_830_400, 250_000),
            Duration::from_millis(1500),
            kind,
        );
        let line = e.to_json_line();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn log_sink_events() {
        let v = json_of(EventKind::Logs {
            cloudwatch: Some(CloudWatchLogsLocation {
                group: "/aws/codebuild/app".into(),
                stream: "u-1".into(),
                region: "eu-west-1".into(),
                url: "https://example".into(),
            }),
            s3: None,
        });
        assert_eq!(v["type"], "logs");
        assert_eq!(
            v["cloudwatch"],
            json!({"group": "/aws/codebuild/app", "stream": "u-1", "region": "eu-west-1", "url": "https://example"})
        );
        assert_eq!(v["s3"], Value::Null);
        let v = json_of(EventKind::LogsUndelivered {
            sink: "cloudwatch".into(),
            lines: 12,
            delivered: 3,
            reason: "connection refused".into(),
        });
        assert_eq!(
            (
                v["type"].clone(),
                v["sink"].clone(),
                v["lines"].clone(),
                v["delivered"].clone()
            ),
            (
                json!("logs_undelivered"),
                json!("cloudwatch"),
                json!(12),
                json!(3)
            )
        );
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(at(1_740_830_400, 250_000)),
            "2025-03-01T12:00:00.250000Z"
        );
        // Leap day and end of year.
        assert_eq!(
            rfc3339_micros(at(951_782_400, 1)),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(
            rfc3339_micros(at(1_704_067_199, 999_999)),
            "2023-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn envelope_and_output() {
        let v = json_of(EventKind::Output {
            stream: Stream::Stderr,
            bytes: b"caf\xc3\xa9 \xff\n".to_vec(),
        });
        assert_eq!(
            v,
            json!({
                "schema": 1,
                "at": "2025-03-01T12:00:00.250000Z",
                "elapsed": 1.5,
                "type": "output",
                "stream": "stderr",
                "bytes": "café \u{fffd}\n",
            })
        );
    }

    #[test]
    fn artifact_uploaded() {
        let v = json_of(EventKind::ArtifactUploaded {
            identifier: Some("docs".into()),
            path: "/out/docs.zip".into(),
            files: 3,
            bytes: 1234,
        });
        assert_eq!(v["type"], "artifact_uploaded");
        assert_eq!(v["identifier"], "docs");
        assert_eq!(v["path"], "/out/docs.zip");
        assert_eq!(v["files"], 3);
        assert_eq!(v["bytes"], 1234);
        let v = json_of(EventKind::ArtifactUploaded {
            identifier: None,
            path: "/out/artifacts.zip".into(),
            files: 1,
            bytes: 1,
        });
        assert_eq!(v["identifier"], serde_json::Value::Null);
    }

    #[test]
    fn report_group_finished() {
        let v = json_of(EventKind::ReportGroupFinished {
            group: "unit".into(),
            format: "JUNITXML".into(),
            total: 3,
            passed: 1,
            failed: 1,
            skipped: 1,
            errors: 0,
            duration: Duration::from_millis(1500),
            line_coverage: None,
            files: 2,
        });
        assert_eq!(v["type"], "report_group_finished");
        assert_eq!(v["group"], "unit");
        assert_eq!(v["format"], "JUNITXML");
        assert_eq!(v["failed"], 1);
        assert_eq!(v["duration"], 1.5);
        assert_eq!(v["line_coverage"], serde_json::Value::Null);
        assert_eq!(v["files"], 2);
    }

    #[test]
    fn cache_events() {
        let v = json_of(EventKind::CacheRestored {
            key: Some("npm-1".into()),
            entry: "/c/p/v/keys/npm-1.tar.zst".into(),
            files: 3,
            bytes: 1234,
        });
        assert_eq!(v["type"], "cache_restored");
        assert_eq!(v["key"], "npm-1");
        assert_eq!(v["files"], 3);
        let v = json_of(EventKind::CacheSaved {
            key: None,
            entry: "/c/p/v/default.tar.zst".into(),
            files: 1,
            bytes: 1,
        });
        assert_eq!(v["type"], "cache_saved");
        assert_eq!(v["key"], serde_json::Value::Null);
        let v = json_of(EventKind::CacheMissed {
            keys: vec!["npm-1".into(), "npm-*".into()],
        });
        assert_eq!(v["type"], "cache_missed");
        assert_eq!(v["keys"][1], "npm-*");
    }

    #[test]
    fn phase_and_command_events() {
        let v = json_of(EventKind::PhaseFinished {
            phase: BuildPhase::PreBuild,
            status: PhaseStatus::TimedOut,
            duration: Duration::from_micros(2_000_001),
            context: Some(PhaseContext {
                code: "COMMAND_EXECUTION_ERROR".into(),
                message: "Error while executing command: make. Reason: exit status 2".into(),
            }),
        });
        assert_eq!(v["type"], "phase_finished");
        assert_eq!(v["phase"], "PRE_BUILD");
        assert_eq!(v["status"], "TIMED_OUT");
        assert_eq!(v["duration"], 2.000001);
        assert_eq!(v["context"]["code"], "COMMAND_EXECUTION_ERROR");

        let v = json_of(EventKind::CommandFinished {
            phase: BuildPhase::Build,
            block: Block::Finally,
            index: 2,
            outcome: CommandOutcome::Exited(3),
            duration: Duration::from_millis(10),
        });
        assert_eq!(v["block"], "finally");
        assert_eq!(v["outcome"], json!({"result": "exited", "code": 3}));

        let v = json_of(EventKind::BuildFinished {
            status: BuildStatus::Failed,
            duration: Duration::from_secs(3),
            phases: vec![PhaseSummary {
                phase: BuildPhase::UploadArtifacts,
                status: PhaseStatus::NotRun,
                duration: Duration::ZERO,
            }],
        });
        assert_eq!(
            v["phases"],
            json!([{"phase": "UPLOAD_ARTIFACTS", "status": "NOT_RUN", "duration": 0.0}])
        );

        let v = json_of(EventKind::BuildStarted {
            build_id: "p:1".into(),
            source_dir: "/src".into(),
            buildspec_path: "/src/buildspec.yml".into(),
        });
        assert_eq!(v["source_dir"], "/src");
        let v = json_of(EventKind::Cancelling {
            reason: CancelReason::Signal,
        });
        assert_eq!(v["reason"], "signal");
        let v = json_of(EventKind::ProcessesLeaked {
            processes: vec![LeakedProcess {
                pid: 42,
                command_line: "sleep 600".into(),
            }],
        });
        assert_eq!(
            v["processes"],
            json!([{"pid": 42, "command_line": "sleep 600"}])
        );
    }

    #[test]
    fn outcomes() {
        let cases = [
            (
                CommandOutcome::Success,
                Some(0),
                json!({"result": "success"}),
            ),
            (
                CommandOutcome::Signaled(9),
                Some(137),
                json!({"result": "signaled", "signal": 9}),
            ),
            (
                CommandOutcome::TimedOut,
                None,
                json!({"result": "timed_out"}),
            ),
            (CommandOutcome::Stopped, None, json!({"result": "stopped"})),
            (
                CommandOutcome::SpawnFailed("no such file".into()),
                None,
                json!({"result": "spawn_failed", "message": "no such file"}),
            ),
        ];
        for (outcome, code, wire) in cases {
            assert_eq!(outcome.exit_code(), code);
            assert_eq!(outcome.is_success(), code == Some(0));
            assert_eq!(serde_json::to_value(&outcome).unwrap(), wire);
        }
        assert_eq!(CommandOutcome::Exited(2).to_string(), "exit status 2");
    }

    #[test]
    fn display_names() {
        let names: Vec<String> = BuildPhase::ALL.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            names,
            [
                "DOWNLOAD_SOURCE",
                "INSTALL",
                "PRE_BUILD",
                "BUILD",
                "POST_BUILD",
                "UPLOAD_ARTIFACTS",
                "FINALIZING"
            ]
        );
        for p in BuildPhase::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert_eq!(PhaseStatus::TimedOut.to_string(), "TIMED_OUT");
        assert_eq!(BuildStatus::Stopped.to_string(), "STOPPED");
        assert_eq!(
            serde_json::to_value(PhaseStatus::NotRun).unwrap(),
            "NOT_RUN"
        );
    }
}
