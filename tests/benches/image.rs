//! Speed of `buildagent image build --engine docker` (the Engine API, through bollard) against
//! `docker build` of the same context, in one process so both see the same machine load. Both
//! use the engine's classic builder: the agent asks for it (API builder version 1), and the
//! docker CLI is run with `DOCKER_BUILDKIT=0` (this engine, Debian's docker.io 20.10, has no
//! BuildKit by default and the CLI has no buildx plugin). Prints figures and ratios; run with
//! `cargo build --release -p buildagent && cargo bench -p buildagent-tests --bench image`
//! (`BUILDAGENT_BENCH_AGENT=/path/to/buildagent` measures another build of the agent; the
//! engine and base image come from `scripts/services.sh`).
//!
//! The context: 2,000 files of 8 KiB in 40 directories, one 32 MiB file, and 500 files in a
//! `node_modules` directory that `.dockerignore` leaves out. The Dockerfile copies the context
//! and runs a command over it.
//!
//! - no cache: `--no-cache` builds (context sent, COPY layer written, RUN container), median of 7.
//! - cached: every step from the engine's cache (context sent and checked), median of 9.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use buildagent_tests::services;

mod common;
use common::{agent, median};

/// Deterministic filler bytes (xorshift), so the files do not compress to nothing.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn make_context(dir: &Path, base: &str) {
    for d in 0..40 {
        let sub = dir.join(format!("src/d{d:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..50 {
            std::fs::write(
                sub.join(format!("f{f:02}.dat")),
                filler((d * 100 + f) as u64, 8192),
            )
            .unwrap();
        }
    }
    std::fs::write(dir.join("big.bin"), filler(7, 32 << 20)).unwrap();
    let modules = dir.join("node_modules/pkg");
    std::fs::create_dir_all(&modules).unwrap();
    for f in 0..500 {
        std::fs::write(modules.join(format!("m{f}.js")), filler(f, 4096)).unwrap();
    }
    std::fs::write(dir.join(".dockerignore"), "node_modules\n*.tmp\n").unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {base}\nCOPY . /ctx/\nRUN find /ctx -type f | wc -l\n"),
    )
    .unwrap();
}

/// Runs a build to completion, output discarded, and returns how long it took.
fn timed(mut command: Command) -> Duration {
    let start = Instant::now();
    let out = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn agent_build(ctx: &Path, tag: &str, no_cache: bool) -> Command {
    let mut cmd = Command::new(agent());
    cmd.args(["image", "build", "--engine", "docker", "-t", tag]);
    if no_cache {
        cmd.arg("--no-cache");
    }
    cmd.arg(ctx);
    cmd
}

fn docker_build(ctx: &Path, tag: &str, no_cache: bool) -> Command {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_BUILDKIT", "0")
        .args(["build", "--network", "host", "-t", tag]);
    if no_cache {
        cmd.arg("--no-cache");
    }
    cmd.arg(ctx);
    cmd
}

fn image_id(tag: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn compare(label: &str, ctx: &Path, no_cache: bool, rounds: usize, made: &mut Vec<String>) {
    let tag = |who: &str| format!("buildagent-bench/{who}-{}:latest", std::process::id());
    let (a_tag, d_tag) = (tag("agent"), tag("docker"));
    // One untimed round each: the cache and the page cache are warm for both.
    timed(agent_build(ctx, &a_tag, no_cache));
    timed(docker_build(ctx, &d_tag, no_cache));
    let (mut a, mut d) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so neither always follows the other's writes.
        if round % 2 == 0 {
            a.push(timed(agent_build(ctx, &a_tag, no_cache)));
            made.extend(image_id(&a_tag));
            d.push(timed(docker_build(ctx, &d_tag, no_cache)));
            made.extend(image_id(&d_tag));
        } else {
            d.push(timed(docker_build(ctx, &d_tag, no_cache)));
            made.extend(image_id(&d_tag));
            a.push(timed(agent_build(ctx, &a_tag, no_cache)));
            made.extend(image_id(&a_tag));
        }
    }
    let (a, d) = (median(a), median(d));
    println!(
        "{label}: buildagent {:.3} s, docker build {:.3} s, ratio {:.3}",
        a.as_secs_f64(),
        d.as_secs_f64(),
        a.as_secs_f64() / d.as_secs_f64()
    );
    made.push(a_tag);
    made.push(d_tag);
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter, as with libtest.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let base = services::base_image();
    let dir = tempfile::tempdir().unwrap();
    make_context(dir.path(), &base);
    println!(
        "context: 2,000 files of 8 KiB, one 32 MiB file, 500 ignored files; agent {}",
        agent().display()
    );
    let mut made = Vec::new();
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if wanted("no-cache") {
        compare("no-cache", dir.path(), true, 7, &mut made);
    }
    if wanted("cached") {
        compare("cached", dir.path(), false, 9, &mut made);
    }
    made.sort();
    made.dedup();
    for image in made.iter().rev() {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
