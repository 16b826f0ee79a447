//! Speed of `buildagent run` against the plain shell doing the same work, measured in one
//! process so both sides see the same machine load. Prints figures and ratios; run with
//! `cargo build --release -p buildagent && cargo bench -p buildagent-tests --bench run`
//! (`BUILDAGENT_BENCH_AGENT=/path/to/buildagent` measures another build of the agent).
//!
//! - overhead: `buildagent run -m` of a one-command buildspec (`true`) against `sh -c true`.
//! - per command: a 500-command buildspec against 500 `sh -c true` spawns.
//! - log throughput: a command printing 1 GiB in short lines, rendered in CodeBuild format
//!   into `--log-file` (stdout to /dev/null); every line is counted, peak memory read from
//!   the kernel's accounting of the agent process.
//! - source copy: 20,000 small files staged by the agent (DOWNLOAD_SOURCE) against `cp -r`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};

mod common;
use common::{agent, median};

fn time(mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn run_agent(dir: &Path, extra: &[&str]) {
    let status = Command::new(agent())
        .current_dir(dir)
        .args(["run", "--log-format", "codebuild"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn sh_true() {
    assert!(Command::new("sh")
        .args(["-c", "true"])
        .status()
        .unwrap()
        .success());
}

fn overhead(dir: &Path) {
    std::fs::write(
        dir.join("buildspec.yml"),
        "version: 0.2\nphases:\n  build:\n    commands: ['true']\n",
    )
    .unwrap();
    let rounds = 40;
    let mut agent = Vec::new();
    let mut shell = Vec::new();
    for _ in 0..rounds {
        agent.push(time(|| run_agent(dir, &["-m"])));
        shell.push(time(sh_true));
    }
    let (a, s) = (median(agent), median(shell));
    println!(
        "overhead: buildagent run -m (1 command) {:.2} ms, sh -c true {:.2} ms, difference {:.2} ms (target < 10 ms)",
        a.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        (a.as_secs_f64() - s.as_secs_f64()) * 1e3
    );
}

fn per_command(dir: &Path) {
    let mut spec = String::from("version: 0.2\nphases:\n  build:\n    commands:\n");
    for _ in 0..500 {
        spec.push_str("      - 'true'\n");
    }
    std::fs::write(dir.join("buildspec.yml"), spec).unwrap();
    let mut agent = Vec::new();
    let mut shell = Vec::new();
    // Interleaved rounds, medians: the machine is shared and noisy.
    for _ in 0..25 {
        agent.push(time(|| run_agent(dir, &["-m"])));
        shell.push(time(|| (0..500).for_each(|_| sh_true())));
    }
    let (a, s) = (median(agent), median(shell));
    println!(
        "per command: 500 commands {:.0} ms, 500 sh -c spawns {:.0} ms, ratio {:.2}x (target <= 1.5x)",
        a.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        a.as_secs_f64() / s.as_secs_f64()
    );
}

fn throughput(dir: &Path) {
    let line = "a short line of build output, 40 bytes.\n";
    let gib: u64 = 1 << 30;
    let lines = gib / line.len() as u64;
    std::fs::write(
        dir.join("buildspec.yml"),
        format!(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - yes '{}' | head -n {lines}\n",
            line.trim_end()
        ),
    )
    .unwrap();
    let log = dir.join("build.log");
    let before = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
    let elapsed = time(|| run_agent(dir, &["-m", "--log-file", log.to_str().unwrap()]));
    let peak_kib = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
    let text = std::fs::read(&log).unwrap();
    let count = text
        .split(|b| *b == b'\n')
        .filter(|l| l == &line.trim_end().as_bytes())
        .count() as u64;
    assert_eq!(count, lines, "lines lost in the log");
    // The baseline: the same command writing straight to a file.
    let base = time(|| {
        let status = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "yes '{}' | head -n {lines} > {}",
                    line.trim_end(),
                    dir.join("plain.log").display()
                ),
            ])
            .status()
            .unwrap();
        assert!(status.success());
    });
    println!(
        "log throughput: {:.0} MB/s through the codebuild renderer into --log-file ({:.2} s for 1 GiB, {} lines all present); \
         the command alone writing to a file {:.2} s; peak RSS of the children {} MiB (before: {} MiB) (targets >= 200 MB/s, < 64 MiB)",
        gib as f64 / elapsed.as_secs_f64() / 1e6,
        elapsed.as_secs_f64(),
        count,
        base.as_secs_f64(),
        peak_kib / 1024,
        before / 1024
    );
    std::fs::remove_file(log).unwrap();
    std::fs::remove_file(dir.join("plain.log")).unwrap();
}

fn source_copy(dir: &Path) {
    let src = dir.join("tree");
    for i in 0..20_000 {
        let sub = src.join(format!("d{}", i % 200));
        if i < 200 {
            std::fs::create_dir_all(&sub).unwrap();
        }
        std::fs::write(sub.join(format!("f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    std::fs::write(
        src.join("buildspec.yml"),
        "version: 0.2\nphases:\n  build:\n    commands: ['true']\n",
    )
    .unwrap();
    let mut agent = Vec::new();
    let mut cp = Vec::new();
    for round in 0..3 {
        let out = Command::new(agent_path())
            .current_dir(&src)
            .args(["run", "--log-format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let download = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["type"] == "phase_finished" && e["phase"] == "DOWNLOAD_SOURCE")
            .and_then(|e| e["duration"].as_f64())
            .unwrap();
        agent.push(Duration::from_secs_f64(download));
        let target = dir.join(format!("cp{round}"));
        cp.push(time(|| {
            assert!(Command::new("cp")
                .arg("-r")
                .arg(&src)
                .arg(&target)
                .status()
                .unwrap()
                .success())
        }));
        std::fs::remove_dir_all(target).unwrap();
    }
    let (a, c) = (median(agent), median(cp));
    println!(
        "source copy: 20,000 files in DOWNLOAD_SOURCE {:.0} ms, cp -r {:.0} ms, ratio {:.2}x (target <= 1.0x)",
        a.as_secs_f64() * 1e3,
        c.as_secs_f64() * 1e3,
        a.as_secs_f64() / c.as_secs_f64()
    );
}

fn agent_path() -> PathBuf {
    agent()
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| name.contains(w.as_str()));
    let dir = tempfile::tempdir().unwrap();
    if wants("overhead") {
        overhead(dir.path());
    }
    if wants("per-command") {
        per_command(dir.path());
    }
    if wants("throughput") {
        throughput(dir.path());
    }
    if wants("source-copy") {
        source_copy(dir.path());
    }
}
