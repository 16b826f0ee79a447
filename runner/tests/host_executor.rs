//! `HostExecutor` with real processes: output, exit status, background processes, stopping.

mod common;

use std::time::{Duration, Instant};

use buildagent_runner::events::{CancelReason, CommandOutcome};
use buildagent_runner::executor::{
    enable_child_subreaper, CapturedOutput, CommandControl, Executor, HostExecutor, StopRequest,
};
use common::{is_alive, read_pid, wait_for_file, OneShot};
use tokio_util::sync::CancellationToken;

/// Like the CLI: orphans of the tests' commands are reparented to the test process.
fn setup() {
    enable_child_subreaper().unwrap();
}

async fn run(exec: &HostExecutor, shot: &OneShot) -> (CommandOutcome, CapturedOutput) {
    let mut out = CapturedOutput::default();
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        exec.run(&shot.spec, CommandControl::none(), &mut out),
    )
    .await
    .expect("the command did not return")
    .unwrap();
    (outcome, out)
}

#[tokio::test]
async fn more_than_64k_on_both_streams_does_not_deadlock() {
    setup();
    let exec = HostExecutor::new();
    // stdout first, then stderr, then both interleaved: a reader that drained only one pipe at a
    // time would block the writer on the other.
    let shot = OneShot::new(
        "head -c 300000 /dev/zero | tr '\\0' o\n\
         head -c 300000 /dev/zero | tr '\\0' e >&2\n\
         i=0; while [ $i -lt 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done\n\
         echo done",
    );
    let (outcome, out) = run(&exec, &shot).await;
    assert_eq!(outcome, CommandOutcome::Success);
    let stdout = out.stdout_str();
    let stderr = out.stderr_str();
    assert!(stdout.starts_with(&"o".repeat(300_000)));
    assert!(stderr.starts_with(&"e".repeat(300_000)));
    assert!(stdout.contains("out1999\ndone\n"));
    assert!(stderr.ends_with("err1999\n"));
    // The run of `o`s has no newline of its own: it shares a line with `out0`.
    assert_eq!(stdout.lines().count(), 2001);
}

#[tokio::test]
async fn exit_statuses_and_spawn_failures() {
    setup();
    let exec = HostExecutor::new();
    for (script, expected) in [
        ("true", CommandOutcome::Success),
        ("exit 3", CommandOutcome::Exited(3)),
        ("false", CommandOutcome::Exited(1)),
        ("kill -KILL $$", CommandOutcome::Signaled(9)),
    ] {
        let (outcome, _) = run(&exec, &OneShot::new(script)).await;
        assert_eq!(outcome, expected, "{script}");
    }

    let mut shot = OneShot::new("true");
    shot.spec.program = "/nonexistent/shell".into();
    let (outcome, _) = run(&exec, &shot).await;
    assert!(
        matches!(&outcome, CommandOutcome::SpawnFailed(m) if m.contains("/nonexistent/shell")),
        "{outcome:?}"
    );

    let mut shot = OneShot::new("true");
    shot.spec.cwd = "/nonexistent/dir".into();
    let (outcome, _) = run(&exec, &shot).await;
    assert!(
        matches!(outcome, CommandOutcome::SpawnFailed(_)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn environment_is_exactly_the_given_one() {
    setup();
    let exec = HostExecutor::new();
    let mut shot = OneShot::new("env | sort");
    shot.spec.env = vec![
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("ONLY".into(), "this".into()),
    ]
    .into();
    let (_, out) = run(&exec, &shot).await;
    let text = out.stdout_str();
    let vars: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("OLDPWD="))
        .collect();
    assert_eq!(vars, ["ONLY=this", "PATH=/usr/bin:/bin"]);
}

#[tokio::test]
async fn background_sleep_does_not_hold_the_command_and_is_swept() {
    setup();
    let exec = HostExecutor::new();
    let shot = OneShot::new("sleep 600 & echo $! > sleep.pid; echo started");
    let started = Instant::now();
    let (outcome, out) = run(&exec, &shot).await;
    assert_eq!(outcome, CommandOutcome::Success);
    assert_eq!(out.stdout_str(), "started\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the background process"
    );
    let pid = read_pid(&shot.path("sleep.pid")).await;
    assert!(is_alive(pid));
    // `$!` is known as soon as the shell forked; wait for the child to have exec'd `sleep`.
    common::wait_for_command_line(pid, "sleep 600").await;

    let mut sink = CapturedOutput::default();
    let leaked = exec.sweep(Duration::from_secs(5), &mut sink).await.unwrap();
    let found = leaked
        .iter()
        .find(|p| p.pid == pid)
        .expect("sleep not reported");
    assert_eq!(found.command_line, "sleep 600");
    assert!(!is_alive(pid), "sleep {pid} survived the sweep");
    // Nothing left for a second sweep.
    assert!(exec
        .sweep(Duration::ZERO, &mut sink)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn background_output_after_the_command_returned_is_not_lost() {
    setup();
    let exec = HostExecutor::new();
    let shot = OneShot::new(
        "( while [ ! -e go ]; do sleep 0.01; done; echo late-output; echo late-error >&2; : > wrote ) &\n\
         echo first",
    );
    let (outcome, out) = run(&exec, &shot).await;
    assert_eq!(outcome, CommandOutcome::Success);
    assert_eq!(out.stdout_str(), "first\n");

    // The background process writes while no command runs; the next command collects it.
    std::fs::write(shot.path("go"), "").unwrap();
    wait_for_file_exists(&shot.path("wrote")).await;
    let next = OneShot::new("echo second");
    let (outcome, out) = run(&exec, &next).await;
    assert_eq!(outcome, CommandOutcome::Success);
    assert!(out.stdout_str().contains("late-output\n"), "{out:?}");
    assert!(out.stdout_str().contains("second\n"), "{out:?}");
    assert_eq!(out.stderr_str(), "late-error\n");

    // Output written after the last command is passed to the sweep's sink.
    let last = OneShot::new(
        "( while [ ! -e go ]; do sleep 0.01; done; echo swept-output; exec sh -c 'echo $$ > wrote; exec sleep 600' ) &",
    );
    let (outcome, _) = run(&exec, &last).await;
    assert_eq!(outcome, CommandOutcome::Success);
    std::fs::write(last.path("go"), "").unwrap();
    let pid = read_pid(&last.path("wrote")).await;
    common::wait_for_command_line(pid, "sleep 600").await;
    let mut sink = CapturedOutput::default();
    let leaked = exec.sweep(Duration::from_secs(5), &mut sink).await.unwrap();
    assert_eq!(sink.stdout_str(), "swept-output\n");
    assert!(
        leaked
            .iter()
            .any(|p| p.pid == pid && p.command_line == "sleep 600"),
        "{leaked:?}"
    );
}

async fn wait_for_file_exists(path: &std::path::Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} missing",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `shot` and requests a stop with `reason` once `marker` exists.
async fn run_and_stop(
    exec: &HostExecutor,
    shot: &OneShot,
    marker: &str,
    reason: CancelReason,
    grace: Duration,
    kill_now: Option<CancellationToken>,
) -> (CommandOutcome, CapturedOutput, Duration) {
    let stop = StopRequest::new();
    let kill = kill_now.unwrap_or_default();
    let control = CommandControl::new(stop.clone(), kill.clone(), grace);
    let marker = shot.path(marker);
    let mut out = CapturedOutput::default();
    let requested = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let req = requested.clone();
    let stopper = async move {
        wait_for_file(&marker, Duration::from_secs(10)).await;
        *req.lock().unwrap() = Some(Instant::now());
        stop.request(reason);
        // Park forever; the join below ends when the command does.
        std::future::pending::<()>().await;
    };
    let outcome = tokio::select! {
        res = tokio::time::timeout(Duration::from_secs(20), exec.run(&shot.spec, control, &mut out)) => {
            res.expect("the command was not stopped").unwrap()
        }
        _ = stopper => unreachable!(),
    };
    let since = requested
        .lock()
        .unwrap()
        .expect("stop never requested")
        .elapsed();
    (outcome, out, since)
}

#[tokio::test]
async fn timeout_kills_the_grandchild() {
    setup();
    let exec = HostExecutor::new();
    let shot = OneShot::new("sh -c 'sleep 600 & echo $! > grandchild.pid; wait'\necho not-reached");
    let (outcome, out, since) = run_and_stop(
        &exec,
        &shot,
        "grandchild.pid",
        CancelReason::Timeout,
        Duration::from_secs(5),
        None,
    )
    .await;
    assert_eq!(outcome, CommandOutcome::TimedOut);
    assert!(!out.stdout_str().contains("not-reached"));
    assert!(
        since < Duration::from_secs(4),
        "SIGTERM did not end it: {since:?}"
    );
    let grandchild = read_pid(&shot.path("grandchild.pid")).await;
    assert!(!is_alive(grandchild), "grandchild {grandchild} survived");
}

#[tokio::test]
async fn shell_ignoring_sigterm_is_killed_after_the_grace() {
    setup();
    let exec = HostExecutor::new();
    let grace = Duration::from_millis(300);
    let shot =
        OneShot::new("trap '' TERM\nsleep 600 & echo $! > sleep.pid\nwhile :; do sleep 1; done");
    let (outcome, _, since) =
        run_and_stop(&exec, &shot, "sleep.pid", CancelReason::Signal, grace, None).await;
    assert_eq!(outcome, CommandOutcome::Stopped);
    assert!(since >= grace, "killed before the grace period: {since:?}");
    assert!(since < Duration::from_secs(5), "{since:?}");
    let pid = read_pid(&shot.path("sleep.pid")).await;
    assert!(!is_alive(pid));
}

#[tokio::test]
async fn child_ignoring_sigterm_is_killed_after_the_grace_even_when_the_shell_exits() {
    setup();
    let exec = HostExecutor::new();
    let grace = Duration::from_millis(300);
    // The shell dies of SIGTERM at once; its child ignores SIGTERM and keeps the group alive.
    let shot = OneShot::new(
        "sh -c \"trap '' TERM; echo \\$\\$ > stubborn.pid; while :; do sleep 1; done\" &\nwait",
    );
    let (outcome, out, since) = run_and_stop(
        &exec,
        &shot,
        "stubborn.pid",
        CancelReason::Timeout,
        grace,
        None,
    )
    .await;
    assert_eq!(outcome, CommandOutcome::TimedOut, "{out:?}");
    assert!(since >= grace, "killed before the grace period: {since:?}");
    let pid = read_pid(&shot.path("stubborn.pid")).await;
    assert!(!is_alive(pid), "stubborn child {pid} survived");
}

#[tokio::test]
async fn kill_now_skips_the_grace() {
    setup();
    let exec = HostExecutor::new();
    let kill = CancellationToken::new();
    let shot = OneShot::new("trap '' TERM\necho $$ > shell.pid\nsleep 600");
    let k = kill.clone();
    let marker = shot.path("shell.pid");
    let second_ctrl_c = async move {
        wait_for_file(&marker, Duration::from_secs(10)).await;
        // Give the first request a moment to be handled, then insist.
        tokio::time::sleep(Duration::from_millis(50)).await;
        k.cancel();
    };
    let started = Instant::now();
    let (res, ()) = tokio::join!(
        run_and_stop(
            &exec,
            &shot,
            "shell.pid",
            CancelReason::Signal,
            Duration::from_secs(60),
            Some(kill),
        ),
        second_ctrl_c
    );
    let (outcome, _, _) = res;
    assert_eq!(outcome, CommandOutcome::Stopped);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the 60 s grace"
    );
    let pid = read_pid(&shot.path("shell.pid")).await;
    assert!(!is_alive(pid));
}

#[tokio::test]
async fn nothing_starts_after_a_stop() {
    setup();
    let exec = HostExecutor::new();
    let shot = OneShot::new(": > ran");
    let stop = StopRequest::new();
    assert!(stop.request(CancelReason::Timeout));
    assert!(!stop.request(CancelReason::Signal), "the first reason wins");
    let control = CommandControl::new(stop, CancellationToken::new(), Duration::from_secs(1));
    let mut out = CapturedOutput::default();
    let outcome = exec.run(&shot.spec, control, &mut out).await.unwrap();
    assert_eq!(outcome, CommandOutcome::TimedOut);
    assert!(!shot.path("ran").exists());
}

/// `runtime-versions` on the host read the host's `runtimes.yml`: a file's bytes, `None` when
/// there is none.
#[tokio::test]
async fn read_file_reads_this_machines_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runtimes.yml");
    std::fs::write(&path, "runtimes: {}\n").unwrap();
    let exec = HostExecutor::new();
    assert_eq!(
        exec.read_file(&path).await.unwrap().as_deref(),
        Some(&b"runtimes: {}\n"[..])
    );
    assert_eq!(
        exec.read_file(&dir.path().join("missing")).await.unwrap(),
        None
    );
    assert!(exec.read_file(dir.path()).await.is_err(), "a directory");
}
