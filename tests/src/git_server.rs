//! A Git server over HTTP on 127.0.0.1, for the tests of Git sources: git's own smart HTTP
//! backend (`git http-backend`, run as a CGI program per request, as Apache or nginx would)
//! behind a small HTTP/1.1 server on a thread of the test process, optionally with basic auth.
//!
//! Nothing is installed or left running: the server listens on a free port while its
//! [`GitServer`] lives, and serves the bare repositories under its own temporary directory
//! ([`GitServer::root`]), all of them exported (`GIT_HTTP_EXPORT_ALL`). Protocol v2 works (the
//! `Git-Protocol` header is passed on), and so do chunked and gzip-encoded request bodies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A running Git HTTP server (stopped when dropped).
pub struct GitServer {
    addr: SocketAddr,
    root: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
}

impl GitServer {
    /// Starts a server without authentication.
    pub fn start() -> GitServer {
        GitServer::with_auth(None)
    }

    /// Starts a server that answers 401 to requests without these basic-auth credentials.
    pub fn start_with_auth(user: &str, password: &str) -> GitServer {
        GitServer::with_auth(Some(crate::services::basic_auth(user, password)))
    }

    fn with_auth(expected: Option<String>) -> GitServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port on 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let root = tempfile::Builder::new()
            .prefix("buildagent-git-server-")
            .tempdir()
            .expect("a temporary directory");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let project_root = root.path().to_path_buf();
        let (flag, count) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let project_root = project_root.clone();
                let expected = expected.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &project_root, expected.as_deref());
                });
            }
        });
        GitServer {
            addr,
            root,
            stop,
            requests,
        }
    }

    /// The directory whose bare repositories are served (`<root>/app.git` is
    /// `http://127.0.0.1:<port>/app.git`).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The URL of the repository `name` (`app.git`).
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// The URL of `name` with credentials in it (`http://user:password@127.0.0.1:<port>/name`).
    pub fn url_with(&self, user: &str, password: &str, name: &str) -> String {
        format!("http://{user}:{password}@{}/{name}", self.addr)
    }

    /// How many HTTP requests it has received.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// One request: checked, handed to `git http-backend`, its CGI answer turned into HTTP.
fn serve(conn: TcpStream, root: &Path, expected: Option<&str>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(expected) = expected {
        if header("authorization") != Some(expected) {
            out.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
    }
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", "tester")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("CONTENT_TYPE", header("content-type").unwrap_or(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(v) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", v);
    }
    if let Some(v) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", v);
    }
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let length: Option<u64> = header("content-length").and_then(|v| v.parse().ok());
    if let Some(n) = length {
        cmd.env("CONTENT_LENGTH", n.to_string());
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    // The body is fed on its own thread: the backend may answer before it has read it all.
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .unwrap_or(0);
                if size == 0 {
                    let mut end = String::new();
                    reader.read_line(&mut end)?;
                    break;
                }
                let mut chunk = vec![0; size];
                reader.read_exact(&mut chunk)?;
                stdin.write_all(&chunk)?;
                let mut crlf = [0; 2];
                reader.read_exact(&mut crlf)?;
            }
        } else if let Some(n) = length {
            std::io::copy(&mut (&mut reader).take(n), &mut stdin)?;
        }
        Ok(())
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut status = "200 OK".to_string();
    let mut cgi_headers = Vec::new();
    loop {
        let mut h = String::new();
        if stdout.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        match h.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string()
            }
            _ => cgi_headers.push(h.to_string()),
        }
    }
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for h in cgi_headers {
        head.push_str(&h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    out.write_all(head.as_bytes())?;
    std::io::copy(&mut stdout, &mut out)?;
    out.flush()?;
    let _ = feeder.join();
    let _ = child.wait();
    Ok(())
}

/// Runs git in `dir` with a fixed identity and no user or system configuration, panicking with
/// its output when it fails; returns its standard output, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A work tree to make commits in, pushed to bare repositories under a server's root.
pub struct WorkTree {
    dir: tempfile::TempDir,
}

impl WorkTree {
    /// A new repository whose first branch is `main`.
    pub fn new() -> WorkTree {
        let dir = tempfile::Builder::new()
            .prefix("buildagent-git-work-")
            .tempdir()
            .expect("a temporary directory");
        git(dir.path(), &["init", "-q", "-b", "main"]);
        WorkTree { dir }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the files and commits them all; returns the commit id.
    pub fn commit(&self, message: &str, files: &[(&str, &str)]) -> String {
        for (name, contents) in files {
            let path = self.dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, contents).unwrap();
        }
        git(self.path(), &["add", "-A"]);
        git(
            self.path(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(self.path(), &["rev-parse", "HEAD"])
    }

    /// Runs git in it.
    pub fn git(&self, args: &[&str]) -> String {
        git(self.path(), args)
    }

    /// Pushes every branch and tag to a new or existing bare repository `bare` (created when
    /// missing, with `main` as its default branch).
    pub fn push_to(&self, bare: &Path) {
        if !bare.join("HEAD").exists() {
            std::fs::create_dir_all(bare).unwrap();
            git(bare, &["init", "-q", "--bare", "-b", "main"]);
        }
        let target = bare.to_string_lossy().into_owned();
        git(
            self.path(),
            &[
                "push",
                "-q",
                "--force",
                &target,
                "refs/heads/*:refs/heads/*",
                "refs/tags/*:refs/tags/*",
            ],
        );
    }
}

impl Default for WorkTree {
    fn default() -> Self {
        WorkTree::new()
    }
}
