//! The typed buildspec.
//!
//! Every value that a later stage may reject (a command, a path, a user name) is kept as a
//! [`Spanned`] so the engine can point back at the line it came from. The model serializes
//! back to buildspec YAML with serde (keys in their buildspec spelling), so a model built in
//! code can be written out and read back unchanged.

use std::fmt;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::span::Spanned;

/// A parsed, validated buildspec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Buildspec {
    /// `version`: `0.1` or `0.2`.
    pub version: Version,
    /// `run-as`: the Linux user that runs every command (phases may override it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as: Option<Spanned<String>>,
    /// `env` (or the version 0.1 `environment_variables`).
    #[serde(skip_serializing_if = "Env::is_empty")]
    pub env: Env,
    /// `proxy`.
    #[serde(skip_serializing_if = "Proxy::is_default")]
    pub proxy: Proxy,
    /// `batch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batch>,
    /// `phases`, in the order the file lists them. They always run in the order
    /// install, pre_build, build, post_build: use [`Buildspec::phase`] to look one up.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "phases_map")]
    pub phases: Vec<Phase>,
    /// `reports`, one entry per report group, in file order.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "reports_map")]
    pub reports: Vec<ReportGroup>,
    /// `artifacts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,
    /// `cache`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
}

impl Buildspec {
    /// The phase called `name`, if the file has it.
    pub fn phase(&self, name: PhaseName) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name.value == name)
    }
}

/// The buildspec format version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Version {
    /// `0.1`: every command runs in a fresh shell from the source directory.
    V0_1,
    /// `0.2`: commands share the working directory and exported environment.
    #[default]
    V0_2,
}

impl Version {
    /// `"0.1"` or `"0.2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1 => "0.1",
            Version::V0_2 => "0.2",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A YAML float, as people write it.
        s.serialize_f64(match self {
            Version::V0_1 => 0.1,
            Version::V0_2 => 0.2,
        })
    }
}

/// `env`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Env {
    /// `shell`: the shell that runs each command (default `/bin/sh`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<Spanned<Shell>>,
    /// `variables`: plain-text variables, in file order. Values are literal text.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "variables_map"
    )]
    pub variables: Vec<Variable>,
    /// `parameter-store`: variables read from SSM Parameter Store.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "parameters_map"
    )]
    pub parameter_store: Vec<ParameterVariable>,
    /// `secrets-manager`: variables read from Secrets Manager.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "secrets_map")]
    pub secrets_manager: Vec<SecretVariable>,
    /// `exported-variables`: names whose final values are reported after POST_BUILD.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exported_variables: Vec<Spanned<String>>,
    /// `git-credential-helper` (default no).
    #[serde(skip_serializing_if = "is_false", serialize_with = "yes_no")]
    pub git_credential_helper: bool,
}

impl Env {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Env::default()
    }
}

/// The shell named by `env.shell`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shell {
    /// `sh` or `/bin/sh` (the default).
    Sh,
    /// `bash`, `/bin/bash` or `/usr/bin/bash`.
    Bash,
    /// `powershell.exe`, `powershell` or `pwsh` (Windows images).
    PowerShell,
    /// `cmd.exe` (Windows images).
    Cmd,
}

impl Shell {
    /// The spelling used when the model is written out.
    pub fn as_str(self) -> &'static str {
        match self {
            Shell::Sh => "/bin/sh",
            Shell::Bash => "bash",
            Shell::PowerShell => "powershell.exe",
            Shell::Cmd => "cmd.exe",
        }
    }

    /// Reads a shell name; `None` if it is not one CodeBuild knows.
    pub fn from_name(name: &str) -> Option<Shell> {
        match name {
            "sh" | "/bin/sh" | "/usr/bin/sh" => Some(Shell::Sh),
            "bash" | "/bin/bash" | "/usr/bin/bash" => Some(Shell::Bash),
            "powershell.exe" | "powershell" | "pwsh" | "pwsh.exe" => Some(Shell::PowerShell),
            "cmd.exe" | "cmd" => Some(Shell::Cmd),
            _ => None,
        }
    }
}

impl Serialize for Shell {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One entry of `env.variables`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The variable's name.
    pub name: Spanned<String>,
    /// Its value, exactly as written (no expansion).
    pub value: Spanned<String>,
}

/// One entry of `env.parameter-store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterVariable {
    /// The environment variable's name.
    pub name: Spanned<String>,
    /// The Parameter Store parameter name (`/my/param`).
    pub parameter: Spanned<String>,
}

/// One entry of `env.secrets-manager`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVariable {
    /// The environment variable's name.
    pub name: Spanned<String>,
    /// Which secret, and which part of it.
    pub reference: Spanned<SecretReference>,
}

/// `secret-id[:json-key[:version-stage[:version-id]]]`, where an `arn:` id keeps its colons.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SecretReference {
    /// The secret's name or full ARN.
    pub secret_id: String,
    /// A key of a JSON secret; `None` for the whole secret string.
    pub json_key: Option<String>,
    /// The version stage (Secrets Manager's default is `AWSCURRENT`).
    pub version_stage: Option<String>,
    /// The version id.
    pub version_id: Option<String>,
}

impl SecretReference {
    /// Parses a reference. An id starting with `arn:` takes its first seven colon-separated
    /// fields (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME`).
    pub fn parse(text: &str) -> Result<SecretReference, String> {
        let fields: Vec<&str> = text.split(':').collect();
        let (id, rest) = if text.starts_with("arn:") {
            if fields.len() < 7 {
                return Err(format!(
                    "`{text}` is not a complete Secrets Manager ARN \
                     (expected arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME)"
                ));
            }
            (fields[..7].join(":"), &fields[7..])
        } else {
            (fields[0].to_string(), &fields[1..])
        };
        if id.is_empty() {
            return Err("the secret id is empty".to_string());
        }
        if rest.len() > 3 {
            return Err(format!(
                "`{text}` has too many `:`-separated fields \
                 (expected secret-id[:json-key[:version-stage[:version-id]]])"
            ));
        }
        let field = |i: usize| rest.get(i).filter(|s| !s.is_empty()).map(|s| s.to_string());
        Ok(SecretReference {
            secret_id: id,
            json_key: field(0),
            version_stage: field(1),
            version_id: field(2),
        })
    }
}

impl fmt::Display for SecretReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [&self.json_key, &self.version_stage, &self.version_id];
        let used = parts.iter().rposition(|p| p.is_some()).map_or(0, |i| i + 1);
        f.write_str(&self.secret_id)?;
        for part in &parts[..used] {
            write!(f, ":{}", part.as_deref().unwrap_or(""))?;
        }
        Ok(())
    }
}

impl Serialize for SecretReference {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `proxy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Proxy {
    /// `upload-artifacts` (default no).
    #[serde(serialize_with = "yes_no")]
    pub upload_artifacts: bool,
    /// `logs` (default no).
    #[serde(serialize_with = "yes_no")]
    pub logs: bool,
}

impl Proxy {
    fn is_default(&self) -> bool {
        *self == Proxy::default()
    }
}

/// The four buildspec phases, in the order they always run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PhaseName {
    /// `install`.
    Install,
    /// `pre_build`.
    PreBuild,
    /// `build`.
    Build,
    /// `post_build`.
    PostBuild,
}

impl PhaseName {
    /// All phases in execution order.
    pub const ALL: [PhaseName; 4] = [
        PhaseName::Install,
        PhaseName::PreBuild,
        PhaseName::Build,
        PhaseName::PostBuild,
    ];

    /// The buildspec key (`pre_build`).
    pub fn key(self) -> &'static str {
        match self {
            PhaseName::Install => "install",
            PhaseName::PreBuild => "pre_build",
            PhaseName::Build => "build",
            PhaseName::PostBuild => "post_build",
        }
    }

    /// The name CodeBuild's log uses (`PRE_BUILD`).
    pub fn log_name(self) -> &'static str {
        match self {
            PhaseName::Install => "INSTALL",
            PhaseName::PreBuild => "PRE_BUILD",
            PhaseName::Build => "BUILD",
            PhaseName::PostBuild => "POST_BUILD",
        }
    }

    /// Reads a buildspec key.
    pub fn from_key(key: &str) -> Option<PhaseName> {
        PhaseName::ALL.into_iter().find(|p| p.key() == key)
    }
}

impl fmt::Display for PhaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// One phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Phase {
    /// Which phase.
    #[serde(skip)]
    pub name: Spanned<PhaseName>,
    /// `run-as`: the user for this phase's commands (overrides the top-level one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as: Option<Spanned<String>>,
    /// `on-failure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Spanned<OnFailure>>,
    /// `runtime-versions` (install only), in file order.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "runtimes_map")]
    pub runtime_versions: Vec<RuntimeVersion>,
    /// `commands`, in order. Multi-line block scalars are one command.
    pub commands: Vec<Spanned<String>>,
    /// `finally`: run after `commands`, also when one of them failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<Spanned<String>>,
}

impl Phase {
    /// An empty phase called `name`.
    pub fn new(name: PhaseName) -> Phase {
        Phase {
            name: Spanned::synthetic(name),
            run_as: None,
            on_failure: None,
            runtime_versions: Vec::new(),
            commands: Vec::new(),
            finally: Vec::new(),
        }
    }
}

/// One entry of `runtime-versions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// The runtime (`nodejs`).
    pub runtime: Spanned<String>,
    /// The version as written (`18`, `3.10`, `latest`, `$MY_VERSION`).
    pub version: Spanned<String>,
}

/// `on-failure`: what a failing phase does to the rest of the build.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OnFailure {
    /// `ABORT`: no later phase runs, UPLOAD_ARTIFACTS included.
    Abort,
    /// `CONTINUE`: the next phase runs; the phase and the build stay failed.
    Continue,
    /// `RETRY`, `RETRY-N`, `RETRY-regex`, `RETRY-N-regex`: run the build again.
    Retry(Retry),
}

/// The parameters of `on-failure: RETRY...`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Retry {
    /// How many times the build is run again at most (default 3, at most 100).
    pub count: u32,
    /// Retry only when the failure's output or message matches this regex.
    pub pattern: Option<String>,
}

impl Retry {
    /// The number of retries when none is given.
    pub const DEFAULT_COUNT: u32 = 3;
    /// The largest count CodeBuild accepts.
    pub const MAX_COUNT: u32 = 100;
}

impl OnFailure {
    /// Parses an `on-failure` value. `ABORT` and `CONTINUE` and the `RETRY` prefix are read
    /// case-insensitively. After `RETRY-`, a first segment of digits is the count; the rest
    /// (after one more `-`) is the regex. So `RETRY-3-12` retries 3 times on output matching
    /// `12`, and `RETRY-12` retries 12 times.
    pub fn parse(text: &str) -> Result<OnFailure, String> {
        let upper = text.to_ascii_uppercase();
        match upper.as_str() {
            "ABORT" => return Ok(OnFailure::Abort),
            "CONTINUE" => return Ok(OnFailure::Continue),
            "RETRY" => {
                return Ok(OnFailure::Retry(Retry {
                    count: Retry::DEFAULT_COUNT,
                    pattern: None,
                }))
            }
            _ => {}
        }
        if !upper.starts_with("RETRY-") {
            return Err(format!(
                "unknown `on-failure` value `{text}`: expected ABORT, CONTINUE, RETRY, \
                 RETRY-<count>, RETRY-<regex> or RETRY-<count>-<regex>"
            ));
        }
        let rest = &text["RETRY-".len()..];
        let digits = rest.find('-').map_or(rest, |i| &rest[..i]);
        let (count, pattern) = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let count: u32 = digits
                .parse()
                .ok()
                .filter(|n| *n <= Retry::MAX_COUNT)
                .ok_or_else(|| {
                    format!(
                        "retry count `{digits}` is out of range: at most {}",
                        Retry::MAX_COUNT
                    )
                })?;
            let pattern = rest.get(digits.len() + 1..).unwrap_or("");
            (count, pattern)
        } else {
            (Retry::DEFAULT_COUNT, rest)
        };
        let pattern = (!pattern.is_empty()).then(|| pattern.to_string());
        if let Some(p) = &pattern {
            regex::Regex::new(p).map_err(|e| {
                // The regex crate's message spans several lines; its last line says what is wrong.
                let text = e.to_string();
                let why = text
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                format!("the retry pattern `{p}` is not a valid regex: {why}")
            })?;
        }
        Ok(OnFailure::Retry(Retry { count, pattern }))
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnFailure::Abort => f.write_str("ABORT"),
            OnFailure::Continue => f.write_str("CONTINUE"),
            OnFailure::Retry(Retry {
                count: Retry::DEFAULT_COUNT,
                pattern: None,
            }) => f.write_str("RETRY"),
            OnFailure::Retry(Retry {
                count,
                pattern: None,
            }) => write!(f, "RETRY-{count}"),
            OnFailure::Retry(Retry {
                count,
                pattern: Some(p),
            }) => write!(f, "RETRY-{count}-{p}"),
        }
    }
}

impl Serialize for OnFailure {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One report group of `reports`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReportGroup {
    /// The group's name or ARN (the key under `reports`).
    #[serde(skip)]
    pub name: Spanned<String>,
    /// `files`: globs of report files.
    pub files: Vec<Spanned<String>>,
    /// `base-directory`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_directory: Option<Spanned<String>>,
    /// `discard-paths` (default no).
    #[serde(skip_serializing_if = "is_false", serialize_with = "yes_no")]
    pub discard_paths: bool,
    /// `file-format` (default JUNITXML).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_format: Option<Spanned<ReportFormat>>,
}

/// A test or coverage report format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportFormat {
    /// `CUCUMBERJSON`.
    CucumberJson,
    /// `JUNITXML` (the default).
    JunitXml,
    /// `NUNITXML`.
    NunitXml,
    /// `NUNIT3XML`.
    Nunit3Xml,
    /// `TESTNGXML`.
    TestngXml,
    /// `VISUALSTUDIOTRX`.
    VisualStudioTrx,
    /// `CLOVERXML` (coverage).
    CloverXml,
    /// `COBERTURAXML` (coverage).
    CoberturaXml,
    /// `JACOCOXML` (coverage).
    JacocoXml,
    /// `SIMPLECOV` (coverage).
    SimpleCov,
}

impl ReportFormat {
    /// All formats.
    pub const ALL: [ReportFormat; 10] = [
        ReportFormat::CucumberJson,
        ReportFormat::JunitXml,
        ReportFormat::NunitXml,
        ReportFormat::Nunit3Xml,
        ReportFormat::TestngXml,
        ReportFormat::VisualStudioTrx,
        ReportFormat::CloverXml,
        ReportFormat::CoberturaXml,
        ReportFormat::JacocoXml,
        ReportFormat::SimpleCov,
    ];

    /// The buildspec spelling (`JUNITXML`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::CucumberJson => "CUCUMBERJSON",
            ReportFormat::JunitXml => "JUNITXML",
            ReportFormat::NunitXml => "NUNITXML",
            ReportFormat::Nunit3Xml => "NUNIT3XML",
            ReportFormat::TestngXml => "TESTNGXML",
            ReportFormat::VisualStudioTrx => "VISUALSTUDIOTRX",
            ReportFormat::CloverXml => "CLOVERXML",
            ReportFormat::CoberturaXml => "COBERTURAXML",
            ReportFormat::JacocoXml => "JACOCOXML",
            ReportFormat::SimpleCov => "SIMPLECOV",
        }
    }

    /// Reads a format name, case-insensitively.
    pub fn from_name(name: &str) -> Option<ReportFormat> {
        ReportFormat::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(name))
    }

    /// True for code coverage formats, false for test result formats.
    pub fn is_coverage(self) -> bool {
        matches!(
            self,
            ReportFormat::CloverXml
                | ReportFormat::CoberturaXml
                | ReportFormat::JacocoXml
                | ReportFormat::SimpleCov
        )
    }
}

impl Serialize for ReportFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `artifacts`: the primary artifact and the secondary ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Artifacts {
    /// The primary artifact (the keys directly under `artifacts`).
    #[serde(flatten)]
    pub primary: ArtifactSet,
    /// `secondary-artifacts`, in file order.
    #[serde(
        rename = "secondary-artifacts",
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "secondary_map"
    )]
    pub secondary: Vec<SecondaryArtifact>,
}

/// The keys that describe one artifact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ArtifactSet {
    /// `files`: globs relative to the source directory or `base-directory`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<Spanned<String>>,
    /// `name`: expanded by the build's shell when the artifact is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Spanned<String>>,
    /// `discard-paths` (default no).
    #[serde(skip_serializing_if = "is_false", serialize_with = "yes_no")]
    pub discard_paths: bool,
    /// `base-directory`: a directory, or a glob of directories whose contents merge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_directory: Option<Spanned<String>>,
    /// `exclude-paths`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_paths: Vec<Spanned<String>>,
    /// `enable-symlinks` (default no).
    #[serde(skip_serializing_if = "is_false", serialize_with = "yes_no")]
    pub enable_symlinks: bool,
    /// `s3-prefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_prefix: Option<Spanned<String>>,
}

/// One entry of `secondary-artifacts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecondaryArtifact {
    /// The artifact identifier (letters, digits and `_`).
    pub identifier: Spanned<String>,
    /// Its keys.
    pub artifact: ArtifactSet,
}

/// `cache`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cache {
    /// `key`: expanded by the build's shell; an exact match on restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Spanned<String>>,
    /// `fallback-keys`: prefixes tried in order when `key` misses (at most 5).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallback_keys: Vec<Spanned<String>>,
    /// `action`: restore only or save only (default both).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Spanned<CacheAction>>,
    /// `paths`: globs of what to cache.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<Spanned<String>>,
}

impl Cache {
    /// The most `fallback-keys` CodeBuild accepts.
    pub const MAX_FALLBACK_KEYS: usize = 5;
}

/// `cache.action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheAction {
    /// Restore before INSTALL, never save.
    Restore,
    /// Save after POST_BUILD, never restore.
    Save,
}

/// `batch`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Batch {
    /// `fast-fail` (default false): stop the batch when one build fails.
    #[serde(skip_serializing_if = "is_false")]
    pub fast_fail: bool,
    /// The kind of batch and its builds.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub builds: Option<BatchBuilds>,
}

/// Which kind of batch, with its builds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
// One per buildspec: boxing the matrix would save little and make every match clumsier.
#[allow(clippy::large_enum_variant)]
pub enum BatchBuilds {
    /// `build-list`: builds run in parallel.
    BuildList(Vec<BatchTask>),
    /// `build-graph`: builds with `depend-on` edges.
    BuildGraph(Vec<BatchTask>),
    /// `build-matrix`: the product of the dynamic values.
    BuildMatrix(BuildMatrix),
    /// `build-fanout`: one build split into shards.
    BuildFanout(BuildFanout),
}

/// One build of a `build-list` or `build-graph`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BatchTask {
    /// `identifier`.
    pub identifier: Spanned<String>,
    /// `buildspec`: another buildspec file for this build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buildspec: Option<Spanned<String>>,
    /// `debug-session`.
    #[serde(skip_serializing_if = "is_false")]
    pub debug_session: bool,
    /// `ignore-failure`.
    #[serde(skip_serializing_if = "is_false")]
    pub ignore_failure: bool,
    /// `env`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BatchEnv>,
    /// `depend-on` (build-graph only): identifiers this build waits for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depend_on: Vec<Spanned<String>>,
}

/// `env` of a batch build.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BatchEnv {
    /// `compute-type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_type: Option<Spanned<String>>,
    /// `fleet`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Spanned<String>>,
    /// `image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Spanned<String>>,
    /// `privileged-mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged_mode: Option<bool>,
    /// `type`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Spanned<String>>,
    /// `variables`.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "variables_map"
    )]
    pub variables: Vec<Variable>,
}

/// `build-matrix`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BuildMatrix {
    /// `static`: settings shared by every build of the matrix.
    #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
    pub fixed: Option<MatrixStatic>,
    /// `dynamic`: the values whose product makes the builds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<MatrixDynamic>,
}

/// `build-matrix.static`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MatrixStatic {
    /// `ignore-failure`.
    #[serde(skip_serializing_if = "is_false")]
    pub ignore_failure: bool,
    /// `env`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BatchEnv>,
}

/// `build-matrix.dynamic`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MatrixDynamic {
    /// `buildspec`: buildspec files, one build each (times the other values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buildspec: Vec<Spanned<String>>,
    /// `env`.
    #[serde(skip_serializing_if = "MatrixEnv::is_empty")]
    pub env: MatrixEnv,
}

/// `build-matrix.dynamic.env`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MatrixEnv {
    /// `compute-type`: values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compute_type: Vec<Spanned<String>>,
    /// `image`: values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image: Vec<Spanned<String>>,
    /// `variables`: each name with its list of values.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "matrix_variables_map"
    )]
    pub variables: Vec<MatrixVariable>,
}

impl MatrixEnv {
    fn is_empty(&self) -> bool {
        *self == MatrixEnv::default()
    }
}

/// One variable of a dynamic matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixVariable {
    /// The variable's name.
    pub name: Spanned<String>,
    /// Its values, one build each.
    pub values: Vec<Spanned<String>>,
}

/// `build-fanout`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BuildFanout {
    /// `parallelism`: the number of shards.
    pub parallelism: Spanned<u32>,
    /// `ignore-failure`.
    #[serde(skip_serializing_if = "is_false")]
    pub ignore_failure: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes_no<S: Serializer>(b: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *b { "yes" } else { "no" })
}

fn phases_map<S: Serializer>(phases: &[Phase], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(phases.len()))?;
    for phase in phases {
        map.serialize_entry(phase.name.key(), phase)?;
    }
    map.end()
}

fn reports_map<S: Serializer>(groups: &[ReportGroup], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(groups.len()))?;
    for group in groups {
        map.serialize_entry(&group.name.value, group)?;
    }
    map.end()
}

fn variables_map<S: Serializer>(vars: &[Variable], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(vars.len()))?;
    for v in vars {
        map.serialize_entry(&v.name.value, &v.value.value)?;
    }
    map.end()
}

fn parameters_map<S: Serializer>(vars: &[ParameterVariable], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(vars.len()))?;
    for v in vars {
        map.serialize_entry(&v.name.value, &v.parameter.value)?;
    }
    map.end()
}

fn secrets_map<S: Serializer>(vars: &[SecretVariable], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(vars.len()))?;
    for v in vars {
        map.serialize_entry(&v.name.value, &v.reference.value)?;
    }
    map.end()
}

fn runtimes_map<S: Serializer>(runtimes: &[RuntimeVersion], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(runtimes.len()))?;
    for r in runtimes {
        map.serialize_entry(&r.runtime.value, &r.version.value)?;
    }
    map.end()
}

fn secondary_map<S: Serializer>(items: &[SecondaryArtifact], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(items.len()))?;
    for item in items {
        map.serialize_entry(&item.identifier.value, &item.artifact)?;
    }
    map.end()
}

fn matrix_variables_map<S: Serializer>(vars: &[MatrixVariable], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(vars.len()))?;
    for v in vars {
        map.serialize_entry(&v.name.value, &v.values)?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references_split_on_colons() {
        let r = SecretReference::parse("db:password").unwrap();
        assert_eq!(r.secret_id, "db");
        assert_eq!(r.json_key.as_deref(), Some("password"));
        assert_eq!(r.version_stage, None);
        let r = SecretReference::parse("db::AWSPREVIOUS").unwrap();
        assert_eq!(r.json_key, None);
        assert_eq!(r.version_stage.as_deref(), Some("AWSPREVIOUS"));
        let r = SecretReference::parse("db:k::v-1").unwrap();
        assert_eq!(r.version_id.as_deref(), Some("v-1"));
        assert_eq!(r.to_string(), "db:k::v-1");
    }

    #[test]
    fn arn_secret_ids_keep_their_colons() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        let r = SecretReference::parse(&format!("{arn}:user:AWSCURRENT")).unwrap();
        assert_eq!(r.secret_id, arn);
        assert_eq!(r.json_key.as_deref(), Some("user"));
        assert_eq!(r.version_stage.as_deref(), Some("AWSCURRENT"));
        let r = SecretReference::parse(arn).unwrap();
        assert_eq!(r.secret_id, arn);
        assert_eq!(r.json_key, None);
    }

    #[test]
    fn bad_secret_references_say_why() {
        assert!(SecretReference::parse("arn:aws:secretsmanager:us-east-1")
            .unwrap_err()
            .contains("not a complete Secrets Manager ARN"));
        assert!(SecretReference::parse("a:b:c:d:e")
            .unwrap_err()
            .contains("too many"));
        assert!(SecretReference::parse(":key")
            .unwrap_err()
            .contains("empty"));
    }

    #[test]
    fn on_failure_forms() {
        assert_eq!(OnFailure::parse("ABORT").unwrap(), OnFailure::Abort);
        assert_eq!(OnFailure::parse("continue").unwrap(), OnFailure::Continue);
        let retry = |count, pattern: Option<&str>| {
            OnFailure::Retry(Retry {
                count,
                pattern: pattern.map(str::to_string),
            })
        };
        assert_eq!(OnFailure::parse("RETRY").unwrap(), retry(3, None));
        assert_eq!(OnFailure::parse("RETRY-4").unwrap(), retry(4, None));
        assert_eq!(
            OnFailure::parse("Retry-.*Error: Unable to connect.*").unwrap(),
            retry(3, Some(".*Error: Unable to connect.*"))
        );
        assert_eq!(
            OnFailure::parse("RETRY-8-invalid+").unwrap(),
            retry(8, Some("invalid+"))
        );
        assert_eq!(OnFailure::parse("RETRY-0").unwrap(), retry(0, None));
        assert!(OnFailure::parse("RETRY-101")
            .unwrap_err()
            .contains("out of range"));
        assert!(OnFailure::parse("RETRY-2-(")
            .unwrap_err()
            .contains("not a valid regex"));
        assert!(OnFailure::parse("STOP")
            .unwrap_err()
            .contains("expected ABORT"));
    }

    #[test]
    fn on_failure_displays_back_to_a_parsable_form() {
        for text in [
            "ABORT",
            "CONTINUE",
            "RETRY",
            "RETRY-5",
            "RETRY-3-a-b",
            "RETRY-0-x",
        ] {
            let parsed = OnFailure::parse(text).unwrap();
            assert_eq!(OnFailure::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }

    #[test]
    fn secondary_artifacts_serialize_under_their_buildspec_key() {
        let artifacts = Artifacts {
            primary: ArtifactSet {
                files: vec!["**/*".into()],
                ..ArtifactSet::default()
            },
            secondary: vec![SecondaryArtifact {
                identifier: "docs".into(),
                artifact: ArtifactSet {
                    files: vec!["docs/**/*".into()],
                    ..ArtifactSet::default()
                },
            }],
        };
        let yaml = serde_yaml_ng::to_string(&artifacts).unwrap();
        assert_eq!(
            yaml,
            "files:\n- '**/*'\nsecondary-artifacts:\n  docs:\n    files:\n    - docs/**/*\n"
        );
    }

    #[test]
    fn report_formats_are_case_insensitive() {
        assert_eq!(
            ReportFormat::from_name("junitxml"),
            Some(ReportFormat::JunitXml)
        );
        assert_eq!(
            ReportFormat::from_name("JunitXml"),
            Some(ReportFormat::JunitXml)
        );
        assert_eq!(
            ReportFormat::from_name("CucumberJson"),
            Some(ReportFormat::CucumberJson)
        );
        assert_eq!(ReportFormat::from_name("XML"), None);
        assert!(ReportFormat::CoberturaXml.is_coverage());
    }
}
