//! Helpers shared by the runner's integration tests (real shells, real processes).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use buildagent_runner::command::{ScriptMode, StateDir};
use buildagent_runner::events::CommandOutcome;
use buildagent_runner::executor::{
    CapturedOutput, CommandControl, CommandSpec, Executor, HostExecutor, RunAs,
};

/// The shells every script-model test runs under.
pub const SHELLS: [&str; 2] = ["dash", "bash"];

/// A `PATH` for the commands' environment.
pub fn path_var() -> (String, String) {
    (
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    )
}

/// Whether `pid` is a live process (a zombie counts as dead).
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

/// A `/proc/<pid>/stat` field after the command name: 0 = state, 1 = ppid, 2 = pgrp, 3 = session.
pub fn stat_field(pid: i32, index: usize) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(index)
        .unwrap()
        .to_string()
}

/// Waits (polling) until `path` exists and is not empty; panics after `timeout`.
pub async fn wait_for_file(path: &Path, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        assert!(
            start.elapsed() < timeout,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `pid` runs `command_line` (arguments joined by spaces).
pub async fn wait_for_command_line(pid: i32, command_line: &str) {
    let start = Instant::now();
    loop {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.join(" ") == command_line {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{pid} never ran `{command_line}` (runs {args:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads a pid written by a test script.
pub async fn read_pid(path: &Path) -> i32 {
    wait_for_file(path, Duration::from_secs(10))
        .await
        .trim()
        .parse()
        .unwrap()
}

/// Panics unless the tests run as root (they create users and switch to them).
pub fn require_root() {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "this test must run as root (it creates users with useradd); run the runner's tests as root"
    );
}

/// A one-off command: `sh script` in a temporary directory with just `PATH` set.
pub struct OneShot {
    pub dir: tempfile::TempDir,
    pub spec: CommandSpec,
}

impl OneShot {
    pub fn new(script: &str) -> OneShot {
        let dir = tempfile::tempdir().unwrap();
        let script_path = dir.path().join("script.sh");
        std::fs::write(&script_path, script).unwrap();
        let spec = CommandSpec {
            program: "/bin/sh".into(),
            script_path,
            env: {
                let (name, value) = path_var();
                vec![(name.into(), value.into())].into()
            },
            cwd: dir.path().to_owned(),
            user: None,
        };
        OneShot { dir, spec }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A build's worth of commands sharing one state directory and one executor.
pub struct Session {
    pub src: tempfile::TempDir,
    pub state: StateDir,
    pub exec: HostExecutor,
    pub shell: PathBuf,
    pub mode: ScriptMode,
    pub user: Option<RunAs>,
}

impl Session {
    pub fn new(shell: &str, mode: ScriptMode, extra_env: &[(&str, &str)]) -> Session {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("sub")).unwrap();
        let mut env = vec![path_var()];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let state = StateDir::new(&env, src.path()).unwrap();
        Session {
            src,
            state,
            exec: HostExecutor::new(),
            shell: shell.into(),
            mode,
            user: None,
        }
    }

    pub fn src(&self) -> String {
        self.src.path().to_str().unwrap().to_owned()
    }

    /// Runs one command like the engine will: prepare, run, commit.
    pub async fn run(&mut self, command: &str) -> (CommandOutcome, CapturedOutput) {
        let spec = self
            .state
            .prepare(command, self.mode, &self.shell, self.user.as_ref())
            .unwrap();
        let mut out = CapturedOutput::default();
        let outcome = tokio::time::timeout(
            Duration::from_secs(20),
            self.exec.run(&spec, CommandControl::none(), &mut out),
        )
        .await
        .expect("command did not finish")
        .unwrap();
        self.state.finish().unwrap();
        (outcome, out)
    }

    /// Runs `command`, asserts success, returns stdout.
    pub async fn ok(&mut self, command: &str) -> String {
        let (outcome, out) = self.run(command).await;
        assert_eq!(
            outcome,
            CommandOutcome::Success,
            "{} `{command}` failed; stderr: {}",
            self.shell.display(),
            out.stderr_str()
        );
        out.stdout_str()
    }
}
