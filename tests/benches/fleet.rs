//! The fleet's figures against moto on loopback (`scripts/services.sh` starts it). Prints
//! figures and ratios; run with
//! `cargo build --release -p buildagent && cargo bench -p buildagent-tests --bench fleet [NAME...]`
//! (`BUILDAGENT_BENCH_AGENT=/path/to/buildagent` measures another build of the agent).
//!
//! - `pickup`: from the start of `buildagent submit` to the build's first command, with one
//!   idle worker waiting (`BUILDAGENT_BENCH_PICKUPS` builds, default 40): p50 and p99, also from
//!   the message's sending (the record's `queuedAt`) to the first command. Goal: p50 ≤ 100 ms,
//!   p99 ≤ 1 s.
//! - `idle`: an idle worker for `BUILDAGENT_BENCH_IDLE_SECS` (default 60): its receive calls
//!   per minute (from its own `/metrics`) and its resident memory. Goal: ≤ 3 calls/min, ≤ 20 MiB.
//! - `throughput`: 200 one-command builds (`BUILDAGENT_BENCH_BUILDS`) queued first, then
//!   taken by 2 workers of 1 slot each, against the same builds run by `buildagent run` on this
//!   machine, 2 at a time.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use buildagent_tests::services::{self, http_get, Aws};

mod common;
use common::agent;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The queue, table and bucket of one bench run (names with a fresh suffix).
struct Fleet {
    aws: Aws,
    queue: String,
    table: String,
    bucket: String,
}

impl Fleet {
    fn init(dir: &Path) -> Fleet {
        let aws = services::aws();
        let suffix = &uuid_suffix();
        let fleet = Fleet {
            aws,
            queue: format!("bench-{suffix}"),
            table: format!("bench-{suffix}"),
            bucket: format!("bench-{suffix}"),
        };
        let out = fleet
            .command(dir)
            .args(["fleet", "init", "--queue", &fleet.queue, "--table"])
            .arg(&fleet.table)
            .args(["--bucket", &fleet.bucket, "--visibility-timeout", "60s"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fleet init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fleet
    }

    fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(agent());
        cmd.current_dir(dir).envs(self.aws.env());
        cmd
    }

    fn worker(&self, dir: &Path, slots: usize, listen: &str) -> Child {
        let work = dir.join(format!("work-{listen}").replace([':', '.'], "-"));
        std::fs::create_dir_all(&work).unwrap();
        self.command(dir)
            .args(["worker", "--queue", &self.queue, "--table", &self.table])
            .args(["--slots", &slots.to_string(), "--listen", listen])
            .arg("--work-dir")
            .arg(&work)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Submits `buildspec` (a local file, sent inline) with a one-file source directory (zipped
    /// to the bucket, as `submit` does); returns the build id.
    fn submit(&self, dir: &Path, buildspec: &Path) -> String {
        let src = dir.join("src");
        if !src.is_dir() {
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join("README"), "a source of one file\n").unwrap();
        }
        let out = self
            .command(dir)
            .args(["submit", "--queue", &self.queue, "--table", &self.table])
            .args(["--source-bucket", &self.bucket, "--project", "bench", "-s"])
            .arg(&src)
            .arg("-b")
            .arg(buildspec)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "submit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// The records' `buildStatus` and `queuedAt`, by id (`list --format json`).
    fn records(&self, dir: &Path) -> Vec<serde_json::Value> {
        let out = self
            .command(dir)
            .args(["list", "--table", &self.table, "--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["builds"].as_array().cloned().unwrap_or_default()
    }
}

fn uuid_suffix() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 0xffff_ffff
    )
}

fn free_listen() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

fn wait_ready(listen: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(listen, "/readyz", &[]).map_or(true, |r| r.status != 200) {
        assert!(Instant::now() < deadline, "worker on {listen} never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One metric's value from a worker's `/metrics` (summed over labels).
fn metric(listen: &str, name: &str) -> f64 {
    let text = http_get(listen, "/metrics", &[]).unwrap().text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn epoch_ns_from_file(path: &Path, deadline: Instant) -> u128 {
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(ns) = text.trim().parse() {
                return ns;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Nanoseconds since the epoch of a record's `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn epoch_ns(text: &str) -> Option<u128> {
    let n = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms;
    Some(ms as u128 * 1_000_000)
}

fn pickup(dir: &Path) {
    let fleet = Fleet::init(dir);
    let listen = free_listen();
    let worker = fleet.worker(dir, 2, &listen);
    wait_ready(&listen);
    let rounds = env_number("BUILDAGENT_BENCH_PICKUPS", 40);
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let mut from_submit = Vec::new();
    let mut ids = Vec::new();
    for i in 0..rounds {
        let mark = marks.join(i.to_string());
        let spec = dir.join(format!("pickup-{i}.yml"));
        std::fs::write(
            &spec,
            format!(
                "version: 0.2\nphases:\n  build:\n    commands:\n      - date +%s%N > {}\n",
                mark.display()
            ),
        )
        .unwrap();
        let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        ids.push(fleet.submit(dir, &spec));
        let ran = epoch_ns_from_file(&mark, Instant::now() + Duration::from_secs(60));
        from_submit.push(Duration::from_nanos((ran - started.as_nanos()) as u64));
        // Let the build end before the next one: one pickup at a time.
        std::thread::sleep(Duration::from_millis(300));
    }
    // From the message's sending (queuedAt, epoch ms) to the first command.
    let records = fleet.records(dir);
    let mut from_queued = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let record = records
            .iter()
            .find(|r| r["id"] == id.as_str())
            .expect("every submitted build has a record");
        let queued = record["startTime"]
            .as_str()
            .and_then(epoch_ns)
            .expect("the record's startTime (when it was queued)");
        let ran = epoch_ns_from_file(&marks.join(i.to_string()), Instant::now());
        from_queued.push(Duration::from_nanos(ran.saturating_sub(queued) as u64));
    }
    stop(worker);
    from_submit.sort();
    from_queued.sort();
    println!(
        "pickup ({rounds} builds, 1 idle worker): submit start -> first command p50 {:.1} ms, p99 {:.1} ms; \
         record queued -> first command p50 {:.1} ms, p99 {:.1} ms (goal p50 <= 100 ms, p99 <= 1000 ms)",
        ms(percentile(&from_submit, 0.5)),
        ms(percentile(&from_submit, 0.99)),
        ms(percentile(&from_queued, 0.5)),
        ms(percentile(&from_queued, 0.99)),
    );
}

fn idle(dir: &Path) {
    let fleet = Fleet::init(dir);
    let listen = free_listen();
    let worker = fleet.worker(dir, 1, &listen);
    wait_ready(&listen);
    let secs = env_number("BUILDAGENT_BENCH_IDLE_SECS", 60);
    let before = metric(&listen, "buildagent_worker_receive_calls_total");
    std::thread::sleep(Duration::from_secs(secs as u64));
    let after = metric(&listen, "buildagent_worker_receive_calls_total");
    let rss = rss_kib(worker.id(), "VmRSS:");
    let hwm = rss_kib(worker.id(), "VmHWM:");
    let cpu = {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", worker.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    };
    stop(worker);
    println!(
        "idle worker ({secs} s): {:.1} receive calls/min (goal <= 3), RSS {:.1} MiB, peak {:.1} MiB (goal <= 20), CPU {cpu:.2} s in all",
        (after - before) * 60.0 / secs as f64,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );
}

fn throughput(dir: &Path) {
    let builds = env_number("BUILDAGENT_BENCH_BUILDS", 200);
    let fleet = Fleet::init(dir);
    let spec = dir.join("one.yml");
    std::fs::write(
        &spec,
        "version: 0.2\nphases:\n  build:\n    commands: ['true']\n",
    )
    .unwrap();
    // Queue every build first (not timed), then time the workers taking them all.
    for _ in 0..builds {
        fleet.submit(dir, &spec);
    }
    let started = Instant::now();
    let workers: Vec<Child> = (0..2)
        .map(|_| fleet.worker(dir, 1, &free_listen()))
        .collect();
    loop {
        let records = fleet.records(dir);
        let done = records
            .iter()
            .filter(|r| r["buildComplete"].as_bool() == Some(true))
            .count();
        if done >= builds {
            assert!(records.iter().all(|r| r["buildStatus"] == "SUCCEEDED"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{done} of {builds} done"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let fleet_time = started.elapsed();
    for worker in workers {
        stop(worker);
    }
    // The same builds by `buildagent run`, 2 at a time.
    let src = dir.join("local");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(&spec, src.join("buildspec.yml")).unwrap();
    let started = Instant::now();
    for _ in 0..builds / 2 {
        let pair: Vec<Child> = (0..2)
            .map(|_| {
                Command::new(agent())
                    .current_dir(&src)
                    .args(["run", "--no-cache", "--log-format", "codebuild"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in pair {
            assert!(child.wait().unwrap().success());
        }
    }
    let local_time = started.elapsed();
    println!(
        "throughput ({builds} one-command builds): 2 workers x 1 slot {:.1} s ({:.1} builds/s), \
         buildagent run 2 at a time {:.1} s ({:.1} builds/s), ratio {:.2}x",
        fleet_time.as_secs_f64(),
        builds as f64 / fleet_time.as_secs_f64(),
        local_time.as_secs_f64(),
        builds as f64 / local_time.as_secs_f64(),
        fleet_time.as_secs_f64() / local_time.as_secs_f64()
    );
}

fn main() {
    let names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| names.is_empty() || names.iter().any(|n| n == name);
    let temp = tempfile::tempdir().unwrap();
    let dir: PathBuf = temp.path().to_path_buf();
    if wants("pickup") {
        pickup(&dir);
    }
    if wants("idle") {
        idle(&dir);
    }
    if wants("throughput") {
        throughput(&dir);
    }
}
