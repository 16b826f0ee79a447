//! A client for the OCI distribution API, on reqwest.
//!
//! - **Addresses.** `docker.io` is `registry-1.docker.io`; loopback registries (`localhost`,
//!   `127.0.0.0/8`, `[::1]`) and those in [`ClientOptions::insecure`] are spoken to over plain
//!   HTTP, every other one over HTTPS.
//! - **Auth.** The first request to a registry is `GET /v2/`; its `WWW-Authenticate` challenge
//!   decides: `Basic` sends the credentials with every request, `Bearer` fetches a token from the
//!   realm for each scope (`repository:NAME:pull,push`, plus the source's `pull` for a mount),
//!   cached by scope until it expires. A 401 later (an expired token) fetches a new one once.
//!   An identity token (`identitytoken`, or a helper's `<token>` user) is an OAuth2 refresh
//!   token: the token comes from `POST realm` with `grant_type=refresh_token`, and only a 404,
//!   401 or 400 there (a service without the endpoint) falls back to the `GET`, as containerd
//!   does. It is never sent as a Basic password.
//!   Credentials come from [`ClientOptions::credentials`] (`--username`/`--password-stdin`) for
//!   their registry, else [`crate::credentials::lookup`]: the Docker configuration, and for an
//!   Amazon ECR registry a token from `GetAuthorizationToken`, asked for again when it nears its
//!   expiry or when the registry refuses it (once).
//! - **ECR endpoints.** A registry in [`ClientOptions::endpoints`] (`BUILDAGENT_ECR_ENDPOINTS`)
//!   is spoken to at the address it maps to, with the credentials of its own name.
//! - **Pushes.** Every blob is checked with `HEAD` first; a blob of the base image in another
//!   repository of the same registry is mounted (`POST ?mount=&from=`); the others are uploaded
//!   in one request each, streamed from the file (`POST`, then one `PATCH` with the whole blob
//!   and a `PUT ?digest=`, or one monolithic `PUT` with [`UploadMode::Put`]), several at once.
//!   The manifest goes last.
//! - **Retries.** Connection errors, timeouts, 5xx and 429 answers are retried with exponential
//!   backoff (`Retry-After` honoured, at most 30 s); an upload that fails is started again from
//!   `POST`; a download whose body breaks off (a reset, a short body, a stall past
//!   [`ClientOptions::timeout`]) is started again from its first byte. The manifest is sent only
//!   after every blob is in the registry: a failed blob fails the push before it.
//! - **Reads** send `Accept` with every manifest and index type; an index is resolved to the
//!   platform's manifest; blobs are checked against their digest as they are written.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE,
};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::image::{BlobOrigin, Finished, Image};
use super::layout::{image_from, pick_platform};
use super::spec::{media, Descriptor, Digest, ImageConfig, Index, Manifest, Platform};
use super::store::Store;
use super::{OciError, Progress, ProgressFn};
use crate::credentials;
use crate::ecr;

/// An image reference: `[registry/]repository[:tag][@digest]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The registry as written (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository (`library/busybox`).
    pub repository: String,
    /// The tag (`latest` when neither a tag nor a digest is given).
    pub tag: Option<String>,
    /// The digest.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference the way Docker does: a first component with a `.` or `:`, or
    /// `localhost`, is the registry; otherwise it is Docker Hub (`library/` for one-part names).
    pub fn parse(text: &str) -> Result<Reference, OciError> {
        let bad =
            |why: &str| OciError::Invalid(format!("`{text}` is not an image reference: {why}"));
        let (name, digest) = match text.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d).map_err(|e| bad(&e))?)),
            None => (text, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
            _ => (name, None),
        };
        if name.is_empty() {
            return Err(bad("no name"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if repository.is_empty() || !repository.chars().all(valid) {
            return Err(bad("a repository is lowercase letters, digits and . _ - /"));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(bad("a tag is letters, digits and . _ -, at most 128"));
            }
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What manifests are fetched and pushed by: the digest, else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// How a blob is uploaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UploadMode {
    /// `POST`, one streamed `PATCH` with the whole blob, `PUT ?digest=` (distribution, ECR,
    /// GHCR, Harbor, Artifactory: crane's way).
    #[default]
    Patch,
    /// `POST`, then one monolithic `PUT ?digest=` with the blob.
    Put,
}

/// Options of a [`Client`].
#[derive(Clone)]
pub struct ClientOptions {
    /// Credentials for one registry host (`--username`/`--password-stdin`), taking precedence
    /// over the Docker configuration for that host.
    pub credentials: Option<(String, credentials::Credentials)>,
    /// Registry hosts spoken to over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// ECR registries spoken to at another address (default none; the agent reads
    /// `BUILDAGENT_ECR_ENDPOINTS` with [`ecr::Endpoints::from_env`]).
    pub endpoints: ecr::Endpoints,
    /// Retries after the first attempt (default 4).
    pub retries: u32,
    /// The first retry's wait, doubled for each further one (default 500 ms).
    pub backoff: Duration,
    /// Blobs uploaded at once (default 4).
    pub parallel: usize,
    /// How blobs are uploaded (default [`UploadMode::Patch`]).
    pub upload: UploadMode,
    /// Retry reports.
    pub progress: Option<ProgressFn>,
    /// How long a request may wait for the registry: to connect (at most 30 s of it), and
    /// between two reads of an answer (default [`crate::net::DEFAULT_TIMEOUT`]; the agent reads
    /// [`crate::net::timeout`]). A request that waits longer is retried.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            credentials: None,
            insecure: Vec::new(),
            endpoints: ecr::Endpoints::default(),
            retries: 4,
            backoff: Duration::from_millis(500),
            parallel: 4,
            upload: UploadMode::Patch,
            progress: None,
            timeout: crate::net::DEFAULT_TIMEOUT,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Challenge {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A bearer token and when to stop using it, by (registry, scope).
type Token = (String, Instant);

/// What a registry's credentials are, once looked up.
#[derive(Clone)]
enum Known {
    /// Fixed for the client's life (the Docker configuration, or none).
    Fixed(Option<credentials::Credentials>),
    /// An ECR token, asked of [`ecr::credentials`] each time (it caches and refreshes them).
    Ecr(ecr::EcrRegistry),
}

/// A registry client (cheap to clone; clones share connections and tokens).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    options: Arc<ClientOptions>,
    challenges: Arc<Mutex<HashMap<String, Challenge>>>,
    tokens: Arc<Mutex<HashMap<(String, String), Token>>>,
    creds: Arc<Mutex<HashMap<String, Known>>>,
}

/// A request body that can be sent again.
#[derive(Clone)]
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a Path, u64),
}

/// Why one attempt failed.
enum Failure {
    /// Worth another attempt.
    Transient(String),
    /// Final.
    Fatal(OciError),
}

fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) && !n.ends_with(':') => n,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The registry's error message: `CODE: message` of the first entry of `errors`, else the body.
fn error_text(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        if let Some(first) = e.errors.first() {
            return format!("{status}: {} {}", first.code, first.message)
                .trim()
                .to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {}", text.chars().take(300).collect::<String>())
    }
}

/// Parses `Bearer realm="...",service="...",scope="..."` (or `Basic realm=...`).
fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    let mut fields = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        fields.insert(key, value.to_string());
        rest = next.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        match fields.remove("realm") {
            Some(realm) => Challenge::Bearer {
                realm,
                service: fields.remove("service"),
            },
            None => Challenge::Basic,
        }
    } else {
        Challenge::Basic
    }
}

impl Client {
    /// A client with `options`.
    pub fn new(options: ClientOptions) -> Result<Client, OciError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("buildagent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(crate::net::connect_timeout(options.timeout))
            .read_timeout(options.timeout)
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| OciError::Invalid(format!("cannot make an HTTP client: {e}")))?;
        Ok(Client {
            http,
            options: Arc::new(options),
            challenges: Arc::default(),
            tokens: Arc::default(),
            creds: Arc::default(),
        })
    }

    /// The host requests go to (`registry-1.docker.io` for `docker.io`).
    pub fn api_host(registry: &str) -> &str {
        if registry == "docker.io" || registry == "index.docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        }
    }

    fn base_url(&self, registry: &str) -> String {
        let host = match self.options.endpoints.address(registry) {
            Some(address) => address,
            None => Client::api_host(registry),
        };
        let plain = is_loopback(host) || self.options.insecure.iter().any(|h| h == registry);
        format!("{}://{host}", if plain { "http" } else { "https" })
    }

    fn url(&self, registry: &str, path: &str) -> Result<Url, OciError> {
        Url::parse(&format!("{}{path}", self.base_url(registry)))
            .map_err(|e| OciError::Invalid(format!("{registry}: a bad URL: {e}")))
    }

    fn report(&self, p: Progress) {
        if let Some(f) = &self.options.progress {
            f(&p);
        }
    }

    async fn credentials(
        &self,
        registry: &str,
    ) -> Result<Option<credentials::Credentials>, OciError> {
        if let Some((host, c)) = &self.options.credentials {
            if host == registry {
                return Ok(Some(c.clone()));
            }
        }
        let auth_error = |message: String| OciError::Auth {
            registry: registry.to_string(),
            message,
        };
        let known = self
            .creds
            .lock()
            .expect("credentials lock")
            .get(registry)
            .cloned();
        match known {
            Some(Known::Fixed(c)) => Ok(c),
            Some(Known::Ecr(ecr_registry)) => ecr::credentials(&ecr_registry)
                .await
                .map(Some)
                .map_err(|e| auth_error(e.to_string())),
            None => {
                let found = credentials::lookup(registry)
                    .await
                    .map_err(|e| auth_error(e.to_string()))?;
                let known = match (&found, ecr::registry(registry)) {
                    (Some((_, credentials::Origin::EcrToken)), Some(r)) => Known::Ecr(r),
                    _ => Known::Fixed(found.as_ref().map(|(c, _)| c.clone())),
                };
                self.creds
                    .lock()
                    .expect("credentials lock")
                    .insert(registry.to_string(), known);
                Ok(found.map(|(c, _)| c))
            }
        }
    }

    /// Whether `registry`'s credentials are an ECR token (looked up already).
    fn uses_ecr_token(&self, registry: &str) -> bool {
        let flags = matches!(&self.options.credentials, Some((host, _)) if host == registry);
        !flags
            && matches!(
                self.creds.lock().expect("credentials lock").get(registry),
                Some(Known::Ecr(_))
            )
    }

    fn basic(c: &credentials::Credentials) -> String {
        let raw = format!("{}:{}", c.username, c.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// The challenge of `registry` (one `GET /v2/`, then cached).
    async fn challenge(&self, registry: &str) -> Result<Challenge, OciError> {
        if let Some(c) = self.challenges.lock().expect("lock").get(registry) {
            return Ok(c.clone());
        }
        let url = self.url(registry, "/v2/")?;
        let mut attempt = 1;
        let response = loop {
            match self.http.get(url.clone()).send().await {
                Ok(r)
                    if r.status().is_server_error()
                        || r.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    let reason = r.status().to_string();
                    self.backoff(&format!("GET {url}"), &mut attempt, &reason, None)
                        .await
                        .map_err(|_| {
                            registry_error(
                                registry,
                                Some(r.status().as_u16()),
                                format!("GET /v2/: {reason}"),
                            )
                        })?;
                }
                Ok(r) => break r,
                Err(e) => {
                    let reason = transport_text(&e);
                    self.backoff(&format!("GET {url}"), &mut attempt, &reason, None)
                        .await
                        .map_err(|_| {
                            registry_error(registry, None, format!("cannot reach {url}: {reason}"))
                        })?;
                }
            }
        };
        let challenge = match response.status() {
            StatusCode::UNAUTHORIZED => response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(parse_challenge)
                .unwrap_or(Challenge::Basic),
            s if s.is_success() => Challenge::None,
            // Some registries answer /v2/ with 404 or 403 but serve the API; go on without auth.
            _ => Challenge::None,
        };
        self.challenges
            .lock()
            .expect("lock")
            .insert(registry.to_string(), challenge.clone());
        Ok(challenge)
    }

    /// Waits before attempt `attempt + 1` (reporting it), or fails when retries are used up.
    async fn backoff(
        &self,
        request: &str,
        attempt: &mut u32,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), ()> {
        if *attempt > self.options.retries {
            return Err(());
        }
        let wait = retry_after
            .unwrap_or(self.options.backoff * 2u32.saturating_pow(*attempt - 1))
            .min(Duration::from_secs(30));
        *attempt += 1;
        self.report(Progress::Retrying {
            request: request.to_string(),
            attempt: *attempt,
            reason: reason.to_string(),
        });
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// [`Self::backoff`], or, when the retries are used up, the error that `request` to
    /// `registry` failed after its last attempt.
    async fn backoff_or_give_up(
        &self,
        registry: &str,
        request: &str,
        attempt: &mut u32,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), OciError> {
        if self
            .backoff(request, attempt, reason, retry_after)
            .await
            .is_ok()
        {
            return Ok(());
        }
        Err(registry_error(
            registry,
            None,
            format!("{request} failed after {attempt} attempts: {reason}"),
        ))
    }

    /// The `Authorization` value for `scope` on `registry` (`None`: anonymous).
    async fn authorization(
        &self,
        registry: &str,
        scope: &str,
        fresh: bool,
    ) -> Result<Option<String>, OciError> {
        match self.challenge(registry).await? {
            Challenge::None => Ok(None),
            // An identity token is for a token service only: without a password, no Basic.
            Challenge::Basic => Ok(self
                .credentials(registry)
                .await?
                .filter(has_password)
                .map(|c| Client::basic(&c))),
            Challenge::Bearer { realm, service } => {
                let key = (registry.to_string(), scope.to_string());
                if !fresh {
                    if let Some((token, until)) = self.tokens.lock().expect("lock").get(&key) {
                        if *until > Instant::now() {
                            return Ok(Some(format!("Bearer {token}")));
                        }
                    }
                }
                let token = self
                    .fetch_token(registry, &realm, service.as_deref(), scope)
                    .await?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// A token for `scope` from the token service at `realm`, cached by scope. With an identity
    /// token, the OAuth2 refresh-token grant (`POST`) first; else, or when the service has no
    /// `POST` endpoint, the `GET` flow with the user's password (if any) as Basic auth.
    async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, OciError> {
        let auth_error = |message: String| OciError::Auth {
            registry: registry.to_string(),
            message,
        };
        let mut url = Url::parse(realm)
            .map_err(|e| auth_error(format!("a bad token realm `{realm}`: {e}")))?;
        let creds = self.credentials(registry).await?;
        let mut refused_grant = None;
        if let Some(refresh) = creds.as_ref().and_then(|c| c.identity_token.as_deref()) {
            let form = oauth_form(refresh, service, scope);
            let (status, body) = self
                .token_request(registry, &format!("POST {realm}"), || {
                    self.http
                        .post(url.clone())
                        .header(
                            CONTENT_TYPE,
                            "application/x-www-form-urlencoded; charset=utf-8",
                        )
                        .body(form.clone())
                })
                .await?;
            if status.is_success() {
                return self.keep_token(registry, scope, &body);
            }
            // containerd's rule: a service without the POST endpoint (404; 401 from Artifactory,
            // 400 from ACR) gets the GET flow; a 405 only when there is a user name, which an
            // identity token has not.
            let fallback = matches!(
                status,
                StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST
            );
            let refused = format!(
                "the token service refused the identity token ({})",
                error_text(status, &body)
            );
            if !fallback {
                return Err(auth_error(refused));
            }
            refused_grant = Some(refused);
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                q.append_pair("scope", s);
            }
        }
        // The identity token is never sent as a Basic password.
        let basic = creds.as_ref().filter(|c| has_password(c));
        let (status, body) = self
            .token_request(registry, &format!("GET {realm}"), || {
                let request = self.http.get(url.clone());
                match basic {
                    Some(c) => request.header(AUTHORIZATION, Client::basic(c)),
                    None => request,
                }
            })
            .await?;
        if !status.is_success() {
            let tried = basic
                .map(|c| format!("the credentials of `{}`", c.username))
                .unwrap_or_else(|| "anonymous access".to_string());
            return Err(auth_error(match refused_grant {
                Some(refused) => format!("{refused}, then {tried} ({})", error_text(status, &body)),
                None => format!(
                    "the token service refused {tried}: {}",
                    error_text(status, &body)
                ),
            }));
        }
        self.keep_token(registry, scope, &body)
    }

    /// Sends a request to the token service (retrying connection errors, 5xx and 429) and reads
    /// the answer.
    async fn token_request(
        &self,
        registry: &str,
        what: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, bytes::Bytes), OciError> {
        let auth_error = |message: String| OciError::Auth {
            registry: registry.to_string(),
            message,
        };
        let mut attempt = 1;
        let response = loop {
            match request().send().await {
                Ok(r)
                    if r.status().is_server_error()
                        || r.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    let reason = r.status().to_string();
                    self.backoff(what, &mut attempt, &reason, None)
                        .await
                        .map_err(|_| auth_error(format!("the token service answered {reason}")))?;
                }
                Ok(r) => break r,
                Err(e) => {
                    let reason = transport_text(&e);
                    self.backoff(what, &mut attempt, &reason, None)
                        .await
                        .map_err(|_| {
                            auth_error(format!("cannot reach the token service ({what}): {reason}"))
                        })?;
                }
            }
        };
        let status = response.status();
        Ok((status, response.bytes().await.unwrap_or_default()))
    }

    /// Reads the token (`token`, else `access_token`) of a token service's answer and caches it
    /// for `scope` until it expires.
    fn keep_token(&self, registry: &str, scope: &str, body: &[u8]) -> Result<String, OciError> {
        let auth_error = |message: String| OciError::Auth {
            registry: registry.to_string(),
            message,
        };
        #[derive(serde::Deserialize)]
        struct TokenReply {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let reply: TokenReply = serde_json::from_slice(body)
            .map_err(|e| auth_error(format!("the token service answered no token: {e}")))?;
        let token = if reply.token.is_empty() {
            reply.access_token
        } else {
            reply.token
        };
        if token.is_empty() {
            return Err(auth_error(
                "the token service answered no token".to_string(),
            ));
        }
        // Renew a little early; 60 s is the specification's default lifetime.
        let life = Duration::from_secs(reply.expires_in.unwrap_or(60).max(10) - 5);
        self.tokens.lock().expect("lock").insert(
            (registry.to_string(), scope.to_string()),
            (token.clone(), Instant::now() + life),
        );
        Ok(token)
    }

    /// One attempt of a request, authorized for `scope` (re-authorized once after a 401).
    async fn attempt(
        &self,
        registry: &str,
        scope: &str,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &Body<'_>,
    ) -> Result<reqwest::Response, Failure> {
        let mut fresh = false;
        loop {
            let auth = self
                .authorization(registry, scope, fresh)
                .await
                .map_err(Failure::Fatal)?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(a) = &auth {
                request = request.header(AUTHORIZATION, a);
            }
            request = match body {
                Body::Empty => request,
                Body::Bytes(b) => request.body(b.to_vec()),
                Body::File(path, size) => {
                    let file = tokio::fs::File::open(path)
                        .await
                        .map_err(|e| Failure::Fatal(OciError::io("read", path, e)))?;
                    request
                        .header(CONTENT_LENGTH, *size)
                        .body(reqwest::Body::wrap_stream(file_stream(file)))
                }
            };
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => return Err(Failure::Transient(transport_text(&e))),
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                let has_creds = self
                    .credentials(registry)
                    .await
                    .map_err(Failure::Fatal)?
                    .is_some();
                let bearer = matches!(
                    self.challenge(registry).await.map_err(Failure::Fatal)?,
                    Challenge::Bearer { .. }
                );
                let ecr_token = self.uses_ecr_token(registry);
                if (bearer || ecr_token) && !fresh {
                    // An expired token: fetch a new one once.
                    if ecr_token {
                        ecr::forget(registry);
                    }
                    fresh = true;
                    continue;
                }
                let body = response.bytes().await.unwrap_or_default();
                let message = if has_creds {
                    format!(
                        "the registry refused the {} for {method} {} ({})",
                        if ecr_token {
                            "ECR authorization token (user `AWS`, from GetAuthorizationToken)"
                        } else {
                            "credentials"
                        },
                        url.path(),
                        error_text(status, &body)
                    )
                } else {
                    format!(
                        "{method} {} needs credentials: log in with `docker login {registry}`, or pass --username and --password-stdin ({})",
                        url.path(),
                        error_text(status, &body)
                    )
                };
                return Err(Failure::Fatal(OciError::Auth {
                    registry: registry.to_string(),
                    message,
                }));
            }
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = response.bytes().await.unwrap_or_default();
                let text = error_text(status, &body);
                return Err(Failure::Transient(match retry_after {
                    Some(d) => format!("{text}\u{0}{}", d.as_secs()),
                    None => text,
                }));
            }
            return Ok(response);
        }
    }

    /// A request with retries (connection errors, 5xx, 429).
    async fn send(
        &self,
        registry: &str,
        scope: &str,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Body<'_>,
    ) -> Result<reqwest::Response, OciError> {
        let mut attempt = 1;
        loop {
            match self
                .attempt(registry, scope, &method, &url, &headers, &body)
                .await
            {
                Ok(r) => return Ok(r),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(reason)) => {
                    let (reason, retry_after) = split_retry_after(&reason);
                    let request = format!("{method} {}", url.path());
                    self.backoff_or_give_up(registry, &request, &mut attempt, &reason, retry_after)
                        .await?;
                }
            }
        }
    }

    /// A `GET` read whole (a manifest, a configuration): its status, media type and body,
    /// started again from the first byte when the body breaks off.
    async fn get_whole(
        &self,
        registry: &str,
        scope: &str,
        url: Url,
        headers: HeaderMap,
    ) -> Result<(StatusCode, String, Vec<u8>), OciError> {
        let mut attempt = 1;
        loop {
            let response = self
                .send(
                    registry,
                    scope,
                    Method::GET,
                    url.clone(),
                    headers.clone(),
                    Body::Empty,
                )
                .await?;
            let status = response.status();
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
                .unwrap_or_default();
            match response.bytes().await {
                Ok(body) => return Ok((status, content_type, body.to_vec())),
                Err(e) => {
                    let reason = transport_text(&e);
                    let request = format!("GET {}", url.path());
                    self.backoff_or_give_up(registry, &request, &mut attempt, &reason, None)
                        .await?;
                }
            }
        }
    }

    /// Reads the manifest (or index) `object` of `repository`: bytes, media type, digest.
    pub async fn get_manifest(
        &self,
        registry: &str,
        repository: &str,
        object: &str,
    ) -> Result<Option<(Vec<u8>, String, Digest)>, OciError> {
        let url = self.url(registry, &format!("/v2/{repository}/manifests/{object}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(media::MANIFEST_ACCEPT));
        let scope = format!("repository:{repository}:pull");
        let (status, content_type, body) = self.get_whole(registry, &scope, url, headers).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check_success(status, &body, registry, || {
            format!("GET manifest {repository}:{object}")
        })?;
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType", default)]
            media_type: Option<String>,
        }
        let media_type = serde_json::from_slice::<Probe>(&body)
            .ok()
            .and_then(|p| p.media_type)
            .unwrap_or(content_type);
        let digest = Digest::of(&body);
        if let Ok(d) = Digest::parse(object) {
            if d != digest {
                return Err(registry_error(
                    registry,
                    None,
                    format!("the manifest {object} of {repository} has the digest {digest}"),
                ));
            }
        }
        Ok(Some((body, media_type, digest)))
    }

    /// Reads a small blob (a configuration) whole, checking its digest.
    pub async fn get_blob_bytes(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<Vec<u8>, OciError> {
        let url = self.url(registry, &format!("/v2/{repository}/blobs/{digest}"))?;
        let scope = format!("repository:{repository}:pull");
        let (status, _, body) = self
            .get_whole(registry, &scope, url, HeaderMap::new())
            .await?;
        check_success(status, &body, registry, || {
            format!("GET blob {digest} of {repository}")
        })?;
        if &Digest::of(&body) != digest {
            return Err(registry_error(
                registry,
                None,
                format!("the blob {digest} of {repository} does not match its digest"),
            ));
        }
        Ok(body)
    }

    /// The image `reference` for `platform`: its manifest and configuration are read, its
    /// layers stay in the registry. Returns the image and its manifest digest.
    pub async fn pull_image(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<(Image, Digest), OciError> {
        let registry = &reference.registry;
        let repository = &reference.repository;
        let not_found = || {
            OciError::NotFound(format!(
                "the base image {reference} was not found (no manifest {} in {repository} on {registry})",
                reference.object()
            ))
        };
        let (mut body, mut media_type, mut digest) = self
            .get_manifest(registry, repository, &reference.object())
            .await?
            .ok_or_else(not_found)?;
        if media::is_index(&media_type) {
            let index: Index = serde_json::from_slice(&body).map_err(|e| {
                registry_error(
                    registry,
                    None,
                    format!("the index of {reference} is not valid: {e}"),
                )
            })?;
            let entry = pick_platform(&index, platform).ok_or_else(|| {
                OciError::NotFound(format!(
                    "the base image {reference} has no image for {platform}"
                ))
            })?;
            let object = entry.digest.to_string();
            (body, media_type, digest) = self
                .get_manifest(registry, repository, &object)
                .await?
                .ok_or_else(not_found)?;
        }
        if !media::is_manifest(&media_type) {
            return Err(OciError::Invalid(format!(
                "the base image {reference} is a `{media_type}`, not an image manifest"
            )));
        }
        let manifest: Manifest = serde_json::from_slice(&body).map_err(|e| {
            registry_error(
                registry,
                None,
                format!("the manifest of {reference} is not valid: {e}"),
            )
        })?;
        let config_bytes = self
            .get_blob_bytes(registry, repository, &manifest.config.digest)
            .await?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
            registry_error(
                registry,
                None,
                format!("the configuration of {reference} is not valid: {e}"),
            )
        })?;
        let origin = BlobOrigin::Registry {
            registry: registry.clone(),
            repository: repository.clone(),
        };
        let image = image_from(manifest, &media_type, config, |_| origin.clone())?;
        Ok((image, digest))
    }

    /// Downloads a blob into `store` (checked against its digest and size); returns its size.
    pub async fn fetch_blob(
        &self,
        registry: &str,
        repository: &str,
        descriptor: &Descriptor,
        store: &Store,
    ) -> Result<u64, OciError> {
        let digest = &descriptor.digest;
        if store.has(digest) {
            return Ok(descriptor.size);
        }
        let url = self.url(registry, &format!("/v2/{repository}/blobs/{digest}"))?;
        let scope = format!("repository:{repository}:pull");
        let mut attempt = 1;
        loop {
            let response = self
                .send(
                    registry,
                    &scope,
                    Method::GET,
                    url.clone(),
                    HeaderMap::new(),
                    Body::Empty,
                )
                .await?;
            let status = response.status();
            if !status.is_success() {
                let body = response.bytes().await.unwrap_or_default();
                return Err(registry_error(
                    registry,
                    Some(status.as_u16()),
                    format!(
                        "GET blob {digest} of {repository}: {}",
                        error_text(status, &body)
                    ),
                ));
            }
            let temp = store.temp()?;
            let path = temp.path().to_path_buf();
            let file = temp.reopen().map_err(|e| OciError::io("write", &path, e))?;
            let mut file = tokio::fs::File::from_std(file);
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut stream = response.bytes_stream();
            let mut failed = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        hasher.update(&bytes);
                        size += bytes.len() as u64;
                        file.write_all(&bytes)
                            .await
                            .map_err(|e| OciError::io("write", &path, e))?;
                    }
                    Err(e) => {
                        failed = Some(transport_text(&e));
                        break;
                    }
                }
            }
            if let Some(reason) = failed {
                let request = format!("GET {}", url.path());
                if self
                    .backoff(&request, &mut attempt, &reason, None)
                    .await
                    .is_err()
                {
                    return Err(registry_error(
                        registry,
                        None,
                        format!("{request}: {reason}"),
                    ));
                }
                continue;
            }
            file.flush()
                .await
                .map_err(|e| OciError::io("write", &path, e))?;
            drop(file);
            let got = Digest::from_hasher(hasher);
            if &got != digest || size != descriptor.size {
                return Err(registry_error(
                    registry,
                    None,
                    format!("the blob {digest} of {repository} arrived as {got} ({size} bytes)"),
                ));
            }
            store.commit(temp, digest)?;
            return Ok(size);
        }
    }

    /// Whether `repository` has the blob.
    pub async fn has_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, OciError> {
        let url = self.url(registry, &format!("/v2/{repository}/blobs/{digest}"))?;
        let scope = format!("repository:{repository}:pull,push");
        let response = self
            .send(
                registry,
                &scope,
                Method::HEAD,
                url,
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(registry_error(
                registry,
                Some(s.as_u16()),
                format!("HEAD blob {digest} of {repository}: {s}"),
            )),
        }
    }

    fn location(
        &self,
        registry: &str,
        base: &Url,
        response: &reqwest::Response,
    ) -> Result<Url, OciError> {
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                registry_error(
                    registry,
                    None,
                    "an upload answer without a Location".to_string(),
                )
            })?;
        base.join(location).map_err(|e| {
            registry_error(registry, None, format!("a bad Location `{location}`: {e}"))
        })
    }

    /// Tries to mount `digest` from `from` into `repository`: `Ok(None)` when mounted, else the
    /// upload session the registry opened instead.
    async fn mount(
        &self,
        registry: &str,
        repository: &str,
        from: &str,
        digest: &Digest,
    ) -> Result<Option<Url>, OciError> {
        let mut url = self.url(registry, &format!("/v2/{repository}/blobs/uploads/"))?;
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from);
        let scope = format!("repository:{repository}:pull,push repository:{from}:pull");
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let response = self
            .send(
                registry,
                &scope,
                Method::POST,
                url.clone(),
                headers,
                Body::Empty,
            )
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(self.location(registry, &url, &response)?)),
            s => {
                let body = response.bytes().await.unwrap_or_default();
                Err(registry_error(
                    registry,
                    Some(s.as_u16()),
                    format!("POST mount {digest} from {from}: {}", error_text(s, &body)),
                ))
            }
        }
    }

    /// Uploads a blob from `path` (or `bytes`), starting with the session `session` when a
    /// refused mount opened one. The whole upload is tried again on a transient failure.
    async fn upload(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        size: u64,
        source: Body<'_>,
        mut session: Option<Url>,
    ) -> Result<(), OciError> {
        let scope = format!("repository:{repository}:pull,push");
        let mut attempt = 1;
        loop {
            let result = self
                .upload_once(
                    registry,
                    repository,
                    &scope,
                    digest,
                    size,
                    &source,
                    session.take(),
                )
                .await;
            match result {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(reason)) => {
                    let (reason, retry_after) = split_retry_after(&reason);
                    let request = format!("upload of {digest} to {repository}");
                    self.backoff_or_give_up(registry, &request, &mut attempt, &reason, retry_after)
                        .await?;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_once(
        &self,
        registry: &str,
        repository: &str,
        scope: &str,
        digest: &Digest,
        size: u64,
        source: &Body<'_>,
        session: Option<Url>,
    ) -> Result<(), Failure> {
        let fatal = |status: StatusCode, what: &str, body: &[u8]| {
            Failure::Fatal(registry_error(
                registry,
                Some(status.as_u16()),
                format!(
                    "{what} of {digest} to {repository}: {}",
                    error_text(status, body)
                ),
            ))
        };
        let mut location = match session {
            Some(url) => url,
            None => {
                let url = self
                    .url(registry, &format!("/v2/{repository}/blobs/uploads/"))
                    .map_err(Failure::Fatal)?;
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                let r = self
                    .attempt(registry, scope, &Method::POST, &url, &headers, &Body::Empty)
                    .await?;
                if r.status() != StatusCode::ACCEPTED && r.status() != StatusCode::CREATED {
                    let s = r.status();
                    return Err(fatal(
                        s,
                        "POST upload",
                        &r.bytes().await.unwrap_or_default(),
                    ));
                }
                self.location(registry, &url, &r).map_err(Failure::Fatal)?
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if self.options.upload == UploadMode::Patch {
            if let Body::Bytes(b) = source {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
            }
            let r = self
                .attempt(registry, scope, &Method::PATCH, &location, &headers, source)
                .await?;
            if r.status() != StatusCode::ACCEPTED && r.status() != StatusCode::NO_CONTENT {
                let s = r.status();
                return Err(fatal(
                    s,
                    "PATCH upload",
                    &r.bytes().await.unwrap_or_default(),
                ));
            }
            location = self
                .location(registry, &location, &r)
                .map_err(Failure::Fatal)?;
        }
        location
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let body = match self.options.upload {
            UploadMode::Patch => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                Body::Empty
            }
            UploadMode::Put => {
                if let Body::Bytes(b) = source {
                    headers.insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
                }
                source.clone()
            }
        };
        let r = self
            .attempt(registry, scope, &Method::PUT, &location, &headers, &body)
            .await?;
        if r.status() != StatusCode::CREATED && r.status() != StatusCode::ACCEPTED {
            let s = r.status();
            return Err(fatal(s, "PUT upload", &r.bytes().await.unwrap_or_default()));
        }
        let _ = size;
        Ok(())
    }

    /// Puts one blob into `repository` if it is not there: HEAD, then a mount from the repository
    /// it came from on the same registry, else an upload (fetching it first when its bytes are
    /// only in another registry).
    async fn ensure_blob(
        &self,
        target: &Reference,
        descriptor: &Descriptor,
        origin: &BlobOrigin,
        store: &Store,
    ) -> Result<(), OciError> {
        let registry = &target.registry;
        let repository = &target.repository;
        let digest = &descriptor.digest;
        if self.has_blob(registry, repository, digest).await? {
            self.report(Progress::BlobExists {
                digest: digest.clone(),
            });
            return Ok(());
        }
        let mut session = None;
        if let BlobOrigin::Registry {
            registry: from_registry,
            repository: from,
        } = origin
        {
            if from_registry == registry && from != repository {
                match self.mount(registry, repository, from, digest).await? {
                    None => {
                        self.report(Progress::BlobMounted {
                            digest: digest.clone(),
                            from: from.clone(),
                        });
                        return Ok(());
                    }
                    Some(url) => session = Some(url),
                }
            }
        }
        let path = match origin {
            BlobOrigin::Layout(dir) => dir.join("blobs/sha256").join(digest.hex()),
            BlobOrigin::Registry {
                registry: from_registry,
                repository: from,
            } if !store.has(digest) => {
                let size = self
                    .fetch_blob(from_registry, from, descriptor, store)
                    .await?;
                self.report(Progress::BlobFetched {
                    digest: digest.clone(),
                    size,
                });
                store.path(digest)
            }
            _ => store.path(digest),
        };
        let size = std::fs::metadata(&path)
            .map_err(|e| OciError::io("read", &path, e))?
            .len();
        let started = Instant::now();
        self.upload(
            registry,
            repository,
            digest,
            size,
            Body::File(&path, size),
            session,
        )
        .await?;
        self.report(Progress::BlobUploaded {
            digest: digest.clone(),
            size,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(())
    }

    /// Pushes a finished image to `target`: every blob (`Client::ensure_blob`, several at
    /// once), then the manifest.
    pub async fn push(
        &self,
        target: &Reference,
        image: &Finished,
        store: &Store,
    ) -> Result<(), OciError> {
        let registry = &target.registry;
        let repository = &target.repository;
        let uploads = image
            .layers
            .iter()
            .map(|layer| self.ensure_blob(target, &layer.descriptor, &layer.origin, store));
        let results: Vec<Result<(), OciError>> = futures::stream::iter(uploads)
            .buffer_unordered(self.options.parallel.max(1))
            .collect()
            .await;
        for r in results {
            r?;
        }
        let config = &image.config_descriptor;
        if self.has_blob(registry, repository, &config.digest).await? {
            self.report(Progress::BlobExists {
                digest: config.digest.clone(),
            });
        } else {
            self.upload(
                registry,
                repository,
                &config.digest,
                config.size,
                Body::Bytes(&image.config),
                None,
            )
            .await?;
            self.report(Progress::BlobUploaded {
                digest: config.digest.clone(),
                size: config.size,
                seconds: 0.0,
            });
        }
        let url = self.url(
            registry,
            &format!("/v2/{repository}/manifests/{}", target.object()),
        )?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(image.media_type));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(image.manifest.len()));
        let scope = format!("repository:{repository}:pull,push");
        let response = self
            .send(
                registry,
                &scope,
                Method::PUT,
                url,
                headers,
                Body::Bytes(&image.manifest),
            )
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(registry_error(
                registry,
                Some(status.as_u16()),
                format!("PUT manifest {target}: {}", error_text(status, &body)),
            ));
        }
        Ok(())
    }
}

/// True when `c` has a password for Basic auth (not only an identity token).
fn has_password(c: &credentials::Credentials) -> bool {
    c.identity_token.is_none() || !c.password.is_empty()
}

/// The form of an OAuth2 refresh-token grant (docker/distribution's token specification): one
/// `scope` field with the scopes separated by spaces, as containerd sends it.
fn oauth_form(refresh_token: &str, service: Option<&str>, scope: &str) -> String {
    // Url's query serializer is application/x-www-form-urlencoded.
    let mut form = Url::parse("http://form/").expect("a constant URL");
    {
        let mut q = form.query_pairs_mut();
        q.append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", refresh_token)
            .append_pair("client_id", "buildagent");
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        if !scope.is_empty() {
            q.append_pair("scope", scope);
        }
    }
    form.query().unwrap_or_default().to_string()
}

/// The registry's error, with its status and the text of its answer, unless `status` is a
/// success.
fn check_success(
    status: StatusCode,
    body: &[u8],
    registry: &str,
    what: impl FnOnce() -> String,
) -> Result<(), OciError> {
    if status.is_success() {
        return Ok(());
    }
    Err(registry_error(
        registry,
        Some(status.as_u16()),
        format!("{}: {}", what(), error_text(status, body)),
    ))
}

fn registry_error(registry: &str, status: Option<u16>, message: String) -> OciError {
    OciError::Registry {
        registry: registry.to_string(),
        status,
        message,
    }
}

/// A transport error with its causes (`error sending request: connection refused`).
fn transport_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// A transient reason may carry a `Retry-After` after a NUL.
fn split_retry_after(reason: &str) -> (String, Option<Duration>) {
    match reason.split_once('\u{0}') {
        Some((r, secs)) => (r.to_string(), secs.parse().ok().map(Duration::from_secs)),
        None => (reason.to_string(), None),
    }
}

/// A file as a stream of 256 KiB pieces, for a streamed request body.
fn file_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures::stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_like_docker() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/busybox", Some("latest"))
        );
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "a/b", Some("v1"))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost/x@{d}")).unwrap();
        assert_eq!(r.object(), d);
        assert_eq!(r.tag, None);
        assert_eq!(r.to_string(), format!("localhost/x@{d}"));
        assert!(Reference::parse("Upper/case").is_err());
        assert!(Reference::parse("r.io/x:bad tag").is_err());
    }

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull""#
            ),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(parse_challenge(r#"Basic realm="x""#), Challenge::Basic);
    }

    #[test]
    fn the_refresh_token_grant_is_a_form_and_never_basic() {
        let form = oauth_form("r/t+=&", Some("reg.example"), "repository:a/b:pull,push");
        assert_eq!(
            form,
            "grant_type=refresh_token&refresh_token=r%2Ft%2B%3D%26&client_id=buildagent\
             &service=reg.example&scope=repository%3Aa%2Fb%3Apull%2Cpush"
        );
        let token_only = credentials::Credentials {
            username: "<token>".into(),
            password: String::new(),
            identity_token: Some("secret".into()),
        };
        assert!(!has_password(&token_only));
        let both = credentials::Credentials {
            password: "pw".into(),
            ..token_only.clone()
        };
        assert!(has_password(&both));
        assert!(!Client::basic(&both)
            .contains(&base64::engine::general_purpose::STANDARD.encode("secret")));
    }

    #[test]
    fn loopback_hosts_are_plain_http() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:45001",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["ghcr.io", "10.0.0.1:5000", "example.com:443"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn registry_errors_read_the_errors_array() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            error_text(StatusCode::NOT_FOUND, body),
            "404 Not Found: MANIFEST_UNKNOWN manifest unknown"
        );
    }
}
