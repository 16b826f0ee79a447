//! What a build runs with: the environment, layer by layer, and the agent's own variables.
//!
//! Precedence, lowest first (decisions.md "Environment"): the executor's environment (the
//! host's, or the image's `ENV`); the buildspec's `env` (variables, then resolved parameters
//! and secrets); the project environment file (`-e FILE`); the variables the agent sets
//! (`CODEBUILD_*`, `AWS_REGION`, ...); the start-build overrides (`--env-var`). What commands set
//! at run time wins over all of them, through the command state files. The agent's variables sit
//! above the buildspec and the env file so a buildspec cannot break the build by setting
//! `CODEBUILD_SRC_DIR`, and below the overrides so a person can pin, say, the build number.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use buildagent_spec::is_variable_name;
use serde::Serialize;

/// Where a variable's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The executor's own environment (the host's, or the image's `ENV`).
    Executor,
    /// The buildspec's `env.variables`.
    Buildspec,
    /// The buildspec's `env.parameter-store`.
    ParameterStore,
    /// The buildspec's `env.secrets-manager`.
    SecretsManager,
    /// The project environment file (`-e FILE`).
    EnvFile,
    /// Set by the agent (`CODEBUILD_*`, `AWS_REGION`, ...).
    Agent,
    /// A start-build override (`--env-var`, `--secret`).
    Override,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Executor => "executor",
            Origin::Buildspec => "buildspec",
            Origin::ParameterStore => "parameter-store",
            Origin::SecretsManager => "secrets-manager",
            Origin::EnvFile => "env-file",
            Origin::Agent => "agent",
            Origin::Override => "override",
        })
    }
}

/// One variable of the build's initial environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Variable {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Which layer set it (the highest one that did).
    pub origin: Origin,
    /// True when the value must be masked wherever it is written.
    pub secret: bool,
}

/// The build's initial environment, assembled from its layers.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    vars: Vec<Variable>,
    /// Secret values a higher layer replaced: no variable holds them any more, but a command can
    /// still print them (it may read them from where they came from), so they stay masked.
    replaced_secrets: Vec<String>,
}

impl Environment {
    /// An empty environment.
    pub fn new() -> Environment {
        Environment::default()
    }

    /// Sets `name` from a layer; a later call for the same name replaces the value (callers add
    /// layers from the lowest precedence to the highest). Insertion order is kept.
    pub fn set(&mut self, name: &str, value: &str, origin: Origin, secret: bool) {
        let var = Variable {
            name: name.to_string(),
            value: value.to_string(),
            origin,
            secret,
        };
        match self.vars.iter_mut().find(|v| v.name == name) {
            // A secret stays masked even when a higher layer replaces it with another value:
            // the new value is masked too, and so is the replaced one.
            Some(existing) => {
                let secret = var.secret || existing.secret;
                if existing.secret && existing.value != var.value {
                    self.replaced_secrets
                        .push(std::mem::take(&mut existing.value));
                }
                *existing = Variable { secret, ..var };
            }
            None => self.vars.push(var),
        }
    }

    /// Adds every pair of a layer.
    pub fn extend<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        origin: Origin,
        secret: bool,
    ) {
        for (name, value) in pairs {
            self.set(name, value, origin, secret);
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.as_str())
    }

    /// Every variable, in the order first set.
    pub fn variables(&self) -> &[Variable] {
        &self.vars
    }

    /// The name/value pairs.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect()
    }

    /// The values to mask: the non-empty values of secret variables, and the secret values a
    /// higher layer replaced (an override of a resolved secret leaves the secret masked).
    pub fn secret_values(&self) -> Vec<String> {
        self.vars
            .iter()
            .filter(|v| v.secret)
            .map(|v| v.value.clone())
            .chain(self.replaced_secrets.iter().cloned())
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// Who and what a build is: the values behind the agent's `CODEBUILD_*` variables.
#[derive(Clone, Debug)]
pub struct BuildIdentity {
    /// The project name (`CODEBUILD_BUILD_ID` is `<project>:<uuid>`).
    pub project: String,
    /// The build's unique id (a UUID).
    pub uuid: String,
    /// `CODEBUILD_BUILD_NUMBER`.
    pub number: u64,
    /// `CODEBUILD_INITIATOR` (the user who started the build).
    pub initiator: String,
    /// `CODEBUILD_START_TIME`.
    pub start_time: SystemTime,
    /// `AWS_REGION` and `AWS_DEFAULT_REGION`.
    pub region: String,
    /// The AWS account in `CODEBUILD_BUILD_ARN`.
    pub account: String,
    /// `CODEBUILD_BUILD_IMAGE`.
    pub image: String,
}

impl BuildIdentity {
    /// `<project>:<uuid>`.
    pub fn build_id(&self) -> String {
        format!("{}:{}", self.project, self.uuid)
    }

    /// `arn:aws:codebuild:<region>:<account>:build/<project>:<uuid>`.
    pub fn build_arn(&self) -> String {
        format!(
            "arn:aws:codebuild:{}:{}:build/{}",
            self.region,
            self.account,
            self.build_id()
        )
    }
}

/// What the agent knows about the sources.
#[derive(Clone, Debug, Default)]
pub struct SourceInfo {
    /// `CODEBUILD_SOURCE_VERSION`: the version asked of a fetched source (else the default
    /// branch's name), or the branch of a local git work tree.
    pub version: Option<String>,
    /// `CODEBUILD_RESOLVED_SOURCE_VERSION`: the commit (the object version of an S3 zip).
    pub resolved_version: Option<String>,
    /// `CODEBUILD_SOURCE_REPO_URL`: where a fetched source came from, credentials as `***`.
    pub repo_url: Option<String>,
    /// The same for fetched secondary sources, by identifier (`CODEBUILD_SOURCE_VERSION_<id>`,
    /// `CODEBUILD_RESOLVED_SOURCE_VERSION_<id>`, `CODEBUILD_SOURCE_REPO_URL_<id>`).
    pub secondary: Vec<(String, SourceInfo)>,
}

/// The variables the agent sets (decisions.md "Environment").
pub fn agent_variables(
    identity: &BuildIdentity,
    source_dir: &Path,
    source: &SourceInfo,
    secondary: &[(String, std::path::PathBuf)],
) -> Vec<(String, String)> {
    let start_ms = identity
        .start_time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut vars = vec![
        (
            "CODEBUILD_SRC_DIR".to_string(),
            source_dir.display().to_string(),
        ),
        ("CODEBUILD_BUILD_ID".to_string(), identity.build_id()),
        ("CODEBUILD_BUILD_ARN".to_string(), identity.build_arn()),
        (
            "CODEBUILD_BUILD_NUMBER".to_string(),
            identity.number.to_string(),
        ),
        ("CODEBUILD_BUILD_SUCCEEDING".to_string(), "1".to_string()),
        (
            "CODEBUILD_INITIATOR".to_string(),
            identity.initiator.clone(),
        ),
        ("CODEBUILD_START_TIME".to_string(), start_ms.to_string()),
        ("CODEBUILD_BUILD_IMAGE".to_string(), identity.image.clone()),
        ("CODEBUILD_LOCAL_BUILD".to_string(), "true".to_string()),
        ("CODEBUILD_CI".to_string(), "true".to_string()),
        ("CODEBUILD_LAST_EXIT".to_string(), "0".to_string()),
        (
            "CODEBUILD_BATCH_BUILD_IDENTIFIER".to_string(),
            String::new(),
        ),
        ("AWS_REGION".to_string(), identity.region.clone()),
        ("AWS_DEFAULT_REGION".to_string(), identity.region.clone()),
    ];
    source_variables(source, "", &mut vars);
    for (id, dir) in secondary {
        vars.push((format!("CODEBUILD_SRC_DIR_{id}"), dir.display().to_string()));
    }
    for (id, info) in &source.secondary {
        source_variables(info, &format!("_{id}"), &mut vars);
    }
    vars
}

/// `CODEBUILD_SOURCE_VERSION<suffix>` and friends, for what is known.
fn source_variables(source: &SourceInfo, suffix: &str, vars: &mut Vec<(String, String)>) {
    let known = [
        ("CODEBUILD_SOURCE_REPO_URL", &source.repo_url),
        ("CODEBUILD_SOURCE_VERSION", &source.version),
        (
            "CODEBUILD_RESOLVED_SOURCE_VERSION",
            &source.resolved_version,
        ),
    ];
    for (name, value) in known {
        if let Some(v) = value {
            vars.push((format!("{name}{suffix}"), v.clone()));
        }
    }
}

/// A problem in a `-e` environment file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct EnvFileError {
    /// The 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Reads a project environment file: `NAME=VALUE` per line, blank lines and `#` comments
/// skipped, values taken verbatim (quotes are kept, as CodeBuild's local agent does).
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((name, value)) = trimmed.split_once('=') else {
            return Err(EnvFileError {
                line: i + 1,
                message: format!("expected NAME=VALUE, found `{trimmed}`"),
            });
        };
        let name = name.trim_end();
        if !is_variable_name(name) {
            return Err(EnvFileError {
                line: i + 1,
                message: format!("invalid variable name `{name}`"),
            });
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{text}`: {why} (examples: 90s, 5m, 1h30m)")]
pub struct DurationError {
    text: String,
    why: &'static str,
}

/// Reads `30s`, `5m`, `1h30m`, `2h`, `1h2m3s`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        text: text.to_string(),
        why,
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(err("it is empty"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| err("too large"));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut last_rank = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let (unit, rank) = match c {
            'h' => (3600, 3),
            'm' => (60, 2),
            's' => (1, 1),
            _ => return Err(err("units are h, m and s")),
        };
        if number.is_empty() {
            return Err(err("a unit needs a number before it"));
        }
        if last_rank != 0 && rank >= last_rank {
            return Err(err("units go from hours to seconds, once each"));
        }
        last_rank = rank;
        let n: u64 = number.parse().map_err(|_| err("too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("too large"))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(err("a number needs a unit after it"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1h2m3s").unwrap(), Duration::from_secs(3723));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        for bad in [
            "",
            "5x",
            "m",
            "5m1h",
            "1h1h",
            "3h5",
            "99999999999999999999h",
        ] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains("examples: 90s, 5m, 1h30m"), "{bad}: {e}");
        }
    }

    #[test]
    fn env_files_keep_quotes_and_skip_comments() {
        let vars = parse_env_file("# comment\n\nA=\"x\"\nB=y=z\r\n  C=\nD= spaced \n").unwrap();
        assert_eq!(
            vars,
            [
                ("A".into(), "\"x\"".into()),
                ("B".into(), "y=z".into()),
                ("C".into(), "".into()),
                ("D".into(), " spaced ".into())
            ]
        );
        assert_eq!(parse_env_file("A=1\nnot a line\n").unwrap_err().line, 2);
        assert!(parse_env_file("1A=x")
            .unwrap_err()
            .message
            .contains("invalid variable name"));
    }

    #[test]
    fn later_layers_win_and_secrets_stay_masked() {
        let mut env = Environment::new();
        env.set("A", "exec", Origin::Executor, false);
        env.set("B", "s3cret", Origin::SecretsManager, true);
        env.set("A", "spec", Origin::Buildspec, false);
        env.set("B", "other", Origin::Override, false);
        assert_eq!(env.get("A"), Some("spec"));
        assert_eq!(env.variables()[0].origin, Origin::Buildspec);
        assert_eq!(env.secret_values(), ["other", "s3cret"]);
    }

    #[test]
    fn agent_variables_follow_codebuild() {
        let identity = BuildIdentity {
            project: "demo".into(),
            uuid: "0000".into(),
            number: 7,
            initiator: "alice".into(),
            start_time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            region: "eu-west-1".into(),
            account: "000000000000".into(),
            image: "host".into(),
        };
        let vars = agent_variables(
            &identity,
            Path::new("/src"),
            &SourceInfo {
                version: Some("main".into()),
                resolved_version: Some("abc".into()),
                repo_url: Some("https://h/app.git".into()),
                secondary: vec![(
                    "lib".into(),
                    SourceInfo {
                        version: Some("v1".into()),
                        ..SourceInfo::default()
                    },
                )],
            },
            &[("lib".into(), "/lib".into())],
        );
        let get = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("CODEBUILD_BUILD_ID"), Some("demo:0000"));
        assert_eq!(
            get("CODEBUILD_BUILD_ARN"),
            Some("arn:aws:codebuild:eu-west-1:000000000000:build/demo:0000")
        );
        assert_eq!(get("CODEBUILD_START_TIME"), Some("1700000000123"));
        assert_eq!(get("CODEBUILD_SRC_DIR_lib"), Some("/lib"));
        assert_eq!(get("CODEBUILD_RESOLVED_SOURCE_VERSION"), Some("abc"));
        assert_eq!(get("CODEBUILD_SOURCE_REPO_URL"), Some("https://h/app.git"));
        assert_eq!(get("CODEBUILD_SOURCE_VERSION_lib"), Some("v1"));
        assert_eq!(get("AWS_DEFAULT_REGION"), Some("eu-west-1"));
    }
}
