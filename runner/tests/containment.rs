//! Two builds in one process, each with its own cgroup: each one's end removes only its own
//! daemons and background jobs. (Alone in its test binary, and without the child subreaper, as a
//! worker running several builds would be.) The machines this runs on delegate cgroup v2 to
//! root; where they do not, the test fails and says so.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use buildagent_runner::events::CommandOutcome;
use buildagent_runner::executor::{
    CapturedOutput, CommandControl, Containment, Executor, HostExecutor,
};
use common::{is_alive, read_pid, OneShot};

/// Starts a `setsid` daemon and a background job through `exec`; returns their pids.
async fn leave_two(exec: &HostExecutor, tag: &str) -> (OneShot, i32, i32) {
    let shot = OneShot::new(&format!(
        "setsid -f sh -c 'echo $$ > daemon.pid; exec sleep 600' </dev/null >/dev/null 2>&1\n\
         sleep 601 >/dev/null 2>&1 &\n\
         echo $! > job.pid\n\
         while [ ! -s daemon.pid ]; do sleep 0.01; done\n\
         echo {tag}"
    ));
    let mut out = CapturedOutput::default();
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        exec.run(&shot.spec, CommandControl::none(), &mut out),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(outcome, CommandOutcome::Success, "{out:?}");
    let daemon = read_pid(&shot.path("daemon.pid")).await;
    let job = read_pid(&shot.path("job.pid")).await;
    common::wait_for_command_line(daemon, "sleep 600").await;
    (shot, daemon, job)
}

fn cgroup_of(exec: &HostExecutor) -> PathBuf {
    match exec.containment() {
        Containment::Cgroup(dir) => dir,
        other => panic!(
            "no cgroup of its own for the build ({other:?}): these tests need a writable cgroup v2 \
             hierarchy (root on a machine that mounts cgroup2, as the test machines do)"
        ),
    }
}

/// Waits until `pid` is gone (a daemon is reaped by init, not by us, a moment after it dies).
async fn gone(pid: i32) -> bool {
    for _ in 0..200 {
        if !is_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn each_build_ends_only_its_own_processes() {
    let a = HostExecutor::for_one_of_many();
    let b = HostExecutor::for_one_of_many();
    let (dir_a, dir_b) = (cgroup_of(&a), cgroup_of(&b));
    assert_ne!(dir_a, dir_b);
    let (_shot_a, daemon_a, job_a) = leave_two(&a, "a").await;
    let (_shot_b, daemon_b, job_b) = leave_two(&b, "b").await;

    let mut sink = CapturedOutput::default();
    let leaked = a.sweep(Duration::from_secs(5), &mut sink).await.unwrap();
    let mut pids: Vec<i32> = leaked.iter().map(|p| p.pid).collect();
    pids.sort();
    let mut expected = vec![daemon_a, job_a];
    expected.sort();
    assert_eq!(pids, expected, "{leaked:?}");
    assert!(gone(daemon_a).await && gone(job_a).await);
    assert!(
        is_alive(daemon_b) && is_alive(job_b),
        "a's sweep ended b's processes"
    );

    let leaked = b.sweep(Duration::from_secs(5), &mut sink).await.unwrap();
    let mut pids: Vec<i32> = leaked.iter().map(|p| p.pid).collect();
    pids.sort();
    let mut expected = vec![daemon_b, job_b];
    expected.sort();
    assert_eq!(pids, expected, "{leaked:?}");
    assert!(gone(daemon_b).await && gone(job_b).await);

    // Each cgroup goes with its executor.
    drop(a);
    drop(b);
    assert!(!dir_a.exists() && !dir_b.exists());
}

#[tokio::test]
async fn a_dropped_executor_ends_what_is_left_in_its_cgroup() {
    let exec = HostExecutor::new();
    let dir = cgroup_of(&exec);
    let (_shot, daemon, job) = leave_two(&exec, "left").await;
    // No sweep: the embedder forgot it, or the build was abandoned.
    drop(exec);
    assert!(gone(daemon).await && gone(job).await);
    assert!(!dir.exists());
}
