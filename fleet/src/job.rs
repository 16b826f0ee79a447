//! The job: one build request on the queue, shaped like CodeBuild's `StartBuild` request.
//!
//! A job is a JSON object with CodeBuild's field names (`projectName`, `sourceLocationOverride`,
//! `environmentVariablesOverride`, ...), plus `schemaVersion` (this crate reads
//! [`SCHEMA_VERSION`]) and the build `id` (`<project>:<uuid>`, given by `submit`). [`Job::parse`]
//! reads one, [`Job::validate`] checks what serde cannot (the id's shape, ranges, the override
//! types), and fields this version does not know are kept as warnings rather than refused, so
//! that a newer submitter can talk to an older worker. [`json_schema`] is the same contract as a
//! JSON Schema (`buildagent schema --job`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The job format this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// CodeBuild's bounds for `timeoutInMinutesOverride`.
pub const TIMEOUT_MINUTES: std::ops::RangeInclusive<u32> = 5..=2160;

/// One build request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// The job format's version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The build id, `<project>:<uuid>`.
    pub id: String,
    /// The project (names the log group `/aws/codebuild/<project>` and the build number's series).
    pub project_name: String,
    /// Where the primary source is: `s3://bucket/key.zip`, `s3://bucket/prefix/` (a folder), a
    /// Git URL; `None` or `NO_SOURCE`: the build has no source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_location_override: Option<String>,
    /// CodeBuild's source type (`S3`, `GITHUB`, `CODECOMMIT`, `BITBUCKET`, `GITHUB_ENTERPRISE`,
    /// `NO_SOURCE`); informative, the location says how to fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type_override: Option<String>,
    /// The primary source's version: a Git commit, branch, tag or `pr/N`; an S3 object version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// Secondary sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary_sources_override: Vec<SecondarySource>,
    /// Secondary sources' versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary_sources_version_override: Vec<SecondaryVersion>,
    /// A buildspec path in the source, or the buildspec's YAML itself (a text with a newline or
    /// a `: `, which a path never has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildspec_override: Option<String>,
    /// Variables set for this build (the highest precedence, as `--env-var`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_variables_override: Vec<EnvironmentVariable>,
    /// The build image (run with the worker's docker executor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_override: Option<String>,
    /// Run the build container privileged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged_mode_override: Option<bool>,
    /// The build's timeout in minutes ([`TIMEOUT_MINUTES`]; default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_in_minutes_override: Option<u32>,
    /// Where artifacts go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts_override: Option<Artifacts>,
    /// Where logs go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_config_override: Option<LogsConfig>,
    /// Git clone depth (0: full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_clone_depth_override: Option<u32>,
    /// Git submodules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_submodules_config_override: Option<GitSubmodulesConfig>,
    /// The submitter's idempotency token (kept in the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_token: Option<String>,
}

/// A secondary source (`secondarySourcesOverride[]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondarySource {
    /// Its identifier (`CODEBUILD_SRC_DIR_<id>`).
    pub source_identifier: String,
    /// Its location (as the primary's).
    pub location: String,
    /// CodeBuild's source type; informative.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
}

/// A secondary source's version (`secondarySourcesVersionOverride[]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondaryVersion {
    /// The source's identifier.
    pub source_identifier: String,
    /// Its version.
    pub source_version: String,
}

/// Where a variable's value comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VariableType {
    /// The value itself.
    #[default]
    Plaintext,
    /// The name of an SSM Parameter Store parameter, read when the build starts (masked).
    ParameterStore,
    /// A Secrets Manager reference (`secret-id[:json-key[:version-stage[:version-id]]]`), read
    /// when the build starts (masked).
    SecretsManager,
}

/// One of `environmentVariablesOverride`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentVariable {
    /// The variable's name.
    pub name: String,
    /// Its value, or the parameter or secret that holds it.
    pub value: String,
    /// How `value` is read (default `PLAINTEXT`).
    #[serde(default, rename = "type")]
    pub kind: VariableType,
}

/// `artifactsOverride`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifacts {
    /// `S3` or `NO_ARTIFACTS`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The bucket (`S3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The key prefix in the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The artifact's name (default: the project's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `NONE` or `BUILD_ID` (the build's uuid between path and name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_type: Option<String>,
    /// `ZIP` or `NONE` (files as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packaging: Option<String>,
}

/// `logsConfigOverride`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsConfig {
    /// CloudWatch Logs (default: enabled, group `/aws/codebuild/<project>`, stream the uuid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_watch_logs: Option<CloudWatchLogsConfig>,
    /// S3 logs (default: disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_logs: Option<S3LogsConfig>,
}

/// `logsConfigOverride.cloudWatchLogs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudWatchLogsConfig {
    /// `ENABLED` or `DISABLED`.
    pub status: String,
    /// The group (default `/aws/codebuild/<project>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// The stream (default: the build's uuid; a given name gets `/<uuid>` appended, as CodeBuild).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
}

/// `logsConfigOverride.s3Logs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3LogsConfig {
    /// `ENABLED` or `DISABLED`.
    pub status: String,
    /// `bucket/prefix` (as CodeBuild, without `s3://`; a leading `s3://` is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// `gitSubmodulesConfigOverride`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitSubmodulesConfig {
    /// Fetch the submodules.
    pub fetch_submodules: bool,
}

/// A job that cannot be run, and why (the record's `statusReason`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Not a JSON object of the job's shape.
    #[error("job: {0}")]
    Invalid(String),
    /// A schema version this worker does not read.
    #[error("job: schemaVersion {found} is not supported (this worker reads {SCHEMA_VERSION})")]
    Version {
        /// The message's version.
        found: u32,
    },
}

/// A parsed job and the fields it had that this version does not know.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// The job.
    pub job: Job,
    /// Warnings: one per unknown field, naming its path (`logsConfigOverride.foo`).
    pub warnings: Vec<String>,
}

impl Job {
    /// A job for `project` with a new build id and nothing overridden.
    pub fn new(project: &str) -> Job {
        Job {
            schema_version: SCHEMA_VERSION,
            id: format!("{project}:{}", uuid::Uuid::new_v4()),
            project_name: project.to_string(),
            ..Job::default()
        }
    }

    /// Reads and validates a job from a message body. Unknown fields become warnings; a missing
    /// or mistyped field, or a value out of range, is a [`JobError`] naming the field.
    pub fn parse(body: &str) -> Result<Parsed, JobError> {
        let value: Value =
            serde_json::from_str(body).map_err(|e| JobError::Invalid(format!("not JSON: {e}")))?;
        if !value.is_object() {
            return Err(JobError::Invalid("not a JSON object".into()));
        }
        // The version first: a newer format's other fields would only confuse the errors.
        match value.get("schemaVersion") {
            None => {
                return Err(JobError::Invalid(
                    "missing required field `schemaVersion`".into(),
                ))
            }
            Some(v) => match v.as_u64() {
                Some(n) if n == u64::from(SCHEMA_VERSION) => {}
                Some(n) => {
                    return Err(JobError::Version {
                        found: u32::try_from(n).unwrap_or(u32::MAX),
                    })
                }
                None => {
                    return Err(JobError::Invalid(format!(
                        "`schemaVersion` must be a number, not {v}"
                    )))
                }
            },
        }
        let mut warnings = Vec::new();
        unknown_fields(&value, KNOWN[0].1, "", &mut warnings);
        let job: Job = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || inner.starts_with("missing field") {
                JobError::Invalid(inner.replace("missing field", "missing required field"))
            } else {
                JobError::Invalid(format!("`{path}`: {inner}"))
            }
        })?;
        job.validate()?;
        Ok(Parsed { job, warnings })
    }

    /// Checks what the types do not: the id's shape, the project's name, ranges and the
    /// enumerations CodeBuild defines.
    pub fn validate(&self) -> Result<(), JobError> {
        let invalid = |m: String| Err(JobError::Invalid(m));
        if self.project_name.is_empty() {
            return invalid("`projectName` is empty".into());
        }
        if !self
            .project_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || self.project_name.len() > 255
        {
            return invalid(format!(
                "`projectName` `{}`: use letters, digits, `-` and `_` (at most 255), as CodeBuild",
                self.project_name
            ));
        }
        match self.id.split_once(':') {
            Some((project, uuid))
                if project == self.project_name && uuid::Uuid::parse_str(uuid).is_ok() => {}
            _ => {
                return invalid(format!(
                    "`id` `{}` is not `{}:<uuid>`",
                    self.id, self.project_name
                ))
            }
        }
        if let Some(minutes) = self.timeout_in_minutes_override {
            if !TIMEOUT_MINUTES.contains(&minutes) {
                return invalid(format!(
                    "`timeoutInMinutesOverride` {minutes} is out of range ({} to {})",
                    TIMEOUT_MINUTES.start(),
                    TIMEOUT_MINUTES.end()
                ));
            }
        }
        for (i, variable) in self.environment_variables_override.iter().enumerate() {
            if variable.name.is_empty() || variable.name.contains('=') {
                return invalid(format!(
                    "`environmentVariablesOverride[{i}].name` `{}` is not a variable name",
                    variable.name
                ));
            }
        }
        for (i, source) in self.secondary_sources_override.iter().enumerate() {
            let id = &source.source_identifier;
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return invalid(format!(
                    "`secondarySourcesOverride[{i}].sourceIdentifier` `{id}`: use letters, digits and `_`"
                ));
            }
        }
        if let Some(artifacts) = &self.artifacts_override {
            match artifacts.kind.as_str() {
                "NO_ARTIFACTS" => {}
                "S3" if artifacts.location.as_deref().is_some_and(|l| !l.is_empty()) => {}
                "S3" => {
                    return invalid(
                        "`artifactsOverride.location`: an S3 artifact needs the bucket".into(),
                    )
                }
                other => {
                    return invalid(format!(
                    "`artifactsOverride.type` `{other}`: this worker writes `S3` or `NO_ARTIFACTS`"
                ))
                }
            }
            one_of(
                "artifactsOverride.namespaceType",
                &artifacts.namespace_type,
                &["NONE", "BUILD_ID"],
            )?;
            one_of(
                "artifactsOverride.packaging",
                &artifacts.packaging,
                &["NONE", "ZIP"],
            )?;
        }
        if let Some(logs) = &self.logs_config_override {
            if let Some(cw) = &logs.cloud_watch_logs {
                one_of(
                    "logsConfigOverride.cloudWatchLogs.status",
                    &Some(cw.status.clone()),
                    &["ENABLED", "DISABLED"],
                )?;
            }
            if let Some(s3) = &logs.s3_logs {
                one_of(
                    "logsConfigOverride.s3Logs.status",
                    &Some(s3.status.clone()),
                    &["ENABLED", "DISABLED"],
                )?;
                if s3.status == "ENABLED" && s3.location.as_deref().is_none_or(str::is_empty) {
                    return invalid("`logsConfigOverride.s3Logs.location`: enabled S3 logs need `bucket/prefix`".into());
                }
            }
        }
        Ok(())
    }

    /// The build's uuid (the part of the id after the project).
    pub fn uuid(&self) -> &str {
        self.id.split_once(':').map_or(&*self.id, |(_, uuid)| uuid)
    }

    /// The job as the JSON a message carries.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job always serializes")
    }

    /// The buildspec override when it is the buildspec's text rather than a path in the source:
    /// A path never has a newline, and a one-line YAML mapping has a `: `.
    pub fn inline_buildspec(&self) -> Option<&str> {
        self.buildspec_override
            .as_deref()
            .filter(|text| text.contains('\n') || text.contains(": "))
    }
}

fn one_of(field: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), JobError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(JobError::Invalid(format!(
            "`{field}` `{v}`: expected one of {}",
            allowed.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// The fields this format knows, by path (`""` for the job itself, `[]` for an array's items).
const KNOWN: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "schemaVersion",
            "id",
            "projectName",
            "sourceLocationOverride",
            "sourceTypeOverride",
            "sourceVersion",
            "secondarySourcesOverride",
            "secondarySourcesVersionOverride",
            "buildspecOverride",
            "environmentVariablesOverride",
            "imageOverride",
            "privilegedModeOverride",
            "timeoutInMinutesOverride",
            "artifactsOverride",
            "logsConfigOverride",
            "gitCloneDepthOverride",
            "gitSubmodulesConfigOverride",
            "idempotencyToken",
        ],
    ),
    (
        "secondarySourcesOverride[]",
        &["sourceIdentifier", "location", "type"],
    ),
    (
        "secondarySourcesVersionOverride[]",
        &["sourceIdentifier", "sourceVersion"],
    ),
    ("environmentVariablesOverride[]", &["name", "value", "type"]),
    (
        "artifactsOverride",
        &[
            "type",
            "location",
            "path",
            "name",
            "namespaceType",
            "packaging",
        ],
    ),
    ("logsConfigOverride", &["cloudWatchLogs", "s3Logs"]),
    (
        "logsConfigOverride.cloudWatchLogs",
        &["status", "groupName", "streamName"],
    ),
    ("logsConfigOverride.s3Logs", &["status", "location"]),
    ("gitSubmodulesConfigOverride", &["fetchSubmodules"]),
];

fn unknown_fields(value: &Value, fields: &[&str], path: &str, warnings: &mut Vec<String>) {
    let Some(object) = value.as_object() else {
        return;
    };
    for (key, child) in object {
        let child_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if !fields.contains(&key.as_str()) {
            warnings.push(format!("job: unknown field `{child_path}` ignored"));
            continue;
        }
        let (items, pattern) = match child {
            Value::Array(items) => (items.iter().collect::<Vec<_>>(), format!("{child_path}[]")),
            other => (vec![other], child_path.clone()),
        };
        if let Some((_, known)) = KNOWN.iter().find(|(p, _)| *p == pattern) {
            for item in items {
                unknown_fields(item, known, &pattern, warnings);
            }
        }
    }
}

/// The job format as a JSON Schema (draft 2020-12), for `buildagent schema --job`.
pub fn json_schema() -> Value {
    let string = json!({"type": "string"});
    let status = json!({"enum": ["ENABLED", "DISABLED"]});
    let mut properties = BTreeMap::new();
    let mut add = |name: &str, schema: Value| {
        properties.insert(name.to_string(), schema);
    };
    add(
        "schemaVersion",
        json!({"const": SCHEMA_VERSION, "description": "the job format's version"}),
    );
    add(
        "id",
        json!({"type": "string", "pattern": "^[A-Za-z0-9_-]+:[0-9a-f-]{36}$", "description": "the build id, <projectName>:<uuid>"}),
    );
    add(
        "projectName",
        json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,255}$"}),
    );
    add(
        "sourceLocationOverride",
        json!({"type": "string", "description": "s3://bucket/key.zip, s3://bucket/prefix/, a Git URL, or NO_SOURCE"}),
    );
    add(
        "sourceTypeOverride",
        json!({"enum": ["S3", "GITHUB", "GITHUB_ENTERPRISE", "BITBUCKET", "CODECOMMIT", "GITLAB", "GITLAB_SELF_MANAGED", "NO_SOURCE"]}),
    );
    add("sourceVersion", string.clone());
    add(
        "secondarySourcesOverride",
        json!({"type": "array", "items": {
        "type": "object", "required": ["sourceIdentifier", "location"],
        "properties": {"sourceIdentifier": {"type": "string", "pattern": "^[A-Za-z0-9_]+$"}, "location": string, "type": string}}}),
    );
    add(
        "secondarySourcesVersionOverride",
        json!({"type": "array", "items": {
        "type": "object", "required": ["sourceIdentifier", "sourceVersion"],
        "properties": {"sourceIdentifier": string, "sourceVersion": string}}}),
    );
    add(
        "buildspecOverride",
        json!({"type": "string", "description": "a path in the source, or the buildspec's YAML (a text with a newline or a `: `)"}),
    );
    add(
        "environmentVariablesOverride",
        json!({"type": "array", "items": {
        "type": "object", "required": ["name", "value"],
        "properties": {"name": {"type": "string", "pattern": "^[^=]+$"}, "value": string,
                       "type": {"enum": ["PLAINTEXT", "PARAMETER_STORE", "SECRETS_MANAGER"], "default": "PLAINTEXT"}}}}),
    );
    add("imageOverride", string.clone());
    add("privilegedModeOverride", json!({"type": "boolean"}));
    add(
        "timeoutInMinutesOverride",
        json!({"type": "integer", "minimum": TIMEOUT_MINUTES.start(), "maximum": TIMEOUT_MINUTES.end()}),
    );
    add(
        "artifactsOverride",
        json!({"type": "object", "required": ["type"], "properties": {
        "type": {"enum": ["S3", "NO_ARTIFACTS"]}, "location": {"type": "string", "description": "the bucket"},
        "path": string, "name": string, "namespaceType": {"enum": ["NONE", "BUILD_ID"]},
        "packaging": {"enum": ["NONE", "ZIP"]}}}),
    );
    add(
        "logsConfigOverride",
        json!({"type": "object", "properties": {
        "cloudWatchLogs": {"type": "object", "required": ["status"], "properties": {"status": status, "groupName": string, "streamName": string}},
        "s3Logs": {"type": "object", "required": ["status"], "properties": {"status": status, "location": {"type": "string", "description": "bucket/prefix"}}}}}),
    );
    add(
        "gitCloneDepthOverride",
        json!({"type": "integer", "minimum": 0}),
    );
    add(
        "gitSubmodulesConfigOverride",
        json!({"type": "object", "required": ["fetchSubmodules"], "properties": {"fetchSubmodules": {"type": "boolean"}}}),
    );
    add("idempotencyToken", string);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://buildagent.dev/schema/job-v1.json",
        "title": "buildagent job",
        "description": "One build request on the fleet's queue, shaped like CodeBuild's StartBuild request. Fields not listed are ignored with a warning.",
        "type": "object",
        "required": ["schemaVersion", "id", "projectName"],
        "properties": properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":1,"id":"web:0b6f4f7e-3c1a-4f7e-9a51-8d2f1c0e5b11","projectName":"web"{extra}}}"#
        )
    }

    #[test]
    fn a_minimal_job_parses_and_round_trips() {
        let parsed = Job::parse(&body("")).unwrap();
        assert!(parsed.warnings.is_empty());
        assert_eq!(parsed.job.project_name, "web");
        assert_eq!(parsed.job.uuid(), "0b6f4f7e-3c1a-4f7e-9a51-8d2f1c0e5b11");
        assert_eq!(Job::parse(&parsed.job.to_json()).unwrap().job, parsed.job);
    }

    #[test]
    fn every_field_parses() {
        let parsed = Job::parse(&body(
            r#","sourceLocationOverride":"s3://b/src.zip","sourceVersion":"v1",
            "secondarySourcesOverride":[{"sourceIdentifier":"lib","location":"https://h/r.git","type":"GITHUB"}],
            "secondarySourcesVersionOverride":[{"sourceIdentifier":"lib","sourceVersion":"main"}],
            "buildspecOverride":"version: 0.2\nphases: {}\n",
            "environmentVariablesOverride":[{"name":"A","value":"1"},{"name":"T","value":"/p/t","type":"PARAMETER_STORE"}],
            "imageOverride":"busybox","privilegedModeOverride":true,"timeoutInMinutesOverride":5,
            "artifactsOverride":{"type":"S3","location":"out","path":"p","name":"a.zip","namespaceType":"BUILD_ID","packaging":"ZIP"},
            "logsConfigOverride":{"cloudWatchLogs":{"status":"ENABLED","groupName":"g"},"s3Logs":{"status":"ENABLED","location":"b/logs"}},
            "gitCloneDepthOverride":1,"gitSubmodulesConfigOverride":{"fetchSubmodules":true},"idempotencyToken":"t""#,
        ))
        .unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let job = parsed.job;
        assert_eq!(
            job.environment_variables_override[1].kind,
            VariableType::ParameterStore
        );
        assert_eq!(
            job.environment_variables_override[0].kind,
            VariableType::Plaintext
        );
        assert!(job.inline_buildspec().is_some());
        assert_eq!(
            job.secondary_sources_override[0].source_type.as_deref(),
            Some("GITHUB")
        );
        assert_eq!(Job::parse(&job.to_json()).unwrap().job, job);
    }

    #[test]
    fn a_buildspec_override_is_inline_yaml_or_a_path() {
        let mut job = Job::new("web");
        for (text, inline) in [
            ("version: 0.2\nphases: {}\n", true),
            ("{version: 0.2, phases: {build: {commands: [make]}}}", true),
            ("ci/buildspec.yml", false),
            ("build:spec.yml", false),
        ] {
            job.buildspec_override = Some(text.into());
            assert_eq!(job.inline_buildspec().is_some(), inline, "{text}");
        }
    }

    #[test]
    fn unknown_fields_are_warnings_with_their_path() {
        let parsed = Job::parse(&body(
            r#","queuedTimeoutInMinutesOverride":5,"logsConfigOverride":{"cloudWatchLogs":{"status":"DISABLED","colour":"red"}},"environmentVariablesOverride":[{"name":"A","value":"1","secret":true}]"#,
        ))
        .unwrap();
        assert_eq!(
            parsed.warnings,
            [
                "job: unknown field `environmentVariablesOverride[].secret` ignored",
                "job: unknown field `logsConfigOverride.cloudWatchLogs.colour` ignored",
                "job: unknown field `queuedTimeoutInMinutesOverride` ignored",
            ]
        );
    }

    #[test]
    fn bad_jobs_say_which_field() {
        let cases = [
            ("nope", "job: not JSON"),
            ("[1]", "job: not a JSON object"),
            (
                r#"{"id":"x"}"#,
                "job: missing required field `schemaVersion`",
            ),
            (
                r#"{"schemaVersion":2}"#,
                "job: schemaVersion 2 is not supported",
            ),
            (
                r#"{"schemaVersion":1,"id":"web:0b6f4f7e-3c1a-4f7e-9a51-8d2f1c0e5b11"}"#,
                "job: missing required field `projectName`",
            ),
            (
                &body(r#","timeoutInMinutesOverride":"ten""#),
                "job: `timeoutInMinutesOverride`: invalid type: string \"ten\"",
            ),
            (
                &body(r#","timeoutInMinutesOverride":1"#),
                "job: `timeoutInMinutesOverride` 1 is out of range (5 to 2160)",
            ),
            (
                &body(
                    r#","environmentVariablesOverride":[{"name":"A","value":"1","type":"VAULT"}]"#,
                ),
                "job: `environmentVariablesOverride[0].type`: unknown variant `VAULT`",
            ),
            (
                &body(r#","artifactsOverride":{"type":"S3"}"#),
                "job: `artifactsOverride.location`: an S3 artifact needs the bucket",
            ),
            (
                r#"{"schemaVersion":1,"id":"other:0b6f4f7e-3c1a-4f7e-9a51-8d2f1c0e5b11","projectName":"web"}"#,
                "job: `id` `other:0b6f4f7e-3c1a-4f7e-9a51-8d2f1c0e5b11` is not `web:<uuid>`",
            ),
        ];
        for (input, expected) in cases {
            let error = Job::parse(input).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{input}: {error}");
        }
    }

    #[test]
    fn the_schema_lists_every_field_the_struct_writes() {
        let schema = json_schema();
        let properties = schema["properties"].as_object().unwrap();
        let mut job = Job::new("web");
        job.source_location_override = Some("s3://b/k.zip".into());
        job.timeout_in_minutes_override = Some(5);
        let written: Value = serde_json::from_str(&job.to_json()).unwrap();
        for key in written.as_object().unwrap().keys() {
            assert!(
                properties.contains_key(key),
                "{key} missing from the schema"
            );
        }
        // The known-fields table is the schema's, level by level.
        for (path, fields) in KNOWN {
            let mut node = &schema;
            for part in path.split('.').filter(|p| !p.is_empty()) {
                let (name, items) = match part.strip_suffix("[]") {
                    Some(name) => (name, true),
                    None => (part, false),
                };
                node = &node["properties"][name];
                if items {
                    node = &node["items"];
                }
            }
            let mut listed: Vec<&str> = node["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut known = fields.to_vec();
            listed.sort_unstable();
            known.sort_unstable();
            assert_eq!(listed, known, "`{path}`");
        }
    }
}
