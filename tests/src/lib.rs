//! Helpers for the end-to-end tests of the `buildagent` binary.
//!
//! Every test runs the real binary, built by `cargo build` into the same target directory as
//! the tests, in a fresh temporary directory. A missing binary is a loud failure, never a skip.
#![deny(missing_docs)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod fault_proxy;
pub mod git_server;
pub mod images;
pub mod s3_bucket;
pub mod services;

/// The path of the `buildagent` binary next to the running test executable.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/buildagent
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the target directory");
    let bin = dir.join("buildagent");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p buildagent` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The repository's `testdata/` directory.
pub fn testdata() -> PathBuf {
    // Read when the test runs, not when it is compiled: clones sharing a target directory reuse
    // each other's test binaries, and a compiled-in path would point at the clone that built them.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .expect("run by cargo, which sets CARGO_MANIFEST_DIR");
    Path::new(&manifest).join("../testdata")
}

/// A temporary directory to run a command in, removed when dropped.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A new empty directory.
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("buildagent-test-")
                .tempdir()
                .expect("a temporary directory"),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `name` inside it (creating parent directories) and returns the path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create directories");
        }
        std::fs::write(&path, contents).expect("write a file");
        path
    }

    /// A `buildagent` command that runs in this directory with the given arguments.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(binary());
        cmd.current_dir(self.path())
            .args(args)
            .env_remove("NO_COLOR");
        cmd
    }

    /// Runs `buildagent` with the arguments and returns what it did.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::from(self.command(args).output().expect("run buildagent"))
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts the exit code, showing both streams when it differs.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit status\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Redacts what changes from run to run in a CodeBuild-format log: timestamps, build ids and
/// the source copy's temporary path.
pub fn redact_log(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    for line in log.split_inclusive('\n') {
        let line = match line.strip_prefix("[Container] ") {
            Some(rest) if rest.len() > 27 && rest.as_bytes()[4] == b'/' => {
                format!("[Container] [TIME]{}", &rest[26..])
            }
            _ => line.to_string(),
        };
        out.push_str(&line);
    }
    let mut redacted = String::new();
    for piece in out.split("/tmp/buildagent-src-") {
        if redacted.is_empty() && !out.starts_with("/tmp/buildagent-src-") {
            redacted.push_str(piece);
            continue;
        }
        redacted.push_str("[SRC]");
        redacted.push_str(piece.get(6..).unwrap_or(""));
    }
    redacted
        .lines()
        .map(|l| match l.find("(build ") {
            Some(i) => format!("{}(build [ID])", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if redacted.ends_with('\n') { "\n" } else { "" }
}

/// True while a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}
