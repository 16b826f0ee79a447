//! Soak of the CLI: consecutive `buildagent run`s whose commands leave a background job on the
//! output pipe, detached jobs (nohup, setsid daemons), a file held open by one of them and
//! temporary files in the build's copy of the source. Afterwards no process of theirs is alive,
//! no file is left in the temporary directory the agent was given or in /dev/shm (the command
//! state), and the agent's peak memory is the same on the last run as on the first.
//!
//! `BUILDAGENT_SOAK_RUNS` sets the number of runs (default 100, which CI runs; README gives the
//! figures of 1,000).

use std::path::Path;
use std::time::Instant;

use buildagent_tests::Sandbox;
use nix::sys::resource::{getrusage, UsageWho};

/// The `sleep` durations are this test's own (3201..3204), so the process table can be searched
/// for them.
const BUILDSPEC: &str = r#"version: 0.2
phases:
  build:
    commands:
      - sleep 3201 &
      - nohup sleep 3202 >/dev/null 2>&1 &
      - setsid -f sleep 3203 </dev/null >/dev/null 2>&1
      - exec 3>held.txt; sleep 3204 </dev/null >/dev/null 2>&1 &
      - mktemp -p "$CODEBUILD_SRC_DIR" >/dev/null; mktemp -d -p "$CODEBUILD_SRC_DIR" >/dev/null
      - echo built
"#;

#[test]
fn consecutive_cli_runs_leave_no_process_or_file_and_memory_stays_flat() {
    let runs: usize = std::env::var("BUILDAGENT_SOAK_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let sandbox = Sandbox::new();
    let marker = format!("soak-cli-{}", std::process::id());
    sandbox.write(&format!("{marker}/buildspec.yml"), BUILDSPEC);
    let tmp = sandbox.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let shm_before = entries(Path::new("/dev/shm"));
    let fds_before = std::fs::read_dir("/proc/self/fd").unwrap().count();

    let started = Instant::now();
    let mut first_peak = 0;
    for n in 0..runs {
        let output = sandbox
            .command(["run", "--log-format", "codebuild", "-s", &marker])
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        let run = buildagent_tests::Run::from(output);
        run.expect_code(0);
        assert!(
            run.stdout.contains("\nbuilt\n") || run.stdout.contains(" built\n"),
            "run {n}: {}",
            run.stdout
        );
        if n == 0 {
            first_peak = peak_kib();
        }
    }
    let elapsed = started.elapsed();
    let last_peak = peak_kib();

    let processes = ours();
    let mut left = entries(&tmp);
    left.extend(
        entries(Path::new("/dev/shm"))
            .into_iter()
            .filter(|e| !shm_before.contains(e))
            .filter(|e| mentions(&Path::new("/dev/shm").join(e), &marker)),
    );
    let fds_after = std::fs::read_dir("/proc/self/fd").unwrap().count();
    eprintln!(
        "soak: {runs} CLI runs in {elapsed:.1?} ({:.1?} each); processes left {}, files left {}, \
         test fds {fds_before} -> {fds_after}, agent peak RSS first run {first_peak} KiB, all runs \
         {last_peak} KiB",
        elapsed / runs as u32,
        processes.len(),
        left.len()
    );
    assert!(processes.is_empty(), "processes left: {processes:?}");
    assert!(left.is_empty(), "files left: {left:?}");
    assert_eq!(fds_after, fds_before);
    // The peak of every run is within 4 MiB of the first one's.
    assert!(
        last_peak < first_peak + 4 * 1024,
        "peak RSS grew from {first_peak} to {last_peak} KiB"
    );
}

/// The largest resident set of the children waited for so far.
fn peak_kib() -> i64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `path`, or a file under it, has `marker` in its name or its contents.
fn mentions(path: &Path, marker: &str) -> bool {
    if path.to_string_lossy().contains(marker) {
        return true;
    }
    if path.is_dir() {
        return std::fs::read_dir(path)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| mentions(&e.path(), marker))
            })
            .unwrap_or(false);
    }
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).contains(marker))
        .unwrap_or(false)
}

/// Live processes whose command line is one of this test's sleeps.
fn ours() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<i32>().is_err() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| s[s.rfind(')').unwrap_or(0)..].starts_with(") Z"))
            .unwrap_or(true);
        if cmdline.starts_with("sleep 320") && !zombie {
            found.push((name, cmdline));
        }
    }
    found
}
