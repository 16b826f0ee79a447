//! `run-as`: commands run as another user, with the state directory shared safely.
//!
//! These tests need root (they create a user with `useradd`); they fail, not skip, without it.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use buildagent_runner::command::ScriptMode;
use buildagent_runner::executor::{
    CapturedOutput, CommandControl, CommandSpec, ExecError, Executor, HostExecutor, RunAs,
    RunAsError,
};
use common::{require_root, Session};

const USER: &str = "buildagent-test";
const EXTRA_GROUP: &str = "buildagent-test-extra";

fn sh(command: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(command).output().unwrap()
}

/// Creates the test user (with a supplementary group) unless it exists.
fn ensure_user() {
    let out = sh(&format!(
        "getent group {EXTRA_GROUP} >/dev/null || groupadd {EXTRA_GROUP}; \
         id {USER} >/dev/null 2>&1 || useradd -M -s /bin/sh -G {EXTRA_GROUP} {USER}; \
         id {USER} >/dev/null 2>&1 || {{ sleep 1; id {USER}; }}"
    ));
    assert!(
        out.status.success(),
        "cannot create the test user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn group_id(name: &str) -> u32 {
    let out = sh(&format!("getent group {name} | cut -d: -f3"));
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn commands_run_as_the_user_and_keep_their_state() {
    require_root();
    ensure_user();
    let user = RunAs::resolve(USER).unwrap();
    assert_eq!(user.name(), USER);
    assert_ne!(user.uid(), 0);
    assert!(user.groups().contains(&user.gid()));
    let extra = group_id(EXTRA_GROUP);
    assert!(user.groups().contains(&extra), "{:?}", user.groups());

    let mut s = Session::new("dash", ScriptMode::V02, &[]);
    // The source tree must be readable by the user (the engine's job in a real build).
    for dir in [s.src.path().to_owned(), s.src.path().join("sub")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A first command as the agent's own user leaves its files to the next one, which runs as
    // the user: that one must still save its state.
    assert_eq!(s.ok("export FROM_AGENT=yes").await, "");
    s.user = Some(user.clone());
    let out = s
        .ok("id -u; id -g; id -G; whoami; export FROM_USER=$FROM_AGENT; cd sub")
        .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], user.uid().to_string());
    assert_eq!(lines[1], user.gid().to_string());
    assert!(
        lines[2].split(' ').any(|g| g == extra.to_string()),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], USER);

    // The user's command could read the state and save it back.
    let out = s.ok("echo $FROM_USER; pwd").await;
    assert_eq!(out, format!("yes\n{}/sub\n", s.src()));

    // What the user may touch in the state directory, and what not.
    let state = s.state.path();
    let meta = std::fs::metadata(state).unwrap();
    assert_eq!(meta.uid(), 0, "the agent keeps the state directory");
    assert_eq!(meta.permissions().mode() & 0o777, 0o711);
    // (env.sh is rewritten by the agent after each command and handed over again before the
    // next; the script and out/ were handed over for the last one.)
    let env = std::fs::metadata(state.join("env.sh")).unwrap();
    assert_eq!(env.permissions().mode() & 0o777, 0o600);
    let script = std::fs::metadata(state.join("script.sh")).unwrap();
    assert_eq!(script.uid(), user.uid());
    assert_eq!(script.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(state.join("out")).unwrap().uid(),
        user.uid()
    );
    let (outcome, out) = s.run(&format!("touch '{}/planted'", state.display())).await;
    assert!(
        !outcome.is_success(),
        "the user could write the state dir: {out:?}"
    );

    // A later command as the agent's own user still sees the state.
    s.user = None;
    assert_eq!(s.ok("id -u; echo $FROM_USER").await, "0\nyes\n");
}

#[test]
fn unknown_users_are_an_error() {
    let err = RunAs::resolve("no-such-user-buildagent").unwrap_err();
    assert!(matches!(err, RunAsError::UnknownUser { .. }));
    assert_eq!(
        err.to_string(),
        "unknown run-as user `no-such-user-buildagent`"
    );
}

/// Runs [`not_root_helper`] in a copy of this test binary as `nobody`.
#[test]
fn run_as_requires_root() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("run_as_test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another test thread forking at the moment of the copy holds the new file open for writing
    // until its exec; running the copy then fails with ETXTBSY for a moment.
    let mut attempts = 0;
    let out = loop {
        match Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "not_root_helper",
                "--test-threads=1",
            ])
            .current_dir(dir.path())
            .uid(65534)
            .gid(65534)
            .output()
        {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other.unwrap(),
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "helper failed as nobody:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "run as nobody by run_as_requires_root"]
async fn not_root_helper() {
    assert_ne!(nix::unistd::geteuid().as_raw(), 0, "must run as non-root");
    let exec = HostExecutor::new();
    let spec = CommandSpec {
        program: "/bin/sh".into(),
        script_path: "/dev/null".into(),
        env: vec![].into(),
        cwd: Path::new("/").to_owned(),
        user: Some(RunAs::from_ids("root", 0, 0, vec![0], "/root")),
    };
    let mut out = CapturedOutput::default();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        exec.run(&spec, CommandControl::none(), &mut out),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, ExecError::RunAsRequiresRoot { .. }));
    assert_eq!(err.to_string(), "run-as requires the agent to run as root");
}
