//! Soak: consecutive builds in one process through the library API, each with commands that leave
//! a background job on the output pipe, detached jobs (nohup, setsid daemons), a file held open
//! by one of them and temporary files; afterwards no process, file descriptor or file is left and
//! memory is flat.
//!
//! `BUILDAGENT_SOAK_BUILDS` sets the number of builds (default 100, which CI runs; README gives
//! the figures of 1,000). Alone in its test binary: it makes the process a child subreaper and
//! counts the process's own file descriptors.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buildagent_runner::engine::{Build, BuildOptions};
use buildagent_runner::events::{BuildStatus, EventKind};
use buildagent_runner::executor::{enable_child_subreaper, HostExecutor, StopRequest};
use buildagent_spec::{parse, ParseOptions};

/// The commands of each build. The `sleep` durations are this test's own (3101..3104), so the
/// process table can be searched for them.
const BUILDSPEC: &str = r#"version: 0.2
phases:
  build:
    commands:
      - sleep 3101 &
      - nohup sleep 3102 >/dev/null 2>&1 &
      - setsid -f sleep 3103 </dev/null >/dev/null 2>&1
      - exec 3>held.txt; sleep 3104 </dev/null >/dev/null 2>&1 &
      - mktemp -p "$CODEBUILD_SRC_DIR" >/dev/null; mktemp -d -p "$CODEBUILD_SRC_DIR" >/dev/null
      - echo built
"#;

#[test]
fn consecutive_builds_leave_no_process_fd_or_file_and_memory_stays_flat() {
    let builds: usize = std::env::var("BUILDAGENT_SOAK_BUILDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    enable_child_subreaper().unwrap();
    // The builds' temporary files (the staging copies) go to a directory of this test's own,
    // which must be empty at the end.
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("TMPDIR", tmp.path());
    let source = tempfile::tempdir_in(tmp.path()).unwrap();
    std::fs::write(source.path().join("buildspec.yml"), BUILDSPEC).unwrap();
    let source = source.keep();
    let marker = format!("soak-{}", std::process::id());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let executor = Arc::new(HostExecutor::new());
    let run = |n: usize| {
        let staging = tempfile::tempdir().unwrap();
        let mut options = BuildOptions::new(staging.path().join("src"));
        options.stage_from(&source).grace(Duration::from_secs(5));
        options.identity.project = marker.clone();
        let spec = parse(BUILDSPEC, &ParseOptions::default())
            .buildspec
            .unwrap();
        let build = Build::new(spec, options, executor.clone());
        let mut output = Vec::new();
        let result = runtime.block_on(build.run(StopRequest::new(), Default::default(), |e| {
            if let EventKind::Output { bytes, .. } = e.kind {
                output.extend(bytes);
            }
        }));
        assert_eq!(result.status, BuildStatus::Succeeded, "build {n}");
        assert_eq!(String::from_utf8_lossy(&output), "built\n", "build {n}");
    };

    // Warm up the runtime, the allocator and the executor's reusable buffers first.
    for n in 0..5 {
        run(n);
    }
    let shm_before = entries(Path::new("/dev/shm"));
    let fds_before = open_fds();
    let rss_before = vm_rss_kib();
    let started = Instant::now();
    for n in 0..builds {
        run(n);
    }
    let elapsed = started.elapsed();
    std::fs::remove_dir_all(&source).unwrap();

    let fds_after = open_fds();
    let rss_after = vm_rss_kib();
    let processes = ours();
    let children = children();
    let mut left: Vec<String> = entries(tmp.path());
    // /dev/shm is shared with everything else on this machine: only entries that name this
    // test's builds count.
    left.extend(
        entries(Path::new("/dev/shm"))
            .into_iter()
            .filter(|e| !shm_before.contains(e))
            .filter(|e| mentions(&Path::new("/dev/shm").join(e), &marker)),
    );
    eprintln!(
        "soak: {builds} builds in {elapsed:.1?} ({:.1?} each); processes left {}, children {}, \
         fds {fds_before} -> {fds_after}, files left {}, VmRSS {rss_before} -> {rss_after} KiB",
        elapsed / builds as u32,
        processes.len(),
        children.len(),
        left.len()
    );
    assert!(processes.is_empty(), "processes left: {processes:?}");
    assert!(
        children.is_empty(),
        "children left (zombies included): {children:?}"
    );
    assert_eq!(fds_after, fds_before, "file descriptors leaked");
    assert!(left.is_empty(), "files left: {left:?}");
    // Flat: a leak of even 1 KiB a build would show as 100 KiB over the default run; allocator
    // noise stays well under 8 MiB.
    assert!(
        rss_after < rss_before + 8 * 1024,
        "VmRSS grew from {rss_before} to {rss_after} KiB"
    );
}

/// The names in `dir`.
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

/// This process's open file descriptors.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Live processes anywhere whose command line is one of this test's sleeps.
fn ours() -> Vec<(i32, String)> {
    processes()
        .into_iter()
        .filter(|(_, _, state, cmdline)| state != "Z" && cmdline.starts_with("sleep 310"))
        .map(|(pid, _, _, cmdline)| (pid, cmdline))
        .collect()
}

/// Processes whose parent is this one, zombies included.
fn children() -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    processes()
        .into_iter()
        .filter(|(_, ppid, _, _)| *ppid == me)
        .map(|(pid, _, state, cmdline)| (pid, format!("{state} {cmdline}")))
        .collect()
}

/// Every process: pid, parent, state and command line.
fn processes() -> Vec<(i32, i32, String, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        all.push((
            pid,
            fields[1].parse().unwrap_or(0),
            fields[0].to_string(),
            cmdline,
        ));
    }
    all
}
