//! Speed and memory of `buildagent run --batch` against separate `buildagent run` processes
//! doing the same builds. Prints figures and ratios; run with
//! `cargo build --release -p buildagent && cargo bench -p buildagent-tests --bench batch`
//! (`BUILDAGENT_BENCH_AGENT=/path/to/buildagent` measures another build of the agent).
//!
//! - 40 one-command builds (`true`): one batch with `-j 2` against 40 `buildagent run`
//!   processes started 2 at a time (the same work: a fresh source copy each, all phases).
//! - peak memory: the batch agent's peak RSS with `-j 2` and `-j 8` (the difference divided by
//!   6 is what one more running build costs), and one `buildagent run` process's. Each figure is
//!   measured in a fresh process (this bench re-runs itself), as the kernel's peak of a
//!   process's children only grows.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::sys::resource::{getrusage, UsageWho};

mod common;
use common::{agent, median};

const BUILDS: usize = 40;

/// A source directory with the batch buildspec (`batch.yml`) and a single build's
/// (`buildspec.yml`), both running `true`.
fn source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut batch = String::from("version: 0.2\nbatch:\n  build-list:\n");
    for i in 0..BUILDS {
        batch.push_str(&format!("    - identifier: b{i}\n"));
    }
    batch.push_str("phases:\n  build:\n    commands: ['true']\n");
    std::fs::write(src.join("batch.yml"), batch).unwrap();
    std::fs::write(
        src.join("buildspec.yml"),
        "version: 0.2\nphases:\n  build:\n    commands: ['true']\n",
    )
    .unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("file{i}.txt")), format!("file {i}\n")).unwrap();
    }
    src
}

fn agent_command(src: &Path) -> Command {
    let mut cmd = Command::new(agent());
    cmd.current_dir(src)
        .args(["run", "--no-cache", "--log-format", "codebuild"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn batch(src: &Path, jobs: usize) {
    let status = agent_command(src)
        .args(["--batch", "-b", "batch.yml", "-j", &jobs.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn separate(src: &Path, parallel: usize) {
    let mut running = Vec::new();
    for _ in 0..BUILDS {
        if running.len() == parallel {
            let child: std::process::Child = running.remove(0);
            assert!(child.wait_with_output().unwrap().status.success());
        }
        running.push(agent_command(src).spawn().unwrap());
    }
    for child in running {
        assert!(child.wait_with_output().unwrap().status.success());
    }
}

/// Runs this bench again as `measure <what>` and reads the peak RSS (KiB) it prints.
fn peak_kib(what: &str) -> u64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["measure", what])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    if args.first().map(String::as_str) == Some("measure") {
        match args.get(1).map(String::as_str) {
            Some("j2") => batch(&src, 2),
            Some("j8") => batch(&src, 8),
            _ => {
                let status = agent_command(&src).status().unwrap();
                assert!(status.success());
            }
        }
        println!(
            "{}",
            getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss()
        );
        return;
    }

    let mut in_batch = Vec::new();
    let mut apart = Vec::new();
    // Interleaved rounds, medians: the machine is shared and noisy.
    for _ in 0..5 {
        let t = Instant::now();
        batch(&src, 2);
        in_batch.push(t.elapsed());
        let t = Instant::now();
        separate(&src, 2);
        apart.push(t.elapsed());
    }
    let (b, s) = (median(in_batch), median(apart));
    println!(
        "batch: {BUILDS} one-command builds, one batch -j 2 {:.0} ms, {BUILDS} separate runs 2 at a time {:.0} ms, ratio {:.2}x (target <= 1.0x)",
        b.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        b.as_secs_f64() / s.as_secs_f64()
    );
    let (single, j2, j8) = (peak_kib("single"), peak_kib("j2"), peak_kib("j8"));
    println!(
        "peak RSS: one `buildagent run` {} KiB; the batch agent with -j 2 {} KiB ({} KiB per running build), with -j 8 {} KiB; one more running build costs {} KiB",
        single,
        j2,
        j2 / 2,
        j8,
        j8.saturating_sub(j2) / 6
    );
}
