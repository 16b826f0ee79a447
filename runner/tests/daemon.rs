//! Daemons that leave their process group and session are still found and swept, thanks to the
//! child subreaper. (Alone in its test binary: the sweep looks at every descendant of the test
//! process that changed session, so another test's daemons would be swept too.)

mod common;

use std::time::Duration;

use buildagent_runner::events::CommandOutcome;
use buildagent_runner::executor::{
    enable_child_subreaper, CapturedOutput, CommandControl, Executor, HostExecutor,
};
use common::{is_alive, read_pid, stat_field, OneShot};

#[tokio::test]
async fn daemonized_processes_are_found_and_swept() {
    enable_child_subreaper().unwrap();
    let exec = HostExecutor::new();
    // A double-forked daemon in a new session (setsid -f forks, the child calls setsid and execs),
    // with its output away from our pipes; and a plain double fork that stays in the group.
    let shot = OneShot::new(
        "setsid -f sh -c 'echo $$ > daemon.pid; exec sleep 600' </dev/null >/dev/null 2>&1\n\
         ( sleep 601 & echo $! > orphan.pid )\n\
         while [ ! -s daemon.pid ]; do sleep 0.01; done\n\
         echo started",
    );
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
    let orphan = read_pid(&shot.path("orphan.pid")).await;
    assert!(is_alive(daemon) && is_alive(orphan));
    common::wait_for_command_line(daemon, "sleep 600").await;
    common::wait_for_command_line(orphan, "sleep 601").await;

    // The daemon left our session and group, and was reparented to us (the subreaper).
    let me = std::process::id().to_string();
    let my_session = stat_field(std::process::id() as i32, 3);
    assert_ne!(stat_field(daemon, 3), my_session);
    assert_eq!(stat_field(daemon, 1), me);
    assert_eq!(stat_field(orphan, 1), me);

    let mut sink = CapturedOutput::default();
    let leaked = exec.sweep(Duration::from_secs(5), &mut sink).await.unwrap();
    let lines: Vec<(i32, &str)> = leaked
        .iter()
        .map(|p| (p.pid, p.command_line.as_str()))
        .collect();
    assert!(lines.contains(&(daemon, "sleep 600")), "{lines:?}");
    assert!(lines.contains(&(orphan, "sleep 601")), "{lines:?}");
    assert!(!is_alive(daemon), "daemon {daemon} survived");
    assert!(!is_alive(orphan), "orphan {orphan} survived");
    // Reaped, not left as zombies of the test process.
    assert!(!std::path::Path::new(&format!("/proc/{daemon}")).exists());
    assert!(!std::path::Path::new(&format!("/proc/{orphan}")).exists());
}
