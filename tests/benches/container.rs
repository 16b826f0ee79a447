//! Per-command cost of a build inside a build image (`buildagent run -i`), against `docker exec`
//! of the same commands into a running container of the same image, measured in one process so
//! both sides see the same machine load. Prints figures and the ratio; run with
//! `cargo build --release -p buildagent && cargo bench -p buildagent-tests --bench container`
//! (needs the Docker engine and base image of scripts/services.sh).
//!
//! The agent's side: a buildspec of N `true` commands minus one of a single `true` (so container
//! creation and removal cancel out), divided by N-1. The baseline: N-1 `docker exec <c> sh -c true`
//! runs (the docker CLI does one exec create, start and inspect per command, as the agent does).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn agent() -> PathBuf {
    if let Some(bin) = std::env::var_os("BUILDAGENT_BENCH_AGENT") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("buildagent");
    assert!(
        bin.is_file(),
        "{} is missing: build the agent first",
        bin.display()
    );
    bin
}

fn image() -> String {
    std::env::var("BUILDAGENT_TEST_BASE_IMAGE")
        .unwrap_or_else(|_| "buildagent-test/busybox:latest".to_string())
}

fn build(dir: &Path, commands: usize) -> Duration {
    let list: Vec<String> = (0..commands)
        .map(|_| "      - 'true'".to_string())
        .collect();
    std::fs::write(
        dir.join("buildspec.yml"),
        format!(
            "version: 0.2\nphases:\n  build:\n    commands:\n{}\n",
            list.join("\n")
        ),
    )
    .unwrap();
    let started = Instant::now();
    let status = Command::new(agent())
        .args([
            "run",
            "-m",
            "--log-format",
            "codebuild",
            "-i",
            &image(),
            "-s",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    started.elapsed()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn main() {
    let n = 60;
    let rounds = 3;
    let dir = tempfile::tempdir().unwrap();
    let container = docker(&[
        "run",
        "-d",
        "--network",
        "host",
        "--entrypoint",
        "/bin/sh",
        &image(),
        "-c",
        "while :; do sleep 3600; done",
    ]);
    let mut agent_per = Vec::new();
    let mut exec_per = Vec::new();
    for _ in 0..rounds {
        let many = build(dir.path(), n);
        let one = build(dir.path(), 1);
        agent_per.push(many.saturating_sub(one) / (n as u32 - 1));
        let started = Instant::now();
        for _ in 1..n {
            docker(&["exec", &container, "sh", "-c", "true"]);
        }
        exec_per.push(started.elapsed() / (n as u32 - 1));
    }
    docker(&["rm", "-f", &container]);
    agent_per.sort();
    exec_per.sort();
    let (a, e) = (agent_per[rounds / 2], exec_per[rounds / 2]);
    println!(
        "per-command in a container: agent {:.1} ms, docker exec {:.1} ms, ratio {:.2}x",
        a.as_secs_f64() * 1e3,
        e.as_secs_f64() * 1e3,
        a.as_secs_f64() / e.as_secs_f64()
    );
}
