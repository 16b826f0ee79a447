//! Registry credentials from the Docker configuration, as the docker CLI finds them.
//!
//! The file is `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. For a registry host
//! (`registry.example.com`, `127.0.0.1:5000`; Docker Hub is `docker.io`) the lookup is the docker
//! CLI's:
//!
//! 1. `credHelpers[<host>]`: run `docker-credential-<helper> get` with the server on standard input;
//! 2. else `credsStore`: the same with that helper;
//! 3. else `auths[<host>]` (also `https://<host>`, and Docker Hub's
//!    `https://index.docker.io/v1/`): `auth` (base64 `user:password`), or `username` and
//!    `password`, or an `identitytoken`.
//!
//! No file, no entry, or a helper that knows nothing of the server: anonymous access (`None`).
//! A file that is not JSON, or a helper that fails otherwise, is an error naming the file or the
//! helper.
//!
//! [`lookup`] is what pushes and pulls use: for an Amazon ECR registry ([`crate::ecr::registry`])
//! the configuration's own entry for the host (`credHelpers[<host>]`, such as `ecr-login`, or
//! `auths[<host>]` from a `docker login`) comes first; without one (or when it knows nothing),
//! a token from ECR's `GetAuthorizationToken`. A `credsStore` alone is not asked for ECR hosts:
//! it is a default for every registry, not a choice made for this one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (`<token>` for an identity token from a helper).
    pub username: String,
    /// The password or token.
    pub password: String,
    /// An OAuth2 identity (refresh) token, when the configuration holds one instead of a password.
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // Never print a secret, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish_non_exhaustive()
    }
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsError(String);

/// The host part of an image reference's registry as the configuration keys it: Docker Hub
/// references (`ubuntu`, `library/ubuntu`, `docker.io/x/y`) give `docker.io`.
pub fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// The Docker configuration file in use: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker/config.json"))
}

/// The credentials for `host` from the configuration file in use ([`config_path`]).
pub fn for_registry(host: &str) -> Result<Option<Credentials>, CredentialsError> {
    match config_path() {
        Some(path) => from_file(&path, host),
        None => Ok(None),
    }
}

/// Where [`lookup`] found credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The Docker configuration (the file in use, when there is one).
    DockerConfig(Option<PathBuf>),
    /// A token from ECR's `GetAuthorizationToken`.
    EcrToken,
}

/// The credentials for the registry `host` and where they came from (see the module docs for
/// the order); `None`: anonymous access.
pub async fn lookup(host: &str) -> Result<Option<(Credentials, Origin)>, CredentialsError> {
    let path = config_path();
    let from_config =
        |found: Option<Credentials>| found.map(|c| (c, Origin::DockerConfig(path.clone())));
    let Some(registry) = crate::ecr::registry(host) else {
        return Ok(from_config(for_registry(host)?));
    };
    if let Some(path) = &path {
        if has_own_entry(path, host)? {
            if let Some(found) = from_config(from_file(path, host)?) {
                return Ok(Some(found));
            }
        }
    }
    let token = crate::ecr::credentials(&registry)
        .await
        .map_err(|e| CredentialsError(e.to_string()))?;
    Ok(Some((token, Origin::EcrToken)))
}

/// Whether the configuration file at `path` names `host` itself: in `credHelpers`, or in `auths`
/// (as `host` or `https://host`; `docker login` writes that entry, empty when a `credsStore`
/// keeps the secret).
pub fn has_own_entry(path: &Path, host: &str) -> Result<bool, CredentialsError> {
    let Some(config) = read_config(path)? else {
        return Ok(false);
    };
    let named = |section: &str, names: &[String]| {
        config
            .get(section)
            .and_then(|s| s.as_object())
            .is_some_and(|s| names.iter().any(|n| s.contains_key(n)))
    };
    Ok(named("credHelpers", &[host.to_string()])
        || named(
            "auths",
            &[
                host.to_string(),
                format!("https://{host}"),
                format!("http://{host}"),
            ],
        ))
}

/// The configuration file at `path` as JSON (`None` when it is missing).
fn read_config(path: &Path) -> Result<Option<serde_json::Value>, CredentialsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialsError(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| CredentialsError(format!("{} is not valid JSON: {e}", path.display())))
}

/// The credentials for `host` from the configuration file at `path` (none if it is missing).
pub fn from_file(path: &Path, host: &str) -> Result<Option<Credentials>, CredentialsError> {
    let Some(config) = read_config(path)? else {
        return Ok(None);
    };
    let helper = config
        .get("credHelpers")
        .and_then(|h| h.get(host))
        .or_else(|| config.get("credsStore"))
        .and_then(|h| h.as_str())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        return from_helper(helper, &server_url(host));
    }
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let mut names = vec![
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ];
    if host == "docker.io" {
        names.insert(0, "https://index.docker.io/v1/".to_string());
        names.push("index.docker.io".to_string());
    }
    let Some(entry) = names.iter().find_map(|n| auths.get(n)) else {
        return Ok(None);
    };
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let identity_token = field("identitytoken");
    if let Some(auth) = field("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                CredentialsError(format!(
                    "{}: auths.\"{host}\".auth is not base64 of user:password",
                    path.display()
                ))
            })?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            CredentialsError(format!(
                "{}: auths.\"{host}\".auth is not base64 of user:password",
                path.display()
            ))
        })?;
        return Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
            identity_token,
        }));
    }
    match (field("username"), field("password")) {
        (Some(username), Some(password)) => Ok(Some(Credentials {
            username,
            password,
            identity_token,
        })),
        _ => Ok(identity_token.map(|token| Credentials {
            username: "<token>".to_string(),
            password: String::new(),
            identity_token: Some(token),
        })),
    }
}

/// The server name credential helpers are asked about: Docker Hub's historical URL, else the host.
fn server_url(host: &str) -> String {
    if host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

/// Asks `docker-credential-<helper> get` for `server`'s credentials.
fn from_helper(helper: &str, server: &str) -> Result<Option<Credentials>, CredentialsError> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CredentialsError(format!("cannot run the credential helper {program}: {e}"))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CredentialsError(format!("credential helper {program}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The helpers' protocol: this message means "nothing stored for that server".
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        return Err(CredentialsError(format!(
            "credential helper {program} failed for {server}: {}{}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let reply: serde_json::Value = serde_json::from_str(&stdout).map_err(|e| {
        CredentialsError(format!("credential helper {program} answered no JSON: {e}"))
    })?;
    let get = |name: &str| reply.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let (username, secret) = (get("Username"), get("Secret"));
    Ok(Some(if username == "<token>" {
        Credentials {
            username: username.to_string(),
            password: String::new(),
            identity_token: Some(secret.to_string()),
        }
    } else {
        Credentials {
            username: username.to_string(),
            password: secret.to_string(),
            identity_token: None,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), text).unwrap();
        dir
    }

    #[test]
    fn hosts_of_references() {
        assert_eq!(registry_host("ubuntu"), "docker.io");
        assert_eq!(registry_host("library/ubuntu:22.04"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:45001/x/y:1"), "127.0.0.1:45001");
        assert_eq!(registry_host("localhost/x"), "localhost");
        assert_eq!(
            registry_host("123.dkr.ecr.us-east-1.amazonaws.com/app"),
            "123.dkr.ecr.us-east-1.amazonaws.com"
        );
    }

    #[test]
    fn auths_entries_are_read_in_each_form() {
        // `echo -n 'user:pa:ss' | base64`
        let dir = config(
            r#"{"auths": {
                "r.example": {"auth": "dXNlcjpwYTpzcw=="},
                "https://s.example": {"username": "u2", "password": "p2"},
                "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"},
                "t.example": {"identitytoken": "refresh-me"}
            }}"#,
        );
        let path = dir.path().join("config.json");
        let c = from_file(&path, "r.example").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("user", "pa:ss")
        );
        let c = from_file(&path, "s.example").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u2", "p2"));
        let c = from_file(&path, "docker.io").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("hub", "hubpw"));
        assert_eq!(c.identity_token, None);
        assert_eq!(from_file(&path, "other.example").unwrap(), None);
        assert!(!format!("{c:?}").contains("hubpw"));
        let c = from_file(&path, "t.example").unwrap().unwrap();
        assert_eq!(c.identity_token.as_deref(), Some("refresh-me"));
        assert_eq!(c.password, "");
        assert!(!format!("{c:?}").contains("refresh-me"));
    }

    #[test]
    fn own_entries_are_told_from_a_default_store() {
        let ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        let dir = config(&format!(
            r#"{{"credsStore": "desktop", "credHelpers": {{"{ecr}": "ecr-login"}},
                "auths": {{"https://r.example": {{}}}}}}"#
        ));
        let path = dir.path().join("config.json");
        assert!(has_own_entry(&path, ecr).unwrap());
        assert!(has_own_entry(&path, "r.example").unwrap());
        // The store is every registry's default, not an entry for this one.
        assert!(!has_own_entry(&path, "210987654321.dkr.ecr.us-east-1.amazonaws.com").unwrap());
        assert!(!has_own_entry(&dir.path().join("none.json"), ecr).unwrap());
    }

    #[test]
    fn missing_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(from_file(&dir.path().join("none.json"), "x").unwrap(), None);
        let broken = config("{not json");
        let err = from_file(&broken.path().join("config.json"), "x").unwrap_err();
        assert!(err.to_string().contains("is not valid JSON"), "{err}");
        let bad = config(r#"{"auths": {"x": {"auth": "%%%"}}}"#);
        let err = from_file(&bad.path().join("config.json"), "x").unwrap_err();
        assert!(err.to_string().contains("auths.\"x\".auth"), "{err}");
    }

    #[test]
    fn a_credential_helper_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\nif [ \"$server\" = known.example ]; then\n\
             printf '{\"ServerURL\":\"%s\",\"Username\":\"hu\",\"Secret\":\"hs\"}' \"$server\"\n\
             elif [ \"$server\" = token.example ]; then\n\
             printf '{\"ServerURL\":\"%s\",\"Username\":\"<token>\",\"Secret\":\"ht\"}' \"$server\"\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir.path().to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        // The helper is found through PATH; this test's own process PATH is changed, which no
        // other test of this crate depends on.
        std::env::set_var("PATH", std::env::join_paths(dirs).unwrap());
        let conf = config(
            r#"{"credHelpers": {"known.example": "fake", "unknown.example": "fake", "token.example": "fake"}}"#,
        );
        let file = conf.path().join("config.json");
        let c = from_file(&file, "known.example").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("hu", "hs"));
        assert_eq!(c.identity_token, None);
        // Username `<token>`: the secret is an identity token, not a password.
        let c = from_file(&file, "token.example").unwrap().unwrap();
        assert_eq!(
            (c.password.as_str(), c.identity_token.as_deref()),
            ("", Some("ht"))
        );
        assert_eq!(from_file(&file, "unknown.example").unwrap(), None);
        let missing = config(r#"{"credsStore": "nonexistent-helper"}"#);
        let err = from_file(&missing.path().join("config.json"), "a.example").unwrap_err();
        assert!(
            err.to_string()
                .contains("docker-credential-nonexistent-helper"),
            "{err}"
        );
    }
}
