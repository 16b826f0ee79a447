//! The services the end-to-end tests talk to, as `scripts/services.sh` starts them: moto (the
//! AWS-compatible server), a Docker engine, two OCI registries (one with htpasswd auth) and a
//! local base image.
//!
//! Each address comes from its `BUILDAGENT_TEST_*` variable (exported by `scripts/test.sh`),
//! with the value `scripts/services.sh` uses as the default, and is checked before it is
//! returned: a service that does not answer panics with a message that says how to start it.
//! Nothing is skipped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const HOW_TO_START: &str = "run scripts/services.sh (scripts/test.sh starts it)";

/// The value of the variable `name`, or `default` when it is unset or empty.
fn var(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => default.to_string(),
    }
}

/// Panics with the message every missing service gets.
fn not_running(what: &str, addr: &str, detail: &str) -> ! {
    panic!("{what} is not running on {addr}: {HOW_TO_START} ({detail})")
}

/// The `host:port` of an `http://host:port[/...]` URL.
fn http_authority(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{url}: the tests' services speak plain http://"));
    rest.split('/').next().unwrap_or(rest)
}

/// The credentials and endpoint the tests give AWS clients for moto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aws {
    /// The endpoint URL, `http://127.0.0.1:45000` (`BUILDAGENT_TEST_AWS_ENDPOINT`).
    pub endpoint: String,
    /// The access key id (`BUILDAGENT_TEST_AWS_ACCESS_KEY_ID`, default `testing`).
    pub access_key_id: String,
    /// The secret access key (`BUILDAGENT_TEST_AWS_SECRET_ACCESS_KEY`, default `testing`).
    pub secret_access_key: String,
    /// The region (`BUILDAGENT_TEST_AWS_REGION`, default `us-east-1`).
    pub region: String,
}

impl Aws {
    /// The variables that point an AWS client in a child process at moto, for
    /// [`Command::envs`]: `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`. Set them per child; the test process's own environment stays as it is.
    pub fn env(&self) -> [(&'static str, String); 4] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", self.region.clone()),
        ]
    }
}

/// Moto's endpoint and the test credentials, after checking that moto answers
/// `GET /moto-api/` with 200.
pub fn aws() -> Aws {
    let endpoint = aws_endpoint();
    Aws {
        endpoint,
        access_key_id: var("BUILDAGENT_TEST_AWS_ACCESS_KEY_ID", "testing"),
        secret_access_key: var("BUILDAGENT_TEST_AWS_SECRET_ACCESS_KEY", "testing"),
        region: var("BUILDAGENT_TEST_AWS_REGION", "us-east-1"),
    }
}

/// The variables for a child process's AWS client: [`Aws::env`] of [`aws()`].
pub fn aws_env() -> [(&'static str, String); 4] {
    aws().env()
}

/// Moto's endpoint URL (`BUILDAGENT_TEST_AWS_ENDPOINT`, default `http://127.0.0.1:45000`), after
/// checking that it answers `GET /moto-api/` with 200.
pub fn aws_endpoint() -> String {
    let endpoint = var("BUILDAGENT_TEST_AWS_ENDPOINT", "http://127.0.0.1:45000");
    let addr = http_authority(&endpoint);
    match http_get(addr, "/moto-api/", &[]) {
        Ok(response) if response.status == 200 => endpoint,
        Ok(response) => not_running(
            "moto",
            addr,
            &format!("GET /moto-api/ answered {}", response.status),
        ),
        Err(e) => not_running("moto", addr, &e.to_string()),
    }
}

/// The registry without auth, `host:port` (`BUILDAGENT_TEST_REGISTRY`, default
/// `127.0.0.1:45001`), after checking that `GET /v2/` answers 200. Plain HTTP: Docker allows it
/// on 127.0.0.0/8; skopeo needs `--tls-verify=false`.
pub fn registry() -> String {
    let addr = var("BUILDAGENT_TEST_REGISTRY", "127.0.0.1:45001");
    check_registry("the registry", &addr, 200);
    addr
}

/// The registry with htpasswd auth, `host:port` (`BUILDAGENT_TEST_REGISTRY_AUTH`, default
/// `127.0.0.1:45002`), after checking that `GET /v2/` without credentials answers 401. Plain
/// HTTP with basic auth; the credentials are [`registry_credentials`].
pub fn registry_auth() -> String {
    let addr = var("BUILDAGENT_TEST_REGISTRY_AUTH", "127.0.0.1:45002");
    check_registry("the htpasswd registry", &addr, 401);
    addr
}

/// The user and password of [`registry_auth`] (`BUILDAGENT_TEST_REGISTRY_USER`, default
/// `buildagent`; `BUILDAGENT_TEST_REGISTRY_PASSWORD`, default `buildagent-secret`).
pub fn registry_credentials() -> (String, String) {
    (
        var("BUILDAGENT_TEST_REGISTRY_USER", "buildagent"),
        var("BUILDAGENT_TEST_REGISTRY_PASSWORD", "buildagent-secret"),
    )
}

/// The second user of [`registry_auth`]: `AWS` with the password moto's ECR
/// `GetAuthorizationToken` decodes to (`BUILDAGENT_TEST_REGISTRY_ECR_PASSWORD`, default
/// `123456789012-auth-token`: moto's default account), so that pushes whose credentials come
/// from the token API can reach it.
pub fn registry_ecr_credentials() -> (String, String) {
    (
        "AWS".to_string(),
        var(
            "BUILDAGENT_TEST_REGISTRY_ECR_PASSWORD",
            "123456789012-auth-token",
        ),
    )
}

fn check_registry(what: &str, addr: &str, want: u16) {
    match http_get(addr, "/v2/", &[]) {
        Ok(response) if response.status == want => {}
        Ok(response) => not_running(
            what,
            addr,
            &format!("GET /v2/ answered {}, not {want}", response.status),
        ),
        Err(e) => not_running(what, addr, &e.to_string()),
    }
}

/// The Docker engine's API version, after checking that `docker version` reaches it.
pub fn docker() -> String {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output();
    match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => not_running(
            "the Docker engine",
            "/var/run/docker.sock",
            String::from_utf8_lossy(&out.stderr).trim(),
        ),
        Err(e) => not_running(
            "the Docker engine",
            "/var/run/docker.sock",
            &format!("docker: {e}"),
        ),
    }
}

/// The local base image (`BUILDAGENT_TEST_BASE_IMAGE`, default
/// `buildagent-test/busybox:latest`: busybox, made without the internet), after checking that
/// the engine answers and has it.
pub fn base_image() -> String {
    docker();
    let image = var(
        "BUILDAGENT_TEST_BASE_IMAGE",
        "buildagent-test/busybox:latest",
    );
    let status = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &image])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run docker");
    assert!(
        status.success(),
        "the base image {image} is missing from the Docker engine: {HOW_TO_START}"
    );
    image
}

/// The base image's root file system as a tar archive (`BUILDAGENT_TEST_BASE_ROOTFS`, default
/// `/var/tmp/buildagent-services/busybox-rootfs.tar`), for tests that build images without a
/// daemon, after checking that it exists.
pub fn base_rootfs() -> PathBuf {
    let path = PathBuf::from(var(
        "BUILDAGENT_TEST_BASE_ROOTFS",
        "/var/tmp/buildagent-services/busybox-rootfs.tar",
    ));
    assert!(
        path.is_file(),
        "the base rootfs {} is missing: {HOW_TO_START}",
        path.display()
    );
    path
}

/// The path of the program `name` on `PATH` (skopeo, umoci, zstd: scripts/services.sh installs
/// them), panicking when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| panic!("{name} is not on PATH: {HOW_TO_START}"))
}

/// An HTTP response, as [`http_get`] read it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header fields in order, names as the server wrote them.
    pub headers: Vec<(String, String)>,
    /// The body, whole.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of the header `name` (compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on `addr` (`host:port`) over HTTP/1.0 with the extra `headers`, read until the
/// server closes the connection. Enough for the tests' checks of local services; no TLS, no
/// redirects, no chunked bodies (HTTP/1.0 servers send none).
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
    let sockets: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let socket = sockets.first().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{addr}: no address"))
    })?;
    let mut stream = TcpStream::connect_timeout(socket, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of the response header"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| invalid("a non-UTF-8 header"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(&format!("a bad status line: {status_line:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// The value of an `Authorization` header for HTTP basic auth.
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let mut out = String::from("Basic ");
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_rfc_4648_base64() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_auth("a", ""), "Basic YTo=");
        assert_eq!(basic_auth("ab", "c"), "Basic YWI6Yw==");
        assert_eq!(basic_auth("ab", "cd"), "Basic YWI6Y2Q=");
    }

    #[test]
    fn responses_parse() {
        let r = parse_response(b"HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Basic realm=\"x\"\r\nA: b:c\r\n\r\nbody").unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"x\""));
        assert_eq!(r.header("a"), Some("b:c"));
        assert_eq!(r.text(), "body");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn authorities() {
        assert_eq!(http_authority("http://127.0.0.1:45000"), "127.0.0.1:45000");
        assert_eq!(
            http_authority("http://127.0.0.1:45000/x"),
            "127.0.0.1:45000"
        );
    }
}
