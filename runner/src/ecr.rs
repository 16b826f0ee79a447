//! Amazon ECR registries: which hosts they are, their credentials from `GetAuthorizationToken`,
//! and the map that sends requests for an ECR name to another address.
//!
//! - **Hosts.** [`parse_host`] recognises `<account>.dkr.ecr.<region>.amazonaws.com` and its
//!   variants (`dkr.ecr-fips`, `amazonaws.com.cn`, the dual-stack `dkr-ecr.<region>.on.aws`, the
//!   isolated partitions), the names the ECR credential helper recognises. [`registry`] also takes
//!   the host of the ECR endpoint when one is set (`AWS_ENDPOINT_URL_ECR`, else `AWS_ENDPOINT_URL`),
//!   for ECR-compatible servers that serve the registry at the API's own address.
//! - **Tokens.** [`credentials`] calls `GetAuthorizationToken` with the AWS SDK's standard
//!   configuration ([`crate::aws::sdk_config`]) in the region the host names (the configuration's
//!   region for an endpoint host; the FIPS endpoint for `ecr-fips` hosts). The token decodes to
//!   `AWS:<password>`: the user `AWS` and a password that is a secret (it never appears in a
//!   message, and [`Credentials`]' `Debug` hides it). Tokens are cached per registry host for
//!   the process and fetched again [`REFRESH_AHEAD`] before they expire ([`refresh_at`] has the
//!   rule); [`forget`] drops one a registry refused.
//! - **Endpoints.** [`Endpoints`] reads `BUILDAGENT_ECR_ENDPOINTS`
//!   (`<ecr-host>=<host[:port]>[,...]`): requests for that ECR name go to the address (a VPC
//!   endpoint's DNS name, a proxy, a local registry in tests) while the credentials are still
//!   the ECR token of the ECR name.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime};

#[cfg(feature = "aws")]
use aws_sdk_ecr::error::ProvideErrorMetadata;
#[cfg(feature = "aws")]
use base64::Engine as _;

use crate::credentials::Credentials;

/// The environment variable [`Endpoints::from_env`] reads.
pub const ENDPOINTS_VARIABLE: &str = "BUILDAGENT_ECR_ENDPOINTS";

/// How long before its expiry a cached token is fetched again (ECR tokens live 12 hours).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(30 * 60);

/// How long a token that arrives already expired (a clock behind the service's, or a test
/// server such as moto, which answers `2015-01-01`) is used before it is fetched again, so that
/// a push does not ask for a token on every request.
pub const EXPIRED_ON_ARRIVAL_USE: Duration = Duration::from_secs(60);

/// The region used when an endpoint host is ECR and the AWS configuration names no region.
const DEFAULT_REGION: &str = "us-east-1";

/// An ECR registry host and what the token request needs to know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcrRegistry {
    /// The host, as in image references (`123456789012.dkr.ecr.eu-west-1.amazonaws.com`).
    pub host: String,
    /// The region the host names (`None` for the endpoint's own host: the configuration's).
    pub region: Option<String>,
    /// A FIPS host (`dkr.ecr-fips`): the token comes from the FIPS endpoint.
    pub fips: bool,
}

/// Why an ECR token or the endpoint map could not be had.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EcrError {
    /// `BUILDAGENT_ECR_ENDPOINTS` is not a list of `<ecr-host>=<host[:port]>`.
    #[error("{ENDPOINTS_VARIABLE}: {0}")]
    BadEndpoints(String),
    /// `GetAuthorizationToken` failed or answered no usable token.
    #[error(
        "cannot get an ECR authorization token for {host} (GetAuthorizationToken in region \
         {region} at {endpoint}): {message}; the AWS credentials come from the standard chain \
         (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO, an instance role) and \
         the endpoint from AWS_ENDPOINT_URL_ECR or AWS_ENDPOINT_URL; or log in to {host} with \
         `docker login` (the Docker configuration's own entry for a host is used first)"
    )]
    Token {
        /// The registry host.
        host: String,
        /// The region asked.
        region: String,
        /// The endpoint asked (`the default endpoint` when none is set).
        endpoint: String,
        /// The service's code and message, or the transport error.
        message: String,
    },
}

/// The registry of an ECR host name (see the module docs for the forms), or `None`.
pub fn parse_host(host: &str) -> Option<EcrRegistry> {
    // <account>.dkr.ecr[-fips].<region>.<domain>, or dkr-ecr[-fips] (dual-stack), as the ECR
    // credential helper's pattern.
    static PATTERN: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r"^[0-9]{12}\.dkr[.-]ecr(-fips)?\.([a-z0-9][a-z0-9-]*)\.(amazonaws\.com(\.cn)?|on\.aws|sc2s\.sgov\.gov|c2s\.ic\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)$",
        )
        .expect("a valid pattern")
    });
    let lower = host.to_ascii_lowercase();
    let captures = PATTERN.captures(&lower)?;
    Some(EcrRegistry {
        host: host.to_string(),
        region: Some(captures[2].to_string()),
        fips: captures.get(1).is_some(),
    })
}

/// The ECR endpoint URL the environment sets: `AWS_ENDPOINT_URL_ECR`, else `AWS_ENDPOINT_URL`.
fn endpoint_url() -> Option<String> {
    ["AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|v| !v.trim().is_empty())
}

/// `host[:port]` of a URL (`None` when it is not one).
fn authority(url: &str) -> Option<String> {
    let url = url::Url::parse(url.trim()).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// The ECR registry `host` is: an ECR host name ([`parse_host`]), or the host of the ECR
/// endpoint the environment sets (`AWS_ENDPOINT_URL_ECR`, else `AWS_ENDPOINT_URL`).
pub fn registry(host: &str) -> Option<EcrRegistry> {
    parse_host(host).or_else(|| {
        let endpoint = authority(&endpoint_url()?)?;
        endpoint.eq_ignore_ascii_case(host).then(|| EcrRegistry {
            host: host.to_string(),
            region: None,
            fips: false,
        })
    })
}

/// A token and when it expires, as `GetAuthorizationToken` gave it.
#[derive(Clone, Debug)]
pub struct Token {
    /// `AWS` and the password.
    pub credentials: Credentials,
    /// `expiresAt`, when the service said.
    pub expires_at: Option<SystemTime>,
}

/// When a token received at `received` that expires at `expires_at` is fetched again:
/// [`REFRESH_AHEAD`] before it expires; a token with less time than that left, halfway to its
/// expiry; a token that arrived already expired (or with no expiry), [`EXPIRED_ON_ARRIVAL_USE`]
/// after it arrived.
pub fn refresh_at(received: SystemTime, expires_at: Option<SystemTime>) -> SystemTime {
    let Some(expires_at) = expires_at else {
        return received + EXPIRED_ON_ARRIVAL_USE;
    };
    match expires_at.duration_since(received) {
        Ok(left) if left > REFRESH_AHEAD * 2 => expires_at - REFRESH_AHEAD,
        Ok(left) if !left.is_zero() => received + left / 2,
        _ => received + EXPIRED_ON_ARRIVAL_USE,
    }
}

/// Tokens by registry host, each with the moment it is to be fetched again.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Credentials, SystemTime)>>,
}

impl TokenCache {
    /// The token for `host` if one is cached and `now` is before its refresh time.
    pub fn get(&self, host: &str, now: SystemTime) -> Option<Credentials> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&host.to_ascii_lowercase())
            .filter(|(_, refresh)| now < *refresh)
            .map(|(c, _)| c.clone())
    }

    /// Keeps `token`, received at `now`, for `host` (see [`refresh_at`]).
    pub fn insert(&self, host: &str, token: &Token, now: SystemTime) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            host.to_ascii_lowercase(),
            (token.credentials.clone(), refresh_at(now, token.expires_at)),
        );
    }

    /// Drops the token for `host`.
    pub fn forget(&self, host: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&host.to_ascii_lowercase());
    }
}

/// The process's tokens: the AWS identity is the process's, so its tokens are too.
static TOKENS: LazyLock<TokenCache> = LazyLock::new(TokenCache::default);

/// One fetch at a time, so that requests sent together do not each ask for a token.
static FETCHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The credentials of `registry`: the cached token while it is fresh, else a new one from
/// `GetAuthorizationToken`.
pub async fn credentials(registry: &EcrRegistry) -> Result<Credentials, EcrError> {
    if let Some(c) = TOKENS.get(&registry.host, SystemTime::now()) {
        return Ok(c);
    }
    let _one = FETCHING.lock().await;
    if let Some(c) = TOKENS.get(&registry.host, SystemTime::now()) {
        return Ok(c);
    }
    let token = fetch(registry).await?;
    TOKENS.insert(&registry.host, &token, SystemTime::now());
    Ok(token.credentials)
}

/// Drops the cached token of `host` (the registry refused it), so the next request fetches one.
pub fn forget(host: &str) {
    TOKENS.forget(host);
}

/// Asks `GetAuthorizationToken` for a token for `registry`.
#[cfg(feature = "aws")]
pub async fn fetch(registry: &EcrRegistry) -> Result<Token, EcrError> {
    let shared = crate::aws::sdk_config(DEFAULT_REGION).await;
    let mut config = aws_sdk_ecr::config::Builder::from(&shared);
    if let Some(region) = &registry.region {
        config = config.region(aws_sdk_ecr::config::Region::new(region.clone()));
    }
    if registry.fips {
        config = config.use_fips(true);
    }
    let config = config.build();
    let failed = |message: String| EcrError::Token {
        host: registry.host.clone(),
        region: config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| DEFAULT_REGION.to_string()),
        endpoint: endpoint_url().unwrap_or_else(|| "the default endpoint".to_string()),
        message,
    };
    let client = aws_sdk_ecr::Client::from_conf(config.clone());
    let output = client.get_authorization_token().send().await.map_err(|e| {
        failed(match (e.code(), e.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            _ => causes(&e),
        })
    })?;
    let data = output
        .authorization_data()
        .first()
        .ok_or_else(|| failed("the answer holds no authorization data".to_string()))?;
    let token = data
        .authorization_token()
        .ok_or_else(|| failed("the answer holds no authorization token".to_string()))?;
    // The token is base64 of `AWS:<password>`. Nothing of it goes into a message.
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| failed("the authorization token is not base64 text".to_string()))?;
    let (username, password) = decoded
        .split_once(':')
        .filter(|(u, p)| !u.is_empty() && !p.is_empty())
        .ok_or_else(|| failed("the authorization token is not `user:password`".to_string()))?;
    Ok(Token {
        credentials: Credentials {
            username: username.to_string(),
            password: password.to_string(),
            identity_token: None,
        },
        expires_at: data
            .expires_at()
            .and_then(|t| SystemTime::try_from(*t).ok()),
    })
}

/// Without the `aws` feature there is no ECR client: asking for a token fails, saying so.
#[cfg(not(feature = "aws"))]
pub async fn fetch(registry: &EcrRegistry) -> Result<Token, EcrError> {
    Err(EcrError::Token {
        host: registry.host.clone(),
        region: registry
            .region
            .clone()
            .unwrap_or_else(|| DEFAULT_REGION.to_string()),
        endpoint: endpoint_url().unwrap_or_else(|| "the default endpoint".to_string()),
        message: "this build of buildagent-runner has no AWS support (its `aws` feature)"
            .to_string(),
    })
}

/// An error and its causes, each once (`dispatch failure: io error: ... Connection refused`):
/// the SDK's own rendering adds a `Debug` dump of the whole chain.
#[cfg(feature = "aws")]
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Where requests for ECR names go instead of the names themselves
/// (`BUILDAGENT_ECR_ENDPOINTS=<ecr-host>=<host[:port]>[,...]`).
///
/// The address is spoken to like any registry (HTTPS; plain HTTP on loopback) with the ECR
/// token of the ECR name. The daemonless engine sends its requests there; the Docker engine
/// pushes and pulls only the names it has, so the agent tags the image under the address for
/// the push or pull and removes that tag afterwards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    map: Vec<(String, String)>,
}

impl Endpoints {
    /// Reads `<ecr-host>=<host[:port]>` entries separated by commas or white space.
    pub fn parse(text: &str) -> Result<Endpoints, EcrError> {
        let mut map: Vec<(String, String)> = Vec::new();
        for entry in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let bad = |why: &str| {
                EcrError::BadEndpoints(format!(
                    "`{entry}` {why} (expected <ecr-host>=<host[:port]>, e.g. \
                     123456789012.dkr.ecr.us-east-1.amazonaws.com=127.0.0.1:5000)"
                ))
            };
            let (name, address) = entry.split_once('=').ok_or_else(|| bad("has no `=`"))?;
            if parse_host(name).is_none() {
                return Err(bad(&format!(
                    "names `{name}`, which is not an ECR registry host"
                )));
            }
            let valid_address = !address.is_empty()
                && !address.contains("://")
                && !address.contains(['/', '=', '@'])
                && authority(&format!("http://{address}")).is_some();
            if !valid_address {
                return Err(bad(&format!(
                    "maps to `{address}`, which is not a host[:port]"
                )));
            }
            if map.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(bad("maps a host that an earlier entry maps"));
            }
            map.push((name.to_ascii_lowercase(), address.to_string()));
        }
        Ok(Endpoints { map })
    }

    /// The map of [`ENDPOINTS_VARIABLE`] (empty when it is unset).
    pub fn from_env() -> Result<Endpoints, EcrError> {
        match std::env::var(ENDPOINTS_VARIABLE) {
            Ok(text) => Endpoints::parse(&text),
            Err(std::env::VarError::NotPresent) => Ok(Endpoints::default()),
            Err(std::env::VarError::NotUnicode(_)) => Err(EcrError::BadEndpoints(
                "the value is not valid UTF-8".to_string(),
            )),
        }
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The address requests for the registry `host` go to, when it is mapped.
    pub fn address(&self, host: &str) -> Option<&str> {
        self.map
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(host))
            .map(|(_, a)| a.as_str())
    }

    /// `reference` (`<host>/<repository>[:tag]`) with its host replaced by the address it is
    /// mapped to, when it is.
    pub fn route(&self, reference: &str) -> Option<String> {
        let (host, rest) = reference.split_once('/')?;
        self.address(host)
            .map(|address| format!("{address}/{rest}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_are_recognised() {
        let r = parse_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(r.region.as_deref(), Some("eu-west-1"));
        assert!(!r.fips);
        let r = parse_host("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com").unwrap();
        assert_eq!(r.region.as_deref(), Some("us-gov-west-1"));
        assert!(r.fips);
        let r = parse_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").unwrap();
        assert_eq!(r.region.as_deref(), Some("cn-north-1"));
        let r = parse_host("123456789012.dkr-ecr.ap-south-1.on.aws").unwrap();
        assert_eq!(r.region.as_deref(), Some("ap-south-1"));
        assert_eq!(
            parse_host("123456789012.DKR.ECR.us-east-1.AMAZONAWS.COM")
                .unwrap()
                .region
                .as_deref(),
            Some("us-east-1")
        );
        for not in [
            "docker.io",
            "127.0.0.1:45002",
            "12345.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:443",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example",
            "public.ecr.aws",
        ] {
            assert_eq!(parse_host(not), None, "{not}");
        }
    }

    #[test]
    fn tokens_are_refreshed_ahead_of_expiry() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let hours = |h: u64| Duration::from_secs(h * 3600);
        // A 12-hour token: fetched again 30 minutes before it expires.
        assert_eq!(
            refresh_at(t0, Some(t0 + hours(12))),
            t0 + hours(12) - REFRESH_AHEAD
        );
        // Less than twice the margin left: halfway.
        assert_eq!(
            refresh_at(t0, Some(t0 + Duration::from_secs(40 * 60))),
            t0 + Duration::from_secs(20 * 60)
        );
        // Already expired when it arrived (moto's 2015-01-01), or no expiry: a short use.
        let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_420_070_400);
        assert_eq!(refresh_at(t0, Some(past)), t0 + EXPIRED_ON_ARRIVAL_USE);
        assert_eq!(refresh_at(t0, Some(t0)), t0 + EXPIRED_ON_ARRIVAL_USE);
        assert_eq!(refresh_at(t0, None), t0 + EXPIRED_ON_ARRIVAL_USE);

        let cache = TokenCache::default();
        let token = Token {
            credentials: Credentials {
                username: "AWS".into(),
                password: "pw".into(),
                identity_token: None,
            },
            expires_at: Some(t0 + hours(12)),
        };
        let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        assert!(cache.get(host, t0).is_none());
        cache.insert(host, &token, t0);
        assert_eq!(cache.get(host, t0 + hours(11)).unwrap().password, "pw");
        assert_eq!(
            cache
                .get(&host.to_ascii_uppercase(), t0 + hours(11))
                .map(|c| c.username),
            Some("AWS".to_string())
        );
        // Inside the margin: stale, so the caller fetches a new one.
        assert!(cache.get(host, t0 + hours(12) - REFRESH_AHEAD).is_none());
        assert!(cache.get(host, t0 + hours(13)).is_none());
        assert!(cache.get("other.example", t0).is_none());
        cache.forget(host);
        assert!(cache.get(host, t0).is_none());
    }

    #[test]
    fn the_endpoint_map_parses_and_routes() {
        let ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        let map = Endpoints::parse(&format!(
            " {ecr}=127.0.0.1:45002,210987654321.dkr.ecr.eu-west-1.amazonaws.com=vpce.example\n"
        ))
        .unwrap();
        assert_eq!(map.address(ecr), Some("127.0.0.1:45002"));
        assert_eq!(
            map.address("210987654321.dkr.ecr.eu-west-1.amazonaws.com"),
            Some("vpce.example")
        );
        assert_eq!(map.address("docker.io"), None);
        assert_eq!(
            map.route(&format!("{ecr}/team/app:1")).as_deref(),
            Some("127.0.0.1:45002/team/app:1")
        );
        assert_eq!(map.route("127.0.0.1:45002/team/app:1"), None);
        assert!(Endpoints::parse("").unwrap().is_empty());
        for (bad, says) in [
            ("nothing", "has no `=`"),
            ("registry.example=127.0.0.1:1", "not an ECR registry host"),
            (&format!("{ecr}=http://127.0.0.1:1"), "not a host[:port]"),
            (&format!("{ecr}="), "not a host[:port]"),
            (&format!("{ecr}=a/b"), "not a host[:port]"),
            (&format!("{ecr}=a,{ecr}=b"), "an earlier entry"),
        ] {
            let err = Endpoints::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with(ENDPOINTS_VARIABLE), "{err}");
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn endpoint_urls_give_their_authority() {
        assert_eq!(
            authority("http://127.0.0.1:45000").as_deref(),
            Some("127.0.0.1:45000")
        );
        assert_eq!(
            authority("https://ecr.example/").as_deref(),
            Some("ecr.example")
        );
        assert_eq!(authority("not a url"), None);
    }
}
