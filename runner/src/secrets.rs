//! The buildspec's `env.parameter-store` and `env.secrets-manager`, resolved before INSTALL.
//!
//! [`resolve`] takes each value from the offline [`OfflineValues`] (`--secrets-file`) when they
//! list it, and from AWS otherwise, with clients configured by [`crate::aws::sdk_config`]
//! (standard credential chain, region and endpoint settings, `AWS_ENDPOINT_URL_SSM` and
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER` included). When the file lists every name, AWS is not
//! configured at all: no credentials are needed and no request is made.
//!
//! - Parameter Store: decrypted `GetParameters`, at most 10 names per call (the API's limit),
//!   each name asked once. A name the service lists as invalid is CodeBuild's
//!   `parameter does not exist: NAME`.
//! - Secrets Manager: `GetSecretValue` with the reference's version stage and version id, each
//!   secret version asked once. With a JSON key, the secret string must be a JSON object with
//!   that key: a string member is taken as it is, any other member as its JSON text. A secret
//!   stored as binary (`SecretBinary`) is refused: a variable holds text.
//!
//! Failures are [`ResolveError`]s with CodeBuild's phase context codes; their messages name the
//! parameter or secret and the variable, and never hold a value.

use std::collections::HashMap;

#[cfg(feature = "aws")]
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata};
use buildagent_spec::{Env, SecretReference, SecretsFile};

use crate::plan::Origin;

/// Parameter Store takes at most this many names per `GetParameters` call.
pub const GET_PARAMETERS_BATCH: usize = 10;

/// Values that stand in for Parameter Store parameters and Secrets Manager secrets
/// (`--secrets-file`): the names they list are never asked of AWS.
#[derive(Clone, Debug, Default)]
pub struct OfflineValues {
    parameters: HashMap<String, String>,
    secrets: Vec<(SecretReference, String)>,
}

impl OfflineValues {
    /// No offline values: everything comes from AWS.
    pub fn new() -> OfflineValues {
        OfflineValues::default()
    }

    /// The values of a parsed secrets file.
    pub fn from_file(file: &SecretsFile) -> OfflineValues {
        OfflineValues {
            parameters: file
                .parameters
                .iter()
                .map(|(name, value)| (name.value.clone(), value.value.clone()))
                .collect(),
            secrets: file
                .secrets
                .iter()
                .map(|(reference, value)| (reference.value.clone(), value.value.clone()))
                .collect(),
        }
    }

    /// Adds the value of a parameter.
    pub fn add_parameter(&mut self, name: &str, value: &str) {
        self.parameters.insert(name.to_string(), value.to_string());
    }

    /// Adds the value of a secret reference (a whole secret without a JSON key, or one key).
    pub fn add_secret(&mut self, reference: SecretReference, value: &str) {
        self.secrets.retain(|(r, _)| *r != reference);
        self.secrets.push((reference, value.to_string()));
    }

    /// True when nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.parameters.is_empty() && self.secrets.is_empty()
    }

    /// The value for `reference`: the entry for exactly that reference, else, for a reference with
    /// a JSON key, that key of the entry for the whole secret (same id, stage and version id).
    fn secret(&self, reference: &SecretReference) -> Option<Result<String, String>> {
        if let Some((_, value)) = self.secrets.iter().find(|(r, _)| r == reference) {
            return Some(Ok(value.clone()));
        }
        let key = reference.json_key.as_deref()?;
        let whole = SecretReference {
            json_key: None,
            ..reference.clone()
        };
        let (_, value) = self.secrets.iter().find(|(r, _)| *r == whole)?;
        Some(json_member(value, key))
    }
}

/// Where a resolved value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueSource {
    /// Parameter Store or Secrets Manager.
    Aws,
    /// The offline values (`--secrets-file`).
    SecretsFile,
}

/// One resolved `parameter-store` or `secrets-manager` entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedValue {
    /// The environment variable.
    pub name: String,
    /// Its value (a secret: mask it wherever it is written).
    #[serde(skip)]
    pub value: String,
    /// [`Origin::ParameterStore`] or [`Origin::SecretsManager`].
    pub origin: Origin,
    /// The parameter name or the secret reference, as the buildspec wrote it.
    pub reference: String,
    /// Where the value came from.
    pub source: ValueSource,
}

/// A parameter or secret that could not be resolved: the build fails in DOWNLOAD_SOURCE.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ResolveError {
    /// Which section failed: [`Origin::ParameterStore`] or [`Origin::SecretsManager`].
    pub origin: Origin,
    /// The service's error code (`ResourceNotFoundException`, `AccessDeniedException`...), when
    /// it sent one; `ParameterNotFound` for a parameter that does not exist.
    pub code: Option<String>,
    /// What failed, naming the parameter or secret and the variable (never a value).
    pub message: String,
}

impl ResolveError {
    /// CodeBuild's phase context status code for this failure: `Decrypted Variables Error` for
    /// Parameter Store, `Secrets Manager Error` for Secrets Manager.
    pub fn context_code(&self) -> &'static str {
        match self.origin {
            Origin::SecretsManager => "Secrets Manager Error",
            _ => "Decrypted Variables Error",
        }
    }

    fn parameter(code: Option<String>, message: String) -> ResolveError {
        ResolveError {
            origin: Origin::ParameterStore,
            code,
            message,
        }
    }

    fn secret(code: Option<String>, message: String) -> ResolveError {
        ResolveError {
            origin: Origin::SecretsManager,
            code,
            message,
        }
    }
}

/// Resolves every `parameter-store` and `secrets-manager` entry of `env`, in the buildspec's
/// order (parameters first), from `offline` where it lists the name and from AWS otherwise.
/// `default_region` is the region when the environment and profile name none. Stops at the
/// first failure.
pub async fn resolve(
    env: &Env,
    offline: &OfflineValues,
    default_region: &str,
) -> Result<Vec<ResolvedValue>, ResolveError> {
    let remote_parameters: Vec<&str> = env
        .parameter_store
        .iter()
        .map(|p| p.parameter.value.as_str())
        .filter(|name| !offline.parameters.contains_key(*name))
        .collect();
    let remote_secrets = env
        .secrets_manager
        .iter()
        .any(|s| offline.secret(&s.reference.value).is_none());
    #[cfg(not(feature = "aws"))]
    if let Some(name) = remote_parameters.first() {
        return Err(ResolveError::parameter(
            None,
            format!("parameter {name}: it is not in the secrets file, and {NO_AWS}"),
        ));
    }
    #[cfg(not(feature = "aws"))]
    let _ = (remote_secrets, default_region);
    #[cfg(feature = "aws")]
    let config = if remote_parameters.is_empty() && !remote_secrets {
        None
    } else {
        Some(crate::aws::sdk_config(default_region).await)
    };

    let mut out = Vec::new();
    #[cfg(not(feature = "aws"))]
    let fetched: HashMap<String, String> = HashMap::new();
    #[cfg(feature = "aws")]
    let fetched = match &config {
        Some(config) if !remote_parameters.is_empty() => {
            get_parameters(&aws_sdk_ssm::Client::new(config), &remote_parameters, env).await?
        }
        _ => HashMap::new(),
    };
    for p in &env.parameter_store {
        let name = p.parameter.value.as_str();
        let (value, source) = match offline.parameters.get(name) {
            Some(value) => (value.clone(), ValueSource::SecretsFile),
            None => match fetched.get(name) {
                Some(value) => (value.clone(), ValueSource::Aws),
                None => {
                    return Err(ResolveError::parameter(
                        Some("ParameterNotFound".into()),
                        format!(
                            "parameter does not exist: {name} (ParameterNotFound, variable {})",
                            p.name.value
                        ),
                    ))
                }
            },
        };
        out.push(ResolvedValue {
            name: p.name.value.clone(),
            value,
            origin: Origin::ParameterStore,
            reference: name.to_string(),
            source,
        });
    }

    #[cfg(feature = "aws")]
    let client = config.as_ref().map(aws_sdk_secretsmanager::Client::new);
    #[cfg(not(feature = "aws"))]
    let client: Option<()> = None;
    // Each secret version is asked once, however many keys of it the buildspec reads.
    #[cfg(feature = "aws")]
    let mut strings: HashMap<SecretReference, String> = HashMap::new();
    for s in &env.secrets_manager {
        let reference = &s.reference.value;
        let variable = &s.name.value;
        let (value, source) = match (offline.secret(reference), &client) {
            (Some(found), _) => {
                let value = found.map_err(|why| {
                    ResolveError::secret(
                        None,
                        format!(
                            "the secrets file's value of secret {}: {why} (variable {variable})",
                            reference.secret_id
                        ),
                    )
                })?;
                (value, ValueSource::SecretsFile)
            }
            #[cfg(feature = "aws")]
            (None, Some(client)) => {
                let version = SecretReference {
                    json_key: None,
                    ..reference.clone()
                };
                let whole = match strings.get(&version) {
                    Some(text) => text.clone(),
                    None => {
                        let text = get_secret_string(client, &version, variable).await?;
                        strings.insert(version, text.clone());
                        text
                    }
                };
                let value = match reference.json_key.as_deref() {
                    None => whole,
                    Some(key) => json_member(&whole, key).map_err(|why| {
                        ResolveError::secret(
                            None,
                            format!(
                                "secret {}: {why} (variable {variable})",
                                reference.secret_id
                            ),
                        )
                    })?,
                };
                (value, ValueSource::Aws)
            }
            // Not reached with AWS: it is configured whenever a secret is missing from the
            // offline values.
            (None, _) => {
                #[cfg(feature = "aws")]
                let why = "no AWS configuration";
                #[cfg(not(feature = "aws"))]
                let why = format!("it is not in the secrets file, and {NO_AWS}");
                return Err(ResolveError::secret(
                    None,
                    format!("secret {reference}: {why} (variable {variable})"),
                ));
            }
        };
        out.push(ResolvedValue {
            name: variable.clone(),
            value,
            origin: Origin::SecretsManager,
            reference: s.reference.value.to_string(),
            source,
        });
    }
    Ok(out)
}

/// Why a value that only AWS has cannot be had.
#[cfg(not(feature = "aws"))]
const NO_AWS: &str = "this build of buildagent-runner has no AWS support (its `aws` feature)";

/// The decrypted values of `names` (each asked once, [`GET_PARAMETERS_BATCH`] per call), by the
/// name the buildspec wrote. A name the service reports as invalid is an error.
#[cfg(feature = "aws")]
async fn get_parameters(
    client: &aws_sdk_ssm::Client,
    names: &[&str],
    env: &Env,
) -> Result<HashMap<String, String>, ResolveError> {
    let mut unique: Vec<&str> = Vec::new();
    for name in names {
        if !unique.contains(name) {
            unique.push(name);
        }
    }
    let variable = |name: &str| {
        env.parameter_store
            .iter()
            .find(|p| p.parameter.value == name)
            .map(|p| p.name.value.clone())
            .unwrap_or_default()
    };
    let mut values = HashMap::new();
    for batch in unique.chunks(GET_PARAMETERS_BATCH) {
        let answer = client
            .get_parameters()
            .set_names(Some(batch.iter().map(|n| n.to_string()).collect()))
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| {
                let (code, message) = service_error(&e);
                ResolveError::parameter(
                    code,
                    format!("cannot get the parameters {}: {message}", batch.join(", ")),
                )
            })?;
        if let Some(name) = answer.invalid_parameters().first() {
            return Err(ResolveError::parameter(
                Some("ParameterNotFound".into()),
                format!(
                    "parameter does not exist: {name} (ParameterNotFound, variable {})",
                    variable(name)
                ),
            ));
        }
        for parameter in answer.parameters() {
            let value = parameter.value().unwrap_or_default().to_string();
            // The answer names a parameter by its name and selector (`/p:3`, `/p:label`); a
            // parameter asked for by its ARN may come back under its name only.
            let name = format!(
                "{}{}",
                parameter.name().unwrap_or_default(),
                parameter.selector().unwrap_or_default()
            );
            if let Some(arn) = parameter.arn() {
                values.insert(arn.to_string(), value.clone());
            }
            values.insert(name, value);
        }
    }
    Ok(values)
}

/// The secret string of one secret version (`json_key` is not looked at).
#[cfg(feature = "aws")]
async fn get_secret_string(
    client: &aws_sdk_secretsmanager::Client,
    version: &SecretReference,
    variable: &str,
) -> Result<String, ResolveError> {
    let answer = client
        .get_secret_value()
        .secret_id(&version.secret_id)
        .set_version_stage(version.version_stage.clone())
        .set_version_id(version.version_id.clone())
        .send()
        .await
        .map_err(|e| {
            let (code, message) = service_error(&e);
            ResolveError::secret(
                code,
                format!(
                    "{message} (secret {}, variable {variable})",
                    described(version)
                ),
            )
        })?;
    match (answer.secret_string(), answer.secret_binary()) {
        (Some(text), _) => Ok(text.to_string()),
        (None, Some(_)) => Err(ResolveError::secret(
            None,
            format!(
                "secret {} holds a binary value (SecretBinary), and a variable holds text: \
                 store it as a secret string (base64-encoded, say) (variable {variable})",
                described(version)
            ),
        )),
        (None, None) => Err(ResolveError::secret(
            None,
            format!(
                "secret {} has no value (variable {variable})",
                described(version)
            ),
        )),
    }
}

/// A secret version for messages: its id, with the stage or version id that was asked for.
#[cfg(feature = "aws")]
fn described(version: &SecretReference) -> String {
    version.to_string()
}

/// The service's error code and a message (`CODE: message`), or the transport error.
#[cfg(feature = "aws")]
fn service_error<E>(error: &E) -> (Option<String>, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = error.code().map(str::to_string);
    let message = match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => DisplayErrorContext(error).to_string(),
    };
    (code, message)
}

/// The member `key` of the JSON object `text`: a string as it is, anything else as its JSON text.
/// The reasons it can fail never quote the text.
fn json_member(text: &str, key: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| format!("the value is not JSON, so its key `{key}` cannot be read"))?;
    let serde_json::Value::Object(object) = value else {
        return Err(format!(
            "the value is not a JSON object, so its key `{key}` cannot be read"
        ));
    };
    match object.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(format!("the JSON value has no key `{key}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(text: &str) -> SecretReference {
        SecretReference::parse(text).unwrap()
    }

    #[test]
    fn json_members_are_strings_or_json_text() {
        let text = r#"{"user":"app","port":5432,"tls":true,"nested":{"a":[1,2]},"empty":""}"#;
        assert_eq!(json_member(text, "user").unwrap(), "app");
        assert_eq!(json_member(text, "port").unwrap(), "5432");
        assert_eq!(json_member(text, "tls").unwrap(), "true");
        assert_eq!(json_member(text, "nested").unwrap(), r#"{"a":[1,2]}"#);
        assert_eq!(json_member(text, "empty").unwrap(), "");
        assert!(json_member(text, "password")
            .unwrap_err()
            .contains("no key `password`"));
        let e = json_member("hunter2", "k").unwrap_err();
        assert!(e.contains("not JSON") && !e.contains("hunter2"), "{e}");
        let e = json_member("[\"hunter2\"]", "k").unwrap_err();
        assert!(
            e.contains("not a JSON object") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn offline_secrets_match_exactly_or_by_key_of_the_whole_secret() {
        let mut offline = OfflineValues::new();
        offline.add_secret(reference("db"), r#"{"user":"app","password":"pw"}"#);
        offline.add_secret(reference("db:user"), "override");
        offline.add_secret(reference("db::AWSPREVIOUS"), r#"{"password":"old"}"#);
        assert_eq!(
            offline.secret(&reference("db:user")),
            Some(Ok("override".into()))
        );
        assert_eq!(
            offline.secret(&reference("db:password")),
            Some(Ok("pw".into()))
        );
        assert_eq!(
            offline.secret(&reference("db:password:AWSPREVIOUS")),
            Some(Ok("old".into()))
        );
        assert!(offline.secret(&reference("db:nope")).unwrap().is_err());
        assert_eq!(offline.secret(&reference("other")), None);
        assert_eq!(offline.secret(&reference("db:password::v1")), None);
    }

    #[test]
    fn errors_carry_codebuilds_context_codes() {
        let e = ResolveError::parameter(None, "x".into());
        assert_eq!(e.context_code(), "Decrypted Variables Error");
        let e = ResolveError::secret(None, "x".into());
        assert_eq!(e.context_code(), "Secrets Manager Error");
    }

    #[tokio::test]
    async fn offline_values_need_no_aws() {
        let yaml = "version: 0.2\nenv:\n  parameter-store:\n    A: /a\n  secrets-manager:\n    B: db:user\nphases:\n  build:\n    commands: [echo]\n";
        let spec = buildagent_spec::parse(yaml, &Default::default())
            .buildspec
            .unwrap();
        let mut offline = OfflineValues::new();
        offline.add_parameter("/a", "one");
        offline.add_secret(reference("db"), r#"{"user":"two"}"#);
        let resolved = resolve(&spec.env, &offline, "us-east-1").await.unwrap();
        let got: Vec<(&str, &str, Origin, ValueSource)> = resolved
            .iter()
            .map(|r| (r.name.as_str(), r.value.as_str(), r.origin, r.source))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "one", Origin::ParameterStore, ValueSource::SecretsFile),
                ("B", "two", Origin::SecretsManager, ValueSource::SecretsFile)
            ]
        );
    }
}
