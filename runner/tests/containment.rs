//! Two builds in one process, each contained on its own: each one's end removes only its own
//! daemons and background jobs. With a cgroup per build (the machines this runs on delegate
//! cgroup v2 to root; where they do not, those tests fail and say so), and without one, through
//! the process table under the child subreaper, where a daemon is known by the
//! `CODEBUILD_BUILD_ID` in its environment. (Alone in their test binary: a process-table sweep
//! looks at every descendant of the test process; the tests take turns, see `TURN`.)

mod common;

use std::path::PathBuf;
use std::time::Duration;

use buildagent_runner::events::CommandOutcome;
use buildagent_runner::executor::{
    enable_child_subreaper, CapturedOutput, CommandControl, Containment, Executor, HostExecutor,
};
use common::{is_alive, read_pid, stat_field, OneShot};

/// One test at a time: the program-wide sweep of the process-table test ends every daemon of
/// this process, other tests' included.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a `setsid` daemon and a background job through `exec`; returns their pids.
async fn leave_two(exec: &HostExecutor, tag: &str) -> (OneShot, i32, i32) {
    leave_two_as(exec, tag, None).await
}

/// [`leave_two`], with the commands' `CODEBUILD_BUILD_ID` set to `build_id`.
async fn leave_two_as(
    exec: &HostExecutor,
    tag: &str,
    build_id: Option<&str>,
) -> (OneShot, i32, i32) {
    let mut shot = OneShot::new(&format!(
        "setsid -f sh -c 'echo $$ > daemon.pid; exec sleep 600' </dev/null >/dev/null 2>&1\n\
         sleep 601 >/dev/null 2>&1 &\n\
         echo $! > job.pid\n\
         while [ ! -s daemon.pid ]; do sleep 0.01; done\n\
         echo {tag}"
    ));
    if let Some(id) = build_id {
        let mut env = shot.spec.env.to_vec();
        env.push(("CODEBUILD_BUILD_ID".into(), id.into()));
        shot.spec.env = env.into();
    }
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
    let _turn = TURN.lock().await;
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
    let _turn = TURN.lock().await;
    let exec = HostExecutor::new();
    let dir = cgroup_of(&exec);
    let (_shot, daemon, job) = leave_two(&exec, "left").await;
    // No sweep: the embedder forgot it, or the build was abandoned.
    drop(exec);
    assert!(gone(daemon).await && gone(job).await);
    assert!(!dir.exists());
}

/// Sweeps `exec` and returns the pids it reports, sorted.
async fn swept(exec: &HostExecutor) -> Vec<i32> {
    let mut sink = CapturedOutput::default();
    let leaked = exec.sweep(Duration::from_secs(5), &mut sink).await.unwrap();
    let mut pids: Vec<i32> = leaked.iter().map(|p| p.pid).collect();
    pids.sort();
    pids
}

fn sorted(mut pids: Vec<i32>) -> Vec<i32> {
    pids.sort();
    pids
}

#[tokio::test]
async fn without_cgroups_each_build_ends_only_its_own_daemons() {
    let _turn = TURN.lock().await;
    enable_child_subreaper().unwrap();
    // The program's sweeper for daemons nobody claims, made before the builds (as a batch does).
    let program = HostExecutor::new().without_cgroup();
    let a = HostExecutor::for_one_of_many().without_cgroup();
    let b = HostExecutor::for_one_of_many().without_cgroup();
    assert_eq!(a.containment(), Containment::ProcessTable);
    assert_eq!(b.containment(), Containment::ProcessTable);
    let (_shot_a, daemon_a, job_a) = leave_two_as(&a, "a", Some("demo:aaaa")).await;
    let (_shot_b, daemon_b, job_b) = leave_two_as(&b, "b", Some("demo:bbbb")).await;
    // A daemon of build a that clears its environment: no build can claim it.
    let stray_shot = OneShot::new(
        "env -i PATH=\"$PATH\" setsid -f sh -c 'echo $$ > stray.pid; exec sleep 602' \
         </dev/null >/dev/null 2>&1\n\
         while [ ! -s stray.pid ]; do sleep 0.01; done",
    );
    let mut spec = stray_shot.spec.clone();
    let mut env = spec.env.to_vec();
    env.push(("CODEBUILD_BUILD_ID".into(), "demo:aaaa".into()));
    spec.env = env.into();
    let mut out = CapturedOutput::default();
    let outcome = a
        .run(&spec, CommandControl::none(), &mut out)
        .await
        .unwrap();
    assert_eq!(outcome, CommandOutcome::Success, "{out:?}");
    let stray = read_pid(&stray_shot.path("stray.pid")).await;
    common::wait_for_command_line(stray, "sleep 602").await;

    // The daemons left their sessions and were reparented to this process, the subreaper: only
    // their environment tells whose they are.
    let me = std::process::id().to_string();
    for daemon in [daemon_a, daemon_b, stray] {
        // `setsid -f`'s parent exits just after the fork: wait for the reparenting.
        for _ in 0..500 {
            if stat_field(daemon, 1) == me {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            stat_field(daemon, 1),
            me,
            "daemon {daemon} not reparented here"
        );
        assert_ne!(
            stat_field(daemon, 3),
            stat_field(std::process::id() as i32, 3)
        );
    }

    assert_eq!(swept(&a).await, sorted(vec![daemon_a, job_a]));
    assert!(gone(daemon_a).await && gone(job_a).await);
    assert!(
        is_alive(daemon_b) && is_alive(job_b) && is_alive(stray),
        "a's sweep ended processes that are not a's"
    );
    // Reaped, not left as zombies of this process.
    assert!(!std::path::Path::new(&format!("/proc/{daemon_a}")).exists());

    assert_eq!(swept(&b).await, sorted(vec![daemon_b, job_b]));
    assert!(gone(daemon_b).await && gone(job_b).await);
    assert!(is_alive(stray), "b's sweep ended a daemon that is not b's");

    // The program ends what no build could claim, once the builds are done.
    assert_eq!(swept(&program).await, vec![stray]);
    assert!(gone(stray).await);
}
